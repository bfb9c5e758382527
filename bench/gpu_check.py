"""First-GPU check: the recipe trained on a GPU in fp32 and bf16, in minutes.

Nothing in the project has been timed on a GPU before a session lends one,
and such a loan is short (minutes). This script does, in one call, what the
first GPU should tell us:

1. trains ``recipes/CNCeleb/train.py`` (the recipe as a user runs it, in a
   subprocess) for ``--epochs`` on a small corpus, once per system and
   precision (default: AAM-softmax and the AAM-SupCon hybrid, in fp32 and
   bf16), and records for each the training utterances per second of its
   epochs (validation included), the wall time, the GPU utilisation
   (median of ``nvidia-smi`` samples every 0.5 s) and the peak memory the
   GPU had in use;
2. runs the tests that use CUDA without DDP (``pytest -k cuda`` over the
   files in :data:`CUDA_TESTS`);
3. writes everything to one JSON (default
   ``results/bench/gpu_check/gpu_check.json``) and prints a table.

Without CUDA it still runs (on the CPU, for the tests), with the GPU
columns empty and the CUDA tests reported as skipped.

A device machine gets no network: ``--pack DIR`` prepares what it needs on
this machine first: a copy (not links) of ``--n_speakers`` x
``--utts_per_speaker`` files of the corpus, the Python 3.12 wheels
that the device lacks, downloaded with pip (:data:`WHEELS`), and a
``run.sh`` that installs them and runs this script there. Sizes stay well
under the 64 MiB such a machine accepts.

Run from the repository root::

    python -m bench.gpu_check --pack .gpu_pack --data_folder <speakers>
    # on the GPU machine (the pack travels with the working tree):
    bash .gpu_pack/run.sh
    # or directly, with the installed stack:
    python -m bench.gpu_check --data_folder .gpu_pack/corpus --device cuda
"""

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time

from bench.machine import machine_info, write_report
from bench.runs import (
    OBJECTIVES,
    RECIPE_MODEL,
    SMOKE_MODEL,
    prepare,
    prepared_rows,
    run_training,
    subset_corpus,
    train_overrides,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Python 3.12 wheels the device machine lacks (it has torch and torchaudio).
WHEELS = (
    "speechbrain==1.1.2",
    "hyperpyyaml",
    "ruamel.yaml",
    "ruamel.yaml.clib",
    "soundfile",
    "cffi",
    "pycparser",
    "pyroomacoustics",
)
WHEEL_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
# Test files whose cases are parametrised over "cuda" when it is available.
CUDA_TESTS = (
    "tests/test_augment.py",
    "tests/test_interference.py",
    "tests/test_mixed_precision.py",
)
# The recipe's model and crop; a batch of 128 keeps an epoch of the small
# corpus to a few dozen steps.
BUDGET = {
    **RECIPE_MODEL,
    "epochs": 2,
    "embeddings_per_view": 128,
    "n_utts_per_speaker": 2,
    "lr": 0.002,
    "lr_final": 0.0002,
    "valid_max_utterances": 200,
    "n_test_speakers": 10,
    "n_valid_speakers": 10,
    "num_workers": 4,
}


def make_pack(pack, data_folder, n_speakers, utts_per_speaker):
    """Writes the corpus copy, the wheels and ``run.sh`` into ``pack``.

    Returns
    -------
    dict
        ``corpus_mib`` and ``wheels_mib``.
    """
    corpus = subset_corpus(
        data_folder,
        os.path.join(pack, "corpus"),
        n_speakers,
        utts_per_speaker,
        copy=True,
    )
    corpus_bytes = sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, files in os.walk(corpus)
        for name in files
    )
    wheels = os.path.join(pack, "wheels")
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
    command += ["--only-binary=:all:", "--python-version", "3.12", "-d", wheels]
    for platform in WHEEL_PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + list(WHEELS), check=True)
    wheel_bytes = sum(
        os.path.getsize(os.path.join(wheels, name))
        for name in os.listdir(wheels)
    )
    relative = os.path.relpath(pack, REPO)
    with open(os.path.join(pack, "run.sh"), "w", encoding="utf-8") as fout:
        fout.write(
            "#!/bin/bash\n# Installs the packed wheels, then the GPU check.\n"
            'set -e\ncd "$(dirname "$0")/.."\n'
            f"python -m pip install -q --no-index --no-deps {relative}/wheels/*"
            "\nexport PYTHONPATH=$PWD\n"
            f"python -m bench.gpu_check --data_folder {relative}/corpus "
            '--device cuda --out "${OUT:-results}/gpu_check.json" "$@"\n'
        )
    return {
        "corpus_mib": corpus_bytes / 2**20,
        "wheels_mib": wheel_bytes / 2**20,
    }


