"""Training and scoring one benchmark run of a speaker objective.

A run trains ECAPA-TDNN with ``recipes/CNCeleb/train.py`` (as a subprocess,
the command a user would type) on a corpus prepared once by
:func:`prepare_once`, reads the training time per epoch from the output as
it streams, and scores the exported model on the prepared trial list with
:func:`speechbrain_ext.verification.verify_trials`. Its record is written
next to the run, so a finished run is never redone.
"""

import json
import os
import subprocess
import sys
import time

from bench.resemblyzer_encoder import ResemblyzerEncoder
from speechbrain.inference.speaker import EncoderClassifier
from speechbrain_ext.augment.noise import generate_noise_bank
from speechbrain_ext.augment.reverb import simulate_rirs
from speechbrain_ext.data.folder_corpus import prepare_folder_corpus
from speechbrain_ext.data.manifest import read_manifest
from speechbrain_ext.evaluation.verification import (
    read_trial_file,
    verify_trials,
)

__all__ = [
    "OBJECTIVES",
    "epoch_seconds",
    "prepare_once",
    "prepare_options",
    "run_one",
    "score_resemblyzer",
    "train_overrides",
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, "recipes", "CNCeleb")

# Objective -> (hparams file, overrides selecting it, uses the P x K sampler).
OBJECTIVES = {
    "aam_softmax": ("aam_softmax.yaml", {}, False),
    "aam_softmax_mixup": ("aam_softmax_mixup.yaml", {}, False),
    "supcon": ("supcon.yaml", {}, True),
    "aamsupcon": ("aamsupcon.yaml", {"aam_softmax_weight": 0.0}, True),
    "hybrid": ("aamsupcon.yaml", {}, True),
    # The AAM-SupCon authors' released setup: SupCon + one-view AAM-softmax,
    # 5 views, shuffled batches, its own SGD schedule (see train_overrides).
    "authors": ("aamsupcon_authors.yaml", {}, False),
    "csc": ("csc.yaml", {}, False),
    "simclr": ("simclr.yaml", {}, False),
    # AAM-softmax + csc_weight * CSC on the same interfered views.
    "aam_softmax_csc": ("aam_softmax_csc.yaml", {}, False),
    # Needs ``pretrained_encoder`` (a CSC export) among the extra overrides.
    "csc_finetune": ("csc_finetune.yaml", {}, False),
}

# The hparams files tie the split's seed to the training seed; fixing it
# here gives every run, whatever its seed, the same split and trials.
PREPARE_SEED = 1234
EPOCH_START = "Going into epoch"
EPOCH_END = "Saved an end-of-epoch checkpoint"
RUN_RECORD = "bench_run.json"


def prepare_options(config):
    """The preparation options shared by the benchmark and every run.

    Arguments
    ---------
    config : dict
        The budget, with ``n_test_speakers`` and ``n_valid_speakers``.

    Returns
    -------
    dict
        Keyword arguments of ``prepare_folder_corpus`` (and the recipe's
        ``prepare_options``).

    Example
    -------
    >>> prepare_options({"n_test_speakers": 12, "n_valid_speakers": 4})
    {'n_test_speakers': 12, 'valid_ratio': 4, 'different_key_only': True, \
'seed': 1234}
    >>> prepare_options(
    ...     {"n_test_speakers": 50, "n_valid_speakers": 10, "test_fold": 3}
    ... )["test_fold"]
    3
    """
    options = {
        "n_test_speakers": config["n_test_speakers"],
        "valid_ratio": config["n_valid_speakers"],
        "different_key_only": True,
        "seed": PREPARE_SEED,
    }
    if config.get("test_fold") is not None:
        options["test_fold"] = config["test_fold"]
    return options


