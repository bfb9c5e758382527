"""Tests of the speaker bootstrap (bench.stats) and learning curves."""

import os

import numpy as np
import pytest

from bench.curves import (
    curve_points,
    curves_table,
    plot_learning_curves,
    read_learning_curve,
)
from bench.stats import format_verdict, paired_speaker_bootstrap, weighted_eer
from speechbrain_ext.scoring.metrics import compute_eer_mindcf

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def brute_force_eer(scores, labels, weights):
    """EER (%) by looping over every threshold, for reference."""
    scores = np.asarray(scores, float)
    labels = np.asarray(labels, bool)
    weights = np.asarray(weights, float)
    thresholds = list(np.unique(scores)) + [np.inf]
    total_target = weights[labels].sum()
    total_nontarget = weights[~labels].sum()
    points = []
    for threshold in thresholds:
        accepted = scores >= threshold
        p_miss = weights[labels & ~accepted].sum() / total_target
        p_fa = weights[~labels & accepted].sum() / total_nontarget
        points.append((p_miss, p_fa))
    for index, (p_miss, p_fa) in enumerate(points):
        if p_miss >= p_fa:
            break
    if p_miss == p_fa:
        return 100 * p_miss
    before_miss, before_fa = points[index - 1]
    gap_before = before_miss - before_fa
    fraction = -gap_before / ((p_miss - p_fa) - gap_before)
    return 100 * (before_miss + fraction * (p_miss - before_miss))


def random_trials(rng, n_trials):
    """Scores with ties (one decimal) and labels with both classes."""
    labels = rng.random(n_trials) < 0.3
    labels[:2] = [True, False]
    scores = np.round(rng.normal(size=n_trials) + labels, 1)
    return scores, labels


@pytest.mark.parametrize("trial", range(20))
def test_weighted_eer_with_unit_weights_is_brute_force_eer(trial):
    rng = np.random.default_rng(trial)
    scores, labels = random_trials(rng, int(rng.integers(4, 60)))
    ones = np.ones(scores.size)
    eer = weighted_eer(scores, labels, ones)
    assert eer == pytest.approx(brute_force_eer(scores, labels, ones))
    assert eer == pytest.approx(100 * compute_eer_mindcf(scores, labels)[0])


@pytest.mark.parametrize("trial", range(10))
def test_integer_weights_count_as_repeated_trials(trial):
    rng = np.random.default_rng(100 + trial)
    scores, labels = random_trials(rng, 40)
    weights = rng.integers(0, 4, size=40)
    weights[:2] = 1  # keep both classes
    repeated = weighted_eer(
        np.repeat(scores, weights),
        np.repeat(labels, weights),
        np.ones(weights.sum()),
    )
    eer = weighted_eer(scores, labels, weights)
    assert eer == pytest.approx(repeated)
    assert eer == pytest.approx(brute_force_eer(scores, labels, weights))


def test_weighted_eer_drops_with_zero_weight_on_errors():
    rng = np.random.default_rng(0)
    scores, labels = random_trials(rng, 200)
    ones = np.ones(scores.size)
    full = weighted_eer(scores, labels, ones)
    assert full > 10

    # Non-targets scoring above the weakest target cause the false alarms.
    impostors = ~labels & (scores >= scores[labels].min())
    assert weighted_eer(scores, labels, np.where(impostors, 0, 1)) == 0.0

    top_impostors = ~labels & (scores >= np.quantile(scores[~labels], 0.8))
    lowered = weighted_eer(scores, labels, np.where(top_impostors, 0, 1))
    assert 0 < lowered < full
    assert weighted_eer(scores, labels, 3 * ones) == pytest.approx(full)


def test_weighted_eer_rejects_bad_weights():
    with pytest.raises(ValueError, match="non-negative"):
        weighted_eer([0.1, 0.9], [0, 1], [1, -1])
    with pytest.raises(ValueError, match="zero total weight"):
        weighted_eer([0.1, 0.9], [0, 1], [1, 0])
    with pytest.raises(ValueError, match="weights has shape"):
        weighted_eer([0.1, 0.9], [0, 1], [1, 1, 1])


