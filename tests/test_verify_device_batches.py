"""verify.py --device auto and the padded-seconds cap of embedding batches."""

import csv
import os
import sys

import pytest
import torch

from speechbrain_ext.data.audio import save_audio
from speechbrain_ext.evaluation.verification import verify_trials

sys.path.insert(
    0, os.path.join(os.path.dirname(__file__), "..", "recipes", "CNCeleb")
)
import verify  # noqa: E402

RATE = 16000


class PaddingEncoder:
    """Records each batch's padded shape; embeds by the first samples."""

    device = "cpu"

    def __init__(self):
        self.shapes = []

    def encode_batch(self, wavs, wav_lens):
        self.shapes.append(tuple(wavs.shape))
        return wavs[:, None, :4] + 1.0


@pytest.mark.parametrize("cuda", [True, False])
def test_auto_device_is_cuda_when_available(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert verify.resolve_device("auto") == ("cuda" if cuda else "cpu")
    assert verify.resolve_device("auto", backend="onnx") == "cpu"
    assert verify.resolve_device("cpu") == "cpu"
    args = verify.parse_args(["--model", "m", "--data_folder", "d"])
    assert args.device == ("cuda" if cuda else "cpu")
    onnx = verify.parse_args(
        ["--model", "m", "--data_folder", "d", "--backend", "onnx"]
    )
    assert onnx.device == "cpu"  # auto never contradicts the ONNX backend


def test_max_batch_seconds_is_checked_and_defaults_to_a_cap():
    args = verify.parse_args(["--model", "m", "--data_folder", "d"])
    assert args.max_batch_seconds > 0
    with pytest.raises(SystemExit):
        verify.parse_args(
            ["--model", "m", "--data_folder", "d", "--max_batch_seconds=-1"]
        )


@pytest.fixture
def long_enrolments(tmp_path):
    """Enrolments of 0.5-6 s (like concatenated ones) and short tests."""
    enrol, test = [], []
    for index, seconds in enumerate([6.0, 5.0, 4.0, 0.5, 3.0]):
        path = str(tmp_path / f"e{index}.wav")
        save_audio(path, torch.full((int(seconds * RATE),), 0.1), RATE)
        enrol.append({"ID": f"e{index}", "wav": path, "enrol_id": f"e{index}"})
    for index in range(3):
        path = str(tmp_path / f"t{index}.wav")
        save_audio(path, torch.full((RATE,), 0.2), RATE)
        test.append({"ID": f"t{index}", "wav": path})
    trials = [(f"e{i}", f"t{i % 3}", i % 2) for i in range(5)]
    return enrol, test, trials


def test_verify_trials_caps_padded_seconds_per_batch(long_enrolments):
    enrol, test, trials = long_enrolments
    encoder = PaddingEncoder()
    verify_trials(
        encoder, enrol, test, trials, batch_size=16, max_batch_seconds=10.0
    )
    for batch, samples in encoder.shapes:
        assert batch == 1 or batch * samples / RATE <= 10.0
    # 6 s alone (two would pad to 12 s); 5 + 4 s (10 s); 3 + 1 + 1 s (9 s,
    # a fourth would pad to 12 s); 1 + 0.5 s.
    assert [b for b, _ in encoder.shapes] == [1, 2, 3, 2]
    # Without the cap everything goes in one batch padded to 6 s x 8.
    uncapped = PaddingEncoder()
    verify_trials(uncapped, enrol, test, trials, batch_size=16)
    assert uncapped.shapes == [(8, 6 * RATE)]


def test_verify_main_passes_device_and_cap(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "hyperparams.yaml").write_text("x: 1\n")
    prep = tmp_path / "prep"
    prep.mkdir()
    for name in ("eval.csv",):
        with open(prep / name, "w", newline="") as fout:
            writer = csv.writer(fout)
            writer.writerow(["ID", "duration", "wav", "spk_id"])
            writer.writerow(["a", 1.0, "/a.wav", "s1"])
    trials = prep / "trials.csv"
    trials.write_text("enrol_id,test_id,label\na,a,1\n")
    seen = {}

    def from_hparams(**kwargs):
        seen["run_opts"] = kwargs["run_opts"]
        return PaddingEncoder()

    class Stop(Exception):
        pass

    def fake_verify_trials(*args, **kwargs):
        seen["max_batch_seconds"] = kwargs["max_batch_seconds"]
        raise Stop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(verify.EncoderClassifier, "from_hparams", from_hparams)
    monkeypatch.setattr(verify, "verify_trials", fake_verify_trials)
    base = [
        "--model",
        str(model),
        "--data_folder",
        str(tmp_path),
        "--prep_folder",
        str(prep),
        "--trials",
        str(trials),
        "--output_folder",
        str(tmp_path / "out"),
    ]
    with pytest.raises(Stop):
        verify.main(base + ["--max_batch_seconds", "120"])
    assert seen == {"run_opts": {"device": "cpu"}, "max_batch_seconds": 120.0}
    with pytest.raises(Stop):
        verify.main(base + ["--max_batch_seconds", "0"])
    assert seen["max_batch_seconds"] is None  # 0: no cap
