"""Calibration trials from the preparation and ``verify.py --calibrate``.

The calibration is fitted on trials among held-out validation speakers,
never on the test trials; these tests check where the trials come from and
that verify.py fits, applies, reports and saves the calibration.
"""

import csv
import json
import os
import sys

import pytest
import torch

from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain_ext.inference.export import default_template, export_encoder
from speechbrain_ext.scoring import LinearCalibration, read_trials

sys.path.insert(
    0, os.path.join(os.path.dirname(__file__), "..", "recipes", "CNCeleb")
)
import cnceleb_prepare  # noqa: E402
import verify  # noqa: E402

TINY_ECAPA = {"n_mels": 24, "channels": [16, 16, 16, 16, 48], "lin_neurons": 8}


def read_rows(path):
    with open(path, newline="") as fin:
        return list(csv.DictReader(fin))


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    """The tiny corpus prepared with two validation speakers."""
    save = str(tmp_path_factory.mktemp("prepared"))
    cnceleb_prepare.prepare_cnceleb(corpus, save, valid_ratio=2, num_workers=1)
    return save


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    torch.manual_seed(0)
    model = ECAPA_TDNN(
        TINY_ECAPA["n_mels"],
        channels=TINY_ECAPA["channels"],
        lin_neurons=TINY_ECAPA["lin_neurons"],
    )
    folder = str(tmp_path_factory.mktemp("model") / "export")
    return export_encoder(folder, default_template(), model, TINY_ECAPA)


def test_calibration_trials_use_validation_speakers_only(prepared):
    valid = {row["ID"]: row for row in read_rows(f"{prepared}/valid.csv")}
    test_speakers = {
        row["spk_id"] for row in read_rows(f"{prepared}/test.csv")
    } | {row["spk_id"] for row in read_rows(f"{prepared}/enrol_concat.csv")}
    trials = read_trials(f"{prepared}/calibration_trials.csv")
    labels = [label for _, _, label in trials]
    assert 0 < labels.count(1) and labels.count(0) == labels.count(1)
    for enrol, test, label in trials:
        assert enrol in valid and test in valid
        speakers = valid[enrol]["spk_id"], valid[test]["spk_id"]
        assert not set(speakers) & test_speakers
        assert (speakers[0] == speakers[1]) == (label == 1)
        # Target sides come from different sessions, as test trials do.
        if label == 1:
            assert enrol.split("-")[1:3] != test.split("-")[1:3]


def test_no_validation_speakers_give_an_empty_calibration_list(
    corpus, tmp_path
):
    cnceleb_prepare.prepare_cnceleb(
        corpus, str(tmp_path), valid_ratio=0, num_workers=1
    )
    with open(tmp_path / "calibration_trials.csv") as fin:
        assert fin.read() == "enrol_id,test_id,label\n"


def test_verify_calibrate_fits_applies_and_saves(
    corpus, prepared, tiny_export, tmp_path
):
    output = tmp_path / "verify"
    results = verify.main(
        [
            "--model",
            tiny_export,
            "--data_folder",
            corpus,
            "--prep_folder",
            prepared,
            "--output_folder",
            str(output),
            "--enrol_mode",
            "concat",
            "avg",
            "--calibrate",
        ]
    )
    calibration = LinearCalibration.from_json(str(output / "calibration.json"))
    n_calibration = len(read_trials(f"{prepared}/calibration_trials.csv"))
    assert calibration.n_target + calibration.n_nontarget == n_calibration
    assert calibration.p_target == 0.05
    assert calibration.info["scoring"]["score_norm"] == "none"
    assert calibration.info["calibration_trials"].endswith(
        "calibration_trials.csv"
    )
    with open(output / "summary.json") as fin:
        summary = json.load(fin)["results"]
    for mode in ("concat", "avg"):
        metrics = summary[mode]["calibration"]
        result = results[mode]
        llrs = calibration(result["scores"])
        assert metrics["Cllr"] == pytest.approx(
            verify.cllr(llrs, result["labels"])
        )
        assert metrics["minCllr"] <= metrics["Cllr"] + 1e-12
        for prior in ("0.01", "0.05"):
            assert metrics[prior]["actDCF"] >= metrics[prior]["minDCF"] - 1e-12
    assert (output / "det_calibrated.png").is_file()
    table = (output / "calibration.md").read_text()
    assert "| actDCF cal |" in table and "| concat |" in table


