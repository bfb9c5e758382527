"""Benchmark: CSC against SimCLR and supervised training, clean and interfered.

On a ``<speaker>/<utt>`` corpus (the shared real-speech data ``speakers/``),
prepared once exactly as :mod:`bench.objectives` does (same split, same
text-independent trials, same noise and RIR banks), four systems are
trained with ``recipes/CNCeleb/train.py`` at an equal budget of training
epochs, same model, crops and batch:

- ``csc``: ``hparams/csc.yaml``, self-supervised for ``--ssl_epochs``
  (no speaker label read);
- ``simclr``: ``hparams/simclr.yaml`` on the same interfered views, for
  ``--ssl_epochs`` (the negative-sampling alternative);
- ``csc_finetune``: the ``csc`` export fine-tuned with AAM-softmax
  (``hparams/csc_finetune.yaml``) for ``--finetune_epochs``;
- ``aam_softmax``: the supervised baseline (``hparams/aam_softmax.yaml``)
  for ``--ssl_epochs + --finetune_epochs``, i.e. as many epochs as
  ``csc_finetune`` used in all.

Each export is scored on the trials by cosine with the test side clean and
corrupted by an interfering talker (``--conditions``, e.g. ``sir0`` is
0 dB SIR) drawn from other test speakers, deterministically by
``--corruption_seed`` (see :mod:`speechbrain_ext.robustness`). Results are
mean ± std over ``--seeds``.

Writes ``<out>/csc.md``, ``<out>/csc.json`` and ``<out>/eer_vs_sir.png``.
Finished trainings and scorings are skipped, so an interrupted benchmark
resumes.

Run from the repository root::

    python -m bench.csc --data_folder ../shared/data/speakers \\
        --out results/bench/csc --seeds 1 2
    # on a GPU: a bigger model and more epochs
    python -m bench.csc --data_folder ../shared/data/speakers \\
        --out results/bench/csc_gpu --device cuda --ssl_epochs 10 \\
        --finetune_epochs 10 --channels 512 512 512 512 1536
"""

import argparse
import json
import os
import time

import torch
from speechbrain.inference.speaker import EncoderClassifier

from bench.machine import machine_info, write_report
from bench.objective_runs import prepare_once, run_one
from bench.objectives import DEFAULT
from bench.stats import format_spread, seed_summary
from speechbrain_ext.robustness import Corruptor, parse_condition
from speechbrain_ext.scoring.plots import plot_eer_vs_sir
from speechbrain_ext.verification import (
    read_manifest,
    read_trial_file,
    verify_trials,
)

SYSTEMS = ("csc", "simclr", "csc_finetune", "aam_softmax")
# Opt-in variants: CSC whose two views are the two halves of a crop twice as
# long (same samples per step), so they share the speaker but not the words;
# and AAM-softmax trained for (c)'s fine-tuning epochs alone (equal labels).
VARIANTS = ("csc_segments", "csc_segments_finetune", "aam_softmax_labelled")
LABELS = {
    "csc": "(a) CSC, self-supervised",
    "simclr": "(b) SimCLR, self-supervised",
    "csc_finetune": "(c) CSC + AAM-softmax fine-tuning",
    "aam_softmax": "(d) AAM-softmax, supervised",
    "csc_segments": "(a') CSC, views = crop halves",
    "csc_segments_finetune": "(c') CSC (crop halves) + fine-tuning",
    "aam_softmax_labelled": "(d') AAM-softmax, fine-tuning epochs only",
}
CONDITIONS_RECORD = "bench_conditions.json"


