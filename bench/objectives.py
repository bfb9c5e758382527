"""Benchmark: speaker objectives side by side at an equal training budget.

On a ``<speaker>/<utt>`` corpus (the shared real-speech data
``speakers/``: 48 speakers x 200 short utterances), the data is prepared
once: a speaker-disjoint split (``--n_test_speakers`` held out for trials,
``--n_valid_speakers`` for checkpoint selection, the rest for training)
and a text-independent trial list over the test speakers (every
same-speaker pair of different words, as many different-speaker pairs).
ECAPA-TDNN is then trained with ``recipes/CNCeleb/train.py`` once per
objective and seed, all runs with the same budget (epochs, crop length,
2 views, model, 32 embeddings per view and batch, learning rate, seeds):

- ``aam_softmax``: ``hparams/aam_softmax.yaml``, shuffled batches of 32;
- ``supcon``: ``hparams/supcon.yaml``, P x K = 16 x 2 batches;
- ``aamsupcon``: ``hparams/aamsupcon.yaml`` with
  ``--aam_softmax_weight=0`` (pure AAM-SupCon), 16 x 2;
- ``hybrid``: ``hparams/aamsupcon.yaml``, lambda 1, 16 x 2.

Each exported model (the checkpoint with the best validation EER) is scored
on the trials by cosine with
:func:`speechbrain_ext.verification.verify_trials`, and so is the
pretrained Resemblyzer encoder as an outside reference. EER and minDCF
(p_target 0.01) are reported as mean ± std [min-max] over seeds, next to
the training time per epoch (wall clock from "Going into epoch" to the
end-of-epoch checkpoint, read from the training output as it runs).

Writes ``<out>/objectives.md`` and ``<out>/objectives.json`` (per-seed
numbers, configuration, machine). Finished runs (export and scores present)
are skipped, so an interrupted benchmark resumes; an interrupted training
run resumes from its last checkpoint.

Run from the repository root::

    python -m bench.objectives --data_folder ../shared/data/speakers \\
        --out results/bench/objectives --seeds 1 2 3
    # smoke test (a corpus subset, a tiny model, one seed): ~ 3 min
    python -m bench.objectives --data_folder ../shared/data/speakers \\
        --out /tmp/objectives_quick --quick
    # on a GPU: a bigger model and more epochs
    python -m bench.objectives --data_folder ../shared/data/speakers \\
        --out results/bench/objectives_gpu --device cuda \\
        --channels 512 512 512 512 1536 --epochs 20 --num_workers 4

Extra variants (e.g. a sweep) are named ``name=objective:key=value,...``
with hparams keys of that objective's file::

    --variants hybrid_l0.5=hybrid:aam_softmax_weight=0.5 \\
        aamsupcon_t0.1=aamsupcon:temperature=0.1 --variant_seeds 1

(``--variant_seeds`` must be among ``--seeds``.)
"""

import argparse
import json
import os
import sys
import time

import torch
import yaml

from bench.corpus_subset import subset_corpus
from bench.machine import machine_info
from bench.objective_runs import (
    OBJECTIVES,
    prepare_once,
    prepare_options,
    run_one,
    score_resemblyzer,
)
from bench.stats import format_spread, seed_summary

# The self-supervised objectives have their own benchmark, bench/csc.py.
SUPERVISED = ("aam_softmax", "supcon", "aamsupcon", "hybrid")

# The budget that fits the default 4 objectives x 3 seeds into about 50 min
# on a 2-core CPU shared with other work: one epoch of this model (200
# steps of 32 crops x 2 views x 1 s) took ~3 min there, run start-up,
# export and scoring ~40 s more.
DEFAULT = {
    "epochs": 1,
    "channels": [64, 64, 64, 64, 192],
    "attention_channels": 64,
    "emb_dim": 192,
    "sentence_len": 1.0,
    "embeddings_per_view": 32,
    "n_utts_per_speaker": 2,
    "lr": 0.002,
    "lr_final": 0.0002,
    "valid_max_utterances": 400,
    "n_test_speakers": 12,
    "n_valid_speakers": 4,
    "max_utts_per_speaker": None,
    "n_speakers": None,
    "device": "cpu",
    "num_workers": 1,
    "threads": 1,
}
# Smoke test: a subset of the corpus and a tiny model.
QUICK = dict(
    DEFAULT,
    channels=[32, 32, 32, 32, 96],
    attention_channels=32,
    emb_dim=64,
    sentence_len=0.5,
    embeddings_per_view=16,
    valid_max_utterances=100,
    n_test_speakers=4,
    n_valid_speakers=2,
    max_utts_per_speaker=24,
    n_speakers=16,
)

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
            raise ValueError(f"variant {text!r}: {assignment!r} is not "
                             "key=value")
        overrides[key] = yaml.safe_load(value)
    return name, objective, overrides