class GpuSampler:
    """Samples GPU utilisation (%) and memory in use (MiB) with nvidia-smi.

    Memory is the device's total in use, so it covers a training run in
    another process (torch's own counters would not). Without nvidia-smi
    nothing is sampled and :meth:`summary` is None.

    Arguments
    ---------
    index : int
        The GPU (as nvidia-smi numbers it).
    interval : float
        Seconds between samples.

    Example
    -------
    >>> sampler = GpuSampler(command="no-such-nvidia-smi")
    >>> sampler.start()
    >>> sampler.stop()
    >>> sampler.summary() is None
    True
    """

    def __init__(self, index=0, interval=0.5, command="nvidia-smi"):
        self.command = [
            command,
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
            f"--id={index}",
        ]
        self.interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = None

    def read(self):
        """One ``(utilisation, memory MiB)`` sample, or None."""
        try:
            output = subprocess.run(
                self.command,
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return parse_sample(output)

    def _run(self):
        while not self._stop.wait(self.interval):
            sample = self.read()
            if sample is None:
                return
            self.samples.append(sample)

    def start(self):
        """Starts sampling in a background thread."""
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self):
        """Stops sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self):
        """``{"utilisation_median", "memory_peak_mib", "n"}`` or None."""
        if not self.samples:
            return None
        utilisation = sorted(u for u, _ in self.samples)
        return {
            "utilisation_median": utilisation[len(utilisation) // 2],
            "memory_peak_mib": max(m for _, m in self.samples),
            "n": len(self.samples),
        }


def parse_sample(text):
    """``(utilisation %, memory MiB)`` from one nvidia-smi csv line.

    Example
    -------
    >>> parse_sample("87, 10240\\n")
    (87.0, 10240.0)
    >>> parse_sample("[N/A], 3\\n") is None
    True
    """
    try:
        utilisation, memory = (float(v) for v in text.strip().split(","))
    except ValueError:
        return None
    return utilisation, memory


def train_one(system, precision, config, paths, device):
    """Trains one system at one precision; its speed and GPU use.

    Returns
    -------
    dict
        ``system``, ``precision``, ``wall_seconds``, ``epoch_seconds``,
        ``utterances_per_second`` (training utterances of an epoch over its
        time, validation included) and ``gpu`` (:meth:`GpuSampler.summary`).
    """
    run_folder = os.path.join(paths["out"], "runs", f"{system}_{precision}")
    shutil.rmtree(run_folder, ignore_errors=True)  # time a fresh run
    overrides = train_overrides(
        system, {}, config, 1, dict(paths, output_folder=run_folder)
    )
    sampler = GpuSampler()
    sampler.start()
    try:
        timing = run_training(
            OBJECTIVES[system][0],
            overrides,
            run_folder,
            device,
            threads=0,
            extra_args=[f"--precision={precision}"],
        )
    finally:
        sampler.stop()
    n_train = len(prepared_rows(paths["prep_folder"], "train"))
    epochs = timing["epoch_seconds"]
    return {
        "system": system,
        "precision": precision,
        **timing,
        "utterances_per_second": (
            n_train * len(epochs) / sum(epochs) if epochs else None
        ),
        "gpu": sampler.summary(),
    }


def cuda_tests(device):
    """Runs the CUDA cases of :data:`CUDA_TESTS`; their summary line."""
    if not device.startswith("cuda"):
        return {"skipped": "no CUDA device"}
    command = [sys.executable, "-m", "pytest", "-q", "-k", "cuda"]
    started = time.time()
    result = subprocess.run(
        command + list(CUDA_TESTS),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    lines = result.stdout.strip().splitlines()
    return {
        "returncode": result.returncode,
        "summary": lines[-1] if lines else result.stderr[-500:],
        "seconds": time.time() - started,
    }


def markdown(report):
    """The table: one row per (system, precision)."""
    lines = [
        "| system | precision | utt/s | epoch s | GPU util % | GPU MiB |",
        "|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        gpu = run.get("gpu") or {}
        epochs = run.get("epoch_seconds") or []
        rate = run.get("utterances_per_second")
        lines.append(
            f"| {run['system']} | {run['precision']} | "
            f"{f'{rate:.0f}' if rate else run.get('error', '-')} | "
            f"{' / '.join(f'{s:.0f}' for s in epochs) or '-'} | "
            f"{gpu.get('utilisation_median', '-')} | "
            f"{gpu.get('memory_peak_mib', '-')} |"
        )
    lines.append(f"\nCUDA tests: {report['cuda_tests']}")
    return "\n".join(lines)


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_folder", required=True)
    parser.add_argument(
        "--out", default="results/bench/gpu_check/gpu_check.json"
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--systems", nargs="+", default=["aam_softmax", "hybrid"]
    )
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--epochs", type=int, default=BUDGET["epochs"])
    parser.add_argument(
        "--pack", default=None, help="write a pack for a GPU machine here"
    )
    parser.add_argument("--n_speakers", type=int, default=120)
    parser.add_argument("--utts_per_speaker", type=int, default=20)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny model and crop (tests the script on a CPU)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Packs, or trains and tests; writes the JSON."""
    args = parse_args(argv)
    if args.pack:
        sizes = make_pack(
            args.pack, args.data_folder, args.n_speakers, args.utts_per_speaker
        )
        print(
            f"pack {args.pack}: corpus {sizes['corpus_mib']:.1f} MiB, "
            f"wheels {sizes['wheels_mib']:.1f} MiB"
        )
        return sizes
    config = dict(BUDGET, epochs=args.epochs, device=args.device)
    if args.quick:
        config.update(
            SMOKE_MODEL,
            embeddings_per_view=8,
            n_test_speakers=2,
            n_valid_speakers=2,
            num_workers=0,
            valid_max_utterances=20,
        )
    out = os.path.dirname(os.path.abspath(args.out))
    paths = prepare(args.data_folder, out, config)
    runs = []
    for precision in args.precisions:
        for system in args.systems:
            try:
                runs.append(
                    train_one(system, precision, config, paths, args.device)
                )
            except RuntimeError as err:  # keep the other rows
                runs.append(
                    {
                        "system": system,
                        "precision": precision,
                        "error": str(err),
                    }
                )
    report = {
        "machine": machine_info(args.device),
        "config": config,
        "runs": runs,
        "cuda_tests": cuda_tests(args.device),
    }
    return write_report(report, markdown, args.out, "bench.gpu_check", argv)


if __name__ == "__main__":
    main()
