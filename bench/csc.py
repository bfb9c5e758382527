"""Benchmark: CSC against SimCLR and supervised training, clean and interfered.

On a ``<speaker>/<utt>`` corpus (the shared real-speech data ``speakers/``,
250 speakers), prepared once by the run layer (:mod:`bench.runs`: a
speaker-disjoint split, text-independent trials, the same noise and RIR
banks), the systems of :data:`SYSTEMS` (labelled (a)-(h) in
:data:`LABELS`) are trained with ``recipes/CNCeleb/train.py``, same model,
crops and batch (:func:`system_plan`): CSC (a) and SimCLR (b),
self-supervised for ``--ssl_epochs``; (a) fine-tuned with AAM-softmax (c)
against AAM-softmax for the same ``--finetune_epochs`` (d); and, for
``--ssl_epochs + --finetune_epochs``, the AAM-softmax recipe (f) with CSC
as an auxiliary loss (e) and its two ablations (e1, e2), with
margin-mixup (h), and AAM-softmax on CSC's interfered views only (g).

Each export is scored on the trials by cosine with the test side clean and
corrupted by an interfering talker (``--conditions``, e.g. ``sir0`` is
0 dB SIR) drawn from other test speakers, deterministically by
``--corruption_seed`` (:func:`bench.runs.condition_scores`), so every
system is scored on the same trials and mixtures. Results are mean ± std
over ``--seeds``; the pairs of :data:`PAIRS` are compared per condition
with a paired bootstrap over test speakers, recomputed from the per-trial
scores file (:func:`bench.scores.recompute`), and the validation EER of
every epoch gives the learning curves.

Writes ``<out>/csc.md``, ``<out>/csc.json``, ``<out>/csc_scores.npz``,
``<out>/csc_labelled_budget.json``, ``<out>/eer_vs_sir.png`` and
``<out>/learning_curves.png``. Every (system, seed) is cached with its
configuration (training record, per-condition scores), so an interrupted
benchmark resumes, and seeds can run in parallel processes sharing
``--out`` once the data is prepared (``--prepare_only`` first, then
``--no_report`` workers and one ``--report_only`` call).

``--step_time`` prices the systems instead (:func:`step_time`): their
training steps timed side by side on random batches.

Run from the repository root::

    python -m bench.csc --data_folder <speakers> \\
        --out results/bench/csc --prepare_only
    python -m bench.csc --data_folder <speakers> \\
        --out results/bench/csc --seeds 1 2 3
    # bench/results/csc.json from the finished runs
    python -m bench.csc --data_folder <speakers> \\
        --out results/bench/csc --seeds 1 2 3 --report_only
    # bench/results/csc_step_time.json
    python -m bench.csc --step_time bench/results/csc_step_time.json \\
        --rounds 20
    # smoke test (a corpus subset, a tiny model, one seed): ~ 5 min
    python -m bench.csc --data_folder <speakers> \\
        --out /tmp/csc_quick --quick --seeds 1
"""

import argparse
import json
import os
import random
import tempfile
import time

import numpy as np
import torch

from bench.curves import curves_table, plot_learning_curves, read_learning_curve
from bench.machine import machine_info, write_report
from bench.runs import (
    BUDGET,
    OBJECTIVES,
    QUICK as RUNS_QUICK,
    RUN_RECORD,
    condition_scores,
    is_current,
    load_recipe_hparams,
    prepare,
    prepared_rows,
    run_folder_of,
    run_one,
    scores_path,
    train_overrides,
    trial_table,
    validation_curve,
)
from bench.scores import recompute, save_trial_scores, score_key, summary_table
from bench.stats import seed_summary
from speechbrain_ext.augment import generate_noise_bank, simulate_rirs
from speechbrain_ext.evaluation.robustness import parse_condition
from speechbrain_ext.scoring.plots import plot_eer_vs_sir

