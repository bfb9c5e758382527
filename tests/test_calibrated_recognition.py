"""Exported folders with and without calibration.json, loaded offline.

SpeechBrain's loaders must keep working on an export that carries a
calibration, the calibrated verifier must return LLRs and Bayes decisions,
and without the file it must behave as ``SpeakerRecognition`` does.
"""

import logging
import math
import os

import numpy as np
import pytest
import torch

from speechbrain.inference.speaker import EncoderClassifier, SpeakerRecognition
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain_ext.data.audio import save_audio
from speechbrain_ext.inference.calibrated_recognition import (
    CalibratedSpeakerRecognition,
)
from speechbrain_ext.inference.export import (
    CALIBRATION_FILE,
    add_calibration,
    default_template,
    export_encoder,
)
from speechbrain_ext.scoring import LinearCalibration

TINY_ECAPA = {"n_mels": 24, "channels": [16, 16, 16, 16, 48], "lin_neurons": 8}
CALIBRATION = LinearCalibration(a=6.0, b=-2.0, p_target=0.05)


def tiny_model():
    torch.manual_seed(0)
    return ECAPA_TDNN(
        TINY_ECAPA["n_mels"],
        channels=TINY_ECAPA["channels"],
        lin_neurons=TINY_ECAPA["lin_neurons"],
    )


@pytest.fixture(scope="module")
def waves():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(3, 12000, generator=generator) * 0.1, torch.randn(
        3, 12000, generator=generator
    ) * 0.1


@pytest.fixture
def export(tmp_path):
    return export_encoder(
        str(tmp_path / "export"), default_template(), tiny_model(), TINY_ECAPA
    )


def uncalibrated_warnings(caplog):
    return [
        record
        for record in caplog.records
        if "uncalibrated cosines" in record.getMessage()
    ]


def load(cls, folder, tmp_path, **kwargs):
    return cls.from_hparams(
        source=folder, savedir=str(tmp_path / "loaded"), **kwargs
    )


def test_uncalibrated_export_behaves_as_speechbrain(
    export, tmp_path, waves, caplog
):
    with caplog.at_level(logging.WARNING):
        verifier = load(CalibratedSpeakerRecognition, export, tmp_path)
    assert verifier.calibration is None
    assert len(uncalibrated_warnings(caplog)) == 1
    reference = SpeakerRecognition.from_hparams(
        source=export, savedir=str(tmp_path / "reference")
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        score, decision = verifier.verify_batch(*waves)
    expected_score, expected_decision = reference.verify_batch(*waves)
    assert not uncalibrated_warnings(caplog)  # logged once, at loading
    torch.testing.assert_close(score, expected_score)
    assert torch.equal(decision, expected_decision)
    assert torch.equal(decision, score > 0.25)
    with pytest.raises(ValueError, match="needs a calibrated model"):
        verifier.verify_batch(*waves, p_target=0.01)


def test_calibrated_export_returns_llrs_and_bayes_decisions(
    export, tmp_path, waves
):
    path = add_calibration(export, CALIBRATION)
    assert path == os.path.join(export, CALIBRATION_FILE)
    verifier = load(CalibratedSpeakerRecognition, export, tmp_path)
    assert verifier.calibration == CALIBRATION
    assert verifier.p_target == 0.05
    reference = SpeakerRecognition.from_hparams(
        source=export, savedir=str(tmp_path / "reference")
    )
    cosine, _ = reference.verify_batch(*waves)
    llr, decision = verifier.verify_batch(*waves)
    torch.testing.assert_close(llr, 6.0 * cosine - 2.0)
    assert torch.equal(decision, llr >= math.log(19))
    # Another prior per call, or an LLR threshold.
    _, lenient = verifier.verify_batch(*waves, p_target=0.9)
    assert torch.equal(lenient, llr >= math.log(1 / 9))
    _, at_zero = verifier.verify_batch(*waves, threshold=0.0)
    assert torch.equal(at_zero, llr >= 0)


def test_decision_prior_can_be_stated_at_loading(export, tmp_path):
    add_calibration(export, CALIBRATION)
    verifier = load(
        CalibratedSpeakerRecognition, export, tmp_path, p_target=0.01
    )
    assert verifier.p_target == 0.01


def test_verify_files_reads_audio_with_soundfile(
    export, tmp_path, waves, monkeypatch
):
    import torchaudio

    def refuse(*args, **kwargs):
        raise AssertionError("torchaudio.load must not be used")

    monkeypatch.setattr(torchaudio, "load", refuse)
    add_calibration(export, CALIBRATION)
    paths = []
    for i, wav in enumerate(waves[0][:2]):
        paths.append(str(tmp_path / f"u{i}.wav"))
        save_audio(paths[-1], wav, 16000)
    verifier = load(CalibratedSpeakerRecognition, export, tmp_path)
    llr, decision = verifier.verify_files(paths[0], paths[1])
    batch_llr, _ = verifier.verify_batch(
        verifier.load_audio(paths[0])[None], verifier.load_audio(paths[1])[None]
    )
    assert llr.shape == batch_llr[0].shape
    torch.testing.assert_close(llr, batch_llr[0])
    assert decision.dtype == torch.bool


def test_speechbrain_loaders_ignore_the_calibration(export, tmp_path, waves):
    add_calibration(export, CALIBRATION)
    encoder = EncoderClassifier.from_hparams(
        source=export, savedir=str(tmp_path / "encoder")
    )
    assert encoder.encode_batch(waves[0]).shape == (3, 1, 8)


def test_export_with_calibration_and_stale_one_removed(tmp_path, caplog, waves):
    folder = str(tmp_path / "export")
    export_encoder(
        folder,
        default_template(),
        tiny_model(),
        TINY_ECAPA,
        calibration=CALIBRATION,
    )
    assert LinearCalibration.from_json(
        os.path.join(folder, CALIBRATION_FILE)
    ) == (CALIBRATION)
    # Exporting other weights without a calibration drops the old one.
    export_encoder(folder, default_template(), tiny_model(), TINY_ECAPA)
    assert not os.path.exists(os.path.join(folder, CALIBRATION_FILE))
    assert "calibrated the weights of an earlier export" in caplog.text


def test_add_calibration_refuses_normalised_scores(export, tmp_path):
    calibration = LinearCalibration(
        1.0, 0.0, p_target=0.05, info={"scoring": {"score_norm": "as-norm"}}
    )
    with pytest.raises(ValueError, match="scores plain cosine"):
        add_calibration(export, calibration)
    mean_norm = LinearCalibration(
        1.0, 0.0, info={"scoring": {"score_norm": "none", "mean_norm": True}}
    )
    with pytest.raises(ValueError, match="without --score_norm"):
        add_calibration(export, mean_norm)
    with pytest.raises(FileNotFoundError, match="not an exported model"):
        add_calibration(str(tmp_path), CALIBRATION)
    assert not os.path.exists(os.path.join(export, CALIBRATION_FILE))


def test_calibration_json_from_a_file_path(export, tmp_path):
    path = CALIBRATION.to_json(str(tmp_path / "fitted.json"))
    add_calibration(export, path)
    verifier = load(CalibratedSpeakerRecognition, export, tmp_path)
    score, _ = verifier.verify_batch(torch.ones(1, 8000), torch.ones(1, 8000))
    assert np.isclose(float(score.flatten()[0]), 6.0 - 2.0, atol=1e-4)
