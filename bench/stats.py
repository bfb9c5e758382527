"""Summary statistics for benchmark tables: spread over seeds, timings.

Results over a handful of seeds are reported as mean, sample standard
deviation and range, since three seeds are too few for anything else;
timings as median and interquartile range, which ignore the occasional
step slowed down by another process on a shared machine.

Two systems scored on the same trials are compared with a paired bootstrap
over speakers (:func:`paired_speaker_bootstrap`): trials that share a
speaker are correlated, so resampling trials would make the interval too
narrow, while resampling speakers keeps each speaker's trials together.
"""

import math

import numpy as np

__all__ = [
    "format_spread",
    "format_verdict",
    "paired_speaker_bootstrap",
    "paired_tests",
    "seed_summary",
    "timing_summary",
    "weighted_eer",
]


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


def _as_labels(labels):
    """Validates 0/1 or bool trial labels and returns them as bool.

    Arguments
    ---------
    labels : array-like
        One label per trial, 1 meaning target.

    Returns
    -------
    numpy.ndarray
        bool, shape [n_trials], with both classes present.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(
            f"labels must be a non-empty 1-D array, got shape {labels.shape}"
        )
    if labels.dtype != np.bool_:
        is_binary = (labels == 0) | (labels == 1)
        if not np.all(is_binary):
            bad = int(np.flatnonzero(~is_binary)[0])
            raise ValueError(
                f"labels must be bool or 0/1; trial {bad} has {labels[bad]!r}"
            )
        labels = labels == 1
    n_target = int(np.count_nonzero(labels))
    if n_target in (0, labels.size):
        raise ValueError(
            "labels need both target and non-target trials, got "
            f"{n_target} targets out of {labels.size}"
        )
    return labels


def _as_scores(scores, name, n_trials):
    """Validates a score array of shape [n_trials] or [n_seeds, n_trials].

    Arguments
    ---------
    scores : array-like
        Scores of one system; a 1-D array is one seed.
    name : str
        Argument name used in error messages.
    n_trials : int
        Expected number of trials.

    Returns
    -------
    numpy.ndarray
        float64, shape [n_seeds, n_trials], finite.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[np.newaxis]
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape [n_trials] or [n_seeds, n_trials], got "
            f"{scores.shape}"
        )
    if scores.shape[1] != n_trials:
        raise ValueError(
            f"{name} has {scores.shape[1]} trials per seed but labels has "
            f"{n_trials}; both systems must be scored on the same trials"
        )
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} has non-finite scores")
    return scores


