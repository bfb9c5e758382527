"""Benchmark: raw cosine scores against calibrated LLRs, clean and interfered.

For each seed of one trained system of the CSC benchmark (by default the
AAM-softmax recipe, ``results/bench/csc/runs/aam_softmax/<seed>/export``),
the exported model, loaded as a user would, cosine-scores two trial lists:

- the **calibration trials**, among the validation speakers of the
  preparation (``valid.csv``; never a test speaker), built with the
  preparation's own trial builder
  (:func:`speechbrain_ext.data.preparation.make_trials`: all target pairs,
  as many random non-targets, text-independent when the preparation was:
  the two sides of a trial say different words);
- the **test trials** (``trials.csv`` over ``eval.csv``).

Both are scored per condition, the test side clean or corrupted by an
interfering talker (``sir10``, ``sir5``, ``sir0``) with
:class:`speechbrain_ext.evaluation.robustness.Corruptor`, deterministically seeded by
``--corruption_seed`` as ``bench/csc.py`` and ``verify.py`` do. Test
utterances get interferers among the other test speakers, calibration
utterances among the other validation speakers.

A prior-weighted linear calibration
(:func:`speechbrain_ext.scoring.fit_calibration`, ``--calibration_prior``)
is fitted on the clean calibration trials and, per condition, on the
calibration trials interfered like that condition. Per condition the test
scores are reported three ways:

- ``raw``: the cosine scores read as if they were LLRs;
- ``calibrated``: the clean fit (a threshold set on clean speech);
- ``calibrated_interfered``: the condition's own fit (for ``clean`` the
  same as ``calibrated``).

Each gives ``Cllr`` and ``min_Cllr`` (bits) and ``actDCF`` and ``minDCF``
per p_target (0.05 and 0.01), each summarised over seeds
(:func:`bench.stats.seed_summary`: ``mean``, ``std``, ``min``, ``max``,
``n``)::

    summary[condition]["calibrated"]["Cllr"]["mean"]
    summary[condition]["calibrated"]["actDCF"]["0.05"]["mean"]

``targets`` checks the issue's aims on the clean test trials (Cllr of the
clean fit within 0.05 bits of min Cllr; actDCF at p_target 0.05 within 10%
of minDCF), on the mean over seeds and on every seed.

Every seed's scores are cached in ``--cache/<seed>`` with what made them
(export checksum, trials, conditions' corruption seed), so a rerun scores
only the seeds and conditions not done yet: rerun when a seed's training
finishes. Seeds whose export is missing are skipped and listed.

Run from the repository root::

    python -m bench.calibration --seeds 1 2 3 --threads 1
"""

import argparse
import json
import os
import time
import zlib

import numpy as np
import torch

from bench.machine import machine_info, write_report
from bench.runs import load_export, score_trials
from bench.stats import seed_summary
from speechbrain_ext.data.manifest import read_manifest, split_wav_paths
from speechbrain_ext.data.preparation import make_trials
from speechbrain_ext.evaluation.robustness import parse_condition
from speechbrain_ext.evaluation.verification import read_trial_file
from speechbrain_ext.scoring import (
    act_dcf,
    cllr,
    compute_eer_mindcf,
    fit_calibration,
    min_cllr,
)

PRIORS = (0.05, 0.01)
VARIANTS = {
    "raw": "raw cosine as LLR",
    "calibrated": "calibrated, clean fit",
    "calibrated_interfered": "calibrated, own condition's fit",
}
# The aims on the clean test trials.
MAX_CLLR_GAP = 0.05  # bits above min Cllr
MAX_DCF_EXCESS = 0.10  # actDCF at p_target 0.05 over minDCF, relative
TARGET_PRIOR = 0.05
STAMP = "stamp.json"


def speaker_rows(path, replacements):
    """Manifest rows as both sides of utterance-vs-utterance trials.

    Each row enrols by itself (``enrol_id`` = ``ID``); a joined item is
    represented by its first file, as verify.py's calibration does.
    """
    return [
        {**row, "wav": split_wav_paths(row["wav"])[0], "enrol_id": row["ID"]}
        for row in read_manifest(path, replacements)
    ]