SYSTEMS = (
    "aam_softmax_csc",
    "aam_softmax",
    "aam_softmax_mixup",
    "csc",
    "simclr",
    "aam_softmax_csc_separation",
    "aam_softmax_csc_information",
    "csc_finetune",
    "aam_softmax_labelled",
    "aam_softmax_same_views",
)
LABELS = {
    "csc": "(a) CSC, self-supervised",
    "simclr": "(b) SimCLR, self-supervised",
    "csc_finetune": "(c) CSC + AAM-softmax fine-tuning",
    "aam_softmax_labelled": "(d) AAM-softmax, (c)'s labelled epochs",
    "aam_softmax_csc": "(e) AAM-softmax recipe + CSC auxiliary",
    "aam_softmax": "(f) AAM-softmax recipe",
    "aam_softmax_same_views": "(g) AAM-softmax on CSC's interfered views",
    "aam_softmax_mixup": "(h) AAM-softmax recipe + margin-mixup",
    "aam_softmax_csc_separation": "(e1) recipe + CSC separation only",
    "aam_softmax_csc_information": "(e2) recipe + CSC information only",
}
# (system, baseline): the comparisons the benchmark exists for.
PAIRS = (
    ("csc", "simclr"),
    ("csc_finetune", "aam_softmax_labelled"),
    ("aam_softmax_csc", "aam_softmax"),
    ("aam_softmax_csc", "aam_softmax_mixup"),
    ("aam_softmax_mixup", "aam_softmax"),
    ("aam_softmax_csc_separation", "aam_softmax"),
    ("aam_softmax_csc_information", "aam_softmax"),
    ("aam_softmax_same_views", "aam_softmax"),
)
# Ablations of the auxiliary CSC loss: which weights are set to 0.
ABLATIONS = {
    "aam_softmax_csc_separation": {
        "information_weight": 0.0,
        "variance_weight": 0.0,
        "covariance_weight": 0.0,
    },
    "aam_softmax_csc_information": {"beta": 0.0},
}
# Fixed before any run (never tuned on the trials). The data and model of
# bench.objectives with batches of 32 crops (all 250 speakers, at most 40
# utterances each), so that 3 seeds of the 6 systems fit in about an hour
# on 2 cores with two workers. Crops of 1 s:
# the CSC/SimCLR views are its two 0.5 s halves (most utterances here
# last about 1 s, so longer crops would repeat the same word in both).
# The CSC head and teacher are scaled to the budget: K = 1024 prototypes
# for 64-row batches, and a teacher averaging about the last 100 steps
# (0.99) since a run lasts a few hundred steps. The self-supervised systems
# (CSC and SimCLR alike) train at lr 0.0005: picked for CSC on the
# validation speakers (2-epoch runs, docs/csc.md), and given to SimCLR too
# so that the two differ in the objective only.
DEFAULT = {
    **{key: value for key, value in BUDGET.items() if key != "epochs"},
    "embeddings_per_view": 32,
}
SSL_LR = {"lr": 0.0005}
CSC_HEAD = {"mask_channels": 64}
QUICK = {key: value for key, value in RUNS_QUICK.items() if key != "epochs"}
QUICK_HEAD = dict(CSC_HEAD, mask_channels=16)


def system_plan(system, seed, args, out, head=None):
    """Objective, epochs and extra overrides of one system.

    Arguments
    ---------
    system : str
        One of :data:`SYSTEMS`.
    seed : int
        The run's seed (the fine-tuning starts from the same seed's CSC).
    args : argparse.Namespace
        ``ssl_epochs`` and ``finetune_epochs``.
    out : str
        The benchmark folder.
    head : dict, optional
        CSC head and teacher overrides (:data:`CSC_HEAD` if None).

    Returns
    -------
    tuple
        ``(objective, epochs, extra overrides)``.

    Example
    -------
    >>> args = argparse.Namespace(ssl_epochs=2, finetune_epochs=1)
    >>> system_plan("aam_softmax_labelled", 1, args, "out")
    ('aam_softmax', 1, {})
    >>> system_plan("csc_finetune", 1, args, "out")[2]
    {'pretrained_encoder': 'out/runs/csc/1/export'}
    >>> system_plan("aam_softmax", 1, args, "o")
    ('aam_softmax', 3, {})
    >>> objective, epochs, extra = system_plan(
    ...     "aam_softmax_same_views", 1, args, "o"
    ... )
    >>> objective, epochs, extra["csc_weight"], extra["speaker_views"]
    ('aam_softmax_csc', 3, 0.0, None)
    """
    head = CSC_HEAD if head is None else head
    total = args.ssl_epochs + args.finetune_epochs
    if system == "csc":
        return "csc", args.ssl_epochs, dict(head, **SSL_LR)
    if system == "simclr":
        return "simclr", args.ssl_epochs, dict(SSL_LR)
    if system == "csc_finetune":
        pretrained = os.path.join(out, "runs", "csc", str(seed), "export")
        return (
            "csc_finetune",
            args.finetune_epochs,
            {"pretrained_encoder": pretrained},
        )
    if system == "aam_softmax_labelled":
        return "aam_softmax", args.finetune_epochs, {}
    if system == "aam_softmax_csc":
        return "aam_softmax_csc", total, dict(head)
    if system in ABLATIONS:
        return "aam_softmax_csc", total, dict(head, **ABLATIONS[system])
    if system == "aam_softmax":
        return "aam_softmax", total, {}
    if system == "aam_softmax_mixup":
        return "aam_softmax_mixup", total, {}
    if system == "aam_softmax_same_views":
        extra = dict(head, csc_weight=0.0, speaker_views=None)
        return "aam_softmax_csc", total, extra
    raise ValueError(f"unknown system {system!r}; expected one of {SYSTEMS}")


