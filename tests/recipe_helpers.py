"""Shared by the tests that run the CNCeleb recipe scripts end to end."""

import os
import subprocess
import sys

from hyperpyyaml import load_hyperpyyaml

RECIPE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "recipes",
    "CNCeleb",
)

# The tiny generated corpus of the recipe tests (9 speakers, CN-Celeb layout).
TINY_CORPUS = {
    "n_train_speakers": 6,
    "n_eval_speakers": 3,
    "utts_per_speaker": 8,
    "n_test_per_eval_speaker": 3,
    "seed": 7,
}

# A tiny ECAPA-TDNN and short crops: a recipe epoch on the test corpus takes
# seconds on one CPU core.
TINY = [
    "--channels=[32, 32, 32, 32, 96]",
    "--attention_channels=16",
    "--emb_dim=32",
    "--batch_size=8",
    "--sentence_len=1.0",
    "--num_workers=0",
    "--valid_max_utterances=60",
    "--ckpt_interval_minutes=0",
    "--keep_checkpoints=10",
    # The tiny corpus's 1-5 s files kept whole: joining them to 5 s (the
    # CN-Celeb default) would leave a third of the items and steps.
    "--join_min_duration=0.0",
    "--min_duration=0.0",
]


def run_recipe(script, *args, timeout=600, env=None):
    """Runs a recipe script from the recipe folder; fails with its output."""
    process = subprocess.run(
        [sys.executable, script, *args],
        cwd=RECIPE,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert process.returncode == 0, (
        process.stdout[-3000:] + process.stderr[-3000:]
    )
    return process.stdout


def train_args(
    corpus, out, hparams="hparams/aam_softmax.yaml", epochs=2, prep_folder=None
):
    """Command line of a tiny training run (preparation in ``out``)."""
    return [
        hparams,
        f"--data_folder={corpus}",
        f"--output_folder={out}",
        f"--prep_folder={prep_folder or out + '/prepared'}",
        f"--number_of_epochs={epochs}",
        *TINY,
    ]


def torchrun(args, n_processes=2, timeout=600):
    """Runs train.py under torchrun; fails with the output of every rank."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={n_processes}",
        "train.py",
        *args,
        "--distributed_backend=gloo",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.run(
        command,
        cwd=RECIPE,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-4000:]
    return output


def train_module():
    """The recipe's ``train.py`` as a module, for its functions."""
    sys.path.insert(0, RECIPE)
    try:
        import train
    finally:
        sys.path.remove(RECIPE)
    return train


def recipe_hparams(hparams_file, overrides):
    """A recipe YAML (path relative to the recipe folder), loaded."""
    with open(os.path.join(RECIPE, hparams_file), encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides)


def prepare_like_train(hparams_file, overrides):
    """Runs the data preparation with train.py's own function."""
    hparams = recipe_hparams(hparams_file, overrides)
    train_module().prepare_corpus(hparams)
    return hparams["prep_folder"]
