#!/usr/bin/env python3
"""The demo behind ``make demo``: a whole run on a generated corpus.

1. generates a small multi-speaker corpus in CN-Celeb's on-disk layout;
2. trains the baseline (ECAPA-TDNN + AAM-softmax, a small model) and the
   hybrid (AAM-SupCon + AAM-softmax, speaker-balanced P x K batches) with
   ``train.py``, which prepares the data (once, in a shared folder), trains
   and exports; both get the same model, epochs, crops and embeddings per
   batch;
3. exports the same architecture untrained, as a reference;
4. scores the trial list with ``verify.py`` for the three models and both
   enrolment modes, prints a table and writes it with the budget, the
   machine and the time taken to ``demo.json``.

Every step is the command a user would type; each is printed before it runs.
Everything is written under ``--output_folder`` (default ``results/demo``).
"""

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time

import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain_ext.data.demo_corpus import generate_demo_corpus
from speechbrain_ext.inference.export import export_encoder

HERE = os.path.dirname(os.path.abspath(__file__))

# The generated corpus (generate_demo_corpus arguments): 24 training
# speakers (2 of them become the validation set) and 16 evaluation speakers
# (16 enrolments x 96 test files = 1536 trials, 96 of them target trials).
DEMO_CORPUS = {
    "n_train_speakers": 24,
    "n_eval_speakers": 16,
    "utts_per_speaker": 16,
    "n_test_per_eval_speaker": 6,
}

# Shared by both trained systems: a model and budget that train both in a
# few minutes on a 2-core CPU. Each batch holds batch_size utterances, each
# cropped once and embedded n_views times (the clean crop and an augmented
# copy): 32 embeddings per step for either objective, and 22 steps per epoch
# for either (352 training utterances, each used once per epoch).
DEMO_OVERRIDES = {
    "channels": [128, 128, 128, 128, 384],
    "attention_channels": 64,
    "emb_dim": 128,
    "number_of_epochs": 12,
    "batch_size": 16,
    "n_views": 2,
    "lr": 0.002,
    "sentence_len": 1.5,
    "num_workers": 0,
    "ckpt_interval_minutes": 0,
    "valid_max_utterances": 400,
    # The demo corpus's files kept whole, as the CN-Celeb default's joining
    # to 5 s would leave a third of the utterances and steps.
    "join_min_duration": 0.0,
    "min_duration": 0.0,
}

# K utterances per speaker in the hybrid's P x K batches; P is set so that
# P * K = batch_size.
UTTS_PER_SPEAKER = 2

# name: (hparams file, overrides on top of DEMO_OVERRIDES)
SYSTEMS = {
    "aam_softmax": ("aam_softmax.yaml", {}),
    "aamsupcon": (
        "aamsupcon.yaml",
        {
            "n_speakers_per_batch": DEMO_OVERRIDES["batch_size"]
            // UTTS_PER_SPEAKER,
            "n_utts_per_speaker": UTTS_PER_SPEAKER,
        },
    ),
}