def finished_runs(records):
    """system -> [seed, ...] of the reported run records, in order."""
    runs = {}
    for record in records:
        runs.setdefault(record["system"], []).append(record["seed"])
    return runs


def learning_curves(out, records, ssl_epochs):
    """System label -> seed -> [(epoch, validation EER)], all epochs.

    Fine-tuning continues the self-supervised epochs on the x axis.
    """
    curves = {}
    for system, seeds in finished_runs(records).items():
        offset = ssl_epochs if system == "csc_finetune" else 0
        curves[LABELS[system]] = {
            seed: [
                (epoch + offset, value)
                for epoch, value in validation_curve(
                    os.path.join(out, "runs", system, str(seed))
                )
            ]
            for seed in seeds
        }
    return curves


# Training-set monitors (means over the epoch's batches) and validation
# monitors (the I(z; g) estimate and its shuffled control).
MONITORS = (
    "loss_invariance",
    "loss_variance",
    "loss_covariance",
    "loss_emb_std",
    "loss_emb_rank",
    "loss_separation",
    "loss_speaker",
)
VALID_MONITORS = ("loss_information", "loss_information_shuffled")
CSC_SYSTEMS = ("csc", "aam_softmax_csc", *ABLATIONS)


def collapse_monitors(out, records):
    """Per-epoch training monitors of the CSC runs, from their logs.

    Returns system -> seed -> list of ``{"epoch", monitor: value}``.
    """
    monitors = {}
    for system, seeds in finished_runs(records).items():
        if system not in CSC_SYSTEMS:
            continue
        monitors[system] = {}
        for seed in seeds:
            records = read_learning_curve(
                os.path.join(out, "runs", system, str(seed), "train_log.txt")
            )
            monitors[system][str(seed)] = [
                {
                    "epoch": record["epoch"],
                    **{
                        name: record["train"][name]
                        for name in MONITORS
                        if name in record["train"]
                    },
                    **{
                        name: record["valid"][name]
                        for name in VALID_MONITORS
                        if name in record.get("valid", {})
                    },
                }
                for record in records
            ]
    return monitors


def write_scores(path, records, prep_folder):
    """Every run's per-trial scores and the trial list, in one ``.npz``.

    Arguments
    ---------
    path : str
        The file to write (:func:`bench.scores.save_trial_scores`).
    records : list of dict
        Run records with ``system``, ``seed``, ``conditions`` and
        ``run_folder``.
    prep_folder : str
        Holds ``eval.csv`` and ``trials.csv``.
    """
    scores = {
        score_key(record["system"], record["seed"], condition): np.load(
            scores_path(record["run_folder"], condition)
        )
        for record in records
        for condition in record["conditions"]
    }
    save_trial_scores(path, trial_table(prep_folder), scores)


