"""From a trained encoder to embeddings and decisions.

- :mod:`~speechbrain_ext.inference.export`: writes a folder that
  ``EncoderClassifier.from_hparams`` loads offline (with an optional score
  calibration);
- :mod:`~speechbrain_ext.inference.extraction`: batched, length-sorted,
  resumable embedding of many files;
- :mod:`~speechbrain_ext.inference.onnx_export`: adds an ONNX graph of the
  embedding model to an export folder, checked against torch;
- :mod:`~speechbrain_ext.inference.onnx_backend`: runs that graph with ONNX
  Runtime behind the ``encode_batch`` interface;
- :mod:`~speechbrain_ext.inference.calibrated_recognition`: SpeechBrain's
  ``SpeakerRecognition`` returning log-likelihood ratios and decisions.

The modules are imported from here one by one, so that loading one does not
load the others' dependencies (ONNX, SpeechBrain's inference classes).
The runtime side owns the ONNX file name: ``onnx_export`` imports
``onnx_backend``, never the reverse.
"""
