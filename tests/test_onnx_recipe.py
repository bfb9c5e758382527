"""The recipe's ONNX path end to end on the tiny generated corpus.

train.py (hparams with ``export_onnx: True``) writes embedding_model.onnx
beside its export, export.py --onnx writes it again, and verify.py scores
the trials with ``--backend onnx`` as with torch: same EER and minDCF, and
the same scores to 1e-4.
"""

import json
import os

import numpy as np
import pytest
from recipe_helpers import RECIPE, run_recipe, train_args

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A one-epoch tiny run whose hparams ask for the ONNX export."""
    folder = tmp_path_factory.mktemp("onnx_recipe")
    hparams = folder / "aam_softmax_onnx.yaml"
    with open(os.path.join(RECIPE, "hparams", "aam_softmax.yaml")) as fin:
        hparams.write_text(fin.read() + "\nexport_onnx: True\n")
    args = train_args(
        corpus, str(folder / "run"), hparams=str(hparams), epochs=1
    )
    stdout = run_recipe("train.py", *args)
    return args, os.path.join(str(folder / "run"), "export"), stdout


def test_train_and_export_write_the_onnx_model(trained):
    args, export, stdout = trained
    onnx_file = os.path.join(export, "embedding_model.onnx")
    assert f"Exported ONNX model: {onnx_file}" in stdout
    assert os.path.isfile(onnx_file)
    assert "initializer_deduplication" not in stdout  # exporter kept quiet

    os.remove(onnx_file)
    stdout = run_recipe("export.py", *args[:1], "--onnx", *args[1:])
    assert f"Exported model: {export}" in stdout
    assert f"Exported ONNX model: {onnx_file}" in stdout
    for name in (
        "hyperparams.yaml",
        "embedding_model.ckpt",
        "embedding_model.onnx",
    ):
        assert os.path.isfile(os.path.join(export, name)), name


def read_scores(path):
    """Trial -> score of a verify.py scores file."""
    with open(path) as fin:
        return {tuple(line.split()[:3]): float(line.split()[3]) for line in fin}


def test_verify_onnx_backend_gives_torch_eer(trained, corpus, tmp_path):
    args, export, _ = trained
    prep = [a.split("=", 1)[1] for a in args if a.startswith("--prep")][0]
    summaries, scores = {}, {}
    for backend in ("torch", "onnx"):
        out = str(tmp_path / backend)
        run_recipe(
            "verify.py",
            "--model",
            export,
            "--data_folder",
            corpus,
            "--prep_folder",
            prep,
            "--output_folder",
            out,
            "--enrol_mode",
            "concat",
            "avg",
            "--no_plots",
            "--backend",
            backend,
            "--threads",
            "1",
            "--batch_size",
            "4",
        )
        with open(os.path.join(out, "summary.json")) as fin:
            summaries[backend] = json.load(fin)["results"]
        scores[backend] = read_scores(os.path.join(out, "scores_concat.txt"))
    cache = "embeddings-onnx"
    assert os.path.isdir(os.path.join(str(tmp_path / "onnx"), cache))
    assert not os.path.exists(os.path.join(str(tmp_path / "torch"), cache))

    torch_results, onnx_results = summaries["torch"], summaries["onnx"]
    assert set(onnx_results) == set(torch_results) == {"concat", "avg"}
    for mode, expected in torch_results.items():
        got = onnx_results[mode]
        assert got["backend"] == "onnx" and "backend" not in expected
        assert got["n_trials"] == expected["n_trials"] == 27
        assert got["EER"] == expected["EER"], mode
        assert got["minDCF"] == pytest.approx(expected["minDCF"], abs=1e-6)
    assert scores["onnx"].keys() == scores["torch"].keys()
    trials = sorted(scores["torch"])
    np.testing.assert_allclose(
        [scores["onnx"][t] for t in trials],
        [scores["torch"][t] for t in trials],
        atol=1e-4,
    )
