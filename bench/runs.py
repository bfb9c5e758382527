"""The run layer of the benchmarks: corpus, training, scoring, curves.

Every benchmark that trains or builds the recipe's systems goes through
these steps, so that they all train, cache and score a run the same way:

1. **corpus** (:func:`prepare`): a linked subset of a ``<speaker>/<utt>``
   corpus (:func:`subset_corpus`), prepared once (:func:`prepare_once`): a
   speaker-disjoint split, text-independent trials and the augmentation
   banks, all with a fixed seed, so every run of every seed sees the same;
2. **training** (:func:`run_one`): ``recipes/CNCeleb/train.py`` as a
   subprocess (the command a user types) with the overrides of a budget
   (:func:`train_overrides`); the run's record is kept next to it, and a
   cached run is reused only while it was trained with the overrides
   requested now (:func:`ensure_current`);
3. **scoring** (:func:`score_run`): the run's export scores the prepared
   trials by cosine, the test side clean or interfered, through the one
   scoring function of the benchmarks, :func:`score_trials`; the per-trial
   scores are cached (:func:`trial_scores`, :func:`condition_scores`);
4. **curves** (:func:`validation_curve`): the validation EER per epoch.

The budgets the benchmarks share are here too: :data:`BUDGET` (the model,
crops and batch of ``bench/objectives.py`` and ``bench/csc.py``),
:data:`QUICK` (their smoke test) and :data:`RECIPE_MODEL` (the YAMLs' own
model and crop).
"""

import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import yaml
from hyperpyyaml import load_hyperpyyaml

from bench.curves import curve_points, read_learning_curve
from speechbrain.inference.speaker import EncoderClassifier
from speechbrain_ext.augment.noise import generate_noise_bank
from speechbrain_ext.augment.reverb import simulate_rirs
from speechbrain_ext.data.folder_corpus import prepare_folder_corpus
from speechbrain_ext.data.manifest import read_manifest
from speechbrain_ext.evaluation.robustness import Corruptor, parse_condition
from speechbrain_ext.evaluation.verification import (
    read_trial_file,
    verify_trials,
)

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

# The budget of bench/objectives.py (bench/csc.py: 32 crops per step). 40
# utterances per speaker keep the 48 speakers with 200 short words of the
# benchmark pack from outweighing the 202 others; P = 64 speakers per batch
# (of the ~200 training speakers) still gives every speaker a place in most
# batches of an epoch.
BUDGET = {
    "epochs": 8,
    "channels": [64, 64, 64, 64, 192],
    "attention_channels": 64,
    "emb_dim": 192,
    "sentence_len": 1.0,
    "embeddings_per_view": 128,
    "n_utts_per_speaker": 2,
    "lr": 0.002,
    "lr_final": 0.0002,
    "valid_max_utterances": 400,
    "n_test_speakers": 40,
    "n_valid_speakers": 10,
    "max_utts_per_speaker": 40,
    "n_speakers": None,
    "test_fold": None,
    "device": "cpu",
    "num_workers": 1,
    "threads": 1,
}
# A tiny ECAPA-TDNN and short crops, for the smoke tests of every benchmark.
SMOKE_MODEL = {
    "channels": [32, 32, 32, 32, 96],
    "attention_channels": 16,
    "emb_dim": 32,
    "sentence_len": 0.5,
}
# Smoke test of the training benchmarks: a corpus subset, two epochs.
QUICK = dict(
    BUDGET,
    **SMOKE_MODEL,
    epochs=2,
    embeddings_per_view=16,
    valid_max_utterances=100,
    n_test_speakers=4,
    n_valid_speakers=2,
    max_utts_per_speaker=16,
    n_speakers=16,
)
# The recipe YAMLs' own model and crop.
RECIPE_MODEL = {
    "channels": [512, 512, 512, 512, 1536],
    "attention_channels": 128,
    "emb_dim": 192,
    "sentence_len": 2.0,
}

