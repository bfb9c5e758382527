"""Banks of short waveforms (noises, room impulse responses).

SpeechBrain's ``AddNoise`` and ``AddReverb`` stream their CSV through a
DataLoader, re-created whenever it runs out; with a handful of rows that
happens every few steps and dominates the step time. A bank instead reads
every file once, keeps them concatenated in one tensor with offsets, and
serves random segments by indexing, which is as cheap on a GPU as on a CPU.

Memory: samples are kept as int16 (half of float32; 16-bit files are held
losslessly) and converted to float per batch, and there is one copy per
CSV and device, however many augmenters read it. A bank larger than
``stream_above_mb`` (MUSAN's 109 h are about 12.5 GB as int16) is not
loaded at all: a :class:`StreamingWaveformBank` reads from disk, with
soundfile, only the segments a batch needs, as WeSpeaker does per sample.

Example
-------
>>> import torch
>>> from speechbrain_ext.data.audio import save_audio
>>> tmpdir = getfixture("tmpdir")
>>> save_audio(str(tmpdir / "a.wav"), torch.tensor([0.5, -0.5, 0.25]), 16000)
>>> with open(tmpdir / "bank.csv", "w", encoding="utf-8") as f:
...     _ = f.write("ID,duration,wav\\na,0.0002,$root/a.wav\\n")
>>> bank = load_waveform_bank(str(tmpdir / "bank.csv"), {"root": tmpdir})
>>> bank.random_segments(1, 5)  # shorter than 5 samples: tiled
tensor([[ 0.5000, -0.5000,  0.2500,  0.5000, -0.5000]])
>>> streamed = load_waveform_bank(
...     str(tmpdir / "bank.csv"), {"root": tmpdir}, storage="stream"
... )
>>> streamed.random_segments(1, 5)
tensor([[ 0.5000, -0.5000,  0.2500,  0.5000, -0.5000]])
"""

import copy
import logging
import math
import os
import zlib

import numpy as np
import torch

from speechbrain_ext.data.audio import AudioError, audio_info, load_audio
from speechbrain_ext.data.manifest import read_manifest

__all__ = [
    "STORAGES",
    "StreamingWaveformBank",
    "WaveformBank",
    "bank_size_mb",
    "ensure_bank_csv",
    "load_waveform_bank",
    "read_wav_csv",
]

logger = logging.getLogger(__name__)

STORAGES = ("auto", "memory", "stream")

# Bytes per stored sample (int16).
_SAMPLE_BYTES = 2

# Host banks by (csv, mtime, replacements, rate, storage), device copies by
# that key plus the device: augmenters built from the same CSV in one YAML
# (the authors' preset has two noise augmenters on one file) share both.
_BANK_CACHE = {}
_DEVICE_CACHE = {}


def read_wav_csv(csv_file, replacements=None):
    """Lists the audio files of a SpeechBrain CSV (ID,duration,wav,...).

    Arguments
    ---------
    csv_file : str
        CSV in SpeechBrain's format with at least the ``ID`` and ``wav``
        columns; ``$name`` placeholders in it are resolved.
    replacements : dict, optional
        Values of the placeholders, e.g. ``{"data_root": "/data"}``.

    Returns
    -------
    list of tuple
        ``(where, path)`` per row, in file order, where ``where`` reads
        ``"<csv_file>, line <n> (ID <id>)"`` for error messages (the
        header is line 1; one row per line is assumed).

    Raises
    ------
    FileNotFoundError
        If the CSV does not exist.
    ValueError
        If the CSV has no rows, or a bad line (see
        :func:`speechbrain_ext.data.manifest.check_manifest`); the message
        names the file and line.

    Example
    -------
    >>> tmpdir = getfixture("tmpdir")
    >>> with open(tmpdir / "x.csv", "w", encoding="utf-8") as f:
    ...     _ = f.write("ID,duration,wav\\nn1,1.0,$root/n1.wav\\n")
    >>> read_wav_csv(str(tmpdir / "x.csv"), {"root": "/d"})[0][1]
    '/d/n1.wav'
    """
    rows = read_manifest(csv_file, replacements)
    if not rows:
        raise ValueError(f"{csv_file} lists no audio files")
    return [
        (f"{csv_file}, line {line} (ID {row['ID']})", row["wav"])
        for line, row in enumerate(rows, start=2)
    ]


