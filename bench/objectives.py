"""Benchmark: speaker objectives side by side at an equal training budget.

On a ``<speaker>/<utt>`` corpus (the shared real-speech data ``speakers/``:
250 speakers, 14,325 utterances), every speaker is kept with at most
``max_utts_per_speaker`` utterances (taken evenly from its sorted files, so
words and sessions stay varied). The data is prepared once: a
speaker-disjoint split (``--n_test_speakers`` held out for trials,
``--n_valid_speakers`` for checkpoint selection and tuning, the rest for
training) and a text-independent trial list over the test speakers (every
same-speaker pair of different words or chapters, as many different-speaker
pairs). ECAPA-TDNN is then trained with ``recipes/CNCeleb/train.py`` once
per system and seed, all with the same model, crops, epochs and embeddings
per view and batch:

- ``aam_softmax``: ``hparams/aam_softmax.yaml``, shuffled batches;
- ``supcon``: ``hparams/supcon.yaml``, P x K batches (K = 2);
- ``aamsupcon``: ``hparams/aamsupcon.yaml`` with ``--aam_softmax_weight=0``
  (pure AAM-SupCon, the paper's formula), P x K;
- ``hybrid``: ``hparams/aamsupcon.yaml``, lambda 1, P x K;
- ``authors``: ``hparams/aamsupcon_authors.yaml``, the authors' released
  code: plain SupCon + AAM-softmax (m 0.3, s 32) on one view, 5 views,
  shuffled batches, SGD 0.01 x0.97 per epoch (its own optimiser, so about
  2.5 times the compute of the 2-view systems per epoch).

The four others use 2 views and Adam, ``lr`` -> ``lr_final``.

The runs are trained, cached and scored by the run layer, :mod:`bench.runs`:
each exported model (the checkpoint with the best validation EER) is scored
on the trials by cosine (:func:`bench.runs.score_run`) and its per-trial
scores are kept (``scores.npy`` in the run folder). The
report gives, per system, EER and minDCF (p_target 0.01) as mean ± std
[min-max] over seeds, the best validation EER, the training time per
epoch, and a paired bootstrap over the test speakers against
``aam_softmax`` on the same trials
(:func:`bench.stats.paired_speaker_bootstrap`: better / worse / no
significant difference at 95%). The validation EER of every epoch of every
run (read from its ``train_log.txt``) gives the learning curves, plotted
next to the JSON. The pretrained Resemblyzer encoder is scored on the same
trials as an outside reference.

Hyperparameters are never chosen on the test trials: variants (a sweep) are
ranked by the mean over seeds of each run's best validation EER, and the
report names the one selected per objective.

Writes ``<out>/objectives.md``, ``<out>/objectives.json`` (per-seed numbers,
curves, paired tests, configuration, machine) and
``<out>/objectives_curves.png``. Every (system, seed) run is cached in
``<out>/runs/<system>/<seed>`` with the train.py overrides it was trained
with: a finished run is read back, an interrupted one resumes from its last
checkpoint, and a cached run whose overrides differ from the requested ones
(another budget, hparams, corpus) is moved aside to ``<run>.stale-<time>``
and trained again. A long budget can so be run in parts (e.g. one
``--seeds`` at a time) and reported once all are done.

Default budget (CPU): all 250 speakers, at most 40 utterances each (5,883
utterances), 40 test and 10 validation speakers (4,782 training
utterances, 850 test utterances, 21,460 trials), 8 epochs of 1 s crops,
ECAPA-TDNN C=64, 128 embeddings per view and batch (P x K = 64 x 2; 37
steps per epoch), 3 seeds. CPU time, measured on the 2-core machine while
another benchmark shared it (one torch thread per run): 2.2 s per step of
the 2-view systems (~9 ms per 1 s crop and view) and 7.6 s for
``authors`` (5 views), i.e. ~1.6 and ~5 min per epoch with validation, so
~15 min per 2-view run and ~40 min per ``authors`` run with start-up,
export and scoring: ~5 hours for the 15 runs, plus ~15 min per extra
one-seed variant. Once the data is prepared (the first run has started),
other seeds can run in parallel processes sharing ``--out`` (e.g.
``--seeds 2 --no_resemblyzer``); a last call with every seed reads the
cached runs and writes the report.

Run from the repository root::

    python -m bench.objectives --data_folder <speakers> \\
        --out results/bench/objectives --seeds 1 2 3
    # with a sweep (one seed each), selected on the validation speakers:
    # margin 0 for one epoch, ramped over two, LR warm-up over one
    python -m bench.objectives --data_folder <speakers> \\
        --out results/bench/objectives --seeds 1 2 3 --variant_seeds 1 \\
        --variants hybrid_m0.1=hybrid:margin=0.1 \\
        hybrid_warm=hybrid:margin_warmup_start=37,margin_warmup_steps=74,\\
lr_warmup_steps=37 \\
        aam_softmax_warm=aam_softmax:margin_warmup_start=37,\\
margin_warmup_steps=74,lr_warmup_steps=37
    # smoke test (a corpus subset, a tiny model, one seed): ~ 2 min
    python -m bench.objectives --data_folder <speakers> \\
        --out /tmp/objectives_quick --quick
    # on a GPU: the recipe's model and 2 s crops
    python -m bench.objectives --data_folder <speakers> \\
        --out results/bench/objectives_gpu --device cuda --threads 0 \\
        --channels 512 512 512 512 1536 --attention_channels 128 \\
        --sentence_len 2.0 --num_workers 4

Extra variants are named ``name=objective:key=value,...`` with hparams keys
of that objective's file (``--variant_seeds`` must be among ``--seeds``).
"""

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import yaml

