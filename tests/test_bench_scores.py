"""Tests of the per-trial score files (bench.scores)."""

import numpy as np
import pytest

from bench.scores import (
    TRIAL_FIELDS,
    load_trial_scores,
    pool_trial_scores,
    save_trial_scores,
    score_key,
)


def make_trials(n_trials=50, seed=0):
    """Random trials as a mapping of arrays, with int speaker ids."""
    rng = np.random.default_rng(seed)
    enrol_speaker = rng.integers(10, size=n_trials)
    labels = rng.random(n_trials) < 0.3
    test_speaker = np.where(labels, enrol_speaker, (enrol_speaker + 1) % 10)
    return {
        "enrol": [f"id{s}/utt{i}" for i, s in enumerate(enrol_speaker)],
        "test": [f"id{s}/utt{i + 100}" for i, s in enumerate(test_speaker)],
        "label": labels.astype(int),
        "enrol_speaker": enrol_speaker,
        "test_speaker": test_speaker,
    }


def test_round_trip_keeps_trials_and_scores_to_float16(tmp_path):
    trials = make_trials()
    rng = np.random.default_rng(1)
    scores = {
        ("hybrid", 0, "clean"): rng.normal(size=50),
        ("hybrid", 1, "clean"): rng.normal(size=50),
        "aam_softmax/0/snr5": rng.uniform(-1, 1, size=50),
    }
    path = tmp_path / "scores.npz"
    save_trial_scores(str(path), trials, scores)
    loaded_trials, loaded_scores = load_trial_scores(path)

    assert set(loaded_trials) == set(TRIAL_FIELDS)
    assert loaded_trials["enrol"].tolist() == trials["enrol"]
    assert loaded_trials["test"].tolist() == trials["test"]
    assert loaded_trials["label"].dtype == np.bool_
    assert (loaded_trials["label"] == (trials["label"] == 1)).all()
    # Speaker ids come back as strings, as the bootstrap compares them.
    assert loaded_trials["enrol_speaker"].tolist() == [
        str(s) for s in trials["enrol_speaker"]
    ]
    assert loaded_trials["test_speaker"].tolist() == [
        str(s) for s in trials["test_speaker"]
    ]
    assert list(loaded_scores) == [
        "hybrid/0/clean",
        "hybrid/1/clean",
        "aam_softmax/0/snr5",
    ]
    for key, values in scores.items():
        name = key if isinstance(key, str) else score_key(*key)
        loaded = loaded_scores[name]
        assert loaded.dtype == np.float32
        assert (loaded == np.asarray(values).astype(np.float16)).all()
        np.testing.assert_allclose(loaded, values, rtol=1e-3, atol=1e-4)


def test_trials_as_rows_equal_trials_as_columns(tmp_path):
    trials = make_trials(n_trials=5)
    rows = list(zip(*(trials[field] for field in TRIAL_FIELDS)))
    scores = {"s/0/c": np.linspace(-1, 1, 5)}
    save_trial_scores(str(tmp_path / "rows.npz"), rows, scores)
    save_trial_scores(str(tmp_path / "columns.npz"), trials, scores)
    from_rows = load_trial_scores(tmp_path / "rows.npz")[0]
    from_columns = load_trial_scores(tmp_path / "columns.npz")[0]
    for field in TRIAL_FIELDS:
        assert (from_rows[field] == from_columns[field]).all()


def test_file_is_compressed(tmp_path):
    # Repeated ids and low-entropy scores should shrink well below the
    # raw size of the arrays.
    n_trials = 20000
    trials = {
        "enrol": ["spk/utt"] * n_trials,
        "test": ["spk/utt"] * n_trials,
        "label": np.zeros(n_trials, bool),
        "enrol_speaker": ["spk"] * n_trials,
        "test_speaker": ["spk"] * n_trials,
    }
    path = tmp_path / "scores.npz"
    save_trial_scores(str(path), trials, {"s/0/c": np.zeros(n_trials)})
    raw = n_trials * (2 * 7 * 4 + 2 * 3 * 4 + 1 + 2)
    assert path.stat().st_size < raw / 20


