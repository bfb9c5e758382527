"""Benchmark: training throughput of AAM-softmax, AAM-SupCon and CSC.

Each system is built from its recipe hparams file
(``recipes/CNCeleb/hparams/{aam_softmax,aamsupcon,csc}.yaml``, read as a
data file) with the same overrides (model size, crop, views, batch), and
one training step is exactly what training does:
``speechbrain_ext.brain.TaskBrain.fit_batch`` on a ``PaddedBatch`` (the
task's views, features, embeddings and loss under SpeechBrain's autocast
context, the backward pass, gradient clipping and the Adam step;
GradScaler with fp16). ``TaskBrain`` is the training step of
``recipes/CNCeleb/train.py``'s ``SpeakerEmbeddingBrain``, which subclasses
it and only adds validation. Nothing here imports recipe code: the
corpus and banks are prepared by the run layer of every benchmark
(:func:`bench.runs.prepare`), and the data pipeline comes from the library
functions that train.py uses (see :func:`load_system`).

All systems get the same batch: B clean crops of the same length, each
turned into V views by the system's own view maker (AAM-softmax and
AAM-SupCon: ``[clean; augmented]`` rows from SpeechBrain's ``Augmenter``;
CSC: V interfered views plus the clean separation target). AAM-SupCon
draws its B crops as P speakers x K utterances (``PKSampler``), and its
objective is the recipe's default hybrid AAM-SupCon + AAM-softmax.
Utterance-seconds per second count clean input seconds, B x crop per
step, not the B x V views the model sees.

For each system and precision (fp32 and mixed: bf16 autocast on CPU, fp16
with GradScaler or bf16 on CUDA) the step is timed with

- data loading off (``memory``): batches read beforehand and held in
  the device's memory, so the step is compute alone;
- data loading on (``loader``): each step first waits for its batch from
  the training DataLoader (``--num_workers`` workers) over the prepared
  corpus of speaker folders, built
  with ``audio_pipelines``, ``add_speaker_labels`` and
  ``speaker_loader_options`` of ``speechbrain_ext.data.pipelines``, the
  functions train.py's ``dataio_prep`` and ``train_loader_options`` use,
  and copies it to the device as training does;

and the loader alone is timed without compute (batches per second). The
loader bounds training when it delivers fewer batches per second than
compute consumes (``loader_headroom`` < 1). The four settings of a
system run in ``--rounds`` rounds, in reverse order every other round, so
slow drifts of a shared machine reach them all; each run's warm-up steps
are excluded, step times are pooled over rounds and reported as median
[IQR]; ratios are of medians. On CUDA the GPU's utilisation is sampled
in a background thread during the timed steps (NVML through
``torch.cuda.utilization``, else ``nvidia-smi``), and peak memory is
``torch.cuda.max_memory_allocated`` (with loading off, the held batches
included); on CPU peak memory is the process's peak resident set size so
far (``ru_maxrss``, monotone over the run, loader workers not counted).
A step whose loss is NaN/inf skips backward and the optimizer, so such
steps are counted (``nonfinite_skipped``).

Run from the repository root::

    # bench/results/throughput.md: a modest model on a shared 2-core CPU
    python -m bench.throughput --data_folder <speakers> \\
        --out results/bench/throughput.json --threads 1 --num_workers 1 \\
        --channels 128 128 128 128 384 --attention_channels 64 \\
        --batch_size 16 --steps 6 --warmup 2 --rounds 2
    # the recipe's model and batch on a GPU
    python -m bench.throughput --data_folder <speakers> \\
        --device cuda --num_workers 8 --steps 30 \\
        --out results/bench/throughput_gpu.json
    # smoke test: a few steps of a tiny model on the data/ folder of a
    # generated CN-Celeb-like corpus
    python -m bench.throughput --quick --out /tmp/throughput.json
"""

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import threading
import time

import torch

import speechbrain as sb
from bench.machine import (
    HostReads,
    machine_info,
    peak_rss_mb,
    synchronize,
    write_report,
)
from bench.runs import (
    RECIPE_MODEL,
    SMOKE_MODEL,
    add_budget_options,
    budget_from_args,
    load_recipe_hparams,
    prepare,
    prepare_options,
    prepared_rows,
)
from bench.stats import timing_summary
from speechbrain.utils.logger import get_logger
from speechbrain_ext.brain import TaskBrain
from speechbrain_ext.data.demo_corpus import generate_demo_corpus
from speechbrain_ext.data.manifest import check_manifest
from speechbrain_ext.data.pipelines import (
    add_speaker_labels,
    audio_pipelines,
    speaker_loader_options,
)

