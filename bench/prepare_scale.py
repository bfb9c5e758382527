"""Benchmark: CN-Celeb preparation time and peak memory at scale.

Generates a corpus in CN-Celeb's layout (``data/<spk>/<genre>-<session>-
<utt>.wav``, ``dev/dev.lst``, ``eval/enroll``, ``eval/test`` and
``eval/lists``) of ``--n_files`` tiny training files (``--file_seconds``
each, the same 16-bit WAV bytes copied, so generation is as fast as the
disk), ``--n_eval_speakers`` enrolments and ``--n_test`` test files, with
every enrolment scored against every test file: CN-Celeb1's eval has 196
enrolments x 17,777 test files = 3.48M trials. Then runs
``cnceleb_prepare.prepare_cnceleb`` with the YAMLs' options (joining to
5 s, dropping under 1 s) and records its wall time and the process's peak
resident memory above its memory before, and extrapolates both linearly in
the number of files to CN-Celeb1+2's 630k (the trial list is the same
size there, so the extrapolation of its share is conservative).

Run from the repository root::

    python -m bench.prepare_scale --n_files 100000 \\
        --out bench/results/prepare_scale.json
"""

import argparse
import io
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import soundfile as sf

from bench.machine import machine_info, peak_rss_mb, rss_mb, write_report

RATE = 16000
GENRES = ("interview", "speech", "singing", "vlog", "drama", "movie")
CNCELEB_FILES = 630_000


def wav_bytes(seconds):
    """The bytes of one 16-bit WAV of low noise."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    wav = (rng.standard_normal(int(seconds * RATE)) * 300).astype(np.int16)
    sf.write(buffer, wav, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_lines(path, lines):
    """Writes ``lines`` to ``path``, creating its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fout:
        for line in lines:
            fout.write(line + "\n")


