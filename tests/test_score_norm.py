"""Tests for cosine scoring and z/t/s/AS-norm against per-trial loops."""

import math

import numpy as np
import pytest
import torch

from speechbrain_ext.scoring.normalization import (
    cosine_scores,
    score_normalize,
    speaker_cohort,
)


def unit(vector):
    return vector / math.sqrt(sum(v * v for v in vector))


def loop_cosine(enrol, test, enrol_idx, test_idx, mean=None):
    """One trial at a time, as SpeechBrain's recipe scores them."""
    scores = []
    for e, t in zip(enrol_idx, test_idx):
        a, b = enrol[e], test[t]
        if mean is not None:
            a, b = a - mean, b - mean
        scores.append(float(np.dot(unit(a), unit(b))))
    return np.array(scores)


def side_stats(embedding, cohort, top_n):
    """Mean and population std of one item's (top-N) cohort scores."""
    cohort_scores = sorted(float(np.dot(embedding, unit(c))) for c in cohort)
    if top_n is not None:
        cohort_scores = cohort_scores[-top_n:]
    mu = sum(cohort_scores) / len(cohort_scores)
    var = sum((s - mu) ** 2 for s in cohort_scores) / len(cohort_scores)
    return mu, math.sqrt(var)


def loop_normalize(
    scores, enrol_idx, test_idx, enrol, test, cohort, method, top_n, mean=None
):
    """Per-trial z/t/s/AS-norm, recomputing the cohort scores every time."""
    keep = top_n if method == "as-norm" else None
    out = []
    for s, e, t in zip(scores, enrol_idx, test_idx):
        a, b = enrol[e], test[t]
        if mean is not None:
            a, b = a - mean, b - mean
        mu_e, sd_e = side_stats(unit(a), cohort, keep)
        mu_t, sd_t = side_stats(unit(b), cohort, keep)
        z, t_ = (s - mu_e) / sd_e, (s - mu_t) / sd_t
        out.append({"z-norm": z, "t-norm": t_}.get(method, (z + t_) / 2))
    return np.array(out)


@pytest.fixture
def small_case():
    rng = np.random.default_rng(0)
    enrol = rng.normal(size=(5, 16)) + 0.3
    test = rng.normal(size=(9, 16)) + 0.3
    cohort = rng.normal(size=(30, 16))
    enrol_idx = rng.integers(0, 5, size=40)
    test_idx = rng.integers(0, 9, size=40)
    mean = np.full(16, 0.3)
    return enrol, test, cohort, enrol_idx, test_idx, mean


@pytest.mark.parametrize("use_mean", [False, True])
def test_cosine_scores_match_loop(small_case, use_mean):
    enrol, test, _, enrol_idx, test_idx, mean = small_case
    mean = mean if use_mean else None
    expected = loop_cosine(enrol, test, enrol_idx, test_idx, mean)
    # 40 trials over 45 pairs takes the E x T path, chunk_size=7 the other.
    dense = cosine_scores(enrol, test, enrol_idx, test_idx, mean)
    sparse = cosine_scores(
        enrol, test, enrol_idx[:10], test_idx[:10], mean, chunk_size=7
    )
    np.testing.assert_allclose(dense, expected, atol=1e-12)
    np.testing.assert_allclose(sparse, expected[:10], atol=1e-12)


def test_cosine_scores_hand_values():
    enrol = [[3.0, 4.0]]
    test = [[4.0, 3.0], [-3.0, -4.0], [0.0, 1.0]]
    scores = cosine_scores(enrol, test, [0, 0, 0], [0, 1, 2])
    np.testing.assert_allclose(scores, [24 / 25, -1.0, 0.8], atol=1e-12)


