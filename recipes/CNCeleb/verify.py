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
clean; see ``speechbrain_ext.evaluation.robustness``):
    python verify.py --model results/csc/1986/export \
        --data_folder /data/CN-Celeb_flac --prep_folder results/prepared \
        --conditions clean sir0 sir5 sir10 snr5 sir5+snr10

Interferers are other speakers' test utterances (``--interferer_csv`` to
choose others), noises come from ``--noise_csv`` or a synthetic bank made
once in ``<output>/noise``. The table has one row per enrolment mode and
condition (``concat@sir5``; clean rows keep the plain ``concat`` name), and
``summary.json`` gives each row's ``test_condition``, ``sir_db`` and
``snr_db`` for ``plot_robustness.py``.

Calibrated scores (``--calibrate``): the same scoring (mean subtraction,
score normalisation and cohort included) is run on
``<prep_folder>/calibration_trials.csv``, trials among the validation
speakers that the preparation writes; a prior-weighted linear map from
scores to log-likelihood ratios is fitted on them
(``speechbrain_ext.scoring.fit_calibration``, ``--calibration_prior``),
saved as ``<output>/calibration.json`` and applied to the test scores. The
report then gives, per condition, Cllr before (raw scores read as LLRs)
and after, min Cllr, and minDCF and actDCF before and after at p_target
0.01 and 0.05, with the score threshold each prior's Bayes decision
uses; ``det_calibrated.png`` marks where those thresholds land. See
docs/calibration.md.

With ``--conditions`` beyond clean, ``--calibrate`` also fits one
calibration per condition on *interfered* calibration trials: their test
side is corrupted like the test trials' (same condition, noise bank and
``--corruption_seed``), with interferers drawn from the other validation
speakers, never from the test speakers. Each condition then reports Cllr
and actDCF with the clean-fitted calibration (what a threshold set on
clean speech costs there) and with its own (``calibration_<condition>``
in ``summary.json``, ``calibration_<condition>.json``, and a second table
in ``calibration.md``).
    python verify.py --model results/aam_softmax/1986/export \
        --data_folder /data/CN-Celeb_flac --prep_folder results/prepared \
        --calibrate

ONNX Runtime backend (CPU; ``pip install speechbrain_ext[onnx]``), after
writing ``<model>/embedding_model.onnx`` with ``export.py --onnx`` or
``python -m speechbrain_ext.inference.onnx_export <model>``:
    python verify.py --model results/aam_softmax/1986/export \\
        --data_folder /data/CN-Celeb_flac --prep_folder results/prepared \\
        --backend onnx --threads 4

Both backends share the batching, padding and caching of
``speechbrain_ext.inference.extraction.EmbeddingExtractor``; ONNX embeddings
are cached in ``<output>/embeddings-onnx``, apart from torch's.
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
from speechbrain_ext.data.manifest import read_manifest, split_wav_paths
from speechbrain_ext.evaluation.robustness import Corruptor, parse_condition
from speechbrain_ext.evaluation.verification import (
    cohort_rows,
    read_trial_file,
    verify_trials,
    write_report,
)
from speechbrain_ext.inference.onnx_backend import OnnxEncoder
from speechbrain_ext.scoring import (
    act_dcf,
    bayes_threshold,
    cllr,
    compute_eer_mindcf,
    fit_calibration,
    min_cllr,
)

from speechbrain.inference.speaker import EncoderClassifier

