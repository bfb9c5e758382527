"""Per-trial scores of benchmark runs, committed as one compressed file.

Tables of EERs cannot be re-analysed (another test, another operating
point, a bootstrap with other settings); the scores behind them can. One
``.npz`` file holds the trial list once and the scores of every
(system, seed, condition) on it:

* ``trials/enrol``, ``trials/test``: utterance ids (str);
* ``trials/label``: bool, True for a target trial;
* ``trials/enrol_speaker``, ``trials/test_speaker``: speaker ids (str),
  which the speaker bootstrap (``bench.stats``) needs;
* ``scores/<system>/<seed>/<condition>``: float16 scores, one per trial.

Scores are stored as float16 (about 3 significant digits) to keep the
committed file small; that is finer than any difference an EER on a few
thousand trials can show, though it can tie nearly equal scores.

:func:`recompute` turns such a file (or the pooled files of a
cross-validation) back into what the READMEs quote, with no model, corpus
or run folder: the EER and minDCF of every run, their mean ± std over
seeds, and the paired speaker bootstrap of chosen (system, baseline) pairs
per condition (``python -m bench.verdicts`` on the command line).
"""

import os

import numpy as np

from bench.stats import format_spread, paired_tests, seed_summary
from speechbrain_ext.scoring import compute_eer_mindcf

__all__ = [
    "TRIAL_FIELDS",
    "load_trial_scores",
    "pool_trial_scores",
    "recompute",
    "run_metrics",
    "runs_of",
    "save_trial_scores",
    "score_key",
    "summary_table",
]

TRIAL_FIELDS = ("enrol", "test", "label", "enrol_speaker", "test_speaker")
_FORMAT_VERSION = 1


def score_key(system, seed, condition):
    """The name of one run's scores: ``f"{system}/{seed}/{condition}"``.

    Arguments
    ---------
    system : str
        System name, e.g. ``"aam_softmax"``.
    seed : int or str
        Training seed.
    condition : str
        Test condition, e.g. ``"clean"`` or ``"snr5"``.

    Returns
    -------
    str
        The key.

    Raises
    ------
    ValueError
        If a part is empty or contains ``/``, which would make the key
        ambiguous.

    Example
    -------
    >>> score_key("hybrid", 3, "clean")
    'hybrid/3/clean'
    """
    parts = [str(part) for part in (system, seed, condition)]
    for name, part in zip(("system", "seed", "condition"), parts):
        if not part or "/" in part:
            raise ValueError(
                f"{name} must be non-empty and without '/', got {part!r}"
            )
    return "/".join(parts)


def _as_key(key):
    """Validates a score key given as a string or a 3-tuple.

    Arguments
    ---------
    key : str or tuple
        ``"system/seed/condition"`` or ``(system, seed, condition)``.

    Returns
    -------
    str
        The key as :func:`score_key` writes it.
    """
    if isinstance(key, str):
        parts = key.split("/")
        if len(parts) != 3:
            raise ValueError(
                f"score key {key!r} is not 'system/seed/condition'"
            )
        return score_key(*parts)
    if len(key) != 3:
        raise ValueError(
            f"score key {key!r} is not a (system, seed, condition) tuple"
        )
    return score_key(*key)


