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

__all__ = [
    "det_figure",
    "det_limits",
    "plot_det",
    "plot_eer_vs_sir",
    "plot_score_histogram",
]

# Candidate error rates for DET ticks, as fractions: 1-2-5 steps up to
# 20%, then 40/60/80% and the mirror of the low steps, so that either end
# of the probit scale gets the same density of ticks.
_LOW_TICKS = [m * 10.0**e for e in range(-9, 0) for m in (1, 2, 5)]
_DET_TICKS = np.array(
    [p for p in _LOW_TICKS if p <= 0.2]
    + [0.4, 0.6, 0.8]
    + [1.0 - p for p in reversed(_LOW_TICKS) if p <= 0.1]
)
# Ticks closer than this fraction of the axis span would overlap their
# labels; decades win over 5s (and 40/60%), which win over 2s.
_MIN_TICK_GAP = 1 / 12


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


def det_limits(curves):
    """Range of error rates a DET plot needs to show every curve.

    The lower end is the finest rate the trials resolve, one error in the
    larger of the target or non-target sets of any system (a curve's
    rates of 0 lie below it). The upper end covers each curve's extent,
    the points at which neither rate is 0 or 1, and its EER. Both ends are
    widened to the nearest tick rate, and one range serves both axes so
    that the EER diagonal stays at 45 degrees.

    Arguments
    ---------
    curves : list of tuple
        One ``(p_miss, p_fa, eer)`` per system, rates as fractions, as
        :func:`~speechbrain_ext.scoring.metrics.det_curve` and
        :func:`~speechbrain_ext.scoring.metrics.compute_eer_mindcf`
        return them.

    Returns
    -------
    tuple of float
        ``(low, high)`` error rates, fractions in (0, 1).

    Example
    -------
    Four targets resolve misses in steps of 25%, and the one point off
    the axes' edges has 25% misses and 50% false alarms:

    >>> from speechbrain_ext.scoring.metrics import det_curve
    >>> scores = [0.9, 0.6, 0.5, 0.3, 0.4, 0.1]
    >>> labels = [1, 1, 1, 1, 0, 0]
    >>> p_miss, p_fa, _ = det_curve(scores, labels)
    >>> det_limits([(p_miss, p_fa, 0.25)])
    (0.2, 0.6)
    """
    lowest, highest = 1.0, 0.0
    for p_miss, p_fa, eer in curves:
        rates = np.concatenate([p_miss, p_fa])
        # Without ties the smallest non-zero rates are 1 / n_target and
        # 1 / n_nontarget: the curve has no point finer than these.
        lowest = min(lowest, rates[rates > 0].min(initial=1.0))
        inside = (p_miss > 0) & (p_miss < 1) & (p_fa > 0) & (p_fa < 1)
        extent = np.concatenate([p_miss[inside], p_fa[inside]])
        if 0.0 < eer < 1.0:
            extent = np.append(extent, eer)
        lowest = min(lowest, extent.min(initial=1.0))
        highest = max(highest, extent.max(initial=0.0))
    below = _DET_TICKS[_DET_TICKS <= lowest]
    low = below[-1] if len(below) else _DET_TICKS[0]
    above = _DET_TICKS[_DET_TICKS > low]
    high = above[min(np.searchsorted(above, highest), len(above) - 1)]
    return float(low), float(high)


def _det_ticks(low, high, span):
    """Tick rates in ``[low, high]`` and their labels in percent.

    Arguments
    ---------
    low, high : float
        Range of rates, ends included.
    span : float
        Length of the axis in normal deviates.

    Returns
    -------
    ticks : numpy.ndarray
        Rates, increasing, no two closer than ``_MIN_TICK_GAP * span``
        on the deviate scale.
    labels : list of str
        The rates in percent, without exponents.
    """
    candidates = _DET_TICKS[(_DET_TICKS >= low) & (_DET_TICKS <= high)]
    mantissa = np.round(
        np.minimum(candidates, 1 - candidates)
        / 10.0 ** np.floor(np.log10(np.minimum(candidates, 1 - candidates)))
    )
    priority = np.select([mantissa == 1, mantissa == 2], [0, 2], default=1)
    chosen = []
    for index in np.argsort(priority, kind="stable"):
        deviate = norm.ppf(candidates[index])
        if all(abs(deviate - d) >= _MIN_TICK_GAP * span for _, d in chosen):
            chosen.append((candidates[index], deviate))
    ticks = np.sort([rate for rate, _ in chosen])
    labels = [
        np.format_float_positional(100 * p, precision=8, trim="-")
        for p in ticks
    ]
    return ticks, labels


