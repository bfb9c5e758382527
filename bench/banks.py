"""Benchmark: host memory and step time of noise banks, in memory or streamed.

Generates a bank of synthetic 16-bit noise files (``--file_seconds`` each,
16 kHz, in a temporary folder; nothing is downloaded) large enough for the
biggest of ``--hours``, lists the first files up to each size in its own
CSV, and for every size and storage measures, in a fresh Python process
each (so that one row's memory does not hide in another's):

- ``load_s``: time of the first call, which reads the headers and, in
  memory, every sample;
- ``rss_mb``: resident host memory after the calls, minus the process's
  memory before the bank existed (torch, the batch and the buffers of
  two mixings with a random noise);
- ``peak_rss_mb``: the process's peak resident memory, same baseline;
- ``step_ms``: median time of one ``AddNoiseBank`` call on a
  ``--batch`` x ``--seconds`` batch (the augmentation of one training
  step), over ``--steps`` calls after two warm-up calls;
- ``device_mb``: peak CUDA memory allocated, when ``--device cuda``.

Banks above ``--memory_max_hours`` are not loaded in memory (a 100 h bank
is 11.5 GB as int16, which a shared machine may not have to spare): their
``memory`` row is extrapolated linearly from the largest measured one and
marked so. The float32 storage the banks used before is 2x the int16 row.

Run from the repository root::

    python -m bench.banks --hours 1 100 --out bench/results/banks.json
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile as sf

from bench.machine import (
    machine_info,
    peak_rss_mb,
    rss_mb,
    synchronize,
    write_report,
)

RATE = 16000


def generate_files(folder, hours, file_seconds, seed=0):
    """Writes enough 16-bit noise files for ``hours``; returns their paths.

    One pool of random samples is written at a different rotation per file:
    the content does not matter here, only the sizes, and this keeps the
    generation as fast as the disk.
    """
    os.makedirs(folder, exist_ok=True)
    n_files = int(np.ceil(hours * 3600 / file_seconds))
    samples = int(file_seconds * RATE)
    rng = np.random.default_rng(seed)
    pool = (rng.standard_normal(samples * 2) * 3000).astype(np.int16)
    paths = []
    for index in range(n_files):
        path = os.path.join(folder, f"noise{index:06d}.wav")
        if not os.path.isfile(path):
            start = int(rng.integers(samples))
            sf.write(path, pool[start : start + samples], RATE, "PCM_16")
        paths.append(path)
    return paths


def write_bank_csv(path, paths, file_seconds):
    """Writes a SpeechBrain CSV listing ``paths``."""
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout)
        writer.writerow(["ID", "duration", "wav"])
        for wav in paths:
            name = os.path.splitext(os.path.basename(wav))[0]
            writer.writerow([name, file_seconds, wav])
    return path


def measure(csv_file, storage, batch, seconds, steps, device, threads=1):
    """One row, measured in this process (called in a fresh one)."""
    import torch

    from speechbrain_ext.augment import AddNoiseBank
    from speechbrain_ext.augment.mixing import mix_at_ratio

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    waveforms = torch.randn(batch, int(seconds * RATE), device=device)
    lengths = torch.ones(batch, device=device)
    # The mixing's own buffers, before the bank exists: the baseline then
    # leaves out what the step costs with any bank.
    for _ in range(2):
        mix_at_ratio(
            waveforms,
            torch.randn_like(waveforms),
            torch.zeros(batch, device=device),
            target_lens=lengths,
        )
    augment = AddNoiseBank(
        csv_file,
        0.0,
        15.0,
        storage=storage,
        max_memory_mb=None,
    )
    before, peak_before = rss_mb(), peak_rss_mb()
    begin = time.perf_counter()
    augment(waveforms, lengths)
    synchronize(device)
    load_s = time.perf_counter() - begin
    augment(waveforms, lengths)
    times = []
    for _ in range(steps):
        synchronize(device)
        begin = time.perf_counter()
        augment(waveforms, lengths)
        synchronize(device)
        times.append(time.perf_counter() - begin)
    peak = peak_rss_mb()
    row = {
        "storage": type(augment.bank(device)).__name__,
        "load_s": round(load_s, 3),
        "rss_mb": round(rss_mb() - before, 1),
        "peak_rss_mb": round(max(peak, peak_before) - before, 1),
        "step_ms": round(1000 * statistics.median(times), 2),
    }
    if device.startswith("cuda"):
        row["device_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def run_row(csv_file, storage, args):
    """Measures one row in a fresh interpreter; returns its dict."""
    command = [
        sys.executable,
        "-c",
        "import json, sys; from bench.banks import measure; "
        "print(json.dumps(measure(*json.loads(sys.argv[1]))))",
        json.dumps(
            [csv_file, storage, args.batch, args.seconds, args.steps]
            + [args.device, args.threads]
        ),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"row {storage} {csv_file} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(report):
    """The report as a markdown table.

    Arguments
    ---------
    report : dict
        With ``rows``.

    Returns
    -------
    str
        The table.

    Example
    -------
    >>> print(
    ...     markdown(
    ...         {
    ...             "rows": [
    ...                 {
    ...                     "hours": 1,
    ...                     "storage": "memory",
    ...                     "bank_mb": 110.0,
    ...                     "rss_mb": 112.0,
    ...                     "peak_rss_mb": 113.0,
    ...                     "load_s": 1.0,
    ...                     "step_ms": 5.0,
    ...                 }
    ...             ]
    ...         }
    ...     )
    ... )  # doctest: +ELLIPSIS
    | hours | storage | bank as int16 (MB) | host RSS (MB) | ...
    ...
    | 1 | memory | 110 | 112 | 113 | 1.00 | 5.00 | - |
    """
    lines = [
        "| hours | storage | bank as int16 (MB) | host RSS (MB) | "
        "peak RSS (MB) | first call (s) | step (ms) | device (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        note = " (extrapolated)" if row.get("extrapolated") else ""
        lines.append(
            f"| {row['hours']:g} | {row['storage']}{note} "
            f"| {row['bank_mb']:.0f} | {row['rss_mb']:.0f} "
            f"| {row['peak_rss_mb']:.0f} | {row['load_s']:.2f} "
            f"| {row['step_ms']:.2f} | {row.get('device_mb', '-')} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[1, 100])
    parser.add_argument("--memory_max_hours", type=float, default=20.0)
    parser.add_argument("--file_seconds", type=float, default=60.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: stable on a shared machine)",
    )
    parser.add_argument("--folder", default=None, help="default: a tmp dir")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", default="bench/results/banks.json")
    return parser.parse_args(argv)


def measure_rows(folder, hours, args):
    """Measures every bank size and storage, each in a fresh process.

    Banks above ``--memory_max_hours`` are only streamed; the largest
    in-memory size is measured instead (see :func:`extrapolate`).

    Returns
    -------
    rows : list of dict
        One per (hours, storage).
    generate_s : float
        Seconds to generate the noise files.
    """
    measured = [h for h in hours if h <= args.memory_max_hours]
    if max(hours) > args.memory_max_hours:
        measured.append(args.memory_max_hours)
    begin = time.perf_counter()
    paths = generate_files(
        os.path.join(folder, "wav"), max(hours), args.file_seconds
    )
    generate_s = time.perf_counter() - begin
    print(f"generated {len(paths)} files in {generate_s:.0f} s")
    per_file = args.file_seconds * RATE * 2 / 2**20
    rows = []
    for size in sorted(set(hours + measured)):
        n_files = int(np.ceil(size * 3600 / args.file_seconds))
        csv_file = write_bank_csv(
            os.path.join(folder, f"bank_{size:g}h.csv"),
            paths[:n_files],
            args.file_seconds,
        )
        for storage in ("memory", "stream"):
            if storage == "memory" and size > args.memory_max_hours:
                continue
            row = run_row(csv_file, storage, args)
            row.update(
                hours=size,
                storage=storage,
                bank_mb=round(n_files * per_file, 1),
            )
            print(row)
            rows.append(row)
    return rows, generate_s


def extrapolate(rows, hours, memory_max_hours):
    """Adds the in-memory rows above ``memory_max_hours``, scaled linearly
    from the largest measured one; returns the rows sorted."""
    reference = max(
        (r for r in rows if r["storage"] == "memory"),
        key=lambda r: r["hours"],
    )
    for size in hours:
        if size > memory_max_hours:
            factor = size / reference["hours"]
            scaled = ("bank_mb", "rss_mb", "peak_rss_mb", "load_s")
            rows.append(
                {
                    **reference,
                    **{
                        key: round(reference[key] * factor, 1) for key in scaled
                    },
                    "hours": size,
                    "extrapolated": f"x{factor:g} from "
                    f"{reference['hours']:g} h",
                }
            )
    return sorted(rows, key=lambda r: (r["hours"], r["storage"]))


def main(argv=None):
    """Generates the banks, measures every row, writes the report."""
    args = parse_args(argv)
    folder = args.folder or tempfile.mkdtemp(prefix="banks-")
    hours = sorted(args.hours)
    try:
        rows, generate_s = measure_rows(folder, hours, args)
    finally:
        if not args.keep and args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    report = {
        "machine": machine_info(args.device),
        "settings": {
            key: getattr(args, key)
            for key in (
                "hours",
                "memory_max_hours",
                "file_seconds",
                "batch",
                "seconds",
                "steps",
                "threads",
            )
        },
        "generate_s": round(generate_s, 1),
        "note": "rss_mb and peak_rss_mb exclude the process's memory before "
        "the bank (torch, the batch); float32 storage (before int16) "
        "would be 2x bank_mb. Extrapolated rows scale the largest "
        "measured in-memory row linearly.",
        "rows": extrapolate(rows, hours, args.memory_max_hours),
    }
    return write_report(report, markdown, args.out, "bench.banks", argv)


if __name__ == "__main__":
    main()