def utterance_key(row, key_field):
    """The content key of a folder-corpus row (field of its file stem).

    The folder preparation keys an utterance by field ``key_field`` of its
    file stem split on ``-`` (the word spoken in the benchmark pack), and
    pairs only different keys in its text-independent trials.

    Example
    -------
    >>> utterance_key({"wav": "$data_root/s1/s1-cancel-r01.opus"}, 1)
    'cancel'
    >>> utterance_key({"wav": "/x/a.wav"}, 1)
    ''
    """
    stem = os.path.splitext(os.path.basename(row["wav"]))[0]
    fields = stem.split("-")
    return fields[key_field] if key_field < len(fields) else ""


def calibration_trial_list(valid_rows, options):
    """Balanced calibration trials among the validation speakers.

    Arguments
    ---------
    valid_rows : list of dict
        Rows of ``valid.csv`` (``ID``, ``wav``, ``spk_id``).
    options : dict
        The preparation's ``prepare_options.json``: ``different_key_only``,
        ``key_field`` and ``seed`` are used as the preparation used them
        for the test trials.

    Returns
    -------
    list of (str, str, int)
        ``(enrol_id, test_id, label)``, label 1 for a target.

    Example
    -------
    >>> rows = [
    ...     {"ID": f"{s}-{w}", "wav": f"{s}/{s}-{w}.wav", "spk_id": s}
    ...     for s in ("a", "b")
    ...     for w in ("x", "y")
    ... ]
    >>> options = {"different_key_only": True, "key_field": 1}
    >>> calibration_trial_list(rows, options)
    [('a-x', 'a-y', 1), ('a-x', 'b-y', 0), ('a-y', 'b-x', 0), ('b-x', 'b-y', 1)]
    """
    different = bool(options.get("different_key_only", False))
    key_field = int(options.get("key_field", 1))
    return make_trials(
        [row["ID"] for row in valid_rows],
        [row["spk_id"] for row in valid_rows],
        keys=[utterance_key(row, key_field) for row in valid_rows]
        if different
        else None,
        different_key_only=different,
        seed=int(options.get("seed", 1234)),
    )


def trials_checksum(trials):
    """A checksum of a trial list, to tell cached scores apart.

    Example
    -------
    >>> trials_checksum([("a", "b", 1)]) == trials_checksum([("a", "b", 0)])
    False
    """
    text = "\n".join(f"{e} {t} {label}" for e, t, label in trials)
    return f"{zlib.crc32(text.encode('utf-8')):08x}"


def file_checksum(path):
    """CRC32 of a file's bytes (the exported weights)."""
    checksum = 0
    with open(path, "rb") as fin:
        for block in iter(lambda: fin.read(1 << 20), b""):
            checksum = zlib.crc32(block, checksum)
    return f"{checksum:08x}"


def score_seed(export, data, conditions, config, cache):
    """Per-condition cosine scores of both trial lists for one export.

    Finished conditions are read back from ``cache``; a stamp recording
    the export's checksum, the trial lists and the corruption seed throws
    away scores that another model or trial list made.

    Arguments
    ---------
    export : str
        The exported model folder.
    data : dict
        ``test_rows``, ``test_trials``, ``valid_rows`` and
        ``calibration_trials``.
    conditions : list of str
        Condition names (``clean``, ``sir0``...).
    config : dict
        ``corruption_seed``, ``device``, ``batch_size`` and
        ``num_workers``.
    cache : str
        This seed's cache folder.

    Returns
    -------
    dict
        ``(side, condition)`` -> scores, side ``"test"`` or
        ``"calibration"``, in the order of that side's trials.
    """
    stamp = {
        "export": file_checksum(os.path.join(export, "embedding_model.ckpt")),
        "test_trials": trials_checksum(data["test_trials"]),
        "calibration_trials": trials_checksum(data["calibration_trials"]),
        "corruption_seed": config["corruption_seed"],
    }
    stamp_path = os.path.join(cache, STAMP)
    os.makedirs(cache, exist_ok=True)
    if os.path.isfile(stamp_path):
        with open(stamp_path, encoding="utf-8") as fin:
            if json.load(fin) != stamp:
                # Scores of another model or trial list: start afresh.
                for name in os.listdir(cache):
                    if name.startswith("scores_"):
                        os.remove(os.path.join(cache, name))
    with open(stamp_path, "w", encoding="utf-8") as fout:
        json.dump(stamp, fout, indent=2)
    sides = {
        "test": (data["test_rows"], data["test_trials"]),
        "calibration": (data["valid_rows"], data["calibration_trials"]),
    }
    scores, encoder = {}, None
    for condition in conditions:
        for side, (rows, trials) in sides.items():
            path = os.path.join(cache, f"scores_{side}_{condition}.npy")
            if os.path.isfile(path):
                scores[side, condition] = np.load(path)
                continue
            encoder = encoder or load_export(
                None, config["device"], export, os.path.join(cache, "model")
            )
            # Interferers are the other speakers of the same side: the test
            # speakers never touch the calibration trials.
            result = score_trials(
                encoder,
                rows,
                trials,
                os.path.join(cache, "embeddings", side),
                config["num_workers"],
                condition,
                config["corruption_seed"],
                config["batch_size"],
            )
            scores[side, condition] = np.asarray(result["scores"], float)
            np.save(path, scores[side, condition])
            print(
                f"  {side} {condition}: EER {100 * result['EER']:.2f}% "
                f"({len(trials)} trials)",
                flush=True,
            )
    return scores


