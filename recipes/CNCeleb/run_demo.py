#!/usr/bin/env python3
"""The demo behind ``make demo``: a whole run on a generated corpus.

1. generates a small multi-speaker corpus in CN-Celeb's on-disk layout;
2. trains the baseline (ECAPA-TDNN + AAM-softmax, a small model) with
   ``train.py``, which prepares the data, trains and exports;
3. exports the same architecture untrained, as a reference;
4. scores the trial list with ``verify.py`` for both models and both
   enrolment modes, and prints a table.

Every step is the command a user would type; each is printed before it runs.
Everything is written under ``--output_folder`` (default ``results/demo``).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from hyperpyyaml import load_hyperpyyaml

from speechbrain_ext.data.demo_corpus import generate_demo_corpus
from speechbrain_ext.export import export_encoder

HERE = os.path.dirname(os.path.abspath(__file__))

# A model and budget that train in a few minutes on a 2-core CPU.
DEMO_OVERRIDES = {
    "channels": [128, 128, 128, 128, 384],
    "attention_channels": 64,
    "emb_dim": 128,
    "number_of_epochs": 8,
    "batch_size": 16,
    "lr": 0.002,
    "sentence_len": 2.0,
    "num_workers": 0,
    "ckpt_interval_minutes": 0,
    "valid_max_utterances": 400,
}


def run(command, log):
    """Runs one recipe command from the recipe folder, echoing it."""
    print("\n$ " + shlex.join(command), flush=True)
    start = time.time()
    with open(log, "a") as fout:
        process = subprocess.run(
            command, cwd=HERE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        fout.write(process.stdout)
    if process.returncode != 0:
        print(process.stdout[-4000:])
        sys.exit(f"step failed (exit {process.returncode}); log: {log}")
    print(f"  done in {time.time() - start:.0f} s", flush=True)
    return process.stdout


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


def main(argv=None):
    """Runs the demo and prints the result table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_folder", default="results/demo")
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument("--epochs", type=int,
                        default=DEMO_OVERRIDES["number_of_epochs"])
    args = parser.parse_args(argv)
    out = os.path.abspath(args.output_folder)
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "demo_log.txt")
    started = time.time()

    corpus = os.path.join(out, "CN-Celeb_flac")
    print(f"Generating the demo corpus (CN-Celeb layout) in {corpus}")
    generate_demo_corpus(corpus, seed=args.seed)

    hparams_file = os.path.join(HERE, "hparams", "aam_softmax.yaml")
    overrides = {
        **DEMO_OVERRIDES,
        "number_of_epochs": args.epochs,
        "seed": args.seed,
        "data_folder": corpus,
        "output_folder": os.path.join(out, "aam_softmax"),
        "prep_folder": os.path.join(out, "prepared"),
    }
    python = sys.executable
    run([python, "train.py", hparams_file, *overrides_args(overrides)], log)
    trained = os.path.join(out, "aam_softmax", "export")
    untrained = export_untrained(
        hparams_file, overrides, os.path.join(out, "untrained", "export")
    )

    rows = []
    for name, model in (("untrained", untrained), ("aam_softmax", trained)):
        verify_folder = os.path.join(out, name, "verify")
        run([python, "verify.py", "--model", model, "--name", name,
             "--data_folder", corpus,
             "--prep_folder", overrides["prep_folder"],
             "--output_folder", verify_folder,
             "--enrol_mode", "concat", "avg"], log)
        with open(os.path.join(verify_folder, "summary.json")) as fin:
            summary = json.load(fin)["results"]
        for condition, result in summary.items():
            rows.append((name, condition, result))

    print("\nDemo result (CN-Celeb-layout demo corpus, "
          f"{rows[0][2]['n_trials']} trials, cosine scoring):\n")
    print("| model | enrolment | EER (%) | minDCF (p=0.01) |")
    print("| --- | --- | --- | --- |")
    for name, condition, result in rows:
        print(f"| {name} | {condition} | {100 * result['EER']:.2f} | "
              f"{result['minDCF']:.3f} |")
    print(f"\nExported model directory: {trained}")
    print("Load it with: EncoderClassifier.from_hparams("
          f"source='{trained}')")
    print(f"Plots and scores: {os.path.join(out, 'aam_softmax', 'verify')}")
    print(f"Total time: {time.time() - started:.0f} s; full log: {log}")


if __name__ == "__main__":
    main()