from bench.curves import curves_table, plot_learning_curves
from bench.machine import machine_info, write_report
from bench.resemblyzer_encoder import ResemblyzerEncoder
from bench.runs import (
    BUDGET,
    OBJECTIVES,
    QUICK,
    add_budget_options,
    best_validation_eer,
    budget_from_args,
    prepare,
    prepare_options,
    prepared_rows,
    run_folder_of,
    run_one,
    score_metrics,
    score_trials,
    trial_scores,
    trial_table,
    validation_curve,
)
from bench.scores import save_trial_scores
from bench.stats import format_spread, paired_tests, seed_summary
from speechbrain_ext.evaluation.verification import read_trial_file

# The self-supervised objectives have their own benchmark, bench/csc.py.
SUPERVISED = ("aam_softmax", "supcon", "aamsupcon", "hybrid", "authors")
# Every other system is tested against this one.
BASELINE = "aam_softmax"
# Budget keys (bench.runs.BUDGET) that can be set from the command line.
BUDGET_OPTIONS = (
    "epochs",
    "channels",
    "attention_channels",
    "emb_dim",
    "sentence_len",
    "lr",
    "embeddings_per_view",
    "max_utts_per_speaker",
    "n_test_speakers",
    "n_valid_speakers",
    "test_fold",
)
NOTES = {
    "lr": "Adam's (lr_final = lr / 10), not authors'",
    "embeddings_per_view": "utterances per step (P x K with K=2 for the "
    "contrastive objectives)",
    "max_utts_per_speaker": "0: all",
    "test_fold": "hold out block K of --n_test_speakers speakers of the "
    "seeded speaker order (cross-validation: run K = 0..S/n-1 in separate "
    "--out folders, pool with bench.verdicts)",
}
# Every run's per-trial scores, the trial list once (bench.scores).
TRIAL_SCORES_NPZ = "objectives_scores.npz"
CURVES_PNG = "objectives_curves.png"


