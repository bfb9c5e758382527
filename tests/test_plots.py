"""Tests that DET curves and score histograms are written as images."""

import matplotlib.image
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from scipy.stats import norm

from speechbrain_ext.scoring.metrics import compute_eer_mindcf, det_curve
from speechbrain_ext.scoring.plots import (
    det_figure,
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


def poor_system(n_target=300, n_nontarget=3000, seed=0):
    """Scores of a system with an EER near 30% (d' = 1.05)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_target + n_nontarget) < n_target
    return rng.normal(size=len(labels)) + 1.05 * labels, labels


def test_det_axes_cover_every_curve(systems):
    poor = poor_system()
    eer = compute_eer_mindcf(*poor)[0]
    assert 0.25 < eer < 0.35
    all_systems = {**systems, "5 dB SIR": poor}
    axes = det_figure(all_systems).axes[0]
    for limits in (axes.get_xlim(), axes.get_ylim()):
        low, high = limits
        assert low < norm.ppf(eer) < high
        for scores, labels in all_systems.values():
            p_miss, p_fa, _ = det_curve(scores, labels)
            inside = (p_miss > 0) & (p_miss < 1) & (p_fa > 0) & (p_fa < 1)
            deviates = norm.ppf(np.concatenate([p_miss[inside], p_fa[inside]]))
            assert low < deviates.min() and deviates.max() < high
            # Down to one error among the targets / non-targets.
            n_target = np.count_nonzero(labels)
            assert low < norm.ppf(1 / (len(labels) - n_target))
            assert low < norm.ppf(1 / n_target)
        # No wider than needed: within a few tick steps of the data.
        assert norm.cdf(high) < 0.999 and norm.cdf(low) > 1e-5


def test_det_axes_follow_the_data(systems):
    good = det_figure(systems).axes[0].get_xlim()
    poor = det_figure({"poor": poor_system()}).axes[0].get_xlim()
    assert poor[1] > good[1] + 1.0  # the poor curve reaches further
    tick_labels = det_figure({"poor": poor_system()}).axes[0].get_xticklabels()
    rates = [float(tick.get_text()) for tick in tick_labels]
    assert rates == sorted(rates) and max(rates) > 50


def test_det_legend_never_hides_a_curve(systems):
    long_names = {
        f"{name}, a system name long enough to cross the plot": value
        for name, value in {**systems, "poor": poor_system()}.items()
    }
    figure = det_figure(long_names)
    FigureCanvasAgg(figure).draw()
    axes = figure.axes[0]
    legends = list(figure.legends) + [
        ax.get_legend() for ax in figure.axes if ax.get_legend()
    ]
    assert len(legends) == 1
    box = legends[0].get_window_extent()
    assert not box.overlaps(axes.get_window_extent())
    assert len(legends[0].get_texts()) == 3


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