def prepare_once(corpus, prep_folder, config):
    """Prepares the split, the trials and the augmentation banks once.

    The noise and RIR banks are generated here with a fixed seed, rather
    than by whichever run comes first, so every run sees the same ones.

    Arguments
    ---------
    corpus : str
        The ``<speaker>/<utt>`` corpus root.
    prep_folder : str
        Where the manifests, trials and banks go.
    config : dict
        The budget (see :func:`prepare_options`).

    Returns
    -------
    dict
        Paths of ``noise_csv`` and ``rir_csv``.
    """
    prepare_folder_corpus(corpus, prep_folder, **prepare_options(config))
    return {
        "noise_csv": generate_noise_bank(
            os.path.join(prep_folder, "noise"), seed=PREPARE_SEED
        ),
        "rir_csv": simulate_rirs(
            os.path.join(prep_folder, "rirs"), seed=PREPARE_SEED
        ),
    }


def train_overrides(objective, extra, config, seed, paths):
    """The train.py overrides of one run.

    Arguments
    ---------
    objective : str
        Key of :data:`OBJECTIVES`.
    extra : dict
        Variant-specific hparams overrides.
    config : dict
        The budget (see :data:`bench.objectives.DEFAULT`).
    seed : int
        The run's seed.
    paths : dict
        ``corpus``, ``prep_folder``, ``output_folder``, ``noise_csv`` and
        ``rir_csv``.

    Returns
    -------
    dict
        hparams key -> value. Every run gets the budget's model, crop,
        epochs and embeddings per view (``batch_size``, or P x K for the
        objectives with the speaker-balanced sampler); the Adam learning
        rates ``lr`` -> ``lr_final`` go to every objective but ``authors``,
        which keeps the authors' SGD 0.01 with x0.97 per epoch (a variant
        may still override ``lr``).

    Example
    -------
    >>> paths = dict(
    ...     corpus="c",
    ...     prep_folder="p",
    ...     output_folder="o",
    ...     noise_csv="n.csv",
    ...     rir_csv="r.csv",
    ... )
    >>> from bench.objectives import DEFAULT
    >>> aam = train_overrides("aam_softmax", {}, DEFAULT, 1, paths)
    >>> pk = train_overrides("hybrid", {}, DEFAULT, 1, paths)
    >>> aam["batch_size"], pk["n_speakers_per_batch"] * pk["n_utts_per_speaker"]
    (128, 128)
    >>> authors = train_overrides("authors", {}, DEFAULT, 1, paths)
    >>> authors["batch_size"], "lr" in authors, "lr_final" in authors
    (128, False, False)
    """
    _, selecting, balanced = OBJECTIVES[objective]
    per_view = config["embeddings_per_view"]
    overrides = {
        "seed": seed,
        "data_folder": paths["corpus"],
        "data_format": "folder",
        "prep_folder": paths["prep_folder"],
        "prepare_options": prepare_options(config),
        "output_folder": paths["output_folder"],
        "noise_csv": paths["noise_csv"],
        "rir_csv": paths["rir_csv"],
        "number_of_epochs": config["epochs"],
        "channels": config["channels"],
        "attention_channels": config["attention_channels"],
        "emb_dim": config["emb_dim"],
        "sentence_len": config["sentence_len"],
        "batch_size": per_view,
        "lr": config["lr"],
        "lr_final": config["lr_final"],
        "valid_max_utterances": config["valid_max_utterances"],
        "num_workers": config["num_workers"],
        "ckpt_interval_minutes": 0,
    }
    if balanced:
        k = config["n_utts_per_speaker"]
        if per_view % k:
            raise ValueError(
                f"embeddings_per_view={per_view} is not a "
                f"multiple of n_utts_per_speaker={k}"
            )
        overrides["n_speakers_per_batch"] = per_view // k
        overrides["n_utts_per_speaker"] = k
    if objective == "authors":
        # SGD with the authors' schedule: Adam's budget rates do not apply.
        del overrides["lr"], overrides["lr_final"]
    return {**overrides, **selecting, **extra}


