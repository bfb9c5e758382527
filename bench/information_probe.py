"""Estimates I(z; g) of a trained CSC checkpoint on its validation speakers.

The training log of a CSC run reports the estimate at the end of every
epoch (``valid loss_information``), with directions fitted on that epoch's
training pairs. This script recomputes it afterwards for any checkpoint of
a run folder, with nothing but the run's own files: it rebuilds the run
from its ``hyperparams.yaml``, loads the checkpoint's encoder and
aggregator, cuts every validation utterance as the recipe's validation
does (batches of 16 sorted by duration, each cut to its shortest item and
at most the training crop), makes the interfered views, and prints
:func:`~speechbrain_ext.losses.information.gaussian_information` of the
matched pairs and of shuffled partners, fitted on half the targets and
scored on the other half, for several numbers of directions.

For a run without an aggregator (SimCLR), g is replaced by the embedding
of the *other* segment view of the same crop, which measures what the two
views' embeddings share.

Run from the repository root::

    python -m bench.information_probe results/csc/1986 --checkpoint -1
"""

import argparse
import glob
import os

import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_ext.data.manifest import read_manifest
from speechbrain_ext.lobes.cross_attention import unstack_views
from speechbrain_ext.losses.information import (
    gaussian_information,
    shuffled_partners,
)

BATCH = 16
# The benchmark's training crop, and the shortest crop worth embedding.
MAX_CROP = 16000
MIN_CROP = 4000


def load_run(run_folder, checkpoint):
    """The run's modules (checkpoint loaded, eval mode), task and hparams."""
    with open(os.path.join(run_folder, "hyperparams.yaml")) as fin:
        text = fin.read()
    # A classifier is sized at training time; its size does not matter here.
    overrides = {"n_train_speakers": 2} if "n_train_speakers" in text else {}
    hparams = load_hyperpyyaml(text, overrides)
    folders = sorted(glob.glob(os.path.join(run_folder, "save", "CKPT*")))
    if not folders:
        raise FileNotFoundError(f"no checkpoint in {run_folder}/save")
    folder = folders[checkpoint]
    for name in ("embedding_model", "aggregator"):
        if name in hparams:
            state = torch.load(os.path.join(folder, f"{name}.ckpt"))
            hparams[name].load_state_dict(state)
    modules = torch.nn.ModuleDict(hparams["modules"]).eval()
    return modules, hparams["task"], hparams, folder


def validation_pairs(modules, task, hparams, seed=0):
    """(z, g) ``[targets, views, D]`` of the validation utterances."""
    replacements = {"data_root": hparams["data_folder"]}
    rows = read_manifest(hparams["valid_annotation"], replacements)
    rows = sorted(rows, key=lambda row: float(row["duration"]))
    torch.manual_seed(seed)
    zs, gs = [], []
    with torch.no_grad():
        for start in range(0, len(rows), BATCH):
            audio = [
                torch.from_numpy(sf.read(row["wav"], dtype="float32")[0])
                for row in rows[start : start + BATCH]
            ]
            shortest = min(len(a) for a in audio)
            wavs = torch.stack([a[:shortest] for a in audio])
            pairs = pairs_of(modules, task, wavs)
            if pairs is not None:
                zs.append(pairs[0])
                gs.append(pairs[1])
    return torch.cat(zs), torch.cat(gs)


def pairs_of(modules, task, wavs):
    """(z, g) of a batch: CSC's own pairs, or z and the other view's z."""
    lens = torch.ones(len(wavs))
    if hasattr(task, "information_pairs"):
        return task.information_pairs(modules, wavs, lens)
    crop = min(wavs.shape[1], MAX_CROP)
    if len(wavs) < 2 or crop < MIN_CROP:
        return None
    views, view_lens = task.views(wavs[:, :crop], lens)[:2]
    z = unstack_views(task.embed(modules, views, view_lens).squeeze(1), 2)
    return z, z.flip(1)


def main(argv=None):
    """Prints matched and shuffled estimates for 1, 2 and 4 directions."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_folder")
    parser.add_argument("--checkpoint", type=int, default=-1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    modules, task, hparams, folder = load_run(args.run_folder, args.checkpoint)
    z, g = validation_pairs(modules, task, hparams)
    shuffled = shuffled_partners(g, torch.Generator().manual_seed(0))
    print(f"{folder}: {len(z)} validation targets")
    print("| directions | matched (nats) | shuffled (nats) |")
    print("|---|---|---|")
    for dims in (1, 2, 4):
        matched = gaussian_information(z, g, dims=dims)
        control = gaussian_information(z, shuffled, dims=dims)
        print(f"| {dims} | {matched:.3f} | {control:.3f} |")


if __name__ == "__main__":
    main()