logger = get_logger(__name__)

SYSTEMS = {
    "aam_softmax": "aam_softmax.yaml",
    "aamsupcon": "aamsupcon.yaml",
    "csc": "csc.yaml",
}
LOADINGS = ("memory", "loader")
# What the training pipeline reads from a prepared manifest row (the columns
# train.py checks before loading a manifest).
MANIFEST_COLUMNS = ("ID", "duration", "wav", "start", "stop", "spk_id")
# Thresholds of the targets on a GPU.
MIN_MIXED_SPEEDUP = 1.5
MIN_LOADER_HEADROOM = 1.0

# The recipe's model, crop and batch.
DEFAULT = {
    **RECIPE_MODEL,
    "batch_size": 64,
    "n_views": 2,
    "n_utts_per_speaker": 2,
    "steps": 20,
    "warmup": 3,
    "num_workers": 4,
    "rounds": 2,
}
QUICK = dict(
    DEFAULT,
    **SMOKE_MODEL,
    batch_size=4,
    steps=2,
    warmup=1,
    num_workers=0,
    rounds=1,
)


def mixed_precision_name(device, cuda_dtype="fp16"):
    """SpeechBrain's ``--precision`` for mixed precision on a device.

    Arguments
    ---------
    device : str
        A torch device.
    cuda_dtype : str
        "fp16" (with GradScaler) or "bf16" on CUDA.

    Returns
    -------
    str
        "bf16" on CPU (SpeechBrain refuses fp16 there), else ``cuda_dtype``.

    Example
    -------
    >>> mixed_precision_name("cpu"), mixed_precision_name("cuda:0")
    ('bf16', 'fp16')
    """
    return "bf16" if torch.device(device).type == "cpu" else cuda_dtype


def system_overrides(system, config, paths):
    """The hparams overrides of one system: the same budget for all.

    Arguments
    ---------
    system : str
        A key of :data:`SYSTEMS`.
    config : dict
        Model size, crop, views and batch (see :data:`DEFAULT`), ``seed``,
        ``n_test_speakers``, ``n_valid_speakers`` and ``n_train_speakers``
        (the classifier's outputs, where the system has one).
    paths : dict
        From :func:`bench.runs.prepare`; runs go to ``<out>/<system>``.

    Returns
    -------
    dict
        hparams key -> value.

    Raises
    ------
    ValueError
        If the P x K batch of AAM-SupCon cannot have B crops.

    Example
    -------
    >>> config = dict(DEFAULT, seed=1, n_test_speakers=2, n_valid_speakers=2)
    >>> paths = dict(corpus="c", prep_folder="p", out="o")
    >>> paths.update(noise_csv="n.csv", rir_csv="r.csv")
    >>> pk = system_overrides("aamsupcon", config, paths)
    >>> pk["n_speakers_per_batch"] * pk["n_utts_per_speaker"]
    64
    >>> system_overrides("csc", config, paths)["batch_size"]
    64
    """
    if system not in SYSTEMS:
        raise ValueError(
            f"unknown system {system!r}; expected one of {sorted(SYSTEMS)}"
        )
    batch, per_speaker = config["batch_size"], config["n_utts_per_speaker"]
    overrides = {
        "seed": config["seed"],
        "data_folder": paths["corpus"],
        "data_format": "folder",
        "prep_folder": paths["prep_folder"],
        "prepare_options": prepare_options(config),
        "output_folder": os.path.join(paths["out"], system),
        "noise_csv": paths["noise_csv"],
        "rir_csv": paths["rir_csv"],
        "channels": config["channels"],
        "attention_channels": config["attention_channels"],
        "emb_dim": config["emb_dim"],
        "sentence_len": config["sentence_len"],
        "n_views": config["n_views"],
        "batch_size": batch,
        "num_workers": config["num_workers"],
    }
    if config.get("n_train_speakers"):
        overrides["n_train_speakers"] = config["n_train_speakers"]
    if system == "aamsupcon":
        if batch % per_speaker:
            raise ValueError(
                f"batch_size={batch} is not a multiple of "
                f"n_utts_per_speaker={per_speaker}"
            )
        overrides["n_speakers_per_batch"] = batch // per_speaker
        overrides["n_utts_per_speaker"] = per_speaker
    return overrides