def _quantise(wav):
    """Returns ``(int16 samples, divisor)`` with ``wav ~= samples / divisor``.

    Audio read from 16-bit files is a multiple of 1 / 32768 and is kept
    exactly; anything else (float RIRs peak-normalised to 1, generated
    tensors) is scaled so that its peak uses the full int16 range, which
    keeps 96 dB between the peak and the rounding error of every waveform,
    quiet or loud.
    """
    wav = wav.detach().float().cpu()
    scaled = wav * 32768.0
    exact = scaled.round()
    if torch.equal(exact, scaled) and (
        len(wav) == 0 or (exact.min() >= -32768 and exact.max() <= 32767)
    ):
        return exact.to(torch.int16), 32768.0
    peak = float(wav.abs().max())
    divisor = 32767.0 / peak
    return (wav * divisor).round().clamp(-32767, 32767).to(torch.int16), divisor


class WaveformBank:
    """Waveforms of different lengths stored end to end in one tensor.

    Arguments
    ---------
    waveforms : list of torch.Tensor
        Non-empty 1-D waveforms.
    compact : bool
        Store int16 (with one scale per waveform) and convert the samples a
        batch reads to float32; False stores float32 as given.

    Example
    -------
    >>> bank = WaveformBank([torch.tensor([0.25, 0.5]), torch.tensor([0.75])])
    >>> bank.samples.dtype
    torch.int16
    >>> bank.select(torch.tensor([1, 0]))
    (tensor([[0.7500, 0.0000],
            [0.2500, 0.5000]]), tensor([1, 2]))
    """

    def __init__(self, waveforms, compact=True):
        if not waveforms:
            raise ValueError("a WaveformBank needs at least one waveform")
        if compact:
            pairs = [_quantise(w) for w in waveforms]
            samples = torch.cat([q for q, _ in pairs])
            divisors = torch.tensor([d for _, d in pairs])
        else:
            samples = torch.cat([w.float() for w in waveforms])
            divisors = torch.ones(len(waveforms))
        self._set(samples, torch.tensor([len(w) for w in waveforms]), divisors)

    @classmethod
    def from_int16(cls, samples, lengths, divisors):
        """Builds a bank from already quantised samples, without copying.

        Arguments
        ---------
        samples : torch.Tensor
            int16 samples of every waveform, end to end.
        lengths : torch.Tensor
            Long tensor, samples per waveform.
        divisors : torch.Tensor
            Float tensor, ``waveform = samples / divisor`` per waveform.

        Returns
        -------
        WaveformBank
            The bank.

        Example
        -------
        >>> bank = WaveformBank.from_int16(
        ...     torch.tensor([16384, -8192], dtype=torch.int16),
        ...     torch.tensor([2]),
        ...     torch.tensor([32768.0]),
        ... )
        >>> bank.select(torch.tensor([0]))[0]
        tensor([[ 0.5000, -0.2500]])
        """
        bank = cls.__new__(cls)
        bank._set(samples, lengths, divisors)
        return bank

    def _set(self, samples, lengths, divisors):
        self.samples = samples
        self.lengths = lengths.long()
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        self.divisors = divisors.float()
        # On the host, read once: select(pad_to=) then needs no sync.
        self.max_length = int(self.lengths.max()) if len(self.lengths) else 0

    def __len__(self):
        return len(self.lengths)

    @property
    def device(self):
        """The device holding the samples."""
        return self.samples.device

    @property
    def nbytes(self):
        """Bytes taken by the samples."""
        return self.samples.numel() * self.samples.element_size()

    def fingerprint(self):
        """A checksum of the stored samples, to tell banks apart in cache
        stamps (stable across runs and devices).

        Example
        -------
        >>> a = WaveformBank([torch.ones(10)])
        >>> a.fingerprint() == WaveformBank([torch.ones(10)]).fingerprint()
        True
        >>> a.fingerprint() == WaveformBank([-torch.ones(10)]).fingerprint()
        False
        """
        return f"{zlib.crc32(self.samples.cpu().numpy().tobytes()):08x}"

    def to(self, device):
        """Returns a copy of the bank on ``device`` (self if already there).

        Arguments
        ---------
        device : torch.device or str
            Where the copy lives.

        Returns
        -------
        WaveformBank
            The bank on ``device``.
        """
        if torch.device(device) == self.device:
            return self
        moved = copy.copy(self)
        moved.samples = self.samples.to(device)
        moved.lengths = self.lengths.to(device)
        moved.offsets = self.offsets.to(device)
        moved.divisors = self.divisors.to(device)
        return moved

    def _decode(self, positions, which):
        """Float32 samples at ``positions`` [batch, time] of waveforms ``which``."""
        return self.samples[positions].float() / self.divisors[which].unsqueeze(
            1
        )

    def select(self, indices, pad_to=None):
        """Returns the chosen waveforms, zero-padded to the longest.

        Arguments
        ---------
        indices : torch.Tensor
            Long tensor [batch] of waveform indices.
        pad_to : int, optional
            Pad to this many samples (e.g. ``max_length``, the bank's
            longest) rather than to the longest chosen, which costs a
            host-device sync on a GPU.

        Returns
        -------
        waveforms : torch.Tensor
            [batch, max_length] zero-padded float32 waveforms.
        lengths : torch.Tensor
            [batch] number of samples of each waveform.
        """
        indices = indices.to(self.device)
        lengths = self.lengths[indices]
        size = int(lengths.max()) if pad_to is None else int(pad_to)
        steps = torch.arange(size, device=self.device)
        inside = steps < lengths.unsqueeze(1)
        positions = self.offsets[indices].unsqueeze(1) + steps
        positions = torch.where(inside, positions, torch.zeros_like(positions))
        return self._decode(positions, indices) * inside, lengths

    def random_segments(self, batch_size, length):
        """Draws segments of random waveforms at random start points.

        A waveform shorter than ``length`` is tiled (repeated end to end); a
        longer one is read from a start drawn uniformly among those that
        fit, so that it never wraps around. Draws use torch's global
        generator on the bank's device.

        Arguments
        ---------
        batch_size : int
            Number of segments.
        length : int
            Samples per segment.

        Returns
        -------
        torch.Tensor
            [batch_size, length] float32 segments.
        """
        which = torch.randint(len(self), (batch_size,), device=self.device)
        sizes = self.lengths[which]
        spare = (sizes - length).clamp(min=0)
        start = torch.rand(batch_size, device=self.device) * (spare + 1)
        start = start.long().clamp(max=spare)
        steps = torch.arange(length, device=self.device)
        within = (start.unsqueeze(1) + steps) % sizes.unsqueeze(1)
        return self._decode(self.offsets[which].unsqueeze(1) + within, which)


