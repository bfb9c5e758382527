"""SpeechBrain extensions for speaker verification.

AAM-SupCon and contrastive separative coding (CSC) objectives, interference
augmenters, a P x K speaker-balanced sampler, scalable scoring and export to
directories that ``EncoderClassifier.from_hparams`` loads offline.

The package follows the pipeline:

- ``data/``: audio reading, manifests, corpus preparation, training
  pipelines and the P x K sampler;
- ``augment/``: noise, reverberation, interfering talkers, mixup;
- ``lobes/``: the networks CSC adds (separative encoder, cross-view
  attention, EMA teacher, prototype head);
- ``losses/``: one objective a file (AAM-softmax, AAM-SupCon, NT-Xent,
  CSC) and their weighted sum;
- ``tasks.py``, ``brain.py``: how a batch becomes a loss, and the training
  loop around it; with ``distributed.py`` (DDP gathering),
  ``checkpoints.py`` (atomic checkpoints) and ``output_checks.py`` (a
  writable output folder, checked at start);
- ``scoring/``: EER and minDCF, score normalisation, calibration, trial
  lists, scoring a trial list from embeddings, plots;
- ``evaluation/``: verification of a trial list with a model, clean or
  under test-side interference and noise;
- ``inference/``: export for ``from_hparams``, batched embedding
  extraction, ONNX export and the ONNX Runtime backend, calibrated
  recognition.
"""

__version__ = "0.1.0"
