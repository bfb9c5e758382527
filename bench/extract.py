"""Benchmark: batched embedding extraction against a per-file loop.

Both methods embed the same files with the same ``EncoderClassifier``:

1. per file, as a user writes it: ``load_audio`` one file, call
   ``encode_batch`` on it alone, move the embedding to the CPU;
2. :class:`speechbrain_ext.inference.extraction.EmbeddingExtractor`: one pass over the
   file headers for durations, then length-sorted padded batches, with audio
   decoded in the main process (0 workers) or in DataLoader workers.

Reported per method: wall time, seconds of audio embedded per second, files
per second and the speed-up over the per-file loop, after a warm-up on a few
files (``--repeats`` runs several rounds and keeps each method's fastest).
Batching pads the shorter utterances of a batch (by reflecting them), and
ECAPA's convolutions see that padding near each utterance's end, so batched
embeddings are close to, not equal to, per-file ones. The report quantifies
this (cosine similarity to the per-file embedding, max absolute difference,
padding added), and a batch-size-1 control shows that the two pipelines
agree where nothing is padded.

The model is an exported folder (``--model``) or, by default, a randomly
initialised ECAPA-TDNN of the recipe's size (C=512, 80 mels, 192-d) exported
with :func:`speechbrain_ext.inference.export.export_encoder`: weights do not change
the speed.

``--backends torch onnx`` adds, side by side in the same run, rows of the
same extractor settings running the model in ONNX Runtime
(:class:`speechbrain_ext.inference.onnx_backend.OnnxEncoder` on the graph that
:func:`speechbrain_ext.inference.onnx_export.export_onnx` writes for the model,
front end included; needs ``pip install speechbrain_ext[onnx]``). Their
``speed_up`` is also over the per-file torch loop, their ``agreement``
against its embeddings, and an ONNX batch-size-1 control on the same files
checks the graph where nothing is padded. ``--threads`` sets torch's
intra-op threads and ONNX Runtime's ``intra_op_num_threads`` alike; the
report states both.

Run from the repository root::

    python -m bench.extract --data_folder <speakers> \\
        --out results/bench/extract.json
    python -m bench.extract --data_folder <speakers> \\
        --n_files 64 --batch_sizes 16 --workers 0 --out /tmp/extract.json
    python -m bench.extract --data_folder <speakers> \\
        --n_files 600 --threads 1 --backends torch onnx --batch_sizes 1 16 32 \\
        --repeats 2 --out bench/results/extract.json
"""

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from bench.machine import machine_info, write_report
from speechbrain_ext.data.audio import load_audio
from speechbrain_ext.inference.extraction import EmbeddingExtractor

# The recipe's ECAPA-TDNN (recipes/CNCeleb/hparams/aam_softmax.yaml).
RECIPE_ECAPA = {
    "n_mels": 80,
    "channels": [512, 512, 512, 512, 1536],
    "lin_neurons": 192,
}
SAMPLE_RATE = 16000


def sample_files(data_folder, n_files, seed=0):
    """Picks a deterministic sample of audio files from a data folder.

    Arguments
    ---------
    data_folder : str
        Folder with a ``manifest.csv`` (``ID`` and ``wav`` columns, paths
        relative to the folder or starting with ``$data_root``), else
        scanned recursively for audio files.
    n_files : int
        Files to pick (all of them if the folder holds fewer).
    seed : int
        Seed of the sample.

    Returns
    -------
    list of (str, str)
        Utterance ids and paths, in manifest (or sorted path) order.

    Example
    -------
    >>> import torch
    >>> from speechbrain_ext.data.audio import save_audio
    >>> folder = getfixture("tmpdir")
    >>> for name in ("a/1.wav", "a/2.wav", "b/1.wav"):
    ...     save_audio(str(folder / name), torch.zeros(160), 16000)
    >>> [uid for uid, _ in sample_files(str(folder), 10)]
    ['a/1', 'a/2', 'b/1']
    >>> picked = sample_files(str(folder), 2)
    >>> len(picked), picked == sample_files(str(folder), 2)
    (2, True)
    """
    manifest = os.path.join(data_folder, "manifest.csv")
    if os.path.isfile(manifest):
        from speechbrain_ext.data.manifest import read_manifest

        rows = read_manifest(manifest, {"data_root": data_folder})
        items = [
            (row["ID"], os.path.join(data_folder, row["wav"])) for row in rows
        ]
    else:
        from speechbrain_ext.data.preparation import list_audio_files

        paths = list_audio_files(data_folder)
        items = [
            (os.path.splitext(os.path.relpath(p, data_folder))[0], p)
            for p in paths
        ]
    if not items:
        raise FileNotFoundError(f"no audio files in {data_folder}")
    if n_files < len(items):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(items), n_files, replace=False))
        items = [items[i] for i in keep]
    return items