def det_figure(systems, title="DET curve", operating_points=None):
    """Draws the DET curves of several systems on normal-deviate axes.

    Each curve is marked at its EER, and at any ``operating_points`` given
    for it (e.g. where a calibrated threshold lands), with a label. The axes span the rates of
    :func:`det_limits`, so every curve is shown from the finest rate its
    trials resolve to the end of its extent; rates of 0 or 1 are drawn on
    the axes' edges. The legend sits below the axes, never over a curve.

    Arguments
    ---------
    systems : dict
        System name -> (scores, labels), as accepted by
        :func:`~speechbrain_ext.scoring.metrics.compute_eer_mindcf`.
    title : str
        Figure title.
    operating_points : dict, optional
        System name -> list of ``(p_miss, p_fa, label)``: error rates of a
        decision rule on that system's trials, drawn as crosses labelled
        ``label`` (e.g. ``"p=0.01"``).

    Returns
    -------
    matplotlib.figure.Figure
        The figure, not yet drawn or saved.

    Example
    -------
    >>> scores = np.array([0.9, 0.7, 0.4, 0.35, 0.1, 0.2])
    >>> labels = np.array([1, 1, 0, 1, 0, 0])
    >>> figure = det_figure({"a": (scores, labels)})
    >>> [tick.get_text() for tick in figure.axes[0].get_xticklabels()]
    ['20', '40']
    >>> [text.get_text() for text in figure.legends[0].get_texts()]
    ['a (EER 33.33%, minDCF 0.333)']
    """
    systems = _check_systems(systems)
    curves = {}
    for name, (scores, labels) in systems.items():
        p_miss, p_fa, _ = det_curve(scores, labels)
        eer, min_dcf, _ = compute_eer_mindcf(scores, labels)
        curves[name] = (p_miss, p_fa, eer, min_dcf)
    low, high = det_limits([curve[:3] for curve in curves.values()])
    # A little room beyond ``low`` / ``high``, so that the curves' points
    # there are not confused with the rates of 0 / 1 drawn on the edges.
    edge = 0.04 * (norm.ppf(high) - norm.ppf(low))
    lo, hi = norm.ppf(low) - edge, norm.ppf(high) + edge
    ticks, tick_labels = _det_ticks(low, high, hi - lo)

    figure = Figure(figsize=(5.5, 6.5), layout="constrained")
    axes = figure.subplots()
    for name, (p_miss, p_fa, eer, min_dcf) in curves.items():
        line = axes.plot(
            np.clip(norm.ppf(p_fa), lo, hi),
            np.clip(norm.ppf(p_miss), lo, hi),
            label=f"{name} (EER {100 * eer:.2f}%, minDCF {min_dcf:.3f})",
        )[0]
        eer_deviate = np.clip(norm.ppf(eer), lo, hi)
        axes.plot(eer_deviate, eer_deviate, "o", color=line.get_color())
        for p_miss_point, p_fa_point, label in (operating_points or {}).get(
            name, []
        ):
            x = np.clip(norm.ppf(p_fa_point), lo, hi)
            y = np.clip(norm.ppf(p_miss_point), lo, hi)
            axes.plot(x, y, "x", color=line.get_color(), markersize=8)
            axes.annotate(
                label,
                (x, y),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize="x-small",
                color=line.get_color(),
            )
    axes.set_xticks(norm.ppf(ticks), tick_labels)
    axes.set_yticks(norm.ppf(ticks), tick_labels)
    axes.set_xlim(lo, hi)
    axes.set_ylim(lo, hi)
    axes.set_aspect("equal")
    axes.plot([lo, hi], [lo, hi], ":", color="grey", lw=0.8)
    axes.set_xlabel("False alarm rate (%)")
    axes.set_ylabel("Miss rate (%)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.legend(loc="outside lower center", fontsize="small")
    return figure


def plot_det(systems, path, title="DET curve", operating_points=None):
    """Plots the DET curves of several systems on normal-deviate axes.

    See :func:`det_figure`, which draws the figure.

    Arguments
    ---------
    systems : dict
        System name -> (scores, labels), as accepted by
        :func:`~speechbrain_ext.scoring.metrics.compute_eer_mindcf`.
    path : str
        Image file to write (e.g. ``det.png``).
    title : str
        Figure title.
    operating_points : dict, optional
        System name -> list of ``(p_miss, p_fa, label)`` to mark (see
        :func:`det_figure`).

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
    >>> plot_det(
    ...     {"a": (scores, labels)},
    ...     path,
    ...     operating_points={"a": [(1 / 3, 0.0, "p=0.01")]},
    ... )
    '...det.png'
    """
    return _save(det_figure(systems, title, operating_points), path)


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
                    f"{name}: point {sir!r} is neither an SIR in dB nor 'clean'"
                )
            if not (
                isinstance(eer, (int, float, np.number)) and 0.0 <= eer <= 100.0
            ):
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