def summarize_runs(records):
    """Groups run records by variant name and summarises over seeds.

    Arguments
    ---------
    records : list of dict
        Run records with ``name``, ``seed``, ``EER``, ``minDCF`` and
        ``epoch_seconds``.

    Returns
    -------
    dict
        Name -> ``{"seeds", "EER", "minDCF", "epoch_seconds"}``, the last
        three :func:`bench.stats.seed_summary` dicts (epoch seconds
        pooled over every epoch of every seed).

    Example
    -------
    >>> records = [
    ...     {"name": "a", "seed": 1, "EER": 10.0, "minDCF": 0.5,
    ...      "epoch_seconds": [100.0]},
    ...     {"name": "a", "seed": 2, "EER": 14.0, "minDCF": 0.7,
    ...      "epoch_seconds": [110.0]}]
    >>> summary = summarize_runs(records)["a"]
    >>> summary["seeds"], summary["EER"]["mean"], summary["EER"]["std"]
    ([1, 2], 12.0, 2.8284271247461903)
    """
    grouped = {}
    for record in records:
        grouped.setdefault(record["name"], []).append(record)
    summary = {}
    for name, runs in grouped.items():
        epochs = [s for run in runs for s in run["epoch_seconds"]]
        summary[name] = {
            "seeds": [run["seed"] for run in runs],
            "EER": seed_summary([run["EER"] for run in runs]),
            "minDCF": seed_summary([run["minDCF"] for run in runs]),
            "epoch_seconds": seed_summary(epochs) if epochs else None,
        }
    return summary


def markdown_table(summary, reference=None):
    """The benchmark table: one row per variant, the reference last.

    Arguments
    ---------
    summary : dict
        Output of :func:`summarize_runs`.
    reference : dict, optional
        A scored outside system with ``name``, ``EER``, ``minDCF``.

    Returns
    -------
    str
        A markdown table; spreads as mean ± std [min-max] over seeds.

    Example
    -------
    >>> summary = summarize_runs([{"name": "aam_softmax", "seed": 1,
    ...     "EER": 12.5, "minDCF": 0.81, "epoch_seconds": [95.0]}])
    >>> print(markdown_table(summary, {"name": "ref", "EER": 17.0,
    ...                                "minDCF": 0.9}))
    | system | seeds | EER (%) | minDCF (p=0.01) | train s/epoch |
    | --- | --- | --- | --- | --- |
    | aam_softmax | 1 | 12.50 | 0.810 | 95 |
    | ref | - | 17.00 | 0.900 | - |
    """
    lines = [
        "| system | seeds | EER (%) | minDCF (p=0.01) | train s/epoch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, entry in summary.items():
        epoch = entry["epoch_seconds"]
        lines.append(
            f"| {name} | {len(entry['seeds'])} "
            f"| {format_spread(entry['EER'])} "
            f"| {format_spread(entry['minDCF'], digits=3)} "
            f"| {format_spread(epoch, digits=0) if epoch else '-'} |"
        )
    if reference is not None:
        lines.append(f"| {reference['name']} | - | {reference['EER']:.2f} "
                     f"| {reference['minDCF']:.3f} | - |")
    return "\n".join(lines)


def markdown_report(table, config, seeds, records, machine, command):
    """The table with the budget, the trials and the machine that made it.

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

    Returns
    -------
    str
        Markdown.
    """
    k = config["n_utts_per_speaker"]
    trials = (f"{records[0]['n_trials']} trials ({records[0]['n_target']} "
              "target)") if records else "no trials"
    return (
        "# Speaker objectives at an equal training budget\n\n"
        f"{table}\n\n"
        f"EER and minDCF (p_target 0.01, cosine scoring) on {trials} "
        f"among the {config['n_test_speakers']} held-out speakers' "
        "utterances: every same-speaker pair of different words and as "
        "many random different-speaker pairs of different words; "
        f"mean ± std [min-max] over seeds {seeds}. Train s/epoch: wall "
        "clock of training and validation per epoch, pooled over seeds.\n\n"
        f"Budget of every run: ECAPA-TDNN channels {config['channels']}, "
        f"attention {config['attention_channels']}, embedding "
        f"{config['emb_dim']}; {config['epochs']} epoch(s) of "
        f"{config['sentence_len']} s crops, 2 views, "
        f"{config['embeddings_per_view']} embeddings per view and batch "
        f"(P x K = {config['embeddings_per_view'] // k} x {k} for the "
        f"contrastive objectives); Adam, lr {config['lr']} -> "
        f"{config['lr_final']}; best validation-EER checkpoint "
        f"({config['n_valid_speakers']} validation speakers).\n\n"
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, "
        f"torch {machine['torch']}, device {machine['device']}, "
        f"{config['threads'] or 'default'} torch thread(s) per run.\n\n"
        f"Regenerate with:\n\n    {command}\n"
    )


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Run from the repository root::")[1],
    )
    parser.add_argument("--data_folder", required=True,
                        help="<speaker>/<utt> corpus, e.g. "
                             "../shared/data/speakers")
    parser.add_argument("--out", default="results/bench/objectives")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--objectives", nargs="+",
                        default=list(SUPERVISED), choices=list(SUPERVISED))
    parser.add_argument("--variant_seeds", type=int, nargs="+",
                        default=None,
                        help="seeds of the --variants runs (default: "
                             "--seeds), e.g. 1 for a one-seed sweep")
    parser.add_argument("--variants", nargs="*", default=[],
                        help="extra runs: name=objective:key=value,...")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke test: corpus subset, tiny model, "
                             "first seed only")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run (default 1: ~3 min per epoch "
                             "per run on a shared 2-core CPU)")
    parser.add_argument("--channels", type=int, nargs=5, default=None,
                        help="ECAPA-TDNN channels (default 64 x4, 192)")
    parser.add_argument("--attention_channels", type=int, default=None)
    parser.add_argument("--emb_dim", type=int, default=None)
    parser.add_argument("--sentence_len", type=float, default=None,
                        help="training crop, seconds (default 1.0)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--device", default="cpu",
                        help="torch device of training and scoring")
    parser.add_argument("--num_workers", type=int, default=1,
                        help="data-loading workers per run")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each training run and of "
                             "scoring (0: torch's default); 1 leaves a core "
                             "to the data-loading worker")
    parser.add_argument("--no_resemblyzer", action="store_true")
    return parser.parse_args(argv)