def parse_variant(text):
    """Parses a ``name=objective:key=value,...`` variant specification.

    Arguments
    ---------
    text : str
        The specification; values are read as YAML (numbers, lists...).

    Returns
    -------
    tuple
        ``(name, objective, overrides)``.

    Raises
    ------
    ValueError
        If the text is malformed or names an unknown objective.

    Example
    -------
    >>> parse_variant("hybrid_l0.5=hybrid:aam_softmax_weight=0.5,margin=0.1")
    ('hybrid_l0.5', 'hybrid', {'aam_softmax_weight': 0.5, 'margin': 0.1})
    """
    name, _, spec = text.partition("=")
    objective, _, assignments = spec.partition(":")
    if not name or objective not in OBJECTIVES:
        raise ValueError(
            f"variant {text!r}: expected name=objective:key=value,... with "
            f"objective one of {sorted(OBJECTIVES)}"
        )
    overrides = {}
    for assignment in filter(None, assignments.split(",")):
        key, sep, value = assignment.partition("=")
        if not sep:
            raise ValueError(
                f"variant {text!r}: {assignment!r} is not key=value"
            )
        overrides[key] = yaml.safe_load(value)
    return name, objective, overrides


def forget_stale_reference(out, corpus, config):
    """Removes the cached Resemblyzer score if the trials have changed.

    :func:`score_resemblyzer` keeps its result in
    ``<out>/resemblyzer.json``; it is kept only while the corpus and the
    preparation options it was scored with (``resemblyzer_request.json``)
    stay the same.

    Arguments
    ---------
    out : str
        The benchmark folder.
    corpus : str
        The corpus the trials come from.
    config : dict
        The budget (for :func:`bench.runs.prepare_options`).

    Returns
    -------
    bool
        Whether a stale score was removed.

    Example
    -------
    >>> out = str(getfixture("tmp_path"))
    >>> config = {"n_test_speakers": 4, "n_valid_speakers": 2}
    >>> forget_stale_reference(out, "c", config)
    False
    >>> _ = open(os.path.join(out, "resemblyzer.json"), "w").write("{}")
    >>> forget_stale_reference(out, "c", config)
    False
    >>> forget_stale_reference(out, "c", dict(config, n_test_speakers=5))
    True
    """
    request = {"corpus": corpus, "prepare_options": prepare_options(config)}
    request_path = os.path.join(out, "resemblyzer_request.json")
    record_path = os.path.join(out, "resemblyzer.json")
    previous = None
    if os.path.isfile(request_path):
        with open(request_path, encoding="utf-8") as fin:
            previous = json.load(fin)
    stale = os.path.isfile(record_path) and previous != request
    if stale:
        os.remove(record_path)
    with open(request_path, "w", encoding="utf-8") as fout:
        json.dump(request, fout, indent=2)
    return stale


def score_resemblyzer(paths, config):
    """Scores the pretrained Resemblyzer encoder once (cached).

    Arguments
    ---------
    paths : dict
        ``out``, ``corpus`` and ``prep_folder``.
    config : dict
        ``device`` and ``num_workers``.

    Returns
    -------
    dict
        As :func:`bench.runs.score_metrics`, with ``name`` and
        ``scoring_seconds``.
    """
    record_path = os.path.join(paths["out"], "resemblyzer.json")
    if os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as fin:
            return json.load(fin)
    print("[resemblyzer] scoring the pretrained encoder", flush=True)
    start = time.time()
    result = score_trials(
        ResemblyzerEncoder(config["device"]),
        prepared_rows(paths["prep_folder"], "eval", paths["corpus"]),
        read_trial_file(os.path.join(paths["prep_folder"], "trials.csv")),
        os.path.join(paths["out"], "resemblyzer_embeddings"),
        config["num_workers"],
    )
    record = score_metrics(result)
    record["name"] = "resemblyzer (pretrained)"
    record["scoring_seconds"] = time.time() - start
    with open(record_path, "w", encoding="utf-8") as fout:
        json.dump(record, fout, indent=2)
    return record


