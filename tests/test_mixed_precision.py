"""Mixed precision: every recipe objective under autocast, and the losses on
extreme half-precision inputs.

SpeechBrain's ``--precision=bf16`` (CPU or CUDA) and ``--precision=fp16``
(CUDA, with a gradient scaler) run ``compute_forward`` and
``compute_objectives`` under ``torch.autocast``. The first tests build each
hparams file of the CNCeleb recipe with a tiny model and run its task's
training step (``task.forward`` then ``task.loss``) on random waveforms in
float32 and under CPU autocast. fp16 autocast is run on the CPU too: its
range and rounding, which are what can break a loss, do not depend on the
device.

Tolerances (u: unit roundoff, 2**-8 for bfloat16 and 2**-11 for float16):

* The loss itself must add no rounding: recomputed in float32 from the
  autocast outputs, it matches to 1e-5 (relative).
* The loss terms differ from float32 by the network's rounding, amplified
  by the logit scale (1/temperature = 14.3 for SupCon, s = 30 for
  AAM-softmax) on the nearly parallel embeddings of a random-init model;
  the supervised views differ too, because SpeechBrain's ``DropFreq``
  filters in the autocast dtype. Measured on nine batches: up to 24u
  (8 % in bfloat16, 1.2 % in float16). The test allows 32u, i.e. 12.5 %
  and 1.6 %: a loss fed overflowed or underflowed values is off by far
  more, and the float32 recomputation pins the loss arithmetic itself.

The extreme-input tests complement tests/test_aam_supcon.py,
tests/test_csc_loss.py and tests/test_objectives.py (random unit-scale
half inputs, bf16 autocast): collapsed batches with hand-computed values,
norms whose squares overflow or underflow float16, and a collapsed CSC
representation.
"""

import copy
import glob
import math
import os
import re

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain.utils.seed import seed_everything
from speechbrain_ext.augment.noise import generate_noise_bank
from speechbrain_ext.augment.reverb import simulate_rirs
from speechbrain_ext.losses import (
    AAMSoftmaxLoss,
    AAMSupConLoss,
    CSCLoss,
    NTXentLoss,
    WeightedLossSum,
)

HPARAMS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "recipes",
    "CNCeleb",
    "hparams",
)
HPARAMS_FILES = sorted(glob.glob(os.path.join(HPARAMS, "*.yaml")))
HALF_DTYPES = [torch.bfloat16, torch.float16]
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
N_SPEAKERS = 4
# Larger than any float16 value squared can hold (65504 ** 0.5 = 256), yet
# a float16 itself: 7500 * 3.5 (a large randn draw) < 65504.
LARGE = 7500.0
# Its square (1e-8) underflows float16 to 0. bfloat16 has float32's range,
# so for it these two scales only test rounding.
TINY = 1e-4


def tiny_overrides(tmp_folder, noise_csv, rir_csv):
    """Overrides giving a small model and offline augmentation banks."""
    return {
        "data_folder": tmp_folder,  # never read: no data is loaded
        "output_folder": tmp_folder,
        "prep_folder": tmp_folder,
        "noise_csv": noise_csv,
        "rir_csv": rir_csv,
        "channels": [32, 32, 32, 32, 96],
        "attention_channels": 16,
        "emb_dim": 32,
        "n_train_speakers": N_SPEAKERS,
        "pretrained_encoder": tmp_folder,  # the pretrainer is not called
        "n_prototypes": 64,
        "head_hidden_size": 32,
        "head_bottleneck_size": 16,
        "mask_channels": 16,
    }


@pytest.fixture(scope="module")
def augmentation_banks(tmp_path_factory):
    """A two-file noise bank and two simulated RIRs."""
    folder = tmp_path_factory.mktemp("banks")
    noise_csv = generate_noise_bank(
        str(folder / "noise"), n_files=2, duration=1.0
    )
    rir_csv = simulate_rirs(str(folder / "rirs"), n_rirs=2)
    return str(folder), noise_csv, rir_csv


def load_recipe(hparams_file, banks):
    """Builds an hparams file with the tiny overrides its keys accept."""
    with open(hparams_file, encoding="utf-8") as fin:
        text = fin.read()
    overrides = {
        key: value
        for key, value in tiny_overrides(*banks).items()
        if re.search(rf"^{key}:", text, flags=re.MULTILINE)
    }
    return load_hyperpyyaml(text, overrides)


