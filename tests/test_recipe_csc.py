"""End-to-end: self-supervised CSC and SimCLR, then fine-tuning and scoring.

The training CSV of the generated corpus has its ``spk_id`` column removed
before the self-supervised runs, so any read of a training speaker label
fails them: this is the check that their pipeline never loads labels.
"""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch
from recipe_helpers import (  # noqa: E402
    TINY,
    prepare_like_train,
    run_recipe,
    train_args,
)


def strip_column(path, column):
    """Rewrites a CSV without one of its columns."""
    with open(path, newline="", encoding="utf-8") as fin:
        rows = list(csv.DictReader(fin))
    fields = [name for name in rows[0] if name != column]
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.DictWriter(fout, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_scores(folder, condition):
    """Trials and scores of ``scores_<condition>.txt`` from verify.py."""
    trials, scores = [], []
    with open(os.path.join(folder, f"scores_{condition}.txt")) as fin:
        for line in fin:
            enrol, test, label, score = line.split()
            trials.append((enrol, test, label))
            scores.append(float(score))
    return trials, np.array(scores)


@pytest.fixture(scope="module")
def unlabelled_prep(corpus, tmp_path_factory):
    """A prepared folder whose train.csv has no speaker column."""
    prep = str(tmp_path_factory.mktemp("csc") / "prepared")
    # The preparation options of TINY, so that later runs reuse it.
    prepare_like_train(
        "hparams/csc.yaml",
        {
            "data_folder": corpus,
            "prep_folder": prep,
            "join_min_duration": 0.0,
            "min_duration": 0.0,
        },
    )
    train_csv = os.path.join(prep, "train.csv")
    shutil.copy(train_csv, train_csv + ".labelled")
    strip_column(train_csv, "spk_id")
    return prep


# A small mask head for the tiny CSC model (and prototype head for DINO).
TINY_CSC = ["--mask_channels=16"]
TINY_DINO = [
    "--n_prototypes=64",
    "--head_hidden_size=32",
    "--head_bottleneck_size=16",
]


def ssl_args(corpus, prep, out, hparams):
    """Command line of a one-epoch self-supervised run on ``prep``."""
    extra = TINY_CSC if "csc" in hparams else []
    extra = extra + (TINY_DINO if "dino" in hparams else [])
    return [*train_args(corpus, out, hparams, 1, prep), *extra]


def test_supervised_run_needs_the_labels_it_lost(
    corpus, unlabelled_prep, tmp_path
):
    """Control: the same stripped CSV does break a supervised run."""
    with pytest.raises(AssertionError, match="spk_id"):
        run_recipe(
            "train.py",
            "hparams/aam_softmax.yaml",
            f"--data_folder={corpus}",
            f"--output_folder={tmp_path / 'run'}",
            f"--prep_folder={unlabelled_prep}",
            "--number_of_epochs=1",
            *TINY,
        )


def test_simclr_trains_without_labels(corpus, unlabelled_prep, tmp_path):
    """SimCLR (NT-Xent on interfered views) trains and exports."""
    out = str(tmp_path / "simclr")
    hparams = "hparams/simclr.yaml"
    run_recipe("train.py", *ssl_args(corpus, unlabelled_prep, out, hparams))
    assert os.path.isfile(os.path.join(out, "export", "embedding_model.ckpt"))
    assert not os.path.exists(os.path.join(out, "export", "classifier.ckpt"))


def test_csc_dino_variant_trains_without_labels(
    corpus, unlabelled_prep, tmp_path
):
    """The self-distillation information term stays available."""
    out = str(tmp_path / "csc_dino")
    hparams = "hparams/csc_dino.yaml"
    run_recipe("train.py", *ssl_args(corpus, unlabelled_prep, out, hparams))
    with open(os.path.join(out, "train_log.txt")) as fin:
        log = fin.read()
    for term in ("information", "teacher_entropy", "student_entropy"):
        assert f"train loss_{term}: " in log
    assert "valid loss_information_shuffled: " in log
    assert os.path.isfile(os.path.join(out, "export", "embedding_model.ckpt"))


def test_csc_pretrain_finetune_export_verify(corpus, unlabelled_prep, tmp_path):
    """csc -> export -> csc_finetune -> export -> from_hparams -> verify."""
    from speechbrain.inference.speaker import EncoderClassifier

    csc_out = str(tmp_path / "csc")
    hparams = "hparams/csc.yaml"
    run_recipe("train.py", *ssl_args(corpus, unlabelled_prep, csc_out, hparams))
    with open(os.path.join(csc_out, "train_log.txt")) as fin:
        log = fin.read()
    # The information terms, separation and collapse monitors are logged,
    # and the validation estimate of I(z; g) with its shuffled control.
    for term in (
        "invariance",
        "variance",
        "covariance",
        "separation",
        "emb_std",
        "emb_rank",
    ):
        assert f"train loss_{term}: " in log
    for term in ("information", "information_shuffled"):
        assert f"valid loss_{term}: " in log
    csc_export = os.path.join(csc_out, "export")
    # The export is a stock ECAPA-TDNN: no mask head, no aggregator.
    state = torch.load(os.path.join(csc_export, "embedding_model.ckpt"))
    assert not any(name.startswith("mask_head.") for name in state)

    # Fine-tuning is supervised: give the labels back.
    train_csv = os.path.join(unlabelled_prep, "train.csv")
    finetune_prep = str(tmp_path / "prepared")
    shutil.copytree(unlabelled_prep, finetune_prep)
    shutil.copy(
        train_csv + ".labelled", os.path.join(finetune_prep, "train.csv")
    )
    tune_out = str(tmp_path / "finetune")
    run_recipe(
        "train.py",
        "hparams/csc_finetune.yaml",
        f"--data_folder={corpus}",
        f"--output_folder={tune_out}",
        f"--prep_folder={finetune_prep}",
        f"--pretrained_encoder={csc_export}",
        "--number_of_epochs=1",
        *TINY,
    )
    # The pretrainer really loaded the CSC weights before training.
    loaded = torch.load(
        os.path.join(tune_out, "save", "pretrained", "embedding_model.ckpt")
    )
    assert all(torch.equal(loaded[name], state[name]) for name in state)
    tuned = torch.load(os.path.join(tune_out, "export", "embedding_model.ckpt"))
    assert not torch.equal(tuned["fc.conv.weight"], state["fc.conv.weight"])

    export = os.path.join(tune_out, "export")
    encoder = EncoderClassifier.from_hparams(
        source=export, savedir=str(tmp_path / "loaded")
    )
    assert encoder.encode_batch(torch.randn(2, 16000) * 0.1).shape == (2, 1, 32)
    output = run_recipe(
        "verify.py",
        f"--model={export}",
        f"--data_folder={corpus}",
        f"--prep_folder={finetune_prep}",
        f"--output_folder={tmp_path / 'verify'}",
        "--conditions",
        "clean",
        "sir0",
        "--no_plots",
    )
    with open(tmp_path / "verify" / "summary.json") as fin:
        summary = json.load(fin)["results"]
    clean = [name for name in summary if "@" not in name]
    assert clean and all(f"{name}@sir0" in summary for name in clean)
    assert "sir0" in output
    # 0 dB SIR adds a talker as loud as the test speaker to every test
    # utterance, so the scores of the same trials must move. Scoring the
    # same audio twice already moves them by ~1e-4 (batching and padding
    # differ), hence a median shift 20 times that rather than "not equal":
    # a skipped corruption, or clean embeddings reused, stays below it.
    for name in clean:
        trials, clean_scores = read_scores(tmp_path / "verify", name)
        sir_trials, sir_scores = read_scores(
            tmp_path / "verify", f"{name}@sir0"
        )
        assert sir_trials == trials and len(trials) > 10
        moved = np.abs(sir_scores - clean_scores)
        assert np.median(moved) > 2e-3, (
            f"{name}: 0 dB SIR moved the scores by {np.median(moved):.2g} "
            f"(median), {moved.mean():.2g} (mean)"
        )