def export_random_ecapa(folder, seed=0):
    """Exports a randomly initialised ECAPA-TDNN of the recipe's size.

    Arguments
    ---------
    folder : str
        Export folder to write.
    seed : int
        Seed of the initialisation.

    Returns
    -------
    str
        The export folder, loadable by ``EncoderClassifier.from_hparams``.
    """
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain_ext.inference.export import (
        default_template,
        export_encoder,
    )

    torch.manual_seed(seed)
    model = ECAPA_TDNN(
        RECIPE_ECAPA["n_mels"],
        channels=RECIPE_ECAPA["channels"],
        lin_neurons=RECIPE_ECAPA["lin_neurons"],
    )
    return export_encoder(folder, default_template(), model, RECIPE_ECAPA)


def embed_per_file(encoder, items):
    """Embeds files one at a time: the loop the extractor replaces.

    Arguments
    ---------
    encoder : speechbrain.inference.speaker.EncoderClassifier
        The model.
    items : list of (str, str)
        Utterance ids and audio paths.

    Returns
    -------
    embeddings : numpy.ndarray
        Float32 array [len(items), dim], in the order of ``items``.
    num_samples : list of int
        Length of each waveform at 16 kHz.
    """
    embeddings, num_samples = [], []
    with torch.no_grad():
        for _, path in items:
            wav = load_audio(path, sample_rate=SAMPLE_RATE)
            embedding = encoder.encode_batch(wav.unsqueeze(0))
            embeddings.append(embedding.reshape(-1).cpu().numpy())
            num_samples.append(len(wav))
    return np.stack(embeddings).astype(np.float32), num_samples


def compare_embeddings(reference, embeddings):
    """Measures how far embeddings are from reference ones, row by row.

    Arguments
    ---------
    reference : numpy.ndarray
        Array [N, dim], e.g. per-file embeddings.
    embeddings : numpy.ndarray
        Array [N, dim] of the same utterances.

    Returns
    -------
    dict
        Minimum and mean cosine similarity, max absolute difference and the
        largest absolute reference value (the scale of the difference).

    Example
    -------
    >>> ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> out = compare_embeddings(ref, np.array([[1.0, 1.0], [0.0, 2.0]]))
    >>> round(out["min_cosine"], 4), out["max_abs_diff"]
    (0.7071, 1.0)
    """
    reference = np.asarray(reference, dtype=np.float64)
    embeddings = np.asarray(embeddings, dtype=np.float64)
    cosine = (reference * embeddings).sum(1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(embeddings, axis=1)
    )
    return {
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "max_abs_diff": float(np.abs(reference - embeddings).max()),
        "max_abs_reference": float(np.abs(reference).max()),
    }


def padding_fraction(extractor, num_samples):
    """Padding the extractor's batches add, relative to the real audio.

    Arguments
    ---------
    extractor : EmbeddingExtractor
        Its batch limits decide the grouping.
    num_samples : list of int
        Length of each utterance.

    Returns
    -------
    float
        Padded samples / real samples (0 when nothing is padded).
    """
    lengths = np.asarray(num_samples, dtype=np.float64)
    # The extractor's own grouping, so the figure matches what it ran.
    batches = extractor._batches(lengths / SAMPLE_RATE)
    padded = sum(lengths[b].max() * len(b) for b in batches)
    return float(padded / lengths.sum() - 1.0)


def timed(function, *args, **kwargs):
    """Calls ``function`` and returns its result and wall time in seconds."""
    start = time.perf_counter()
    # Both methods return CPU arrays, so GPU work has finished by now.
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def environment(device):
    """The machine and the libraries that decode audio and run the model."""
    import soundfile

    libraries = ("numpy", "torchaudio", "speechbrain", "soundfile")
    return {
        **machine_info(device, libraries),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "libsndfile": soundfile.__libsndfile_version__,
    }


