#!/usr/bin/env python3
"""Exports the best checkpoint of a training run for offline inference.

Takes the same hparams file and overrides as ``train.py`` (which exports by
itself at the end of training); use it for a run that was stopped early or
to export again:

    python export.py hparams/aam_softmax.yaml --data_folder=/data/CN-Celeb_flac

The folder written (``<output_folder>/export`` unless ``--export_folder``
says otherwise) loads with
``EncoderClassifier.from_hparams(source=<folder>)`` and no network.
"""

import os
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechbrain_ext.export import export_from_hparams

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import size_classifier  # noqa: E402

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    hparams = size_classifier(hparams_file, overrides, hparams)
    print(f"Exported model: {export_from_hparams(hparams)}")