def summarize_runs(records):
    """Groups run records by variant name and summarises over seeds.

    Arguments
    ---------
    records : list of dict
        Run records with ``name``, ``seed``, ``EER``, ``minDCF``,
        ``epoch_seconds`` and optionally ``best_valid_EER``.

    Returns
    -------
    dict
        Name -> ``{"seeds", "EER", "minDCF", "valid_EER",
        "epoch_seconds"}``, :func:`bench.stats.seed_summary` dicts (epoch
        seconds pooled over every epoch of every seed; ``valid_EER``, the
        best validation EER of each run, None unless every run has it).

    Example
    -------
    >>> records = [
    ...     {
    ...         "name": "a",
    ...         "seed": 1,
    ...         "EER": 10.0,
    ...         "minDCF": 0.5,
    ...         "epoch_seconds": [100.0],
    ...         "best_valid_EER": 20.0,
    ...     },
    ...     {
    ...         "name": "a",
    ...         "seed": 2,
    ...         "EER": 14.0,
    ...         "minDCF": 0.7,
    ...         "epoch_seconds": [110.0],
    ...         "best_valid_EER": 22.0,
    ...     },
    ... ]
    >>> summary = summarize_runs(records)["a"]
    >>> summary["seeds"], summary["EER"]["mean"], summary["EER"]["std"]
    ([1, 2], 12.0, 2.8284271247461903)
    >>> summary["valid_EER"]["mean"]
    21.0
    """
    grouped = {}
    for record in records:
        grouped.setdefault(record["name"], []).append(record)
    summary = {}
    for name, runs in grouped.items():
        epochs = [s for run in runs for s in run["epoch_seconds"]]
        valid = [run.get("best_valid_EER") for run in runs]
        summary[name] = {
            "seeds": [run["seed"] for run in runs],
            "EER": seed_summary([run["EER"] for run in runs]),
            "minDCF": seed_summary([run["minDCF"] for run in runs]),
            "valid_EER": (seed_summary(valid) if None not in valid else None),
            "epoch_seconds": seed_summary(epochs) if epochs else None,
        }
    return summary


def paired_against(
    scores, labels, enrol, test, baseline=BASELINE, n_resamples=1000
):
    """Paired speaker bootstrap of every system against the baseline.

    Arguments
    ---------
    scores : dict
        Name -> seed -> per-trial scores (same trials for all).
    labels : numpy.ndarray
        Target flag of each trial.
    enrol : numpy.ndarray
        Enrolment speaker of each trial.
    test : numpy.ndarray
        Test speaker of each trial.
    baseline : str
        The system every other one is compared with.
    n_resamples : int
        Bootstrap resamples.

    Returns
    -------
    dict
        Name -> :func:`bench.stats.paired_tests` result on the seeds the
        two systems share (``seeds``), with ``text``; empty without the
        baseline.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> enrol = np.repeat([f"s{i}" for i in range(12)], 8)
    >>> test = np.roll(enrol, 4)
    >>> labels = enrol == test
    >>> noise = {seed: rng.normal(size=96) for seed in (1, 2)}
    >>> scores = {
    ...     "aam_softmax": {s: n + 1.0 * labels for s, n in noise.items()},
    ...     "hybrid": {s: n + 3.0 * labels for s, n in noise.items()},
    ... }
    >>> result = paired_against(scores, labels, enrol, test, n_resamples=200)[
    ...     "hybrid"
    ... ]
    >>> result["verdict"], result["seeds"]
    ('better', [1, 2])
    """
    tests = paired_tests(
        {name: {"clean": by_seed} for name, by_seed in scores.items()},
        [(name, baseline) for name in scores if name != baseline],
        labels,
        enrol,
        test,
        n_resamples,
    )
    return {name: result for (name, _, _), result in tests.items()}


