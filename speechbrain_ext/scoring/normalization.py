"""Cosine scoring and z/t/s/AS-norm with batched matrix products.

SpeechBrain's ``speaker_verification_cosine.py`` recomputes the cohort scores
of the enrolment and test utterances inside a Python loop over trials. The
statistics only depend on the utterance, not on the trial, so here they are
computed once per enrolment item and once per test item (an E x C and a
T x C matrix product, in row chunks so that memory stays bounded) and then
gathered per trial.

All embeddings are scored in the same space: the optional ``mean`` (the
training-set mean embedding) is subtracted and each row is L2-normalised, so
a score is a cosine similarity. Computation is in float64.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> enrol, test = rng.normal(size=(2, 8)), rng.normal(size=(3, 8))
>>> cohort = speaker_cohort(rng.normal(size=(40, 8)), list(range(20)) * 2)
>>> enrol_idx, test_idx = np.array([0, 0, 1]), np.array([0, 1, 2])
>>> scores = cosine_scores(enrol, test, enrol_idx, test_idx)
>>> normed = score_normalize(
...     scores, enrol_idx, test_idx, enrol, test, cohort, top_n=10
... )
>>> normed.shape
(3,)
"""

import numpy as np

from speechbrain_ext.scoring.metrics import _as_numpy

__all__ = ["cosine_scores", "score_normalize", "speaker_cohort"]

NORM_METHODS = ("z-norm", "t-norm", "s-norm", "as-norm")


def _unit_rows(embeddings, mean=None, name="embeddings"):
    """Subtracts ``mean`` and L2-normalises each row, in float64.

    Arguments
    ---------
    embeddings : array-like
        Embeddings, shape [M, D].
    mean : array-like, optional
        Vector of shape [D] subtracted from every row first.
    name : str
        What the embeddings are, for error messages.

    Returns
    -------
    numpy.ndarray
        float64 array of shape [M, D] with unit-norm rows.
    """
    embeddings = _as_numpy(embeddings).astype(np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty [M, D] matrix, got shape "
            f"{embeddings.shape}"
        )
    if mean is not None:
        mean = _as_numpy(mean).astype(np.float64).reshape(-1)
        if mean.shape[0] != embeddings.shape[1]:
            raise ValueError(
                f"mean has {mean.shape[0]} dimensions but {name} have "
                f"{embeddings.shape[1]}"
            )
        embeddings -= mean
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if not np.all(norms > 0) or not np.all(np.isfinite(norms)):
        bad = int(np.flatnonzero(~(np.isfinite(norms) & (norms > 0)))[0])
        raise ValueError(
            f"{name} row {bad} has norm {norms[bad, 0]} and cannot be "
            "L2-normalised"
        )
    embeddings /= norms
    return embeddings


def _check_indices(enrol_idx, test_idx, n_enrol, n_test):
    """Validates the per-trial indices into the enrol and test embeddings.

    Arguments
    ---------
    enrol_idx : array-like
        Row of the enrolment embedding for each trial.
    test_idx : array-like
        Row of the test embedding for each trial.
    n_enrol : int
        Number of enrolment embeddings.
    n_test : int
        Number of test embeddings.

    Returns
    -------
    enrol_idx, test_idx : numpy.ndarray
        int64 arrays of shape [N].
    """
    enrol_idx = _as_numpy(enrol_idx)
    test_idx = _as_numpy(test_idx)
    for name, idx, size in (
        ("enrol_idx", enrol_idx, n_enrol),
        ("test_idx", test_idx, n_test),
    ):
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(
                f"{name} must be a 1-D integer array, got shape {idx.shape} "
                f"and dtype {idx.dtype}"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= size):
            raise ValueError(
                f"{name} must lie in [0, {size}), got values from "
                f"{idx.min()} to {idx.max()}"
            )
    if enrol_idx.shape != test_idx.shape:
        raise ValueError(
            f"enrol_idx has {enrol_idx.size} trials but test_idx has "
            f"{test_idx.size}"
        )
    return enrol_idx.astype(np.int64), test_idx.astype(np.int64)


