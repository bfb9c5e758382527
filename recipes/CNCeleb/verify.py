#!/usr/bin/env python3
"""Scores a prepared trial list with an exported speaker encoder.

Embeds enrolment and test audio with the model that ``train.py`` exported
(any folder ``EncoderClassifier.from_hparams`` loads), cosine-scores the
trials, optionally after mean subtraction and z/t/s/AS-norm against a cohort
of speaker-averaged training embeddings, and prints and writes EER and
minDCF (p_target 0.01) with a DET curve and score histograms.

Example (CN-Celeb, both enrolment modes, AS-norm):
    python verify.py --model results/aam_softmax/1986/export \\
        --data_folder /data/CN-Celeb_flac --prep_folder results/prepared \\
        --enrol_mode concat avg --score_norm as-norm

For a corpus prepared with ``data_format: folder`` the same command uses
``eval.csv`` for both sides of the utterance-vs-utterance trials.
"""

import argparse
import logging
import os
import sys

from speechbrain.inference.speaker import EncoderClassifier

from speechbrain_ext.verification import (
    cohort_rows,
    read_manifest,
    read_trial_file,
    verify_trials,
    write_report,
)

ENROL_CSV = {"concat": "enrol_concat.csv", "avg": "enrol_avg.csv"}


def parse_args(argv):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True,
                        help="exported model folder (hyperparams.yaml)")
    parser.add_argument("--data_folder", required=True,
                        help="value of $data_root in the manifests")
    parser.add_argument("--cnceleb2_folder", default=None,
                        help="value of $data_root2 (CN-Celeb2 cohort rows)")
    parser.add_argument("--prep_folder", default="results/prepared",
                        help="folder written by the data preparation")
    parser.add_argument("--output_folder", default=None,
                        help="reports go here (default: <model>/../verify)")
    parser.add_argument("--enrol_mode", nargs="+", default=["concat"],
                        choices=sorted(ENROL_CSV),
                        help="CN-Celeb enrolment modes to score")
    parser.add_argument("--score_norm", default="none",
                        choices=["none", "z-norm", "t-norm", "s-norm",
                                 "as-norm"])
    parser.add_argument("--top_n", type=int, default=300,
                        help="AS-norm cohort size per item")
    parser.add_argument("--mean_norm", action="store_true",
                        help="subtract the training-set mean embedding")
    parser.add_argument("--cohort_per_speaker", type=int, default=3,
                        help="training utterances per cohort speaker")
    parser.add_argument("--trials", default=None,
                        help="trial list (default: <prep_folder>/trials.csv)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default=None, help="system name in tables")
    parser.add_argument("--no_plots", action="store_true")
    return parser.parse_args(argv)


def model_name(model):
    """A system name from the model path: results/<objective>/<seed>/export.

    Example
    -------
    >>> model_name("results/aamsupcon/1986/export")
    'aamsupcon/1986'
    """
    parts = os.path.abspath(model).split(os.sep)
    return "/".join(parts[-3:-1]) if parts[-1] == "export" else parts[-1]


def evaluation_sets(prep_folder, enrol_mode):
    """Enrolment and test manifests for a CN-Celeb or folder preparation."""
    test_csv = os.path.join(prep_folder, "test.csv")
    if os.path.exists(test_csv):
        return os.path.join(prep_folder, ENROL_CSV[enrol_mode]), test_csv
    eval_csv = os.path.join(prep_folder, "eval.csv")
    if not os.path.exists(eval_csv):
        raise FileNotFoundError(
            f"{prep_folder} holds neither test.csv nor eval.csv: run the "
            "data preparation (train.py does) first"
        )
    return eval_csv, eval_csv


def main(argv=None):
    """Runs the verification and prints the result table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if not os.path.isfile(os.path.join(args.model, "hyperparams.yaml")):
        raise FileNotFoundError(f"no hyperparams.yaml in --model {args.model}")
    output = args.output_folder or os.path.join(
        os.path.dirname(os.path.abspath(args.model)), "verify"
    )
    name = args.name or model_name(args.model)
    encoder = EncoderClassifier.from_hparams(
        source=os.path.abspath(args.model),
        savedir=os.path.join(output, "model"),
        run_opts={"device": args.device},
    )
    replacements = {
        "data_root": args.data_folder,
        "data_root2": args.cnceleb2_folder or args.data_folder,
    }
    trials = read_trial_file(
        args.trials or os.path.join(args.prep_folder, "trials.csv")
    )
    cohort = None
    if args.score_norm != "none" or args.mean_norm:
        train = read_manifest(
            os.path.join(args.prep_folder, "train.csv"), replacements
        )
        cohort = cohort_rows(train, args.cohort_per_speaker)
    results = {}
    for mode in args.enrol_mode:
        enrol_csv, test_csv = evaluation_sets(args.prep_folder, mode)
        condition = mode if enrol_csv != test_csv else "utterance"
        if args.score_norm != "none":
            condition += f"+{args.score_norm}"
        results[condition] = verify_trials(
            encoder,
            read_manifest(enrol_csv, replacements),
            read_manifest(test_csv, replacements),
            trials,
            cohort=cohort,
            score_norm=args.score_norm,
            top_n=args.top_n,
            mean_norm=args.mean_norm,
            batch_size=args.batch_size,
            cache_folder=os.path.join(output, "embeddings"),
            num_workers=args.num_workers,
        )
        if enrol_csv == test_csv:
            break
    print(write_report(results, output, name, plots=not args.no_plots))
    print(f"Reports written to {output}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