@pytest.mark.parametrize(
    "key, message",
    [
        (("sys", 0), "not a \\(system, seed, condition\\) tuple"),
        ("sys/0", "not 'system/seed/condition'"),
        (("a/b", 0, "clean"), "system must be non-empty and without '/'"),
        (("sys", 0, ""), "condition must be non-empty"),
    ],
)
def test_rejects_malformed_keys(tmp_path, key, message):
    with pytest.raises(ValueError, match=message):
        save_trial_scores(
            str(tmp_path / "x.npz"), make_trials(), {key: np.zeros(50)}
        )


def test_rejects_bad_scores_and_trials(tmp_path):
    path = str(tmp_path / "x.npz")
    trials = make_trials()
    with pytest.raises(ValueError, match="have shape \\(49,\\)"):
        save_trial_scores(path, trials, {"s/0/c": np.zeros(49)})
    with pytest.raises(ValueError, match="not all finite"):
        save_trial_scores(path, trials, {"s/0/c": np.full(50, np.nan)})
    with pytest.raises(ValueError, match="float16's range"):
        save_trial_scores(path, trials, {"s/0/c": np.full(50, 1e6)})
    with pytest.raises(ValueError, match="two score keys"):
        save_trial_scores(
            path, trials, {"s/0/c": np.zeros(50), ("s", 0, "c"): np.ones(50)}
        )
    with pytest.raises(ValueError, match="scores is empty"):
        save_trial_scores(path, trials, {})
    with pytest.raises(ValueError, match="lack test_speaker"):
        save_trial_scores(
            path,
            {k: v for k, v in trials.items() if k != "test_speaker"},
            {"s/0/c": np.zeros(50)},
        )
    with pytest.raises(ValueError, match="one length"):
        save_trial_scores(
            path, dict(trials, test=trials["test"][:-1]), {"s/0/c": [0] * 50}
        )
    with pytest.raises(ValueError, match="labels must be bool or 0/1"):
        save_trial_scores(
            path, dict(trials, label=np.full(50, 2)), {"s/0/c": [0] * 50}
        )


def test_load_rejects_other_npz_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, scores=np.zeros(3))
    with pytest.raises(ValueError, match="format version None"):
        load_trial_scores(path)


def test_pooled_folds_concatenate_and_keep_common_runs(tmp_path):
    for fold, (a, b) in enumerate((("a", "b"), ("c", "d"))):
        scores = {("hybrid", 1, "clean"): [0.9, 0.1 * fold]}
        if fold == 0:
            scores[("supcon", 1, "clean")] = [0.2, 0.3]
        save_trial_scores(
            str(tmp_path / f"fold{fold}.npz"),
            [(f"{a}/1", f"{a}/2", 1, a, a), (f"{a}/1", f"{b}/1", 0, a, b)],
            scores,
        )
    paths = [str(tmp_path / f"fold{k}.npz") for k in (0, 1)]
    trials, scores = pool_trial_scores(paths)
    assert trials["enrol_speaker"].tolist() == ["a", "a", "c", "c"]
    assert trials["label"].tolist() == [True, False, True, False]
    assert list(scores) == ["hybrid/1/clean"]  # supcon is in fold 0 only
    np.testing.assert_allclose(
        scores["hybrid/1/clean"], [0.9, 0, 0.9, 0.1], atol=1e-3
    )


def test_pooling_refuses_folds_that_share_a_speaker(tmp_path):
    for fold in (0, 1):
        save_trial_scores(
            str(tmp_path / f"fold{fold}.npz"),
            [("a/1", "a/2", 1, "a", "a")],
            {("hybrid", 1, "clean"): [0.5]},
        )
    with pytest.raises(ValueError, match="speaker a is tested in"):
        pool_trial_scores([str(tmp_path / f"fold{k}.npz") for k in (0, 1)])