def _trial_arrays(trials):
    """The five trial fields as arrays of one length.

    Arguments
    ---------
    trials : dict or sequence
        A mapping of :data:`TRIAL_FIELDS` to sequences, or a sequence of
        ``(enrol, test, label, enrol_speaker, test_speaker)`` tuples.

    Returns
    -------
    dict
        str arrays, except ``label``: bool.
    """
    if not hasattr(trials, "keys"):
        rows = list(trials)
        if any(len(row) != len(TRIAL_FIELDS) for row in rows):
            raise ValueError(
                "trials given as rows need 5 fields each: "
                + ", ".join(TRIAL_FIELDS)
            )
        trials = dict(zip(TRIAL_FIELDS, zip(*rows))) if rows else {}
    missing = [field for field in TRIAL_FIELDS if field not in trials]
    if missing:
        raise ValueError(f"trials lack {', '.join(missing)}")
    arrays = {
        field: np.asarray(trials[field]).astype(str)
        for field in TRIAL_FIELDS
        if field != "label"
    }
    labels = np.asarray(trials["label"])
    if labels.dtype != np.bool_:
        if not np.all((labels == 0) | (labels == 1)):
            raise ValueError("trial labels must be bool or 0/1")
        labels = labels == 1
    arrays["label"] = labels
    lengths = {field: array.shape for field, array in arrays.items()}
    n_trials = len(arrays["enrol"])
    if n_trials == 0 or any(s != (n_trials,) for s in lengths.values()):
        raise ValueError(
            f"trial fields must be non-empty 1-D arrays of one length, got "
            f"shapes {lengths}"
        )
    return arrays


def save_trial_scores(path, trials, scores):
    """Writes a trial list and the scores of several runs on it.

    Arguments
    ---------
    path : str
        Output file; ``.npz`` is appended by numpy if missing, so pass a
        name ending in ``.npz``.
    trials : dict or sequence
        A mapping of ``enrol``, ``test``, ``label``, ``enrol_speaker`` and
        ``test_speaker`` to one value per trial, or a sequence of
        ``(enrol, test, label, enrol_speaker, test_speaker)`` tuples.
    scores : dict
        ``(system, seed, condition)`` tuple or ``"system/seed/condition"``
        string -> one score per trial, in the order of ``trials``.

    Raises
    ------
    ValueError
        For missing or mismatched trial fields, malformed keys, two keys
        naming the same run, or scores of the wrong length, non-finite or
        beyond float16's range (about 65504).

    Example
    -------
    >>> path = str(getfixture("tmpdir") / "scores.npz")
    >>> trials = [
    ...     ("a/1", "a/2", 1, "a", "a"),
    ...     ("a/1", "b/1", 0, "a", "b"),
    ... ]
    >>> scores = {("hybrid", 0, "clean"): [0.8125, -0.1]}
    >>> save_trial_scores(path, trials, scores)
    >>> loaded_trials, loaded_scores = load_trial_scores(path)
    >>> loaded_trials["label"].tolist(), loaded_trials["test_speaker"].tolist()
    ([True, False], ['a', 'b'])
    >>> loaded_scores["hybrid/0/clean"].tolist()  # float16: ~3 digits
    [0.8125, -0.0999755859375]
    """
    arrays = _trial_arrays(trials)
    n_trials = arrays["label"].size
    members = {f"trials/{field}": arrays[field] for field in TRIAL_FIELDS}
    members["format_version"] = np.array(_FORMAT_VERSION)
    if not scores:
        raise ValueError("scores is empty; nothing to save")
    for key, values in scores.items():
        name = _as_key(key)
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (n_trials,):
            raise ValueError(
                f"scores of {name} have shape {values.shape}, the trials "
                f"({n_trials},)"
            )
        if not np.isfinite(values).all():
            raise ValueError(f"scores of {name} are not all finite")
        with np.errstate(over="ignore"):
            stored = values.astype(np.float16)
        if not np.isfinite(stored).all():
            raise ValueError(
                f"scores of {name} exceed float16's range (max "
                f"{float(np.abs(values).max()):g}); rescale them"
            )
        if f"scores/{name}" in members:
            raise ValueError(f"two score keys name the run {name}")
        members[f"scores/{name}"] = stored
    np.savez_compressed(path, **members)