def test_verify_calibrate_names_the_fix_without_validation_speakers(
    corpus, tiny_export, tmp_path
):
    prep = tmp_path / "prepared"
    cnceleb_prepare.prepare_cnceleb(
        corpus, str(prep), valid_ratio=0, num_workers=1
    )
    with pytest.raises(ValueError, match="held out no validation speakers"):
        verify.main(
            [
                "--model",
                tiny_export,
                "--data_folder",
                corpus,
                "--prep_folder",
                str(prep),
                "--output_folder",
                str(tmp_path / "verify"),
                "--calibrate",
                "--no_plots",
            ]
        )
    os.remove(prep / "calibration_trials.csv")
    with pytest.raises(FileNotFoundError, match="prepare the data again"):
        verify.main(
            [
                "--model",
                tiny_export,
                "--data_folder",
                corpus,
                "--prep_folder",
                str(prep),
                "--output_folder",
                str(tmp_path / "verify"),
                "--calibrate",
                "--no_plots",
            ]
        )


def test_verify_calibrate_under_interference_fits_per_condition(
    corpus, prepared, tiny_export, tmp_path
):
    output = tmp_path / "verify"
    results = verify.main(
        [
            "--model",
            tiny_export,
            "--data_folder",
            corpus,
            "--prep_folder",
            prepared,
            "--output_folder",
            str(output),
            "--calibrate",
            "--conditions",
            "clean",
            "sir0",
            "--no_plots",
        ]
    )
    clean = LinearCalibration.from_json(str(output / "calibration.json"))
    own = LinearCalibration.from_json(str(output / "calibration_sir0.json"))
    assert clean.info["condition"] == "clean"
    assert own.info["condition"] == "sir0"
    assert own.n_target + own.n_nontarget == len(
        read_trials(f"{prepared}/calibration_trials.csv")
    )
    # Interfered calibration trials differ from the clean ones, so the fit
    # moves; the interferers are validation speakers, not test speakers.
    assert (own.a, own.b) != (clean.a, clean.b)
    valid = {row["ID"] for row in read_rows(f"{prepared}/valid.csv")}
    rows = verify.calibration_rows(prepared, {"data_root": corpus})
    corruptor = verify.corruptors_by_condition(
        verify.parse_args(
            ["--model", ".", "--data_folder", corpus, "--conditions", "sir0"]
        ),
        rows,
        {"data_root": corpus},
        str(tmp_path),
        interferers=rows,
    )["sir0"]
    assert {row["ID"] for row in corruptor.pool.rows} == valid
    with open(output / "summary.json") as fin:
        summary = json.load(fin)["results"]
    assert "calibration_interfered" not in summary["concat"]
    interfered = summary["concat@sir0"]
    scores, labels = (
        results["concat@sir0"]["scores"],
        results["concat@sir0"]["labels"],
    )
    assert interfered["calibration"]["Cllr"] == pytest.approx(
        verify.cllr(clean(scores), labels)
    )
    assert interfered["calibration_interfered"]["Cllr"] == pytest.approx(
        verify.cllr(own(scores), labels)
    )
    for prior in ("0.01", "0.05"):
        assert interfered["calibration_interfered"][prior][
            "actDCF"
        ] == pytest.approx(verify.act_dcf(own(scores), labels, float(prior)))
    table = (output / "calibration.md").read_text()
    assert "| actDCF own fit |" in table and "| concat@sir0 |" in table