def select_by_validation(records, variants):
    """Per objective, the setting with the lowest validation EER.

    Arguments
    ---------
    records : list of dict
        Run records with ``name``, ``seed`` and ``best_valid_EER``.
    variants : list of tuple
        ``(name, objective, overrides, ...)`` of every system run.

    Returns
    -------
    dict
        Objective -> ``{"candidates": {name: mean best validation EER},
        "seeds": [...], "selected": name}`` for every objective run with
        more than one setting. Means are over the seeds every candidate
        has, so a one-seed sweep is compared on that seed; the test trials
        play no part.

    Example
    -------
    >>> runs = [{"name": "hybrid", "seed": 1, "best_valid_EER": 19.0},
    ...         {"name": "hybrid", "seed": 2, "best_valid_EER": 15.0},
    ...         {"name": "hybrid_m0.1", "seed": 1, "best_valid_EER": 18.0}]
    >>> variants = [("hybrid", "hybrid", {}),
    ...             ("hybrid_m0.1", "hybrid", {"margin": 0.1})]
    >>> select_by_validation(runs, variants)["hybrid"]
    {'candidates': {'hybrid': 19.0, 'hybrid_m0.1': 18.0}, 'seeds': [1], \
'selected': 'hybrid_m0.1'}
    """
    valid = {}
    for record in records:
        eer = record.get("best_valid_EER")
        if eer is not None and math.isfinite(eer):
            valid.setdefault(record["name"], {})[record["seed"]] = eer
    groups = {}
    for name, objective, *_ in variants:
        if name in valid:
            groups.setdefault(objective, []).append(name)
    selection = {}
    for objective, names in groups.items():
        if len(names) < 2:
            continue
        seeds = sorted(set.intersection(*(set(valid[n]) for n in names)))
        if not seeds:
            continue
        means = {n: float(np.mean([valid[n][s] for s in seeds])) for n in names}
        selection[objective] = {
            "candidates": means,
            "seeds": seeds,
            "selected": min(means, key=means.get),
        }
    return selection