ENROL_CSV = {"concat": "enrol_concat.csv", "avg": "enrol_avg.csv"}
# Present in every extracted CN-Celeb release.
CNCELEB_TRIALS = os.path.join("eval", "lists", "trials.lst")
CALIBRATION_FILE = "calibration.json"
CALIBRATION_TRIALS = "calibration_trials.csv"
REPORT_PRIORS = (0.01, 0.05)
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
    parser.add_argument(
        "--max_batch_seconds",
        type=float,
        default=600.0,
        help="cap on an embedding batch's padded audio (batch size x its "
        "longest item, seconds), so that long concatenated enrolments fit "
        "a small GPU; 0 for no cap",
    )
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device; auto: cuda if available, else cpu",
    )
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
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="fit a score-to-LLR calibration on the validation speakers' "
        "calibration trials and report Cllr and actDCF before and after",
    )
    parser.add_argument(
        "--calibration_trials",
        default=None,
        help="trials over valid.csv ids for --calibrate (default: "
        f"<prep_folder>/{CALIBRATION_TRIALS})",
    )
    parser.add_argument(
        "--calibration_prior",
        type=float,
        default=0.05,
        help="p_target the calibration is trained for",
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
    args.device = resolve_device(args.device, args.backend)
    if args.max_batch_seconds < 0:
        parser.error(
            f"--max_batch_seconds must be >= 0, got {args.max_batch_seconds}"
        )
    if args.backend == "onnx" and args.device != "cpu":
        parser.error(f"--backend onnx runs on the CPU, not {args.device}")
    names = [condition.name for condition in args.conditions]
    if len(set(names)) < len(names):
        parser.error(f"--conditions repeats a condition: {names}")
    if not 0 < args.calibration_prior < 1:
        parser.error(
            f"--calibration_prior must be in (0, 1), got {args.calibration_prior}"
        )
    return args


def resolve_device(device, backend="torch"):
    """The device ``--device`` names; "auto" is cuda when torch sees one.

    Arguments
    ---------
    device : str
        "auto" or a torch device ("cpu", "cuda", "cuda:1").
    backend : str
        "onnx" runs on the CPU, so "auto" means "cpu" there.

    Returns
    -------
    str
        The device.

    Example
    -------
    >>> resolve_device("cuda:1")
    'cuda:1'
    >>> resolve_device("auto", backend="onnx")
    'cpu'
    >>> resolve_device("auto") == (
    ...     "cuda" if torch.cuda.is_available() else "cpu"
    ... )
    True
    """
    if device != "auto":
        return device
    if backend == "torch" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


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


def scoring_options(args):
    """The scoring settings of ``verify_trials`` that the test trials and
    the calibration trials share, so both are scored alike."""
    return {
        "score_norm": args.score_norm,
        "top_n": args.top_n,
        "mean_norm": args.mean_norm,
        "batch_size": args.batch_size,
        "max_batch_seconds": args.max_batch_seconds or None,
    }


def ensure_prepared(
    data_folder, prep_folder, cnceleb2_folder=None, valid_ratio=0
):
    """Prepares a CN-Celeb release that was never prepared on this machine.

    Scoring needs ``trials.csv`` and the enrolment and test manifests. For
    the CN-Celeb release they are fixed by its evaluation lists, so they
    are prepared here (``cnceleb_prepare.prepare_cnceleb``, which also
    writes the training manifest a score cohort reads). Plain scoring needs
    no validation split (``valid_ratio`` 0: every dev speaker joins the
    cohort); ``--calibrate`` holds speakers out for its calibration trials.
    A folder corpus's test speakers depend on the options the model was
    trained with, so only the command to run is named.

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
            data_folder, prep_folder, cnceleb2_folder, valid_ratio=valid_ratio
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


def noise_bank(args, replacements, output):
    """The noise bank of the SNR conditions (None when none adds noise)."""
    if not any(c.snr_db is not None for c in args.conditions):
        return None
    noise_csv = args.noise_csv or generate_noise_bank(
        os.path.join(output, "noise")
    )
    return load_waveform_bank(noise_csv, replacements)


def corruptors_by_condition(
    args, test_rows, replacements, output, interferers=None
):
    """One :class:`Corruptor` per condition (None for clean).

    Interfering talkers come from ``interferers`` if given, else from
    ``--interferer_csv``, else from ``test_rows`` themselves.
    """
    conditions = args.conditions
    noises = noise_bank(args, replacements, output)
    if interferers is None and any(c.sir_db is not None for c in conditions):
        interferers = test_rows
        if args.interferer_csv:
            interferers = read_manifest(args.interferer_csv, replacements)
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


def calibration_rows(prep_folder, replacements):
    """Validation rows as both sides of the utterance-vs-utterance trials.

    Each row enrols by itself (``enrol_id`` = ``ID``); a joined training
    item is represented by its first file, as in the score cohort.
    """
    valid_csv = os.path.join(prep_folder, "valid.csv")
    return [
        {**row, "wav": split_wav_paths(row["wav"])[0], "enrol_id": row["ID"]}
        for row in read_manifest(valid_csv, replacements)
    ]


def read_calibration_trials(path):
    """The calibration trials, or an error saying how to get them."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--calibrate needs {path}: prepare the data again "
            "(cnceleb_prepare.py / train.py write it from the validation "
            "speakers) or pass --calibration_trials, a list over valid.csv ids"
        )
    try:
        return read_trial_file(path)
    except ValueError as error:
        if "empty" not in str(error):
            raise
        raise ValueError(
            f"{path} holds no trials: the preparation held out no "
            "validation speakers (valid_ratio 0?); prepare with "
            "valid_ratio > 0 (e.g. 0.05) to calibrate"
        ) from None


