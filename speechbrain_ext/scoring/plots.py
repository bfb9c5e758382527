"""DET curves, score histograms and EER-vs-SIR curves of several systems.

Figures are drawn on :class:`matplotlib.figure.Figure` objects and written
with the Agg renderer, without pyplot, so plotting neither needs a display
nor changes the global matplotlib backend of the caller.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> labels = np.arange(400) < 40
>>> scores = rng.normal(size=400) + 2.0 * labels
>>> path = str(getfixture("tmpdir") / "det.png")
>>> plot_det({"baseline": (scores, labels)}, path) == path
True
"""

import os

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import norm

from speechbrain_ext.scoring.metrics import (
    _check_scores_labels,
    compute_eer_mindcf,
    det_curve,
)

__all__ = ["plot_det", "plot_eer_vs_sir", "plot_score_histogram"]

# Error rates shown on the DET axes, as fractions.
_DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


def _check_systems(systems):
    """Validates the mapping of system names to (scores, labels).

    Arguments
    ---------
    systems : dict
        Name -> (scores, labels).

    Returns
    -------
    dict
        Name -> (scores, labels) as float64 and bool numpy arrays.
    """
    if not systems:
        raise ValueError("systems is empty: nothing to plot")
    return {
        name: _check_scores_labels(*scores_labels)
        for name, scores_labels in systems.items()
    }


