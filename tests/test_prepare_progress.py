"""Preparation progress log, and the YAML's joining options on folders."""

import logging
import os
import sys

import pytest
import torch

from speechbrain_ext.data.audio import save_audio
from speechbrain_ext.data.preparation import scan_audio

sys.path.insert(
    0, os.path.join(os.path.dirname(__file__), "..", "recipes", "CNCeleb")
)
import cnceleb_prepare  # noqa: E402


def write_files(folder, count):
    """``count`` tiny wav files; returns their paths."""
    paths = []
    for index in range(count):
        path = str(folder / f"u{index:03d}.wav")
        save_audio(path, torch.zeros(160), 16000)
        paths.append(path)
    return paths


def test_scan_logs_progress_every_n_files(tmp_path, caplog):
    paths = write_files(tmp_path, 25) + [str(tmp_path / "gone.wav")]
    with caplog.at_level(logging.INFO):
        infos, skipped = scan_audio(paths, num_workers=2, log_every=10)
    assert len(infos) == 25 and len(skipped) == 1
    lines = [m for m in caplog.messages if m.startswith("audio headers")]
    # Chunks are smaller than the interval here: one line per 10 files and
    # one at the end, each with counts and a rate.
    assert len(lines) == 3
    assert lines[-1].startswith("audio headers: 26 / 26 read (1 unusable)")
    assert all("files/s" in line for line in lines)


def test_scan_can_be_quiet(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        scan_audio(write_files(tmp_path, 3), log_every=0)
    assert not [m for m in caplog.messages if m.startswith("audio headers")]


def test_folder_corpus_ignores_the_yaml_joining_options(tmp_path, caplog):
    for spk in ("s1", "s2", "s3", "s4"):
        (tmp_path / "corpus" / spk).mkdir(parents=True)
        for utt in range(3):
            save_audio(
                str(tmp_path / "corpus" / spk / f"{utt}.wav"),
                torch.randn(8000) * 0.1,
                16000,
            )
    with caplog.at_level(logging.WARNING):
        cnceleb_prepare.prepare_data(
            "folder",
            str(tmp_path / "corpus"),
            str(tmp_path / "prepared"),
            join_min_duration=5.0,
            min_duration=1.0,
            n_test_speakers=2,
            valid_ratio=0,
        )
    assert (tmp_path / "prepared" / "train.csv").is_file()
    assert any("join_min_duration=5.0" in m for m in caplog.messages)
    # Other CN-Celeb options are still refused.
    with pytest.raises(ValueError, match="cnceleb2_folder"):
        cnceleb_prepare.prepare_data(
            "folder",
            str(tmp_path / "corpus"),
            str(tmp_path / "again"),
            cnceleb2_folder="/data/CN-Celeb2_flac",
        )
