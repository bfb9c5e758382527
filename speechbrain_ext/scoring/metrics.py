"""Exact EER and minDCF from sorted scores, in O(N log N) time, O(N) memory.

``speechbrain.utils.metric_stats.minDCF`` compares every score with every
candidate threshold (a thresholds x scores matrix: 479 GB on CN-Celeb's
3,484,292 trials) and ``EER`` loops over thresholds in Python. Here the
scores are sorted once and the error counts at every threshold come from
cumulative sums, which gives the same operating points without the matrix.

Conventions
-----------
A trial is accepted when ``score >= threshold``. The operating points are one
per distinct score value (threshold equal to that value) plus "reject all"
(a threshold just above the largest score), so tied scores always move
together. ``p_miss`` is the fraction of target trials rejected and ``p_fa``
the fraction of non-target trials accepted.

The EER is where the miss and false-alarm curves cross: between the last
operating point with ``p_miss < p_fa`` and the first with
``p_miss >= p_fa``, both rates are interpolated linearly and the EER is their
common value on that segment (the convex-hull-free variant of the NIST /
WeSpeaker definition). When an operating point has ``p_miss == p_fa`` the
EER is that value exactly.

minDCF is ``min over thresholds of c_miss * p_target * p_miss + c_fa *
(1 - p_target) * p_fa``, divided by ``min(c_miss * p_target, c_fa * (1 -
p_target))``, the cost of the best decision that ignores the scores, so
that 1.0 means "no better than always rejecting".

Example
-------
>>> eer, min_dcf, threshold = compute_eer_mindcf(
...     [0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]
... )
>>> eer, min_dcf, threshold
(0.0, 0.0, 0.8)
"""

import numpy as np

__all__ = ["compute_eer_mindcf", "det_curve"]


def _as_numpy(values):
    """Returns ``values`` (list, numpy array or torch tensor) as numpy."""
    # Duck-typed so that importing the metrics does not import torch.
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _check_scores_labels(
    scores, labels, what="EER and minDCF", allow_infinite=False
):
    """Validates and converts scores to float64 and labels to bool.

    Arguments
    ---------
    scores : array-like
        One score per trial.
    labels : array-like
        One label per trial, bool or 0/1 (1 = target).
    what : str
        What needs both classes, for the one-class error message.
    allow_infinite : bool
        Accept +-inf (a log-likelihood ratio may be certain); NaN is
        always an error.

    Returns
    -------
    scores : numpy.ndarray
        float64, shape [N].
    labels : numpy.ndarray
        bool, shape [N].
    """
    scores = _as_numpy(scores)
    labels = _as_numpy(labels)
    if scores.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            "scores and labels must be 1-D, got shapes "
            f"{scores.shape} and {labels.shape}"
        )
    if scores.size == 0:
        raise ValueError("scores is empty: there are no trials to evaluate")
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores has {scores.size} trials but labels has {labels.size}"
        )
    if not np.issubdtype(scores.dtype, np.number):
        raise ValueError(f"scores must be numeric, got dtype {scores.dtype}")
    scores = scores.astype(np.float64, copy=False)
    invalid = np.isnan(scores) if allow_infinite else ~np.isfinite(scores)
    if invalid.any():
        bad = int(np.flatnonzero(invalid)[0])
        raise ValueError(
            f"scores must be {'not NaN' if allow_infinite else 'finite'}; "
            f"trial {bad} has score {scores[bad]}"
        )
    if labels.dtype != np.bool_:
        is_binary = (labels == 0) | (labels == 1)
        if not is_binary.all():
            bad = int(np.flatnonzero(~is_binary)[0])
            raise ValueError(
                f"labels must be bool or 0/1; trial {bad} has label "
                f"{labels[bad].item()!r}"
            )
        labels = labels == 1
    n_target = int(np.count_nonzero(labels))
    if n_target == 0 or n_target == labels.size:
        kind = "non-target" if n_target == 0 else "target"
        raise ValueError(
            f"all {labels.size} trials are {kind}: {what} need(s) both "
            "target and non-target trials"
        )
    return scores, labels


def det_curve(scores, labels):
    """Computes miss and false-alarm rates at every distinct threshold.

    A trial is accepted when ``score >= threshold``. Thresholds are the
    distinct score values in increasing order, followed by one just above
    the largest score (reject everything), so the first point accepts all
    trials (``p_miss = 0``, ``p_fa = 1``) and the last rejects all
    (``p_miss = 1``, ``p_fa = 0``).

    Arguments
    ---------
    scores : array-like
        One score per trial (numpy array, list or torch tensor), finite.
    labels : array-like
        One label per trial: bool or 0/1, 1 meaning target.

    Returns
    -------
    p_miss : numpy.ndarray
        Fraction of target trials rejected at each threshold, increasing.
    p_fa : numpy.ndarray
        Fraction of non-target trials accepted at each threshold, decreasing.
    thresholds : numpy.ndarray
        The thresholds, increasing, float64.

    Example
    -------
    >>> p_miss, p_fa, thresholds = det_curve([0.2, 0.5, 0.5, 0.9], [0, 1, 0, 1])
    >>> p_miss.tolist(), p_fa.tolist()
    ([0.0, 0.0, 0.5, 1.0], [1.0, 0.5, 0.0, 0.0])
    >>> thresholds[:3].tolist()
    [0.2, 0.5, 0.9]
    """
    scores, labels = _check_scores_labels(scores, labels)
    n_miss, n_fa, thresholds = _error_counts(scores, labels)
    n_target = n_miss[-1]
    n_nontarget = n_fa[0]
    return n_miss / n_target, n_fa / n_nontarget, thresholds


