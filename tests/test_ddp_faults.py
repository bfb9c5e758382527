"""The DDP faults of issue #21, each on two real gloo processes on the CPU.

1. An unreadable training file under a gathered objective: its item is
   dropped from its batch, so the ranks hold different numbers of rows;
   the gathered loss must take every readable row once, and the run must
   complete and report the file.
2. ``aam_softmax_csc.yaml --csc_weight=0``: parameters that only CSC
   trains must not stop DDP at the second step.
3. Every rank draws its own augmentations; the model starts the same.
4. The learning rate follows the number of processes (linear scaling).

One spawn (process start-up dominates the cost) runs the checks that need
no corpus on both ranks, each in its own ``attempt`` so that one fault
fails only its own tests; among them two training steps of every gathered
objective, built from its YAML, on batches of unequal size. The recipe
checks launch ``train.py`` under ``torchrun`` on the tiny generated
corpus, one epoch each.
"""

import datetime
import functools
import glob
import os

import pytest
import torch
import torch.distributed as dist
from recipe_helpers import (
    RECIPE,
    TINY_CORPUS,
    prepare_like_train,
    recipe_hparams,
    torchrun,
    train_args,
    train_module,
)
from test_distributed import (
    assert_same_gradients,
    free_port,
    loss_and_gradients,
    make_loss,
    make_model,
)

from speechbrain_ext.data.demo_corpus import generate_demo_corpus
from speechbrain_ext.data.manifest import read_manifest

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)

WORLD_SIZE = 2
SEED = 1986
# Rows of test_distributed's global batch of 8 that each rank holds: rank 1
# lost its second utterance (rows 5 and 7, its two views) to an unreadable
# file, so it holds 2 rows where rank 0 holds 4.
KEPT_ROWS = (torch.tensor([0, 1, 2, 3]), torch.tensor([4, 6]))
LOCAL_VIEW_IDS = (torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0]))
GLOBAL_VIEW_IDS = torch.tensor([0, 1, 0, 1, 2, 2])
LOSSES = ("aam_supcon", "ntxent", "csc")
HPARAMS = sorted(
    os.path.basename(path)
    for path in glob.glob(os.path.join(RECIPE, "hparams", "*.yaml"))
)
# The objectives whose loss is gathered across ranks
# (gather_distributed: True in their YAML).
GATHERED = (
    "aam_softmax_csc.yaml",
    "aamsupcon.yaml",
    "aamsupcon_authors.yaml",
    "csc.yaml",
    "csc_dino.yaml",
    "simclr.yaml",
    "supcon.yaml",
)
# A tiny model (as recipe_helpers.TINY), for the keys a YAML has.
TINY_MODEL = {
    "channels": [32, 32, 32, 32, 96],
    "attention_channels": 16,
    "emb_dim": 32,
    "mask_channels": 16,
    "n_prototypes": 64,
    "head_hidden_size": 32,
    "head_bottleneck_size": 16,
    "sentence_len": 1.0,
    "n_train_speakers": 4,
}
CROP = 16000  # samples: sentence_len 1.0 at 16 kHz


# Checks run inside each of the two processes ------------------------------


def unequal_rows_step(rank, loss):
    """One DDP step of a gathered loss with 4 rows on rank 0, 2 on rank 1."""
    model = torch.nn.parallel.DistributedDataParallel(make_model(loss))
    return loss_and_gradients(
        model,
        loss,
        make_loss(loss, gather_distributed=True),
        KEPT_ROWS[rank],
        LOCAL_VIEW_IDS[rank],
    )


def load_hparams(hparams_file, shared_prep, rank, **overrides):
    """A recipe YAML with a tiny model, in a folder of this rank."""
    with open(os.path.join(RECIPE, "hparams", hparams_file)) as fin:
        text = fin.read()
    name = os.path.splitext(hparams_file)[0]
    tiny = {key: val for key, val in TINY_MODEL.items() if f"\n{key}:" in text}
    return recipe_hparams(
        os.path.join("hparams", hparams_file),
        {
            **tiny,
            "data_folder": os.path.join(shared_prep, "no_corpus"),
            "output_folder": os.path.join(shared_prep, f"{name}_rank{rank}"),
            "prep_folder": shared_prep,
            **overrides,
        },
    )