# The hparams files tie the split's seed to the training seed; fixing it
# here gives every run, whatever its seed, the same split and trials.
PREPARE_SEED = 1234
EPOCH_START = "Going into epoch"
EPOCH_END = "Saved an end-of-epoch checkpoint"
RUN_RECORD = "bench_run.json"
REQUEST_FILE = "bench_request.json"
SCORES_FILE = "scores.npy"
# Overrides that do not change what a run computes.
NOT_COMPARED = ("num_workers",)


def add_budget_options(parser, budget, quick=None, notes=None):
    """Adds a ``--<key>`` option for every key of a budget, unset.

    Arguments
    ---------
    parser : argparse.ArgumentParser
        Gets the options.
    budget : dict
        key -> default; an option takes its default's type (a list: as
        many values; None: an int).
    quick : dict, optional
        The ``--quick`` budget, named in the help.
    notes : dict, optional
        key -> more help.

    Example
    -------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_budget_options(parser, {"channels": [8, 24], "lr": 0.1})
    >>> args = parser.parse_args(["--channels", "4", "12"])
    >>> budget_from_args(args, {"channels": [8, 24], "lr": 0.1})
    {'channels': [4, 12], 'lr': 0.1}
    """
    for key, value in budget.items():
        example = value[0] if isinstance(value, list) else value
        help_text = f"default {value}"
        if quick is not None:
            help_text += f" ({quick[key]} with --quick)"
        if key in (notes or {}):
            help_text += f"; {notes[key]}"
        parser.add_argument(
            f"--{key}",
            type=int if example is None else type(example),
            nargs=len(value) if isinstance(value, list) else None,
            default=None,
            help=help_text,
        )


def budget_from_args(args, budget):
    """``budget`` with the values of the options given (not None)."""
    given = {key: getattr(args, key, None) for key in budget}
    return dict(budget, **{k: v for k, v in given.items() if v is not None})


# 1. Corpus