def _sorted_trials(scores, labels):
    """Sorts one system's trials by score, once for every resample.

    Arguments
    ---------
    scores : numpy.ndarray
        float64 scores, shape [n_trials].
    labels : numpy.ndarray
        bool labels, shape [n_trials].

    Returns
    -------
    order : numpy.ndarray
        Indices that sort ``scores`` in increasing order.
    sorted_labels : numpy.ndarray
        ``labels[order]``.
    cuts : numpy.ndarray
        Number of trials rejected at each operating point: 0 (accept all),
        the start of each later run of tied scores, then ``n_trials``.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # Tied scores share a threshold, so they are accepted or rejected
    # together and only the start of each run is an operating point.
    starts = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]) + 1
    cuts = np.concatenate(([0], starts, [scores.size]))
    return order, labels[order], cuts


def _eer_from_sorted(sorted_labels, sorted_weights, cuts):
    """Weighted EER (%) of trials already sorted by score.

    Arguments
    ---------
    sorted_labels : numpy.ndarray
        bool labels in score order.
    sorted_weights : numpy.ndarray
        Non-negative weights in score order.
    cuts : numpy.ndarray
        Operating points, as returned by :func:`_sorted_trials`.

    Returns
    -------
    float
        EER in percent, NaN if either class has zero total weight.
    """
    target = np.where(sorted_labels, sorted_weights, 0.0)
    nontarget = np.where(sorted_labels, 0.0, sorted_weights)
    missed = np.concatenate(([0.0], np.cumsum(target)))[cuts]
    rejected = np.concatenate(([0.0], np.cumsum(nontarget)))[cuts]
    total_target, total_nontarget = missed[-1], rejected[-1]
    if total_target <= 0 or total_nontarget <= 0:
        return float("nan")
    p_miss = missed / total_target
    p_fa = (total_nontarget - rejected) / total_nontarget
    # gap rises from -1 (accept all) to +1 (reject all); the EER lies on
    # the segment where it changes sign.
    gap = p_miss - p_fa
    upper = int(np.searchsorted(gap, 0.0, side="left"))
    if gap[upper] == 0.0:
        return 100.0 * float(p_miss[upper])
    lower = upper - 1
    fraction = -gap[lower] / (gap[upper] - gap[lower])
    eer = p_miss[lower] + fraction * (p_miss[upper] - p_miss[lower])
    return 100.0 * float(eer)


def weighted_eer(scores, labels, weights):
    """Equal error rate (%) with a non-negative weight per trial.

    Uses the conventions of ``speechbrain_ext.scoring.metrics``: a trial is
    accepted when ``score >= threshold``, there is one operating point per
    distinct score plus "reject all", and the EER is interpolated linearly
    where the miss and false-alarm curves cross. A trial of weight ``w``
    counts as ``w`` copies of itself, so unit weights give the ordinary EER.

    Arguments
    ---------
    scores : array-like
        One finite score per trial, shape [n_trials].
    labels : array-like
        One label per trial, bool or 0/1 (1 = target).
    weights : array-like
        One finite, non-negative weight per trial.

    Returns
    -------
    float
        EER in percent.

    Raises
    ------
    ValueError
        For mismatched shapes, non-finite scores, negative or non-finite
        weights, or zero total weight on targets or non-targets.

    Example
    -------
    >>> scores = [0.1, 0.4, 0.35, 0.8]
    >>> labels = [0, 0, 1, 1]
    >>> weighted_eer(scores, labels, [1, 1, 1, 1])
    50.0
    >>> weighted_eer(scores, labels, [1, 0, 1, 1])  # drop the 0.4 impostor
    0.0
    """
    labels = _as_labels(labels)
    scores = _as_scores(scores, "scores", labels.size)
    if scores.shape[0] != 1:
        raise ValueError(f"scores must be 1-D, got shape {scores.shape}")
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != labels.shape:
        raise ValueError(
            f"weights has shape {weights.shape} but labels has {labels.shape}"
        )
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("weights must be finite and non-negative")
    order, sorted_labels, cuts = _sorted_trials(scores[0], labels)
    eer = _eer_from_sorted(sorted_labels, weights[order], cuts)
    if math.isnan(eer):
        raise ValueError(
            "weights give zero total weight to the target or the "
            "non-target trials"
        )
    return eer


def _speaker_indices(enrol_speakers, test_speakers, n_trials):
    """Maps each trial's two speaker ids to indices of the distinct ids.

    Arguments
    ---------
    enrol_speakers : array-like
        Speaker id of each trial's enrolment side, shape [n_trials].
    test_speakers : array-like
        Speaker id of each trial's test side, shape [n_trials].
    n_trials : int
        Expected number of trials.

    Returns
    -------
    enrol_index : numpy.ndarray
        Index of each enrolment speaker, shape [n_trials].
    test_index : numpy.ndarray
        Index of each test speaker, shape [n_trials].
    n_speakers : int
        Number of distinct speakers on either side.
    """
    # Compared as strings so that int and str ids of one speaker agree.
    enrol = np.asarray(enrol_speakers).astype(str)
    test = np.asarray(test_speakers).astype(str)
    for name, ids in (("enrol_speakers", enrol), ("test_speakers", test)):
        if ids.shape != (n_trials,):
            raise ValueError(
                f"{name} must have shape ({n_trials},) like labels, got "
                f"{ids.shape}"
            )
    speakers, index = np.unique(
        np.concatenate([enrol, test]), return_inverse=True
    )
    index = index.reshape(-1)
    return index[:n_trials], index[n_trials:], int(speakers.size)


def _mean_eer(sorted_seeds, weights):
    """Mean over seeds of one system's weighted EER (%).

    Arguments
    ---------
    sorted_seeds : list of tuple
        :func:`_sorted_trials` output of each seed.
    weights : numpy.ndarray
        Weight of each trial, in the original trial order.

    Returns
    -------
    float
        Mean EER in percent.
    """
    eers = [
        _eer_from_sorted(sorted_labels, weights[order], cuts)
        for order, sorted_labels, cuts in sorted_seeds
    ]
    return float(np.mean(eers))


def _resample_weights(rng, enrol_index, test_index, n_speakers):
    """Trial weights for one bootstrap draw of speakers with replacement.

    One draw is a multiset of speakers: speaker ``s`` appears ``c_s`` times
    (possibly 0), and each copy stands for a new speaker who happens to
    behave exactly like ``s``. The trials of that resampled population are

    * for each copy of ``s``, the within-speaker trials of ``s`` (enrolment
      and test speaker both ``s``), once: a copy has one set of recordings,
      so its own trials are not repeated. Weight ``c_s``.
    * for each pairing of a copy of ``i`` on the enrolment side with a copy
      of ``j`` on the test side, ``i != j``, the cross trials of ``i``
      against ``j``. Weight ``c_i * c_j``.

    Two copies of the same speaker are different speakers of the
    resampled population, but there are no recordings of trials between
    them: pairing them would reuse ``s``'s own (target) trials as if they
    were trials between two people, and weighting those by ``c_s ** 2``
    makes the targets of a drawn speaker count quadratically in its draw
    count, which inflates the spread of the resampled EERs (intervals
    1.5-2x too wide, false-alarm rate near 0 instead of 5% in simulation,
    see ``tests/test_bench_stats_coverage.py``).

    Within-speaker trials are found by comparing speaker ids, not labels:
    a non-target trial with the same id on both sides cannot occur (one
    speaker against itself is a target), and the ids, not the label,
    decide which copies of speakers a trial belongs to.

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of the draw.
    enrol_index : numpy.ndarray
        Speaker index of each trial's enrolment side.
    test_index : numpy.ndarray
        Speaker index of each trial's test side.
    n_speakers : int
        Number of distinct speakers, also the number drawn.

    Returns
    -------
    numpy.ndarray
        float64 weight of each trial: ``c_s`` for a trial of speaker ``s``
        against itself, ``c_i * c_j`` for one of ``i`` against ``j != i``
        (0 when a speaker was not drawn).

    Example
    -------
    >>> drawn = np.random.default_rng(2).integers(3, size=3)
    >>> np.bincount(drawn, minlength=3).tolist()  # counts of speakers 0-2
    [2, 0, 1]
    >>> enrol = np.array([0, 0, 0, 2, 2])
    >>> test = np.array([0, 2, 1, 2, 0])
    >>> rng = np.random.default_rng(2)  # the same draw
    >>> _resample_weights(rng, enrol, test, 3).tolist()
    [2.0, 2.0, 0.0, 1.0, 2.0]
    """
    drawn = rng.integers(n_speakers, size=n_speakers)
    counts = np.bincount(drawn, minlength=n_speakers).astype(np.float64)
    enrol_counts, test_counts = counts[enrol_index], counts[test_index]
    return np.where(
        enrol_index == test_index, enrol_counts, enrol_counts * test_counts
    )


def _verdict(ci_low, ci_high):
    """Names the outcome of a confidence interval of EER(a) - EER(b).

    Arguments
    ---------
    ci_low : float
        Lower bound of the interval.
    ci_high : float
        Upper bound of the interval.

    Returns
    -------
    str
        ``"better"``, ``"worse"`` or ``"no significant difference"``.
    """
    if ci_high < 0:
        return "better"
    if ci_low > 0:
        return "worse"
    return "no significant difference"


def paired_speaker_bootstrap(
    scores_a,
    scores_b,
    labels,
    enrol_speakers,
    test_speakers,
    n_resamples=1000,
    seed=0,
    confidence=0.95,
):
    """Paired bootstrap over speakers of the EER difference of two systems.

    Speakers (the distinct ids on either side of the trials) are drawn with
    replacement; a trial between two speakers weighs the product of their
    draw counts and a trial of a speaker against itself weighs its draw
    count (see :func:`_resample_weights`), so a trial drops out when one
    of its speakers was not drawn. For every resample
    the weighted EER of each seed is averaged per system, and the delta
    ``mean EER(a) - mean EER(b)`` is recorded. Both systems see the same
    resampled speakers, which removes the speaker variance they share.

    Arguments
    ---------
    scores_a : array-like
        Scores of system a, shape [n_seeds, n_trials] or [n_trials].
    scores_b : array-like
        Scores of system b on the same trials in the same order; the
        number of seeds may differ from a's.
    labels : array-like
        One label per trial, bool or 0/1 (1 = target).
    enrol_speakers : array-like
        Speaker id of each trial's enrolment side.
    test_speakers : array-like
        Speaker id of each trial's test side.
    n_resamples : int
        Number of bootstrap resamples.
    seed : int
        Seed of the numpy Generator drawing the speakers.
    confidence : float
        Coverage of the percentile interval, in (0, 1).

    Returns
    -------
    dict
        ``eer_a``, ``eer_b`` (mean over seeds on all trials, %), ``delta``
        (``eer_a - eer_b``), ``ci_low``, ``ci_high`` (percentile interval
        of the resampled deltas), ``p_value`` (two-sided:
        ``2 * min(P(delta <= 0), P(delta >= 0))``, at most 1),
        ``n_speakers``, ``n_resamples`` (requested), ``n_skipped``
        (resamples without target or non-target weight, left out),
        ``confidence`` and ``verdict``: ``"better"`` if the interval lies
        below 0 (a has the lower EER), ``"worse"`` if above, else
        ``"no significant difference"``.

    Raises
    ------
    ValueError
        For mismatched shapes, invalid labels, scores or settings, or when
        every resample had to be skipped.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> speakers = np.repeat([f"spk{i}" for i in range(20)], 10)
    >>> test = np.roll(speakers, 5)  # half of each speaker's trials target
    >>> labels = speakers == test
    >>> scores_b = rng.normal(size=(3, 200)) + 1.5 * labels
    >>> scores_a = scores_b + 2.0 * labels  # a separates every speaker more
    >>> result = paired_speaker_bootstrap(
    ...     scores_a, scores_b, labels, speakers, test, n_resamples=200
    ... )
    >>> result["verdict"], result["n_speakers"], result["delta"] < 0
    ('better', 20, True)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(
            f"n_resamples must be a positive integer, got {n_resamples}"
        )
    labels = _as_labels(labels)
    scores_a = _as_scores(scores_a, "scores_a", labels.size)
    scores_b = _as_scores(scores_b, "scores_b", labels.size)
    enrol_index, test_index, n_speakers = _speaker_indices(
        enrol_speakers, test_speakers, labels.size
    )
    # Sorting once per seed leaves only cumulative sums per resample.
    sorted_a = [_sorted_trials(row, labels) for row in scores_a]
    sorted_b = [_sorted_trials(row, labels) for row in scores_b]
    unit = np.ones(labels.size)
    eer_a, eer_b = _mean_eer(sorted_a, unit), _mean_eer(sorted_b, unit)

    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(int(n_resamples)):
        weights = _resample_weights(rng, enrol_index, test_index, n_speakers)
        delta = _mean_eer(sorted_a, weights) - _mean_eer(sorted_b, weights)
        # NaN means a class lost all its weight: both systems share the
        # trials, so the resample is unusable for either.
        if not math.isnan(delta):
            deltas.append(delta)
    if not deltas:
        raise ValueError(
            f"all {n_resamples} resamples of {n_speakers} speakers lacked "
            "target or non-target trials; too few speakers to bootstrap"
        )

    deltas = np.asarray(deltas)
    tail = 100 * (1 - confidence) / 2
    ci_low, ci_high = np.percentile(deltas, [tail, 100 - tail])
    share = min(np.mean(deltas <= 0), np.mean(deltas >= 0))
    return {
        "eer_a": eer_a,
        "eer_b": eer_b,
        "delta": eer_a - eer_b,
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "p_value": float(min(1.0, 2 * share)),
        "n_speakers": n_speakers,
        "n_resamples": int(n_resamples),
        "n_skipped": int(n_resamples) - int(deltas.size),
        "confidence": confidence,
        "verdict": _verdict(ci_low, ci_high),
    }


