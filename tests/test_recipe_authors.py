"""The AAM-SupCon authors' released setup: hparams/aamsupcon_authors.yaml.

Its pieces (one-view AAM-softmax, 5 parallel views in a fixed order, SGD
with StepLR's decay) are checked on the loaded hparams, then the preset is
trained end to end on the tiny generated corpus and exported.
"""

import os

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from recipe_helpers import RECIPE, run_recipe, train_args  # noqa: E402

from speechbrain_ext.augment import (
    AddNoiseBank,
    AddReverbBank,
    InterferingTalker,
    generate_noise_bank,
    simulate_rirs,
)
from speechbrain_ext.inference.export import find_classifier
from speechbrain_ext.losses import (
    AAMSoftmaxLoss,
    AAMSupConLoss,
    SingleViewLoss,
    WeightedLossSum,
)

AUTHORS = os.path.join(RECIPE, "hparams", "aamsupcon_authors.yaml")


# SingleViewLoss ----------------------------------------------------------


def test_single_view_loss_sees_only_its_view():
    torch.manual_seed(0)
    inner = AAMSoftmaxLoss(input_size=8, n_classes=3)
    views = [torch.randn(4, 8, requires_grad=True) for _ in range(3)]
    labels = torch.tensor([0, 1, 2, 0])
    loss = SingleViewLoss(inner, n_views=3, view=1)
    value = loss(torch.cat(views).unsqueeze(1), labels.repeat(3)[:, None])
    assert torch.equal(value, inner(views[1], labels))
    value.backward()
    assert not views[0].grad.any() and not views[2].grad.any()
    assert views[1].grad.abs().sum() > 0


def test_single_view_loss_errors_and_classifier_export():
    inner = AAMSoftmaxLoss(input_size=8, n_classes=3)
    with pytest.raises(ValueError, match="view must be an int in"):
        SingleViewLoss(inner, n_views=2, view=2)
    with pytest.raises(ValueError, match="n_views must be an int >= 1"):
        SingleViewLoss(inner, n_views=0)
    loss = SingleViewLoss(inner, n_views=2)
    with pytest.raises(ValueError, match="5 rows do not split"):
        loss(torch.randn(5, 8), torch.zeros(5, dtype=torch.long))
    # The recipe's export finds the classifier inside the wrapper.
    hybrid = WeightedLossSum({"supcon": AAMSupConLoss(), "aam": loss})
    assert find_classifier(hybrid) is inner.classifier


# The preset's hparams ------------------------------------------------------


@pytest.fixture(scope="module")
def hparams(tmp_path_factory):
    folder = tmp_path_factory.mktemp("authors")
    noise_csv = generate_noise_bank(
        str(folder / "noise"), n_files=6, duration=0.5
    )
    rir_csv = simulate_rirs(str(folder / "rirs"), n_rirs=2)
    with open(AUTHORS, encoding="utf-8") as fin:
        return load_hyperpyyaml(
            fin,
            {
                "data_folder": str(folder),
                "output_folder": str(folder / "out"),
                "prep_folder": str(folder / "prepared"),
                "noise_csv": noise_csv,
                "rir_csv": rir_csv,
                "n_train_speakers": 7,
            },
        )


def test_objective_is_supcon_plus_one_view_aam_softmax(hparams):
    objective = hparams["objective"]
    assert isinstance(objective, WeightedLossSum)
    assert objective.weights == {"supcon": 1.0, "aam_softmax_one_view": 1.0}
    supcon = objective.losses["supcon"]
    assert isinstance(supcon, AAMSupConLoss)
    assert (supcon.margin, supcon.temperature) == (0.0, 0.07)
    one_view = objective.losses["aam_softmax_one_view"]
    assert isinstance(one_view, SingleViewLoss)
    # The released code's f1: the first chunk of cat([reverb, babble,
    # music, noise, clean]), i.e. the reverberated view (view 1 here).
    assert (one_view.n_views, one_view.view) == (5, 1)
    aam = one_view.loss.aam_loss.loss_fn
    assert (aam.margin, aam.scale) == (0.3, 32)
    assert one_view.loss.classifier.weight.shape == (7, 192)
    assert hparams["train_sampler"] is None
    assert hparams["train_dataloader_opts"]["shuffle"] is True


def test_five_views_in_a_fixed_order_with_the_clean_crop_first(hparams):
    augment = hparams["wav_augment"]
    kinds = [type(a) for a in augment.augmentations.values()]
    assert kinds == [
        AddReverbBank,
        InterferingTalker,
        AddNoiseBank,
        AddNoiseBank,
    ]
    babble, music, noise = list(augment.augmentations.values())[1:]
    assert (babble.sir_low, babble.sir_high) == (13, 20)
    assert (music.snr_low, music.snr_high) == (5, 15)
    assert (noise.snr_low, noise.snr_high) == (0, 15)
    torch.manual_seed(0)
    wavs = torch.randn(3, 8000) * 0.1
    views, lens = augment(wavs, torch.ones(3))
    assert views.shape == (15, 8000) and lens.shape == (15,)
    assert torch.equal(views[:3], wavs)
    for view in range(1, 5):
        assert not torch.allclose(views[3 * view : 3 * view + 3], wavs)
    labels = torch.tensor([4, 5, 6])
    assert augment.replicate_labels(labels).tolist() == [4, 5, 6] * 5


def test_sgd_with_steplr_decay(hparams):
    optimizer = hparams["opt_class"]([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, torch.optim.SGD)
    [group] = optimizer.param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (
        0.01,
        0.9,
        0.0001,
    )
    # train.py calls lr_annealing(epoch) after each epoch and logs the first
    # value: epoch e runs at 0.01 * 0.97 ** (e - 1).
    schedule = hparams["lr_annealing"]
    for epoch in range(1, 6):
        old, new = schedule(epoch)
        assert old == pytest.approx(0.01 * 0.97 ** (epoch - 1))
        assert new == pytest.approx(0.01 * 0.97**epoch)


# End to end ----------------------------------------------------------------


def test_authors_preset_trains_and_exports(corpus, tmp_path):
    from speechbrain.inference.speaker import EncoderClassifier

    out = str(tmp_path / "run")
    stdout = run_recipe(
        "train.py",
        *train_args(
            corpus, out, hparams="hparams/aamsupcon_authors.yaml", epochs=2
        ),
    )
    export = os.path.join(out, "export")
    assert f"Exported model: {export}" in stdout
    assert os.path.isfile(os.path.join(export, "classifier.ckpt"))
    with open(os.path.join(out, "train_log.txt")) as fin:
        lines = fin.read().splitlines()
    assert len(lines) == 2
    assert all(
        "loss_supcon" in line and "loss_aam_softmax_one_view" in line
        for line in lines
    )
    assert lines[0].startswith("epoch: 1, lr: 1.00e-02")
    assert lines[1].startswith("epoch: 2, lr: 9.70e-03")
    encoder = EncoderClassifier.from_hparams(
        source=export, savedir=str(tmp_path / "loaded")
    )
    embeddings = encoder.encode_batch(torch.randn(2, 16000) * 0.1)
    assert embeddings.shape == (2, 1, 32)
    assert torch.isfinite(embeddings).all()
