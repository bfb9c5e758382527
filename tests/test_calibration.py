"""Cllr, min Cllr, actDCF and the linear calibration, on hand-worked cases.

Every expected value below is worked out in the comments from the
definitions in :mod:`speechbrain_ext.scoring.calibration`; labels are
booleans, True meaning a same-speaker (target) trial.
"""

import json
import math

import numpy as np
import pytest
import torch

from speechbrain_ext.scoring import (
    LinearCalibration,
    act_dcf,
    bayes_threshold,
    cllr,
    compute_eer_mindcf,
    fit_calibration,
    min_cllr,
)

T, F = True, False


def gaussian_trials(
    n_target, n_nontarget, mu_target, mu_nontarget, sigma, seed
):
    """Equal-variance Gaussian scores and their true (linear) LLR map."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_target + n_nontarget) < n_target
    scores = rng.normal(np.where(labels, mu_target, mu_nontarget), sigma)
    a = (mu_target - mu_nontarget) / sigma**2
    b = (mu_nontarget**2 - mu_target**2) / (2 * sigma**2)
    return scores, labels, a, b


# --------------------------------------------------------------------------
# cllr
# --------------------------------------------------------------------------


def test_cllr_hand_worked():
    # Target at LLR log 3: log2(1 + 1/3) = log2(4/3); non-target at
    # -log 3: log2(1 + 1/3) too, so Cllr = log2(4/3).
    assert cllr([math.log(3), -math.log(3)], [T, F]) == pytest.approx(
        math.log2(4 / 3), abs=1e-12
    )
    # Target at 0 costs log2(2) = 1; non-target at log 3 costs log2(4) = 2.
    assert cllr([0.0, math.log(3)], [T, F]) == pytest.approx(1.5, abs=1e-12)
    # Means per class, not per trial: two cheap targets do not dilute the
    # one expensive non-target. Targets: log2(1 + e^-1) each; non-target
    # at 1: log2(1 + e).
    expected = 0.5 * (math.log2(1 + math.exp(-1)) + math.log2(1 + math.e))
    assert cllr([1.0, 1.0, 1.0], [T, T, F]) == pytest.approx(expected)


def test_cllr_of_the_uninformative_llr_is_one_bit():
    assert cllr(np.zeros(7), [T, F, F, F, F, F, T]) == 1.0


def test_cllr_is_stable_for_large_llrs():
    # Naive log2(1 + exp(800)) overflows; softplus gives 800 / ln 2.
    assert cllr([800.0, -800.0], [T, F]) == 0.0
    assert cllr([-800.0, -800.0], [T, F]) == pytest.approx(
        0.5 * 800 / math.log(2)
    )


def test_cllr_of_infinite_llrs():
    assert cllr([math.inf, -math.inf], [T, F]) == 0.0
    assert cllr([-math.inf, -math.inf], [T, F]) == math.inf


def test_cllr_accepts_torch_and_0_1_labels():
    value = cllr(torch.tensor([0.0, math.log(3)]), torch.tensor([1, 0]))
    assert value == pytest.approx(1.5)


# --------------------------------------------------------------------------
# min_cllr
# --------------------------------------------------------------------------


def test_min_cllr_pools_adjacent_violators():
    # Target fractions by score: 0, 1, 0, 0, 1, 1. PAV pools scores 2-4
    # into one block with 1 target and 2 non-targets (posterior 1/3); the
    # prior is even, so its LLR is log(1/2). Blocks {1} and {5, 6} hold one
    # class each: infinite LLRs, no cost.
    # Targets: one at LLR -ln 2 costs log2(1 + 2) = log2 3; mean log2(3)/3.
    # Non-targets: two at -ln 2 cost log2(1.5) each; mean 2 log2(1.5) / 3.
    # min Cllr = (log2 3 + 2 log2 1.5) / 6 = (3 log2 3 - 2) / 6.
    scores = [1, 2, 3, 4, 5, 6]
    labels = [F, T, F, F, T, T]
    expected = (3 * math.log2(3) - 2) / 6
    assert min_cllr(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_min_cllr_subtracts_the_empirical_prior():
    # Blocks {1, 2}: two non-targets (LLR -inf, free); {3, 4}: one target
    # and one non-target, posterior 1/2. Prior odds 1:3, so LLR = 0 -
    # log(1/3) = log 3. Target: log2(1 + 1/3) = log2(4/3) (mean over one);
    # non-target: log2(1 + 3) = 2, mean over three non-targets 2/3.
    scores = [1.0, 2.0, 3.0, 4.0]
    labels = [F, F, T, F]
    expected = 0.5 * (math.log2(4 / 3) + 2 / 3)
    assert min_cllr(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_min_cllr_pools_tied_scores_first():
    # Without pooling the tie, the stable order F, F, T, T would look
    # separable (0 bits). Pooled, the tie at 2 is one block with posterior
    # 1/2 and LLR 0: its target and non-target cost 1 bit each, each
    # class's mean is 1/2, min Cllr 0.5.
    assert min_cllr([1.0, 2.0, 2.0, 3.0], [F, F, T, T]) == 0.5
    assert min_cllr([1.0, 2.0, 2.0, 3.0], [F, T, F, T]) == 0.5


def test_min_cllr_of_separable_and_reversed_scores():
    assert min_cllr([0.1, 0.2, 0.7, 0.9], [F, F, T, T]) == 0.0
    # Fully reversed: PAV pools everything into one block at the prior,
    # LLR 0 everywhere, 1 bit.
    assert min_cllr([0.9, 0.7, 0.2, 0.1], [F, F, T, T]) == 1.0


def test_min_cllr_is_below_cllr_of_any_monotone_map():
    scores, labels, a, b = gaussian_trials(300, 3000, 0.5, 0.1, 0.15, seed=1)
    floor = min_cllr(scores, labels)
    maps = [
        lambda s: a * s + b,  # the true LLR
        lambda s: 3 * s,
        lambda s: 40 * s - 20,
        lambda s: 10 * np.tanh(4 * s),
        lambda s: 50 * s**3,
        lambda s: np.log(s - scores.min() + 1e-3),
    ]
    for monotone in maps:
        mapped = monotone(scores)
        assert floor <= cllr(mapped, labels) + 1e-12
        # The floor itself only depends on the order of the scores.
        assert min_cllr(mapped, labels) == pytest.approx(floor, abs=1e-12)
    # The true LLR is nearly optimal: the difference is the PAV fitting
    # the sample (a few hundredths of a bit at 300 targets).
    assert cllr(a * scores + b, labels) - floor < 0.05


def test_min_cllr_is_at_most_one_bit():
    rng = np.random.default_rng(0)
    labels = rng.random(500) < 0.3
    assert min_cllr(rng.normal(size=500), labels) <= 1.0


# --------------------------------------------------------------------------
# act_dcf
# --------------------------------------------------------------------------


def test_act_dcf_hand_worked():
    llrs = [3.0, 1.0, -1.0, 2.0, -3.0, 0.5]
    labels = [T, T, T, F, F, F]
    # p = 0.2: threshold log(0.8 / 0.2) = log 4 = 1.386. Accepted: 3 (a
    # target) and 2 (a non-target): p_miss 2/3, p_fa 1/3. Cost 0.2 * 2/3 +
    # 0.8 * 1/3 = 0.4, normalised by min(0.2, 0.8): 2.0.
    assert act_dcf(llrs, labels, p_target=0.2) == pytest.approx(2.0)
    # c_miss 4 moves the threshold to log(0.8 / 0.8) = 0: accepted 3, 1,
    # 2, 0.5: p_miss 1/3, p_fa 2/3; cost 4 * 0.2 / 3 + 0.8 * 2 / 3 = 0.8,
    # normalised by min(0.8, 0.8): 1.0.
    assert act_dcf(llrs, labels, 0.2, c_miss=4) == pytest.approx(1.0)


def test_act_dcf_accepts_an_llr_at_the_threshold():
    assert act_dcf([0.0, -1.0], [T, F], p_target=0.5) == 0.0
    threshold = bayes_threshold(0.01)
    assert act_dcf([threshold, -1.0], [T, F], p_target=0.01) == 0.0
    below = np.nextafter(threshold, -np.inf)
    assert act_dcf([below, -1.0], [T, F], p_target=0.01) == 1.0


def test_act_dcf_is_never_below_min_dcf():
    rng = np.random.default_rng(3)
    labels = rng.random(2000) < 0.2
    llrs = rng.normal(np.where(labels, 1.0, -1.0), 1.5) * 3 - 2
    for p_target in (0.01, 0.05, 0.3, 0.5, 0.9):
        _, min_dcf, _ = compute_eer_mindcf(llrs, labels, p_target=p_target)
        assert act_dcf(llrs, labels, p_target) >= min_dcf - 1e-12


def test_act_dcf_of_true_llrs_is_close_to_min_dcf():
    scores, labels, a, b = gaussian_trials(
        20000, 200000, 0.5, 0.1, 0.15, seed=2
    )
    for p_target in (0.01, 0.05):
        _, min_dcf, _ = compute_eer_mindcf(scores, labels, p_target)
        actual = act_dcf(a * scores + b, labels, p_target)
        assert min_dcf <= actual < min_dcf + 0.02


def test_act_dcf_matches_min_dcf_normalisation():
    # All LLRs -inf: everything rejected, p_miss 1: cost c_miss * p, the
    # same as minDCF's "reject all" point, normalised to 1.0.
    assert act_dcf([-np.inf] * 4, [T, F, F, F], 0.01) == 1.0
    _, min_dcf, _ = compute_eer_mindcf([0, 1, 0, 0], [F, T, F, F], 0.01)
    assert min_dcf == 0.0


# --------------------------------------------------------------------------
# fit_calibration and LinearCalibration
# --------------------------------------------------------------------------


def test_fit_saturated_model_hand_worked():
    # Two score levels, two parameters: the fit reproduces each level's
    # empirical LLR whatever the prior. At 0: 1 target, 2 non-targets, LLR
    # log(1/2) (class sizes are equal) = b. At 1: 2 targets, 1 non-target,
    # LLR log 2 = a + b. So a = 2 ln 2, b = -ln 2.
    scores = [0, 0, 0, 1, 1, 1]
    labels = [T, F, F, T, T, F]
    for p_target in (0.5, 0.2, 0.01):
        calibration = fit_calibration(scores, labels, p_target=p_target)
        assert calibration.a == pytest.approx(2 * math.log(2), abs=1e-6)
        assert calibration.b == pytest.approx(-math.log(2), abs=1e-6)


def test_fit_of_uninformative_scores_is_zero():
    # Each level holds one target and one non-target: LLR 0 everywhere.
    calibration = fit_calibration([0.2, 0.2, 0.7, 0.7], [T, F, T, F], 0.05)
    assert calibration.a == pytest.approx(0.0, abs=1e-8)
    assert calibration.b == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("p_target", [0.01, 0.05, 0.5])
def test_fit_recovers_the_gaussian_llr(p_target):
    # Equal-variance Gaussians: the true LLR is a * s + b exactly, so the
    # (well-specified) logistic regression converges to it at any prior.
    scores, labels, a, b = gaussian_trials(
        20000, 200000, 0.55, 0.1, 0.12, seed=4
    )
    calibration = fit_calibration(scores, labels, p_target=p_target)
    assert calibration.a == pytest.approx(a, rel=0.03)
    assert calibration.b == pytest.approx(b, rel=0.03, abs=0.1)
    assert calibration.p_target == p_target
    assert (calibration.n_target, calibration.n_nontarget) == (20000, 200000)
    llrs = calibration(scores)
    assert cllr(llrs, labels) < min_cllr(scores, labels) + 0.01


def test_fit_is_deterministic_and_ignores_trial_order():
    scores, labels, _, _ = gaussian_trials(500, 5000, 0.5, 0.1, 0.2, seed=5)
    first = fit_calibration(scores, labels)
    assert fit_calibration(scores, labels) == first
    order = np.random.default_rng(0).permutation(len(scores))
    shuffled = fit_calibration(scores[order], labels[order])
    assert shuffled.a == pytest.approx(first.a, rel=1e-9)
    assert shuffled.b == pytest.approx(first.b, rel=1e-9, abs=1e-9)


def test_fit_of_separable_scores_stays_finite(caplog):
    calibration = fit_calibration([0.1, 0.2, 0.8, 0.9], [F, F, T, T])
    assert math.isfinite(calibration.a) and calibration.a > 0
    assert "separate targets from non-targets" in caplog.text


def test_calibration_applies_to_numpy_lists_and_torch():
    calibration = LinearCalibration(a=10.0, b=-3.0, p_target=0.05)
    assert calibration([0.3, 0.5]).tolist() == [0.0, 2.0]
    assert isinstance(calibration(np.array([0.3])), np.ndarray)
    tensor = torch.tensor([0.3, 0.5], dtype=torch.float32)
    out = calibration(tensor)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.tolist() == pytest.approx([0.0, 2.0])
    assert calibration.accept(tensor, p_target=0.5).tolist() == [True, True]
    # Threshold at p = 0.05: log(19) = 2.944 -> score (2.944 + 3) / 10.
    assert calibration.score_threshold() == pytest.approx(
        (math.log(19) + 3) / 10
    )


def test_calibration_json_round_trip(tmp_path):
    scores, labels, _, _ = gaussian_trials(200, 2000, 0.5, 0.1, 0.2, seed=6)
    calibration = fit_calibration(scores, labels, p_target=0.05)
    calibration.info["scoring"] = "cosine"
    path = calibration.to_json(str(tmp_path / "sub" / "calibration.json"))
    with open(path) as fin:
        content = json.load(fin)
    assert content["a"] == calibration.a and content["b"] == calibration.b
    assert content["p_target"] == 0.05
    assert (content["n_target"], content["n_nontarget"]) == (200, 2000)
    loaded = LinearCalibration.from_json(path)
    assert loaded == calibration
    np.testing.assert_array_equal(loaded(scores), calibration(scores))
    assert loaded.info == {"scoring": "cosine"}


def test_from_json_rejects_other_files(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="is not a .*linear_calibration"):
        LinearCalibration.from_json(str(path))
    path.write_text("not json")
    with pytest.raises(ValueError, match="is not JSON"):
        LinearCalibration.from_json(str(path))


def test_score_threshold_needs_a_positive_slope():
    with pytest.raises(ValueError, match="slope"):
        LinearCalibration(a=-1.0, b=0.0, p_target=0.5).score_threshold()
    with pytest.raises(ValueError, match="no p_target"):
        LinearCalibration(a=1.0, b=0.0).threshold()


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------

FUNCTIONS = {
    "cllr": cllr,
    "min_cllr": min_cllr,
    "act_dcf": lambda s, y: act_dcf(s, y, 0.01),
    "fit_calibration": fit_calibration,
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_bad_input_is_named(name):
    function = FUNCTIONS[name]
    with pytest.raises(ValueError, match="empty"):
        function([], [])
    with pytest.raises(ValueError, match="all 3 trials are target"):
        function([0.1, 0.2, 0.3], [T, T, T])
    with pytest.raises(ValueError, match="all 2 trials are non-target"):
        function([0.1, 0.2], [F, F])
    with pytest.raises(ValueError, match="3 trials but labels has 2"):
        function([0.1, 0.2, 0.3], [T, F])
    with pytest.raises(ValueError, match="label 2"):
        function([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="trial 1 has score nan"):
        function([0.1, math.nan], [T, F])


@pytest.mark.parametrize("name", ["min_cllr", "fit_calibration"])
def test_raw_scores_must_be_finite(name):
    with pytest.raises(ValueError, match="trial 0 has score inf"):
        FUNCTIONS[name]([math.inf, 0.0], [T, F])


def test_bad_prior_and_costs():
    with pytest.raises(ValueError, match="p_target"):
        act_dcf([0.0, 1.0], [T, F], p_target=1.0)
    with pytest.raises(ValueError, match="c_miss and c_fa"):
        act_dcf([0.0, 1.0], [T, F], 0.01, c_fa=0)
    with pytest.raises(ValueError, match="p_target"):
        fit_calibration([0.0, 1.0], [T, F], p_target=0)
