"""Audio reading that fails with a message naming the file.

Every path that touches audio in this package (preparation, training data
pipelines, extraction, verification) reads through :func:`load_audio` so that
missing, corrupt, empty, stereo and wrong-rate files are treated the same way
everywhere: stereo is down-mixed, other sample rates are resampled, and
anything unreadable raises :class:`AudioError` with the path in the message.

Reading goes through soundfile (as SpeechBrain's ``audio_io`` does), never
``torchaudio.load``, which needs FFmpeg/torchcodec in torchaudio >= 2.9.

Example
-------
>>> import torch
>>> tmpdir = getfixture("tmpdir")
>>> path = str(tmpdir / "tone.wav")
>>> save_audio(path, torch.sin(torch.arange(16000) * 0.1), 16000)
>>> load_audio(path).shape
torch.Size([16000])
>>> audio_info(path).duration
1.0
"""

import dataclasses
import os

import numpy as np
import soundfile as sf
import torch
import torchaudio

__all__ = ["AudioError", "AudioInfo", "audio_info", "load_audio", "save_audio"]


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file."""


@dataclasses.dataclass
class AudioInfo:
    """What the header of an audio file says.

    Arguments
    ---------
    path : str
        The file described.
    sample_rate : int
        Samples per second.
    num_frames : int
        Samples per channel.
    num_channels : int
        Number of channels.
    """

    path: str
    sample_rate: int
    num_frames: int
    num_channels: int

    @property
    def duration(self):
        """Length in seconds."""
        return self.num_frames / self.sample_rate


def audio_info(path):
    """Reads an audio header, raising :class:`AudioError` if unusable.

    Arguments
    ---------
    path : str
        Audio file in any format soundfile reads (wav, flac, ogg/opus...).

    Returns
    -------
    AudioInfo
        Sample rate, frame count and channel count.

    Raises
    ------
    AudioError
        If the file is missing, unreadable or holds no samples.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}")
    try:
        info = sf.info(path)
    except Exception as err:  # soundfile raises several types
        raise AudioError(f"cannot read audio file {path}: {err}") from err
    # Opus headers report no frame count; decode to learn the true length.
    frames = info.frames
    if frames <= 0 and info.format == "OGG":
        try:
            frames = len(sf.read(path, dtype="float32", always_2d=True)[0])
        except Exception as err:
            raise AudioError(f"cannot read audio file {path}: {err}") from err
    if frames <= 0:
        raise AudioError(f"audio file is empty (0 samples): {path}")
    return AudioInfo(path, int(info.samplerate), int(frames), info.channels)


def load_audio(path, start=0, stop=None, sample_rate=16000):
    """Reads a mono waveform at ``sample_rate``, resampling if needed.

    Arguments
    ---------
    path : str
        Audio file in any format soundfile reads.
    start : int
        First sample to read, counted at the file's own rate.
    stop : int, optional
        One past the last sample to read (file rate); None reads to the end.
    sample_rate : int
        Rate of the returned waveform. Files at another rate are resampled.

    Returns
    -------
    torch.Tensor
        Float32 waveform of shape [time]; multi-channel audio is averaged.

    Raises
    ------
    AudioError
        If the file is missing, corrupt, empty, or the segment is empty.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}")
    try:
        data, file_rate = sf.read(
            path, start=start, stop=stop, dtype="float32", always_2d=True
        )
    except Exception as err:
        raise AudioError(f"cannot read audio file {path}: {err}") from err
    if data.shape[0] == 0:
        raise AudioError(
            f"audio file {path} holds no samples in [{start}, {stop})"
        )
    if not np.isfinite(data).all():
        raise AudioError(f"audio file {path} contains NaN or inf samples")
    wav = torch.from_numpy(data.mean(axis=1))
    if file_rate != sample_rate:
        wav = torchaudio.functional.resample(wav, file_rate, sample_rate)
    return wav


def save_audio(path, wav, sample_rate, subtype=None):
    """Writes a mono waveform, creating the parent folder.

    Arguments
    ---------
    path : str
        Output file; the extension picks the format (.wav, .flac, ...).
    wav : torch.Tensor or numpy.ndarray
        Waveform of shape [time] with values in [-1, 1].
    sample_rate : int
        Samples per second.
    subtype : str, optional
        soundfile subtype, e.g. "PCM_16" (the format's default if None).
    """
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sf.write(
        str(path),
        np.asarray(wav, dtype=np.float32),
        sample_rate,
        subtype=subtype,
    )
