"""Offline reverberation: simulated room impulse responses and a reverberator.

No RIR download is needed: :func:`simulate_rirs` draws shoebox rooms with
pyroomacoustics' image-source method, and :class:`AddReverbBank` convolves
each utterance with its own random RIR held in memory, keeping the
utterance's alignment and level as SpeechBrain's
``speechbrain.processing.signal_processing.reverberate`` does.

Example
-------
>>> import torch
>>> csv_file = simulate_rirs(getfixture("tmpdir"), n_rirs=2)
>>> reverb = AddReverbBank(csv_file)
>>> reverb(torch.randn(3, 4000), torch.tensor([1.0, 1.0, 0.5])).shape
torch.Size([3, 4000])
"""

import csv
import os

import numpy as np
import pyroomacoustics as pra
import scipy.fft
import torch

from speechbrain.dataio.dataio import length_to_mask
from speechbrain.processing.signal_processing import compute_amplitude, rescale
from speechbrain_ext.augment.bank import BankAugmentation
from speechbrain_ext.augment.mixing import relative_to_absolute
from speechbrain_ext.data.audio import save_audio

__all__ = ["AddReverbBank", "simulate_rirs"]


def _simulate_rir(rng, sample_rate, rt60_range, room_ranges, max_order):
    """One RIR of a random shoebox room; returns (rir, rt60, room size)."""
    room_dim = np.array([rng.uniform(low, high) for low, high in room_ranges])
    rt60 = rng.uniform(*rt60_range)
    try:
        absorption, sabine_order = pra.inverse_sabine(rt60, room_dim)
    except ValueError as err:
        raise ValueError(
            f"RT60 {rt60:.2f} s is impossible in a room of "
            f"{np.round(room_dim, 2).tolist()} m: shorten the room ranges "
            "or raise rt60_range"
        ) from err
    # Image-source cost grows with the cube of the order; capping it trims
    # the late tail of long RT60s in exchange for a 100x faster simulation.
    room = pra.ShoeBox(
        room_dim,
        fs=sample_rate,
        materials=pra.Material(absorption),
        max_order=min(sabine_order, max_order),
        air_absorption=False,
    )
    # Half a metre from every wall, as a talker and a microphone would be.
    margin = np.minimum(0.5, room_dim / 4)
    room.add_source(rng.uniform(margin, room_dim - margin))
    room.add_microphone(rng.uniform(margin, room_dim - margin))
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    # Drop the tail once it has decayed 60 dB below the direct path.
    peak = np.max(np.abs(rir))
    last = np.nonzero(np.abs(rir) >= peak * 1e-3)[0][-1]
    return rir[: last + 1] / peak, rt60, room_dim


def simulate_rirs(
    save_folder,
    n_rirs=64,
    sample_rate=16000,
    seed=1234,
    rt60_range=(0.2, 0.8),
    room_length_range=(3.0, 10.0),
    room_width_range=(3.0, 8.0),
    room_height_range=(2.4, 4.0),
    max_order=30,
):
    """Simulates room impulse responses and writes the CSV listing them.

    Each RIR comes from a shoebox room of random size and random RT60; its
    wall absorption and reflection order follow Sabine's formula
    (``pra.inverse_sabine``), the order capped at ``max_order``. Source and
    microphone are placed at random at least 0.5 m from the walls. The RIR
    is cut where it has decayed by 60 dB, peak-normalised to 1 and written
    as float wav.

    Arguments
    ---------
    save_folder : str
        Folder receiving ``rirs.csv`` and ``rirs/*.wav``.
    n_rirs : int
        Number of RIRs.
    sample_rate : int
        Sample rate of the simulation and of the files.
    seed : int
        Seed; RIR ``i`` depends only on ``(seed, i)``.
    rt60_range : tuple of float
        Range of the requested reverberation time, in seconds.
    room_length_range : tuple of float
        Range of the room length, in metres.
    room_width_range : tuple of float
        Range of the room width, in metres.
    room_height_range : tuple of float
        Range of the room height, in metres.
    max_order : int
        Highest image-source order. With the default 30, RT60s above about
        0.6 s in large rooms come out somewhat shorter than requested.

    Returns
    -------
    str
        Path of the CSV (columns ID, duration, wav, rt60, room). If it
        already exists nothing is simulated; the CSV is written last, so an
        interrupted run is redone.

    Example
    -------
    >>> csv_file = simulate_rirs(getfixture("tmpdir"), n_rirs=2)
    >>> with open(csv_file, encoding="utf-8") as f:
    ...     print(f.readline().strip())
    ID,duration,wav,rt60,room
    """
    csv_file = os.path.join(save_folder, "rirs.csv")
    if os.path.isfile(csv_file):
        return csv_file
    room_ranges = (room_length_range, room_width_range, room_height_range)
    rows = []
    for index in range(n_rirs):
        rng = np.random.default_rng([seed, index])
        rir, rt60, room_dim = _simulate_rir(
            rng, sample_rate, rt60_range, room_ranges, max_order
        )
        utt_id = f"rir{index:04d}"
        path = os.path.join(save_folder, "rirs", utt_id + ".wav")
        save_audio(path, rir, sample_rate, subtype="FLOAT")
        room = "x".join(f"{side:.2f}" for side in room_dim)
        rows.append([utt_id, len(rir) / sample_rate, path, f"{rt60:.3f}", room])
    partial = csv_file + ".partial"
    with open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "rt60", "room"])
        writer.writerows(rows)
    os.replace(partial, csv_file)
    return csv_file