def speaker_trials(n_speakers=30, n_target=6, n_nontarget=12, seed=0):
    """Trials where every speaker has target and non-target trials."""
    rng = np.random.default_rng(seed)
    speakers = np.array([f"id{index:03d}" for index in range(n_speakers)])
    enrol, test, labels = [], [], []
    for index, speaker in enumerate(speakers):
        others = np.delete(speakers, index)
        impostors = rng.choice(
            others, size=n_nontarget, replace=n_nontarget > others.size
        )
        enrol += [speaker] * (n_target + n_nontarget)
        test += [speaker] * n_target + list(impostors)
        labels += [True] * n_target + [False] * n_nontarget
    labels = np.array(labels)
    # A per-speaker offset makes trials of one speaker correlated.
    speaker_offset = dict(zip(speakers, rng.normal(0, 0.5, n_speakers)))
    offset = np.array([speaker_offset[s] for s in enrol])
    return np.array(enrol), np.array(test), labels, offset, rng


def test_bootstrap_finds_a_clear_improvement():
    enrol, test, labels, offset, rng = speaker_trials()
    scores_b = rng.normal(size=(3, labels.size)) + offset + 1.0 * labels
    scores_a = scores_b + 1.5 * labels

    result = paired_speaker_bootstrap(
        scores_a, scores_b, labels, enrol, test, n_resamples=300
    )
    assert result["verdict"] == "better"
    assert result["ci_low"] <= result["delta"] <= result["ci_high"] < 0
    assert result["eer_a"] < result["eer_b"]
    assert result["delta"] == pytest.approx(result["eer_a"] - result["eer_b"])
    assert result["p_value"] < 0.01
    assert result["n_speakers"] == 30
    assert result["n_resamples"] == 300
    assert result["n_skipped"] == 0

    mean_b = np.mean(
        [weighted_eer(s, labels, np.ones(labels.size)) for s in scores_b]
    )
    assert result["eer_b"] == pytest.approx(mean_b)

    reverse = paired_speaker_bootstrap(
        scores_b, scores_a, labels, enrol, test, n_resamples=300
    )
    assert reverse["verdict"] == "worse"
    assert reverse["ci_low"] > 0


def test_bootstrap_sees_no_difference_between_equal_noise():
    enrol, test, labels, offset, rng = speaker_trials(seed=1)
    base = rng.normal(size=(3, labels.size)) + offset + 1.0 * labels
    scores_a = base + rng.normal(0, 0.05, size=base.shape)
    scores_b = base + rng.normal(0, 0.05, size=base.shape)

    result = paired_speaker_bootstrap(
        scores_a, scores_b, labels, enrol, test, n_resamples=300
    )
    assert result["verdict"] == "no significant difference"
    assert result["ci_low"] < 0 < result["ci_high"]
    assert result["p_value"] > 0.05
    assert abs(result["delta"]) < 1.0


def test_bootstrap_is_reproducible_for_a_seed():
    enrol, test, labels, offset, rng = speaker_trials(n_speakers=12)
    scores_b = rng.normal(size=labels.size) + offset + labels
    scores_a = scores_b + rng.normal(0, 0.3, size=labels.size)
    run = dict(
        scores_a=scores_a,
        scores_b=scores_b,
        labels=labels,
        enrol_speakers=enrol,
        test_speakers=test,
        n_resamples=100,
    )
    first = paired_speaker_bootstrap(**run, seed=7)
    assert paired_speaker_bootstrap(**run, seed=7) == first
    other = paired_speaker_bootstrap(**run, seed=8)
    assert (other["ci_low"], other["ci_high"]) != (
        first["ci_low"],
        first["ci_high"],
    )
    # One-dimensional scores are one seed.
    assert first["eer_a"] == pytest.approx(
        weighted_eer(scores_a, labels, np.ones(labels.size))
    )


