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

Each exported model (the checkpoint with the best validation EER) is scored
on the trials by cosine with :func:`speechbrain_ext.verification.verify_trials`
and its per-trial scores are kept (``scores.npy`` in the run folder). The
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
import sys
import time

import numpy as np
import torch
import yaml

from bench.corpus_subset import subset_corpus
from bench.curves import (
    curve_points,
    curves_table,
    plot_learning_curves,
    read_learning_curve,
)
from bench.machine import machine_info
from bench.objective_runs import (
    OBJECTIVES,
    RUN_RECORD,
    prepare_once,
    prepare_options,
    run_one,
    score_resemblyzer,
    train_overrides,
)
from bench.scores import save_trial_scores
from bench.stats import (
    format_spread,
    format_verdict,
    paired_speaker_bootstrap,
    seed_summary,
)
from speechbrain.inference.speaker import EncoderClassifier
from speechbrain_ext.data.manifest import read_manifest
from speechbrain_ext.evaluation.verification import (
    read_trial_file,
    verify_trials,
)

# The self-supervised objectives have their own benchmark, bench/csc.py.
SUPERVISED = ("aam_softmax", "supcon", "aamsupcon", "hybrid", "authors")
# Every other system is tested against this one.
BASELINE = "aam_softmax"

# The budget (see the module docstring for its CPU time). 40 utterances per
# speaker keep the 48 speakers with 200 short words from outweighing the
# 202 others; P = 64 speakers per batch (of the ~200 training speakers)
# still gives every speaker a place in most batches of an epoch.
DEFAULT = {
    "epochs": 8,
    "channels": [64, 64, 64, 64, 192],
    "attention_channels": 64,
    "emb_dim": 192,
    "sentence_len": 1.0,
    "embeddings_per_view": 128,
    "n_utts_per_speaker": 2,
    "lr": 0.002,
    "lr_final": 0.0002,
    "valid_max_utterances": 400,
    "n_test_speakers": 40,
    "n_valid_speakers": 10,
    "max_utts_per_speaker": 40,
    "n_speakers": None,
    "test_fold": None,
    "device": "cpu",
    "num_workers": 1,
    "threads": 1,
}
# Smoke test: a subset of the corpus, a tiny model, two epochs.
QUICK = dict(
    DEFAULT,
    epochs=2,
    channels=[32, 32, 32, 32, 96],
    attention_channels=32,
    emb_dim=64,
    sentence_len=0.5,
    embeddings_per_view=16,
    valid_max_utterances=100,
    n_test_speakers=4,
    n_valid_speakers=2,
    max_utts_per_speaker=16,
    n_speakers=16,
)
# Budget keys that can be set from the command line.
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

SCORES_FILE = "scores.npy"
# Every run's per-trial scores, the trial list once (bench.scores).
TRIAL_SCORES_NPZ = "objectives_scores.npz"
REQUEST_FILE = "bench_request.json"
CURVES_PNG = "objectives_curves.png"
# Overrides that do not change what a run computes.
NOT_COMPARED = ("num_workers",)


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


def _comparable(overrides):
    """Overrides as JSON values, without those that change no result."""
    overrides = json.loads(json.dumps(overrides))
    for key in NOT_COMPARED:
        overrides.pop(key, None)
    return overrides