def _error_counts(scores, labels):
    """Counts misses and false alarms at every distinct threshold.

    Arguments
    ---------
    scores : numpy.ndarray
        float64 scores, shape [N], finite.
    labels : numpy.ndarray
        bool labels, shape [N].

    Returns
    -------
    n_miss : numpy.ndarray
        int64 number of rejected targets per threshold.
    n_fa : numpy.ndarray
        int64 number of accepted non-targets per threshold.
    thresholds : numpy.ndarray
        Distinct scores, increasing, then one just above the largest.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    del order
    # Position in the sorted array where each distinct value starts; the
    # trials before that position are the ones rejected at that threshold.
    starts = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1])
    starts += 1
    thresholds = np.empty(starts.size + 2)
    thresholds[0] = sorted_scores[0]
    thresholds[1:-1] = sorted_scores[starts]
    thresholds[-1] = np.nextafter(sorted_scores[-1], np.inf)
    del sorted_scores

    targets_below = np.empty(scores.size + 1, dtype=np.int64)
    targets_below[0] = 0
    np.cumsum(sorted_labels, out=targets_below[1:])
    del sorted_labels
    n_rejected = np.concatenate(([0], starts, [scores.size]))
    del starts
    n_miss = targets_below[n_rejected]
    del targets_below
    n_nontarget = scores.size - n_miss[-1]
    n_fa = n_nontarget - (n_rejected - n_miss)
    return n_miss, n_fa, thresholds


def compute_eer_mindcf(scores, labels, p_target=0.01, c_miss=1, c_fa=1):
    """Computes the exact EER and normalised minDCF of a trial list.

    See the module docstring for the decision rule, the EER definition
    (linear interpolation where the miss and false-alarm curves cross) and
    the minDCF normalisation. Runs in O(N log N) time and O(N) memory: about
    a second for CN-Celeb's 3.48M trials.

    Arguments
    ---------
    scores : array-like
        One score per trial (numpy array, list or torch tensor), finite.
    labels : array-like
        One label per trial: bool or 0/1, 1 meaning target. Both classes
        must be present.
    p_target : float
        Prior probability of a target trial, in (0, 1).
    c_miss : float
        Cost of rejecting a target trial.
    c_fa : float
        Cost of accepting a non-target trial.

    Returns
    -------
    eer : float
        Equal error rate as a fraction in [0, 1].
    min_dcf : float
        Normalised minimum detection cost.
    threshold_at_eer : float
        Threshold of the operating point nearer the crossing (smaller
        ``|p_miss - p_fa|``, the lower threshold on ties); trials with
        ``score >= threshold_at_eer`` are accepted.

    Raises
    ------
    ValueError
        For empty or mismatched inputs, non-finite scores, labels other
        than 0/1, a single class, or an invalid cost or prior.

    Example
    -------
    >>> scores = [0.1, 0.4, 0.35, 0.8]
    >>> labels = [0, 0, 1, 1]
    >>> eer, min_dcf, threshold = compute_eer_mindcf(scores, labels)
    >>> round(eer, 6), round(min_dcf, 6), threshold
    (0.5, 0.5, 0.4)

    At threshold 0.4 one target (0.35) is missed and one non-target (0.4)
    accepted, so both rates are 0.5; the cheapest point, threshold 0.8,
    misses half the targets without false alarms: 0.01 * 0.5 / 0.01.
    """
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(
            f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}"
        )
    scores, labels = _check_scores_labels(scores, labels)
    n_miss, n_fa, thresholds = _error_counts(scores, labels)
    p_miss = n_miss / n_miss[-1]
    p_fa = n_fa / n_fa[0]
    del n_miss, n_fa

    cost = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa
    min_dcf = cost.min() / min(c_miss * p_target, c_fa * (1 - p_target))
    del cost

    eer, threshold = _eer_from_curve(p_miss, p_fa, thresholds)
    return eer, float(min_dcf), threshold


def _eer_from_curve(p_miss, p_fa, thresholds):
    """Finds where the miss and false-alarm curves cross.

    Arguments
    ---------
    p_miss : numpy.ndarray
        Miss rates, non-decreasing, starting at 0 and ending at 1.
    p_fa : numpy.ndarray
        False-alarm rates, non-increasing, starting at 1 and ending at 0.
    thresholds : numpy.ndarray
        The threshold of each operating point.

    Returns
    -------
    eer : float
        Interpolated crossing value.
    threshold : float
        Threshold of the operating point nearer the crossing.
    """
    gap = p_miss - p_fa
    # gap is non-decreasing, -1 at the first point and +1 at the last.
    upper = int(np.searchsorted(gap, 0.0, side="left"))
    lower = upper - 1
    if gap[upper] == 0.0:
        return float(p_miss[upper]), float(thresholds[upper])
    fraction = -gap[lower] / (gap[upper] - gap[lower])
    eer = p_miss[lower] + fraction * (p_miss[upper] - p_miss[lower])
    nearer = lower if -gap[lower] <= gap[upper] else upper
    return float(eer), float(thresholds[nearer])
