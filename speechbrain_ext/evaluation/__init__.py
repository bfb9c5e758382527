"""Evaluation of a trained encoder on a trial list, clean or corrupted.

- :mod:`~speechbrain_ext.evaluation.verification`: embeds the enrolment,
  test and cohort audio of a trial list with an exported model, scores the
  trials and writes the scores, a summary and plots;
- :mod:`~speechbrain_ext.evaluation.robustness`: test-side conditions
  (interfering talker at an SIR, noise at an SNR) applied reproducibly to
  test utterances.
"""