def measure(name, function, load_averages):
    """Times one method, noting the machine's load before and after."""
    before = os.getloadavg()[0]
    result, seconds = timed(function)
    load_averages.setdefault(name, []).append([before, os.getloadavg()[0]])
    print(f"  {name}: {seconds:.1f} s", flush=True)
    return result, seconds


def run_benchmark(
    encoder,
    items,
    batch_sizes,
    workers,
    repeats=1,
    warmup_files=8,
    onnx_encoder=None,
):
    """Times the per-file loop and each extractor setting on ``items``.

    Arguments
    ---------
    encoder : speechbrain.inference.speaker.EncoderClassifier
        The model both methods use.
    items : list of (str, str)
        Utterance ids and audio paths.
    batch_sizes : list of int
        Extractor batch sizes to time.
    workers : list of int
        DataLoader worker counts to time with each batch size.
    repeats : int
        Rounds over all methods; each method keeps its fastest round, as
        other processes on the machine only ever add time.
    warmup_files : int
        Files embedded by each method before timing starts.
    onnx_encoder : speechbrain_ext.inference.onnx_backend.OnnxEncoder, optional
        The same model in ONNX Runtime: each extractor setting is then also
        timed with it, right after the torch one.

    Returns
    -------
    dict
        ``rows`` (one per method), ``audio_seconds``, ``durations``, the
        batch-size-1 ``control`` (and ``onnx_control``) and the 1-minute
        ``load_average`` before and after each run.
    """
    backends = {"torch": encoder}
    if onnx_encoder is not None:
        backends["onnx"] = onnx_encoder
    warmup = items[:warmup_files]
    embed_per_file(encoder, warmup)
    for model in backends.values():
        EmbeddingExtractor(model, batch_size=len(warmup))(
            warmup, desc="warm-up"
        )
    settings = [
        (size, count, backend)
        for size in batch_sizes
        for count in workers
        for backend in backends
    ]
    rounds = time_rounds(encoder, backends, items, settings, repeats)
    num_samples = rounds["num_samples"]
    audio_seconds = sum(num_samples) / SAMPLE_RATE
    return {
        "rows": result_rows(rounds, settings, len(items), onnx_encoder),
        "repeats": repeats,
        "audio_seconds": audio_seconds,
        "durations": {
            "min": min(num_samples) / SAMPLE_RATE,
            "mean": audio_seconds / len(items),
            "max": max(num_samples) / SAMPLE_RATE,
        },
        **controls(encoder, onnx_encoder, items, rounds["reference"]),
        "load_average": rounds["load"],
    }


def time_rounds(encoder, backends, items, settings, repeats):
    """Times the per-file loop, then every extractor setting, per round.

    Returns
    -------
    dict
        ``times`` (method -> seconds per round), ``load`` (method ->
        load average before/after each round), ``extracted`` (setting ->
        its extractor and last embeddings), the per-file ``reference``
        embeddings and the files' ``num_samples``.
    """
    times, load, extracted = {}, {}, {}
    for _ in range(repeats):
        (reference, num_samples), seconds = measure(
            "per-file", lambda: embed_per_file(encoder, items), load
        )
        times.setdefault("per-file", []).append(seconds)
        for batch_size, num_workers, backend in settings:
            extractor = EmbeddingExtractor(
                backends[backend],
                batch_size=batch_size,
                num_workers=num_workers,
            )
            name = _setting_name(batch_size, num_workers, backend)
            (ids, embeddings), seconds = measure(
                name, lambda: extractor(items, desc=name), load
            )
            if ids != [uid for uid, _ in items]:
                raise RuntimeError(f"{name} returned ids out of order")
            times.setdefault(name, []).append(seconds)
            extracted[name] = extractor, embeddings
    return {
        "times": times,
        "load": load,
        "extracted": extracted,
        "reference": reference,
        "num_samples": num_samples,
    }


