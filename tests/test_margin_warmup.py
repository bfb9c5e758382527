"""Margin warm-up of the losses and LR warm-up of the recipe."""

import glob
import math
import os
from types import SimpleNamespace

import pytest
import torch
import yaml
from recipe_helpers import run_recipe, train_args  # noqa: E402

from speechbrain.nnet.schedulers import update_learning_rate
from speechbrain_ext.brain import RobustBrain
from speechbrain_ext.losses import (
    AAMSoftmaxLoss,
    AAMSupConLoss,
    WeightedLossSum,
)
from speechbrain_ext.losses.margin_schedule import MarginWarmup, warmup_fraction


def random_batch(n_speakers=4, n_per_speaker=3, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(
        n_speakers * n_per_speaker, dim, generator=generator
    )
    labels = torch.arange(n_speakers).repeat_interleave(n_per_speaker)
    return embeddings, labels


# margin 0 for 2 steps, then 0.2 * (t - 2) / 4 up to step 6.
START, RAMP, MARGIN = 2, 4, 0.2
EXPECTED = [0.0, 0.0, 0.0, 0.05, 0.1, 0.15, 0.2, 0.2]


def test_fraction_holds_then_ramps_linearly():
    fractions = [warmup_fraction(t, START, RAMP) for t in range(8)]
    assert fractions == pytest.approx([m / MARGIN for m in EXPECTED])
    assert warmup_fraction(0, 0, 0) == 1.0  # off
    assert [warmup_fraction(t, 3, 0) for t in (2, 3)] == [0.0, 1.0]


@pytest.mark.parametrize("start, ramp", [(-1, 0), (0, -2), (1.5, 0)])
def test_bad_schedules_are_named(start, ramp):
    with pytest.raises(ValueError, match="must be an int >= 0"):
        MarginWarmup(start, ramp)


@pytest.mark.parametrize("margin_type", ["arc", "cos"])
def test_aam_supcon_effective_margin_at_each_step(margin_type):
    embeddings, labels = random_batch()
    loss = AAMSupConLoss(
        margin=MARGIN,
        margin_type=margin_type,
        margin_warmup_start=START,
        margin_warmup_steps=RAMP,
    )
    for step, margin in enumerate(EXPECTED):
        assert loss.current_margin == pytest.approx(margin)
        fixed = AAMSupConLoss(margin=margin, margin_type=margin_type)
        assert torch.allclose(
            loss(embeddings, labels), fixed(embeddings, labels)
        ), step
    assert int(loss.margin_warmup.step) == len(EXPECTED)


def test_margin_zero_at_step_zero_is_plain_supcon():
    embeddings, labels = random_batch(seed=3)
    warming = AAMSupConLoss(margin=0.3, margin_warmup_steps=10)
    plain = AAMSupConLoss(margin=0.0)
    full = AAMSupConLoss(margin=0.3)
    value = warming(embeddings, labels)
    assert value.item() == pytest.approx(
        plain(embeddings, labels).item(), abs=0
    )
    assert value.item() < full(embeddings, labels).item()


def test_aam_softmax_effective_margin_at_each_step():
    embeddings, labels = random_batch()
    torch.manual_seed(0)
    loss = AAMSoftmaxLoss(
        input_size=16,
        n_classes=4,
        margin=MARGIN,
        margin_warmup_start=START,
        margin_warmup_steps=RAMP,
    )
    for step, margin in enumerate(EXPECTED):
        fixed = AAMSoftmaxLoss(classifier=loss.classifier, margin=margin)
        expected = fixed(embeddings, labels)
        assert torch.allclose(loss(embeddings, labels), expected), step
        aam = loss.aam_loss.loss_fn
        assert aam.margin == pytest.approx(margin)
        assert aam.cos_m == pytest.approx(math.cos(margin))
        assert aam.th == pytest.approx(math.cos(math.pi - margin))
    # Past the warm-up: SpeechBrain's AAM-softmax with the full margin.
    assert torch.allclose(
        loss(embeddings, labels),
        AAMSoftmaxLoss(classifier=loss.classifier, margin=MARGIN)(
            embeddings, labels
        ),
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: AAMSupConLoss(margin_warmup_steps=5),
        lambda: AAMSoftmaxLoss(
            input_size=16, n_classes=4, margin_warmup_steps=5
        ),
    ],
    ids=["aam_supcon", "aam_softmax"],
)
def test_eval_calls_do_not_advance(make):
    embeddings, labels = random_batch()
    loss = make()
    loss(embeddings, labels)
    loss.eval()
    with torch.no_grad():
        for _ in range(3):
            loss(embeddings, labels)
    assert int(loss.margin_warmup.step) == 1
    assert loss.margin_warmup.steps == 1
    loss.train()
    loss(embeddings, labels)
    assert int(loss.margin_warmup.step) == 2