def random_batch(seed=0, n_per_speaker=2, seconds=1.0):
    """Random waveforms with speaker labels 0, 0, 1, 1, ..."""
    generator = torch.Generator().manual_seed(seed)
    n = N_SPEAKERS * n_per_speaker
    wavs = 0.1 * torch.randn(n, int(16000 * seconds), generator=generator)
    labels = torch.arange(N_SPEAKERS).repeat_interleave(n_per_speaker)
    return wavs, torch.ones(n), labels


def logged_terms(objective, loss):
    """The terms a hybrid objective logs, or the loss alone."""
    terms = getattr(objective, "last_terms", None)
    return dict(terms) if terms else {"loss": loss.item()}


def training_step(hparams, batch, dtype=None, seed=1):
    """One forward/backward of the hparams' task, as the recipe runs it.

    The views are drawn with the same seed whatever ``dtype``, so float32
    and autocast runs see the same augmentations; buffers a step moves
    (batch-norm statistics, CSC's teacher centre) are put back after it,
    so every call starts from the same state.
    """
    wavs, lens, labels = batch
    task = hparams["task"]
    modules = torch.nn.ModuleDict(hparams["modules"]).train()
    modules.zero_grad(set_to_none=True)
    state = copy.deepcopy(modules.state_dict())
    seed_everything(seed)
    with torch.autocast(
        "cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None
    ):
        outputs = task.forward(modules, wavs, lens)
        labels = labels if task.needs_speaker_labels else None
        loss = task.loss(modules, outputs, labels)
    terms = logged_terms(modules["objective"], loss)
    loss.backward()
    grads = {
        name: param.grad
        for name, param in modules.named_parameters()
        if param.grad is not None
    }
    modules.load_state_dict(state)
    return outputs, loss, terms, grads


def embeddings_of(outputs):
    """The per-view embeddings a task's forward returns."""
    return outputs["embeddings"] if "embeddings" in outputs else outputs["z"]


def as_float32(outputs):
    """A copy of the outputs with every floating tensor in float32."""
    return {
        key: value.detach().float() if value.is_floating_point() else value
        for key, value in outputs.items()
    }


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize(
    "hparams_file", HPARAMS_FILES, ids=lambda path: os.path.basename(path)
)
def test_training_step_under_autocast(hparams_file, dtype, augmentation_banks):
    torch.set_num_threads(1)
    hparams = load_recipe(hparams_file, augmentation_banks)
    batch = random_batch()
    reference, reference_loss, reference_terms, reference_grads = training_step(
        hparams, batch
    )
    outputs, loss, terms, grads = training_step(hparams, batch, dtype)

    # The network really ran in reduced precision...
    assert embeddings_of(outputs).dtype == dtype
    # ...and the loss did not: float32, finite, and exactly the float32
    # loss of the reduced-precision outputs.
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    with torch.no_grad():
        modules = torch.nn.ModuleDict(hparams["modules"])
        labels = batch[2] if hparams["task"].needs_speaker_labels else None
        recomputed = hparams["task"].loss(modules, as_float32(outputs), labels)
    assert loss.item() == pytest.approx(recomputed.item(), rel=1e-5)

    assert terms.keys() == reference_terms.keys()
    for name, value in terms.items():
        tolerance = 32 * UNIT_ROUNDOFF[dtype]
        assert value == pytest.approx(reference_terms[name], rel=tolerance), (
            name
        )

    # The same parameters get gradients, all finite, the encoder's not 0.
    assert grads.keys() == reference_grads.keys()
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), name
    encoder = [g for n, g in grads.items() if n.startswith("embedding_model.")]
    assert encoder and any(g.abs().sum() > 0 for g in encoder)


# The objectives called as objective(embeddings, labels); each normalises
# the embeddings, so its value does not depend on their norm.
def normalising_losses():
    return {
        "supcon_arc": AAMSupConLoss(margin=0.2, margin_type="arc"),
        "supcon_cos": AAMSupConLoss(margin=0.2, margin_type="cos"),
        "ntxent": NTXentLoss(temperature=0.1),
        "aam_softmax": AAMSoftmaxLoss(input_size=192, n_classes=N_SPEAKERS),
        "hybrid": WeightedLossSum(
            losses={
                "aam_supcon": AAMSupConLoss(),
                "aam_softmax": AAMSoftmaxLoss(
                    input_size=192, n_classes=N_SPEAKERS
                ),
            },
            weights={"aam_supcon": 1.0, "aam_softmax": 0.5},
        ),
    }