def score_metrics(llrs, scores, labels, priors=PRIORS):
    """Cllr, min Cllr, EER and per prior actDCF and minDCF of one scoring.

    Arguments
    ---------
    llrs : numpy.ndarray
        The scores as LLRs (raw or calibrated).
    scores : numpy.ndarray
        The raw scores (min Cllr, EER and minDCF depend on their order
        only, so calibration leaves them alone).
    labels : numpy.ndarray
        bool, True for a target.
    priors : tuple of float
        p_target values.

    Returns
    -------
    dict
        ``Cllr``, ``min_Cllr``, ``EER`` (%), and ``actDCF`` and ``minDCF``
        as ``{"<p_target>": value}``.

    Example
    -------
    >>> metrics = score_metrics(
    ...     np.array([3.0, -3.0]),
    ...     np.array([0.9, 0.1]),
    ...     np.array([True, False]),
    ...     priors=(0.5,),
    ... )
    >>> metrics["min_Cllr"], metrics["actDCF"], metrics["minDCF"]
    (0.0, {'0.5': 0.0}, {'0.5': 0.0})
    """
    eer = compute_eer_mindcf(scores, labels)[0]
    metrics = {
        "Cllr": float(cllr(llrs, labels)),
        "min_Cllr": float(min_cllr(scores, labels)),
        "EER": 100 * float(eer),
        "actDCF": {},
        "minDCF": {},
    }
    for prior in priors:
        key = f"{prior:g}"
        metrics["actDCF"][key] = float(act_dcf(llrs, labels, prior))
        metrics["minDCF"][key] = float(
            compute_eer_mindcf(scores, labels, p_target=prior)[1]
        )
    return metrics


def seed_results(scores, test_labels, calibration_labels, conditions, prior):
    """Fits and metrics of one seed, per condition and variant.

    Returns
    -------
    dict
        condition -> ``{"fits": {...}, variant: score_metrics(...)}``,
        the fits as ``{"clean"|"own": {"a", "b"}}``.
    """
    clean_fit = fit_calibration(
        scores["calibration", "clean"], calibration_labels, p_target=prior
    )
    results = {}
    for condition in conditions:
        own_fit = clean_fit
        if condition != "clean":
            own_fit = fit_calibration(
                scores["calibration", condition],
                calibration_labels,
                p_target=prior,
            )
        test = scores["test", condition]
        results[condition] = {
            "fits": {
                "clean": {"a": clean_fit.a, "b": clean_fit.b},
                "own": {"a": own_fit.a, "b": own_fit.b},
            },
            "raw": score_metrics(test, test, test_labels),
            "calibrated": score_metrics(clean_fit(test), test, test_labels),
            "calibrated_interfered": score_metrics(
                own_fit(test), test, test_labels
            ),
        }
    return results


def summarize(per_seed, conditions):
    """Seed summaries of every metric: summary[condition][variant][metric].

    Example
    -------
    >>> one = {"Cllr": 0.5, "min_Cllr": 0.25, "EER": 5.0}
    >>> one.update(actDCF={"0.05": 0.5}, minDCF={"0.05": 0.25})
    >>> per_seed = {1: {"clean": {v: one for v in VARIANTS}}}
    >>> summary = summarize(per_seed, ["clean"])
    >>> summary["clean"]["calibrated"]["actDCF"]["0.05"]["mean"]
    0.5
    """
    summary = {}
    for condition in conditions:
        summary[condition] = {}
        for variant in VARIANTS:
            runs = [per_seed[seed][condition][variant] for seed in per_seed]
            entry = {
                name: seed_summary([run[name] for run in runs])
                for name in ("Cllr", "min_Cllr", "EER")
            }
            for name in ("actDCF", "minDCF"):
                entry[name] = {
                    prior: seed_summary([run[name][prior] for run in runs])
                    for prior in runs[0][name]
                }
            summary[condition][variant] = entry
    return summary