def fit_score_calibration(
    args, encoder, cohort, replacements, cache_folder, corruptor=None
):
    """Scores the calibration trials like the test trials and fits the map.

    Arguments
    ---------
    args : argparse.Namespace
        The options of :func:`parse_args`.
    encoder : object
        The loaded encoder.
    cohort : list of dict, optional
        Score cohort rows (score normalisation, mean subtraction).
    replacements : dict
        ``$data_root`` and ``$data_root2`` of the manifests.
    cache_folder : str
        Embedding cache.
    corruptor : Corruptor, optional
        Corrupts the calibration trials' test side (an interfered
        calibration); None for clean.

    Returns
    -------
    LinearCalibration
        With ``info`` naming the scoring, the calibration trials and the
        test-side ``condition``.
    """
    path = args.calibration_trials or os.path.join(
        args.prep_folder, CALIBRATION_TRIALS
    )
    trials = read_calibration_trials(path)
    rows = calibration_rows(args.prep_folder, replacements)
    result = verify_trials(
        encoder,
        rows,
        rows,
        trials,
        cohort=cohort,
        **scoring_options(args),
        cache_folder=cache_folder,
        num_workers=args.num_workers,
        test_transform=corruptor,
    )
    scores, labels = result["scores"], result["labels"]
    calibration = fit_calibration(
        scores, labels, p_target=args.calibration_prior
    )
    calibration.info = {
        "scoring": {
            "score_norm": args.score_norm,
            "mean_norm": args.mean_norm,
            "top_n": args.top_n if args.score_norm == "as-norm" else None,
            "cohort_per_speaker": args.cohort_per_speaker if cohort else None,
            "backend": args.backend,
        },
        "calibration_trials": os.path.abspath(path),
        "condition": "clean" if corruptor is None else corruptor.name,
        "model": os.path.abspath(args.model),
        "fit": {
            "EER": result["EER"],
            "minCllr": min_cllr(scores, labels),
            "Cllr": cllr(calibration(scores), labels),
        },
    }
    logger.info(
        "calibration (%s) on %d trials (%d targets): llr = %.4g * score %+.4g",
        calibration.info["condition"],
        len(scores),
        calibration.n_target,
        calibration.a,
        calibration.b,
    )
    return calibration


def fit_interfered_calibrations(
    args, encoder, cohort, replacements, output, cache_folder
):
    """A calibration per interfered condition, on interfered calibration trials.

    The calibration trials' test side is corrupted by the condition as
    the test trials' is (same noise bank and ``--corruption_seed``), but
    the interfering talkers are the other validation speakers: the test
    speakers must not shape a calibration that is judged on them. Each
    fit is saved as ``<output>/calibration_<condition>.json``.

    Returns
    -------
    dict
        Condition name -> :class:`LinearCalibration` (empty when every
        condition is clean).
    """
    if all(condition.is_clean for condition in args.conditions):
        return {}
    rows = calibration_rows(args.prep_folder, replacements)
    corruptors = corruptors_by_condition(
        args, rows, replacements, output, interferers=rows
    )
    calibrations = {}
    for condition in args.conditions:
        if condition.is_clean:
            continue
        calibration = fit_score_calibration(
            args,
            encoder,
            cohort,
            replacements,
            cache_folder,
            corruptor=corruptors[condition.name],
        )
        calibration.to_json(
            os.path.join(output, f"calibration_{condition.name}.json")
        )
        calibrations[condition.name] = calibration
    return calibrations


