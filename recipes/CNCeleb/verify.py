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

Robustness (test side corrupted by another talker and/or noise, enrolment
clean; see ``speechbrain_ext.robustness``):
    python verify.py --model results/csc/1986/export \
        --data_folder /data/CN-Celeb_flac --prep_folder results/prepared \
        --conditions clean sir0 sir5 sir10 snr5 sir5+snr10

Interferers are other speakers' test utterances (``--interferer_csv`` to
choose others), noises come from ``--noise_csv`` or a synthetic bank made
once in ``<output>/noise``. The table has one row per enrolment mode and
condition (``concat@sir5``; clean rows keep the plain ``concat`` name), and
``summary.json`` gives each row's ``test_condition``, ``sir_db`` and
``snr_db`` for ``plot_robustness.py``.

ONNX Runtime backend (CPU; ``pip install speechbrain_ext[onnx]``), after
writing ``<model>/embedding_model.onnx`` with ``export.py --onnx`` or
``python -m speechbrain_ext.onnx_export <model>``:
    python verify.py --model results/aam_softmax/1986/export \\
        --data_folder /data/CN-Celeb_flac --prep_folder results/prepared \\
        --backend onnx --threads 4

Both backends share the batching, padding and caching of
``speechbrain_ext.extraction.EmbeddingExtractor``; ONNX embeddings are
cached in ``<output>/embeddings-onnx``, apart from torch's.
``--threads`` sets torch's intra-op threads or ONNX Runtime's
``intra_op_num_threads`` (default: each library's own choice).
"""

import argparse
import logging
import os
import sys

import torch
from speechbrain_ext.augment.bank import load_waveform_bank
from speechbrain_ext.augment.noise import generate_noise_bank
from speechbrain_ext.data.manifest import read_manifest
from speechbrain_ext.onnx_backend import OnnxEncoder
from speechbrain_ext.robustness import Corruptor, parse_condition
from speechbrain_ext.verification import (
    cohort_rows,
    read_trial_file,
    verify_trials,
    write_report,
)

from speechbrain.inference.speaker import EncoderClassifier

ENROL_CSV = {"concat": "enrol_concat.csv", "avg": "enrol_avg.csv"}
# Present in every extracted CN-Celeb release.
CNCELEB_TRIALS = os.path.join("eval", "lists", "trials.lst")
logger = logging.getLogger(__name__)


def parse_args(argv):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        required=True,
        help="exported model folder (hyperparams.yaml)",
    )
    parser.add_argument(
        "--data_folder",
        required=True,
        help="value of $data_root in the manifests",
    )
    parser.add_argument(
        "--cnceleb2_folder",
        default=None,
        help="value of $data_root2 (CN-Celeb2 cohort rows)",
    )
    parser.add_argument(
        "--prep_folder",
        default="results/prepared",
        help="folder written by the data preparation",
    )
    parser.add_argument(
        "--output_folder",
        default=None,
        help="reports go here (default: <model>/../verify)",
    )
    parser.add_argument(
        "--enrol_mode",
        nargs="+",
        default=["concat"],
        choices=sorted(ENROL_CSV),
        help="CN-Celeb enrolment modes to score",
    )
    parser.add_argument(
        "--score_norm",
        default="none",
        choices=["none", "z-norm", "t-norm", "s-norm", "as-norm"],
    )
    parser.add_argument(
        "--top_n", type=int, default=300, help="AS-norm cohort size per item"
    )
    parser.add_argument(
        "--mean_norm",
        action="store_true",
        help="subtract the training-set mean embedding",
    )
    parser.add_argument(
        "--cohort_per_speaker",
        type=int,
        default=3,
        help="training utterances per cohort speaker",
    )
    parser.add_argument(
        "--trials",
        default=None,
        help="trial list (default: <prep_folder>/trials.csv)",
    )
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnx"],
        help="run the encoder in torch or in ONNX Runtime "
        "(<model>/embedding_model.onnx, CPU)",
    )
    parser.add_argument(
        "--onnx_model",
        default=None,
        help="ONNX file for --backend onnx (default: "
        "<model>/embedding_model.onnx)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads of the backend (torch, or "
        "ONNX Runtime's intra_op_num_threads)",
    )
    parser.add_argument("--name", default=None, help="system name in tables")
    parser.add_argument("--no_plots", action="store_true")
    parser.add_argument(
        "--conditions",
        nargs="+",
        default=["clean"],
        help="test-side conditions: clean, sir<dB>, snr<dB>, sir<dB>+snr<dB>",
    )
    parser.add_argument(
        "--interferer_csv",
        default=None,
        help="manifest of interfering talkers (ID, wav, "
        "spk_id; default: the test manifest)",
    )
    parser.add_argument(
        "--noise_csv",
        default=None,
        help="noise manifest (default: a synthetic bank "
        "generated in <output>/noise)",
    )
    parser.add_argument(
        "--corruption_seed",
        type=int,
        default=1234,
        help="seed of the test-side corruption",
    )
    args = parser.parse_args(argv)
    try:
        args.conditions = [parse_condition(c) for c in args.conditions]
    except ValueError as err:
        parser.error(str(err))
    if args.backend == "onnx" and args.device != "cpu":
        parser.error(f"--backend onnx runs on the CPU, not {args.device}")
    names = [condition.name for condition in args.conditions]
    if len(set(names)) < len(names):
        parser.error(f"--conditions repeats a condition: {names}")
    return args


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


def ensure_prepared(data_folder, prep_folder, cnceleb2_folder=None):
    """Prepares a CN-Celeb release that was never prepared on this machine.

    Scoring needs ``trials.csv`` and the enrolment and test manifests. For
    the CN-Celeb release they are fixed by its evaluation lists, so they
    are prepared here (``cnceleb_prepare.prepare_cnceleb``, which also
    writes the training manifest a score cohort reads; with no validation
    split, since scoring needs none and every dev speaker then joins the
    cohort). A folder corpus's test speakers depend on the options the
    model was trained with, so only the command to run is named.

    Raises
    ------
    FileNotFoundError
        For an unprepared folder corpus, with the preparation command.
    """
    if os.path.isfile(os.path.join(prep_folder, "trials.csv")):
        return
    if os.path.isfile(os.path.join(data_folder, CNCELEB_TRIALS)):
        from cnceleb_prepare import prepare_cnceleb

        logger.info(
            "%s holds no trials.csv: preparing CN-Celeb from %s",
            prep_folder,
            data_folder,
        )
        prepare_cnceleb(
            data_folder, prep_folder, cnceleb2_folder, valid_ratio=0
        )
        return
    raise FileNotFoundError(
        f"{prep_folder} holds no trials.csv and {data_folder} is not a "
        f"CN-Celeb release ({CNCELEB_TRIALS} is missing). Prepare it with "
        "the options the model was trained with (train.py does so), e.g. "
        f"python cnceleb_prepare.py --folder_corpus --data_folder "
        f"{data_folder} --save_folder {prep_folder} --n_test_speakers 10 "
        "--seed 1234; or pass --trials and --prep_folder of an earlier "
        "preparation"
    )


def corruptors_by_condition(args, test_rows, replacements, output):
    """One :class:`Corruptor` per condition (None for clean)."""
    conditions = args.conditions
    interferers = noises = None
    if any(c.sir_db is not None for c in conditions):
        interferers = test_rows
        if args.interferer_csv:
            interferers = read_manifest(args.interferer_csv, replacements)
    if any(c.snr_db is not None for c in conditions):
        noise_csv = args.noise_csv or generate_noise_bank(
            os.path.join(output, "noise")
        )
        noises = load_waveform_bank(noise_csv, replacements)
    speakers = {
        row["ID"]: row["spk_id"] for row in test_rows if row.get("spk_id")
    }
    return {
        condition.name: None
        if condition.is_clean
        else Corruptor(
            condition,
            interferers,
            noises,
            seed=args.corruption_seed,
            speakers=speakers,
        )
        for condition in conditions
    }


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
    embeddings = "embeddings"
    if args.backend == "onnx":
        encoder = OnnxEncoder(args.onnx_model or args.model, args.threads)
        embeddings = "embeddings-onnx"  # not mixed with torch's cache
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        encoder = EncoderClassifier.from_hparams(
            source=os.path.abspath(args.model),
            savedir=os.path.join(output, "model"),
            run_opts={"device": args.device},
        )
    replacements = {
        "data_root": args.data_folder,
        "data_root2": args.cnceleb2_folder or args.data_folder,
    }
    if args.trials is None:
        ensure_prepared(
            args.data_folder, args.prep_folder, args.cnceleb2_folder
        )
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
    corruptors = None
    for mode in args.enrol_mode:
        enrol_csv, test_csv = evaluation_sets(args.prep_folder, mode)
        enrol_mode = mode if enrol_csv != test_csv else "utterance"
        scoring = enrol_mode
        if args.score_norm != "none":
            scoring += f"+{args.score_norm}"
        enrol_rows = read_manifest(enrol_csv, replacements)
        test_rows = read_manifest(test_csv, replacements)
        if corruptors is None:  # the test side is the same for every mode
            corruptors = corruptors_by_condition(
                args, test_rows, replacements, output
            )
        for condition in args.conditions:
            result = verify_trials(
                encoder,
                enrol_rows,
                test_rows,
                trials,
                cohort=cohort,
                score_norm=args.score_norm,
                top_n=args.top_n,
                mean_norm=args.mean_norm,
                batch_size=args.batch_size,
                cache_folder=os.path.join(output, embeddings),
                num_workers=args.num_workers,
                test_transform=corruptors[condition.name],
            )
            key = (
                scoring
                if condition.is_clean
                else (f"{scoring}@{condition.name}")
            )
            results[key] = {
                **result,
                "enrol_mode": enrol_mode,
                "score_norm": args.score_norm,
                "test_condition": condition.name,
                "sir_db": condition.sir_db,
                "snr_db": condition.snr_db,
            }
            if args.backend != "torch":
                results[key]["backend"] = args.backend
        if enrol_csv == test_csv:
            break
    print(write_report(results, output, name, plots=not args.no_plots))
    print(f"Reports written to {output}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
