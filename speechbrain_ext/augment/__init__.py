"""Offline augmentation, all called as ``out = augment(waveforms, lengths)``.

Waveforms are ``[batch, time]`` and lengths SpeechBrain's relative lengths
``[batch]``, so every augmenter also fits SpeechBrain's ``Augmenter``.
Noises and RIRs are generated locally (no MUSAN or RIR download) and held
in memory (no DataLoader per augmenter); every SNR and SIR is exact over
the valid samples (see :mod:`.mixing`).

* :func:`generate_noise_bank` / :class:`AddNoiseBank` - synthetic noises
  added at a random SNR.
* :func:`simulate_rirs` / :class:`AddReverbBank` - shoebox-room RIRs, one
  per utterance, level and alignment kept.
* :class:`InterferingTalker` - another utterance at a random SIR, with
  optional partial overlap.
* :class:`InterferedViews` - several interfered views of each clean
  utterance plus the clean target, for contrastive separative coding.
* :func:`mix_at_ratio` - the exact-ratio mixing they share.
* :class:`WaveformMixup` - mixes utterances of a batch with each other,
  for margin-mixup.
"""

from speechbrain_ext.augment.bank import WaveformBank, load_waveform_bank
from speechbrain_ext.augment.interference import (
    InterferedViews,
    InterferingTalker,
)
from speechbrain_ext.augment.mixing import mix_at_ratio, mix_in_region
from speechbrain_ext.augment.mixup import WaveformMixup
from speechbrain_ext.augment.noise import AddNoiseBank, generate_noise_bank
from speechbrain_ext.augment.reverb import AddReverbBank, simulate_rirs

__all__ = [
    "AddNoiseBank",
    "AddReverbBank",
    "InterferedViews",
    "InterferingTalker",
    "WaveformBank",
    "WaveformMixup",
    "generate_noise_bank",
    "load_waveform_bank",
    "mix_at_ratio",
    "mix_in_region",
    "simulate_rirs",
]
