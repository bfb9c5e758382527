"""In-memory banks of short waveforms (noises, room impulse responses).

SpeechBrain's ``AddNoise`` and ``AddReverb`` stream their CSV through a
DataLoader, re-created whenever it runs out; with a handful of rows that
happens every few steps and dominates the step time. A bank instead reads
every file once, keeps them concatenated in one tensor with offsets, and
serves random segments by indexing, which is as cheap on a GPU as on a CPU.

Example
-------
>>> import torch
>>> from speechbrain_ext.audio import save_audio
>>> tmpdir = getfixture("tmpdir")
>>> save_audio(str(tmpdir / "a.wav"), torch.tensor([0.5, -0.5, 0.25]), 16000)
>>> with open(tmpdir / "bank.csv", "w", encoding="utf-8") as f:
...     _ = f.write("ID,duration,wav\\na,0.0002,$root/a.wav\\n")
>>> bank = load_waveform_bank(str(tmpdir / "bank.csv"), {"root": tmpdir})
>>> bank.random_segments(1, 5)  # shorter than 5 samples: tiled
tensor([[ 0.5000, -0.5000,  0.2500,  0.5000, -0.5000]])
"""

import copy
import os

import torch

from speechbrain_ext.audio import AudioError, load_audio
from speechbrain_ext.data.manifest import read_manifest

__all__ = [
    "WaveformBank",
    "ensure_bank_csv",
    "load_waveform_bank",
    "read_wav_csv",
]

# One bank per (csv, mtime, replacements, rate): several augmenters built
# from the same CSV in one YAML share the memory and the reading time.
_BANK_CACHE = {}


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


class WaveformBank:
    """Waveforms of different lengths stored end to end in one tensor.

    Arguments
    ---------
    waveforms : list of torch.Tensor
        Non-empty 1-D waveforms.

    Example
    -------
    >>> bank = WaveformBank([torch.tensor([1.0, 2.0]), torch.tensor([3.0])])
    >>> bank.select(torch.tensor([1, 0]))
    (tensor([[3., 0.],
            [1., 2.]]), tensor([1, 2]))
    """

    def __init__(self, waveforms):
        if not waveforms:
            raise ValueError("a WaveformBank needs at least one waveform")
        self.samples = torch.cat(list(waveforms))
        self.lengths = torch.tensor([len(w) for w in waveforms])
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths

    def __len__(self):
        return len(self.lengths)

    @property
    def device(self):
        """The device holding the samples."""
        return self.samples.device

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
        return moved

    def select(self, indices):
        """Returns the chosen waveforms, zero-padded to the longest.

        Arguments
        ---------
        indices : torch.Tensor
            Long tensor [batch] of waveform indices.

        Returns
        -------
        waveforms : torch.Tensor
            [batch, max_length] zero-padded waveforms.
        lengths : torch.Tensor
            [batch] number of samples of each waveform.
        """
        indices = indices.to(self.device)
        lengths = self.lengths[indices]
        steps = torch.arange(int(lengths.max()), device=self.device)
        inside = steps < lengths.unsqueeze(1)
        positions = self.offsets[indices].unsqueeze(1) + steps
        positions = torch.where(inside, positions, torch.zeros_like(positions))
        return self.samples[positions] * inside, lengths

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
            [batch_size, length] segments.
        """
        which = torch.randint(len(self), (batch_size,), device=self.device)
        sizes = self.lengths[which]
        spare = (sizes - length).clamp(min=0)
        start = torch.rand(batch_size, device=self.device) * (spare + 1)
        start = start.long().clamp(max=spare)
        steps = torch.arange(length, device=self.device)
        within = (start.unsqueeze(1) + steps) % sizes.unsqueeze(1)
        return self.samples[self.offsets[which].unsqueeze(1) + within]


def load_waveform_bank(csv_file, replacements=None, sample_rate=16000):
    """Reads every file of a CSV into a :class:`WaveformBank`, once.

    Banks are cached per CSV path, modification time, replacements and
    sample rate, so later calls (and other augmenters built from the same
    CSV) return the same object without reading anything.

    Arguments
    ---------
    csv_file : str
        SpeechBrain CSV with ``ID`` and ``wav`` columns.
    replacements : dict, optional
        Values of the ``$name`` placeholders of the CSV.
    sample_rate : int
        Rate the waveforms are resampled to.

    Returns
    -------
    WaveformBank
        The waveforms, on the CPU, in CSV order.

    Raises
    ------
    AudioError
        If a listed file is missing, corrupt or empty; the message names
        the file and the CSV line.
    """
    csv_file = os.path.abspath(str(csv_file))
    if not os.path.isfile(csv_file):
        raise FileNotFoundError(f"CSV not found: {csv_file}")
    replacements = {k: str(v) for k, v in (replacements or {}).items()}
    key = (
        csv_file,
        os.path.getmtime(csv_file),
        tuple(sorted(replacements.items())),
        sample_rate,
    )
    if key not in _BANK_CACHE:
        waveforms = []
        for where, path in read_wav_csv(csv_file, replacements):
            try:
                waveforms.append(load_audio(path, sample_rate=sample_rate))
            except AudioError as err:
                raise AudioError(f"{where}: {err}") from err
        _BANK_CACHE[key] = WaveformBank(waveforms)
    return _BANK_CACHE[key]


class BankAugmentation(torch.nn.Module):
    """Base of augmenters that draw from an in-memory bank of waveforms.

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
    """

    def __init__(self, csv_file, replacements=None, sample_rate=16000):
        super().__init__()
        self.csv_file = csv_file
        self.replacements = replacements
        self.sample_rate = sample_rate
        self._bank = None

    def bank(self, device):
        """The waveform bank on ``device``, read on first use.

        Arguments
        ---------
        device : torch.device
            Where the waveforms are needed.

        Returns
        -------
        WaveformBank
            The waveforms.
        """
        if self._bank is None or self._bank.device != torch.device(device):
            self._bank = load_waveform_bank(
                self.csv_file, self.replacements, self.sample_rate
            ).to(device)
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