def seconds_per_step(records, prep_folder, batch_size):
    """system -> seed summary of training seconds per optimizer step.

    Each epoch's wall time (training and its validation) over its steps,
    ``len(train.csv) // batch_size`` (``drop_last``), averaged over the
    epochs of a run.
    """
    steps = max(len(prepared_rows(prep_folder, "train")) // batch_size, 1)
    per_system = {}
    for record in records:
        epochs = record.get("epoch_seconds") or []
        if epochs:
            per_system.setdefault(record["system"], []).append(
                float(np.mean(epochs)) / steps
            )
    return {name: seed_summary(values) for name, values in per_system.items()}


def as_given(value, absolute, given):
    """Replaces the absolute ``--out`` folder by the one given, everywhere
    in a (nested) record, so that result files name no machine's paths."""
    if isinstance(value, str):
        return value.replace(absolute, given)
    if isinstance(value, dict):
        return {k: as_given(v, absolute, given) for k, v in value.items()}
    if isinstance(value, list):
        return [as_given(v, absolute, given) for v in value]
    return value


def sir_curves(summary):
    """System label -> {SIR dB or "clean": mean EER} for the plot."""
    curves = {}
    for system, by_condition in summary.items():
        points = {}
        for name, stats in by_condition.items():
            condition = parse_condition(name)
            if condition.is_clean:
                points["clean"] = stats["EER"]["mean"]
            elif condition.snr_db is None:
                points[float(condition.sir_db)] = stats["EER"]["mean"]
        curves[LABELS[system]] = points
    return curves


def write_labelled_budget(report, path):
    """(c) against (d), the comparison at an equal labelled budget, alone."""
    pair = ("csc_finetune", "aam_softmax_labelled")
    subset = {
        "command": report["command"],
        "config": report["config"],
        "summary": {
            name: report["summary"][name]
            for name in pair
            if name in report["summary"]
        },
        "paired": {
            name: result
            for name, result in report["paired"].items()
            if name.startswith("csc_finetune_vs_")
        },
    }
    with open(path, "w", encoding="utf-8") as fout:
        json.dump(subset, fout, indent=2)


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Run from the repository root::")[1],
    )
    parser.add_argument(
        "--data_folder", help="the corpus (not needed by --step_time)"
    )
    parser.add_argument("--out", default="results/bench/csc")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS
    )
    parser.add_argument("--ssl_epochs", type=int, default=3)
    parser.add_argument("--finetune_epochs", type=int, default=1)
    parser.add_argument(
        "--conditions", nargs="+", default=["clean", "sir10", "sir5", "sir0"]
    )
    parser.add_argument("--corruption_seed", type=int, default=1234)
    parser.add_argument("--channels", type=int, nargs="+", default=None)
    parser.add_argument("--device", default=DEFAULT["device"])
    parser.add_argument(
        "--num_workers", type=int, default=DEFAULT["num_workers"]
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT["threads"],
        help="OMP threads of each training run (0: default)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a corpus subset and a tiny model (smoke test)",
    )
    parser.add_argument(
        "--prepare_only",
        action="store_true",
        help="prepare the data and stop (before parallel "
        "processes share --out)",
    )
    parser.add_argument(
        "--no_report",
        action="store_true",
        help="train and score only (a parallel worker)",
    )
    parser.add_argument(
        "--report_only",
        action="store_true",
        help="report the finished runs among --systems x --seeds, "
        "training nothing (the others are listed as missing)",
    )
    parser.add_argument(
        "--step_time",
        metavar="JSON",
        help="only time training steps of STEP_TIME_SYSTEMS side by side "
        "on random batches (first of --seeds), and write this file",
    )
    parser.add_argument("--rounds", type=int, default=20, help="--step_time")
    parser.add_argument("--warmup", type=int, default=2, help="--step_time")
    args = parser.parse_args(argv)
    if args.data_folder is None and args.step_time is None:
        parser.error("--data_folder is required without --step_time")
    return args


def run_plan(system, seed, args, config, paths, head):
    """The objective, overrides and budget of one (system, seed).

    Returns
    -------
    tuple
        ``(objective, extra overrides, budget with the system's epochs,
        train.py overrides)``.
    """
    objective, epochs, extra = system_plan(
        system, seed, args, paths["out"], head
    )
    config = dict(config, epochs=epochs)
    run_folder = run_folder_of(paths, system, seed)
    overrides = train_overrides(
        objective, extra, config, seed, dict(paths, output_folder=run_folder)
    )
    return objective, extra, config, overrides