class StreamingWaveformBank:
    """A bank that reads each segment from disk when a batch needs it.

    Only the file list and lengths are held in memory, so a bank of any size
    costs nothing until it is read; each draw reads ``length`` samples of
    one file with soundfile (a seek, not a decode of the whole file, for
    wav and flac). Draws follow the same rules as :class:`WaveformBank`
    (short files tiled, long ones read from a uniform start that fits) and
    use torch's global CPU generator; the segments are then moved to the
    bank's device.

    Arguments
    ---------
    paths : list of str
        Audio files.
    lengths : list of int
        Samples of each file at ``sample_rate``.
    sample_rate : int
        Rate of the returned segments; other files are resampled.
    wheres : list of str, optional
        Where each file is listed, for error messages.
    rates : list of int, optional
        Sample rate of each file (read from its header when None).

    Example
    -------
    >>> from speechbrain_ext.data.audio import save_audio
    >>> path = str(getfixture("tmpdir") / "ramp.wav")
    >>> save_audio(path, torch.arange(8) / 16, 16000, subtype="PCM_16")
    >>> bank = StreamingWaveformBank([path], [8])
    >>> bank.select(torch.tensor([0]))[0]
    tensor([[0.0000, 0.0625, 0.1250, 0.1875, 0.2500, 0.3125, 0.3750, 0.4375]])
    """

    def __init__(
        self, paths, lengths, sample_rate=16000, wheres=None, rates=None
    ):
        if not paths:
            raise ValueError("a StreamingWaveformBank needs at least one file")
        self.paths = list(paths)
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.sample_rate = sample_rate
        self.wheres = list(wheres) if wheres is not None else self.paths
        self.rates = list(rates) if rates is not None else None
        self.max_length = int(self.lengths.max())
        self._device = torch.device("cpu")

    def __len__(self):
        return len(self.paths)

    @property
    def device(self):
        """The device the segments are returned on."""
        return self._device

    @property
    def nbytes(self):
        """Bytes the samples would take as int16 (none are held)."""
        return int(self.lengths.sum()) * _SAMPLE_BYTES

    def fingerprint(self):
        """A checksum of the file list and lengths (the bank reads nothing
        until a batch needs it, so its files stand for its samples).

        Example
        -------
        >>> a = StreamingWaveformBank(["a.wav", "b.wav"], [10, 20])
        >>> a.fingerprint() == StreamingWaveformBank(
        ...     ["a.wav", "b.wav"], [10, 20]
        ... ).fingerprint()
        True
        >>> a.fingerprint() == StreamingWaveformBank(
        ...     ["a.wav", "c.wav"], [10, 20]
        ... ).fingerprint()
        False
        """
        listing = "\n".join(
            f"{os.path.abspath(path)}\t{int(length)}"
            for path, length in zip(self.paths, self.lengths)
        )
        return f"{zlib.crc32(listing.encode('utf-8')):08x}"

    def to(self, device):
        """Returns a copy serving segments on ``device`` (self if already).

        Arguments
        ---------
        device : torch.device or str
            Where segments are returned.

        Returns
        -------
        StreamingWaveformBank
            The bank.
        """
        if torch.device(device) == self.device:
            return self
        moved = copy.copy(self)
        moved._device = torch.device(device)
        return moved

    def _read(self, index, start, count):
        """``count`` samples (at the bank's rate) of file ``index``."""
        path = self.paths[index]
        try:
            if self.rates is None:
                self.rates = [audio_info(p).sample_rate for p in self.paths]
            ratio = self.rates[index] / self.sample_rate
            # One file sample of margin on each side of a resampled read.
            first = (
                max(0, math.floor(start * ratio) - 1) if ratio != 1 else start
            )
            last = math.ceil((start + count) * ratio) + (ratio != 1)
            wav = load_audio(path, first, last, self.sample_rate)
        except AudioError as err:
            raise AudioError(f"{self.wheres[index]}: {err}") from err
        if ratio != 1:
            skip = round(start - first / ratio)
            wav = wav[skip:]
        wav = wav[:count]
        if len(wav) < count:  # rounding of a resampled read
            wav = torch.nn.functional.pad(wav, (0, count - len(wav)))
        return wav

    def select(self, indices, pad_to=None):
        """Returns the chosen waveforms, zero-padded to the longest.

        Arguments
        ---------
        indices : torch.Tensor
            Long tensor [batch] of file indices.
        pad_to : int, optional
            Pad to this many samples rather than to the longest chosen.

        Returns
        -------
        waveforms : torch.Tensor
            [batch, max_length] zero-padded float32 waveforms.
        lengths : torch.Tensor
            [batch] number of samples of each waveform.
        """
        indices = indices.cpu()
        lengths = self.lengths[indices]
        size = int(lengths.max()) if pad_to is None else int(pad_to)
        # Assembled in numpy: torch's per-row copies wake its thread pool
        # every row, which costs more than the reads on a busy machine.
        out = np.zeros((len(indices), size), dtype=np.float32)
        for row, index in enumerate(indices.tolist()):
            count = int(lengths[row])
            out[row, :count] = self._read(index, 0, count).numpy()
        return torch.from_numpy(out).to(self.device), lengths.to(self.device)

    def random_segments(self, batch_size, length):
        """Draws segments of random files at random start points.

        Arguments
        ---------
        batch_size : int
            Number of segments.
        length : int
            Samples per segment.

        Returns
        -------
        torch.Tensor
            [batch_size, length] float32 segments on the bank's device.
        """
        which = torch.randint(len(self), (batch_size,))
        sizes = self.lengths[which]
        spare = (sizes - length).clamp(min=0)
        start = (torch.rand(batch_size) * (spare + 1)).long().clamp(max=spare)
        out = np.empty((batch_size, length), dtype=np.float32)
        for row, (index, first, size) in enumerate(
            zip(which.tolist(), start.tolist(), sizes.tolist())
        ):
            size = min(size, length)
            wav = self._read(index, first, size).numpy()
            if size < length:  # tiled, as WaveformBank does
                wav = np.tile(wav, math.ceil(length / size))[:length]
            out[row] = wav
        return torch.from_numpy(out).to(self.device)