def check_targets(summary, per_seed):
    """The issue's aims on the clean test trials, for the clean fit.

    Returns
    -------
    dict
        ``cllr_gap`` (bits) and ``dcf_excess`` (relative) of the mean
        over seeds and of each seed, and whether each aim is ``met`` by
        the mean and by every seed.

    Example
    -------
    >>> one = {"Cllr": 0.54, "min_Cllr": 0.5, "EER": 5.0}
    >>> one.update(actDCF={"0.05": 0.54}, minDCF={"0.05": 0.5})
    >>> per_seed = {1: {"clean": {v: one for v in VARIANTS}}}
    >>> targets = check_targets(summarize(per_seed, ["clean"]), per_seed)
    >>> targets["cllr_gap"]["met"], targets["dcf_excess"]["met"]
    (True, True)
    """
    key = f"{TARGET_PRIOR:g}"

    def gap(entry, pick):
        return pick(entry["Cllr"]) - pick(entry["min_Cllr"])

    def excess(entry, pick):
        return pick(entry["actDCF"][key]) / pick(entry["minDCF"][key]) - 1

    mean = summary["clean"]["calibrated"]
    seeds = {
        seed: runs["clean"]["calibrated"] for seed, runs in per_seed.items()
    }
    targets = {}
    for name, measure, limit in (
        ("cllr_gap", gap, MAX_CLLR_GAP),
        ("dcf_excess", excess, MAX_DCF_EXCESS),
    ):
        of_mean = measure(mean, lambda value: value["mean"])
        of_seeds = {
            str(seed): measure(entry, lambda value: value)
            for seed, entry in seeds.items()
        }
        targets[name] = {
            "limit": limit,
            "mean": of_mean,
            "per_seed": of_seeds,
            "met": bool(of_mean <= limit),
            "met_every_seed": all(v <= limit for v in of_seeds.values()),
        }
    return targets


def _cell(stats):
    """``mean ± std`` (``mean`` alone for one seed)."""
    if stats["n"] > 1:
        return f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    return f"{stats['mean']:.3f}"


