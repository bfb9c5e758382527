"""Scalable speaker-verification scoring.

- :mod:`~speechbrain_ext.scoring.metrics`: exact EER and minDCF in
  O(N log N), DET curves;
- :mod:`~speechbrain_ext.scoring.normalization`: cosine scoring and
  z/t/s/AS-norm with one cohort pass per utterance;
- :mod:`~speechbrain_ext.scoring.calibration`: Cllr, min Cllr, actDCF
  and a prior-weighted linear map from scores to log-likelihood ratios;
- :mod:`~speechbrain_ext.scoring.trials`: trial lists matched to embeddings
  by utterance stem;
- :mod:`~speechbrain_ext.scoring.trial_scoring`: a whole trial list scored
  from embeddings (enrolment averaging, mean and score normalisation, EER
  and minDCF), with no encoder;
- :mod:`~speechbrain_ext.scoring.plots`: DET curves, score histograms and
  EER-vs-SIR curves (imported from there, so that scoring does not load
  matplotlib).

Example
-------
>>> eer, min_dcf, _ = compute_eer_mindcf([0.8, 0.6, 0.5, 0.1], [1, 0, 1, 0])
>>> eer
0.5
"""

from speechbrain_ext.scoring.calibration import (
    LinearCalibration,
    act_dcf,
    bayes_threshold,
    cllr,
    fit_calibration,
    min_cllr,
)
from speechbrain_ext.scoring.metrics import compute_eer_mindcf, det_curve
from speechbrain_ext.scoring.normalization import (
    cosine_scores,
    score_normalize,
    speaker_cohort,
)
from speechbrain_ext.scoring.trial_scoring import TrialEmbeddings, score_trials
from speechbrain_ext.scoring.trials import (
    map_trials,
    read_trials,
    utterance_stem,
)

__all__ = [
    "LinearCalibration",
    "TrialEmbeddings",
    "act_dcf",
    "bayes_threshold",
    "cllr",
    "compute_eer_mindcf",
    "cosine_scores",
    "det_curve",
    "fit_calibration",
    "min_cllr",
    "map_trials",
    "read_trials",
    "score_normalize",
    "score_trials",
    "speaker_cohort",
    "utterance_stem",
]