class AddReverbBank(BankAugmentation):
    """Convolves each utterance with a random RIR from a bank.

    Unlike ``speechbrain.augment.time_domain.AddReverb``, which applies one
    RIR to the whole batch and streams RIRs through a DataLoader, every
    utterance draws its own RIR from a bank read once on the first call.
    As in SpeechBrain's ``reverberate``: the output is aligned on the RIR's
    direct path (its largest peak), so reverberation adds no delay, and it
    is rescaled to the clean utterance's amplitude (``rescale_amp``). The
    convolution is linear (zero-padded FFT), not circular, and only the
    valid samples are convolved, measured and returned: padding stays zero
    and the reverberant tail past an utterance's end is cut.

    Arguments
    ---------
    csv_file : str
        SpeechBrain CSV (ID, duration, wav, ...) of RIR files, e.g. from
        :func:`simulate_rirs`.
    replacements : dict, optional
        Values of ``$name`` placeholders in the CSV.
    sample_rate : int
        Rate of the waveforms to reverberate; RIRs are resampled to it.
    rescale_amp : str or None
        "avg" (mean absolute value) or "peak": the amplitude of the clean
        utterance that the reverberant one is rescaled to; None keeps the
        raw convolution.
    storage : str
        "auto" (default), "memory" or "stream": where the bank lives, see
        :func:`~speechbrain_ext.augment.bank.load_waveform_bank`; "auto"
        streams RIRs from disk above ``stream_above_mb``.
    stream_above_mb : float
        Bank size as int16 above which "auto" streams (1024 MB: about
        9.3 h at 16 kHz).
    max_memory_mb : float or None
        Largest bank "memory" accepts; larger ones raise, saying what to do.

    Example
    -------
    >>> csv_file = simulate_rirs(getfixture("tmpdir"), n_rirs=2)
    >>> clean = torch.zeros(1, 4000)
    >>> clean[0, 1000] = 1.0
    >>> wet = AddReverbBank(csv_file, rescale_amp=None)(clean, torch.ones(1))
    >>> int(wet.abs().argmax())  # the direct path is not delayed
    1000
    """

    def __init__(
        self,
        csv_file,
        replacements=None,
        sample_rate=16000,
        rescale_amp="avg",
        storage="auto",
        stream_above_mb=1024.0,
        max_memory_mb=4096.0,
    ):
        super().__init__(
            csv_file,
            replacements,
            sample_rate,
            storage,
            stream_above_mb,
            max_memory_mb,
        )
        if rescale_amp not in ("avg", "peak", None):
            raise ValueError(
                f"rescale_amp must be 'avg', 'peak' or None, got {rescale_amp}"
            )
        self.rescale_amp = rescale_amp

    def forward(self, waveforms, lengths):
        """Reverberates a padded batch.

        Arguments
        ---------
        waveforms : torch.Tensor
            Dry waveforms [batch, time].
        lengths : torch.Tensor
            Relative lengths [batch].

        Returns
        -------
        torch.Tensor
            Reverberant waveforms [batch, time], same lengths.
        """
        if waveforms.dim() != 2:
            raise ValueError(
                f"AddReverbBank expects [batch, time], got {waveforms.shape}"
            )
        batch, n_samples = waveforms.shape
        device = waveforms.device
        bank = self.bank(device)
        rirs, _ = bank.select(
            torch.randint(len(bank), (batch,), device=device),
            pad_to=bank.max_length,
        )
        direct = rirs.abs().argmax(dim=1)

        valid = relative_to_absolute(lengths.to(device), n_samples)
        inside = length_to_mask(valid, n_samples, dtype=torch.bool)
        # FFTs in float32 at least: cuFFT has no half precision for most sizes.
        dry = waveforms.float() * inside
        # Long enough for a linear convolution, and 5-smooth for speed.
        n_fft = scipy.fft.next_fast_len(n_samples + rirs.shape[1] - 1, True)
        wet = torch.fft.irfft(
            torch.fft.rfft(dry, n_fft) * torch.fft.rfft(rirs, n_fft), n_fft
        )
        steps = torch.arange(n_samples, device=device)
        wet = wet.gather(1, direct.unsqueeze(1) + steps) * inside

        if self.rescale_amp is not None:
            # At least one sample, so that an empty item divides by 1.
            counted = valid.clamp(min=1).unsqueeze(1)
            level = compute_amplitude(dry, counted, self.rescale_amp)
            wet = rescale(wet, counted, level, self.rescale_amp)
        return wet.to(waveforms.dtype)