def markdown_table(summary, reference=None, paired=None):
    """The benchmark table: one row per variant, the reference last.

    Arguments
    ---------
    summary : dict
        Output of :func:`summarize_runs`.
    reference : dict, optional
        A scored outside system with ``name``, ``EER``, ``minDCF``.
    paired : dict, optional
        Output of :func:`paired_against`, for the verdict column.

    Returns
    -------
    str
        A markdown table; spreads as mean ± std [min-max] over seeds.

    Example
    -------
    >>> summary = summarize_runs([{"name": "aam_softmax", "seed": 1,
    ...     "EER": 12.5, "minDCF": 0.81, "epoch_seconds": [95.0],
    ...     "best_valid_EER": 20.25}])
    >>> print(markdown_table(summary, {"name": "ref", "EER": 17.0,
    ...                                "minDCF": 0.9}))
    | system | seeds | EER (%) | minDCF (p=0.01) | best valid EER (%) \
| vs aam_softmax (95%) | train s/epoch |
    | --- | --- | --- | --- | --- | --- | --- |
    | aam_softmax | 1 | 12.50 | 0.810 | 20.25 | - | 95 |
    | ref | - | 17.00 | 0.900 | - | - | - |
    """
    paired = paired or {}
    lines = [
        "| system | seeds | EER (%) | minDCF (p=0.01) | best valid EER (%) "
        f"| vs {BASELINE} (95%) | train s/epoch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in summary.items():
        epoch = entry["epoch_seconds"]
        valid = entry.get("valid_EER")
        versus = "-"
        if name in paired:
            result = paired[name]
            versus = (
                f"{result['verdict']} ({result['delta']:+.2f}, "
                f"p={result['p_value']:.3f})"
            )
        lines.append(
            f"| {name} | {len(entry['seeds'])} "
            f"| {format_spread(entry['EER'])} "
            f"| {format_spread(entry['minDCF'], digits=3)} "
            f"| {format_spread(valid) if valid else '-'} "
            f"| {versus} "
            f"| {format_spread(epoch, digits=0) if epoch else '-'} |"
        )
    if reference is not None:
        lines.append(
            f"| {reference['name']} | - | {reference['EER']:.2f} "
            f"| {reference['minDCF']:.3f} | - | - | - |"
        )
    return "\n".join(lines)


def markdown_report(
    table,
    config,
    seeds,
    records,
    machine,
    command,
    paired=None,
    selection=None,
    curves=None,
):
    """The table with the tests, curves, budget, trials and machine.

    Arguments
    ---------
    table : str
        Output of :func:`markdown_table`.
    config : dict
        The budget (see :data:`bench.runs.BUDGET`).
    seeds : list of int
        Seeds of the runs.
    records : list of dict
        Run records (for the trial counts).
    machine : dict
        Output of :func:`bench.machine.machine_info`.
    command : str
        The command that regenerates the report.
    paired : dict, optional
        Output of :func:`paired_against`.
    selection : dict, optional
        Output of :func:`select_by_validation`.
    curves : dict, optional
        ``{name: {seed: [(epoch, EER), ...]}}``.

    Returns
    -------
    str
        Markdown.
    """
    trials = (
        (f"{records[0]['n_trials']} trials ({records[0]['n_target']} target)")
        if records
        else "no trials"
    )
    parts = ["# Speaker objectives at an equal training budget", table]
    if paired:
        parts.append(paired_text(paired))
    if selection:
        parts.append(selection_text(selection))
    if curves:
        parts.append(
            "Validation EER (%) per epoch, mean ± std over seeds "
            f"({config['n_valid_speakers']} validation speakers, all "
            "pairs):\n\n"
            + curves_table(curves)
            + f"\n\n![learning curves]({CURVES_PNG})"
        )
    parts.append(
        f"EER and minDCF (p_target 0.01, cosine scoring) on {trials} "
        f"among the {config['n_test_speakers']} held-out speakers' "
        "utterances: every same-speaker pair of different words (or "
        "chapters) and as many random different-speaker pairs of different "
        f"words; mean ± std [min-max] over seeds {seeds}. Best valid EER: "
        "each run's best validation EER (its exported checkpoint). Train "
        "s/epoch: wall clock of training and validation per epoch, pooled "
        "over seeds."
    )
    parts.append(budget_text(config))
    parts.append(
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, "
        f"torch {machine['torch']}, device {machine['device']}, "
        f"{config['threads'] or 'default'} torch thread(s) per run."
    )
    parts.append(f"Regenerate with:\n\n    {command}\n")
    return "\n\n".join(parts)


def paired_text(paired):
    """The paired tests of :func:`paired_against`, one line each."""
    lines = [
        f"- {result['text']} (seeds {result['seeds']}, "
        f"p = {result['p_value']:.3f})"
        for result in paired.values()
    ]
    n_resamples = next(iter(paired.values())).get("n_resamples", "?")
    return (
        f"Paired bootstrap over the test speakers ({n_resamples} "
        "resamples of the speakers, each trial weighted by how often its "
        f"two speakers were drawn), each system against {BASELINE} on "
        "the same trials, EER averaged over the shared seeds:\n\n"
        + "\n".join(lines)
    )


def selection_text(selection):
    """The settings :func:`select_by_validation` chose, one line each."""
    lines = [
        f"- {objective}: **{entry['selected']}** ("
        + ", ".join(
            f"{name} {eer:.2f}%" for name, eer in entry["candidates"].items()
        )
        + f"; seeds {entry['seeds']})"
        for objective, entry in selection.items()
    ]
    return (
        "Settings selected on the validation speakers (mean "
        "best validation EER; the test trials play no "
        "part):\n\n" + "\n".join(lines)
    )


def budget_text(config):
    """The budget of every run, in one sentence.

    Example
    -------
    >>> budget_text(BUDGET)[:60]
    'Budget of every run: all speakers, at most 40 utterances eac'
    """
    k = config["n_utts_per_speaker"]
    per_view = config["embeddings_per_view"]
    cap = config.get("max_utts_per_speaker")
    return (
        f"Budget of every run: {config.get('n_speakers') or 'all'} speakers"
        f", at most {cap or 'all'} utterances each; ECAPA-TDNN channels "
        f"{config['channels']}, attention {config['attention_channels']}, "
        f"embedding {config['emb_dim']}; {config['epochs']} epoch(s) of "
        f"{config['sentence_len']} s crops, {per_view} embeddings per view "
        f"and batch (P x K = {per_view // k} x {k} for supcon, aamsupcon "
        "and hybrid, shuffled for aam_softmax and authors); 2 views and "
        f"Adam, lr {config['lr']} -> {config['lr_final']}, except authors "
        "(5 views, SGD 0.01 x0.97 per epoch); best validation-EER "
        f"checkpoint ({config['n_valid_speakers']} validation speakers)."
    )


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Run from the repository root::")[1],
    )
    parser.add_argument(
        "--data_folder",
        required=True,
        help="<speaker>/<utt> corpus, e.g. <speakers>",
    )
    parser.add_argument("--out", default="results/bench/objectives")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--objectives",
        nargs="+",
        default=list(SUPERVISED),
        choices=list(SUPERVISED),
    )
    parser.add_argument(
        "--variant_seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds of the --variants runs (default: "
        "--seeds), e.g. 1 for a one-seed sweep",
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[],
        help="extra runs: name=objective:key=value,...",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny smoke test: corpus subset, tiny model, first seed only",
    )
    add_budget_options(
        parser, {key: BUDGET[key] for key in BUDGET_OPTIONS}, QUICK, NOTES
    )
    parser.add_argument(
        "--n_resamples",
        type=int,
        default=1000,
        help="bootstrap resamples of the paired tests",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device of training and scoring"
    )
    parser.add_argument(
        "--num_workers",
        type=int,
        default=1,
        help="data-loading workers per run",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of each training run and of "
        "scoring (0: torch's default); 1 leaves a core "
        "to the data-loading worker",
    )
    parser.add_argument("--no_resemblyzer", action="store_true")
    return parser.parse_args(argv)


