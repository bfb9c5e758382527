"""SpeechBrain's ``SpeakerRecognition`` returning calibrated LLRs.

:class:`CalibratedSpeakerRecognition` loads an exported model folder like
``speechbrain.inference.speaker.SpeakerRecognition.from_hparams`` does,
offline, and reads the folder's ``calibration.json`` if there is one (see
:func:`speechbrain_ext.inference.export.add_calibration`):

- with it, :meth:`~CalibratedSpeakerRecognition.verify_batch` and
  :meth:`~CalibratedSpeakerRecognition.verify_files` return the
  log-likelihood ratio of each trial (natural log) and the Bayes decision
  at a stated prior, ``llr >= log((1 - p_target) / p_target)``;
- without it they behave as SpeechBrain's: the cosine score and
  ``score > 0.25``, and the model logs once, when loaded, that its scores
  are uncalibrated.

Audio files are read with soundfile
(:func:`speechbrain_ext.data.audio.load_audio`).

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
>>> from speechbrain_ext.inference.export import (
...     add_calibration,
...     default_template,
...     export_encoder,
... )
>>> from speechbrain_ext.scoring import LinearCalibration
>>> tmpdir = getfixture("tmpdir")
>>> sizes = {"n_mels": 24, "channels": [16, 16, 16, 16, 48], "lin_neurons": 8}
>>> model = ECAPA_TDNN(24, channels=sizes["channels"], lin_neurons=8)
>>> folder = export_encoder(
...     str(tmpdir / "export"), default_template(), model, sizes
... )
>>> _ = add_calibration(folder, LinearCalibration(8.0, -4.0, p_target=0.05))
>>> verifier = CalibratedSpeakerRecognition.from_hparams(
...     source=folder, savedir=str(tmpdir / "loaded"), p_target=0.01
... )
>>> wavs = torch.rand(2, 16000)
>>> llr, decision = verifier.verify_batch(wavs, wavs)
>>> [round(value, 4) for value in llr.flatten().tolist()]
[4.0, 4.0]
>>> decision.flatten().tolist()  # 4.0 < log(99) = 4.595
[False, False]
"""

import logging
import os

from speechbrain.inference.speaker import SpeakerRecognition
from speechbrain_ext.data.audio import load_audio
from speechbrain_ext.inference.export import CALIBRATION_FILE
from speechbrain_ext.scoring.calibration import (
    LinearCalibration,
    bayes_threshold,
)

__all__ = ["CalibratedSpeakerRecognition"]

logger = logging.getLogger(__name__)

# SpeechBrain's default cosine threshold in SpeakerRecognition.verify_batch.
UNCALIBRATED_THRESHOLD = 0.25