def calibration_metrics(scores, labels, calibration, priors=REPORT_PRIORS):
    """Cllr, min Cllr, minDCF and actDCF of scores before and after.

    "Before" reads the raw scores as LLRs (what a user who thresholds them
    at the Bayes threshold would get); EER, minDCF and min Cllr depend
    only on the order of the scores, so calibration leaves them alone.

    Arguments
    ---------
    scores : numpy.ndarray
        Raw test scores.
    labels : numpy.ndarray
        bool labels.
    calibration : LinearCalibration
        The fitted map.
    priors : tuple of float
        p_target values to report.

    Returns
    -------
    dict
        ``Cllr_raw``, ``Cllr``, ``minCllr`` and per prior (key ``"0.01"``)
        ``minDCF``, ``actDCF_raw``, ``actDCF``, the ``score_threshold`` of
        the calibrated decision and its ``p_miss`` and ``p_fa``.

    Example
    -------
    >>> import numpy as np
    >>> from speechbrain_ext.scoring import LinearCalibration
    >>> metrics = calibration_metrics(
    ...     np.array([0.9, 0.6, 0.2, 0.1]),
    ...     np.array([True, True, False, False]),
    ...     LinearCalibration(a=20.0, b=-8.0),
    ...     priors=(0.5,),
    ... )
    >>> metrics["minCllr"], metrics["0.5"]["actDCF"], metrics["0.5"]["p_fa"]
    (0.0, 0.0, 0.0)
    """
    llrs = calibration(scores)
    metrics = {
        "Cllr_raw": cllr(scores, labels),
        "Cllr": cllr(llrs, labels),
        "minCllr": min_cllr(scores, labels),
    }
    for p_target in priors:
        _, min_dcf, _ = compute_eer_mindcf(scores, labels, p_target=p_target)
        accepted = llrs >= bayes_threshold(p_target)
        metrics[f"{p_target:g}"] = {
            "minDCF": min_dcf,
            "actDCF_raw": act_dcf(scores, labels, p_target),
            "actDCF": act_dcf(llrs, labels, p_target),
            "score_threshold": calibration.score_threshold(p_target)
            if calibration.a > 0
            else None,
            "p_miss": float((~accepted[labels]).mean()),
            "p_fa": float(accepted[~labels].mean()),
        }
    return metrics