def subset_corpus(
    data_folder, folder, n_speakers, utts_per_speaker, copy=False
):
    """Links (or copies) a subset of a ``<speaker>/<utt>`` corpus.

    Speakers are taken evenly from the sorted speaker folders and
    utterances evenly from each speaker's sorted files, so a subset of the
    shared data keeps both corpora and many different words.

    Arguments
    ---------
    data_folder : str
        Corpus root (speaker folders at any depth).
    folder : str
        Where ``<speaker>/<file>`` symbolic links are made.
    n_speakers : int or None
        Speakers kept (None: all).
    utts_per_speaker : int or None
        Files kept per speaker (None: all).
    copy : bool
        Copy the files instead (a corpus that travels without the data).

    Returns
    -------
    str
        ``folder``.

    Example
    -------
    >>> tmpdir = getfixture("tmpdir")
    >>> for spk in ("a", "b", "c"):
    ...     for i in range(4):
    ...         _ = (tmpdir / "corpus" / spk).ensure(f"{spk}-w{i}.wav")
    >>> out = subset_corpus(str(tmpdir / "corpus"), str(tmpdir / "sub"), 2, 2)
    >>> sorted(os.listdir(out)), sorted(os.listdir(os.path.join(out, "a")))
    (['a', 'c'], ['a-w0.wav', 'a-w2.wav'])
    """
    speakers = {}
    for root, _, files in os.walk(data_folder):
        audio = sorted(f for f in files if not f.endswith((".csv", ".md")))
        if audio:
            speakers[root] = audio
    roots = sorted(speakers, key=os.path.basename)
    if n_speakers:
        roots = [
            roots[round(i * len(roots) / n_speakers)]
            for i in range(min(n_speakers, len(roots)))
        ]
    for root in roots:
        files = speakers[root]
        if utts_per_speaker and utts_per_speaker < len(files):
            files = [
                files[i * len(files) // utts_per_speaker]
                for i in range(utts_per_speaker)
            ]
        target = os.path.join(folder, os.path.basename(root))
        os.makedirs(target, exist_ok=True)
        for name in files:
            link = os.path.join(target, name)
            if copy:
                shutil.copyfile(os.path.join(root, name), link)
            elif not os.path.lexists(link):
                os.symlink(os.path.abspath(os.path.join(root, name)), link)
    return folder


def corpus_folder(data_folder, out, config, name=None):
    """The corpus the runs read: the data, or a linked subset of it.

    Arguments
    ---------
    data_folder : str
        The ``<speaker>/<utt>`` corpus.
    out : str
        The benchmark folder.
    config : dict
        ``n_speakers`` and ``max_utts_per_speaker`` (None or absent: all).
    name : str, optional
        The subset's folder in ``out``; by default named after its size,
        so another cap never mixes with the links of an earlier one.

    Returns
    -------
    str
        Absolute path of the corpus.
    """
    corpus = os.path.abspath(data_folder)
    n_speakers = config.get("n_speakers")
    cap = config.get("max_utts_per_speaker")
    if not (n_speakers or cap):
        return corpus
    name = name or f"corpus_{n_speakers or 'all'}spk_{cap or 'all'}utt"
    return subset_corpus(corpus, os.path.join(out, name), n_speakers, cap)


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


def prepare(data_folder, out, config, corpus_name=None):
    """The corpus (or its subset) and the preparation every run shares.

    Arguments
    ---------
    data_folder : str
        The ``<speaker>/<utt>`` corpus.
    out : str
        The benchmark folder (absolute); the preparation goes to
        ``<out>/prepared``.
    config : dict
        The budget (see :func:`corpus_folder` and :func:`prepare_options`).
    corpus_name : str, optional
        The subset's folder name (see :func:`corpus_folder`).

    Returns
    -------
    dict
        ``out``, ``corpus``, ``prep_folder``, ``noise_csv`` and ``rir_csv``:
        the ``paths`` of :func:`train_overrides` and :func:`run_one`.
    """
    os.makedirs(out, exist_ok=True)
    corpus = corpus_folder(data_folder, out, config, corpus_name)
    prep_folder = os.path.join(out, "prepared")
    return {
        "out": out,
        "corpus": corpus,
        "prep_folder": prep_folder,
        **prepare_once(corpus, prep_folder, config),
    }


def prepared_rows(prep_folder, name, corpus=""):
    """The rows of a prepared manifest (``train``, ``valid``, ``eval``).

    Arguments
    ---------
    prep_folder : str
        The preparation folder.
    name : str
        The manifest, without ``.csv``.
    corpus : str
        Value of ``$data_root`` in its paths.

    Returns
    -------
    list of dict
        One row per item.
    """
    path = os.path.join(prep_folder, f"{name}.csv")
    return read_manifest(path, {"data_root": corpus})


# 2. Training


def train_overrides(objective, extra, config, seed, paths):
    """The train.py overrides of one run.

    Arguments
    ---------
    objective : str
        Key of :data:`OBJECTIVES`.
    extra : dict
        Variant-specific hparams overrides.
    config : dict
        The budget (see :data:`BUDGET`).
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
    >>> aam = train_overrides("aam_softmax", {}, BUDGET, 1, paths)
    >>> pk = train_overrides("hybrid", {}, BUDGET, 1, paths)
    >>> aam["batch_size"], pk["n_speakers_per_batch"] * pk["n_utts_per_speaker"]
    (128, 128)
    >>> authors = train_overrides("authors", {}, BUDGET, 1, paths)
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


def load_recipe_hparams(hparams_file, overrides, optional=()):
    """Builds a recipe hparams file (read as a data file) with overrides.

    Arguments
    ---------
    hparams_file : str
        File name in ``recipes/CNCeleb/hparams``.
    overrides : dict
        hparams key -> value.
    optional : sequence of str
        Override keys dropped where the file does not define them (e.g.
        ``n_train_speakers`` for an objective without a classifier).

    Returns
    -------
    dict
        The loaded hparams (modules built, folders created).
    """
    path = os.path.join(RECIPE, "hparams", hparams_file)
    with open(path, encoding="utf-8") as fin:
        text = fin.read()
    defined = {
        key
        for key in optional
        if text.startswith(f"{key}:") or f"\n{key}:" in text
    }
    overrides = {
        key: value
        for key, value in overrides.items()
        if key not in optional or key in defined
    }
    return load_hyperpyyaml(text, yaml.safe_dump(overrides))


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


def _comparable(overrides):
    """Overrides as JSON values, without those that change no result."""
    overrides = json.loads(json.dumps(overrides))
    for key in NOT_COMPARED:
        overrides.pop(key, None)
    return overrides


def cached_overrides(run_folder):
    """The overrides a cached run was (or is being) trained with.

    Arguments
    ---------
    run_folder : str
        The run's folder.

    Returns
    -------
    dict or None or str
        The overrides of its record (finished run) or of its request
        (started run); None if the folder is absent or empty; ``"unknown"``
        if it holds files but neither (a run of an older benchmark).
    """
    for name, key in ((RUN_RECORD, "overrides"), (REQUEST_FILE, None)):
        path = os.path.join(run_folder, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fin:
                content = json.load(fin)
            return content[key] if key else content
    if os.path.isdir(run_folder) and os.listdir(run_folder):
        return "unknown"
    return None


def is_current(run_folder, overrides):
    """Whether a cached run was trained with ``overrides`` (or is absent).

    Arguments
    ---------
    run_folder : str
        The run's folder.
    overrides : dict
        The train.py overrides requested for it; ``num_workers`` aside,
        they must equal those the run records.

    Returns
    -------
    bool
        False for a run of other or unknown overrides.

    Example
    -------
    >>> folder = str(getfixture("tmp_path") / "run")
    >>> is_current(folder, {"lr": 0.1})
    True
    """
    found = cached_overrides(run_folder)
    return found is None or (
        found != "unknown" and _comparable(found) == _comparable(overrides)
    )


def ensure_current(run_folder, overrides):
    """Keeps a cached run only if it was trained with ``overrides``.

    A run whose recorded overrides differ (``num_workers`` aside), or
    whose overrides are unknown, is moved to ``<run_folder>.stale-<time>``
    so that it is trained again rather than silently reused. The requested
    overrides of a run not finished yet are then written to
    ``bench_request.json`` in the run folder, so an interrupted run is
    recognised too (a finished one is by its record).

    Arguments
    ---------
    run_folder : str
        The run's folder.
    overrides : dict
        The train.py overrides requested for it.

    Returns
    -------
    str or None
        Where a stale run was moved, or None.

    Example
    -------
    >>> folder = str(getfixture("tmp_path") / "run")
    >>> ensure_current(folder, {"lr": 0.1, "num_workers": 1}) is None
    True
    >>> ensure_current(folder, {"lr": 0.1, "num_workers": 4}) is None
    True
    >>> moved = ensure_current(folder, {"lr": 0.2})
    >>> os.path.basename(moved).startswith("run.stale-")
    True
    >>> cached_overrides(folder)
    {'lr': 0.2}
    """
    moved = None
    if not is_current(run_folder, overrides):
        moved = f"{run_folder}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
        suffix = 0
        while os.path.exists(moved + (f"-{suffix}" if suffix else "")):
            suffix += 1
        moved += f"-{suffix}" if suffix else ""
        os.replace(run_folder, moved)
    os.makedirs(run_folder, exist_ok=True)
    request = os.path.join(run_folder, REQUEST_FILE)
    finished = os.path.isfile(os.path.join(run_folder, RUN_RECORD))
    if not (finished or os.path.isfile(request)):
        with open(request, "w", encoding="utf-8") as fout:
            json.dump(json.loads(json.dumps(overrides)), fout, indent=2)
    return moved


def run_folder_of(paths, name, seed):
    """``<out>/runs/<name>/<seed>``, where a run is trained and cached."""
    return os.path.join(paths["out"], "runs", name, str(seed))


def read_record(run_folder):
    """A finished run's record, or None while it has none (or no export)."""
    path = os.path.join(run_folder, RUN_RECORD)
    export = os.path.join(run_folder, "export", "hyperparams.yaml")
    if not (os.path.isfile(path) and os.path.isfile(export)):
        return None
    with open(path, encoding="utf-8") as fin:
        return json.load(fin)


def run_one(name, objective, extra, seed, config, paths):
    """Trains and scores one (variant, seed), or reads its finished record.

    A cached run trained with other overrides is first moved aside
    (:func:`ensure_current`); a finished one is read back; an interrupted
    one resumes from its last checkpoint.

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
        The budget (see :func:`train_overrides`), ``device`` and
        ``threads``.
    paths : dict
        ``out``, ``corpus``, ``prep_folder``, ``noise_csv``, ``rir_csv``.

    Returns
    -------
    dict
        The run record (also written to ``<run>/bench_run.json``): the
        overrides, times (:func:`run_training`) and clean scores
        (:func:`score_metrics`).
    """
    run_folder = run_folder_of(paths, name, seed)
    hparams_file = OBJECTIVES[objective][0]
    overrides = train_overrides(
        objective, extra, config, seed, dict(paths, output_folder=run_folder)
    )
    moved = ensure_current(run_folder, overrides)
    if moved:
        print(
            f"[{name} seed {seed}] cached with other settings: moved to "
            f"{moved}; training again",
            flush=True,
        )
    record = read_record(run_folder)
    if record is not None:
        print(
            f"[{name} seed {seed}] done already: EER {record['EER']:.2f}%",
            flush=True,
        )
        return record
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
        **score_metrics(score_run(run_folder, paths, config)),
    }
    path = os.path.join(run_folder, RUN_RECORD)
    with open(path, "w", encoding="utf-8") as fout:
        json.dump(record, fout, indent=2)
    print(
        f"[{name} seed {seed}] EER {record['EER']:.2f}%, "
        f"minDCF {record['minDCF']:.3f}",
        flush=True,
    )
    return record


