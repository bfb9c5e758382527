"""SpeechBrain extensions for speaker verification.

AAM-SupCon and contrastive separative coding (CSC) objectives, interference
augmenters, a P x K speaker-balanced sampler, scalable scoring and export to
directories that ``EncoderClassifier.from_hparams`` loads offline.
"""

__version__ = "0.1.0"