def calibration_table(results, name):
    """Markdown table of the calibration metrics of every condition."""
    lines = [
        "| system | condition | EER (%) | min Cllr | Cllr raw | Cllr cal "
        "| p_target | minDCF | actDCF raw | actDCF cal | score threshold |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for condition, result in results.items():
        metrics = result["calibration"]
        for prior in REPORT_PRIORS:
            at = metrics[f"{prior:g}"]
            threshold = at["score_threshold"]
            lines.append(
                f"| {name} | {condition} | {100 * result['EER']:.2f} | "
                f"{metrics['minCllr']:.3f} | {metrics['Cllr_raw']:.3f} | "
                f"{metrics['Cllr']:.3f} | {prior:g} | {at['minDCF']:.3f} | "
                f"{at['actDCF_raw']:.3f} | {at['actDCF']:.3f} | "
                + ("n/a" if threshold is None else f"{threshold:.4f}")
                + " |"
            )
    return "\n".join(lines)


def interference_table(results, name):
    """Markdown table: each interfered condition under both calibrations.

    "clean fit" is the calibration fitted on clean calibration trials (a
    threshold set on clean speech), "own fit" the one fitted on
    calibration trials interfered like that condition's test side.
    """
    lines = [
        "| system | condition | min Cllr | Cllr clean fit | Cllr own fit "
        "| p_target | minDCF | actDCF clean fit | actDCF own fit |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for condition, result in results.items():
        own = result.get("calibration_interfered")
        if own is None:
            continue
        clean = result["calibration"]
        for prior in REPORT_PRIORS:
            key = f"{prior:g}"
            lines.append(
                f"| {name} | {condition} | {clean['minCllr']:.3f} | "
                f"{clean['Cllr']:.3f} | {own['Cllr']:.3f} | {prior:g} | "
                f"{clean[key]['minDCF']:.3f} | {clean[key]['actDCF']:.3f} | "
                f"{own[key]['actDCF']:.3f} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def report_calibration(
    results, calibration, output, name, plots, interfered=None
):
    """Adds calibration metrics to the results; writes tables and DET plot.

    Arguments
    ---------
    results : dict
        Row name -> result of ``verify_trials`` with ``test_condition``.
    calibration : LinearCalibration
        Fitted on the clean calibration trials; applied to every row.
    output : str
        Folder of ``calibration.md`` and ``det_calibrated.png``.
    name : str
        System name in the tables.
    plots : bool
        Draw the DET plot.
    interfered : dict, optional
        Condition name -> calibration fitted on interfered calibration
        trials; rows of that condition also get ``calibration_interfered``.

    Returns
    -------
    str
        The markdown table(s).
    """
    interfered = interfered or {}
    for result in results.values():
        result["calibration"] = calibration_metrics(
            result["scores"], result["labels"], calibration
        )
        own = interfered.get(result.get("test_condition"))
        if own is not None:
            result["calibration_interfered"] = calibration_metrics(
                result["scores"], result["labels"], own
            )
    table = calibration_table(results, name)
    under_interference = interference_table(results, name)
    if under_interference:
        table += (
            "\n\nUnder interference: calibration fitted on clean "
            "calibration trials vs on calibration trials interfered like "
            "the condition (own fit)\n\n" + under_interference
        )
    with open(os.path.join(output, "calibration.md"), "w") as fout:
        fout.write(table + "\n")
    if plots:
        from speechbrain_ext.scoring.plots import plot_det

        systems, points = {}, {}
        for condition, result in results.items():
            label = f"{name} ({condition})"
            systems[label] = (result["scores"], result["labels"])
            points[label] = [
                (
                    result["calibration"][f"{p:g}"]["p_miss"],
                    result["calibration"][f"{p:g}"]["p_fa"],
                    f"p={p:g}",
                )
                for p in REPORT_PRIORS
            ]
        plot_det(
            systems,
            os.path.join(output, "det_calibrated.png"),
            title="DET curve, calibrated thresholds (x)",
            operating_points=points,
        )
    return table


def load_encoder(args, output):
    """The encoder of ``--backend`` and the name of its embedding cache
    (ONNX embeddings are not mixed with torch's)."""
    if args.backend == "onnx":
        encoder = OnnxEncoder(args.onnx_model or args.model, args.threads)
        return encoder, "embeddings-onnx"
    if args.threads:
        torch.set_num_threads(args.threads)
    encoder = EncoderClassifier.from_hparams(
        source=os.path.abspath(args.model),
        savedir=os.path.join(output, "model"),
        run_opts={"device": args.device},
    )
    return encoder, "embeddings"


def verify_modes(args, encoder, trials, cohort, replacements, output, cache):
    """Scores the trials in every enrolment mode and test condition.

    Returns
    -------
    dict
        ``"<mode>[+<score_norm>][@<condition>]"`` -> verification result.
    """
    results, corruptors = {}, None
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
                **scoring_options(args),
                cache_folder=cache,
                num_workers=args.num_workers,
                test_transform=corruptors[condition.name],
            )
            key = (
                scoring if condition.is_clean else f"{scoring}@{condition.name}"
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
    return results


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
    encoder, embeddings = load_encoder(args, output)
    cache = os.path.join(output, embeddings)
    replacements = {
        "data_root": args.data_folder,
        "data_root2": args.cnceleb2_folder or args.data_folder,
    }
    if args.trials is None:
        ensure_prepared(
            args.data_folder,
            args.prep_folder,
            args.cnceleb2_folder,
            valid_ratio=0.05 if args.calibrate else 0,
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
    calibration = None
    if args.calibrate:
        calibration = fit_score_calibration(
            args, encoder, cohort, replacements, cache
        )
        calibration.to_json(os.path.join(output, CALIBRATION_FILE))
        interfered = fit_interfered_calibrations(
            args, encoder, cohort, replacements, output, cache
        )
    results = verify_modes(
        args, encoder, trials, cohort, replacements, output, cache
    )
    calibrated = None
    if calibration is not None:
        os.makedirs(output, exist_ok=True)
        calibrated = report_calibration(
            results,
            calibration,
            output,
            name,
            plots=not args.no_plots,
            interfered=interfered,
        )
    print(write_report(results, output, name, plots=not args.no_plots))
    if calibrated is not None:
        print(calibrated)
        print(
            f"Calibration: {os.path.join(output, CALIBRATION_FILE)} (ship it "
            "with the model: export.py --calibration=<that file>)"
        )
    print(f"Reports written to {output}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