def result_rows(rounds, settings, n_files, onnx_encoder=None):
    """One row per method: its fastest round against the per-file loop's,
    with the padding and the agreement with per-file embeddings."""
    times, num_samples = rounds["times"], rounds["num_samples"]
    audio_seconds = sum(num_samples) / SAMPLE_RATE
    baseline = min(times["per-file"])
    rows = [_row("per-file", 1, 0, times["per-file"], baseline, audio_seconds)]
    for batch_size, num_workers, backend in settings:
        name = _setting_name(batch_size, num_workers, backend)
        extractor, embeddings = rounds["extracted"][name]
        row = _row(
            METHODS[backend],
            batch_size,
            num_workers,
            times[name],
            baseline,
            audio_seconds,
        )
        if onnx_encoder is not None:
            row["backend"] = BACKEND_NAMES[backend]
        row["padding"] = padding_fraction(extractor, num_samples)
        row["agreement"] = compare_embeddings(rounds["reference"], embeddings)
        rows.append(row)
    if onnx_encoder is not None:
        rows[0]["backend"] = BACKEND_NAMES["torch"]
    for row in rows:
        row["files_per_second"] = n_files / row["seconds"]
    return rows


def controls(encoder, onnx_encoder, items, reference):
    """Batch size 1 pads nothing: any gap to the per-file embeddings left
    would be a pipeline bug (``control``; ``onnx_control`` for ONNX)."""
    subset = items[: min(32, len(items))]
    result = {}
    for key, model in (("control", encoder), ("onnx_control", onnx_encoder)):
        if model is None:
            continue
        desc = "control bs=1" if key == "control" else "ONNX control bs=1"
        _, control = EmbeddingExtractor(model, batch_size=1)(subset, desc=desc)
        result[key] = {
            "n_files": len(subset),
            **compare_embeddings(reference[: len(subset)], control),
        }
    return result


# Row labels of the extractor's backends.
METHODS = {
    "torch": "EmbeddingExtractor",
    "onnx": "EmbeddingExtractor + ONNX Runtime",
}
BACKEND_NAMES = {"torch": "torch", "onnx": "onnxruntime"}


def _setting_name(batch_size, num_workers, backend):
    """Progress label of one extractor setting (the torch one as before)."""
    prefix = "extractor" if backend == "torch" else "onnx extractor"
    return f"{prefix} bs={batch_size} workers={num_workers}"


def _row(method, batch_size, num_workers, times, baseline, audio_seconds):
    """One method's fastest round, against the per-file loop's fastest."""
    seconds = min(times)
    return {
        "method": method,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "seconds": seconds,
        "seconds_per_round": times,
        "audio_seconds_per_second": audio_seconds / seconds,
        "speed_up": baseline / seconds,
    }


