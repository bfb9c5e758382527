"""Summary statistics for benchmark tables: spread over seeds, timings.

Results over a handful of seeds are reported as mean, sample standard
deviation and range, since three seeds are too few for anything else;
timings as median and interquartile range, which ignore the occasional
step slowed down by another process on a shared machine.
"""

import math

import numpy as np

__all__ = ["format_spread", "seed_summary", "timing_summary"]


def seed_summary(values):
    """Mean, sample standard deviation, min and max of per-seed results.

    Arguments
    ---------
    values : list of float
        One result per seed.

    Returns
    -------
    dict
        ``mean``, ``std`` (ddof=1; NaN for a single seed), ``min``,
        ``max`` and ``n``.

    Raises
    ------
    ValueError
        If ``values`` is empty.

    Example
    -------
    >>> seed_summary([1.0, 2.0, 3.0])
    {'mean': 2.0, 'std': 1.0, 'min': 1.0, 'max': 3.0, 'n': 3}
    """
    if len(values) == 0:
        raise ValueError("seed_summary needs at least one value")
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else float("nan")
    return {
        "mean": float(array.mean()),
        "std": std,
        "min": float(array.min()),
        "max": float(array.max()),
        "n": int(len(array)),
    }


def timing_summary(values):
    """Median and interquartile range of repeated timings.

    Arguments
    ---------
    values : list of float
        Repeated measurements (e.g. seconds per step).

    Returns
    -------
    dict
        ``median``, ``q25``, ``q75``, ``iqr`` (q75 - q25) and ``n``.

    Raises
    ------
    ValueError
        If ``values`` is empty.

    Example
    -------
    >>> timing_summary([4.0, 1.0, 3.0, 2.0, 5.0])
    {'median': 3.0, 'q25': 2.0, 'q75': 4.0, 'iqr': 2.0, 'n': 5}
    """
    if len(values) == 0:
        raise ValueError("timing_summary needs at least one value")
    q25, median, q75 = np.percentile(np.asarray(values, float), [25, 50, 75])
    return {
        "median": float(median),
        "q25": float(q25),
        "q75": float(q75),
        "iqr": float(q75 - q25),
        "n": len(values),
    }


def format_spread(summary, digits=2):
    """Formats a :func:`seed_summary` as ``mean ± std [min-max]``.

    Arguments
    ---------
    summary : dict
        Output of :func:`seed_summary`.
    digits : int
        Decimals shown.

    Returns
    -------
    str
        The mean alone for a single seed.

    Example
    -------
    >>> format_spread(seed_summary([10.0, 12.0, 14.0]), digits=1)
    '12.0 ± 2.0 [10.0-14.0]'
    >>> format_spread(seed_summary([0.5]), digits=3)
    '0.500'
    """
    mean = f"{summary['mean']:.{digits}f}"
    if summary["n"] < 2 or math.isnan(summary["std"]):
        return mean
    return (
        f"{mean} ± {summary['std']:.{digits}f} "
        f"[{summary['min']:.{digits}f}-{summary['max']:.{digits}f}]"
    )