def bank_size_mb(lengths):
    """Megabytes (2**20 bytes) of ``lengths`` samples stored as int16.

    Arguments
    ---------
    lengths : list of int
        Samples per waveform.

    Returns
    -------
    float
        The size in MB.

    Example
    -------
    >>> round(bank_size_mb([16000 * 3600]), 1)  # one hour at 16 kHz
    109.9
    """
    return sum(lengths) * _SAMPLE_BYTES / 2**20


def _index(csv_file, replacements, sample_rate):
    """Headers of every listed file: (wheres, paths, lengths at the rate)."""
    wheres, paths, lengths, rates = [], [], [], []
    for where, path in read_wav_csv(csv_file, replacements):
        try:
            info = audio_info(path)
        except AudioError as err:
            raise AudioError(f"{where}: {err}") from err
        wheres.append(where)
        paths.append(path)
        rates.append(info.sample_rate)
        lengths.append(
            math.ceil(info.num_frames * sample_rate / info.sample_rate)
        )
    return wheres, paths, lengths, rates


def _read_into_memory(wheres, paths, lengths, rates, sample_rate):
    """Reads every file into an int16 :class:`WaveformBank`.

    The int16 tensor is allocated once from the header lengths and filled
    file by file, so the peak is the bank plus one file, never a float32
    copy of the whole bank.
    """
    samples = torch.empty(sum(lengths), dtype=torch.int16)
    divisors = torch.empty(len(paths))
    actual = []
    offset = 0
    for index, (where, path) in enumerate(zip(wheres, paths)):
        try:
            wav = load_audio(path, sample_rate=sample_rate)
        except AudioError as err:
            raise AudioError(f"{where}: {err}") from err
        # A resampled file may come out a sample shorter than the header's
        # ceil; the spare room at the end is cut below.
        quantised, divisors[index] = _quantise(wav[: lengths[index]])
        samples[offset : offset + len(quantised)] = quantised
        offset += len(quantised)
        actual.append(len(quantised))
    if offset < len(samples):
        samples = samples[:offset].clone()
    return WaveformBank.from_int16(samples, torch.tensor(actual), divisors)