def run(command, log):
    """Runs one recipe command from the recipe folder, echoing it.

    Returns the seconds it took.
    """
    print("\n$ " + shlex.join(command), flush=True)
    start = time.time()
    with open(log, "a") as fout:
        fout.write("\n$ " + shlex.join(command) + "\n")
        process = subprocess.run(
            command,
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        fout.write(process.stdout)
    if process.returncode != 0:
        print(process.stdout[-4000:])
        sys.exit(f"step failed (exit {process.returncode}); log: {log}")
    seconds = time.time() - start
    print(f"  done in {seconds:.0f} s", flush=True)
    return seconds


def overrides_args(overrides):
    """Turns a dict into SpeechBrain command-line overrides."""
    return [f"--{key}={json.dumps(value)}" for key, value in overrides.items()]


def export_untrained(hparams_file, overrides, export_folder):
    """Exports the randomly initialised model as the untrained reference."""
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    return export_encoder(
        export_folder,
        hparams["export_template"],
        hparams["embedding_model"],
        values=dict(hparams["export_values"]),
    )


def cpu_seconds():
    """User + system CPU seconds of this process and its finished children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def describe_machine(load_start, load_end):
    """One line on what the demo ran on (recorded in demo.json)."""
    gpu = (
        f"GPU {torch.cuda.get_device_name(0)} present, not used"
        if torch.cuda.is_available()
        else "no GPU"
    )
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    return (
        f"{os.cpu_count()}-core {platform.machine()} CPU "
        f"({platform.system()}), {gpu}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} intra-op threads, OMP_WAIT_POLICY="
        f"{wait_policy}; 1-minute load average {load_start:.1f} at the start "
        f"and {load_end:.1f} at the end"
    )


def shown_command(argv):
    """The demo's own command line, as typed from the current folder."""
    python = sys.executable
    if not os.path.relpath(python).startswith(".."):
        python = os.path.relpath(python)
    return shlex.join([python, sys.argv[0], *argv])


def parse_args(argv):
    """The demo's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_folder", default="results/demo")
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument(
        "--epochs", type=int, default=DEMO_OVERRIDES["number_of_epochs"]
    )
    parser.add_argument(
        "--json",
        default=None,
        help="where to write the results (default: <output_folder>/demo.json)",
    )
    return parser.parse_args(argv)


def quiet_openmp():
    """Makes torch's OpenMP threads wait passively unless the user chose.

    They spin while they wait for work by default. On a CPU shared with
    other jobs, a spinning thread burns the time slice its partner needs:
    steps ran several times slower. Passive waiting costs little on an idle
    machine; the recipe commands inherit it.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        print(
            "OMP_WAIT_POLICY=PASSIVE for the recipe commands (set it to override)"
        )


def train_systems(shared, out, log, step_seconds):
    """Trains every system of :data:`SYSTEMS`; their export folders."""
    models = {}
    for name, (hparams_name, extra) in SYSTEMS.items():
        overrides = {
            **shared,
            **extra,
            "output_folder": os.path.join(out, name),
        }
        # Relative to the recipe folder, where the commands run.
        hparams_file = os.path.join("hparams", hparams_name)
        step_seconds[f"train {name}"] = run(
            [
                sys.executable,
                "train.py",
                hparams_file,
                *overrides_args(overrides),
            ],
            log,
        )
        models[name] = os.path.join(out, name, "export")
    return models


def verify_models(models, corpus, prep_folder, out, log, step_seconds):
    """Runs verify.py on every model, both enrolment modes; summaries."""
    summaries = {}
    for name, model in models.items():
        verify_folder = os.path.join(out, name, "verify")
        step_seconds[f"verify {name}"] = run(
            [
                sys.executable,
                "verify.py",
                "--model",
                model,
                "--name",
                name,
                "--data_folder",
                corpus,
                "--prep_folder",
                prep_folder,
                "--output_folder",
                verify_folder,
                "--enrol_mode",
                "concat",
                "avg",
            ],
            log,
        )
        with open(os.path.join(verify_folder, "summary.json")) as fin:
            summaries[name] = json.load(fin)
    return summaries


def print_results(summaries, models, out):
    """The result table and where the models and plots are."""
    n_trials = summaries["untrained"]["results"]["concat"]["n_trials"]
    print(
        "\nDemo result (CN-Celeb-layout demo corpus, "
        f"{n_trials} trials, cosine scoring):\n"
    )
    print("| model | enrolment | EER (%) | minDCF (p=0.01) |")
    print("| --- | --- | --- | --- |")
    for name, summary in summaries.items():
        for condition, result in summary["results"].items():
            print(
                f"| {name} | {condition} | {100 * result['EER']:.2f} | "
                f"{result['minDCF']:.3f} |"
            )
    print("\nThe corpus is synthetic: the table shows that the pipeline works,")
    print("not which objective is better on real speech.")
    for name in SYSTEMS:
        print(f"\nExported {name} model: {models[name]}")
        print(f"Plots and scores: {os.path.join(out, name, 'verify')}")
    print(
        "Load one with: EncoderClassifier.from_hparams("
        f"source='{models['aam_softmax']}')"
    )


def demo_report(argv, args, timing, summaries):
    """What ``demo.json`` holds: command, machine, times, budget, results."""
    return {
        "command": shown_command(argv),
        "machine": describe_machine(timing["load_start"], os.getloadavg()[0]),
        "total_seconds": round(timing["total"]),
        "cpu_seconds": round(cpu_seconds()),
        # What an idle machine would take if every core were busy throughout.
        "idle_estimate_seconds": round(cpu_seconds() / (os.cpu_count() or 1)),
        "step_seconds": {k: round(v) for k, v in timing["steps"].items()},
        "budget": {
            "corpus": {**DEMO_CORPUS, "seed": args.seed},
            "shared_overrides": {
                **DEMO_OVERRIDES,
                "number_of_epochs": args.epochs,
            },
            "system_overrides": {
                name: extra for name, (_, extra) in SYSTEMS.items()
            },
            "hparams": {
                name: f"recipes/CNCeleb/hparams/{hparams_name}"
                for name, (hparams_name, _) in SYSTEMS.items()
            },
        },
        **summaries,
    }


def main(argv=None):
    """Runs the demo, prints the result table and writes demo.json."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    out = os.path.abspath(args.output_folder)
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "demo_log.txt")
    started = time.time()
    quiet_openmp()
    load_start = os.getloadavg()[0]

    corpus = os.path.join(out, "CN-Celeb_flac")
    print(f"Generating the demo corpus (CN-Celeb layout) in {corpus}")
    generate_demo_corpus(corpus, seed=args.seed, **DEMO_CORPUS)
    shared = {
        **DEMO_OVERRIDES,
        "number_of_epochs": args.epochs,
        "seed": args.seed,
        "data_folder": corpus,
        "prep_folder": os.path.join(out, "prepared"),
    }
    step_seconds = {}
    models = train_systems(shared, out, log, step_seconds)
    untrained = export_untrained(
        os.path.join(HERE, "hparams", SYSTEMS["aam_softmax"][0]),
        {**shared, "output_folder": os.path.join(out, "untrained")},
        os.path.join(out, "untrained", "export"),
    )
    models = {"untrained": untrained, **models}
    summaries = verify_models(
        models, corpus, shared["prep_folder"], out, log, step_seconds
    )
    print_results(summaries, models, out)

    total = time.time() - started
    timing = {"load_start": load_start, "total": total, "steps": step_seconds}
    report = demo_report(argv, args, timing, summaries)
    json_file = args.json or os.path.join(out, "demo.json")
    os.makedirs(os.path.dirname(os.path.abspath(json_file)), exist_ok=True)
    with open(json_file, "w") as fout:
        json.dump(report, fout, indent=2)
        fout.write("\n")
    print(
        f"Total time: {total:.0f} s ({report['cpu_seconds']} CPU seconds); "
        f"results: {json_file}; full log: {log}"
    )


if __name__ == "__main__":
    main()