def generate(root, n_files, utts_per_speaker, n_eval, n_test, seconds):
    """Writes the corpus; returns the number of files written."""
    data = wav_bytes(seconds)

    def put(path):
        with open(path, "wb") as fout:
            fout.write(data)

    n_speakers = max(1, n_files // utts_per_speaker)
    train = [f"id{index:05d}" for index in range(n_speakers)]
    written = 0
    for index, spk in enumerate(train):
        folder = os.path.join(root, "data", spk)
        os.makedirs(folder, exist_ok=True)
        count = n_files // n_speakers + (index < n_files % n_speakers)
        for utt in range(count):
            genre = GENRES[utt // 40 % len(GENRES)]
            put(os.path.join(folder, f"{genre}-{utt // 10:02d}-{utt:03d}.wav"))
            written += 1
    write_lines(os.path.join(root, "dev", "dev.lst"), train)
    eval_speakers = [f"id{80000 + index:05d}" for index in range(n_eval)]
    enrol_map, tests = [], []
    os.makedirs(os.path.join(root, "eval", "enroll"), exist_ok=True)
    os.makedirs(os.path.join(root, "eval", "test"), exist_ok=True)
    for spk in eval_speakers:
        folder = os.path.join(root, "data", spk)
        os.makedirs(folder, exist_ok=True)
        sources = []
        for utt in range(3):
            put(os.path.join(folder, f"interview-00-{utt:03d}.wav"))
            sources.append(f"{spk}/interview-00-{utt:03d}.wav")
        put(os.path.join(root, "eval", "enroll", f"{spk}-enroll.wav"))
        enrol_map.append(f"{spk}-enroll {' '.join(sources)}")
        written += 4
    for index in range(n_test):
        spk = eval_speakers[index % n_eval]
        stem = f"{spk}-speech-01-{index // n_eval:03d}"
        put(os.path.join(root, "eval", "test", stem + ".wav"))
        tests.append((spk, stem))
        written += 1
    lists = os.path.join(root, "eval", "lists")
    write_lines(
        os.path.join(lists, "enroll.lst"),
        [f"{spk}-enroll enroll/{spk}-enroll.wav" for spk in eval_speakers],
    )
    write_lines(os.path.join(lists, "enroll.map"), enrol_map)
    with open(os.path.join(lists, "trials.lst"), "w") as fout:
        for spk in eval_speakers:
            for owner, stem in tests:
                fout.write(
                    f"{spk}-enroll test/{stem}.wav {int(owner == spk)}\n"
                )
    return written


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
    ...                     "what": "measured",
    ...                     "files": 10,
    ...                     "trials": 4,
    ...                     "prepare_s": 1.0,
    ...                     "peak_mb": 2.0,
    ...                 }
    ...             ]
    ...         }
    ...     )
    ... )
    | what | files | trials | prepare (s) | peak RSS above start (MB) |
    |---|---|---|---|---|
    | measured | 10 | 4 | 1.0 | 2 |
    """
    lines = [
        "| what | files | trials | prepare (s) | peak RSS above start (MB) |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['what']} | {row['files']} | {row['trials']} "
            f"| {row['prepare_s']:.1f} | {row['peak_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    """Generates the corpus, times the preparation, writes the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n_files", type=int, default=100_000)
    parser.add_argument("--utts_per_speaker", type=int, default=225)
    parser.add_argument("--n_eval_speakers", type=int, default=196)
    parser.add_argument("--n_test", type=int, default=17_777)
    parser.add_argument("--file_seconds", type=float, default=0.1)
    parser.add_argument("--num_workers", type=int, default=8)
    parser.add_argument("--folder", default=None, help="default: a tmp dir")
    parser.add_argument("--out", default="bench/results/prepare_scale.json")
    args = parser.parse_args(argv)

    recipe = os.path.join(os.path.dirname(__file__), "..", "recipes", "CNCeleb")
    sys.path.insert(0, os.path.abspath(recipe))
    from cnceleb_prepare import prepare_cnceleb

    folder = args.folder or tempfile.mkdtemp(prefix="prepare-scale-")
    root = os.path.join(folder, "CN-Celeb_flac")
    try:
        begin = time.perf_counter()
        n_written = generate(
            root,
            args.n_files,
            args.utts_per_speaker,
            args.n_eval_speakers,
            args.n_test,
            args.file_seconds,
        )
        generate_s = time.perf_counter() - begin
        print(f"generated {n_written} files in {generate_s:.0f} s")
        before = rss_mb()
        begin = time.perf_counter()
        prepare_cnceleb(
            root,
            os.path.join(folder, "prepared"),
            valid_ratio=0.02,
            join_min_duration=5.0,
            min_duration=1.0,
            num_workers=args.num_workers,
        )
        prepare_s = time.perf_counter() - begin
        peak = peak_rss_mb()
        with open(os.path.join(folder, "prepared", "trials.csv")) as fin:
            n_trials = sum(1 for _ in fin) - 1
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    factor = CNCELEB_FILES / n_written
    rows = [
        {
            "what": "measured",
            "files": n_written,
            "trials": n_trials,
            "prepare_s": round(prepare_s, 1),
            "peak_mb": round(peak - before, 1),
        },
        {
            "what": f"CN-Celeb1+2, extrapolated (x{factor:.1f} files)",
            "files": CNCELEB_FILES,
            "trials": n_trials,
            "prepare_s": round(prepare_s * factor, 1),
            "peak_mb": round((peak - before) * factor, 1),
        },
    ]
    report = {
        "machine": machine_info("cpu"),
        "settings": vars(args),
        "generate_s": round(generate_s, 1),
        "note": "tiny files on a local disk whose page cache holds them: "
        "header reads of 630k FLAC files on a network or cold disk are "
        "slower. The extrapolation scales time and memory linearly in "
        "the number of files, trial list included (it does not grow).",
        "rows": rows,
    }
    return write_report(report, markdown, args.out, "bench.prepare_scale", argv)


if __name__ == "__main__":
    main()