def load_waveform_bank(
    csv_file,
    replacements=None,
    sample_rate=16000,
    device="cpu",
    storage="auto",
    stream_above_mb=1024.0,
    max_memory_mb=4096.0,
):
    """Returns the bank of a CSV on ``device``, reading each file at most once.

    Banks are cached per CSV path, modification time, replacements, sample
    rate and storage, and their device copies per device, so later calls
    (and other augmenters built from the same CSV) return the same object
    without reading anything or copying it again.

    Arguments
    ---------
    csv_file : str
        SpeechBrain CSV with ``ID`` and ``wav`` columns.
    replacements : dict, optional
        Values of the ``$name`` placeholders of the CSV.
    sample_rate : int
        Rate the waveforms are resampled to.
    device : torch.device or str
        Where the samples (memory) or the segments (stream) live.
    storage : str
        "memory": every file is read into one int16 tensor (per process and
        per device); "stream": segments are read from disk per batch
        (:class:`StreamingWaveformBank`); "auto": "stream" when the bank
        would exceed ``stream_above_mb``, else "memory".
    stream_above_mb : float
        Size as int16 (2 bytes per sample at ``sample_rate``) above which
        "auto" streams. The default, 1024 MB, is about 9.3 h at 16 kHz:
        generated banks and RIR sets stay in memory, MUSAN (109 h) streams.
    max_memory_mb : float or None
        Guard for "memory": a larger bank raises instead of exhausting host
        and device memory. None disables it.

    Returns
    -------
    WaveformBank or StreamingWaveformBank
        The waveforms, in CSV order.

    Raises
    ------
    AudioError
        If a listed file is missing, corrupt or empty; the message names
        the file and the CSV line.
    MemoryError
        If ``storage="memory"`` and the bank exceeds ``max_memory_mb``; the
        message says what to pass instead.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    csv_file = os.path.abspath(str(csv_file))
    if not os.path.isfile(csv_file):
        raise FileNotFoundError(f"CSV not found: {csv_file}")
    replacements = {k: str(v) for k, v in (replacements or {}).items()}
    key = (
        csv_file,
        os.path.getmtime(csv_file),
        tuple(sorted(replacements.items())),
        sample_rate,
        storage,
        stream_above_mb,
    )
    if key not in _BANK_CACHE:
        # A rewritten CSV (new mtime) makes the older entries unreachable.
        stale = [k for k in _BANK_CACHE if k[0] == csv_file and k != key]
        for old in [k for k in stale if k[1] != key[1]]:
            del _BANK_CACHE[old]
        for old in [k for k in _DEVICE_CACHE if k[0] not in _BANK_CACHE]:
            del _DEVICE_CACHE[old]
        wheres, paths, lengths, rates = _index(
            csv_file, replacements, sample_rate
        )
        size_mb = bank_size_mb(lengths)
        hours = sum(lengths) / sample_rate / 3600
        chosen = storage
        if storage == "auto":
            chosen = "stream" if size_mb > stream_above_mb else "memory"
        if (
            chosen == "memory"
            and max_memory_mb is not None
            and size_mb > max_memory_mb
        ):
            raise MemoryError(
                f"{csv_file} holds {hours:.1f} h of audio, {size_mb:.0f} MB "
                f"as int16 in every process and again on every GPU, above "
                f"max_memory_mb={max_memory_mb:g}: use storage='stream' "
                "(reads each segment from disk per batch) or 'auto', or "
                "raise max_memory_mb if the memory is there"
            )
        logger.info(
            "Bank %s: %d files, %.1f h, %.0f MB as int16, %s",
            csv_file,
            len(paths),
            hours,
            size_mb,
            "in memory" if chosen == "memory" else "streamed from disk",
        )
        if chosen == "memory":
            bank = _read_into_memory(wheres, paths, lengths, rates, sample_rate)
        else:
            bank = StreamingWaveformBank(
                paths, lengths, sample_rate, wheres, rates
            )
        _BANK_CACHE[key] = bank
    device = torch.device(device)
    if device == torch.device("cpu"):
        return _BANK_CACHE[key]
    if (key, device) not in _DEVICE_CACHE:
        _DEVICE_CACHE[(key, device)] = _BANK_CACHE[key].to(device)
    return _DEVICE_CACHE[(key, device)]


class BankAugmentation(torch.nn.Module):
    """Base of augmenters that draw from a bank of waveforms.

    The CSV is read on the first forward call, not at construction: recipes
    build their augmenters before data preparation writes the CSV.

    Arguments
    ---------
    csv_file : str
        SpeechBrain CSV (``ID, duration, wav, ...``) of the waveforms.
    replacements : dict, optional
        Values for ``$placeholders`` in the ``wav`` column.
    sample_rate : int
        Rate the waveforms are resampled to.
    storage : str
        "auto", "memory" or "stream" (see :func:`load_waveform_bank`).
    stream_above_mb : float
        Size as int16 above which "auto" streams from disk.
    max_memory_mb : float or None
        Largest bank "memory" accepts.
    """

    def __init__(
        self,
        csv_file,
        replacements=None,
        sample_rate=16000,
        storage="auto",
        stream_above_mb=1024.0,
        max_memory_mb=4096.0,
    ):
        super().__init__()
        if storage not in STORAGES:
            raise ValueError(
                f"storage must be one of {STORAGES}, got {storage!r}"
            )
        self.csv_file = csv_file
        self.replacements = replacements
        self.sample_rate = sample_rate
        self.storage = storage
        self.stream_above_mb = stream_above_mb
        self.max_memory_mb = max_memory_mb
        self._bank = None

    def bank(self, device):
        """The waveform bank on ``device``, read on first use.

        Arguments
        ---------
        device : torch.device
            Where the waveforms are needed.

        Returns
        -------
        WaveformBank or StreamingWaveformBank
            The waveforms, shared with every augmenter of the same CSV.
        """
        if self._bank is None or self._bank.device != torch.device(device):
            self._bank = load_waveform_bank(
                self.csv_file,
                self.replacements,
                self.sample_rate,
                device=device,
                storage=self.storage,
                stream_above_mb=self.stream_above_mb,
                max_memory_mb=self.max_memory_mb,
            )
        return self._bank


def ensure_bank_csv(csv_file, prepare, name="csv"):
    """Writes a bank's CSV with ``prepare`` (main process) unless it exists.

    A CSV that exists (say MUSAN's, or an earlier run's) is used as it is.

    Arguments
    ---------
    csv_file : str or None
        The bank's CSV; None means no bank, and nothing is done.
    prepare : callable or None
        Writes ``csv_file`` (e.g. the hparams' ``prepare_noise`` partial).
    name : str
        What the CSV is called in the hparams, for the messages.

    Raises
    ------
    FileNotFoundError
        If the CSV is missing and ``prepare`` is None or did not write it.

    Example
    -------
    >>> ensure_bank_csv(None, None)
    >>> ensure_bank_csv("/nonexistent/noise.csv", None, "noise_csv")
    Traceback (most recent call last):
    ...
    FileNotFoundError: noise_csv=/nonexistent/noise.csv does not exist and the hparams name no function that writes it
    """
    from speechbrain.utils.distributed import run_on_main

    if csv_file is None or os.path.exists(csv_file):
        return
    if prepare is None:
        raise FileNotFoundError(
            f"{name}={csv_file} does not exist and the hparams name no "
            "function that writes it"
        )
    run_on_main(prepare)
    if not os.path.exists(csv_file):
        raise FileNotFoundError(f"{prepare} did not write {name}={csv_file}")