def is_finished(run_folder, overrides, conditions):
    """Whether a run of these overrides is trained and scored in every
    condition."""
    return (
        os.path.isfile(os.path.join(run_folder, RUN_RECORD))
        and is_current(run_folder, overrides)
        and all(os.path.isfile(scores_path(run_folder, c)) for c in conditions)
    )


def main(argv=None):
    """Trains, scores and reports every (system, seed)."""
    args = parse_args(argv)
    start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.step_time:
        return step_time(args, argv)
    base, head = (QUICK, QUICK_HEAD) if args.quick else (DEFAULT, CSC_HEAD)
    config = dict(
        base,
        device=args.device,
        num_workers=args.num_workers,
        threads=args.threads,
    )
    if args.channels:
        config["channels"] = args.channels
    paths = prepare(
        args.data_folder, os.path.abspath(args.out), config, "corpus"
    )
    if args.prepare_only:
        return
    records, missing = [], []
    for seed in args.seeds:
        for system in args.systems:
            run_folder = run_folder_of(paths, system, seed)
            objective, extra, run_config, overrides = run_plan(
                system, seed, args, config, paths, head
            )
            if args.report_only and not is_finished(
                run_folder, overrides, args.conditions
            ):
                missing.append(f"{system}/{seed}")
                continue
            run = run_one(system, objective, extra, seed, run_config, paths)
            print(
                f"[{system} seed {seed}] scoring {args.conditions}", flush=True
            )
            run["conditions"] = condition_scores(
                run_folder, paths, config, args.conditions, args.corruption_seed
            )
            run["system"] = system
            run["run_folder"] = run_folder
            records.append(run)
    if args.no_report:
        return
    if missing:
        print(f"not finished, left out: {', '.join(missing)}", flush=True)
    report_benchmark(args, config, head, paths, records, start, argv, missing)


def report_benchmark(
    args, config, head, paths, records, start, argv, missing=()
):
    """Scores file, table, verdicts, curves and monitors of the runs."""
    out = paths["out"]
    scores_file = os.path.join(out, "csc_scores.npz")
    write_scores(scores_file, records, paths["prep_folder"])
    print("[paired tests, from the scores file]", flush=True)
    verdicts = recompute(scores_file, PAIRS)
    curves = learning_curves(out, records, args.ssl_epochs)
    plot_eer_vs_sir(
        sir_curves(verdicts["summary"]), os.path.join(out, "eer_vs_sir.png")
    )
    plot_learning_curves(
        curves,
        os.path.join(out, "learning_curves.png"),
        "CSC benchmark: validation EER per epoch (mean, min-max over seeds)",
    )
    report = {
        "config": {**vars(args), **config, "csc_head": head},
        "machine": machine_info(args.device),
        "runs": records,
        "summary": verdicts["summary"],
        "seconds_per_step": seconds_per_step(
            records, paths["prep_folder"], config["embeddings_per_view"]
        ),
        "paired": verdicts["paired"],
        "scores_file": "csc_scores.npz",
        "not_finished": list(missing),
        "curves": {
            label: {str(seed): points for seed, points in by_seed.items()}
            for label, by_seed in curves.items()
        },
        "curves_table": curves_table(curves),
        "monitors": collapse_monitors(out, records),
        "benchmark_seconds_this_call": time.time() - start,
    }
    report = write_report(
        as_given(report, out, args.out),
        lambda report: summary_table(
            report["summary"], args.conditions, LABELS
        ),
        os.path.join(out, "csc.json"),
        "bench.csc",
        argv,
    )
    write_labelled_budget(report, os.path.join(out, "csc_labelled_budget.json"))
    with open(os.path.join(out, "csc.md"), "w", encoding="utf-8") as fout:
        fout.write(report["table"] + "\n\n")
        fout.write("Seconds per training step (mean over seeds):\n\n")
        for name, timing in report["seconds_per_step"].items():
            fout.write(f"- {LABELS[name]}: {timing['mean']:.2f} s\n")
        fout.write("\nPaired bootstrap over test speakers (95%):\n\n")
        for name, result in report["paired"].items():
            fout.write(f"- {result['text']} [{name.split('@')[1]}]\n")
        fout.write("\nValidation EER (%) per epoch:\n\n")
        fout.write(report["curves_table"] + "\n")