def cosine_scores(
    enrol_emb, test_emb, enrol_idx, test_idx, mean=None, chunk_size=16384
):
    """Computes the cosine score of every trial.

    Embeddings are mean-subtracted (if ``mean`` is given) and L2-normalised
    once; the per-trial dot products are then taken ``chunk_size`` trials
    at a time, so memory is O(N + (E + T) * D) however many trials there
    are. When the trials cover at least half of all enrol x test pairs, the
    E x T score matrix (then at most 2N entries) is computed instead.

    Arguments
    ---------
    enrol_emb : array-like
        Enrolment embeddings, shape [E, D].
    test_emb : array-like
        Test embeddings, shape [T, D].
    enrol_idx : array-like
        Integer row of ``enrol_emb`` for each trial, shape [N].
    test_idx : array-like
        Integer row of ``test_emb`` for each trial, shape [N].
    mean : array-like, optional
        Training-set mean embedding, shape [D], subtracted before
        normalising.
    chunk_size : int
        Trials scored per step.

    Returns
    -------
    numpy.ndarray
        float64 cosine scores, shape [N].

    Example
    -------
    >>> enrol = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> test = np.array([[3.0, 3.0], [0.0, -1.0]])
    >>> cosine_scores(enrol, test, [0, 1, 1], [0, 0, 1]).round(4).tolist()
    [0.7071, 0.7071, -1.0]
    """
    enrol = _unit_rows(enrol_emb, mean, "enrol_emb")
    test = _unit_rows(test_emb, mean, "test_emb")
    if enrol.shape[1] != test.shape[1]:
        raise ValueError(
            f"enrol_emb has {enrol.shape[1]} dimensions but test_emb has "
            f"{test.shape[1]}"
        )
    enrol_idx, test_idx = _check_indices(
        enrol_idx, test_idx, len(enrol), len(test)
    )
    if len(enrol) * len(test) <= 2 * enrol_idx.size:
        # Dense trial grids (CN-Celeb scores every enrolment against every
        # test utterance): one E x T product, no bigger than the trial list,
        # is faster than gathering N pairs of rows.
        return (enrol @ test.T)[enrol_idx, test_idx]
    scores = np.empty(enrol_idx.size)
    for start in range(0, enrol_idx.size, chunk_size):
        chunk = slice(start, start + chunk_size)
        scores[chunk] = np.einsum(
            "nd,nd->n", enrol[enrol_idx[chunk]], test[test_idx[chunk]]
        )
    return scores


def _cohort_statistics(embeddings, cohort, top_n=None, chunk_size=2048):
    """Mean and standard deviation of each item's (top-N) cohort scores.

    Arguments
    ---------
    embeddings : numpy.ndarray
        Unit-norm embeddings, shape [M, D].
    cohort : numpy.ndarray
        Unit-norm cohort embeddings, shape [C, D].
    top_n : int, optional
        Keep only the ``top_n`` highest cohort scores of each item; all of
        them when None or when ``top_n >= C``.
    chunk_size : int
        Items processed per step (bounds the [chunk, C] score block).

    Returns
    -------
    mean, std : numpy.ndarray
        Shape [M] each; ``std`` is the population (ddof=0) deviation.
    """
    n_cohort = cohort.shape[0]
    keep = n_cohort if top_n is None else min(top_n, n_cohort)
    means = np.empty(len(embeddings))
    stds = np.empty(len(embeddings))
    for start in range(0, len(embeddings), chunk_size):
        chunk = slice(start, start + chunk_size)
        block = embeddings[chunk] @ cohort.T
        if keep < n_cohort:
            # Mean and std do not depend on order: a partition suffices.
            block = np.partition(block, n_cohort - keep, axis=1)
            block = block[:, n_cohort - keep :]
        means[chunk] = block.mean(axis=1)
        stds[chunk] = block.std(axis=1)
    return means, stds


