"""Scoring of a trial list from embeddings: no encoder, no audio.

:func:`score_trials` takes :class:`TrialEmbeddings` (the embeddings of the
enrolment files, the test utterances and optionally a score cohort, each
row with its id), averages multi-file enrolments, matches the trials to the
embeddings by id (:func:`~speechbrain_ext.scoring.trials.map_trials`),
scores them by cosine, optionally after subtracting the cohort's mean
embedding and with z/t/s/AS-norm against the speaker-averaged cohort, and
reports EER and minDCF. ``verify_trials`` (in
:mod:`speechbrain_ext.evaluation.verification`) embeds a trial list's audio
with an encoder and scores it here; embeddings computed elsewhere are scored
the same way.

Example
-------
>>> embeddings = TrialEmbeddings(
...     enrol_ids=["a", "a", "b"],  # enrolment "a" has two files
...     enrol=[[1.0, 0.1], [1.0, -0.1], [0.0, 1.0]],
...     test_ids=["a3", "b2"],
...     test=[[0.9, 0.0], [0.1, 1.0]],
... )
>>> trials = [("a", "a3", 1), ("a", "b2", 0), ("b", "b2", 1), ("b", "a3", 0)]
>>> result = score_trials(trials, embeddings)
>>> result["EER"], result["n_trials"], result["n_target"]
(0.0, 4, 2)
>>> result["scores"].round(3).tolist()
[1.0, 0.1, 0.995, 0.0]
"""

import dataclasses

import numpy as np

from speechbrain_ext.scoring.metrics import compute_eer_mindcf
from speechbrain_ext.scoring.normalization import (
    cosine_scores,
    score_normalize,
    speaker_cohort,
)
from speechbrain_ext.scoring.trials import map_trials

__all__ = ["TrialEmbeddings", "check_cohort", "score_trials"]


@dataclasses.dataclass
class TrialEmbeddings:
    """Embeddings of a trial list's audio, each row with its id.

    Arguments
    ---------
    enrol_ids : list of str
        Enrolment id of each row of ``enrol``. An id may repeat: the rows of
        a multi-file enrolment are L2-normalised and averaged.
    enrol : array-like
        Enrolment file embeddings, shape [N_enrol, D].
    test_ids : list of str
        Id of each row of ``test``.
    test : array-like
        Test utterance embeddings, shape [N_test, D].
    cohort_speakers : list, optional
        Speaker of each row of ``cohort``.
    cohort : array-like, optional
        Cohort utterance embeddings, shape [M, D] (e.g. a few training
        utterances per speaker); needed for score normalisation and for
        ``mean_norm``.
    """

    enrol_ids: list
    enrol: object
    test_ids: list
    test: object
    cohort_speakers: list = None
    cohort: object = None


def check_cohort(score_norm, mean_norm, has_cohort):
    """Refuses options that need a cohort when there is none.

    Arguments
    ---------
    score_norm : str
        "none", "z-norm", "t-norm", "s-norm" or "as-norm".
    mean_norm : bool
        Whether the cohort's mean embedding is subtracted.
    has_cohort : bool
        Whether a cohort is given.

    Returns
    -------
    bool
        Whether the options use the cohort.

    Example
    -------
    >>> check_cohort("none", False, has_cohort=False)
    False
    >>> check_cohort("s-norm", False, has_cohort=False)
    Traceback (most recent call last):
      ...
    ValueError: score_norm='s-norm' / mean_norm need a cohort
    """
    needs_cohort = score_norm != "none" or bool(mean_norm)
    if needs_cohort and not has_cohort:
        raise ValueError(f"score_norm={score_norm!r} / mean_norm need a cohort")
    return needs_cohort


def _unit(x):
    """L2-normalises rows."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _average_by_id(ids, emb, mean=None):
    """Averages unit-norm rows sharing an id, ids in first-seen order."""
    rows_of = {}
    for row, name in enumerate(ids):
        rows_of.setdefault(name, []).append(row)
    shift = 0.0 if mean is None else mean
    averaged = [_unit(emb[rows] - shift).mean(0) for rows in rows_of.values()]
    return list(rows_of), np.stack(averaged)


def _matrix(emb, ids, name):
    """``emb`` as a 2-D array with one row per id."""
    emb = np.asarray(emb)
    if emb.ndim != 2 or emb.shape[0] != len(ids):
        raise ValueError(
            f"{name} embeddings must be a [{len(ids)}, D] matrix (one row "
            f"per id), got shape {emb.shape}"
        )
    return emb


def score_trials(
    trials, embeddings, score_norm="none", top_n=300, mean_norm=False
):
    """Scores a trial list from embeddings and returns EER and minDCF.

    Arguments
    ---------
    trials : list of tuple
        ``(enrol_id, test_id, label)``, ids matched by stem (see
        :func:`~speechbrain_ext.scoring.trials.map_trials`).
    embeddings : TrialEmbeddings
        The enrolment, test and (for ``score_norm`` and ``mean_norm``)
        cohort embeddings.
    score_norm : str
        "none", "z-norm", "t-norm", "s-norm" or "as-norm".
    top_n : int
        Cohort size per item for AS-norm.
    mean_norm : bool
        Subtract the cohort's mean embedding before cosine scoring.

    Returns
    -------
    dict
        ``EER`` and ``minDCF`` (fractions / normalised), ``threshold``,
        ``n_trials``, ``n_target`` and the arrays ``scores``, ``labels``
        and ``trials`` (for writing reports).

    Raises
    ------
    ValueError
        If the options need a cohort and there is none, a trial names an
        unknown id, or the trials have no labels.
    """
    has_cohort = embeddings.cohort is not None
    needs_cohort = check_cohort(score_norm, mean_norm, has_cohort)
    enrol = _matrix(embeddings.enrol, embeddings.enrol_ids, "enrolment")
    test_emb = _matrix(embeddings.test, embeddings.test_ids, "test")
    mean = cohort_emb = None
    if needs_cohort:
        speakers = list(embeddings.cohort_speakers)
        cohort_raw = _matrix(embeddings.cohort, speakers, "cohort")
        mean = _unit(cohort_raw).mean(0) if mean_norm else None
        cohort_emb = speaker_cohort(_unit(cohort_raw), speakers, mean=mean)
    enrol_ids, enrol_emb = _average_by_id(embeddings.enrol_ids, enrol, mean)
    if mean is not None:
        test_emb = _unit(test_emb) - mean
    enrol_idx, test_idx, labels = map_trials(
        trials, enrol_ids, list(embeddings.test_ids)
    )
    if labels is None:
        raise ValueError("the trial list has no target/non-target labels")
    scores = cosine_scores(enrol_emb, test_emb, enrol_idx, test_idx)
    if score_norm != "none":
        scores = score_normalize(
            scores,
            enrol_idx,
            test_idx,
            _unit(enrol_emb),
            _unit(test_emb),
            cohort_emb,
            method=score_norm,
            top_n=top_n,
        )
    eer, min_dcf, threshold = compute_eer_mindcf(scores, labels)
    return {
        "EER": float(eer),
        "minDCF": float(min_dcf),
        "threshold": float(threshold),
        "n_trials": int(len(scores)),
        "n_target": int(labels.sum()),
        "scores": scores,
        "labels": labels,
        "trials": trials,
    }