# 3. Scoring


def score_trials(
    encoder,
    rows,
    trials,
    cache_folder,
    num_workers,
    condition="clean",
    corruption_seed=1234,
    batch_size=64,
):
    """Cosine-scores trials, the test side clean or interfered.

    The one scoring function of the benchmarks: every utterance is
    enrolled by itself (``rows`` are both sides) and, for a condition
    other than ``clean``, every test utterance is corrupted by
    :class:`speechbrain_ext.evaluation.robustness.Corruptor`, the
    interferers drawn among ``rows`` of other speakers, deterministically
    by ``corruption_seed`` (the same mixtures for every system).

    Arguments
    ---------
    encoder : object
        Has ``encode_batch(wavs, wav_lens)`` and ``device``.
    rows : list of dict
        Manifest rows of the trials' utterances (``ID``, ``wav``,
        ``spk_id``).
    trials : list of tuple
        ``(enrol_id, test_id, label)``.
    cache_folder : str
        Embedding cache (an interrupted scoring resumes).
    num_workers : int
        Audio-decoding workers.
    condition : str
        ``clean``, ``sir5``... (see
        :func:`speechbrain_ext.evaluation.robustness.parse_condition`).
    corruption_seed : int
        Seed of the interferers.
    batch_size : int
        Utterances per embedding batch.

    Returns
    -------
    dict
        The result of
        :func:`speechbrain_ext.evaluation.verification.verify_trials`
        (``EER`` as a fraction, ``minDCF``, ``scores``...).
    """
    corruptor = None
    if not parse_condition(condition).is_clean:
        corruptor = Corruptor(condition, rows, seed=corruption_seed)
    return verify_trials(
        encoder,
        rows,
        rows,
        trials,
        batch_size=batch_size,
        cache_folder=cache_folder,
        num_workers=num_workers,
        test_transform=corruptor,
    )