def score_normalize(
    scores,
    enrol_idx,
    test_idx,
    enrol_emb,
    test_emb,
    cohort_emb,
    method="as-norm",
    top_n=300,
    mean=None,
):
    """Normalises trial scores with cohort statistics (z/t/s/AS-norm).

    With ``mu_e, std_e`` the mean and standard deviation of the enrolment
    item's cosine scores against the cohort and ``mu_t, std_t`` those of the
    test item:

    - ``"z-norm"``: ``(s - mu_e) / std_e`` over the whole cohort;
    - ``"t-norm"``: ``(s - mu_t) / std_t`` over the whole cohort;
    - ``"s-norm"``: ``((s - mu_e) / std_e + (s - mu_t) / std_t) / 2`` over
      the whole cohort;
    - ``"as-norm"``: the s-norm formula with statistics over each item's
      ``top_n`` highest-scoring cohort entries (adaptive s-norm, Matejka et
      al., Interspeech 2017; as in WeSpeaker's ``score_norm.py``).

    Standard deviations are population ones (ddof=0), as in WeSpeaker.
    Statistics are computed once per enrolment and per test item.

    Arguments
    ---------
    scores : array-like
        Raw cosine scores, shape [N], as from :func:`cosine_scores`.
    enrol_idx : array-like
        Integer row of ``enrol_emb`` for each trial, shape [N].
    test_idx : array-like
        Integer row of ``test_emb`` for each trial, shape [N].
    enrol_emb : array-like
        Enrolment embeddings, shape [E, D].
    test_emb : array-like
        Test embeddings, shape [T, D].
    cohort_emb : array-like
        Cohort embeddings, shape [C, D], already in the scoring space (build
        them with :func:`speaker_cohort` and the same ``mean``); they are
        only L2-normalised here.
    method : str
        One of "z-norm", "t-norm", "s-norm", "as-norm".
    top_n : int
        Cohort size kept per item for "as-norm" (the whole cohort if it has
        fewer entries); ignored by the other methods.
    mean : array-like, optional
        Training-set mean embedding, shape [D], subtracted from the enrolment
        and test embeddings (the same one given to :func:`cosine_scores`).

    Returns
    -------
    numpy.ndarray
        float64 normalised scores, shape [N].

    Example
    -------
    >>> enrol = np.array([[1.0, 0.0]])
    >>> test = np.array([[0.6, 0.8]])
    >>> cohort = np.array([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    >>> s = cosine_scores(enrol, test, [0], [0])
    >>> z = score_normalize(s, [0], [0], enrol, test, cohort, "z-norm")
    >>> bool(np.isclose(z[0], 0.6 / np.std([0.0, 1.0, -1.0])))
    True
    >>> a = score_normalize(s, [0], [0], enrol, test, cohort, top_n=2)
    >>> bool(np.isclose(a[0], ((0.6 - 0.5) / 0.5 + (0.6 - 0.7) / 0.1) / 2))
    True
    """
    if method not in NORM_METHODS:
        raise ValueError(
            f"method must be one of {NORM_METHODS}, got {method!r}"
        )
    if method == "as-norm" and (top_n is None or top_n < 2):
        raise ValueError(f"as-norm needs top_n >= 2, got {top_n}")
    scores = _as_numpy(scores).astype(np.float64)
    enrol = _unit_rows(enrol_emb, mean, "enrol_emb")
    test = _unit_rows(test_emb, mean, "test_emb")
    cohort = _unit_rows(cohort_emb, None, "cohort_emb")
    if not enrol.shape[1] == test.shape[1] == cohort.shape[1]:
        raise ValueError(
            "enrol_emb, test_emb and cohort_emb must have the same dimension, "
            f"got {enrol.shape[1]}, {test.shape[1]} and {cohort.shape[1]}"
        )
    enrol_idx, test_idx = _check_indices(
        enrol_idx, test_idx, len(enrol), len(test)
    )
    if scores.shape != enrol_idx.shape:
        raise ValueError(
            f"scores has {scores.size} trials but the indices have "
            f"{enrol_idx.size}"
        )
    keep = top_n if method == "as-norm" else None

    normalized = []
    if method != "t-norm":
        normalized.append(
            _normalize_by(scores, enrol_idx, enrol, cohort, keep, "enrol")
        )
    if method != "z-norm":
        normalized.append(
            _normalize_by(scores, test_idx, test, cohort, keep, "test")
        )
    if len(normalized) == 1:
        return normalized[0]
    return (normalized[0] + normalized[1]) / 2


