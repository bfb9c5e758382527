"""End-to-end: generated CN-Celeb tree -> train.py -> export -> inference.

Runs the real recipe scripts in subprocesses on a tiny generated corpus with
a tiny ECAPA-TDNN, then loads the export with SpeechBrain's own inference
classes, and kills a run mid-epoch to check that it resumes.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from recipe_helpers import RECIPE, run_recipe, train_args  # noqa: E402


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


def test_train_export_load_verify(corpus, tmp_path):
    from speechbrain.inference.speaker import (
        EncoderClassifier,
        SpeakerRecognition,
    )

    out = str(tmp_path / "run")
    stdout = run_recipe("train.py", *train_args(corpus, out))
    export = os.path.join(out, "export")
    assert f"Exported model: {export}" in stdout
    for name in ("hyperparams.yaml", "embedding_model.ckpt",
                 "classifier.ckpt", "label_encoder.ckpt"):
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
        assert fin.read().count("epoch:") == 2

    verifier = SpeakerRecognition.from_hparams(
        source=export, savedir=str(tmp_path / "loaded_sr")
    )
    with open(os.path.join(out, "prepared", "test.csv")) as fin:
        wav = next(csv.DictReader(fin))["wav"].replace("$data_root", corpus)
    score, decision = verifier.verify_files(wav, wav)
    assert score.item() == pytest.approx(1.0, abs=1e-4)

    verify_out = str(tmp_path / "verify")
    stdout = run_recipe(
        "verify.py", "--model", export, "--data_folder", corpus,
        "--prep_folder", os.path.join(out, "prepared"),
        "--output_folder", verify_out, "--enrol_mode", "concat", "avg",
    )
    with open(os.path.join(verify_out, "summary.json")) as fin:
        results = json.load(fin)["results"]
    assert set(results) == {"concat", "avg"}
    n_trials = 3 * 3 * 3
    for result in results.values():
        assert result["n_trials"] == n_trials
        assert result["n_target"] == 3 * 3
        assert 0.0 <= result["EER"] <= 1.0
    for name in ("det.png", "score_hist.png", "scores_concat.txt"):
        assert os.path.isfile(os.path.join(verify_out, name))
    assert "| concat |" in stdout


def test_resume_after_kill(corpus, tmp_path):
    """SIGKILL mid-epoch, rerun: same step count as an uninterrupted run."""
    out = str(tmp_path / "killed")
    args = train_args(corpus, out, epochs=3)
    command = [sys.executable, "train.py", *args, "--ckpt_interval_steps=2"]
    process = subprocess.Popen(
        command, cwd=RECIPE, stdout=subprocess.DEVNULL,
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