def task_brain(hparams):
    """The recipe's Brain for training steps (no checkpoints)."""
    from speechbrain_ext.brain import TaskBrain

    brain = TaskBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": "cpu", "distributed_backend": "gloo"},
    )
    brain.on_fit_start()  # DDP wrapping, optimizer
    return brain


def readable_batch(rank, step):
    """Rank 0's 4 items, or rank 1's with its last one unreadable.

    Collated as the recipe does: the item whose audio is None is dropped.
    """
    from speechbrain_ext.data.batches import collate_readable

    generator = torch.Generator().manual_seed(100 * step + rank)
    examples = [
        {
            "id": f"rank{rank}-{item}",
            "sig": 0.1 * torch.randn(CROP, generator=generator),
            "spk_id_encoded": torch.tensor([2 * rank + item // 2]),
        }
        for item in range(4)
    ]
    if rank == 1:
        examples[-1]["sig"] = None
    return collate_readable(examples)


def training_steps(hparams_file, shared_prep, rank, **overrides):
    """Two DDP steps of a YAML's task on unequal batches; the losses and
    the trained parameters (the same on every rank if DDP synchronised)."""
    import speechbrain as sb

    hparams = load_hparams(hparams_file, shared_prep, rank, **overrides)
    brain = task_brain(hparams)
    brain.on_stage_start(sb.Stage.TRAIN)
    losses = [brain.fit_batch(readable_batch(rank, step)) for step in (0, 1)]
    return {
        "losses": torch.stack(losses),
        "parameters": {
            name: param.detach().clone()
            for name, param in brain.modules.named_parameters()
        },
    }


def augmentation_draws():
    """What a TaskBrain's rank draws once ``fit`` has started.

    As in the recipe: the hparams seed every process alike, then build the
    model; ``on_fit_start`` (called by ``fit``) wraps it in DDP. Every rank
    then augments the same waveforms.
    """
    from speechbrain.augment.augmenter import Augmenter
    from speechbrain.augment.time_domain import DropChunk, DropFreq
    from speechbrain.lobes.features import Fbank
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain.processing.features import InputNormalization
    from speechbrain.utils.seed import seed_everything
    from speechbrain_ext.tasks import SupervisedEmbeddingTask

    seed_everything(SEED)
    views = Augmenter(
        concat_original=True,
        min_augmentations=1,
        max_augmentations=1,
        augmentations=[
            DropChunk(drop_length_low=100, drop_length_high=400),
            DropFreq(),
        ],
    )
    brain = task_brain(
        {
            "modules": {
                "compute_features": Fbank(n_mels=20),
                "mean_var_norm": InputNormalization(norm_type="sentence"),
                "embedding_model": ECAPA_TDNN(
                    20, channels=[8, 8, 8, 8, 24], lin_neurons=4
                ),
            },
            "opt_class": functools.partial(torch.optim.Adam, lr=0.001),
            "task": SupervisedEmbeddingTask(views),
            "seed": SEED,
        }
    )
    wavs = torch.randn(4, 4000, generator=torch.Generator().manual_seed(0))
    augmented, _ = views(wavs, torch.ones(4))
    return {
        "augmented": augmented,
        "weights": brain.modules.embedding_model.module.state_dict(),
    }


def learning_rates(hparams_file, shared_prep, rank, **overrides):
    """The optimizer's rate and epoch 1's annealed rate; the YAML's lr."""
    hparams = load_hparams(hparams_file, shared_prep, rank, **overrides)
    optimizer = hparams["opt_class"]([torch.nn.Parameter(torch.zeros(1))])
    epoch_one, _ = hparams["lr_annealing"](1)
    return optimizer.param_groups[0]["lr"], epoch_one, hparams["lr"]


class CheckFailed(str):
    """The error of a check that raised inside a spawned process."""


def attempt(check, *args, **kwargs):
    """The check's result, or the error it raised (so that one failing
    check leaves the others to their own tests)."""
    try:
        return check(*args, **kwargs)
    except Exception as error:  # reported by the test of this check
        return CheckFailed(f"{type(error).__name__}: {error}")


def run_checks(rank, port, shared_prep, out_dir):
    """Body of one spawned process: init gloo, run the checks, save."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        # What torchrun sets, from which SpeechBrain's Brain knows DDP.
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
    )
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        results = {"draws": attempt(augmentation_draws)}
        for loss in LOSSES:
            results[loss] = attempt(unequal_rows_step, rank, loss)
        for name in GATHERED:
            results["steps", name] = attempt(
                training_steps, name, shared_prep, rank
            )
        results["csc_off"] = attempt(
            training_steps,
            "aam_softmax_csc.yaml",
            shared_prep,
            rank,
            csc_weight=0.0,
        )
        for name in HPARAMS:
            results["lr", name] = attempt(
                learning_rates, name, shared_prep, rank
            )
        results["lr_unscaled"] = attempt(
            learning_rates,
            HPARAMS[0],
            shared_prep,
            rank,
            lr_scale_with_world_size=False,
        )
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def shared_prep(tmp_path_factory):
    """The generated noise and rooms that the YAMLs' augmenters read."""
    prep = str(tmp_path_factory.mktemp("ddp_faults_prep"))
    hparams = load_hparams("aam_softmax.yaml", prep, rank=0)
    train_module().prepare_augmentation_sources(hparams)
    return prep


@pytest.fixture(scope="module")
def ranks(shared_prep, tmp_path_factory):
    """What each of the two processes saved."""
    out_dir = tmp_path_factory.mktemp("ddp_faults")
    torch.multiprocessing.spawn(
        run_checks,
        args=(free_port(), shared_prep, str(out_dir)),
        nprocs=WORLD_SIZE,
    )
    return [
        torch.load(out_dir / f"rank{r}.pt", weights_only=False)
        for r in range(WORLD_SIZE)
    ]


def outcome(result, key):
    """The saved result of a check; fails the test if the check raised."""
    value = result[key]
    if isinstance(value, CheckFailed):
        pytest.fail(f"{key} raised on a rank: {value}")
    return value


def assert_trained_alike(ranks, key):
    """Both ranks finished with finite losses and the same parameters."""
    first, second = (outcome(result, key) for result in ranks)
    assert torch.isfinite(first["losses"]).all()
    assert first["parameters"].keys() == second["parameters"].keys()
    for name, param in first["parameters"].items():
        torch.testing.assert_close(param, second["parameters"][name])


# 1. An unreadable file: ranks with unequal batches -------------------------


@pytest.mark.parametrize("loss", LOSSES)
def test_gathered_step_with_unequal_batches_equals_one_process(ranks, loss):
    """The gathered loss's DDP step is the single-process step on the
    readable rows of the global batch."""
    expected_loss, expected_gradients = loss_and_gradients(
        make_model(loss),
        loss,
        make_loss(loss, gather_distributed=False),
        torch.cat(KEPT_ROWS),
        GLOBAL_VIEW_IDS,
    )
    if loss == "csc":
        # Only the student's gradient comes from the gathered term; the
        # mask head's separation term is a local mean, which DDP averages
        # per rank, not per row.
        expected_gradients = {
            name: grad
            for name, grad in expected_gradients.items()
            if name.startswith("student.")
        }
    for result in ranks:
        value, gradients = outcome(result, loss)
        gradients = {name: gradients[name] for name in expected_gradients}
        assert_same_gradients(gradients, expected_gradients)
        if loss != "csc":  # CSC's separation term stays local
            torch.testing.assert_close(value, expected_loss)


@pytest.mark.parametrize("hparams_file", GATHERED)
def test_gathered_objective_trains_on_unequal_batches(ranks, hparams_file):
    """Each gathered YAML's task: 4 items on rank 0, 3 on rank 1."""
    assert_trained_alike(ranks, ("steps", hparams_file))


@pytest.fixture(scope="module")
def broken_corpus(tmp_path_factory):
    """The tiny corpus, prepared, then one training file truncated.

    Cut after its header, as by a failed copy: preparation, which reads
    only headers, would have kept it too. Every training item is read in
    one epoch of the runs below, so the file's rank meets it at a step
    where the other rank's batch is whole.
    """
    root = tmp_path_factory.mktemp("broken")
    corpus = generate_demo_corpus(root / "CN-Celeb_flac", **TINY_CORPUS)
    prep = prepare_like_train(
        "hparams/aamsupcon.yaml",
        {
            "data_folder": str(corpus),
            "prep_folder": str(root / "prepared"),
            # The preparation options of TINY, so that the runs reuse it.
            "join_min_duration": 0.0,
            "min_duration": 0.0,
        },
    )
    rows = read_manifest(
        os.path.join(prep, "train.csv"), {"data_root": str(corpus)}
    )
    broken = rows[len(rows) // 2]["wav"]
    with open(broken, "r+b") as fout:
        fout.truncate(1000)
    return str(corpus), prep, broken


# Recipe runs: the P x K supervised hybrid and self-supervised CSC.
UNREADABLE_RUNS = {
    "aamsupcon": ["--n_speakers_per_batch=2", "--n_utts_per_speaker=2"],
    "csc": ["--mask_channels=16"],
}


@pytest.mark.parametrize("name", sorted(UNREADABLE_RUNS))
def test_recipe_survives_unreadable_file_under_ddp(
    broken_corpus, tmp_path, name
):
    corpus, prep, broken = broken_corpus
    out = str(tmp_path / name)
    args = train_args(corpus, out, f"hparams/{name}.yaml", 1, prep)
    output = torchrun([*args, *UNREADABLE_RUNS[name]])
    assert "dropping unreadable audio from its batch: " in output
    assert broken in output
    with open(os.path.join(out, "train_log.txt")) as fin:
        assert fin.read().startswith("epoch: 1")


# 2. aam_softmax_csc with CSC off -------------------------------------------


def test_csc_weight_zero_trains_under_ddp(ranks):
    """Mask head and aggregator unused: frozen, so DDP does not wait."""
    assert_trained_alike(ranks, "csc_off")


def test_recipe_csc_weight_zero_trains_under_ddp(corpus, tmp_path):
    """The command of the issue; DDP fails at a rank's second step."""
    out = str(tmp_path / "csc_off")
    output = torchrun(
        [
            *train_args(corpus, out, "hparams/aam_softmax_csc.yaml", 1),
            "--csc_weight=0",
            "--mask_channels=16",
        ]
    )
    assert "not trained by this task: aggregator" in output
    assert "embedding_model.mask_head" in output
    with open(os.path.join(out, "train_log.txt")) as fin:
        assert fin.read().startswith("epoch: 1")


# 3. Augmentation per rank ---------------------------------------------------


def test_ranks_draw_different_augmentations(ranks):
    first, second = (outcome(r, "draws")["augmented"] for r in ranks)
    assert first.shape == second.shape
    assert not torch.equal(first, second)


def test_ranks_start_from_the_same_model(ranks):
    first, second = (outcome(r, "draws")["weights"] for r in ranks)
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


# 4. The learning rate across world sizes ------------------------------------


@pytest.mark.parametrize("hparams_file", HPARAMS)
def test_lr_scales_with_world_size(ranks, hparams_file):
    """Linear scaling: at world size 2, twice each YAML's ``lr``."""
    for result in ranks:
        optimizer_lr, epoch_one_lr, lr = outcome(result, ("lr", hparams_file))
        assert optimizer_lr == pytest.approx(WORLD_SIZE * lr)
        assert epoch_one_lr == pytest.approx(WORLD_SIZE * lr)


def test_lr_scaling_can_be_turned_off(ranks):
    for result in ranks:
        optimizer_lr, epoch_one_lr, lr = outcome(result, "lr_unscaled")
        assert optimizer_lr == pytest.approx(lr)
        assert epoch_one_lr == pytest.approx(lr)