def system_plan(system, seed, args, out):
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

    Returns
    -------
    tuple
        ``(objective, epochs, extra overrides)``.

    Example
    -------
    >>> args = argparse.Namespace(ssl_epochs=2, finetune_epochs=1)
    >>> system_plan("aam_softmax", 1, args, "out")
    ('aam_softmax', 3, {})
    >>> system_plan("csc_finetune", 1, args, "out")[2]
    {'pretrained_encoder': 'out/runs/csc/1/export'}
    """
    if system in ("csc", "simclr"):
        return system, args.ssl_epochs, {}
    if system == "csc_segments":
        halves = {"segments": 2, "n_views": 1,
                  "sentence_len": 2 * DEFAULT["sentence_len"]}
        return "csc", args.ssl_epochs, halves
    if system.endswith("_finetune"):
        source = system[: -len("_finetune")]
        pretrained = os.path.join(out, "runs", source, str(seed), "export")
        return ("csc_finetune", args.finetune_epochs,
                {"pretrained_encoder": pretrained})
    if system == "aam_softmax":
        return system, args.ssl_epochs + args.finetune_epochs, {}
    if system == "aam_softmax_labelled":  # (c)'s labelled budget alone
        return "aam_softmax", args.finetune_epochs, {}
    raise ValueError(
        f"unknown system {system!r}; expected one of {SYSTEMS + VARIANTS}"
    )


def score_conditions(run_folder, paths, config, conditions, seed):
    """EER/minDCF of a run's export with the test side of each condition.

    Arguments
    ---------
    run_folder : str
        Holds ``export/``; records go to ``bench_conditions.json``.
    paths : dict
        ``corpus`` and ``prep_folder``.
    config : dict
        ``device`` and ``num_workers``.
    conditions : list of str
        Condition names (``clean``, ``sir0``...).
    seed : int
        Corruption seed: the same interferers for every system.

    Returns
    -------
    dict
        Condition -> ``{"EER" (%), "minDCF"}``.
    """
    record_path = os.path.join(run_folder, CONDITIONS_RECORD)
    done = {}
    if os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as fin:
            done = json.load(fin)
    missing = [c for c in conditions if c not in done]
    if not missing:
        return done
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
    for name in missing:
        condition = parse_condition(name)
        corruptor = None
        if not condition.is_clean:
            corruptor = Corruptor(condition, rows, seed=seed)
        result = verify_trials(
            encoder,
            rows,
            rows,
            trials,
            batch_size=64,
            cache_folder=os.path.join(run_folder, "verify", "embeddings"),
            num_workers=config["num_workers"],
            test_transform=corruptor,
        )
        done[name] = {"EER": 100 * result["EER"], "minDCF": result["minDCF"]}
        print(f"  {name}: EER {done[name]['EER']:.2f}%", flush=True)
        with open(record_path, "w", encoding="utf-8") as fout:
            json.dump(done, fout, indent=2)
    return done


def summarize(records, conditions):
    """System -> condition -> seed summary of EER and minDCF.

    Example
    -------
    >>> records = [{"system": "csc", "conditions": {"clean": {
    ...     "EER": 10.0, "minDCF": 0.5}}}, {"system": "csc", "conditions": {
    ...     "clean": {"EER": 12.0, "minDCF": 0.7}}}]
    >>> summarize(records, ["clean"])["csc"]["clean"]["EER"]["mean"]
    11.0
    """
    summary = {}
    for system in dict.fromkeys(r["system"] for r in records):
        runs = [r for r in records if r["system"] == system]
        summary[system] = {
            name: {
                key: seed_summary([r["conditions"][name][key] for r in runs])
                for key in ("EER", "minDCF")
            }
            for name in conditions
        }
    return summary


def markdown(summary, conditions):
    """The table: one row per system, EER (%) per condition."""
    header = "| system | " + " | ".join(
        f"EER % {name}" for name in conditions
    )
    lines = [header + " |", "|---" * (len(conditions) + 1) + "|"]
    for system, by_condition in summary.items():
        cells = [format_spread(by_condition[c]["EER"]) for c in conditions]
        lines.append(f"| {LABELS[system]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--out", default="results/bench/csc")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS),
                        choices=SYSTEMS + VARIANTS)
    parser.add_argument("--ssl_epochs", type=int, default=2)
    parser.add_argument("--finetune_epochs", type=int, default=1)
    parser.add_argument("--conditions", nargs="+",
                        default=["clean", "sir10", "sir5", "sir0"])
    parser.add_argument("--corruption_seed", type=int, default=1234)
    parser.add_argument("--channels", type=int, nargs="+",
                        default=DEFAULT["channels"])
    parser.add_argument("--device", default=DEFAULT["device"])
    parser.add_argument("--num_workers", type=int,
                        default=DEFAULT["num_workers"])
    parser.add_argument("--threads", type=int, default=DEFAULT["threads"],
                        help="OMP threads of each training run (0: default)")
    return parser.parse_args(argv)


def main(argv=None):
    """Trains, scores and reports every (system, seed)."""
    args = parse_args(argv)
    start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = dict(DEFAULT, channels=args.channels, device=args.device,
                  num_workers=args.num_workers, threads=args.threads)
    out = os.path.abspath(args.out)
    prep_folder = os.path.join(out, "prepared")
    paths = {"out": out, "corpus": os.path.abspath(args.data_folder),
             "prep_folder": prep_folder,
             **prepare_once(args.data_folder, prep_folder, config)}
    records = []
    for seed in args.seeds:
        for system in args.systems:
            objective, epochs, extra = system_plan(system, seed, args, out)
            run = run_one(system, objective, extra, seed,
                          dict(config, epochs=epochs), paths)
            run_folder = os.path.join(out, "runs", system, str(seed))
            print(f"[{system} seed {seed}] scoring {args.conditions}",
                  flush=True)
            run["conditions"] = score_conditions(
                run_folder, paths, config, args.conditions,
                args.corruption_seed)
            run["system"] = system
            records.append(run)
    summary = summarize(records, args.conditions)
    plot_eer_vs_sir(sir_curves(summary), os.path.join(out, "eer_vs_sir.png"))
    report = write_report(
        {
            "config": {**config, **vars(args)},
            "machine": machine_info(args.device),
            "runs": records,
            "summary": summary,
            "benchmark_seconds_this_call": time.time() - start,
        },
        lambda report: markdown(report["summary"], args.conditions),
        os.path.join(out, "csc.json"),
        "bench.csc",
        argv,
    )
    with open(os.path.join(out, "csc.md"), "w", encoding="utf-8") as fout:
        fout.write(report["table"] + "\n")

if __name__ == "__main__":
    main()
