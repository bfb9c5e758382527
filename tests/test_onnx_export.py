"""ONNX export of exported encoders and the ONNX Runtime extraction backend.

The ONNX graph (Fbank + sentence mean normalisation + ECAPA-TDNN) must give
torch's embeddings: cosine >= 0.9999 per utterance, alone and in padded
batches. Tests that run ONNX Runtime skip without it; the ones checking
what happens without it block its import instead.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain_ext.data.audio import save_audio
from speechbrain_ext.inference.extraction import EmbeddingExtractor, _pad_batch
from speechbrain_ext.inference.onnx_backend import OnnxEncoder, load_encoder
from speechbrain_ext.inference.onnx_export import (
    ONNX_FILE,
    OnnxExportError,
    export_encoder_onnx,
    export_onnx,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_ECAPA = {
    "n_mels": 40,
    "channels": [32, 32, 32, 32, 96],
    "attention_channels": 16,
    "lin_neurons": 16,
}
# Seconds: the extractor's 0.1 s floor, odd lengths, one over 2 s.
LENGTHS = [0.1, 0.37, 0.8, 1.0, 1.45, 2.3]
MIN_COSINE = 0.9999


def cosine(a, b):
    """Row-wise cosine similarity of two arrays [N, dim]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    )


def noise(seconds, seed):
    """A 16 kHz noise waveform with some loud and quiet stretches."""
    generator = torch.Generator().manual_seed(seed)
    wav = torch.randn(int(16000 * seconds), generator=generator)
    envelope = 0.05 + 0.2 * torch.rand(1 + len(wav) // 800, generator=generator)
    return wav * envelope.repeat_interleave(800)[: len(wav)]


class BranchingTDNN(ECAPA_TDNN):
    """ECAPA-TDNN (same weights) that halves its output when a value exceeds
    1: data-dependent control flow, which neither torch.export mode traces.
    """

    def forward(self, x, lengths=None):
        out = super().forward(x, lengths)
        if float(out.abs().max()) > 1.0:
            out = out / 2
        return out


def tiny_ecapa(model_class=ECAPA_TDNN):
    """A random ECAPA-TDNN with trained-looking batch-norm statistics."""
    torch.manual_seed(0)
    model = model_class(
        TINY_ECAPA["n_mels"],
        channels=TINY_ECAPA["channels"],
        attention_channels=TINY_ECAPA["attention_channels"],
        lin_neurons=TINY_ECAPA["lin_neurons"],
    )
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A SpeechBrain export folder of a tiny random ECAPA-TDNN."""
    from speechbrain_ext.inference.export import (
        default_template,
        export_encoder,
    )

    folder = str(tmp_path_factory.mktemp("onnx_tiny") / "export")
    return export_encoder(folder, default_template(), tiny_ecapa(), TINY_ECAPA)


@pytest.fixture(scope="module")
def onnx_file(tiny_export):
    """The folder's embedding_model.onnx (needs the [onnx] extra)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    return export_onnx(tiny_export)


@pytest.fixture(scope="module")
def torch_encoder(tiny_export, tmp_path_factory):
    """The export folder loaded by SpeechBrain, as verify.py loads it."""
    return load_encoder(
        tiny_export, savedir=str(tmp_path_factory.mktemp("onnx_loaded"))
    )


@pytest.fixture(scope="module")
def onnx_encoder(onnx_file):
    return OnnxEncoder(onnx_file, threads=1)


def test_export_writes_a_dynamic_graph_beside_the_checkpoint(
    tiny_export, onnx_file
):
    import onnx

    assert onnx_file == os.path.join(tiny_export, ONNX_FILE)
    model = onnx.load(onnx_file)
    onnx.checker.check_model(model)
    opset = {o.domain: o.version for o in model.opset_import}[""]
    assert opset >= 17
    shapes = {
        value.name: [
            d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim
        ]
        for value in [*model.graph.input, *model.graph.output]
    }
    assert shapes == {
        "wavs": ["batch", "samples"],
        "wav_lens": ["batch"],
        "embeddings": ["batch", TINY_ECAPA["lin_neurons"]],
    }
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["sample_rate"] == "16000"
    assert "Fbank" in meta["front_end"]
    assert "InputNormalization" in meta["front_end"]
    assert "ECAPA_TDNN" in meta["model"]
    # The front end is in the graph: no STFT node left for the slow kernel.
    ops = {node.op_type for node in model.graph.node}
    assert "STFT" not in ops and "Log" in ops


@pytest.mark.parametrize("seconds", LENGTHS)
def test_single_utterances_match_torch(torch_encoder, onnx_encoder, seconds):
    wav = noise(seconds, seed=int(seconds * 100))[None]
    with torch.no_grad():
        expected = torch_encoder.encode_batch(wav).reshape(1, -1)
    got = onnx_encoder.encode_batch(wav)
    assert got.shape == (1, 1, TINY_ECAPA["lin_neurons"])
    assert cosine(expected, got.reshape(1, -1))[0] >= MIN_COSINE


@pytest.mark.parametrize("padding", ["mirror", "zeros"])
def test_padded_batches_match_torch(torch_encoder, onnx_encoder, padding):
    """Relative lengths reach the graph: padded rows embed as in torch."""
    batch = [(str(i), noise(s, seed=i)) for i, s in enumerate(LENGTHS)]
    if padding == "mirror":  # what EmbeddingExtractor feeds the encoder
        _, wavs, lens = _pad_batch(batch)
    else:
        longest = max(len(w) for _, w in batch)
        wavs = torch.stack(
            [
                torch.nn.functional.pad(w, (0, longest - len(w)))
                for _, w in batch
            ]
        )
        lens = torch.tensor([len(w) / longest for _, w in batch])
    with torch.no_grad():
        expected = torch_encoder.encode_batch(wavs, lens).squeeze(1)
    got = onnx_encoder.encode_batch(wavs, lens).squeeze(1)
    assert (cosine(expected, got) >= MIN_COSINE).all(), cosine(expected, got)
    if padding == "zeros":  # the graph uses the lengths: without them the
        unmasked = onnx_encoder.encode_batch(wavs).squeeze(1)  # rows change
        assert cosine(expected, unmasked).min() < 0.99


def test_extractor_backends_agree_and_keep_order(
    tmp_path, torch_encoder, onnx_file
):
    from speechbrain_ext.inference.onnx_backend import onnx_extractor

    items = []
    for i, seconds in enumerate(LENGTHS):
        path = str(tmp_path / f"u{i}.wav")
        save_audio(path, noise(seconds, seed=10 + i), 16000)
        items.append((f"u{i}", path))
    items = items[::-1]  # not in length order
    for batch_size in (1, 4):
        ids, expected = EmbeddingExtractor(
            torch_encoder, batch_size=batch_size
        )(items)
        extractor = onnx_extractor(onnx_file, threads=1, batch_size=batch_size)
        onnx_ids, got = extractor(items, str(tmp_path / f"cache{batch_size}"))
        assert onnx_ids == ids == [uid for uid, _ in items]
        assert (cosine(expected, got) >= MIN_COSINE).all()

    # The cache works as with torch: a second call runs no model.
    def refuse(*args, **kwargs):
        raise AssertionError("ONNX Runtime called despite the cache")

    extractor.encoder.session.run = refuse
    _, cached = extractor(items, str(tmp_path / "cache4"))
    np.testing.assert_array_equal(cached, got)


def test_unexportable_model_error_names_it(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from speechbrain.lobes.features import Fbank
    from speechbrain.processing.features import InputNormalization

    path = str(tmp_path / "model" / ONNX_FILE)
    with pytest.raises(OnnxExportError) as error:
        export_encoder_onnx(
            Fbank(n_mels=TINY_ECAPA["n_mels"]),
            InputNormalization(norm_type="sentence", std_norm=False),
            tiny_ecapa(BranchingTDNN),
            path,
            label=f"BranchingTDNN of {tmp_path / 'model'}",
        )
    message = str(error.value)
    assert message.startswith(
        f"cannot export BranchingTDNN of {tmp_path / 'model'} to ONNX"
    )
    assert "data-dependent" in message
    assert not os.path.exists(path)
    assert os.listdir(tmp_path / "model") == []  # no staging files left


def test_folder_that_cannot_be_exported_is_named(tmp_path):
    """An export folder whose network fails the trace names folder and
    class (the class comes from its hyperparams.yaml)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from speechbrain_ext.inference.export import (
        default_template,
        export_encoder,
    )

    folder = str(tmp_path / "branching")
    export_encoder(folder, default_template(), tiny_ecapa(), TINY_ECAPA)
    yaml_path = os.path.join(folder, "hyperparams.yaml")
    with open(yaml_path) as fin:
        text = fin.read()
    stock = "!new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN"
    assert stock in text
    with open(yaml_path, "w") as fout:
        fout.write(text.replace(stock, "!new:test_onnx_export.BranchingTDNN"))
    with pytest.raises(
        OnnxExportError,
        match=f"cannot export BranchingTDNN of {folder} to ONNX",
    ):
        export_onnx(folder)
    assert not os.path.exists(os.path.join(folder, ONNX_FILE))


def test_export_refuses_a_graph_that_disagrees_with_torch(
    monkeypatch, tiny_export, tmp_path
):
    """The check runs the original modules, so a wrong rewrite is caught."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from speechbrain_ext.inference import onnx_export

    forward = onnx_export.DftConvSTFT.forward
    monkeypatch.setattr(
        onnx_export.DftConvSTFT,
        "forward",
        lambda self, x: forward(self, x).roll(5, dims=2),  # wrong bins
    )
    path = str(tmp_path / "wrong.onnx")
    with pytest.raises(OnnxExportError, match="disagrees with torch"):
        export_onnx(tiny_export, path)
    assert not os.path.exists(path)


def test_missing_onnx_file_says_how_to_export(tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(
        FileNotFoundError,
        match="python -m speechbrain_ext.inference.onnx_export",
    ):
        OnnxEncoder(str(tmp_path))


def test_onnx_backend_without_onnxruntime_says_how_to_install(
    monkeypatch, tmp_path
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    hint = r"pip install speechbrain_ext\[onnx\]"
    with pytest.raises(ImportError, match=hint):
        OnnxEncoder(str(tmp_path))
    with pytest.raises(ImportError, match=hint):
        load_encoder(str(tmp_path), backend="onnx")


@pytest.mark.parametrize("missing", ["onnx", "onnxscript"])
def test_export_without_the_extra_says_how_to_install(
    monkeypatch, tiny_export, missing
):
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(ImportError, match=r"pip install speechbrain_ext\[onnx"):
        export_onnx(tiny_export)


def test_torch_path_works_without_onnx_packages(tiny_export, tmp_path):
    """Nothing imports onnx/onnxruntime until the ONNX option is used."""
    code = f"""
import sys
for name in ("onnx", "onnxruntime", "onnxscript"):
    sys.modules[name] = None
sys.path.insert(0, {os.path.join(REPO, "recipes", "CNCeleb")!r})
import torch
import verify
import speechbrain_ext.inference.onnx_export
from speechbrain_ext.inference.onnx_backend import load_encoder
args = verify.parse_args(["--model", "m", "--data_folder", "d"])
assert args.backend == "torch" and args.threads is None
encoder = load_encoder({tiny_export!r}, savedir={str(tmp_path / "l")!r})
print(tuple(encoder.encode_batch(torch.randn(2, 8000)).shape))
"""
    process = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.strip().endswith(
        f"(2, 1, {TINY_ECAPA['lin_neurons']})"
    )


def test_verify_rejects_onnx_on_gpu(capsys):
    sys.path.insert(0, os.path.join(REPO, "recipes", "CNCeleb"))
    try:
        import verify
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit):
        verify.parse_args(
            [
                "--model",
                "m",
                "--data_folder",
                "d",
                "--backend",
                "onnx",
                "--device",
                "cuda:0",
            ]
        )
    assert "--backend onnx runs on the CPU" in capsys.readouterr().err
    args = verify.parse_args(
        [
            "--model",
            "m",
            "--data_folder",
            "d",
            "--backend",
            "onnx",
            "--threads",
            "2",
        ]
    )
    assert (args.backend, args.threads) == ("onnx", 2)


def test_benchmark_adds_onnx_rows_side_by_side(tmp_path, tiny_export):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import json

    data = tmp_path / "data"
    for i in range(5):
        save_audio(str(data / f"f{i}.wav"), noise(0.3 + 0.1 * i, i), 16000)
    out = tmp_path / "extract.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.extract",
            "--data_folder",
            str(data),
            "--n_files",
            "4",
            "--model",
            tiny_export,
            "--threads",
            "1",
            "--batch_sizes",
            "1",
            "2",
            "--workers",
            "0",
            "--backends",
            "torch",
            "onnx",
            "--out",
            str(out),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = json.loads(out.read_text())
    rows = report["result"]["rows"]
    assert [(r["method"], r["batch_size"]) for r in rows] == [
        ("per-file", 1),
        ("EmbeddingExtractor", 1),
        ("EmbeddingExtractor + ONNX Runtime", 1),
        ("EmbeddingExtractor", 2),
        ("EmbeddingExtractor + ONNX Runtime", 2),
    ]
    assert [r["backend"] for r in rows] == [
        "torch",
        "torch",
        "onnxruntime",
        "torch",
        "onnxruntime",
    ]
    baseline = rows[0]["seconds"]
    for row in rows[1:]:
        assert row["speed_up"] == pytest.approx(baseline / row["seconds"])
        assert row["agreement"]["min_cosine"] >= MIN_COSINE
    assert report["result"]["onnx_control"]["min_cosine"] >= MIN_COSINE
    assert report["machine"]["onnxruntime_threads"] == 1
    assert report["model"]["onnx"]["opset"] >= 17
    assert (
        "1 torch threads, 1 ONNX Runtime intra-op threads" in (report["table"])
    )
    assert "| EmbeddingExtractor + ONNX Runtime | 2 | 0 |" in report["table"]
