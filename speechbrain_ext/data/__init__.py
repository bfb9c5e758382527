"""Audio, manifests and batches: everything before the model sees a batch.

- :mod:`~speechbrain_ext.data.audio`: audio reading (soundfile) that names
  the failing file;
- :mod:`~speechbrain_ext.data.manifest`: CSV manifests and trial files;
- :mod:`~speechbrain_ext.data.preparation`,
  :mod:`~speechbrain_ext.data.folder_corpus`: building blocks of a corpus
  preparation, and ``<speaker>/<utterance>`` folder corpora;
- :mod:`~speechbrain_ext.data.demo_corpus`: the synthetic demo corpus;
- :mod:`~speechbrain_ext.data.pipelines`,
  :mod:`~speechbrain_ext.data.batches`: training data pipelines and
  collation;
- :mod:`~speechbrain_ext.data.samplers`: the speaker-balanced P x K sampler.
"""