@pytest.mark.parametrize("method", ["z-norm", "t-norm", "s-norm", "as-norm"])
@pytest.mark.parametrize("use_mean", [False, True])
def test_normalization_matches_loop(small_case, method, use_mean):
    enrol, test, cohort, enrol_idx, test_idx, mean = small_case
    mean = mean if use_mean else None
    scores = cosine_scores(enrol, test, enrol_idx, test_idx, mean)
    expected = loop_normalize(
        scores, enrol_idx, test_idx, enrol, test, cohort, method, 7, mean
    )
    normed = score_normalize(
        scores, enrol_idx, test_idx, enrol, test, cohort, method, 7, mean
    )
    np.testing.assert_allclose(normed, expected, atol=1e-6)


def test_as_norm_top_n_changes_result_and_whole_cohort_is_s_norm(
    small_case,
):
    enrol, test, cohort, enrol_idx, test_idx, _ = small_case
    scores = cosine_scores(enrol, test, enrol_idx, test_idx)
    args = (scores, enrol_idx, test_idx, enrol, test, cohort)
    s_norm = score_normalize(*args, method="s-norm")
    top_5 = score_normalize(*args, method="as-norm", top_n=5)
    whole = score_normalize(*args, method="as-norm", top_n=300)
    assert np.abs(top_5 - s_norm).max() > 0.1
    np.testing.assert_allclose(whole, s_norm, atol=1e-12)


def test_torch_inputs_give_same_result(small_case):
    enrol, test, cohort, enrol_idx, test_idx, mean = small_case
    scores = cosine_scores(enrol, test, enrol_idx, test_idx, mean)
    expected = score_normalize(
        scores, enrol_idx, test_idx, enrol, test, cohort, top_n=5, mean=mean
    )
    tensors = [
        torch.from_numpy(x)
        for x in (scores, enrol_idx, test_idx, enrol, test, cohort)
    ]
    normed = score_normalize(*tensors, top_n=5, mean=torch.from_numpy(mean))
    np.testing.assert_allclose(normed, expected, atol=1e-12)


def test_speaker_cohort_averages_then_normalises():
    emb = np.array([[2.0, 0.0], [0.0, 2.0], [5.0, 5.0], [1.0, -1.0]])
    cohort = speaker_cohort(emb, ["s2", "s2", "s1", "s3"])
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(cohort, [[r, r], [r, r], [r, -r]], atol=1e-12)
    # With a mean: the average of (x - mean), not normalise(avg) - mean.
    shifted = speaker_cohort(emb, ["s2", "s2", "s1", "s3"], mean=[1.0, 0.0])
    np.testing.assert_allclose(
        shifted,
        [[4 / math.sqrt(41), 5 / math.sqrt(41)], [0.0, 1.0], [0.0, -1.0]],
        atol=1e-12,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "x-norm"}, "method must be one of"),
        ({"method": "as-norm", "top_n": 1}, "top_n >= 2"),
        ({"enrol_idx": np.array([0, 5])}, r"enrol_idx must lie in \[0, 2\)"),
        ({"test_idx": np.array([0.0, 1.0])}, "1-D integer array"),
        ({"scores": np.zeros(3)}, "scores has 3 trials but the indices"),
        ({"cohort_emb": np.ones((4, 3))}, "same dimension"),
        ({"enrol_emb": np.zeros((2, 2))}, "enrol_emb row 0 has norm 0"),
        ({"cohort_emb": np.ones((4, 2))}, "enrol item 0 has identical"),
        ({"mean": np.zeros(3)}, "mean has 3 dimensions"),
    ],
)
def test_bad_input_raises_clear_error(kwargs, message):
    args = {
        "scores": np.zeros(2),
        "enrol_idx": np.array([0, 1]),
        "test_idx": np.array([1, 0]),
        "enrol_emb": np.eye(2),
        "test_emb": np.eye(2),
        "cohort_emb": np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]),
        "method": "s-norm",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        score_normalize(**args)


def test_speaker_cohort_length_mismatch():
    with pytest.raises(ValueError, match="3 embeddings but 2 speaker ids"):
        speaker_cohort(np.ones((3, 2)), ["a", "b"])