def build_config(args):
    """The budget: defaults (or --quick's), then explicit options."""
    config = dict(QUICK if args.quick else DEFAULT)
    for key in ("epochs", "channels", "attention_channels", "emb_dim",
                "sentence_len", "lr"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.lr is not None:
        config["lr_final"] = args.lr / 10
    config.update(device=args.device, num_workers=args.num_workers,
                  threads=args.threads)
    return config


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
    corpus = os.path.abspath(args.data_folder)
    if config["max_utts_per_speaker"] or config["n_speakers"]:
        corpus = subset_corpus(corpus, os.path.join(out, "corpus"),
                               config["n_speakers"],
                               config["max_utts_per_speaker"])
    paths = {"out": out, "corpus": corpus,
             "prep_folder": os.path.join(out, "prepared")}
    started = time.time()
    paths.update(prepare_once(corpus, paths["prep_folder"], config))

    variants = [(name, name, {}) for name in args.objectives]
    variants += [parse_variant(text) for text in args.variants]
    variant_seeds = args.variant_seeds or seeds
    if not set(variant_seeds) <= set(seeds):
        raise ValueError(f"--variant_seeds {variant_seeds} must be among "
                         f"the seeds run, {seeds}")
    records = []
    for seed in seeds:  # seed-major: a partial benchmark covers every model
        for index, (name, objective, extra) in enumerate(variants):
            is_variant = index >= len(args.objectives)
            if is_variant and seed not in variant_seeds:
                continue
            records.append(run_one(name, objective, extra, seed, config,
                                   paths))
    reference = None
    if not args.no_resemblyzer:
        reference = score_resemblyzer(paths, config)

    summary = summarize_runs(records)
    table = markdown_table(summary, reference)
    machine = machine_info(config["device"])
    command = "python -m bench.objectives " + " ".join(
        sys.argv[1:] if argv is None else argv)
    with open(os.path.join(out, "objectives.md"), "w",
              encoding="utf-8") as fout:
        fout.write(markdown_report(table, config, seeds, records, machine,
                                   command))
    result = {
        "config": {**config, "seeds": seeds,
                   "prepare_options": prepare_options(config),
                   "variants": [list(v) for v in variants],
                   "variant_seeds": variant_seeds,
                   "data_folder": os.path.abspath(args.data_folder)},
        "machine": machine,
        "runs": records,
        "summary": summary,
        "reference": reference,
        "benchmark_seconds_this_call": time.time() - started,
        "table": table,
    }
    with open(os.path.join(out, "objectives.json"), "w",
              encoding="utf-8") as fout:
        json.dump(result, fout, indent=2)
    print(table)
    print(f"Written to {out}/objectives.md and objectives.json")
    return result


if __name__ == "__main__":
    main()
