"""Coverage of the paired speaker bootstrap (bench.stats), by simulation.

Pairs of systems are scored on simulated trials of 40 speakers whose score
distributions have speaker-level offsets: a target offset per speaker and
a non-target offset per speaker (a non-target trial gets the scaled sum of
its two speakers' offsets), shared by both systems, plus a smaller
speaker-level offset of each system's own and trial-level noise, partly
shared (the same recordings) and partly per system. With no true
difference the two systems have the same score distribution, so the
expected EER difference is 0 and a 95% interval should exclude 0 in about
5% of the simulated pairs.

Measured with the seeds below (600 null pairs, 250 resamples each): 3.2%
with the current weighting (a speaker's own trials weighted by its draw
count c), 0.7% with the former c squared, whose intervals were 27% wider
(1.38x the width a normal interval with the observed spread of the
differences would have, against 1.09x); 85% power for the known
difference below. Reverting the weighting in bench.stats makes
``test_false_alarm_rate_is_near_nominal`` fail.

The interval is still a little conservative, not anti-conservative: a
non-target trial is resampled with both of its speakers, so its own
trial-level noise counts twice (the "pigeonhole" bootstrap over rows and
columns overestimates variance). The excess shrinks as speaker-level
effects dominate the trial noise; with trial noise alone the intervals
were about 1.3x too wide in a side run, with this simulation's speaker
effects about 1.1x.
"""

import numpy as np
import pytest

import bench.stats as stats

N_SPEAKERS = 40
N_TARGET = 8  # target trials per speaker
N_NONTARGET = 16  # non-target trials per enrolment speaker
N_RESAMPLES = 250
N_NULL_PAIRS = 600
N_POWER_PAIRS = 200
# A target-score shift of system a that lowers its EER by about 7.7 points,
# against a spread (std) of the EER difference over simulated pairs of 2.5.
POWER_SHIFT = 0.8


def c_squared_weights(rng, enrol_index, test_index, n_speakers):
    """The former rule: every trial weighs c_enrol * c_test, c^2 for targets.

    Kept to show that the coverage test detects it.
    """
    drawn = rng.integers(n_speakers, size=n_speakers)
    counts = np.bincount(drawn, minlength=n_speakers).astype(np.float64)
    return counts[enrol_index] * counts[test_index]


def simulate_pair(rng, shift):
    """Scores of two systems on one simulated trial list.

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of the speakers' offsets, the trials and the noise.
    shift : float
        Added to system a's target scores (0: no true difference).

    Returns
    -------
    tuple
        ``scores_a``, ``scores_b``, ``labels``, ``enrol``, ``test``.
    """
    speakers = np.arange(N_SPEAKERS)
    enrol = np.repeat(speakers, N_TARGET + N_NONTARGET)
    # Impostors are drawn from the other speakers, so the test side of
    # non-target trials carries speaker effects as well.
    others = rng.integers(N_SPEAKERS - 1, size=(N_SPEAKERS, N_NONTARGET))
    others += others >= speakers[:, np.newaxis]
    own = np.repeat(speakers[:, np.newaxis], N_TARGET, axis=1)
    test = np.concatenate([own, others], axis=1).reshape(-1)
    labels = enrol == test

    def speaker_effect(scale):
        target = rng.normal(0, scale, N_SPEAKERS)
        nontarget = rng.normal(0, scale, N_SPEAKERS)
        return np.where(
            labels,
            target[enrol],
            (nontarget[enrol] + nontarget[test]) / np.sqrt(2),
        )

    shared = 2.0 * labels + speaker_effect(1.0)
    shared += rng.normal(0, 0.7, labels.size)

    def system():
        return shared + speaker_effect(0.5) + rng.normal(0, 0.7, labels.size)

    scores_a = system() + shift * labels
    scores_b = system()
    return scores_a, scores_b, labels, enrol, test


def simulate(n_pairs, shift, seed, weights_fn=None):
    """Bootstraps ``n_pairs`` simulated pairs of systems.

    Arguments
    ---------
    n_pairs : int
        Number of simulated pairs, each with new speakers and trials.
    shift : float
        True target-score advantage of system a.
    seed : int
        Seed of the simulation; the bootstrap of pair ``k`` uses seed ``k``.
    weights_fn : callable, optional
        Replaces ``bench.stats._resample_weights`` for these runs.

    Returns
    -------
    dict
        ``rejected`` (share of 95% intervals excluding 0), ``width`` (mean
        interval width), ``delta_mean`` and ``delta_std`` (of the observed
        EER differences over pairs).
    """
    rng = np.random.default_rng(seed)
    results = []
    with pytest.MonkeyPatch.context() as patch:
        if weights_fn is not None:
            patch.setattr(stats, "_resample_weights", weights_fn)
        for index in range(n_pairs):
            scores_a, scores_b, labels, enrol, test = simulate_pair(rng, shift)
            results.append(
                stats.paired_speaker_bootstrap(
                    scores_a,
                    scores_b,
                    labels,
                    enrol,
                    test,
                    n_resamples=N_RESAMPLES,
                    seed=index,
                )
            )
    deltas = np.array([result["delta"] for result in results])
    return {
        "rejected": float(
            np.mean([r["ci_low"] > 0 or r["ci_high"] < 0 for r in results])
        ),
        "width": float(np.mean([r["ci_high"] - r["ci_low"] for r in results])),
        "delta_mean": float(deltas.mean()),
        "delta_std": float(deltas.std(ddof=1)),
    }


@pytest.fixture(scope="module")
def null_run():
    """The current weighting on pairs without a true difference."""
    return simulate(N_NULL_PAIRS, 0.0, seed=0)


def test_false_alarm_rate_is_near_nominal(null_run):
    print(f"false-alarm rate, c weighting: {null_run}")
    assert 0.02 <= null_run["rejected"] <= 0.10
    # Systems with the same distribution: the differences centre on 0.
    assert abs(null_run["delta_mean"]) < 0.5


def test_c_squared_weighting_is_too_conservative(null_run):
    old = simulate(N_NULL_PAIRS, 0.0, seed=0, weights_fn=c_squared_weights)
    print(f"false-alarm rate, c squared weighting: {old}")
    assert old["rejected"] < 0.02
    assert old["width"] > 1.15 * null_run["width"]


def test_power_with_a_known_difference(null_run):
    run = simulate(N_POWER_PAIRS, POWER_SHIFT, seed=1)
    print(f"power at a target shift of {POWER_SHIFT}: {run}")
    assert run["delta_mean"] < -2.0
    assert run["rejected"] >= 0.6
    assert run["rejected"] >= 5 * null_run["rejected"]
