"""The first-GPU script runs on a CPU with its CUDA parts skipped."""

import json
import os
import subprocess

import pytest

from bench import gpu_check


def test_gpu_check_trains_and_reports_on_cpu(corpus, tmp_path):
    out = tmp_path / "gpu_check.json"
    report = gpu_check.main(
        [
            "--data_folder",
            os.path.join(corpus, "data"),
            "--device",
            "cpu",
            "--precisions",
            "fp32",
            "--systems",
            "aam_softmax",
            "--epochs",
            "1",
            "--quick",
            "--out",
            str(out),
        ]
    )
    written = json.loads(out.read_text())
    (run,) = written["runs"]
    assert "error" not in run, run
    assert run["precision"] == "fp32" and len(run["epoch_seconds"]) == 1
    assert run["utterances_per_second"] > 0
    assert run["gpu"] is None  # no nvidia-smi readings on this machine
    assert written["cuda_tests"] == {"skipped": "no CUDA device"}
    assert "| aam_softmax | fp32 |" in report["table"]
    assert written["command"].startswith("python -m bench.gpu_check")


def test_failed_training_is_a_row_not_a_crash(corpus, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("training failed (exit 1); see x.txt")

    monkeypatch.setattr(gpu_check, "run_training", fail)
    report = gpu_check.main(
        [
            "--data_folder",
            os.path.join(corpus, "data"),
            "--device",
            "cpu",
            "--precisions",
            "fp32",
            "bf16",
            "--systems",
            "aam_softmax",
            "--quick",
            "--out",
            str(tmp_path / "g.json"),
        ]
    )
    assert [run["error"] for run in report["runs"]] == [
        "training failed (exit 1); see x.txt"
    ] * 2


def test_pack_copies_files_and_writes_the_device_script(tmp_path, monkeypatch):
    for spk in ("s1", "s2", "s3"):
        (tmp_path / "in" / spk).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "in" / spk / f"{spk}-w{i}.wav").write_bytes(b"x" * 10)
    downloads = []

    def fake_pip(command, check):
        downloads.append(command)
        folder = command[command.index("-d") + 1]
        os.makedirs(folder, exist_ok=True)
        (tmp_path / folder / "speechbrain-1.1.2-py3-none-any.whl").write_bytes(
            b"w" * 2**20
        )

    monkeypatch.setattr(subprocess, "run", fake_pip)
    pack = str(tmp_path / "pack")
    sizes = gpu_check.main(
        [
            "--pack",
            pack,
            "--data_folder",
            str(tmp_path / "in"),
            "--n_speakers",
            "2",
            "--utts_per_speaker",
            "3",
        ]
    )
    # Speakers and files evenly spread, as bench.runs.subset_corpus takes
    # them, copied so that the pack travels without the data.
    assert sorted(os.listdir(os.path.join(pack, "corpus"))) == ["s1", "s3"]
    assert not os.path.islink(os.path.join(pack, "corpus", "s1", "s1-w0.wav"))
    assert len(os.listdir(os.path.join(pack, "corpus", "s1"))) == 3
    assert sizes["corpus_mib"] == pytest.approx(60 / 2**20)
    assert sizes["wheels_mib"] == pytest.approx(1.0)
    (command,) = downloads
    assert "speechbrain==1.1.2" in command and "3.12" in command
    script = open(os.path.join(pack, "run.sh")).read()
    assert "--no-index" in script and "--device cuda" in script