@pytest.mark.parametrize("scale", [LARGE, TINY], ids=["large", "tiny"])
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(normalising_losses()))
def test_losses_at_norms_beyond_float16_squares(name, dtype, scale):
    """Norms whose squares overflow (large) or underflow (tiny) float16."""
    torch.manual_seed(0)
    loss = normalising_losses()[name]
    embeddings = torch.randn(2 * N_SPEAKERS, 192) * scale
    labels = torch.arange(N_SPEAKERS).repeat_interleave(2)
    half = embeddings.to(dtype).requires_grad_(True)
    value = loss(half, labels)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.isfinite(half.grad).all()
    # The same (rounded) directions at unit scale, in float32.
    unit = half.detach().float() / scale
    assert value.item() == pytest.approx(loss(unit, labels).item(), rel=1e-5)


def collapsed_loss_by_hand(positive_logit, negative_logit, n_pos, n_neg):
    """Loss of an anchor whose other rows all share one logit per kind."""
    log_denominator = math.log(
        n_pos * math.exp(positive_logit) + n_neg * math.exp(negative_logit)
    )
    return log_denominator - positive_logit


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("spread", [0.0, 1e-3], ids=["equal", "near"])
def test_collapsed_batch_gives_the_hand_computed_loss(dtype, spread):
    """Every row (nearly) the same: cos = 1 everywhere, labels 0, 0, 1, 1.

    Each anchor has one positive and two negatives, all at cos = 1, so
    with s = 1/tau the loss is log(e^(s psi) + 2 e^s) - s psi, where
    psi = 1 (no margin), 1 - m (CosFace) or cos(m) (ArcFace). For ArcFace
    the cosine is clamped to 1 - 1e-7 before the arccos (theta = 4.5e-4
    rad instead of 0), which moves the loss by under 2e-3. A spread of
    1e-3 per element moves the cosines by about 1e-6 and the ArcFace angle
    by about 1.4e-3 rad, the loss by under s sin(m) 1.4e-3 = 4e-3.
    """
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(4, 192, generator=generator)
    rows = torch.ones(4, 192) + spread * noise
    labels = torch.tensor([0, 0, 1, 1])
    tau, m = 0.07, 0.2
    s = 1 / tau
    cases = [
        (NTXentLoss(temperature=tau), 1.0, 1e-5),
        (AAMSupConLoss(m, tau, margin_type="cos"), 1 - m, 1e-5),
        (AAMSupConLoss(m, tau, margin_type="arc"), math.cos(m), 3e-3),
    ]
    spread_tolerance = 5e-3 if spread else 0.0
    for loss, psi, tolerance in cases:
        half = rows.to(dtype).requires_grad_(True)
        value = loss(half, labels)
        value.backward()
        expected = collapsed_loss_by_hand(s * psi, s, 1, 2)
        assert value.item() == pytest.approx(
            expected, abs=tolerance + spread_tolerance
        ), loss
        assert torch.isfinite(half.grad).all(), loss


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_aam_softmax_on_class_axes_at_extreme_norm(dtype):
    """Embeddings on (and opposite to) their class weight, norm 3e4.

    With the class weights on the first three axes, row 0 at +3e4 e_0
    (label 0) has cos = 1 with its class and 0 with the others: target
    logit s cos(m). Row 1 at -3e4 e_1 (label 1) has cos = -1: beyond
    theta = pi - m the margin falls back to s (cos(theta) - m sin(m)).
    """
    s, m = 2.0, 0.2  # a small scale keeps both losses far from 0
    loss = AAMSoftmaxLoss(input_size=4, n_classes=3, margin=m, scale=s)
    with torch.no_grad():
        loss.classifier.weight.copy_(torch.eye(3, 4))
    rows = torch.tensor([[3e4, 0.0, 0.0, 0.0], [0.0, -3e4, 0.0, 0.0]])
    half = rows.to(dtype).requires_grad_(True)
    value = loss(half, torch.tensor([0, 1]))
    value.backward()
    aligned = collapsed_loss_by_hand(s * math.cos(m), 0.0, 1, 2)
    opposite = collapsed_loss_by_hand(s * (-1 - m * math.sin(m)), 0.0, 1, 2)
    assert value.item() == pytest.approx((aligned + opposite) / 2, rel=1e-4)
    assert torch.isfinite(half.grad).all()


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_csc_distillation_of_half_logits_is_the_float32_value(dtype):
    """Sharpening at tau = 0.04 multiplies logits by 25: in float16 a
    softmax of such values would round badly; the loss works in float32."""
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(64, 256, generator=generator)
    teacher = student + 0.5 * torch.randn(64, 256, generator=generator)
    half_student = student.to(dtype).requires_grad_(True)
    half_teacher = teacher.to(dtype)
    value = CSCLoss(256)(half_student, half_teacher)
    value.backward()
    reference = CSCLoss(256)(
        half_student.detach().float(), half_teacher.float()
    )
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(reference.item(), rel=1e-5)
    assert torch.isfinite(half_student.grad).all()


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_csc_collapsed_teacher_scores_nothing(dtype):
    """Identical teacher rows carry no information: the bound is <= 0."""
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(64, 256, generator=generator).to(dtype)
    teacher = torch.full((64, 256), 0.5).to(dtype)
    loss = CSCLoss(256)
    value = loss(student.requires_grad_(True), teacher)
    value.backward()
    assert loss.last_terms["information"] <= 1e-6
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("name", ["supcon_arc", "ntxent", "aam_softmax"])
def test_zero_embedding_row_has_a_finite_float16_gradient(name):
    torch.manual_seed(0)
    embeddings = torch.randn(2 * N_SPEAKERS, 192)
    embeddings[0] = 0.0
    labels = torch.arange(N_SPEAKERS).repeat_interleave(2)
    half = embeddings.half().requires_grad_(True)
    value = normalising_losses()[name](half, labels)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(half.grad).all()


