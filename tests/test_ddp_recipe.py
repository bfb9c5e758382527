"""Two-process DDP training through torchrun, for real, on the CPU (gloo).

The recipe is launched exactly as on GPUs (``torchrun --nproc_per_node=2
train.py ...``) on the tiny generated corpus: both processes train on
their half of the P x K batches with the contrastive loss gathered across
them, validation embeddings are gathered before the EER, preparation runs
once, and the export loads.
"""

import csv
import os

import pytest
import torch
import yaml
from recipe_helpers import torchrun, train_args  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available()
    or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)


def optimizer_steps(save_folder):
    """Most optimizer steps recorded in a finished checkpoint."""
    steps = []
    for name in os.listdir(save_folder):
        brain = os.path.join(save_folder, name, "brain.ckpt")
        if os.path.isfile(os.path.join(save_folder, name, "CKPT.yaml")):
            with open(brain) as fin:
                steps.append(yaml.safe_load(fin)["optimizer_step"])
    return max(steps)


def check_run(out, output, epochs, tmp_path):
    """Validation gathered from both ranks, one log writer, an export."""
    with open(os.path.join(out, "prepared", "valid.csv")) as fin:
        n_valid = min(60, sum(1 for _ in csv.DictReader(fin)))
    assert (
        f"validation trials over {n_valid} utterances from 2 process(es)"
        in output
    )
    with open(os.path.join(out, "train_log.txt")) as fin:
        assert len(fin.read().splitlines()) == epochs  # the main process only
    from speechbrain.inference.speaker import EncoderClassifier

    encoder = EncoderClassifier.from_hparams(
        source=os.path.join(out, "export"), savedir=str(tmp_path / "load")
    )
    assert encoder.encode_batch(torch.randn(1, 16000) * 0.1).shape == (
        1,
        1,
        32,
    )


def test_torchrun_aamsupcon_splits_pk_batches(corpus, tmp_path):
    """The hybrid AAM-SupCon: whole P x K batches per rank, gathered loss."""
    out, epochs = str(tmp_path / "ddp"), 2
    output = torchrun(
        [
            *train_args(corpus, out, "hparams/aamsupcon.yaml", epochs),
            "--n_speakers_per_batch=2",
            "--n_utts_per_speaker=2",
        ]
    )
    # The sampler's batches per epoch, split whole between the 2 ranks.
    batches = [
        line
        for line in output.splitlines()
        if "PKSampler:" in line and "batches of" in line
    ]
    assert batches, output[-3000:]
    per_epoch = int(batches[0].split(";")[-1].split()[0])
    assert optimizer_steps(os.path.join(out, "save")) == (
        epochs * per_epoch // 2
    )
    check_run(out, output, epochs, tmp_path)


def test_torchrun_csc(corpus, tmp_path):
    """Self-supervised CSC: separation head and aggregator through DDP."""
    out = str(tmp_path / "ddp_csc")
    output = torchrun(train_args(corpus, out, "hparams/csc.yaml", 1))
    check_run(out, output, 1, tmp_path)