def _normalize_by(scores, item_idx, items, cohort, top_n, side):
    """Standardises scores by the cohort statistics of one trial side.

    Arguments
    ---------
    scores : numpy.ndarray
        Raw scores, shape [N].
    item_idx : numpy.ndarray
        Row of ``items`` for each trial.
    items : numpy.ndarray
        Unit-norm embeddings of that side (enrol or test).
    cohort : numpy.ndarray
        Unit-norm cohort embeddings.
    top_n : int or None
        Top-N cohort selection, None for the whole cohort.
    side : str
        "enrol" or "test", for error messages.

    Returns
    -------
    numpy.ndarray
        ``(scores - mean) / std`` with per-trial statistics.
    """
    # Only the items that some trial refers to need cohort statistics.
    used = np.flatnonzero(np.bincount(item_idx, minlength=len(items)))
    means = np.zeros(len(items))
    stds = np.ones(len(items))
    means[used], stds[used] = _cohort_statistics(items[used], cohort, top_n)
    if not np.all(stds > 0):
        bad = int(np.flatnonzero(~(stds > 0))[0])
        raise ValueError(
            f"{side} item {bad} has identical scores against every cohort "
            "entry used (std 0): use a larger or more varied cohort"
        )
    return (scores - means[item_idx]) / stds[item_idx]


def speaker_cohort(embeddings, speaker_ids, mean=None):
    """Averages embeddings per speaker into an L2-normalised cohort.

    Arguments
    ---------
    embeddings : array-like
        Utterance embeddings, shape [M, D] (e.g. the training set).
    speaker_ids : list
        Speaker of each utterance, length M.
    mean : array-like, optional
        Training-set mean embedding, shape [D], subtracted before averaging
        so that the cohort lives in the same space as the scored embeddings.

    Returns
    -------
    numpy.ndarray
        float64 array of shape [S, D], one unit-norm row per speaker, in the
        sorted order of ``str(speaker_id)``.

    Example
    -------
    >>> emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -2.0]])
    >>> speaker_cohort(emb, ["b", "b", "a"]).round(4).tolist()
    [[0.0, -1.0], [0.7071, 0.7071]]
    """
    embeddings = _as_numpy(embeddings)
    speaker_ids = list(speaker_ids)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(
            "embeddings must be a non-empty [M, D] matrix, got shape "
            f"{embeddings.shape}"
        )
    if len(speaker_ids) != embeddings.shape[0]:
        raise ValueError(
            f"{embeddings.shape[0]} embeddings but {len(speaker_ids)} "
            "speaker ids"
        )
    _, speaker_of = np.unique(
        np.asarray(speaker_ids, dtype=str), return_inverse=True
    )
    n_speakers = int(speaker_of.max()) + 1
    sums = np.zeros((n_speakers, embeddings.shape[1]))
    np.add.at(sums, speaker_of, embeddings)
    counts = np.bincount(speaker_of, minlength=n_speakers)
    # Mean subtraction commutes with averaging, so it is done on S rows.
    return _unit_rows(sums / counts[:, None], mean, "speaker averages")