def test_state_dict_round_trip_keeps_the_step():
    embeddings, labels = random_batch()
    trained = WeightedLossSum(
        {
            "aam_supcon": AAMSupConLoss(
                margin_warmup_start=1, margin_warmup_steps=4
            ),
            "aam_softmax": AAMSoftmaxLoss(
                input_size=16,
                n_classes=4,
                margin_warmup_start=1,
                margin_warmup_steps=4,
            ),
        }
    )
    for _ in range(3):
        trained(embeddings, labels)
    state = trained.state_dict()
    assert int(state["losses.aam_supcon.margin_warmup.step"]) == 3
    assert int(state["losses.aam_softmax.margin_warmup.step"]) == 3

    resumed = WeightedLossSum(
        {
            "aam_supcon": AAMSupConLoss(
                margin_warmup_start=1, margin_warmup_steps=4
            ),
            "aam_softmax": AAMSoftmaxLoss(
                input_size=16,
                n_classes=4,
                margin_warmup_start=1,
                margin_warmup_steps=4,
            ),
        }
    )
    resumed.load_state_dict(state, strict=True)
    for name in ("aam_supcon", "aam_softmax"):
        assert resumed.losses[name].current_margin == pytest.approx(0.1)
    # Both continue the schedule exactly as the uninterrupted module does.
    assert torch.allclose(
        resumed(embeddings, labels), trained(embeddings, labels)
    )


def test_checkpoint_without_the_step_loads_as_step_zero():
    loss = AAMSupConLoss(margin_warmup_steps=4)
    embeddings, labels = random_batch()
    loss(embeddings, labels)
    old = {
        k: v for k, v in loss.state_dict().items() if "margin_warmup" not in k
    }
    loss.load_state_dict(old, strict=True)  # no missing-key error
    assert loss.margin_warmup.steps == 0 and int(loss.margin_warmup.step) == 0


def test_default_is_off_and_unchanged():
    embeddings, labels = random_batch(seed=5)
    loss = AAMSupConLoss(margin=0.2)
    assert not loss.margin_warmup.enabled
    first = loss(embeddings, labels)
    assert loss.current_margin == 0.2
    assert torch.equal(first, loss(embeddings, labels))


# LR warm-up (speechbrain_ext.brain.RobustBrain) --------------------------------------------------


def tiny_brain(warmup, lr=0.1):
    brain = RobustBrain(
        modules={"layer": torch.nn.Linear(2, 2)},
        opt_class=lambda params: torch.optim.SGD(params, lr=lr),
        hparams={"epoch_counter": SimpleNamespace(current=1)},
        run_opts={"device": "cpu"},
        lr_warmup_steps=warmup,
    )
    brain.init_optimizers()
    return brain


def step_lrs(brain, n_steps):
    """The lr of each of n optimizer steps, as fit_batch would set it."""
    batch = SimpleNamespace(id=["utt"])
    lrs = []
    for _ in range(n_steps):
        brain.on_fit_batch_start(batch, should_step=True)
        lrs.append(brain.optimizer.param_groups[0]["lr"])
        brain.optimizer_step += 1  # what optimizers_step() counts
    return lrs


