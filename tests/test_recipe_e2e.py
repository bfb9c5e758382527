"""End-to-end: generated CN-Celeb tree -> train.py -> export -> inference.

Runs the real recipe scripts in subprocesses on generated corpora with a
tiny ECAPA-TDNN, loads the export with SpeechBrain's own inference classes,
checks that the trained model verifies held-out speakers better than the
same network untrained, and kills a run mid-epoch to check that it resumes.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from recipe_helpers import RECIPE, TINY, run_recipe, train_args  # noqa: E402

from speechbrain_ext.data.demo_corpus import generate_demo_corpus

sys.path.insert(0, RECIPE)
from run_demo import export_untrained, overrides_args  # noqa: E402

sys.path.remove(RECIPE)

# A corpus on which the tiny model learns within a test's budget: 26
# training speakers (4 of them held out for validation, so that the exported
# best-validation checkpoint is not picked by chance) with 16 utterances
# each, and 8 evaluation speakers (8 enrolments x 48 test files = 384
# trials, 48 of them target trials).
LEARNABLE_CORPUS = {
    "n_train_speakers": 26,
    "n_eval_speakers": 8,
    "utts_per_speaker": 16,
    "n_test_per_eval_speaker": 6,
    "seed": 7,
    "num_workers": 1,
}

# On top of TINY: 8 epochs of 22 steps, each on 16 two-second crops and
# their augmented copies. In trials, 6 epochs or 1-second crops left the
# exported model little or no better than the untrained one, and lr 0.005
# left EER gains as small as 0.06 on some seeds.
LEARNING = {
    "number_of_epochs": 8,
    "batch_size": 16,
    "sentence_len": 2.0,
    "lr": 0.01,
    # Files kept whole: joining this corpus's 1-5 s files to 5 s (the
    # YAMLs' CN-Celeb default) leaves a third of the items and steps.
    "prepare_options": {
        "valid_ratio": 4,
        "join_min_duration": 0.0,
        "min_duration": 0.0,
    },
    "seed": 1986,
}

# One thread: the least CPU time (two threads mostly spin on a busy
# machine), and results that do not depend on the machine's core count.
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")

# How much better the trained model must verify than the untrained one:
# about half the smallest gains measured with these settings over 9 pairs of
# training seed (1, 2, 3, 1986) and corpus seed (7 to 10): EER 0.11, AUC
# 0.18 (this test's seeds: 0.21 and 0.30).
MIN_EER_GAIN = 0.05
MIN_AUC_GAIN = 0.10


def finished_checkpoints(save_folder):
    """Checkpoint folders whose CKPT.yaml (written last) exists."""
    if not os.path.isdir(save_folder):
        return []
    folders = (os.path.join(save_folder, d) for d in os.listdir(save_folder))
    return [d for d in folders if os.path.isfile(os.path.join(d, "CKPT.yaml"))]


def brain_steps(save_folder):
    """Most optimizer steps recorded in any finished checkpoint of a run."""
    steps = []
    for folder in finished_checkpoints(save_folder):
        with open(os.path.join(folder, "brain.ckpt")) as fin:  # Brain: YAML
            steps.append(yaml.safe_load(fin)["optimizer_step"])
    return max(steps)


def overrides_of(args):
    """``{key: value}`` of ``--key=value`` command-line overrides."""
    pairs = (arg[2:].split("=", 1) for arg in args)
    return {key: yaml.safe_load(value) for key, value in pairs}


def read_scores(folder, condition):
    """Trials and scores of ``scores_<condition>.txt`` from verify.py."""
    trials, scores = [], []
    with open(os.path.join(folder, f"scores_{condition}.txt")) as fin:
        for line in fin:
            enrol, test, label, score = line.split()
            trials.append((enrol, test, int(label)))
            scores.append(float(score))
    return trials, np.array(scores)


def auc(trials, scores):
    """Probability that a target trial outscores a non-target one (ties 1/2).

    Threshold-free, and it uses every pair of trials.

    Example
    -------
    >>> auc([("e", "a", 1), ("e", "b", 0), ("e", "c", 0)], [0.9, 0.9, 0.1])
    0.75
    """
    labels = np.array([label for _, _, label in trials], dtype=bool)
    scores = np.asarray(scores)
    target, nontarget = scores[labels][:, None], scores[~labels][None, :]
    wins = (target > nontarget).sum() + 0.5 * (target == nontarget).sum()
    return float(wins / target.size / nontarget.size)


@pytest.fixture(scope="module")
def learnable_corpus(tmp_path_factory):
    """The generated corpus of the trained-versus-untrained check."""
    root = tmp_path_factory.mktemp("learnable") / "CN-Celeb_flac"
    return generate_demo_corpus(root, **LEARNABLE_CORPUS)


def test_train_export_load_verify(learnable_corpus, tmp_path):
    from speechbrain.inference.speaker import (
        EncoderClassifier,
        SpeakerRecognition,
    )

    corpus = learnable_corpus
    out = str(tmp_path / "run")
    overrides = {
        **overrides_of(TINY),
        **LEARNING,
        "data_folder": corpus,
        "output_folder": out,
        "prep_folder": os.path.join(out, "prepared"),
    }
    hparams_file = os.path.join(RECIPE, "hparams", "aam_softmax.yaml")
    stdout = run_recipe(
        "train.py", hparams_file, *overrides_args(overrides), env=ONE_THREAD
    )
    export = os.path.join(out, "export")
    assert f"Exported model: {export}" in stdout
    for name in (
        "hyperparams.yaml",
        "embedding_model.ckpt",
        "classifier.ckpt",
        "label_encoder.ckpt",
    ):
        assert os.path.isfile(os.path.join(export, name)), name
    with open(os.path.join(export, "hyperparams.yaml")) as fin:
        text = fin.read()
    assert "paths:" not in text and "speechbrain/" not in text

    # Offline load with SpeechBrain's own classes; embeddings are the
    # trained ones (they equal the best checkpoint's model), not random.
    encoder = EncoderClassifier.from_hparams(
        source=export, savedir=str(tmp_path / "loaded")
    )
    wavs = torch.randn(2, 16000) * 0.1
    emb = encoder.encode_batch(wavs)
    assert emb.shape == (2, 1, 32)
    trained = torch.load(os.path.join(export, "embedding_model.ckpt"))
    for key, value in encoder.mods.embedding_model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    with open(os.path.join(out, "train_log.txt")) as fin:
        assert fin.read().count("epoch:") == LEARNING["number_of_epochs"]

    verifier = SpeakerRecognition.from_hparams(
        source=export, savedir=str(tmp_path / "loaded_sr")
    )
    with open(os.path.join(out, "prepared", "test.csv")) as fin:
        wav = next(csv.DictReader(fin))["wav"].replace("$data_root", corpus)
    score, decision = verifier.verify_files(wav, wav)
    assert score.item() == pytest.approx(1.0, abs=1e-4)

    # The same trials scored with the same network untrained: its random
    # initialisation from the same YAML and seed, exported as make demo does.
    untrained = export_untrained(
        hparams_file, overrides, str(tmp_path / "untrained")
    )
    verify_out = str(tmp_path / "verify")
    verify_untrained = str(tmp_path / "verify_untrained")
    for model, folder, extra in (
        (export, verify_out, []),
        (untrained, verify_untrained, ["--no_plots"]),
    ):
        stdout = run_recipe(
            "verify.py",
            "--model",
            model,
            "--data_folder",
            corpus,
            "--prep_folder",
            os.path.join(out, "prepared"),
            "--output_folder",
            folder,
            "--enrol_mode",
            "concat",
            "avg",
            *extra,
            env=ONE_THREAD,
        )
        if model == export:
            assert "| concat |" in stdout
    with open(os.path.join(verify_out, "summary.json")) as fin:
        results = json.load(fin)["results"]
    with open(os.path.join(verify_untrained, "summary.json")) as fin:
        reference = json.load(fin)["results"]
    assert set(results) == set(reference) == {"concat", "avg"}
    n_eval = LEARNABLE_CORPUS["n_eval_speakers"]
    n_tests = n_eval * LEARNABLE_CORPUS["n_test_per_eval_speaker"]
    for result in (*results.values(), *reference.values()):
        assert result["n_trials"] == n_eval * n_tests
        assert result["n_target"] == n_tests
    for name in ("det.png", "score_hist.png", "scores_concat.txt"):
        assert os.path.isfile(os.path.join(verify_out, name))

    # The trained model verifies the held-out speakers clearly better.
    for mode in ("concat", "avg"):
        trials, scores = read_scores(verify_out, mode)
        untrained_trials, untrained_scores = read_scores(verify_untrained, mode)
        assert trials == untrained_trials
        trained_eer = results[mode]["EER"]
        untrained_eer = reference[mode]["EER"]
        trained_auc = auc(trials, scores)
        untrained_auc = auc(trials, untrained_scores)
        numbers = (
            f"{mode}: EER {trained_eer:.3f} trained vs {untrained_eer:.3f} "
            f"untrained, AUC {trained_auc:.3f} vs {untrained_auc:.3f}"
        )
        assert trained_eer <= untrained_eer - MIN_EER_GAIN, numbers
        assert trained_auc >= untrained_auc + MIN_AUC_GAIN, numbers


def test_resume_after_kill(corpus, tmp_path):
    """SIGKILL mid-epoch, rerun: same step count as an uninterrupted run."""
    out = str(tmp_path / "killed")
    args = train_args(corpus, out, epochs=3)
    command = [sys.executable, "train.py", *args, "--ckpt_interval_steps=2"]
    process = subprocess.Popen(
        command,
        cwd=RECIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    save = os.path.join(out, "save")
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and process.poll() is None:
        if finished_checkpoints(save):
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed_at = brain_steps(save)
            break
        time.sleep(0.2)
    assert killed_at is not None, "no intra-epoch checkpoint before the end"

    stdout = run_recipe("train.py", *args, "--ckpt_interval_steps=2")
    assert "Exported model" in stdout

    reference = str(tmp_path / "uninterrupted")
    run_recipe("train.py", *train_args(corpus, reference, epochs=3))
    total = brain_steps(os.path.join(reference, "save"))
    assert 0 < killed_at < total
    assert brain_steps(save) == total


@pytest.mark.parametrize(
    "hparams, has_classifier",
    [("hparams/supcon.yaml", False), ("hparams/aamsupcon.yaml", True)],
)
def test_contrastive_objectives_train_and_export(
    corpus, tmp_path, hparams, has_classifier
):
    """The P x K objectives run from their YAML alone and export."""
    from speechbrain.inference.speaker import EncoderClassifier

    out = str(tmp_path / "run")
    run_recipe(
        "train.py",
        *train_args(corpus, out, hparams=hparams, epochs=1),
        "--n_speakers_per_batch=2",
        "--n_utts_per_speaker=2",
    )
    export = os.path.join(out, "export")
    assert os.path.isfile(os.path.join(export, "classifier.ckpt")) == (
        has_classifier
    )
    with open(os.path.join(out, "train_log.txt")) as fin:
        log = fin.read()
    if has_classifier:  # the hybrid logs both of its terms
        assert "loss_aam_supcon" in log and "loss_aam_softmax" in log
    encoder = EncoderClassifier.from_hparams(
        source=export, savedir=str(tmp_path / "loaded")
    )
    assert encoder.encode_batch(torch.randn(2, 16000) * 0.1).shape == (
        2,
        1,
        32,
    )


def test_unwritable_output_folder_fails_at_start(corpus, tmp_path):
    """An output folder that cannot be created fails before preparation."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = str(blocker / "run")
    with pytest.raises(AssertionError) as failure:
        run_recipe("train.py", *train_args(corpus, out, epochs=1))
    assert f"cannot write to output folder {out}" in str(failure.value)
    assert "choose another --output_folder" in str(failure.value)
    assert not (tmp_path / "prepared").exists()
