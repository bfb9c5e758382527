"""Tables and verdicts recomputed from committed per-trial scores alone.

A benchmark writes the scores of every (system, seed, condition) on one
trial list to a ``.npz`` file (:mod:`bench.scores`). This module turns such
a file back into what the READMEs quote, with no model, corpus or run
folder: the EER and minDCF of every run, their mean ± std over seeds, and
the paired speaker bootstrap (:func:`bench.stats.paired_speaker_bootstrap`)
of chosen (system, baseline) pairs per condition.

Run from the repository root::

    python -m bench.verdicts bench/results/csc_scores.npz \\
        --pairs aam_softmax_csc:aam_softmax csc:simclr --out verdicts.json

Without ``--pairs`` every system is compared with ``--baseline``. Several
files (the folds of a cross-validation, each with its own test speakers)
are pooled into one trial list first (:func:`bench.scores.pool_trial_scores`),
so the verdict covers every fold's speakers; ``--pooled_scores`` keeps the
pooled file::

    python -m bench.verdicts \\
        results/bench/folds/fold*/objectives_scores.npz \\
        --pairs hybrid:aam_softmax \\
        --pooled_scores bench/results/objectives_folds_scores.npz \\
        --out bench/results/objectives_folds.json
"""

import argparse
import json
import sys

import numpy as np

from bench.scores import load_trial_scores, pool_trial_scores, save_trial_scores
from bench.stats import (
    format_spread,
    format_verdict,
    paired_speaker_bootstrap,
    seed_summary,
)
from speechbrain_ext.scoring import compute_eer_mindcf

__all__ = ["recompute", "run_metrics", "summary_table"]


def _runs(scores):
    """system -> condition -> {seed: scores}, in the file's order."""
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
    for system, by_condition in _runs(scores).items():
        for condition, by_seed in by_condition.items():
            for seed, values in by_seed.items():
                eer, min_dcf, _ = compute_eer_mindcf(values, labels)
                metrics.setdefault(system, {}).setdefault(condition, {})[
                    seed
                ] = {"EER": 100 * float(eer), "minDCF": float(min_dcf)}
    return metrics


def summary_table(summary, conditions, labels=None):
    """Markdown: one row per system, EER % mean ± std [min-max] per
    condition."""
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


def recompute(path, pairs, n_resamples=1000, seed=0):
    """Summary and paired verdicts of a scores file (or pooled files).

    Arguments
    ---------
    path : str or list of str
        A file of :func:`bench.scores.save_trial_scores`, or several, pooled
        by :func:`bench.scores.pool_trial_scores`.
    pairs : list of tuple
        ``(system, baseline)`` pairs to test in every condition both have,
        on the seeds both have.
    n_resamples : int
        Bootstrap resamples.
    seed : int
        Bootstrap seed.

    Returns
    -------
    dict
        ``metrics`` (see :func:`run_metrics`), ``summary`` (system ->
        condition -> ``{"EER", "minDCF"}`` seed summaries, with ``"n"``
        seeds), ``paired`` (``"<system>_vs_<baseline>@<condition>"`` ->
        bootstrap result with its ``text``) and ``conditions``.
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
    runs = _runs(scores)
    conditions = list(dict.fromkeys(c for by_c in runs.values() for c in by_c))
    paired = {}
    for system, baseline in pairs:
        if system not in runs or baseline not in runs:
            continue
        for condition in conditions:
            a = runs[system].get(condition, {})
            b = runs[baseline].get(condition, {})
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            result = paired_speaker_bootstrap(
                np.stack([a[s] for s in seeds]),
                np.stack([b[s] for s in seeds]),
                labels,
                trials["enrol_speaker"],
                trials["test_speaker"],
                n_resamples=n_resamples,
                seed=seed,
            )
            result["seeds"] = seeds
            result["text"] = format_verdict(result, system, baseline)
            paired[f"{system}_vs_{baseline}@{condition}"] = result
    return {
        "metrics": metrics,
        "summary": summary,
        "paired": paired,
        "conditions": conditions,
        "n_trials": int(labels.size),
        "n_speakers": len(
            set(trials["enrol_speaker"]) | set(trials["test_speaker"])
        ),
    }


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "scores",
        nargs="+",
        help="a .npz of bench.scores, or several (folds) to pool",
    )
    parser.add_argument(
        "--pooled_scores",
        default=None,
        help="write the pooled trials and scores to this .npz",
    )
    parser.add_argument(
        "--pairs",
        nargs="*",
        default=None,
        help="system:baseline pairs (default: each system vs --baseline)",
    )
    parser.add_argument("--baseline", default="aam_softmax")
    parser.add_argument("--n_resamples", type=int, default=1000)
    parser.add_argument("--out", default=None, help="JSON to write")
    return parser.parse_args(argv)


def main(argv=None):
    """Prints the table and verdicts; writes them as JSON if asked."""
    args = parse_args(argv)
    paths = args.scores if len(args.scores) > 1 else args.scores[0]
    if args.pooled_scores:
        trials, pooled = pool_trial_scores(args.scores)
        save_trial_scores(args.pooled_scores, trials, pooled)
    if args.pairs is None:
        if isinstance(paths, list):
            _, scores = pool_trial_scores(paths)
        else:
            _, scores = load_trial_scores(paths)
        systems = _runs(scores)
        pairs = [(s, args.baseline) for s in systems if s != args.baseline]
    else:
        pairs = [tuple(pair.split(":")) for pair in args.pairs]
    result = recompute(paths, pairs, args.n_resamples)
    print(summary_table(result["summary"], result["conditions"]))
    for name, verdict in result["paired"].items():
        print(f"- {verdict['text']} [{name.split('@')[1]}]")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fout:
            json.dump(
                {
                    "command": " ".join(
                        ["python -m bench.verdicts", *sys.argv[1:]]
                    ),
                    **result,
                },
                fout,
                indent=2,
            )


if __name__ == "__main__":
    main()