def test_lr_rises_linearly_during_warmup_then_stays():
    brain = tiny_brain(warmup=4)
    assert step_lrs(brain, 6) == pytest.approx(
        [0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    )
    group = brain.optimizer.param_groups[0]
    assert not {"warmup_lr", "base_lr_epoch", "warmup_epoch"} & set(group)


@pytest.mark.parametrize("new_lr", [0.06, 0.05])
def test_lr_warmup_follows_the_epoch_scheduler(new_lr):
    brain = tiny_brain(warmup=4)
    lrs = step_lrs(brain, 2)
    # The epoch ends and the scheduler sets the next epoch's rate (0.05 is
    # the rate the warm-up had set: the new epoch still takes it as base).
    update_learning_rate(brain.optimizer, new_lr)
    brain.hparams.epoch_counter.current = 2
    lrs += step_lrs(brain, 3)
    assert lrs == pytest.approx([0.025, 0.05, new_lr * 3 / 4, new_lr, new_lr])


def test_lr_set_mid_epoch_becomes_the_base():
    brain = tiny_brain(warmup=4)
    lrs = step_lrs(brain, 2)
    update_learning_rate(brain.optimizer, 0.06)  # e.g. another scheduler
    lrs += step_lrs(brain, 3)
    assert lrs == pytest.approx([0.025, 0.05, 0.045, 0.06, 0.06])


def test_lr_warmup_resumes_from_a_checkpoint():
    brain = tiny_brain(warmup=4)
    step_lrs(brain, 2)
    state, steps = brain.optimizer.state_dict(), brain.optimizer_step
    resumed = tiny_brain(warmup=4)
    resumed.optimizer.load_state_dict(state)
    resumed.optimizer_step = steps  # restored from brain.ckpt
    assert step_lrs(resumed, 3) == pytest.approx([0.075, 0.1, 0.1])


def test_without_warmup_the_lr_is_untouched():
    brain = tiny_brain(warmup=0)
    assert step_lrs(brain, 2) == [0.1, 0.1]
    assert set(brain.optimizer.param_groups[0]) == set(
        tiny_brain(warmup=0).optimizer.param_groups[0]
    )


def test_recipe_trains_with_both_warmups_and_five_views(corpus, tmp_path):
    """train.py: the losses count the optimizer steps, the lr warms up."""
    out = str(tmp_path / "run")
    warmup = 1000  # longer than the run: it ends inside the warm-up
    run_recipe(
        "train.py",
        *train_args(corpus, out, hparams="hparams/aamsupcon.yaml", epochs=1),
        "--n_speakers_per_batch=2",
        "--n_utts_per_speaker=2",
        "--n_views=5",
        "--parallel_augment=True",
        "--margin_warmup_start=2",
        "--margin_warmup_steps=10",
        f"--lr_warmup_steps={warmup}",
    )
    [checkpoint] = glob.glob(os.path.join(out, "save", "CKPT+*"))
    with open(os.path.join(checkpoint, "brain.ckpt")) as fin:
        steps = yaml.safe_load(fin)["optimizer_step"]
    assert steps > 2
    objective = torch.load(os.path.join(checkpoint, "objective.ckpt"))
    for name in ("aam_supcon", "aam_softmax"):
        assert int(objective[f"losses.{name}.margin_warmup.step"]) == steps
    optimizer = torch.load(os.path.join(checkpoint, "optimizer.ckpt"))
    [group] = optimizer["param_groups"]
    # The last step ran at lr * steps / warmup; the epoch's end then set
    # the scheduler's next rate, which the warm-up scales from then on.
    assert group["base_lr_epoch"] == pytest.approx(0.001)
    assert group["warmup_lr"] == pytest.approx(0.001 * steps / warmup)
    with open(os.path.join(out, "train_log.txt")) as fin:
        assert "loss_aam_supcon" in fin.read()