def cached_overrides(run_folder):
    """The overrides a cached run was (or is being) trained with.

    Arguments
    ---------
    run_folder : str
        The run's folder.

    Returns
    -------
    dict or None or str
        The overrides of its record (finished run) or of its request
        (started run); None if the folder is absent or empty; ``"unknown"``
        if it holds files but neither (a run of an older benchmark).
    """
    for name, key in ((RUN_RECORD, "overrides"), (REQUEST_FILE, None)):
        path = os.path.join(run_folder, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fin:
                content = json.load(fin)
            return content[key] if key else content
    if os.path.isdir(run_folder) and os.listdir(run_folder):
        return "unknown"
    return None


def ensure_current(run_folder, overrides):
    """Keeps a cached run only if it was trained with ``overrides``.

    A run whose recorded overrides differ (``num_workers`` aside), or
    whose overrides are unknown, is moved to ``<run_folder>.stale-<time>``
    so that it is trained again rather than silently reused. The requested
    overrides are then written to ``bench_request.json`` in the run folder,
    so an interrupted run is recognised too.

    Arguments
    ---------
    run_folder : str
        The run's folder.
    overrides : dict
        The train.py overrides requested for it.

    Returns
    -------
    str or None
        Where a stale run was moved, or None.

    Example
    -------
    >>> folder = str(getfixture("tmp_path") / "run")
    >>> ensure_current(folder, {"lr": 0.1, "num_workers": 1}) is None
    True
    >>> ensure_current(folder, {"lr": 0.1, "num_workers": 4}) is None
    True
    >>> moved = ensure_current(folder, {"lr": 0.2})
    >>> os.path.basename(moved).startswith("run.stale-")
    True
    >>> cached_overrides(folder)
    {'lr': 0.2}
    """
    wanted = _comparable(overrides)
    found = cached_overrides(run_folder)
    moved = None
    if found is not None and (
        found == "unknown" or _comparable(found) != wanted
    ):
        moved = f"{run_folder}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
        suffix = 0
        while os.path.exists(moved + (f"-{suffix}" if suffix else "")):
            suffix += 1
        moved += f"-{suffix}" if suffix else ""
        os.replace(run_folder, moved)
    os.makedirs(run_folder, exist_ok=True)
    request = os.path.join(run_folder, REQUEST_FILE)
    if not os.path.isfile(request):
        with open(request, "w", encoding="utf-8") as fout:
            json.dump(json.loads(json.dumps(overrides)), fout, indent=2)
    return moved


def forget_stale_reference(out, corpus, config):
    """Removes the cached Resemblyzer score if the trials have changed.

    :func:`bench.objective_runs.score_resemblyzer` keeps its result in
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
        The budget (for :func:`bench.objective_runs.prepare_options`).

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


def trial_speakers(prep_folder):
    """Labels and enrolment/test speakers of the prepared trials.

    Arguments
    ---------
    prep_folder : str
        Holds ``eval.csv`` (``ID``, ``spk_id``) and ``trials.csv``.

    Returns
    -------
    labels : numpy.ndarray
        bool, True for target trials, in the trial file's order.
    enrol_speakers : numpy.ndarray
        The speaker of each trial's enrolment utterance.
    test_speakers : numpy.ndarray
        The speaker of each trial's test utterance.
    """
    rows = read_manifest(
        os.path.join(prep_folder, "eval.csv"), {"data_root": ""}
    )
    speaker = {row["ID"]: row["spk_id"] for row in rows}
    trials = read_trial_file(os.path.join(prep_folder, "trials.csv"))
    labels = np.array([int(label) == 1 for _, _, label in trials])
    enrol = np.array([speaker[enrol_id] for enrol_id, _, _ in trials])
    test = np.array([speaker[test_id] for _, test_id, _ in trials])
    return labels, enrol, test


def trial_list(prep_folder, labels, enrol, test):
    """The trial fields :func:`bench.scores.save_trial_scores` keeps.

    Arguments
    ---------
    prep_folder : str
        Holds ``trials.csv``.
    labels, enrol, test : numpy.ndarray
        From :func:`trial_speakers`.

    Returns
    -------
    dict
        ``enrol``, ``test`` (utterance ids), ``label``, ``enrol_speaker``
        and ``test_speaker``.
    """
    trials = read_trial_file(os.path.join(prep_folder, "trials.csv"))
    return {
        "enrol": [enrol_id for enrol_id, _, _ in trials],
        "test": [test_id for _, test_id, _ in trials],
        "label": labels,
        "enrol_speaker": enrol,
        "test_speaker": test,
    }


def trial_scores(run_folder, record, paths, config):
    """The per-trial scores of a run's export, computed once and kept.

    Scoring in :func:`bench.objective_runs.run_one` caches the embeddings
    in ``<run>/verify/embeddings``, so this only reloads them and scores
    the trials again; the scores go to ``<run>/scores.npy``.

    Arguments
    ---------
    run_folder : str
        The run's folder (with ``export``).
    record : dict
        The run's record; its ``EER`` must match the scores'.
    paths : dict
        ``prep_folder`` and ``corpus``.
    config : dict
        ``device`` and ``num_workers``.

    Returns
    -------
    numpy.ndarray
        One cosine score per trial of ``trials.csv``, in its order.

    Raises
    ------
    RuntimeError
        If the scores do not give the record's EER (a stale record).
    """
    path = os.path.join(run_folder, SCORES_FILE)
    if os.path.isfile(path):
        return np.load(path)
    encoder = EncoderClassifier.from_hparams(
        source=os.path.abspath(os.path.join(run_folder, "export")),
        savedir=os.path.join(run_folder, "verify", "model"),
        run_opts={"device": config["device"]},
    )
    rows = read_manifest(
        os.path.join(paths["prep_folder"], "eval.csv"),
        {"data_root": paths["corpus"]},
    )
    trials = read_trial_file(os.path.join(paths["prep_folder"], "trials.csv"))
    result = verify_trials(
        encoder,
        rows,
        rows,
        trials,
        batch_size=64,
        cache_folder=os.path.join(run_folder, "verify", "embeddings"),
        num_workers=config["num_workers"],
    )
    if abs(100 * result["EER"] - record["EER"]) > 1e-3:
        raise RuntimeError(
            f"{run_folder}: the trial scores give EER "
            f"{100 * result['EER']:.3f}%, its record {record['EER']:.3f}%; "
            "remove the run folder to train and score it again"
        )
    partial = path + ".partial.npy"
    np.save(partial, np.asarray(result["scores"], dtype=np.float64))
    os.replace(partial, path)
    return np.load(path)


def validation_curve(run_folder):
    """``[(epoch, validation EER), ...]`` of a run, from its train log.

    Arguments
    ---------
    run_folder : str
        The run's folder, holding ``train_log.txt``.

    Returns
    -------
    list of tuple
        One point per validated epoch; empty without a log.
    """
    path = os.path.join(run_folder, "train_log.txt")
    if not os.path.isfile(path):
        print(f"[{run_folder}] no train_log.txt: no learning curve", flush=True)
        return []
    return curve_points(read_learning_curve(path))


def best_validation_eer(curve):
    """The lowest finite validation EER of a curve (NaN if none).

    Arguments
    ---------
    curve : list of tuple
        ``(epoch, EER)`` points.

    Returns
    -------
    float
        The checkpoint-selection criterion of the run.

    Example
    -------
    >>> best_validation_eer([(1, 30.0), (2, float("nan")), (3, 21.5)])
    21.5
    >>> math.isnan(best_validation_eer([]))
    True
    """
    finite = [eer for _, eer in curve if math.isfinite(eer)]
    return min(finite) if finite else float("nan")


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
        Name -> :func:`bench.stats.paired_speaker_bootstrap` result on the
        seeds the two systems share (``seeds``), with ``text``
        (:func:`bench.stats.format_verdict`); empty without the baseline.

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
    if baseline not in scores:
        return {}
    results = {}
    for name, by_seed in scores.items():
        if name == baseline:
            continue
        seeds = sorted(set(by_seed) & set(scores[baseline]))
        if not seeds:
            continue
        result = paired_speaker_bootstrap(
            np.stack([by_seed[s] for s in seeds]),
            np.stack([scores[baseline][s] for s in seeds]),
            labels,
            enrol,
            test,
            n_resamples=n_resamples,
            seed=0,
        )
        result = {
            key: (value.item() if isinstance(value, np.generic) else value)
            for key, value in result.items()
        }
        result["seeds"] = seeds
        result["text"] = format_verdict(result, name, baseline)
        results[name] = result
    return results


def select_by_validation(records, variants):
    """Per objective, the setting with the lowest validation EER.

    Arguments
    ---------
    records : list of dict
        Run records with ``name``, ``seed`` and ``best_valid_EER``.
    variants : list of tuple
        ``(name, objective, overrides)`` of every system run.

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
    for name, objective, _ in variants:
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
        The budget (see :data:`DEFAULT`).
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
    k = config["n_utts_per_speaker"]
    per_view = config["embeddings_per_view"]
    trials = (
        (f"{records[0]['n_trials']} trials ({records[0]['n_target']} target)")
        if records
        else "no trials"
    )
    parts = ["# Speaker objectives at an equal training budget", table]
    if paired:
        lines = [
            f"- {result['text']} (seeds {result['seeds']}, "
            f"p = {result['p_value']:.3f})"
            for result in paired.values()
        ]
        n_resamples = next(iter(paired.values())).get("n_resamples", "?")
        parts.append(
            f"Paired bootstrap over the test speakers ({n_resamples} "
            "resamples of the speakers, each trial weighted by how often its "
            f"two speakers were drawn), each system against {BASELINE} on "
            "the same trials, EER averaged over the shared seeds:\n\n"
            + "\n".join(lines)
        )
    if selection:
        lines = [
            f"- {objective}: **{entry['selected']}** ("
            + ", ".join(
                f"{name} {eer:.2f}%"
                for name, eer in entry["candidates"].items()
            )
            + f"; seeds {entry['seeds']})"
            for objective, entry in selection.items()
        ]
        parts.append(
            "Settings selected on the validation speakers (mean "
            "best validation EER; the test trials play no "
            "part):\n\n" + "\n".join(lines)
        )
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
    cap = config.get("max_utts_per_speaker")
    parts.append(
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
    parts.append(
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, "
        f"torch {machine['torch']}, device {machine['device']}, "
        f"{config['threads'] or 'default'} torch thread(s) per run."
    )
    parts.append(f"Regenerate with:\n\n    {command}\n")
    return "\n\n".join(parts)


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
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per run (default 8)"
    )
    parser.add_argument(
        "--channels",
        type=int,
        nargs=5,
        default=None,
        help="ECAPA-TDNN channels (default 64 x4, 192)",
    )
    parser.add_argument("--attention_channels", type=int, default=None)
    parser.add_argument("--emb_dim", type=int, default=None)
    parser.add_argument(
        "--sentence_len",
        type=float,
        default=None,
        help="training crop, seconds (default 1.0)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam lr (lr_final = lr / 10); not authors'",
    )
    parser.add_argument(
        "--embeddings_per_view",
        type=int,
        default=None,
        help="batch: utterances per step (P x K with K=2 "
        "for the contrastive objectives; default 128)",
    )
    parser.add_argument(
        "--max_utts_per_speaker",
        type=int,
        default=None,
        help="utterances kept per speaker (default 40; 0: all)",
    )
    parser.add_argument("--n_test_speakers", type=int, default=None)
    parser.add_argument("--n_valid_speakers", type=int, default=None)
    parser.add_argument(
        "--test_fold",
        type=int,
        default=None,
        help="hold out block K of --n_test_speakers speakers of the "
        "seeded speaker order (cross-validation: run K = 0..S/n-1 in "
        "separate --out folders, pool with bench.verdicts)",
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
    config = dict(QUICK if args.quick else DEFAULT)
    for key in BUDGET_OPTIONS:
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.lr is not None:
        config["lr_final"] = args.lr / 10
    config["max_utts_per_speaker"] = config["max_utts_per_speaker"] or None
    config.update(
        device=args.device, num_workers=args.num_workers, threads=args.threads
    )
    return config


def corpus_folder(data_folder, out, config):
    """The corpus the runs read: the data, or a linked subset of it.

    A subset lives in a folder named after its size, so another cap never
    mixes with the links of an earlier one.

    Arguments
    ---------
    data_folder : str
        The ``<speaker>/<utt>`` corpus.
    out : str
        The benchmark folder.
    config : dict
        ``n_speakers`` and ``max_utts_per_speaker`` (None: all).

    Returns
    -------
    str
        Absolute path of the corpus.
    """
    corpus = os.path.abspath(data_folder)
    n_speakers, cap = config["n_speakers"], config["max_utts_per_speaker"]
    if not (n_speakers or cap):
        return corpus
    name = f"corpus_{n_speakers or 'all'}spk_{cap or 'all'}utt"
    return subset_corpus(corpus, os.path.join(out, name), n_speakers, cap)


def main(argv=None):
    """Runs the benchmark, prints the table, writes markdown and JSON."""
    args = parse_args(argv)
    config = build_config(args)
    if config["threads"]:
        # Scoring runs here: on a busy CPU, extra threads mostly spin.
        torch.set_num_threads(config["threads"])
    seeds = args.seeds[:1] if args.quick else args.seeds
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    corpus = corpus_folder(args.data_folder, out, config)
    paths = {
        "out": out,
        "corpus": corpus,
        "prep_folder": os.path.join(out, "prepared"),
    }
    started = time.time()
    paths.update(prepare_once(corpus, paths["prep_folder"], config))

    variants = [(name, name, {}) for name in args.objectives]
    variants += [parse_variant(text) for text in args.variants]
    variant_seeds = args.variant_seeds or seeds
    if not set(variant_seeds) <= set(seeds):
        raise ValueError(
            f"--variant_seeds {variant_seeds} must be among "
            f"the seeds run, {seeds}"
        )
    records, scores, curves = [], {}, {}
    for seed in seeds:  # seed-major: a partial benchmark covers every model
        for index, (name, objective, extra) in enumerate(variants):
            is_variant = index >= len(args.objectives)
            if is_variant and seed not in variant_seeds:
                continue
            run_folder = os.path.join(out, "runs", name, str(seed))
            moved = ensure_current(
                run_folder,
                train_overrides(
                    objective,
                    extra,
                    config,
                    seed,
                    dict(paths, output_folder=run_folder),
                ),
            )
            if moved:
                print(
                    f"[{name} seed {seed}] cached with other settings: "
                    f"moved to {moved}; training again",
                    flush=True,
                )
            record = run_one(name, objective, extra, seed, config, paths)
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
    reference = None
    if not args.no_resemblyzer:
        forget_stale_reference(out, corpus, config)
        reference = score_resemblyzer(paths, config)

    summary = summarize_runs(records)
    labels, enrol, test = trial_speakers(paths["prep_folder"])
    save_trial_scores(
        os.path.join(out, TRIAL_SCORES_NPZ),
        trial_list(paths["prep_folder"], labels, enrol, test),
        {
            (name, seed, "clean"): values
            for name, by_seed in scores.items()
            for seed, values in by_seed.items()
        },
    )
    paired = paired_against(
        scores, labels, enrol, test, n_resamples=args.n_resamples
    )
    for name, result in paired.items():
        summary[name][f"paired_vs_{BASELINE}"] = result
        print(result["text"], flush=True)
    selection = select_by_validation(records, variants)
    curves = {
        name: by_seed
        for name, by_seed in curves.items()
        if any(by_seed.values())
    }
    curves_png = os.path.join(out, CURVES_PNG)
    if curves:
        plot_learning_curves(
            curves,
            curves_png,
            "Validation EER per epoch (mean, min-max over seeds)",
        )
    table = markdown_table(summary, reference, paired)
    machine = machine_info(config["device"])
    command = "python -m bench.objectives " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    with open(
        os.path.join(out, "objectives.md"), "w", encoding="utf-8"
    ) as fout:
        fout.write(
            markdown_report(
                table,
                config,
                seeds,
                records,
                machine,
                command,
                paired,
                selection,
                curves,
            )
        )
    result = {
        "config": {
            **config,
            "seeds": seeds,
            "prepare_options": prepare_options(config),
            "variants": [list(v) for v in variants],
            "variant_seeds": variant_seeds,
            "n_resamples": args.n_resamples,
            "data_folder": os.path.abspath(args.data_folder),
        },
        "machine": machine,
        "runs": records,
        "summary": summary,
        "selection": selection,
        "curves": {
            name: {
                str(seed): [list(point) for point in points]
                for seed, points in by_seed.items()
            }
            for name, by_seed in curves.items()
        },
        "curves_png": CURVES_PNG if curves else None,
        "reference": reference,
        "benchmark_seconds_this_call": time.time() - started,
        "table": table,
    }
    with open(
        os.path.join(out, "objectives.json"), "w", encoding="utf-8"
    ) as fout:
        json.dump(result, fout, indent=2)
    print(table)
    print(f"Written to {out}/objectives.md, objectives.json and {CURVES_PNG}")
    return result


if __name__ == "__main__":
    main()