def markdown(report):
    """The report's table: conditions x variants, mean ± std over seeds."""
    priors = [f"{prior:g}" for prior in PRIORS]
    head = ["condition", "scores", "EER (%)", "min Cllr", "Cllr"]
    for prior in priors:
        head += [f"minDCF {prior}", f"actDCF {prior}"]
    lines = [
        "| " + " | ".join(head) + " |",
        "| --- | --- |" + " ---: |" * (len(head) - 2),
    ]
    for condition, variants in report["summary"].items():
        for variant, label in VARIANTS.items():
            entry = variants[variant]
            cells = [condition, label, f"{entry['EER']['mean']:.2f}"]
            cells += [_cell(entry["min_Cllr"]), _cell(entry["Cllr"])]
            for prior in priors:
                cells += [
                    _cell(entry["minDCF"][prior]),
                    _cell(entry["actDCF"][prior]),
                ]
            lines.append("| " + " | ".join(cells) + " |")
    seeds = ", ".join(str(seed) for seed in report["seeds"])
    lines.append("")
    lines.append(
        f"Mean ± std over seeds {seeds} of {report['system']}; "
        f"{report['n_calibration_trials']} calibration trials "
        f"(validation speakers), {report['n_test_trials']} test trials; "
        f"calibration p_target {report['calibration_prior']:g}."
    )
    if report["missing_seeds"]:
        lines.append(f"Seeds without an export: {report['missing_seeds']}.")
    targets = report["targets"]
    gap, excess = targets["cllr_gap"], targets["dcf_excess"]
    lines.append(
        f"Clean, clean fit: Cllr - min Cllr = {gap['mean']:.3f} bits "
        f"(target <= {gap['limit']:g}: "
        f"{'met' if gap['met'] else 'NOT met'}); actDCF/minDCF - 1 at "
        f"p_target {TARGET_PRIOR:g} = {100 * excess['mean']:.1f}% "
        f"(target <= {100 * excess['limit']:g}%: "
        f"{'met' if excess['met'] else 'NOT met'})."
    )
    return "\n".join(lines)


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs",
        default="results/bench/csc/runs/aam_softmax",
        help="folder of the system's runs, <runs>/<seed>/export",
    )
    parser.add_argument(
        "--prep_folder",
        default="results/bench/csc/prepared",
        help="train.csv, valid.csv, eval.csv, trials.csv of the benchmark",
    )
    parser.add_argument(
        "--data_folder",
        default="results/bench/csc/corpus",
        help="value of $data_root in the manifests",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--conditions", nargs="+", default=["clean", "sir10", "sir5", "sir0"]
    )
    parser.add_argument("--corruption_seed", type=int, default=1234)
    parser.add_argument("--calibration_prior", type=float, default=0.05)
    parser.add_argument(
        "--cache",
        default="results/bench/calibration",
        help="per-seed scores, embeddings and model copies",
    )
    parser.add_argument("--out", default="bench/results/calibration.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    names = [parse_condition(name).name for name in args.conditions]
    if "clean" not in names:
        parser.error("--conditions needs clean: the clean fit comes from it")
    args.conditions = list(dict.fromkeys(names))
    return args


def main(argv=None):
    """Scores every seed that has an export, fits, reports."""
    args = parse_args(argv)
    start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    replacements = {"data_root": os.path.abspath(args.data_folder)}
    with open(
        os.path.join(args.prep_folder, "prepare_options.json"),
        encoding="utf-8",
    ) as fin:
        options = json.load(fin)
    valid_rows = speaker_rows(
        os.path.join(args.prep_folder, "valid.csv"), replacements
    )
    data = {
        "test_rows": speaker_rows(
            os.path.join(args.prep_folder, "eval.csv"), replacements
        ),
        "test_trials": read_trial_file(
            os.path.join(args.prep_folder, "trials.csv")
        ),
        "valid_rows": valid_rows,
        "calibration_trials": calibration_trial_list(valid_rows, options),
    }
    test_labels = np.array([label == 1 for *_, label in data["test_trials"]])
    calibration_labels = np.array(
        [label == 1 for *_, label in data["calibration_trials"]]
    )
    config = {
        "corruption_seed": args.corruption_seed,
        "device": args.device,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
    }
    per_seed, missing = {}, []
    for seed in args.seeds:
        export = os.path.join(args.runs, str(seed), "export")
        if not os.path.isfile(os.path.join(export, "embedding_model.ckpt")):
            print(f"[seed {seed}] no export in {export}: skipped", flush=True)
            missing.append(seed)
            continue
        print(f"[seed {seed}] scoring {args.conditions}", flush=True)
        scores = score_seed(
            export,
            data,
            args.conditions,
            config,
            os.path.join(args.cache, str(seed)),
        )
        per_seed[seed] = seed_results(
            scores,
            test_labels,
            calibration_labels,
            args.conditions,
            args.calibration_prior,
        )
    if not per_seed:
        raise FileNotFoundError(
            f"no export under {args.runs}/<seed>/export for seeds {args.seeds}"
        )
    summary = summarize(per_seed, args.conditions)
    report = {
        "system": os.path.normpath(args.runs),
        "seeds": sorted(per_seed),
        "missing_seeds": missing,
        "conditions": args.conditions,
        "priors": list(PRIORS),
        "calibration_prior": args.calibration_prior,
        "corruption_seed": args.corruption_seed,
        "n_calibration_trials": len(calibration_labels),
        "n_calibration_targets": int(calibration_labels.sum()),
        "n_calibration_speakers": len({r["spk_id"] for r in valid_rows}),
        "n_test_trials": len(test_labels),
        "n_test_targets": int(test_labels.sum()),
        "summary": summary,
        "targets": check_targets(summary, per_seed),
        "per_seed": {str(seed): runs for seed, runs in per_seed.items()},
        "machine": machine_info(args.device),
        "seconds_this_call": time.time() - start,
    }
    report = write_report(report, markdown, args.out, "bench.calibration", argv)
    table = os.path.splitext(args.out)[0] + ".md"
    with open(table, "w", encoding="utf-8") as fout:
        fout.write(f"`{report['command']}`\n\n{report['table']}\n")
    return report


if __name__ == "__main__":
    main()
