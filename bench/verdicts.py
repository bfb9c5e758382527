"""Tables and verdicts recomputed from committed per-trial scores alone.

A benchmark writes the scores of every (system, seed, condition) on one
trial list to a ``.npz`` file (:mod:`bench.scores`). This script turns such
a file back into what the READMEs quote (:func:`bench.scores.recompute`),
with no model, corpus or run folder: the EER and minDCF of every run, their
mean ± std over seeds, and the paired speaker bootstrap
(:func:`bench.stats.paired_speaker_bootstrap`) of chosen (system, baseline)
pairs per condition.

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

from bench.machine import write_report
from bench.scores import (
    pool_trial_scores,
    recompute,
    save_trial_scores,
    summary_table,
)


def markdown(result):
    """The summary table and one line per paired verdict."""
    lines = [summary_table(result["summary"], result["conditions"])]
    lines += [
        f"- {verdict['text']} [{name.split('@')[1]}]"
        for name, verdict in result["paired"].items()
    ]
    return "\n".join(lines)


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
    pairs = args.pairs and [tuple(pair.split(":")) for pair in args.pairs]
    result = recompute(paths, pairs, args.n_resamples, args.baseline)
    if not args.out:
        print(markdown(result))
        return result
    return write_report(result, markdown, args.out, "bench.verdicts", argv)


if __name__ == "__main__":
    main()