def format_verdict(result, name_a, name_b):
    """One line summarising a :func:`paired_speaker_bootstrap` result.

    Arguments
    ---------
    result : dict
        Output of :func:`paired_speaker_bootstrap`.
    name_a : str
        Label of system a.
    name_b : str
        Label of system b.

    Returns
    -------
    str
        EERs, delta, interval and verdict of a against b.

    Example
    -------
    >>> result = {
    ...     "eer_a": 12.1,
    ...     "eer_b": 13.4,
    ...     "delta": -1.3,
    ...     "ci_low": -2.1,
    ...     "ci_high": -0.4,
    ...     "confidence": 0.95,
    ...     "verdict": "better",
    ... }
    >>> line = format_verdict(result, "hybrid", "aam_softmax")
    >>> print(line)  # doctest: +NORMALIZE_WHITESPACE
    hybrid vs aam_softmax: 12.10% vs 13.40%
    (delta -1.30, 95% CI [-2.10, -0.40]): better at 95%
    """
    level = f"{100 * result['confidence']:g}%"
    return (
        f"{name_a} vs {name_b}: {result['eer_a']:.2f}% vs "
        f"{result['eer_b']:.2f}% (delta {result['delta']:.2f}, {level} CI "
        f"[{result['ci_low']:.2f}, {result['ci_high']:.2f}]): "
        f"{result['verdict']} at {level}"
    )