# The systems whose training steps --step_time times side by side.
STEP_TIME_SYSTEMS = (
    "aam_softmax",
    "aam_softmax_mixup",
    "aam_softmax_csc",
    "csc",
    "simclr",
)


def step_time_system(system, args, folder):
    """A system built from its YAML with the benchmark's overrides.

    Nothing is read from a corpus (batches are random), so the classifier
    is sized for the benchmark's 200 training speakers.

    Returns
    -------
    tuple
        ``(hparams, modules, optimizer)``.
    """
    paths = {
        "out": folder,
        "corpus": "unused",
        "prep_folder": folder,
        "noise_csv": os.path.join(folder, "noise", "noise_bank.csv"),
        "rir_csv": os.path.join(folder, "rirs", "rirs.csv"),
    }
    objective, _, _, overrides = run_plan(
        system, 1, args, DEFAULT, paths, CSC_HEAD
    )
    overrides["n_train_speakers"] = 200
    hparams = load_recipe_hparams(
        OBJECTIVES[objective][0], overrides, optional=tuple(overrides)
    )
    modules = torch.nn.ModuleDict(hparams["modules"])
    return hparams, modules, hparams["opt_class"](modules.parameters())


def training_step(hparams, modules, optimizer, wavs, labels):
    """One training step as TaskBrain runs it; returns its seconds."""
    task = hparams["task"]
    start = time.perf_counter()
    outputs = task.forward(modules, wavs, torch.ones(len(wavs)))
    loss = task.loss(
        modules, outputs, labels if task.needs_speaker_labels else None
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    task.on_optimizer_step(modules)
    return time.perf_counter() - start


def step_time(args, argv=None):
    """Seconds per training step of :data:`STEP_TIME_SYSTEMS`, in turns.

    The epoch times of the benchmark's runs come from runs made at
    different machine loads, so they cannot price one system against
    another. Here each system is built with the benchmark's model and
    batch, and full training steps (views, forward, backward, optimizer
    step) on random batches are timed in turns: round r times one step of
    every system in a fresh random order, so a change of load touches every
    system alike. Reports the median, min and max over the rounds and the
    ratio of each median to the AAM-softmax recipe's.
    """
    torch.manual_seed(args.seeds[0])
    order = random.Random(args.seeds[0])
    batch = DEFAULT["embeddings_per_view"]
    crop = int(DEFAULT["sentence_len"] * 16000)
    with tempfile.TemporaryDirectory() as folder:
        generate_noise_bank(os.path.join(folder, "noise"), n_files=8)
        simulate_rirs(os.path.join(folder, "rirs"), n_rirs=8)
        built = {
            name: step_time_system(name, args, folder)
            for name in STEP_TIME_SYSTEMS
        }
        times = {name: [] for name in built}
        for round_index in range(args.warmup + args.rounds):
            names = list(built)
            order.shuffle(names)
            for name in names:
                wavs = 0.1 * torch.randn(batch, crop)
                labels = torch.randint(0, 8, (batch,))
                seconds = training_step(*built[name], wavs, labels)
                if round_index >= args.warmup:
                    times[name].append(seconds)
    reference = float(np.median(times["aam_softmax"]))
    summary = {
        name: {
            "median": float(np.median(values)),
            "min": float(np.min(values)),
            "max": float(np.max(values)),
            "n": len(values),
            "ratio_to_aam_softmax": float(np.median(values)) / reference,
        }
        for name, values in times.items()
    }
    report = {
        "config": {
            "budget": DEFAULT,
            "csc_head": CSC_HEAD,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "threads": args.threads,
            "seed": args.seeds[0],
        },
        "machine": machine_info("cpu"),
        "load_average_after": os.getloadavg(),
        "summary": summary,
    }
    return write_report(
        report, step_time_table, args.step_time, "bench.csc", argv
    )


def step_time_table(report):
    """Markdown: seconds per step, median [min-max], and the ratio."""
    lines = [
        "| system | s/step median [min-max] | x AAM-softmax recipe |",
        "|---|---|---|",
    ]
    for name, row in report["summary"].items():
        lines.append(
            f"| {name} | {row['median']:.3f} [{row['min']:.3f}-"
            f"{row['max']:.3f}] | {row['ratio_to_aam_softmax']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