def score_metrics(result):
    """``EER`` (%), ``minDCF``, ``n_trials`` and ``n_target`` of a scoring.

    Example
    -------
    >>> score_metrics(
    ...     {"EER": 0.125, "minDCF": 0.5, "n_trials": 8, "n_target": 2}
    ... )
    {'EER': 12.5, 'minDCF': 0.5, 'n_trials': 8, 'n_target': 2}
    """
    return {
        "EER": 100 * result["EER"],
        "minDCF": result["minDCF"],
        "n_trials": result["n_trials"],
        "n_target": result["n_target"],
    }


def load_export(run_folder, device, export=None, savedir=None):
    """A run's export, loaded as a user would.

    Arguments
    ---------
    run_folder : str
        The run's folder.
    device : str
        The torch device.
    export : str, optional
        The export folder (default ``<run_folder>/export``).
    savedir : str, optional
        Where SpeechBrain links the files (default
        ``<run_folder>/verify/model``).

    Returns
    -------
    speechbrain.inference.speaker.EncoderClassifier
    """
    return EncoderClassifier.from_hparams(
        source=os.path.abspath(export or os.path.join(run_folder, "export")),
        savedir=savedir or os.path.join(run_folder, "verify", "model"),
        run_opts={"device": device},
    )


def score_run(
    run_folder,
    paths,
    config,
    condition="clean",
    corruption_seed=1234,
    encoder=None,
):
    """Scores a run's export on the prepared trials (:func:`score_trials`).

    Arguments
    ---------
    run_folder : str
        The run's folder; its embeddings are cached in
        ``verify/embeddings``.
    paths : dict
        ``prep_folder`` (``eval.csv``, ``trials.csv``) and ``corpus``.
    config : dict
        ``device`` and ``num_workers``.
    condition : str
        The test side's condition.
    corruption_seed : int
        Seed of the interferers.
    encoder : object, optional
        The export already loaded (:func:`load_export`).

    Returns
    -------
    dict
        As :func:`score_trials`.
    """
    return score_trials(
        encoder or load_export(run_folder, config["device"]),
        prepared_rows(paths["prep_folder"], "eval", paths["corpus"]),
        read_trial_file(os.path.join(paths["prep_folder"], "trials.csv")),
        os.path.join(run_folder, "verify", "embeddings"),
        config["num_workers"],
        condition,
        corruption_seed,
    )