def paired_tests(
    runs, pairs, labels, enrol_speakers, test_speakers, n_resamples=1000
):
    """:func:`paired_speaker_bootstrap` of system pairs, per condition.

    Arguments
    ---------
    runs : dict
        system -> condition -> seed -> per-trial scores, all on the same
        trials.
    pairs : list of tuple
        ``(system, baseline)``: each is tested in every condition both
        have, on the seeds both have (a pair with a system missing is
        left out).
    labels, enrol_speakers, test_speakers : numpy.ndarray
        Target flag and speakers of each trial.
    n_resamples : int
        Bootstrap resamples (seed 0).

    Returns
    -------
    dict
        ``(system, baseline, condition)`` -> the bootstrap result (JSON
        values) with ``seeds`` and ``text`` (:func:`format_verdict`).

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> enrol = np.repeat([f"s{i}" for i in range(12)], 8)
    >>> test = np.roll(enrol, 4)
    >>> labels = enrol == test
    >>> noise = {seed: rng.normal(size=96) for seed in (1, 2)}
    >>> runs = {
    ...     "a": {"clean": {s: n + 1.0 * labels for s, n in noise.items()}},
    ...     "b": {"clean": {s: n + 3.0 * labels for s, n in noise.items()}},
    ... }
    >>> tests = paired_tests(runs, [("b", "a")], labels, enrol, test, 200)
    >>> result = tests["b", "a", "clean"]
    >>> result["verdict"], result["seeds"]
    ('better', [1, 2])
    """
    results = {}
    for system, baseline in pairs:
        if system not in runs or baseline not in runs:
            continue
        for condition, by_seed in runs[system].items():
            base = runs[baseline].get(condition, {})
            seeds = sorted(set(by_seed) & set(base))
            if not seeds:
                continue
            result = paired_speaker_bootstrap(
                np.stack([by_seed[s] for s in seeds]),
                np.stack([base[s] for s in seeds]),
                labels,
                enrol_speakers,
                test_speakers,
                n_resamples=n_resamples,
                seed=0,
            )
            result = {
                key: value.item() if isinstance(value, np.generic) else value
                for key, value in result.items()
            }
            result["seeds"] = seeds
            result["text"] = format_verdict(result, system, baseline)
            results[system, baseline, condition] = result
    return results