def build_config(args):
    """The budget: defaults (or --quick's), then explicit options.

    Example
    -------
    >>> config = build_config(
    ...     parse_args(
    ...         ["--data_folder", "d", "--lr", "0.004", "--epochs", "10"]
    ...     )
    ... )
    >>> config["epochs"], config["lr"], config["lr_final"]
    (10, 0.004, 0.0004)
    >>> config["max_utts_per_speaker"], config["embeddings_per_view"]
    (40, 128)
    """
    config = budget_from_args(args, QUICK if args.quick else BUDGET)
    if args.lr is not None:
        config["lr_final"] = args.lr / 10
    config["max_utts_per_speaker"] = config["max_utts_per_speaker"] or None
    return config


def run_variants(variants, seeds, variant_seeds, config, paths):
    """Trains and scores every (variant, seed), reading its curve.

    Arguments
    ---------
    variants : list of tuple
        ``(name, objective, overrides, is_variant)``; a variant (a sweep
        entry) runs only with ``variant_seeds``.
    seeds : list of int
        The seeds of the systems.
    variant_seeds : list of int
        The seeds of the variants.
    config : dict
        The budget (see :func:`build_config`).
    paths : dict
        From :func:`bench.runs.prepare`.

    Returns
    -------
    records : list of dict
        Run records with ``valid_curve`` and ``best_valid_EER``.
    scores : dict
        Name -> seed -> per-trial scores.
    curves : dict
        Name -> seed -> ``[(epoch, validation EER), ...]``.
    """
    records, scores, curves = [], {}, {}
    for seed in seeds:  # seed-major: a partial benchmark covers every model
        for name, objective, extra, is_variant in variants:
            if is_variant and seed not in variant_seeds:
                continue
            record = run_one(name, objective, extra, seed, config, paths)
            run_folder = run_folder_of(paths, name, seed)
            curve = validation_curve(run_folder)
            record = dict(
                record,
                valid_curve=curve,
                best_valid_EER=best_validation_eer(curve),
            )
            records.append(record)
            scores.setdefault(name, {})[seed] = trial_scores(
                run_folder, record, paths, config
            )
            curves.setdefault(name, {})[seed] = curve
    return records, scores, curves


