"""Tests of the calibration benchmark (bench.calibration) on tiny data.

A generated folder corpus (speaker folders, one word per file) is prepared
as the CSC benchmark's pack is, a tiny untrained ECAPA is exported as seed
1, and the benchmark runs end to end on it in seconds.
"""

import json

import numpy as np
import pytest
import torch

import bench.calibration as calibration
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain_ext.data.audio import save_audio
from speechbrain_ext.data.folder_corpus import prepare_folder_corpus
from speechbrain_ext.data.manifest import read_manifest
from speechbrain_ext.inference.export import default_template, export_encoder

TINY_ECAPA = {"n_mels": 24, "channels": [16, 16, 16, 16, 48], "lin_neurons": 8}
WORDS = ("yes", "no", "stop", "go")


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """Corpus, preparation (3 test, 3 validation speakers) and seed 1."""
    root = tmp_path_factory.mktemp("pack")
    generator = torch.Generator().manual_seed(0)
    time = torch.arange(8000) / 16000
    for index in range(9):
        speaker = f"spk{index}"
        for word in WORDS:
            tone = torch.sin(2 * np.pi * (120 + 40 * index) * time)
            noise = 0.05 * torch.randn(8000, generator=generator)
            save_audio(
                str(root / "corpus" / speaker / f"{speaker}-{word}-r01.wav"),
                0.3 * tone + noise,
                16000,
            )
    prep = str(root / "prepared")
    prepare_folder_corpus(
        str(root / "corpus"),
        prep,
        n_test_speakers=3,
        valid_ratio=3,
        different_key_only=True,
        num_workers=1,
    )
    torch.manual_seed(0)
    model = ECAPA_TDNN(
        TINY_ECAPA["n_mels"],
        channels=TINY_ECAPA["channels"],
        lin_neurons=TINY_ECAPA["lin_neurons"],
    )
    export_encoder(
        str(root / "runs" / "1" / "export"),
        default_template(),
        model,
        TINY_ECAPA,
    )
    return root


def run(pack, *extra):
    return calibration.main(
        [
            "--runs",
            str(pack / "runs"),
            "--prep_folder",
            str(pack / "prepared"),
            "--data_folder",
            str(pack / "corpus"),
            "--cache",
            str(pack / "cache"),
            "--out",
            str(pack / "out" / "calibration.json"),
            "--conditions",
            "clean",
            "sir0",
            *extra,
        ]
    )


def test_calibration_trials_are_validation_speakers_text_independent(pack):
    prep = pack / "prepared"
    with open(prep / "prepare_options.json") as fin:
        options = json.load(fin)
    valid = read_manifest(str(prep / "valid.csv"), {"data_root": "x"})
    test_speakers = {
        row["spk_id"]
        for row in read_manifest(str(prep / "eval.csv"), {"data_root": "x"})
    }
    speaker = {row["ID"]: row["spk_id"] for row in valid}
    trials = calibration.calibration_trial_list(valid, options)
    labels = [label for *_, label in trials]
    assert labels.count(1) == labels.count(0) > 0
    for enrol, test, label in trials:
        assert not {speaker[enrol], speaker[test]} & test_speakers
        assert (speaker[enrol] == speaker[test]) == (label == 1)
        assert enrol.split("-")[1] != test.split("-")[1]  # other words


def test_benchmark_reports_every_variant_and_resumes(pack, monkeypatch):
    report = run(pack, "--seeds", "1", "2")
    assert report["seeds"] == [1] and report["missing_seeds"] == [2]
    with open(pack / "out" / "calibration.json") as fin:
        saved = json.load(fin)
    for condition in ("clean", "sir0"):
        for variant in ("raw", "calibrated", "calibrated_interfered"):
            entry = saved["summary"][condition][variant]
            for name in ("Cllr", "min_Cllr"):
                assert np.isfinite(entry[name]["mean"])
            for name in ("actDCF", "minDCF"):
                assert set(entry[name]) == {"0.05", "0.01"}
        # Calibration is monotone: min Cllr and minDCF do not move.
        raw, cal = (
            saved["summary"][condition][v] for v in ("raw", "calibrated")
        )
        assert raw["min_Cllr"] == cal["min_Cllr"]
        assert raw["minDCF"] == cal["minDCF"]
    seed = saved["per_seed"]["1"]
    assert seed["clean"]["fits"]["own"] == seed["clean"]["fits"]["clean"]
    assert seed["sir0"]["fits"]["own"] != seed["sir0"]["fits"]["clean"]
    assert set(saved["targets"]) == {"cllr_gap", "dcf_excess"}
    assert saved["command"].startswith("python -m bench.calibration")
    assert (
        (pack / "out" / "calibration.md")
        .read_text()
        .startswith("`python -m bench.calibration")
    )

    # A rerun reads every score back instead of loading the model.
    def no_model(*args):
        raise AssertionError("the model was loaded again")

    monkeypatch.setattr(calibration, "load_export", no_model)
    again = run(pack, "--seeds", "1")
    # As JSON: one seed's std is NaN, which never equals itself.
    assert json.dumps(again["summary"]) == json.dumps(report["summary"])


def test_missing_every_export_is_an_error(pack):
    with pytest.raises(FileNotFoundError, match="no export"):
        run(pack, "--seeds", "7")