def trial_scores(run_folder, record, paths, config):
    """The clean per-trial scores of a run, computed once and kept.

    Scoring in :func:`run_one` caches the embeddings in
    ``<run>/verify/embeddings``, so this only reloads them and scores the
    trials again; the scores go to ``<run>/scores.npy``.

    Arguments
    ---------
    run_folder : str
        The run's folder (with ``export``).
    record : dict
        The run's record; its ``EER`` must match the scores'.
    paths : dict
        ``prep_folder`` and ``corpus``.
    config : dict
        ``device`` and ``num_workers``.

    Returns
    -------
    numpy.ndarray
        One cosine score per trial of ``trials.csv``, in its order.

    Raises
    ------
    RuntimeError
        If the scores do not give the record's EER (a stale record).
    """
    path = os.path.join(run_folder, SCORES_FILE)
    if os.path.isfile(path):
        return np.load(path)
    result = score_run(run_folder, paths, config)
    if abs(100 * result["EER"] - record["EER"]) > 1e-3:
        raise RuntimeError(
            f"{run_folder}: the trial scores give EER "
            f"{100 * result['EER']:.3f}%, its record {record['EER']:.3f}%; "
            "remove the run folder to train and score it again"
        )
    partial = path + ".partial.npy"
    np.save(partial, np.asarray(result["scores"], dtype=np.float64))
    os.replace(partial, path)
    return np.load(path)


CONDITIONS_RECORD = "bench_conditions.json"


def scores_path(run_folder, condition):
    """Where a run keeps its per-trial scores of one condition."""
    return os.path.join(run_folder, f"scores_{condition}.npy")