def load_system(system, overrides):
    """Builds a system's hparams and training data as ``train.py`` does.

    The corpus and banks are prepared beforehand by the run layer
    (:func:`bench.runs.prepare`, as for every benchmark) and the
    classifier is sized from its training speakers (see :func:`main`), so
    this only builds what train.py's ``dataio_prep`` and
    ``train_loader_options`` do for training, with the same library
    functions: the checked manifest, ``audio_pipelines``, for a supervised
    task ``add_speaker_labels``, and ``speaker_loader_options``.

    Arguments
    ---------
    system : str
        A key of :data:`SYSTEMS`.
    overrides : dict
        From :func:`system_overrides`.

    Returns
    -------
    hparams : dict
        The loaded hparams.
    train_data : DynamicItemDataset
        The training data with the recipe's pipeline.
    loader_options : dict
        The recipe's training DataLoader options.
    """
    hparams = load_recipe_hparams(
        SYSTEMS[system], overrides, optional=("n_train_speakers",)
    )
    os.makedirs(hparams["save_folder"], exist_ok=True)
    replacements = {"data_root": hparams["data_folder"]}
    check_manifest(hparams["train_annotation"], MANIFEST_COLUMNS, replacements)
    train_data = sb.dataio.dataset.DynamicItemDataset.from_csv(
        hparams["train_annotation"], replacements=replacements
    )
    train_audio, _ = audio_pipelines(
        hparams["sample_rate"],
        hparams["sentence_len"],
        hparams["valid_max_seconds"],
    )
    train_data.add_dynamic_item(train_audio)
    supervised = hparams["task"].needs_speaker_labels
    keys = ["id", "sig"]
    if supervised:
        # Classes 0..N-1 are the training speakers, as in training; an
        # encoder left by a run over another split would not match them.
        if os.path.exists(hparams["label_encoder_file"]):
            os.remove(hparams["label_encoder_file"])
        add_speaker_labels([train_data], hparams["label_encoder_file"])
        keys.append("spk_id_encoded")
    sb.dataio.dataset.set_output_keys([train_data], keys)
    loader_options = speaker_loader_options(
        hparams["train_dataloader_opts"],
        train_data,
        make_sampler=hparams.get("train_sampler"),
        speaker_labels=supervised,
    )
    return hparams, train_data, loader_options


def make_brain(hparams, device, precision):
    """A ``TaskBrain`` ready for ``fit_batch``, as in ``fit``.

    ``TaskBrain`` is the training step of train.py's
    ``SpeakerEmbeddingBrain``, which subclasses it to add validation only.

    Arguments
    ---------
    hparams : dict
        From :func:`load_system`.
    device : str
        SpeechBrain's ``--device``.
    precision : str
        SpeechBrain's ``--precision`` ("fp32", "bf16" or "fp16").

    Returns
    -------
    TaskBrain
        With its optimizer built, in the training stage; no checkpointer.
    """
    brain = TaskBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": device, "precision": precision},
        lr_warmup_steps=hparams.get("lr_warmup_steps", 0),
    )
    brain.init_optimizers()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    brain.modules.train()
    brain.zero_grad()
    return brain


def endless_batches(loader, sampler=None):
    """Yields a loader's batches epoch after epoch.

    Arguments
    ---------
    loader : iterable
        Batches of one epoch.
    sampler : object, optional
        Its ``set_epoch`` is called before each epoch, as ``Brain.fit``
        does with ``brain.train_sampler``.

    Yields
    ------
    object
        The next batch.

    Example
    -------
    >>> list(itertools.islice(endless_batches([1, 2]), 5))
    [1, 2, 1, 2, 1]
    """
    for epoch in itertools.count(1):
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader


def time_loop(step, batches, n_steps, n_warmup, device, monitor=None):
    """Seconds of each timed iteration of ``step(next(batches))``.

    An iteration's time runs from asking for its batch to the end of its
    device work, so waiting for data is counted.

    Arguments
    ---------
    step : callable
        Called on each batch (``brain.fit_batch``, or nothing).
    batches : iterator
        Yields the batches.
    n_steps : int
        Timed iterations.
    n_warmup : int
        Untimed iterations first (worker start-up, allocator, kernels).
    device : str
        Synchronised after each iteration on CUDA.
    monitor : GpuUtilisation, optional
        Sampling only while the timed iterations run.

    Returns
    -------
    list of float
        ``n_steps`` durations in seconds.

    Example
    -------
    >>> seen = []
    >>> times = time_loop(seen.append, iter(range(5)), 3, 2, "cpu")
    >>> seen, len(times)
    ([0, 1, 2, 3, 4], 3)
    """
    for _ in range(n_warmup):
        step(next(batches))
    synchronize(device)
    times = []
    if monitor is not None:
        monitor.start()
    try:
        for _ in range(n_steps):
            start = time.perf_counter()
            step(next(batches))
            synchronize(device)
            times.append(time.perf_counter() - start)
    finally:
        if monitor is not None:
            monitor.stop()
    return times