def compare_runs(records, scores, prep_folder, out, n_resamples):
    """Summary over seeds and paired tests; keeps the per-trial scores.

    Arguments
    ---------
    records : list of dict
        Run records (see :func:`run_variants`).
    scores : dict
        Name -> seed -> per-trial scores.
    prep_folder : str
        The preparation (its trials).
    out : str
        Where :data:`TRIAL_SCORES_NPZ` is written.
    n_resamples : int
        Bootstrap resamples.

    Returns
    -------
    summary : dict
        :func:`summarize_runs`, each tested system with its
        ``paired_vs_<baseline>``.
    paired : dict
        :func:`paired_against`.
    """
    summary = summarize_runs(records)
    trials = trial_table(prep_folder)
    save_trial_scores(
        os.path.join(out, TRIAL_SCORES_NPZ),
        trials,
        {
            (name, seed, "clean"): values
            for name, by_seed in scores.items()
            for seed, values in by_seed.items()
        },
    )
    paired = paired_against(
        scores,
        trials["label"],
        trials["enrol_speaker"],
        trials["test_speaker"],
        n_resamples=n_resamples,
    )
    for name, result in paired.items():
        summary[name][f"paired_vs_{BASELINE}"] = result
        print(result["text"], flush=True)
    return summary, paired


def variant_plan(args, seeds):
    """The systems and variants to run, and the seeds of the variants.

    Returns
    -------
    variants : list of tuple
        ``(name, objective, overrides, is_variant)``: the objectives of
        ``--objectives``, then those of ``--variants``.
    variant_seeds : list of int
        ``--variant_seeds``, by default ``seeds``.

    Raises
    ------
    ValueError
        If a variant seed is not among ``seeds``.
    """
    variant_seeds = args.variant_seeds or seeds
    if not set(variant_seeds) <= set(seeds):
        raise ValueError(
            f"--variant_seeds {variant_seeds} must be among "
            f"the seeds run, {seeds}"
        )
    variants = [(name, name, {}, False) for name in args.objectives]
    variants += [(*parse_variant(text), True) for text in args.variants]
    return variants, variant_seeds


def plot_curves(curves, out):
    """Plots the runs that have a learning curve; returns their curves."""
    curves = {name: runs for name, runs in curves.items() if any(runs.values())}
    if curves:
        plot_learning_curves(
            curves,
            os.path.join(out, CURVES_PNG),
            "Validation EER per epoch (mean, min-max over seeds)",
        )
    return curves


def main(argv=None):
    """Runs the benchmark, prints the table, writes markdown and JSON."""
    args = parse_args(argv)
    config = build_config(args)
    if config["threads"]:
        # Scoring runs here: on a busy CPU, extra threads mostly spin.
        torch.set_num_threads(config["threads"])
    seeds = args.seeds[:1] if args.quick else args.seeds
    variants, variant_seeds = variant_plan(args, seeds)
    started = time.time()
    paths = prepare(args.data_folder, os.path.abspath(args.out), config)
    out = paths["out"]
    records, scores, curves = run_variants(
        variants, seeds, variant_seeds, config, paths
    )
    reference = None
    if not args.no_resemblyzer:
        forget_stale_reference(out, paths["corpus"], config)
        reference = score_resemblyzer(paths, config)
    summary, paired = compare_runs(
        records, scores, paths["prep_folder"], out, args.n_resamples
    )
    selection = select_by_validation(records, variants)
    curves = plot_curves(curves, out)
    result = {
        "config": {
            **config,
            "seeds": seeds,
            "prepare_options": prepare_options(config),
            "variants": [list(variant[:3]) for variant in variants],
            "variant_seeds": variant_seeds,
            "n_resamples": args.n_resamples,
            # As given: another machine has its own folder.
            "data_folder": args.data_folder,
        },
        "machine": machine_info(config["device"]),
        "runs": records,
        "summary": summary,
        "selection": selection,
        "curves": {
            name: {str(s): [list(p) for p in run] for s, run in runs.items()}
            for name, runs in curves.items()
        },
        "curves_png": CURVES_PNG if curves else None,
        "reference": reference,
        "benchmark_seconds_this_call": time.time() - started,
    }
    result = write_report(
        result,
        lambda result: markdown_table(summary, reference, paired),
        os.path.join(out, "objectives.json"),
        "bench.objectives",
        argv,
    )
    report = markdown_report(
        result["table"],
        config,
        seeds,
        records,
        result["machine"],
        result["command"],
        paired,
        selection,
        curves,
    )
    with open(os.path.join(out, "objectives.md"), "w", encoding="utf-8") as f:
        f.write(report)
    return result


if __name__ == "__main__":
    main()
