"""Tests for the sort-based EER / minDCF against brute force and SpeechBrain."""

import tracemalloc

import numpy as np
import pytest
import torch

from speechbrain.utils.metric_stats import (
    EER as speechbrain_eer,
    minDCF as speechbrain_min_dcf,
)
from speechbrain_ext.scoring.metrics import compute_eer_mindcf, det_curve


def brute_force_curve(scores, labels):
    """Rates at every threshold, each counted with a full pass (O(N^2))."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    thresholds = sorted(set(scores.tolist())) + [np.inf]
    p_miss, p_fa = [], []
    for threshold in thresholds:
        accepted = scores >= threshold
        p_miss.append(np.mean(~accepted[labels]))
        p_fa.append(np.mean(accepted[~labels]))
    return np.array(p_miss), np.array(p_fa)


def brute_force_eer_mindcf(scores, labels, p_target=0.01, c_miss=1, c_fa=1):
    """EER by linear interpolation at the crossing, and normalised minDCF."""
    p_miss, p_fa = brute_force_curve(scores, labels)
    costs = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa
    min_dcf = costs.min() / min(c_miss * p_target, c_fa * (1 - p_target))
    for k in range(1, len(p_miss)):
        if p_miss[k] >= p_fa[k]:
            if p_miss[k] == p_fa[k]:
                return p_miss[k], min_dcf
            # Solve m0 + x (m1 - m0) = f0 + x (f1 - f0) for x.
            m0, m1, f0, f1 = p_miss[k - 1], p_miss[k], p_fa[k - 1], p_fa[k]
            x = (f0 - m0) / ((m1 - m0) - (f1 - f0))
            return m0 + x * (m1 - m0), min_dcf
    raise AssertionError("the curves never cross")


def random_trials(rng, n, n_levels=None, target_rate=0.2):
    """Gaussian scores with targets shifted up; optionally quantised."""
    labels = rng.random(n) < target_rate
    labels[:2] = [True, False]
    scores = rng.normal(size=n) + 1.5 * labels
    if n_levels is not None:
        scores = np.round(scores * n_levels / 6) / n_levels
    return scores, labels


@pytest.mark.parametrize("n_levels", [None, 3, 10, 40])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(seed, n_levels):
    rng = np.random.default_rng(seed)
    scores, labels = random_trials(rng, 400, n_levels)
    if n_levels is not None:
        assert len(np.unique(scores)) < 100  # many ties within each value
    for p_target, c_miss, c_fa in [(0.01, 1, 1), (0.05, 1, 1), (0.3, 2, 5)]:
        eer, min_dcf, _ = compute_eer_mindcf(
            scores, labels, p_target, c_miss, c_fa
        )
        ref_eer, ref_dcf = brute_force_eer_mindcf(
            scores, labels, p_target, c_miss, c_fa
        )
        assert eer == pytest.approx(ref_eer, abs=1e-9)
        assert min_dcf == pytest.approx(ref_dcf, abs=1e-9)


def test_det_curve_matches_brute_force_with_ties():
    rng = np.random.default_rng(3)
    scores, labels = random_trials(rng, 300, n_levels=5)
    p_miss, p_fa, thresholds = det_curve(scores, labels)
    ref_miss, ref_fa = brute_force_curve(scores, labels)
    np.testing.assert_allclose(p_miss, ref_miss, atol=1e-12)
    np.testing.assert_allclose(p_fa, ref_fa, atol=1e-12)
    np.testing.assert_array_equal(thresholds[:-1], np.unique(scores))
    assert thresholds[-1] > scores.max()


def test_hand_computed_values():
    # Accept-all (0, 1) -> 0.35: (0, 0.5) -> 0.4: (0.5, 0.5).
    eer, min_dcf, threshold = compute_eer_mindcf(
        [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    )
    assert (eer, threshold) == (0.5, 0.4)
    # Best cost: reject 0.35 and 0.4 -> 0.01 * 0.5 / min(0.01, 0.99).
    assert min_dcf == pytest.approx(0.5, abs=1e-12)

    # Points (0, 1), (0.5, 1), (1, 0): the crossing lies a third of the way
    # along the last segment, where p_miss = 0.5 + 0.5 / 3.
    eer, _, threshold = compute_eer_mindcf([0.5, 1.0, 1.0], [1, 1, 0])
    assert eer == pytest.approx(2 / 3, abs=1e-12)
    assert threshold == 1.0

    # Perfect separation.
    eer, min_dcf, threshold = compute_eer_mindcf([3, 2, 1, 0], [1, 1, 0, 0])
    assert (eer, min_dcf, threshold) == (0.0, 0.0, 2.0)


def test_fully_tied_scores_move_together():
    # One score for everything: only accept-all and reject-all exist.
    eer, min_dcf, _ = compute_eer_mindcf([0.5] * 4, [1, 0, 1, 0])
    assert eer == pytest.approx(0.5, abs=1e-12)
    assert min_dcf == pytest.approx(1.0, abs=1e-12)
    p_miss, p_fa, _ = det_curve([0.5] * 4, [1, 0, 1, 0])
    assert p_miss.tolist() == [0.0, 1.0]
    assert p_fa.tolist() == [1.0, 0.0]


def test_order_of_trials_does_not_matter():
    rng = np.random.default_rng(4)
    scores, labels = random_trials(rng, 500, n_levels=8)
    order = rng.permutation(500)
    assert compute_eer_mindcf(scores, labels) == compute_eer_mindcf(
        scores[order], labels[order]
    )


def test_accepts_lists_and_tensors():
    rng = np.random.default_rng(5)
    scores, labels = random_trials(rng, 200)
    scores = scores.astype(np.float32)  # exactly representable in torch
    expected = compute_eer_mindcf(scores, labels)
    assert compute_eer_mindcf(scores.tolist(), labels.tolist()) == expected
    assert (
        compute_eer_mindcf(torch.from_numpy(scores), torch.from_numpy(labels))
        == expected
    )
    int_labels = torch.from_numpy(labels.astype(np.int64))
    assert compute_eer_mindcf(torch.from_numpy(scores), int_labels) == expected


@pytest.mark.parametrize("n_levels", [None, 6])
def test_min_dcf_equals_speechbrain(n_levels):
    # SpeechBrain's minDCF is not normalised and accepts when score > thr;
    # its thresholds (unique scores and midpoints) give the same operating
    # points as ours except accept-all, never the minimum for these priors.
    rng = np.random.default_rng(6)
    scores, labels = random_trials(rng, 300, n_levels)
    scores = scores.astype(np.float32)
    positives = torch.from_numpy(scores[labels])
    negatives = torch.from_numpy(scores[~labels])
    for p_target, c_miss, c_fa in [(0.01, 1, 1), (0.05, 1, 1), (0.5, 1, 2)]:
        _, min_dcf, _ = compute_eer_mindcf(
            scores, labels, p_target, c_miss, c_fa
        )
        theirs, _ = speechbrain_min_dcf(
            positives, negatives, c_miss, c_fa, p_target
        )
        normaliser = min(c_miss * p_target, c_fa * (1 - p_target))
        assert min_dcf * normaliser == pytest.approx(theirs, abs=1e-6)


@pytest.mark.parametrize("n_levels", [None, 6])
def test_eer_within_proven_bound_of_speechbrain(n_levels):
    # SpeechBrain returns (p_miss + p_fa) / 2 at the operating point with
    # the smallest gap |p_miss - p_fa|. That point is one end of the
    # segment where the curves cross, and on it the crossing value lies
    # between p_fa and p_miss, so the two EERs differ by at most gap / 2.
    rng = np.random.default_rng(7)
    scores, labels = random_trials(rng, 300, n_levels)
    scores = scores.astype(np.float32)
    eer, _, _ = compute_eer_mindcf(scores, labels)
    theirs, _ = speechbrain_eer(
        torch.from_numpy(scores[labels]), torch.from_numpy(scores[~labels])
    )
    p_miss, p_fa, _ = det_curve(scores, labels)
    gaps = np.abs(p_miss - p_fa)
    smallest = gaps.min()
    # Same operating points: SpeechBrain's value is a mean at a minimum gap.
    means_at_min = (p_miss + p_fa)[gaps <= smallest + 1e-7] / 2
    assert np.min(np.abs(means_at_min - theirs)) < 1e-6
    assert abs(eer - theirs) <= smallest / 2 + 1e-6


def test_memory_is_linear_in_trials():
    # A thresholds x trials matrix (SpeechBrain's minDCF) would need
    # ~N bytes per trial; ours stays at a few float64 arrays per trial.
    n = 200_000
    rng = np.random.default_rng(8)
    scores, labels = random_trials(rng, n, target_rate=0.01)
    tracemalloc.start()
    compute_eer_mindcf(scores, labels)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak / n < 100


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        ([], [], "empty"),
        ([0.1, 0.2], [1], "2 trials but labels has 1"),
        ([0.1, 0.2], [1, 1], "all 2 trials are target"),
        ([0.1, 0.2], [0, 0], "all 2 trials are non-target"),
        ([0.1, np.nan, 0.3], [1, 0, 1], "trial 1 has score nan"),
        ([0.1, 0.2, np.inf], [1, 0, 1], "trial 2 has score inf"),
        ([0.1, 0.2, 0.3], [1, 0, 2], "trial 2 has label 2"),
        ([[0.1, 0.2]], [[1, 0]], "must be 1-D"),
    ],
)
def test_bad_input_raises_clear_error(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        compute_eer_mindcf(scores, labels)
    with pytest.raises(ValueError, match=message):
        det_curve(scores, labels)


def test_bad_costs_raise():
    with pytest.raises(ValueError, match="p_target must be in"):
        compute_eer_mindcf([0.1, 0.2], [0, 1], p_target=1.0)
    with pytest.raises(ValueError, match="must be positive"):
        compute_eer_mindcf([0.1, 0.2], [0, 1], c_fa=0)