def epoch_seconds(events):
    """Durations of the epochs seen in timestamped training output.

    Arguments
    ---------
    events : list of tuple
        ``(seconds, line)`` of the training output, in order.

    Returns
    -------
    list of float
        One duration per epoch that both started and ended in ``events``:
        from its "Going into epoch" line to the end-of-epoch checkpoint
        line (training and validation).

    Example
    -------
    >>> epoch_seconds(
    ...     [
    ...         (0.0, "... Going into epoch 1"),
    ...         (5.0, "loss"),
    ...         (9.5, "... Saved an end-of-epoch checkpoint in x"),
    ...         (10.0, "... Going into epoch 2"),
    ...     ]
    ... )
    [9.5]
    """
    durations, start = [], None
    for seconds, line in events:
        if EPOCH_START in line:
            start = seconds
        elif EPOCH_END in line and start is not None:
            durations.append(seconds - start)
            start = None
    return durations


def run_training(
    hparams_file, overrides, run_folder, device, threads, extra_args=()
):
    """Runs train.py, teeing its output to ``train_output.txt``.

    Arguments
    ---------
    hparams_file : str
        File name in ``recipes/CNCeleb/hparams``.
    overrides : dict
        hparams key -> value, passed as ``--key=<json>``.
    run_folder : str
        The run's output folder (holds the output file).
    device : str
        SpeechBrain's ``--device``.
    threads : int
        ``OMP_NUM_THREADS`` of the run (0 leaves torch's default).
    extra_args : sequence of str
        More train.py arguments, as typed (e.g. ``--precision=bf16``).

    Returns
    -------
    dict
        ``wall_seconds`` of the whole process and ``epoch_seconds``.

    Raises
    ------
    RuntimeError
        If the training fails; names its output file.
    """
    command = [sys.executable, "train.py", f"hparams/{hparams_file}"]
    command += [
        f"--{key}={json.dumps(value)}" for key, value in overrides.items()
    ]
    command += [f"--device={device}", *extra_args]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    os.makedirs(run_folder, exist_ok=True)
    log_path = os.path.join(run_folder, "train_output.txt")
    events, start = [], time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        process = subprocess.Popen(
            command,
            cwd=RECIPE,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        for line in process.stdout:
            events.append((time.time() - start, line))
            log.write(line)
        process.wait()
    if process.returncode != 0:
        raise RuntimeError(
            f"training failed (exit {process.returncode}); see {log_path}"
        )
    return {
        "wall_seconds": time.time() - start,
        "epoch_seconds": epoch_seconds(events),
    }


def score(encoder, prep_folder, corpus, cache_folder, num_workers):
    """Scores the prepared trials with an encoder.

    Arguments
    ---------
    encoder : object
        Has ``encode_batch(wavs, wav_lens)`` and ``device``.
    prep_folder : str
        Holds ``eval.csv`` and ``trials.csv``.
    corpus : str
        Value of ``$data_root`` in the manifest.
    cache_folder : str
        Embedding cache (an interrupted scoring resumes).
    num_workers : int
        Audio-decoding workers.

    Returns
    -------
    dict
        ``EER`` (%), ``minDCF``, ``n_trials`` and ``n_target``.
    """
    rows = read_manifest(
        os.path.join(prep_folder, "eval.csv"), {"data_root": corpus}
    )
    trials = read_trial_file(os.path.join(prep_folder, "trials.csv"))
    result = verify_trials(
        encoder,
        rows,
        rows,
        trials,
        batch_size=64,
        cache_folder=cache_folder,
        num_workers=num_workers,
    )
    return {
        "EER": 100 * result["EER"],
        "minDCF": result["minDCF"],
        "n_trials": result["n_trials"],
        "n_target": result["n_target"],
    }


def score_export(export_folder, run_folder, paths, config):
    """Scores a run's exported model (see :func:`score`).

    Arguments
    ---------
    export_folder : str
        Folder ``EncoderClassifier.from_hparams`` loads.
    run_folder : str
        The run's folder; scoring files go to its ``verify/``.
    paths : dict
        ``prep_folder`` and ``corpus``.
    config : dict
        ``device`` and ``num_workers``.

    Returns
    -------
    dict
        As :func:`score`.
    """
    encoder = EncoderClassifier.from_hparams(
        source=os.path.abspath(export_folder),
        savedir=os.path.join(run_folder, "verify", "model"),
        run_opts={"device": config["device"]},
    )
    return score(
        encoder,
        paths["prep_folder"],
        paths["corpus"],
        os.path.join(run_folder, "verify", "embeddings"),
        config["num_workers"],
    )


def run_one(name, objective, extra, seed, config, paths):
    """Trains and scores one (variant, seed), or reads its finished record.

    Arguments
    ---------
    name : str
        The variant's name (its runs go to ``<out>/runs/<name>/<seed>``).
    objective : str
        Key of :data:`OBJECTIVES`.
    extra : dict
        The variant's hparams overrides.
    seed : int
        The run's seed.
    config : dict
        The budget (see :func:`train_overrides`).
    paths : dict
        ``out``, ``corpus``, ``prep_folder``, ``noise_csv``, ``rir_csv``.

    Returns
    -------
    dict
        The run record (also written to ``<run>/bench_run.json``).
    """
    run_folder = os.path.join(paths["out"], "runs", name, str(seed))
    record_path = os.path.join(run_folder, RUN_RECORD)
    export = os.path.join(run_folder, "export")
    if os.path.isfile(record_path) and os.path.isfile(
        os.path.join(export, "hyperparams.yaml")
    ):
        with open(record_path, encoding="utf-8") as fin:
            record = json.load(fin)
        print(
            f"[{name} seed {seed}] done already: EER {record['EER']:.2f}%",
            flush=True,
        )
        return record
    hparams_file = OBJECTIVES[objective][0]
    overrides = train_overrides(
        objective, extra, config, seed, dict(paths, output_folder=run_folder)
    )
    print(f"[{name} seed {seed}] training ({hparams_file})", flush=True)
    timing = run_training(
        hparams_file, overrides, run_folder, config["device"], config["threads"]
    )
    print(
        f"[{name} seed {seed}] trained in {timing['wall_seconds']:.0f} s; "
        "scoring",
        flush=True,
    )
    record = {
        "name": name,
        "objective": objective,
        "seed": seed,
        "hparams": hparams_file,
        "overrides": overrides,
        **timing,
        **score_export(export, run_folder, paths, config),
    }
    with open(record_path, "w", encoding="utf-8") as fout:
        json.dump(record, fout, indent=2)
    print(
        f"[{name} seed {seed}] EER {record['EER']:.2f}%, "
        f"minDCF {record['minDCF']:.3f}",
        flush=True,
    )
    return record


def score_resemblyzer(paths, config):
    """Scores the pretrained Resemblyzer encoder once (cached).

    Arguments
    ---------
    paths : dict
        ``out``, ``corpus`` and ``prep_folder``.
    config : dict
        ``device`` and ``num_workers``.

    Returns
    -------
    dict
        As :func:`score`, with ``name`` and ``scoring_seconds``.
    """
    record_path = os.path.join(paths["out"], "resemblyzer.json")
    if os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as fin:
            return json.load(fin)
    print("[resemblyzer] scoring the pretrained encoder", flush=True)
    start = time.time()
    record = score(
        ResemblyzerEncoder(config["device"]),
        paths["prep_folder"],
        paths["corpus"],
        os.path.join(paths["out"], "resemblyzer_embeddings"),
        config["num_workers"],
    )
    record["name"] = "resemblyzer (pretrained)"
    record["scoring_seconds"] = time.time() - start
    with open(record_path, "w", encoding="utf-8") as fout:
        json.dump(record, fout, indent=2)
    return record
