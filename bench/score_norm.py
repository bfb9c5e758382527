"""Benchmark: cosine scoring against mean subtraction + AS-norm, paired.

One exported model scores the same prepared trials twice with
``recipes/CNCeleb/verify.py`` (run as the command a user types): plain
cosine, and ``--mean_norm --score_norm as-norm`` (cohort: a few training
utterances per training speaker, ``--cohort_per_speaker``; top ``--top_n``
cohort scores per side). The per-trial scores of the two are compared by a
paired bootstrap over the test speakers
(:func:`bench.stats.paired_speaker_bootstrap`), since trials that share a
speaker are not independent.

Run from the repository root, e.g. on the seed-1 AAM-softmax model of
``bench/objectives.py``::

    python -m bench.score_norm \\
        --model results/bench/objectives/runs/aam_softmax/1/export \\
        --data_folder results/bench/objectives/corpus_allspk_40utt \\
        --prep_folder results/bench/objectives/prepared \\
        --out results/bench/score_norm.json
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from bench.machine import machine_info, write_report
from bench.runs import RECIPE, trial_speakers
from bench.stats import format_verdict, paired_speaker_bootstrap
from speechbrain_ext.evaluation.verification import read_trial_file

SYSTEMS = {
    "cosine": [],
    "as-norm": ["--mean_norm", "--score_norm", "as-norm"],
}


def read_scores(path, trials):
    """Per-trial scores of a verify.py scores file, checked against trials.

    Arguments
    ---------
    path : str
        ``scores_<condition>.txt``: ``enrol test label score`` per line, in
        the trial list's order (ids may hold spaces, so lines are matched
        to the trials in order, not split into fields).
    trials : list of tuple
        ``(enrol, test, label)`` in the order of the file.

    Returns
    -------
    numpy.ndarray
        One score per trial.

    Raises
    ------
    ValueError
        Naming the line that does not hold the trial expected there.

    Example
    -------
    >>> path = getfixture("tmpdir") / "s.txt"
    >>> path.write("a b 1 0.5\\na zoom in 0 -0.25\\n")
    >>> read_scores(str(path), [("a", "b", 1), ("a", "zoom in", 0)])
    array([ 0.5 , -0.25])
    """
    scores = []
    with open(path, encoding="utf-8") as fin:
        lines = fin.read().splitlines()
    if len(lines) != len(trials):
        raise ValueError(
            f"{path}: {len(lines)} scores for {len(trials)} trials"
        )
    for number, (line, (enrol, test, label)) in enumerate(
        zip(lines, trials), start=1
    ):
        if not line.startswith(f"{enrol} {test} {label} "):
            raise ValueError(
                f"{path}:{number}: expected trial {enrol} {test}, got {line!r}"
            )
        scores.append(float(line.rsplit(" ", 1)[1]))
    return np.array(scores)


def run_verify(args, name, extra):
    """Runs verify.py for one system; its summary and scores file."""
    output = os.path.join(os.path.dirname(os.path.abspath(args.out)), name)
    command = [
        sys.executable,
        "verify.py",
        "--model",
        os.path.abspath(args.model),
        "--data_folder",
        os.path.abspath(args.data_folder),
        "--prep_folder",
        os.path.abspath(args.prep_folder),
        "--output_folder",
        output,
        "--name",
        name,
        "--threads",
        str(args.threads),
        "--cohort_per_speaker",
        str(args.cohort_per_speaker),
        "--top_n",
        str(args.top_n),
        *extra,
    ]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=RECIPE, check=True)
    with open(os.path.join(output, "summary.json"), encoding="utf-8") as fin:
        summary = json.load(fin)
    (result,) = summary["results"].values()
    scores = [n for n in os.listdir(output) if n.startswith("scores_")]
    return result, os.path.join(output, scores[0])


def markdown(report):
    """The report's table."""
    lines = [
        "| scoring | EER (%) | minDCF (p=0.01) | trials |",
        "| --- | --- | --- | --- |",
    ]
    for name, result in report["systems"].items():
        lines.append(
            f"| {name} | {100 * result['EER']:.2f} | "
            f"{result['minDCF']:.3f} | {result['n_trials']} |"
        )
    return "\n".join(lines) + "\n\n" + report["paired"]["text"] + "\n"


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--prep_folder", required=True)
    parser.add_argument("--out", default="results/bench/score_norm.json")
    parser.add_argument("--cohort_per_speaker", type=int, default=3)
    parser.add_argument("--top_n", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n_resamples", type=int, default=1000)
    return parser.parse_args(argv)


def main(argv=None):
    """Runs both scorings, the paired test, and writes the report."""
    args = parse_args(argv)
    trials = read_trial_file(os.path.join(args.prep_folder, "trials.csv"))
    labels, enrol, test = trial_speakers(args.prep_folder)
    systems, scores = {}, {}
    for name, extra in SYSTEMS.items():
        systems[name], path = run_verify(args, name, extra)
        scores[name] = read_scores(path, trials)
    paired = paired_speaker_bootstrap(
        scores["as-norm"],
        scores["cosine"],
        labels,
        enrol,
        test,
        n_resamples=args.n_resamples,
    )
    paired = {
        key: value.item() if isinstance(value, np.generic) else value
        for key, value in paired.items()
    }
    paired["text"] = format_verdict(paired, "as-norm", "cosine")
    report = {
        "model": os.path.abspath(args.model),
        "cohort_per_speaker": args.cohort_per_speaker,
        "top_n": args.top_n,
        "systems": systems,
        "paired": paired,
        "machine": machine_info("cpu"),
    }
    return write_report(report, markdown, args.out, "bench.score_norm", argv)


if __name__ == "__main__":
    main()