def test_bootstrap_skips_resamples_without_targets():
    # Only speaker "a" has target trials, so draws without it are unusable.
    enrol = np.array(["a", "a", "a", "b", "c", "b"])
    test = np.array(["a", "a", "b", "c", "a", "a"])
    labels = np.array([1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.85, 0.1])
    result = paired_speaker_bootstrap(
        scores, scores - 0.1 * labels, labels, enrol, test, n_resamples=200
    )
    assert result["n_speakers"] == 3
    assert 0 < result["n_skipped"] < 200


def test_bootstrap_rejects_mismatched_shapes():
    enrol, test, labels, _, rng = speaker_trials(n_speakers=5)
    scores = rng.normal(size=(2, labels.size))
    with pytest.raises(ValueError, match="scores_b has .* trials per seed"):
        paired_speaker_bootstrap(scores, scores[:, :-1], labels, enrol, test)
    with pytest.raises(ValueError, match="scores_a must have shape"):
        paired_speaker_bootstrap(scores[None], scores, labels, enrol, test)
    with pytest.raises(ValueError, match="test_speakers must have shape"):
        paired_speaker_bootstrap(scores, scores, labels, enrol, test[:-1])
    with pytest.raises(ValueError, match="scores_a has .* but labels has"):
        paired_speaker_bootstrap(scores, scores, labels[1:], enrol, test)
    with pytest.raises(ValueError, match="confidence"):
        paired_speaker_bootstrap(
            scores, scores, labels, enrol, test, confidence=95
        )


def test_resample_weights_count_a_speakers_own_trials_once_per_copy():
    from bench.stats import _resample_weights

    n_speakers = 6
    enrol = np.array([0, 0, 1, 2, 3, 3, 5, 4])
    test = np.array([0, 1, 1, 3, 3, 0, 5, 2])
    repeated_target = False  # c and c squared differ only for c >= 2
    for seed in range(20):
        counts = np.bincount(
            np.random.default_rng(seed).integers(n_speakers, size=n_speakers),
            minlength=n_speakers,
        )
        weights = _resample_weights(
            np.random.default_rng(seed), enrol, test, n_speakers
        )
        expected = [
            counts[e] if e == t else counts[e] * counts[t]
            for e, t in zip(enrol, test)
        ]
        assert weights.tolist() == expected
        repeated_target |= bool((counts[enrol[enrol == test]] >= 2).any())
    assert repeated_target


def test_format_verdict():
    result = {
        "eer_a": 12.1,
        "eer_b": 13.4,
        "delta": -1.3,
        "ci_low": -2.1,
        "ci_high": -0.4,
        "confidence": 0.95,
        "verdict": "better",
    }
    assert format_verdict(result, "hybrid", "aam_softmax") == (
        "hybrid vs aam_softmax: 12.10% vs 13.40% "
        "(delta -1.30, 95% CI [-2.10, -0.40]): better at 95%"
    )
    result.update(confidence=0.9, verdict="no significant difference")
    assert format_verdict(result, "a", "b").endswith(
        "90% CI [-2.10, -0.40]): no significant difference at 90%"
    )


LOG = """\
epoch: 1, lr: 2.00e-03 - train loss: 1.23, train loss_mi: 3.4 - valid EER: 25.31, valid minDCF: 9.87e-01
epoch: 2, lr: 2.00e-03 - train loss: 1.10 - valid EER: 30.00, valid minDCF: 9.90e-01

epoch: 2, lr: 1.00e-03 - train loss: 9.50e-01, train loss_mi: 2.1 - valid EER: 20.50, valid minDCF: 8.76e-01
epoch: 3, lr: 5.00e-04 - train loss: 8.00e-01
epoch: 4, lr: 2.50e-04 - train loss: 7.00e-01 - valid EER: 18.00, valid minDCF: 8.00e-01
"""  # noqa: E501