def load_trial_scores(path):
    """Reads a file written by :func:`save_trial_scores`.

    Arguments
    ---------
    path : str
        The ``.npz`` file.

    Returns
    -------
    trials : dict
        ``enrol``, ``test``, ``enrol_speaker``, ``test_speaker`` (str
        arrays) and ``label`` (bool array), one entry per trial.
    scores : dict
        ``"system/seed/condition"`` -> float32 scores (the stored float16
        values exactly), in key order of the file.

    Raises
    ------
    ValueError
        If the file lacks trial fields or has an unknown format version.
    """
    with np.load(os.fspath(path), allow_pickle=False) as archive:
        names = list(archive.keys())
        version = (
            int(archive["format_version"])
            if "format_version" in names
            else None
        )
        if version != _FORMAT_VERSION:
            raise ValueError(
                f"{path}: format version {version}, expected "
                f"{_FORMAT_VERSION}; not a file of save_trial_scores?"
            )
        missing = [f for f in TRIAL_FIELDS if f"trials/{f}" not in names]
        if missing:
            raise ValueError(f"{path}: lacks trial fields {missing}")
        trials = {field: archive[f"trials/{field}"] for field in TRIAL_FIELDS}
        scores = {
            name[len("scores/") :]: archive[name].astype(np.float32)
            for name in names
            if name.startswith("scores/")
        }
    return trials, scores


def pool_trial_scores(paths):
    """Trials and scores of several files, concatenated (e.g. CV folds).

    Each file holds the trials of one test split (a cross-validation fold
    with its own models); pooled, the trials of every fold form one list
    and ``system/seed/condition`` names the fold's model of that system
    and seed in each part. Only runs that every file has are kept, so a
    fold still training leaves its runs out rather than misaligning them.

    Arguments
    ---------
    paths : list of str
        Files of :func:`save_trial_scores`.

    Returns
    -------
    trials : dict
        As :func:`load_trial_scores`, the files' trials one after another.
    scores : dict
        ``"system/seed/condition"`` -> scores over the pooled trials.

    Raises
    ------
    ValueError
        If no run is in every file, or two files share a test speaker (the
        folds would not be disjoint).

    Example
    -------
    >>> tmpdir = getfixture("tmpdir")
    >>> for fold, spk in enumerate(("a", "b")):
    ...     save_trial_scores(
    ...         str(tmpdir / f"fold{fold}.npz"),
    ...         [(f"{spk}/1", f"{spk}/2", 1, spk, spk)],
    ...         {("hybrid", 1, "clean"): [0.5 + fold]},
    ...     )
    >>> trials, scores = pool_trial_scores(
    ...     [str(tmpdir / "fold0.npz"), str(tmpdir / "fold1.npz")]
    ... )
    >>> trials["test_speaker"].tolist(), scores["hybrid/1/clean"].tolist()
    (['a', 'b'], [0.5, 1.5])
    """
    loaded = [load_trial_scores(path) for path in paths]
    seen = {}
    for path, (trials, _) in zip(paths, loaded):
        speakers = set(trials["enrol_speaker"]) | set(trials["test_speaker"])
        for speaker in speakers:
            if speaker in seen:
                raise ValueError(
                    f"speaker {speaker} is tested in {seen[speaker]} and "
                    f"{path}: pooled files must hold disjoint test speakers"
                )
            seen[speaker] = path
    keys = [
        key
        for key in loaded[0][1]
        if all(key in scores for _, scores in loaded[1:])
    ]
    if not keys:
        raise ValueError(f"no run is in every file of {list(paths)}")
    trials = {
        field: np.concatenate([t[field] for t, _ in loaded])
        for field in TRIAL_FIELDS
    }
    scores = {
        key: np.concatenate([scores[key] for _, scores in loaded])
        for key in keys
    }
    return trials, scores


def runs_of(scores):
    """system -> condition -> {seed: scores}, in the file's order.

    Example
    -------
    >>> runs_of({"a/1/clean": [0.5], "a/2/clean": [0.25]})
    {'a': {'clean': {'1': [0.5], '2': [0.25]}}}
    """
    runs = {}
    for key, values in scores.items():
        system, seed, condition = key.split("/")
        runs.setdefault(system, {}).setdefault(condition, {})[seed] = values
    return runs


