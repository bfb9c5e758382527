#!/usr/bin/env python3
"""Exports the best checkpoint of a training run for offline inference.

Takes the same hparams file and overrides as ``train.py`` (which exports by
itself at the end of training); use it for a run that was stopped early or
to export again:

    python export.py hparams/aam_softmax.yaml --data_folder=/data/CN-Celeb_flac

The folder written (``<output_folder>/export`` unless ``--export_folder``
says otherwise) loads with
``EncoderClassifier.from_hparams(source=<folder>)`` and no network.

``--onnx`` also writes ``<folder>/embedding_model.onnx``: Fbank, sentence
mean normalisation and the embedding network as one ONNX graph (dynamic
batch and time axes, relative lengths as an input) for ONNX Runtime, checked
against torch on a padded batch (see
``speechbrain_ext.inference.onnx_export``; needs
``pip install speechbrain_ext[onnx]``):

    python export.py hparams/aam_softmax.yaml --onnx \\
        --data_folder=/data/CN-Celeb_flac

A hparams file with ``export_onnx: True`` does the same, here and at the end
of ``train.py``. ``verify.py --backend onnx`` runs the ONNX graph.

``--calibration=<file>`` puts a score calibration (the ``calibration.json``
that ``verify.py --calibrate`` writes, fitted without --score_norm and
--mean_norm) into the folder, so that
``speechbrain_ext.inference.calibrated_recognition.CalibratedSpeakerRecognition``
returns log-likelihood ratios and Bayes decisions (see docs/calibration.md).
An export without it removes the calibration of an earlier export:

    python export.py hparams/aam_softmax.yaml \
        --data_folder=/data/CN-Celeb_flac \
        --calibration=results/aam_softmax/1986/verify/calibration.json
"""

import os
import sys

from hyperpyyaml import load_hyperpyyaml
from speechbrain_ext.inference.export import (
    add_calibration,
    export_from_hparams,
)

import speechbrain as sb

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import size_classifier  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    with_onnx = "--onnx" in argv
    argv = [arg for arg in argv if arg != "--onnx"]
    calibration = [a for a in argv if a.startswith("--calibration=")]
    argv = [arg for arg in argv if arg not in calibration]
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    hparams = size_classifier(hparams_file, overrides, hparams)
    folder = export_from_hparams(hparams)
    print(f"Exported model: {folder}")
    if calibration:
        path = calibration[-1].split("=", 1)[1]
        print(f"Added calibration: {add_calibration(folder, path)}")
    if with_onnx or hparams.get("export_onnx", False):
        from speechbrain_ext.inference.onnx_export import export_onnx

        print(f"Exported ONNX model: {export_onnx(folder)}")