class CalibratedSpeakerRecognition(SpeakerRecognition):
    """Speaker verification that returns LLRs when the model is calibrated.

    Load it with :meth:`from_hparams` (``source`` an exported folder). The
    attributes ``calibration`` (a
    :class:`~speechbrain_ext.scoring.calibration.LinearCalibration` or
    None) and ``p_target`` (the decision prior) can be changed afterwards.

    Arguments
    ---------
    *args : tuple
        Forwarded to ``SpeakerRecognition``.
    **kwargs : dict
        Forwarded to ``SpeakerRecognition``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calibration = None
        self.p_target = None

    @classmethod
    def from_hparams(
        cls,
        source,
        hparams_file="hyperparams.yaml",
        p_target=None,
        calibration_file=CALIBRATION_FILE,
        **kwargs,
    ):
        """Loads an exported folder and its calibration, if it has one.

        Arguments
        ---------
        source : str
            The exported model folder (a local path: the calibration is
            read from it directly, nothing is fetched).
        hparams_file : str
            Hyperparameters file in ``source``.
        p_target : float, optional
            Prior of the decisions; default: the prior the calibration was
            fitted for.
        calibration_file : str
            Name of the calibration in ``source``.
        **kwargs : dict
            Forwarded to SpeechBrain's ``from_hparams`` (``savedir``,
            ``run_opts``...).

        Returns
        -------
        CalibratedSpeakerRecognition
        """
        verifier = super().from_hparams(
            source=source, hparams_file=hparams_file, **kwargs
        )
        path = os.path.join(str(source), calibration_file)
        if os.path.isfile(path):
            verifier.calibration = LinearCalibration.from_json(path)
            verifier.p_target = (
                p_target
                if p_target is not None
                else verifier.calibration.p_target
            )
            if verifier.p_target is None:
                raise ValueError(
                    f"{path} states no p_target: pass p_target to from_hparams"
                )
            bayes_threshold(verifier.p_target)  # checks the prior
            logger.info(
                "calibrated verifier: llr = %.4g * cosine %+.4g, decisions "
                "at p_target %g",
                verifier.calibration.a,
                verifier.calibration.b,
                verifier.p_target,
            )
        else:
            verifier.p_target = p_target
            logger.warning(
                "%s has no %s: scores are uncalibrated cosines and "
                "decisions use SpeechBrain's threshold %g (run verify.py "
                "--calibrate and add the calibration to the export)",
                source,
                calibration_file,
                UNCALIBRATED_THRESHOLD,
            )
        return verifier

    def load_audio(self, path, savedir=None):
        """Reads an audio file with soundfile at the model's sample rate.

        Arguments
        ---------
        path : str
            A local audio file.
        savedir : str, optional
            Unused (SpeechBrain's signature); files are read in place.

        Returns
        -------
        torch.Tensor
            Waveform [time] on the model's device.
        """
        rate = getattr(self.hparams, "sample_rate", 16000)
        return load_audio(path, sample_rate=rate).to(self.device)

    def verify_batch(
        self,
        wavs1,
        wavs2,
        wav1_lens=None,
        wav2_lens=None,
        threshold=None,
        p_target=None,
    ):
        """Scores pairs of waveforms and decides same / different speaker.

        Arguments
        ---------
        wavs1 : torch.Tensor
            Waveforms [batch, time] at the model's sample rate.
        wavs2 : torch.Tensor
            Waveforms [batch, time].
        wav1_lens : torch.Tensor, optional
            Relative lengths of ``wavs1``.
        wav2_lens : torch.Tensor, optional
            Relative lengths of ``wavs2``.
        threshold : float, optional
            Calibrated: an LLR threshold overriding the prior's; else the
            cosine threshold (default 0.25, as SpeechBrain).
        p_target : float, optional
            Calibrated only: prior of this call's decisions (default: the
            verifier's ``p_target``).

        Returns
        -------
        score : torch.Tensor
            The LLR of each pair when calibrated, else the cosine score.
        decision : torch.Tensor
            bool, True for "same speaker": ``llr >= threshold`` calibrated,
            ``cosine > threshold`` otherwise (SpeechBrain's rule).
        """
        emb1 = self.encode_batch(wavs1, wav1_lens, normalize=False)
        emb2 = self.encode_batch(wavs2, wav2_lens, normalize=False)
        score = self.similarity(emb1, emb2)
        if self.calibration is None:
            if p_target is not None:
                raise ValueError(
                    "p_target needs a calibrated model: this one has no "
                    "calibration"
                )
            if threshold is None:
                threshold = UNCALIBRATED_THRESHOLD
            return score, score > threshold
        llr = self.calibration(score)
        if threshold is None:
            threshold = bayes_threshold(p_target or self.p_target)
        return llr, llr >= threshold

    def verify_files(self, path_x, path_y, **kwargs):
        """Verifies two audio files; see :meth:`verify_batch`.

        Arguments
        ---------
        path_x : str
            First audio file.
        path_y : str
            Second audio file.
        **kwargs : dict
            ``threshold`` or ``p_target``, as in :meth:`verify_batch`.

        Returns
        -------
        score : torch.Tensor
            LLR (calibrated) or cosine score, one value.
        decision : torch.Tensor
            bool, True for "same speaker".
        """
        batch_x = self.load_audio(path_x).unsqueeze(0)
        batch_y = self.load_audio(path_y).unsqueeze(0)
        score, decision = self.verify_batch(batch_x, batch_y, **kwargs)
        return score[0], decision[0]