def run_metrics(scores, labels):
    """EER (%) and minDCF of every run.

    Arguments
    ---------
    scores : dict
        ``"system/seed/condition"`` -> per-trial scores.
    labels : numpy.ndarray
        bool per trial.

    Returns
    -------
    dict
        system -> condition -> seed -> ``{"EER", "minDCF"}``.

    Example
    -------
    >>> labels = np.array([True, True, False, False])
    >>> scores = {"a/1/clean": np.array([0.9, 0.2, 0.5, 0.1])}
    >>> run_metrics(scores, labels)["a"]["clean"]["1"]["EER"]
    50.0
    """
    metrics = {}
    for system, by_condition in runs_of(scores).items():
        for condition, by_seed in by_condition.items():
            for seed, values in by_seed.items():
                eer, min_dcf, _ = compute_eer_mindcf(values, labels)
                metrics.setdefault(system, {}).setdefault(condition, {})[
                    seed
                ] = {"EER": 100 * float(eer), "minDCF": float(min_dcf)}
    return metrics


def summary_table(summary, conditions, labels=None):
    """Markdown: one row per system, EER % mean ± std [min-max] per
    condition.

    Example
    -------
    >>> stats = {"EER": seed_summary([9.0, 9.5, 10.0])}
    >>> print(summary_table({"a": {"clean": stats}}, ["clean", "sir0"]))
    | system | EER % clean | EER % sir0 |
    |---|---|---|
    | a | 9.50 ± 0.50 [9.00-10.00] | – |
    """
    labels = labels or {}
    header = "| system | " + " | ".join(f"EER % {c}" for c in conditions)
    lines = [header + " |", "|---" * (len(conditions) + 1) + "|"]
    for system, by_condition in summary.items():
        cells = [
            format_spread(by_condition[c]["EER"]) if c in by_condition else "–"
            for c in conditions
        ]
        name = labels.get(system, system)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recompute(path, pairs=None, n_resamples=1000, baseline="aam_softmax"):
    """Summary and paired verdicts of a scores file (or pooled files).

    Arguments
    ---------
    path : str or list of str
        A file of :func:`save_trial_scores`, or several, pooled by
        :func:`pool_trial_scores`.
    pairs : list of tuple, optional
        ``(system, baseline)`` pairs to test in every condition both have,
        on the seeds both have; by default every system against
        ``baseline``.
    n_resamples : int
        Bootstrap resamples.
    baseline : str
        The baseline of the default pairs.

    Returns
    -------
    dict
        ``metrics`` (see :func:`run_metrics`), ``summary`` (system ->
        condition -> ``{"EER", "minDCF"}`` seed summaries, with ``"n"``
        seeds), ``paired`` (``"<system>_vs_<baseline>@<condition>"`` ->
        bootstrap result with its ``text``), ``conditions``, ``n_trials``
        and ``n_speakers``.
    """
    if isinstance(path, (list, tuple)):
        trials, scores = pool_trial_scores(path)
    else:
        trials, scores = load_trial_scores(path)
    labels = trials["label"]
    metrics = run_metrics(scores, labels)
    summary = {
        system: {
            condition: {
                key: seed_summary([run[key] for run in by_seed.values()])
                for key in ("EER", "minDCF")
            }
            for condition, by_seed in by_condition.items()
        }
        for system, by_condition in metrics.items()
    }
    runs = runs_of(scores)
    if pairs is None:
        pairs = [(system, baseline) for system in runs if system != baseline]
    tests = paired_tests(
        runs,
        pairs,
        labels,
        trials["enrol_speaker"],
        trials["test_speaker"],
        n_resamples,
    )
    return {
        "metrics": metrics,
        "summary": summary,
        "paired": {
            f"{system}_vs_{baseline}@{condition}": result
            for (system, baseline, condition), result in tests.items()
        },
        "conditions": list(
            dict.fromkeys(c for by_c in runs.values() for c in by_c)
        ),
        "n_trials": int(labels.size),
        "n_speakers": len(
            set(trials["enrol_speaker"]) | set(trials["test_speaker"])
        ),
    }
