"""The pretrained Resemblyzer voice encoder behind SpeechBrain's interface.

Resemblyzer (pip ``resemblyzer``, weights shipped in the wheel) embeds one
utterance at a time from a numpy waveform. :class:`ResemblyzerEncoder` gives
it ``encode_batch(wavs, wav_lens)`` and ``device``, the interface of
``speechbrain.inference.speaker.EncoderClassifier``, so
:func:`speechbrain_ext.evaluation.verification.verify_trials` scores it on the same
trials, with the same cosine scoring and metrics, as our trained models.
"""

import importlib.metadata
import sys
import types

import numpy as np
import torch

__all__ = ["ResemblyzerEncoder"]

SAMPLE_RATE = 16000  # the rate Resemblyzer's model was trained at


class ResemblyzerEncoder:
    """Embeds padded batches with Resemblyzer's ``VoiceEncoder``.

    Each utterance is cut to its true length, preprocessed as Resemblyzer's
    documentation prescribes (``preprocess_wav``: volume normalisation and
    VAD trimming of long silences) and embedded with ``embed_utterance``
    (the L2-normalised mean of 1.6 s partial embeddings). Should the VAD
    trimming leave less than ``min_seconds`` of audio, the untrimmed
    utterance is embedded instead, so every file gets an embedding.

    Arguments
    ---------
    device : str
        Torch device of the encoder.
    min_seconds : float
        Shortest preprocessed waveform accepted before falling back to the
        untrimmed one.

    Example
    -------
    >>> import pytest  # resemblyzer is a benchmark-only dependency
    >>> _ = pytest.importorskip("resemblyzer")
    >>> encoder = ResemblyzerEncoder()
    >>> wavs = 0.1 * torch.randn(2, 16000)
    >>> emb = encoder.encode_batch(wavs, torch.tensor([1.0, 0.5]))
    >>> emb.shape
    torch.Size([2, 1, 256])
    >>> torch.allclose(emb.norm(dim=-1), torch.ones(2, 1))
    True
    """

    def __init__(self, device="cpu", min_seconds=0.1):
        _provide_pkg_resources()
        # Imported here: resemblyzer (and its webrtcvad and librosa) is a
        # benchmark-only dependency.
        from resemblyzer import VoiceEncoder, preprocess_wav

        self.device = device
        self.min_samples = int(min_seconds * SAMPLE_RATE)
        self._preprocess = preprocess_wav
        self._model = VoiceEncoder(device, verbose=False)

    def encode_batch(self, wavs, wav_lens=None):
        """Embeds a padded batch of 16 kHz waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms [batch, time] at 16 kHz.
        wav_lens : torch.Tensor, optional
            Relative lengths [batch] (SpeechBrain's convention); all 1 when
            omitted.

        Returns
        -------
        torch.Tensor
            Unit-norm embeddings [batch, 1, 256].
        """
        if wav_lens is None:
            wav_lens = torch.ones(len(wavs))
        embeddings = []
        for wav, rel_len in zip(wavs, wav_lens):
            n_samples = int(round(float(rel_len) * wavs.shape[1]))
            raw = wav[:n_samples].detach().cpu().numpy().astype(np.float32)
            trimmed = self._preprocess(raw)
            chosen = trimmed if len(trimmed) >= self.min_samples else raw
            embeddings.append(self._model.embed_utterance(chosen))
        return torch.from_numpy(np.stack(embeddings)).unsqueeze(1)


def _provide_pkg_resources():
    """Lets webrtcvad import where setuptools no longer has pkg_resources.

    webrtcvad 2.0.10 (Resemblyzer's VAD) imports ``pkg_resources`` only to
    read its own version; setuptools >= 81 dropped that module. A stand-in
    answering ``get_distribution(name).version`` from importlib.metadata
    is registered when the real one is missing.
    """
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        stand_in = types.ModuleType("pkg_resources")
        stand_in.get_distribution = lambda name: types.SimpleNamespace(
            version=importlib.metadata.version(name)
        )
        sys.modules["pkg_resources"] = stand_in
