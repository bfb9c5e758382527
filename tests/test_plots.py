"""Tests that DET curves and score histograms are written as images."""

import matplotlib.image
import numpy as np
import pytest

from speechbrain_ext.scoring.plots import (
    plot_det,
    plot_eer_vs_sir,
    plot_score_histogram,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def systems():
    rng = np.random.default_rng(0)
    labels = np.arange(2000) < 50
    return {
        "cosine": (rng.normal(size=2000) + 2.0 * labels, labels),
        "as-norm": (rng.normal(size=2000) + 3.0 * labels, labels.astype(int)),
    }


def read_png(path):
    with open(path, "rb") as image:
        assert image.read(8) == PNG_SIGNATURE
    return matplotlib.image.imread(path)


def test_det_plot_written(tmp_path, systems):
    path = str(tmp_path / "new_folder" / "det.png")
    assert plot_det(systems, path) == path
    pixels = read_png(path)
    # Curves in two colours on white: the image is not blank.
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0.05


def test_histogram_has_one_panel_per_system(tmp_path, systems):
    one = read_png(
        plot_score_histogram(
            {"cosine": systems["cosine"]}, str(tmp_path / "one.png")
        )
    )
    two = read_png(plot_score_histogram(systems, str(tmp_path / "two.png")))
    assert two.shape[1] > 1.6 * one.shape[1]


def test_bad_systems_rejected(tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_det({}, str(tmp_path / "det.png"))
    with pytest.raises(ValueError, match="all 2 trials are target"):
        plot_score_histogram(
            {"x": ([0.1, 0.2], [1, 1])}, str(tmp_path / "h.png")
        )


def test_eer_vs_sir_plot_written(tmp_path):
    systems = {
        "aam_softmax": {0.0: 31.0, 10: 17.0, 5: 22.5, "clean": 14.2},
        "csc": {0: 24.1, 5: 18.3, 10: 15.2},
    }
    path = str(tmp_path / "robustness" / "eer_vs_sir.png")
    pixels = read_png(plot_eer_vs_sir(systems, path))
    assert pixels[..., :3].std() > 0.05


@pytest.mark.parametrize(
    "systems, message",
    [
        ({}, "nothing to plot"),
        ({"a": {"clean": 10.0}}, "a has no SIR point"),
        ({"a": {"sir5": 10.0}}, "a: point 'sir5' is neither an SIR"),
        ({"a": {True: 10.0}}, "a: point True is neither"),
        ({"a": {5.0: 0.3, 0.0: 120.0}}, r"a: EER at 0.0 must be .* 120.0"),
        ({"a": {5.0: float("nan")}}, "a: EER at 5.0 must be a percentage"),
    ],
)
def test_eer_vs_sir_bad_input_is_named(tmp_path, systems, message):
    with pytest.raises(ValueError, match=message):
        plot_eer_vs_sir(systems, str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
