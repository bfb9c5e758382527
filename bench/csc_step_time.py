"""Seconds per training step of the CSC benchmark's systems, side by side.

The epoch times recorded by ``bench/csc.py`` come from runs made at
different machine loads, so they cannot price one system against another.
This script builds each labelled system from its recipe YAML with the
benchmark's model and batch (ECAPA-TDNN C=64, 32 crops of 1 s), and times
full training steps (views, forward, backward, optimizer step) in turns:
round r times one step of every system in a fresh random order, so a
change of load touches every system alike. It reports the median, min and
max over the rounds and the ratio of each median to the AAM-softmax
recipe's, and writes JSON.

Run from the repository root::

    python -m bench.csc_step_time --rounds 20 \\
        --out bench/results/csc_step_time.json
"""

import argparse
import os
import random
import tempfile
import time

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml

from bench.machine import machine_info, write_report
from speechbrain_ext.augment import generate_noise_bank, simulate_rirs

RECIPE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "recipes",
    "CNCeleb",
)
# The benchmark's budget (bench/csc.py's DEFAULT) and each system's file
# and overrides (bench/csc.py's system_plan).
BUDGET = {
    "channels": [64, 64, 64, 64, 192],
    "attention_channels": 64,
    "emb_dim": 192,
    "sentence_len": 1.0,
    "batch_size": 32,
    "lr": 0.002,
    "n_train_speakers": 200,
}
SYSTEMS = {
    "aam_softmax": ("aam_softmax.yaml", {}),
    "aam_softmax_mixup": ("aam_softmax_mixup.yaml", {}),
    "aam_softmax_csc": ("aam_softmax_csc.yaml", {"mask_channels": 64}),
    "csc": ("csc.yaml", {"mask_channels": 64, "lr": 0.0005}),
    "simclr": ("simclr.yaml", {"lr": 0.0005}),
}


def build(hparams_file, overrides, banks):
    """The system's hparams, modules and optimizer."""
    path = os.path.join(RECIPE, "hparams", hparams_file)
    with open(path, encoding="utf-8") as fin:
        text = fin.read()
    # Nothing is read from the data folder: batches are random.
    values = {**BUDGET, **overrides, **banks, "data_folder": "unused"}
    values = {k: v for k, v in values.items() if f"\n{k}:" in "\n" + text}
    hparams = load_hyperpyyaml(text, values)
    modules = torch.nn.ModuleDict(hparams["modules"])
    optimizer = hparams["opt_class"](modules.parameters())
    return hparams, modules, optimizer


def step(hparams, modules, optimizer, wavs, labels):
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


def main(argv=None):
    """Times every system in turns and writes the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="results/bench/csc_step_time.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    order = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        banks = {
            "output_folder": os.path.join(folder, "out"),
            "noise_csv": generate_noise_bank(
                os.path.join(folder, "noise"), n_files=8, duration=2.0
            ),
            "rir_csv": simulate_rirs(os.path.join(folder, "rirs"), n_rirs=8),
        }
        built = {name: build(*spec, banks) for name, spec in SYSTEMS.items()}
        crop = int(BUDGET["sentence_len"] * 16000)
        times = {name: [] for name in built}
        for round_index in range(args.warmup + args.rounds):
            names = list(built)
            order.shuffle(names)
            for name in names:
                wavs = 0.1 * torch.randn(BUDGET["batch_size"], crop)
                labels = torch.randint(0, 8, (BUDGET["batch_size"],))
                seconds = step(*built[name], wavs, labels)
                if round_index >= args.warmup:
                    times[name].append(seconds)
    load = os.getloadavg()
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

    def table(report):
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

    write_report(
        {
            "config": {**BUDGET, **vars(args)},
            "machine": machine_info("cpu"),
            "load_average_after": load,
            "summary": summary,
        },
        table,
        args.out,
        "bench.csc_step_time",
        argv,
    )


if __name__ == "__main__":
    main()