def condition_scores(run_folder, paths, config, conditions, corruption_seed):
    """EER/minDCF of a run's export with the test side of each condition.

    Per-trial scores are kept as ``scores_<condition>.npy`` (float32) and
    the metrics in ``bench_conditions.json``; finished conditions are read
    back, not redone.

    Arguments
    ---------
    run_folder : str
        Holds ``export/``.
    paths : dict
        ``corpus`` and ``prep_folder``.
    config : dict
        ``device`` and ``num_workers``.
    conditions : list of str
        Condition names (``clean``, ``sir0``...).
    corruption_seed : int
        The same interferers for every system.

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
    encoder = None
    for name in conditions:
        if name in done and os.path.isfile(scores_path(run_folder, name)):
            continue
        encoder = encoder or load_export(run_folder, config["device"])
        result = score_run(
            run_folder, paths, config, name, corruption_seed, encoder
        )
        np.save(
            scores_path(run_folder, name),
            np.asarray(result["scores"], dtype=np.float32),
        )
        done[name] = {"EER": 100 * result["EER"], "minDCF": result["minDCF"]}
        print(f"  {name}: EER {done[name]['EER']:.2f}%", flush=True)
        with open(record_path, "w", encoding="utf-8") as fout:
            json.dump(done, fout, indent=2)
    return done


def trial_speakers(prep_folder):
    """Labels and enrolment/test speakers of the prepared trials.

    Arguments
    ---------
    prep_folder : str
        Holds ``eval.csv`` (``ID``, ``spk_id``) and ``trials.csv``.

    Returns
    -------
    labels : numpy.ndarray
        bool, True for target trials, in the trial file's order.
    enrol_speakers : numpy.ndarray
        The speaker of each trial's enrolment utterance.
    test_speakers : numpy.ndarray
        The speaker of each trial's test utterance.
    """
    rows = prepared_rows(prep_folder, "eval")
    speaker = {row["ID"]: row["spk_id"] for row in rows}
    trials = read_trial_file(os.path.join(prep_folder, "trials.csv"))
    labels = np.array([int(label) == 1 for _, _, label in trials])
    enrol = np.array([speaker[enrol_id] for enrol_id, _, _ in trials])
    test = np.array([speaker[test_id] for _, test_id, _ in trials])
    return labels, enrol, test


def trial_table(prep_folder):
    """The trial fields :func:`bench.scores.save_trial_scores` keeps.

    Arguments
    ---------
    prep_folder : str
        Holds ``eval.csv`` and ``trials.csv``.

    Returns
    -------
    dict
        ``enrol``, ``test`` (utterance ids), ``label``, ``enrol_speaker``
        and ``test_speaker``.
    """
    labels, enrol, test = trial_speakers(prep_folder)
    trials = read_trial_file(os.path.join(prep_folder, "trials.csv"))
    return {
        "enrol": [enrol_id for enrol_id, _, _ in trials],
        "test": [test_id for _, test_id, _ in trials],
        "label": labels,
        "enrol_speaker": enrol,
        "test_speaker": test,
    }


# 4. Curves


def validation_curve(run_folder):
    """``[(epoch, validation EER), ...]`` of a run, from its train log.

    Arguments
    ---------
    run_folder : str
        The run's folder, holding ``train_log.txt``.

    Returns
    -------
    list of tuple
        One point per validated epoch; empty without a log.
    """
    path = os.path.join(run_folder, "train_log.txt")
    if not os.path.isfile(path):
        print(f"[{run_folder}] no train_log.txt: no learning curve", flush=True)
        return []
    return curve_points(read_learning_curve(path))


def best_validation_eer(curve):
    """The lowest finite validation EER of a curve (NaN if none).

    Arguments
    ---------
    curve : list of tuple
        ``(epoch, EER)`` points.

    Returns
    -------
    float
        The checkpoint-selection criterion of the run.

    Example
    -------
    >>> best_validation_eer([(1, 30.0), (2, float("nan")), (3, 21.5)])
    21.5
    >>> math.isnan(best_validation_eer([]))
    True
    """
    finite = [eer for _, eer in curve if math.isfinite(eer)]
    return min(finite) if finite else float("nan")