def parse_nvidia_smi(text, index=0):
    """The utilisation (%) of GPU ``index`` in ``nvidia-smi``'s csv output.

    Arguments
    ---------
    text : str
        Output of ``nvidia-smi --query-gpu=utilization.gpu
        --format=csv,noheader,nounits``: one line per GPU.
    index : int
        The GPU's line.

    Returns
    -------
    float

    Example
    -------
    >>> parse_nvidia_smi("87\\n12\\n", index=1)
    12.0
    """
    return float(text.split()[index])


class GpuUtilisation:
    """Samples a CUDA device's utilisation in a background thread.

    Uses ``torch.cuda.utilization`` (NVML, from the ``nvidia-ml-py``
    package) where it works, else parses ``nvidia-smi``; on a CPU device,
    or with neither available, it samples nothing and its summary is None.
    ``start``/``stop`` may be called several times; samples accumulate.

    Arguments
    ---------
    device : str
        The torch device.
    interval : float
        Seconds between samples (NVML's own counter covers the last
        1/6 to 1 s, so finer sampling gains little).

    Example
    -------
    >>> monitor = GpuUtilisation("cpu")
    >>> monitor.start()
    >>> monitor.stop()
    >>> monitor.source, monitor.summary()
    (None, None)
    """

    def __init__(self, device, interval=0.2):
        self.device = torch.device(device)
        self.interval = interval
        self.samples = []
        self.source = self._probe() if self.device.type == "cuda" else None
        self._stop = threading.Event()
        self._thread = None

    def _probe(self):
        """Names the first reader that answers, or None.

        Each reader's failure is logged, since a report without GPU
        utilisation should say why: as info when a later reader works,
        as a warning naming every error when none does.
        """
        errors = []
        for source in ("nvml", "nvidia-smi"):
            try:
                self._read(source)
            except Exception as err:  # module missing, NVML or binary unusable
                errors.append(f"{source}: {type(err).__name__}: {err}")
                continue
            if errors:
                logger.info(
                    "GPU utilisation read with %s (%s)", source, errors[0]
                )
            return source
        logger.warning(
            "GPU utilisation of %s will not be sampled: %s",
            self.device,
            "; ".join(errors),
        )
        return None

    def _read(self, source):
        """One utilisation reading (%) from ``source``."""
        index = self.device.index or 0
        if source == "nvml":
            return float(torch.cuda.utilization(index))
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:  # nvidia-smi numbers the GPUs physically
            index = int(visible.split(",")[index])
        output = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                f"--id={index}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        return parse_nvidia_smi(output)

    def _sample(self):
        """The sampling thread: reads every ``interval`` until stopped."""
        while not self._stop.wait(self.interval):
            self.samples.append(self._read(self.source))

    def start(self):
        """Starts sampling (no-op without a reader)."""
        if self.source is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self):
        """Stops sampling."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def summary(self):
        """``{"mean", "median", "min", "n", "source"}`` or None."""
        if not self.samples:
            return None
        return {
            "mean": statistics.fmean(self.samples),
            "median": statistics.median(self.samples),
            "min": min(self.samples),
            "n": len(self.samples),
            "source": self.source,
        }


def reset_peak_memory(device):
    """Starts a new peak-memory count on CUDA (CPU's peak is monotone)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device):
    """Peak memory in MiB: allocated on CUDA, process RSS on CPU.

    Example
    -------
    >>> peak_memory_mib("cpu") > 0
    True
    """
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def rates(seconds, utterance_seconds):
    """Median/IQR of step times and the rates of the median step.

    Arguments
    ---------
    seconds : list of float
        Timed step durations.
    utterance_seconds : float
        Clean input seconds per step (B x crop).

    Returns
    -------
    dict
        ``seconds`` (the timings), ``summary`` (:func:`timing_summary`),
        ``steps_per_second`` and ``utterance_seconds_per_second``.

    Example
    -------
    >>> r = rates([0.5, 0.25, 0.5], utterance_seconds=8.0)
    >>> r["steps_per_second"], r["utterance_seconds_per_second"]
    (2.0, 16.0)
    """
    summary = timing_summary(seconds)
    return {
        "seconds": list(seconds),
        "summary": summary,
        "steps_per_second": 1.0 / summary["median"],
        "utterance_seconds_per_second": utterance_seconds / summary["median"],
    }


def system_ratios(runs, loader_alone, mixed):
    """Mixed/fp32 speed-ups, loading slow-downs and loader headroom.

    Arguments
    ---------
    runs : dict
        ``"<precision>/<loading>"`` -> :func:`rates` output, for fp32 and
        ``mixed`` with loading ``memory`` and ``loader``.
    loader_alone : dict
        :func:`rates` of the loader without compute.
    mixed : str
        The mixed precision's name.

    Returns
    -------
    dict
        ``mixed_speedup`` (loading -> fp32 median step / mixed median
        step), ``loading_slowdown`` (precision -> loader median step /
        memory median step), ``loader_headroom`` (precision -> loader
        batches/s over compute steps/s; below 1 loading is the bound) and
        ``bound`` (precision -> "loading" or "compute").

    Example
    -------
    >>> runs = {
    ...     f"{p}/{l}": rates([t], 1.0)
    ...     for p, l, t in [
    ...         ("fp32", "memory", 2.0),
    ...         ("bf16", "memory", 1.0),
    ...         ("fp32", "loader", 2.0),
    ...         ("bf16", "loader", 1.5),
    ...     ]
    ... }
    >>> ratios = system_ratios(runs, rates([1.25], 1.0), "bf16")
    >>> ratios["mixed_speedup"]
    {'memory': 2.0, 'loader': 1.3333333333333333}
    >>> ratios["loading_slowdown"]["bf16"], ratios["bound"]
    (1.5, {'fp32': 'compute', 'bf16': 'loading'})
    """

    def median(key):
        return runs[key]["summary"]["median"]

    precisions = ("fp32", mixed)
    headroom = {
        p: loader_alone["steps_per_second"]
        / runs[f"{p}/memory"]["steps_per_second"]
        for p in precisions
    }
    return {
        "mixed_speedup": {
            loading: median(f"fp32/{loading}") / median(f"{mixed}/{loading}")
            for loading in LOADINGS
        },
        "loading_slowdown": {
            p: median(f"{p}/loader") / median(f"{p}/memory") for p in precisions
        },
        "loader_headroom": headroom,
        "bound": {
            p: "loading" if headroom[p] < MIN_LOADER_HEADROOM else "compute"
            for p in precisions
        },
    }


def benchmark_system(system, overrides, config, device, mixed):
    """Times one system's loader and training steps in every setting.

    Arguments
    ---------
    system : str
        A key of :data:`SYSTEMS`.
    overrides : dict
        From :func:`system_overrides`.
    config : dict
        ``steps``, ``warmup``, ``rounds``, ``batch_size``,
        ``sentence_len`` and ``n_views``.
    device : str
        The torch device.
    mixed : str
        The mixed precision's name (see :func:`mixed_precision_name`).

    Returns
    -------
    dict
        ``hparams``, ``overrides``, ``n_train_speakers``,
        ``embedding_rows``, ``loader_alone``, ``runs`` (see
        :func:`system_ratios`; each with ``gpu_utilisation``,
        ``peak_memory_mib`` and ``nonfinite_skipped``, the steps, warm-up
        included, whose NaN/inf loss was skipped) and the ratios of
        :func:`system_ratios`.
    """
    hparams, train_data, options = load_system(system, overrides)
    sampler = options.get("batch_sampler")
    loader = sb.dataio.dataloader.make_dataloader(train_data, **options)
    steps, warmup = config["steps"], config["warmup"]
    utterance_seconds = config["batch_size"] * config["sentence_len"]

    print(f"[{system}] loader alone", flush=True)
    held = []
    batches = endless_batches(loader, sampler)
    loader_times = time_loop(held.append, batches, steps, warmup, "cpu")
    batches.close()  # shuts the workers down
    # PaddedBatch.to moves in place: moving once keeps every memory-mode
    # step free of the host-to-device copy, not only the repeated ones.
    held = [batch.to(device) for batch in held]
    result = {
        "hparams": SYSTEMS[system],
        "overrides": overrides,
        "n_train_speakers": hparams.get("n_train_speakers"),
        "embedding_rows": config["batch_size"] * config["n_views"],
        "loader_alone": rates(loader_times, utterance_seconds),
        "runs": {},
    }
    brains = {p: make_brain(hparams, device, p) for p in ("fp32", mixed)}
    timed = time_settings(system, brains, held, loader, sampler, config, device)
    for (precision, loading), run in timed.items():
        result["runs"][f"{precision}/{loading}"] = {
            "precision": precision,
            "loading": loading,
            **rates(run["seconds"], utterance_seconds),
            "gpu_utilisation": run["monitor"].summary(),
            "peak_memory_mib": run["peak"],
            "nonfinite_skipped": run["skipped"],
        }
    result["host_reads_per_step"] = count_host_reads(
        brains["fp32"].fit_batch, held, config["steps"]
    )
    del brains
    result.update(system_ratios(result["runs"], result["loader_alone"], mixed))
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return result


def time_settings(system, brains, held, loader, sampler, config, device):
    """Times the training step of every precision and data loading.

    The settings run in ``config["rounds"]`` rounds, in reverse order every
    other round, so slow drifts of a shared machine reach them all.

    Arguments
    ---------
    system : str
        The system's name (progress lines).
    brains : dict
        Precision -> brain (:func:`make_brain`).
    held : list
        Batches already on the device (loading off).
    loader : iterable
        The training DataLoader (loading on).
    sampler : object, optional
        Its batch sampler (``set_epoch`` per epoch).
    config : dict
        ``rounds``, ``steps`` and ``warmup``.
    device : str
        The torch device.

    Returns
    -------
    dict
        ``(precision, loading)`` -> ``seconds`` (every timed step),
        ``monitor`` (:class:`GpuUtilisation`), ``peak`` (MiB) and
        ``skipped``: the steps, warm-up included, whose NaN/inf loss
        skipped backward and the optimizer (fast steps that train nothing).
    """
    settings = [(p, loading) for p in brains for loading in LOADINGS]
    runs = {
        setting: {
            "seconds": [],
            "monitor": GpuUtilisation(device),
            "peak": 0.0,
            "skipped": 0,
        }
        for setting in settings
    }
    for round_index in range(config["rounds"]):
        order = settings[::-1] if round_index % 2 else settings
        for precision, loading in order:
            print(
                f"[{system}] round {round_index + 1}: {precision}, data "
                f"loading {loading}",
                flush=True,
            )
            run, brain = runs[precision, loading], brains[precision]
            if loading == "memory":
                batches = itertools.cycle(held)
            else:
                batches = endless_batches(loader, sampler)
            reset_peak_memory(device)
            skipped_before = brain.nonfinite_skipped
            run["seconds"] += time_loop(
                brain.fit_batch,
                batches,
                config["steps"],
                config["warmup"],
                device,
                run["monitor"],
            )
            run["skipped"] += brain.nonfinite_skipped - skipped_before
            if loading == "loader":
                batches.close()
            run["peak"] = max(run["peak"], peak_memory_mib(device))
    return runs


def count_host_reads(step, batches, n_steps):
    """Host reads (GPU syncs) per training step, by the code asking.

    Arguments
    ---------
    step : callable
        ``step(batch)``, e.g. a Brain's ``fit_batch``.
    batches : list
        Batches, cycled.
    n_steps : int
        Steps counted.

    Returns
    -------
    dict
        ``total`` reads per step and ``by_caller`` (``"module:function"``
        -> reads per step), see :class:`bench.machine.HostReads`.

    Example
    -------
    >>> count_host_reads(lambda b: b.sum().item(), [torch.ones(2)], 4)
    {'total': 1.0, 'by_caller': {'bench.throughput:<lambda>': 1.0}}
    """
    with HostReads() as reads:
        for _, batch in zip(range(n_steps), itertools.cycle(batches)):
            step(batch)
    return {
        "total": reads.total / n_steps,
        "by_caller": {
            caller: count / n_steps
            for caller, count in sorted(reads.by_caller.items())
        },
    }


def targets(report):
    """The issue's GPU targets, checked per system (None on CPU).

    Example
    -------
    >>> system = {
    ...     "mixed_speedup": {"memory": 1.7, "loader": 1.4},
    ...     "loader_headroom": {"fp32": 3.0, "fp16": 1.8},
    ... }
    >>> targets({"config": {"device": "cuda"}, "systems": {"a": system}})
    {'a': {'mixed_at_least_1.5x': False, 'loading_never_the_bound': True}}
    """
    if torch.device(report["config"]["device"]).type != "cuda":
        return None
    return {
        name: {
            f"mixed_at_least_{MIN_MIXED_SPEEDUP}x": min(
                system["mixed_speedup"].values()
            )
            >= MIN_MIXED_SPEEDUP,
            "loading_never_the_bound": min(system["loader_headroom"].values())
            >= MIN_LOADER_HEADROOM,
        }
        for name, system in report["systems"].items()
    }


def markdown_table(report):
    """One row per system, precision and loading, and the loader alone.

    Arguments
    ---------
    report : dict
        With ``config``, ``batch`` and ``systems`` as :func:`main` makes.

    Returns
    -------
    str
        Markdown: the table, then the batch and what the columns mean.
    """
    lines = [
        "| system | precision | data loading | step ms, median [IQR] "
        "| steps/s | utt-s/s | mixed/fp32 speed-up | loading on/off time "
        "| GPU util % | peak MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, system in report["systems"].items():
        alone = system["loader_alone"]
        for run in system["runs"].values():
            precision, loading = run["precision"], run["loading"]
            util = run["gpu_utilisation"]
            util = f"{util['mean']:.0f}" if util else "n/a"
            speedup = (
                f"{system['mixed_speedup'][loading]:.2f}x"
                if precision != "fp32"
                else "-"
            )
            slowdown = (
                f"{system['loading_slowdown'][precision]:.2f}"
                if loading == "loader"
                else "-"
            )
            if run["nonfinite_skipped"]:
                loading += f" ({run['nonfinite_skipped']} NaN/inf skipped)"
            lines.append(
                f"| {name} | {precision} | {loading} "
                f"| {1000 * run['summary']['median']:.0f} "
                f"[{1000 * run['summary']['iqr']:.0f}] "
                f"| {run['steps_per_second']:.2f} "
                f"| {run['utterance_seconds_per_second']:.1f} "
                f"| {speedup} | {slowdown} "
                f"| {util} "
                f"| {run['peak_memory_mib']:.0f} |"
            )
        headroom = ", ".join(
            f"{p} {h:.1f}x ({system['bound'][p]}-bound)"
            for p, h in system["loader_headroom"].items()
        )
        lines.append(
            f"| {name} | - | loader alone "
            f"| {1000 * alone['summary']['median']:.0f} "
            f"[{1000 * alone['summary']['iqr']:.0f}] "
            f"| {alone['steps_per_second']:.2f} batches/s "
            f"| {alone['utterance_seconds_per_second']:.1f} "
            f"| - | headroom: {headroom} | - | - |"
        )
    reads = {
        name: system["host_reads_per_step"]
        for name, system in report["systems"].items()
        if "host_reads_per_step" in system
    }
    if reads:
        lines += ["", "Host reads per fp32 step (each a GPU sync):"]
        lines += [
            f"- {name}: {r['total']:g} ("
            + ", ".join(f"{c} {n:g}" for c, n in r["by_caller"].items())
            + ")"
            for name, r in reads.items()
        ]
    batch, config = report["batch"], report["config"]
    lines += [
        "",
        f"Every step: {batch['clean_crops']} clean crops x "
        f"{batch['crop_seconds']} s ({batch['utterance_seconds_per_step']} "
        f"utterance-seconds, the utt-s/s numerator) in {batch['n_views']} "
        f"views each; AAM-SupCon as P x K = {batch['pk'][0]} x "
        f"{batch['pk'][1]}. ECAPA-TDNN channels {config['channels']}, "
        f"embedding {config['emb_dim']}; device {config['device']}, "
        f"{config['threads'] or 'default'} torch thread(s), "
        f"{config['num_workers']} loader worker(s); "
        f"{config['rounds']} round(s) of {config['steps']} timed steps "
        f"after {config['warmup']} warm-up per row (loader alone: one). "
        "Mixed/fp32: fp32 median step / mixed median step. "
        "Loading on/off: median step with the DataLoader / with batches "
        "in memory. Headroom: loader-alone batches/s / compute steps/s "
        "(< 1: loading bounds training).",
    ]
    return "\n".join(lines)


def markdown_report(report):
    """The table with the machine and the command that made it.

    Arguments
    ---------
    report : dict
        As :func:`main` returns it (with ``table`` and ``command``).

    Returns
    -------
    str
        Markdown.
    """
    machine = report["machine"]
    device = machine["device"]
    if "gpu" in machine:
        device += f" ({machine['gpu']})"
    return (
        f"# Training throughput\n\n{report['table']}\n\n"
        f"Machine: {machine['platform']}, {machine['processor']}, "
        f"{machine['cpu_count']} CPUs, torch {machine['torch']}, device "
        f"{device}.\n\nRegenerate with:\n\n    {report['command']}\n"
    )


def parse_args(argv=None):
    """Command-line options (model and batch default to the recipe's)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Run from the repository root::")[1],
    )
    parser.add_argument(
        "--data_folder",
        default=None,
        help="a corpus of <speaker>/<utt> folders (for CN-Celeb: its data/ "
        "folder); default (with --quick): the data/ folder of a generated "
        "CN-Celeb-like corpus in --work",
    )
    parser.add_argument("--out", default="results/bench/throughput.json")
    parser.add_argument(
        "--work",
        default=None,
        help="prepared data and run folders (default: "
        "<out without .json>_work)",
    )
    parser.add_argument(
        "--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS)
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--cuda_mixed",
        default="fp16",
        choices=["fp16", "bf16"],
        help="mixed precision on CUDA (CPU: always bf16)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny model, few steps (smoke test)",
    )
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument(
        "--n_test_speakers",
        type=int,
        default=2,
        help="speakers the corpus preparation holds out for trials",
    )
    parser.add_argument("--n_valid_speakers", type=int, default=2)
    add_budget_options(parser, DEFAULT, QUICK)
    return parser.parse_args(argv)


def build_config(args):
    """Defaults (or --quick's), then the options given."""
    config = budget_from_args(args, QUICK if args.quick else DEFAULT)
    config.update(
        device=args.device,
        threads=args.threads,
        seed=args.seed,
        n_test_speakers=args.n_test_speakers,
        n_valid_speakers=args.n_valid_speakers,
        systems=args.systems,
        quick=args.quick,
    )
    return config


def demo_corpus(folder):
    """Generates (once) a small CN-Celeb-like corpus; returns its root.

    Its ``data/`` folder (``<speaker>/<utt>.flac``) is the folder corpus
    the benchmark prepares.
    """
    root = os.path.join(folder, "CN-Celeb_flac")
    if not os.path.isfile(os.path.join(root, "dev", "dev.lst")):
        generate_demo_corpus(
            root,
            n_train_speakers=6,
            n_eval_speakers=2,
            utts_per_speaker=8,
            n_test_per_eval_speaker=2,
            seed=7,
        )
    return root


def check_speaker_folders(data_folder):
    """Refuses a CN-Celeb root, whose preparation is the recipe's own.

    As a folder corpus its ``eval/enroll`` and ``eval/test`` files would
    become two speakers named "enroll" and "test".

    Raises
    ------
    ValueError
        If ``data_folder`` holds ``dev/dev.lst`` and a ``data`` folder.

    Example
    -------
    >>> root = getfixture("tmpdir")
    >>> check_speaker_folders(str(root))
    >>> _ = (root / "data").mkdir()
    >>> _ = (root / "dev").mkdir().join("dev.lst").write("id00000\\n")
    >>> check_speaker_folders(str(root))
    Traceback (most recent call last):
    ...
    ValueError: ... is a CN-Celeb root: pass its data/ folder ...
    """
    data = os.path.join(data_folder, "data")
    if os.path.isdir(data) and os.path.isfile(
        os.path.join(data_folder, "dev", "dev.lst")
    ):
        raise ValueError(
            f"{data_folder} is a CN-Celeb root: pass its data/ folder "
            f"({data}), which the benchmark prepares as speaker folders"
        )


def main(argv=None):
    """Runs the benchmark, prints the table, writes JSON and markdown."""
    args = parse_args(argv)
    config = build_config(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data_folder is None and not args.quick:
        raise ValueError("--data_folder is required without --quick")
    work = os.path.abspath(args.work or os.path.splitext(args.out)[0] + "_work")
    if args.data_folder is None:
        data_folder = os.path.join(demo_corpus(work), "data")
    else:
        data_folder = os.path.abspath(args.data_folder)
    check_speaker_folders(data_folder)
    # Every corpus is prepared as speaker folders, as for every benchmark;
    # a classifier has one output per training speaker (train.py's
    # size_classifier).
    paths = prepare(data_folder, work, config)
    train_rows = prepared_rows(paths["prep_folder"], "train")
    config["n_train_speakers"] = len({row["spk_id"] for row in train_rows})
    mixed = mixed_precision_name(args.device, args.cuda_mixed)
    batch = config["batch_size"]
    k = config["n_utts_per_speaker"]
    report = {
        "config": {
            **config,
            "data_folder": data_folder,
            "mixed_precision": mixed,
        },
        "machine": machine_info(args.device),
        "batch": {
            "clean_crops": batch,
            "crop_seconds": config["sentence_len"],
            "n_views": config["n_views"],
            "utterance_seconds_per_step": batch * config["sentence_len"],
            "pk": [batch // k, k],
        },
        "systems": {},
    }
    for system in args.systems:
        overrides = system_overrides(system, config, paths)
        report["systems"][system] = benchmark_system(
            system, overrides, config, args.device, mixed
        )
    report["targets"] = targets(report)
    write_report(
        report,
        markdown_table,
        args.out,
        "bench.throughput",
        sys.argv[1:] if argv is None else argv,
    )
    with open(
        os.path.splitext(args.out)[0] + ".md", "w", encoding="utf-8"
    ) as fout:
        fout.write(markdown_report(report))
    return report


if __name__ == "__main__":
    main()