def test_read_learning_curve_keeps_last_of_a_resumed_epoch(tmp_path):
    path = tmp_path / "train_log.txt"
    path.write_text(LOG)
    records = read_learning_curve(str(path))

    assert [record["epoch"] for record in records] == [1, 2, 4]
    assert records[0] == {
        "epoch": 1,
        "train": {"loss": 1.23, "loss_mi": 3.4},
        "valid": {"EER": 25.31, "minDCF": 0.987},
    }
    # The resumed run's line replaces the first epoch 2.
    assert records[1]["train"] == {"loss": 0.95, "loss_mi": 2.1}
    assert records[1]["valid"]["EER"] == 20.5
    assert curve_points(records) == [(1, 25.31), (2, 20.5), (4, 18.0)]

    every_epoch = read_learning_curve(str(path), key=None)
    assert [record["epoch"] for record in every_epoch] == [1, 2, 3, 4]
    assert every_epoch[2]["valid"] == {}
    assert curve_points(every_epoch, "loss", "train")[2] == (3, 0.8)


def test_read_learning_curve_of_a_speechbrain_logger(tmp_path):
    from speechbrain.utils.train_logger import FileTrainLogger

    path = str(tmp_path / "train_log.txt")
    logger = FileTrainLogger(path)
    for epoch, eer in [(1, 31.25), (2, 0.5)]:
        logger.log_stats(
            {"epoch": epoch, "lr": 0.002},
            train_stats={"loss": 12.5 / epoch},
            valid_stats={"EER": eer, "minDCF": 0.98},
            test_stats={"EER": eer + 1},
            verbose=False,
        )
    records = read_learning_curve(path)
    assert curve_points(records) == [(1, 31.25), (2, 0.5)]
    assert records[1]["train"] == {"loss": 6.25}
    assert records[1]["test"] == {"EER": 1.5}


def test_read_learning_curve_errors_name_file_and_line(tmp_path):
    missing = str(tmp_path / "nowhere" / "train_log.txt")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_learning_curve(missing)

    path = tmp_path / "train_log.txt"
    lines = LOG.splitlines()
    lines.insert(2, "epoch: 3 - train loss: not-a-number")
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError) as error:
        read_learning_curve(str(path))
    assert str(path) in str(error.value)
    assert "line 3" in str(error.value)
    assert "not-a-number" in str(error.value)

    path.write_text("Training started\n")
    with pytest.raises(ValueError, match="line 1"):
        read_learning_curve(str(path))


def learning_curves():
    """Two systems x three seeds, one seed of each stopping early."""
    rng = np.random.default_rng(0)
    curves = {}
    for system, floor in [("aam_softmax", 14.0), ("hybrid", 12.0)]:
        curves[system] = {}
        for seed in (1, 2, 3):
            epochs = range(1, 6 if seed < 3 else 4)
            curves[system][seed] = [
                (epoch, floor + 20 / epoch + rng.normal(0, 0.5))
                for epoch in epochs
            ]
    return curves


def test_plot_learning_curves_writes_a_png(tmp_path):
    path = str(tmp_path / "plots" / "curves.png")
    returned = plot_learning_curves(
        learning_curves(), path, "EER over epochs, 3 seeds"
    )
    assert returned == path
    with open(path, "rb") as image:
        content = image.read()
    assert content.startswith(PNG_SIGNATURE)
    assert len(content) > 5000
    # The temporary file was renamed, not left behind.
    assert os.listdir(tmp_path / "plots") == ["curves.png"]


def test_plot_learning_curves_rejects_empty_input(tmp_path):
    path = str(tmp_path / "curves.png")
    with pytest.raises(ValueError, match="empty"):
        plot_learning_curves({}, path, "nothing")
    with pytest.raises(ValueError, match="hybrid"):
        plot_learning_curves({"hybrid": {1: []}}, path, "nothing")
    assert not os.path.exists(path)


def test_curves_table_has_mean_and_std_per_epoch():
    curves = {
        "aam": {1: [(1, 30.0), (2, 20.0)], 2: [(1, 32.0), (2, 24.0)]},
        "hybrid": {1: [(2, 18.0)]},
    }
    assert curves_table(curves, digits=2).splitlines() == [
        "| system | epoch 1 | epoch 2 |",
        "|---|---|---|",
        "| aam | 31.00 ± 1.41 | 22.00 ± 2.83 |",
        "| hybrid | – | 18.00 |",
    ]
    table = curves_table(learning_curves())
    assert table.count("\n") == 3
    assert "epoch 5" in table