def markdown(report):
    """Formats the measurements as a markdown table with notes."""
    result = report["result"]
    threads = f"{report['machine']['torch_threads']} torch threads"
    if "onnxruntime_threads" in report["machine"]:
        threads += (
            f", {report['machine']['onnxruntime_threads']} ONNX Runtime "
            "intra-op threads"
        )
    lines = [
        f"{report['data']['n_files']} files, {result['audio_seconds']:.0f} s "
        f"of audio ({result['durations']['min']:.2f}-"
        f"{result['durations']['max']:.2f} s), {report['model']['name']}, "
        f"device {report['machine']['device']}, "
        f"{threads} on {report['machine']['cpus_usable']} CPUs.",
        "",
        f"Time: fastest of {result['repeats']} round(s).",
        "",
        "| method | batch | workers | time (s) | audio s/s | files/s "
        "| speed-up vs per-file | padding | min cosine | max abs diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for row in result["rows"]:
        agreement = row.get("agreement")
        quality = (
            f"{100 * row['padding']:.1f}% | {agreement['min_cosine']:.5f} | "
            f"{agreement['max_abs_diff']:.2e}"
            if agreement
            else "0% | (reference) | (reference)"
        )
        lines.append(
            f"| {row['method']} | {row['batch_size']} | {row['num_workers']} "
            f"| {row['seconds']:.1f} | {row['audio_seconds_per_second']:.1f} "
            f"| {row['files_per_second']:.1f} | {row['speed_up']:.2f}x "
            f"| {quality} |"
        )
    control = result["control"]
    scale = control["max_abs_reference"]
    lines += [
        "",
        f"Batch-size-1 control on {control['n_files']} files (no padding): "
        f"max abs diff {control['max_abs_diff']:.2e} (embedding values up "
        f"to {scale:.2f}), min cosine {control['min_cosine']:.6f}. "
        "Differences in the batched rows come from padding.",
        "",
    ]
    if "onnx_control" in result:
        onnx_control = result["onnx_control"]
        lines += [
            f"ONNX Runtime batch-size-1 control on {onnx_control['n_files']} "
            f"files against per-file torch: max abs diff "
            f"{onnx_control['max_abs_diff']:.2e}, min cosine "
            f"{onnx_control['min_cosine']:.6f}.",
            "",
        ]
    lines += [
        "1-minute load average before/after each run (shared machine): "
        + "; ".join(
            f"{name} "
            + ", ".join(f"{before:.1f}/{after:.1f}" for before, after in runs)
            for name, runs in result["load_average"].items()
        ),
    ]
    return "\n".join(lines)


def parse_args(argv=None):
    """Reads the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data_folder",
        required=True,
        help="folder with manifest.csv, or audio files to scan",
    )
    parser.add_argument("--out", default="results/bench/extract.json")
    parser.add_argument("--n_files", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0, help="file sample")
    parser.add_argument(
        "--model",
        default=None,
        help="exported model folder (default: random recipe-size ECAPA)",
    )
    parser.add_argument(
        "--batch_sizes", type=int, nargs="+", default=[16, 32, 64]
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds; the fastest counts"
    )
    parser.add_argument("--device", default="cpu", help="e.g. cuda:0")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads, and ONNX Runtime's intra-op threads "
        "for the ONNX rows (default: each library's choice)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=sorted(METHODS),
        default=["torch"],
        help="extractor backends to time (onnx: also in ONNX Runtime, "
        "needs the [onnx] extra)",
    )
    args = parser.parse_args(argv)
    if "torch" not in args.backends:
        parser.error("--backends needs torch (the per-file reference)")
    return args


def load_onnx(source, folder, threads):
    """Exports a model folder to ONNX in ``folder`` and opens it.

    Arguments
    ---------
    source : str
        SpeechBrain export folder (left as it is).
    folder : str
        Where ``embedding_model.onnx`` is written.
    threads : int or None
        ONNX Runtime intra-op threads.

    Returns
    -------
    encoder : speechbrain_ext.inference.onnx_backend.OnnxEncoder
        The model in ONNX Runtime.
    info : dict
        ``export_seconds``, ``opset`` and the graph's metadata.
    """
    from speechbrain_ext.inference.onnx_backend import OnnxEncoder
    from speechbrain_ext.inference.onnx_export import (
        ONNX_FILE,
        OPSET,
        export_onnx,
    )

    start = time.perf_counter()
    path = export_onnx(source, os.path.join(folder, ONNX_FILE))
    seconds = time.perf_counter() - start
    encoder = OnnxEncoder(path, threads=threads)
    meta = encoder.session.get_modelmeta().custom_metadata_map
    info = {"export_seconds": seconds, "opset": OPSET, **meta}
    info.pop("model", None)  # names the temporary folder
    return encoder, info


def main(argv=None):
    """Runs the benchmark, prints the table and writes the JSON report."""
    args = parse_args(argv)
    from speechbrain.inference.speaker import EncoderClassifier

    if args.threads:
        torch.set_num_threads(args.threads)
    items = sample_files(args.data_folder, args.n_files, args.seed)
    print(f"{len(items)} files from {args.data_folder}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        if args.model:
            model = {"name": f"model {args.model}", "folder": args.model}
            source = os.path.abspath(args.model)
        else:
            model = {"name": "random ECAPA-TDNN C=512", **RECIPE_ECAPA}
            source = export_random_ecapa(os.path.join(tmp, "export"))
        encoder = EncoderClassifier.from_hparams(
            source=source,
            savedir=os.path.join(tmp, "loaded"),
            run_opts={"device": args.device},
        )
        onnx_encoder = None
        if "onnx" in args.backends:
            onnx_encoder, model["onnx"] = load_onnx(
                source, os.path.join(tmp, "onnx"), args.threads
            )
        result = run_benchmark(
            encoder,
            items,
            args.batch_sizes,
            args.workers,
            args.repeats,
            onnx_encoder=onnx_encoder,
        )

    machine = environment(args.device)
    if onnx_encoder is not None:
        import onnxruntime

        machine["onnxruntime"] = onnxruntime.__version__
        machine["onnxruntime_threads"] = args.threads or "default"
    report = {
        "machine": machine,
        "model": model,
        "data": {
            "folder": os.path.abspath(args.data_folder),
            "n_files": len(items),
            "seed": args.seed,
        },
        "result": result,
    }
    return write_report(report, markdown, args.out, "bench.extract", argv)


if __name__ == "__main__":
    main()