def _save(figure, path):
    """Writes ``figure`` to ``path``, creating the folder if needed.

    Arguments
    ---------
    figure : matplotlib.figure.Figure
        The figure.
    path : str
        Output file; the format follows the extension.

    Returns
    -------
    str
        ``path``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    figure.savefig(path, dpi=150, bbox_inches="tight")
    return path


def plot_det(systems, path, title="DET curve"):
    """Plots the DET curves of several systems on normal-deviate axes.

    Each curve is marked at its EER. Error rates below 0.1% or above 40%
    are clipped to the axes.

    Arguments
    ---------
    systems : dict
        System name -> (scores, labels), as accepted by
        :func:`~speechbrain_ext.scoring.metrics.compute_eer_mindcf`.
    path : str
        Image file to write (e.g. ``det.png``).
    title : str
        Figure title.

    Returns
    -------
    str
        ``path``.

    Example
    -------
    >>> scores = np.array([0.9, 0.7, 0.4, 0.35, 0.1, 0.2])
    >>> labels = np.array([1, 1, 1, 0, 0, 0])
    >>> path = str(getfixture("tmpdir") / "plots" / "det.png")
    >>> plot_det({"a": (scores, labels), "b": (-scores, labels)}, path)
    '...det.png'
    """
    systems = _check_systems(systems)
    low, high = _DET_TICKS[0], _DET_TICKS[-1]
    figure = Figure(figsize=(5.5, 5.5))
    axes = figure.subplots()
    for name, (scores, labels) in systems.items():
        p_miss, p_fa, _ = det_curve(scores, labels)
        eer, min_dcf, _ = compute_eer_mindcf(scores, labels)
        line = axes.plot(
            norm.ppf(np.clip(p_fa, low, high)),
            norm.ppf(np.clip(p_miss, low, high)),
            label=f"{name} (EER {100 * eer:.2f}%, minDCF {min_dcf:.3f})",
        )[0]
        eer_deviate = norm.ppf(np.clip(eer, low, high))
        axes.plot(eer_deviate, eer_deviate, "o", color=line.get_color())
    ticks = norm.ppf(_DET_TICKS)
    tick_labels = [f"{100 * p:g}" for p in _DET_TICKS]
    axes.set_xticks(ticks, tick_labels)
    axes.set_yticks(ticks, tick_labels)
    axes.set_xlim(ticks[0], ticks[-1])
    axes.set_ylim(ticks[0], ticks[-1])
    axes.plot(ticks[[0, -1]], ticks[[0, -1]], ":", color="grey", lw=0.8)
    axes.set_xlabel("False alarm rate (%)")
    axes.set_ylabel("Miss rate (%)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    return _save(figure, path)


def plot_score_histogram(systems, path, bins=100):
    """Plots target and non-target score densities, one panel per system.

    Densities rather than counts are drawn because targets are rare (about
    0.5% of CN-Celeb's trials) and would vanish next to non-targets.

    Arguments
    ---------
    systems : dict
        System name -> (scores, labels), as for :func:`plot_det`.
    path : str
        Image file to write.
    bins : int
        Number of bins, shared by the two classes of a panel.

    Returns
    -------
    str
        ``path``.

    Example
    -------
    >>> scores = np.array([0.9, 0.7, 0.4, 0.35, 0.1, 0.2])
    >>> labels = np.array([1, 1, 1, 0, 0, 0])
    >>> path = str(getfixture("tmpdir") / "hist.png")
    >>> plot_score_histogram({"cosine": (scores, labels)}, path, bins=5)
    '...hist.png'
    """
    systems = _check_systems(systems)
    figure = Figure(figsize=(4 * len(systems), 3.2))
    all_axes = np.atleast_1d(figure.subplots(1, len(systems)))
    for axes, (name, (scores, labels)) in zip(all_axes, systems.items()):
        edges = np.histogram_bin_edges(scores, bins=bins)
        for mask, kind in ((labels, "target"), (~labels, "non-target")):
            axes.hist(
                scores[mask],
                bins=edges,
                density=True,
                alpha=0.5,
                label=f"{kind} ({np.count_nonzero(mask)})",
            )
        axes.set_title(name)
        axes.set_xlabel("score")
        axes.legend(fontsize="small")
    all_axes[0].set_ylabel("density")
    figure.tight_layout()
    return _save(figure, path)


def _check_sir_curves(systems):
    """Validates model name -> {SIR in dB or "clean": EER %}.

    Arguments
    ---------
    systems : dict
        See :func:`plot_eer_vs_sir`.

    Returns
    -------
    dict
        Name -> (SIRs sorted ascending, their EERs, clean EER or None).
    """
    if not systems:
        raise ValueError("systems is empty: nothing to plot")
    curves = {}
    for name, points in systems.items():
        sirs, eers, clean = [], [], None
        for sir, eer in dict(points).items():
            is_number = isinstance(sir, (int, float, np.number))
            if sir != "clean" and (isinstance(sir, bool) or not is_number):
                raise ValueError(
                    f"{name}: point {sir!r} is neither an SIR in dB nor "
                    "'clean'"
                )
            if not (isinstance(eer, (int, float, np.number))
                    and 0.0 <= eer <= 100.0):
                raise ValueError(
                    f"{name}: EER at {sir!r} must be a percentage in "
                    f"[0, 100], got {eer!r}"
                )
            if sir == "clean":
                clean = float(eer)
            else:
                sirs.append(float(sir))
                eers.append(float(eer))
        if not sirs:
            raise ValueError(f"{name} has no SIR point to plot")
        order = np.argsort(sirs)
        curves[name] = (np.array(sirs)[order], np.array(eers)[order], clean)
    return curves


def plot_eer_vs_sir(systems, path, title="EER against SIR"):
    """Plots the EER of several models against the test-side SIR.

    Each model is one line with a marker per SIR; its EER on the clean
    test side, when given, is a dashed horizontal line of the same colour,
    the level the curve should approach as the SIR grows.

    Arguments
    ---------
    systems : dict
        Model name -> {SIR in dB (float) or ``"clean"``: EER in %}, e.g.
        ``{"csc": {0.0: 21.3, 5.0: 15.0, 10.0: 12.1, "clean": 10.4}}``.
    path : str
        Image file to write (e.g. ``eer_vs_sir.png``).
    title : str
        Figure title.

    Returns
    -------
    str
        ``path``.

    Example
    -------
    >>> systems = {
    ...     "aam_softmax": {0: 31.0, 5: 22.5, 10: 17.0, "clean": 14.2},
    ...     "csc": {0: 24.1, 5: 18.3, 10: 15.2, "clean": 14.0},
    ... }
    >>> path = str(getfixture("tmpdir") / "eer_vs_sir.png")
    >>> plot_eer_vs_sir(systems, path)
    '...eer_vs_sir.png'
    """
    curves = _check_sir_curves(systems)
    figure = Figure(figsize=(5.5, 4.0))
    axes = figure.subplots()
    for name, (sirs, eers, clean) in curves.items():
        line = axes.plot(sirs, eers, "o-", label=name)[0]
        if clean is not None:
            axes.axhline(clean, ls="--", lw=1.0, color=line.get_color())
    if any(clean is not None for _, _, clean in curves.values()):
        # One legend entry explains every dashed line.
        axes.plot([], [], "--", color="grey", lw=1.0, label="clean test side")
    all_sirs = np.unique(np.concatenate([c[0] for c in curves.values()]))
    axes.set_xticks(all_sirs, [f"{sir:g}" for sir in all_sirs])
    axes.set_xlabel("SIR (dB)")
    axes.set_ylabel("EER (%)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return _save(figure, path)