def test_auto_precision_is_bf16_on_a_bf16_gpu_and_fp32_elsewhere(monkeypatch):
    from speechbrain_ext.brain import training_precision

    assert training_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert training_precision("auto", "cuda:0") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert training_precision("auto", "cuda:0") == "fp32"  # e.g. a V100
    assert training_precision("fp16", "cuda:0") == "fp16"  # as asked


def test_brain_resolves_auto_from_the_hparams_unless_given():
    from speechbrain.utils.run_opts import RunOptions
    from speechbrain_ext.brain import RobustBrain

    def brain(run_opts, hparams):
        return RobustBrain(
            modules={"model": torch.nn.Linear(2, 2)},
            hparams=hparams,
            run_opts=run_opts,
        )

    # The recipe YAMLs' default: auto, which is fp32 on this CPU.
    assert brain(None, {"precision": "auto"}).precision == "fp32"
    # As parsed from a command line: precision given wins over the YAML;
    # options not given (all others) still come from the hparams.
    given = RunOptions.from_command_line_args(
        ["h.yaml", "--precision=bf16", "--device=cpu"]
    )[1]
    made = brain(given, {"precision": "auto", "ckpt_interval_minutes": 7})
    assert made.precision == "bf16" and made.ckpt_interval_minutes == 7
    default = RunOptions.from_command_line_args(["h.yaml", "--device=cpu"])[1]
    assert brain(default, {"precision": "auto"}).precision == "fp32"


@pytest.mark.parametrize("sync", [False, True])
def test_ddp_on_gpus_keeps_batchnorm_local_unless_asked(monkeypatch, sync):
    import speechbrain.core
    from speechbrain_ext.brain import RobustBrain

    wrapped = []

    class RecordingDDP(torch.nn.Module):
        def __init__(self, module, **options):
            super().__init__()
            self.module = module
            wrapped.append(options)

    monkeypatch.setattr(
        torch.nn.parallel, "DistributedDataParallel", RecordingDDP
    )
    monkeypatch.setattr(speechbrain.core, "DDP", RecordingDDP)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(2, 2, 1), torch.nn.BatchNorm1d(2)
    )
    brain = RobustBrain(modules={"model": model}, sync_batchnorm=sync)
    # As torchrun on GPU 0 would leave it (no GPU is touched here).
    brain.distributed_launch, brain.device = True, "cuda:0"
    brain._wrap_distributed()
    norm = brain.modules["model"].module[1]
    assert isinstance(norm, torch.nn.SyncBatchNorm) == sync
    assert wrapped[0]["device_ids"] == ["cuda:0"]
