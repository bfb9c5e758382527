"""Offline additive noise: a generated noise bank and an in-memory noiser.

No MUSAN download is needed: :func:`generate_noise_bank` synthesises a
varied set of stationary and non-stationary noises (coloured noise, mains
hum, fans, babble-like murmur), and :class:`AddNoiseBank` adds them at an
exact SNR, reading the files once instead of streaming them through a
DataLoader as ``speechbrain.augment.time_domain.AddNoise`` does.

Example
-------
>>> import torch
>>> tmpdir = getfixture("tmpdir")
>>> csv_file = generate_noise_bank(str(tmpdir), n_files=2, duration=0.5)
>>> add_noise = AddNoiseBank(csv_file, snr_low=5, snr_high=5)
>>> add_noise(torch.randn(4, 8000), torch.ones(4)).shape
torch.Size([4, 8000])
"""

import csv
import os

import numpy as np
import scipy.signal
import torch

from speechbrain_ext.augment.bank import BankAugmentation
from speechbrain_ext.augment.mixing import mix_at_ratio
from speechbrain_ext.data.audio import save_audio

__all__ = ["NOISE_TYPES", "AddNoiseBank", "generate_noise_bank"]

NOISE_TYPES = ("white", "pink", "brown", "hum", "fan", "babble")


def _coloured(rng, n_samples, exponent, sample_rate):
    """Gaussian noise whose power spectrum falls as 1 / f ** exponent."""
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    freqs = np.fft.rfftfreq(n_samples, 1.0 / sample_rate)
    # Flat below 20 Hz: brown noise would otherwise drift like a DC offset.
    shape = np.maximum(freqs, 20.0) ** (-exponent / 2.0)
    shape[0] = 0.0
    return np.fft.irfft(spectrum * shape, n_samples)


def _hum(rng, n_samples, sample_rate):
    """Mains hum: 50 or 60 Hz and its harmonics over a faint pink floor."""
    mains = rng.choice([50.0, 60.0])
    t = np.arange(n_samples) / sample_rate
    # Grids drift by a few tenths of a hertz.
    drift = 0.3 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t)
    phase = 2 * np.pi * np.cumsum(mains + drift) / sample_rate
    decay = rng.uniform(0.5, 1.5)
    hum = np.zeros(n_samples)
    for harmonic in range(1, min(13, int(sample_rate / 2 // mains))):
        gain = harmonic**-decay * rng.uniform(0.5, 1.0)
        hum += gain * np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi))
    floor = _coloured(rng, n_samples, 1.0, sample_rate)
    return hum / np.std(hum) + 0.03 * floor / np.std(floor)


def _fan(rng, n_samples, sample_rate):
    """Low-passed noise with a blade tone and a slow amplitude wobble."""
    t = np.arange(n_samples) / sample_rate
    cutoff = rng.uniform(300.0, 2000.0)
    sos = scipy.signal.butter(2, cutoff, fs=sample_rate, output="sos")
    air = scipy.signal.sosfilt(sos, rng.standard_normal(n_samples))
    blade = np.sin(2 * np.pi * rng.uniform(80.0, 250.0) * t)
    fan = air / np.std(air) + rng.uniform(0.05, 0.3) * blade
    wobble = 1.0 + rng.uniform(0.1, 0.5) * np.sin(
        2 * np.pi * rng.uniform(0.2, 2.0) * t + rng.uniform(0, 2 * np.pi)
    )
    return fan * wobble


def _babble(rng, n_samples, sample_rate):
    """Sum of 4-8 speech-like streams: voiced buzz and noise, syllable-gated."""
    t = np.arange(n_samples) / sample_rate
    band = scipy.signal.butter(
        2, [150.0, 3500.0], btype="bandpass", fs=sample_rate, output="sos"
    )
    syllables = scipy.signal.butter(2, 4.0, fs=sample_rate, output="sos")
    babble = np.zeros(n_samples)
    for _ in range(rng.integers(4, 9)):
        pitch = rng.uniform(90.0, 250.0)
        voiced = scipy.signal.sawtooth(2 * np.pi * pitch * t)
        source = voiced + 0.5 * rng.standard_normal(n_samples)
        talker = scipy.signal.sosfilt(band, source)
        # Half-wave rectified 4 Hz noise: bursts and pauses like syllables.
        envelope = scipy.signal.sosfilt(
            syllables, rng.standard_normal(n_samples)
        )
        envelope = np.maximum(envelope, 0.0)
        babble += talker / np.std(talker) * envelope / np.std(envelope)
    return babble


def _synthesise(noise_type, rng, n_samples, sample_rate):
    """One noise of the given type, peak-normalised to 0.9."""
    if noise_type == "white":
        noise = rng.standard_normal(n_samples)
    elif noise_type == "pink":
        noise = _coloured(rng, n_samples, 1.0, sample_rate)
    elif noise_type == "brown":
        noise = _coloured(rng, n_samples, 2.0, sample_rate)
    elif noise_type == "hum":
        noise = _hum(rng, n_samples, sample_rate)
    elif noise_type == "fan":
        noise = _fan(rng, n_samples, sample_rate)
    else:
        noise = _babble(rng, n_samples, sample_rate)
    return 0.9 * noise / np.max(np.abs(noise))


def generate_noise_bank(
    save_folder, n_files=32, duration=4.0, sample_rate=16000, seed=1234
):
    """Writes a set of synthetic noises and the CSV that lists them.

    Files cycle through :data:`NOISE_TYPES` (white, pink and brown noise,
    50/60 Hz hum with harmonics, fan noise with a blade tone and slow
    amplitude modulation, babble-like summed syllable-gated voices), each
    with randomly drawn parameters, and are written as 16-bit wav.

    Arguments
    ---------
    save_folder : str
        Folder receiving ``noise_bank.csv`` and ``noise_bank/*.wav``.
    n_files : int
        Number of noise files.
    duration : float
        Length of each file in seconds.
    sample_rate : int
        Sample rate of the files.
    seed : int
        Seed of the generator; file ``i`` depends only on ``(seed, i)``.

    Returns
    -------
    str
        Path of the CSV (columns ID, duration, wav, noise_type). If it
        already exists nothing is generated; the CSV is written last, so
        an interrupted run is redone.

    Example
    -------
    >>> csv_file = generate_noise_bank(
    ...     getfixture("tmpdir"), n_files=6, duration=0.25
    ... )
    >>> with open(csv_file, encoding="utf-8") as f:
    ...     print(f.readline().strip())
    ID,duration,wav,noise_type
    """
    csv_file = os.path.join(save_folder, "noise_bank.csv")
    if os.path.isfile(csv_file):
        return csv_file
    n_samples = int(round(duration * sample_rate))
    rows = []
    for index in range(n_files):
        noise_type = NOISE_TYPES[index % len(NOISE_TYPES)]
        rng = np.random.default_rng([seed, index])
        noise = _synthesise(noise_type, rng, n_samples, sample_rate)
        utt_id = f"noise{index:04d}_{noise_type}"
        path = os.path.join(save_folder, "noise_bank", utt_id + ".wav")
        save_audio(path, noise, sample_rate, subtype="PCM_16")
        rows.append([utt_id, n_samples / sample_rate, path, noise_type])
    partial = csv_file + ".partial"
    with open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "noise_type"])
        writer.writerows(rows)
    os.replace(partial, csv_file)
    return csv_file


class AddNoiseBank(BankAugmentation):
    """Adds noise from a bank (int16 in memory, or streamed) at a random SNR.

    A drop-in replacement for ``speechbrain.augment.time_domain.AddNoise``
    (same call, usable in ``speechbrain.augment.augmenter.Augmenter``) that
    reads the noise files once, on the first call (or, for a bank above
    ``stream_above_mb`` such as MUSAN, reads the segments each batch needs
    from disk), and never builds a DataLoader. Each utterance gets a segment of a random noise file
    (tiled if the file is shorter) at an SNR drawn uniformly in
    [snr_low, snr_high] dB; the SNR is exact over the valid samples and
    the padding stays untouched (see :func:`~.mixing.mix_at_ratio`).

    Arguments
    ---------
    csv_file : str
        SpeechBrain CSV (ID, duration, wav, ...) of noise files, e.g. from
        :func:`generate_noise_bank`.
    snr_low : float
        Lowest SNR in dB.
    snr_high : float
        Highest SNR in dB.
    replacements : dict, optional
        Values of ``$name`` placeholders in the CSV.
    sample_rate : int
        Rate of the waveforms to augment; noises are resampled to it.
    storage : str
        "auto" (default), "memory" or "stream": where the bank lives, see
        :func:`~speechbrain_ext.augment.bank.load_waveform_bank`; "auto"
        streams noises from disk above ``stream_above_mb``.
    stream_above_mb : float
        Bank size as int16 above which "auto" streams (1024 MB: about
        9.3 h at 16 kHz).
    max_memory_mb : float or None
        Largest bank "memory" accepts; larger ones raise, saying what to do.

    Example
    -------
    >>> tmpdir = getfixture("tmpdir")
    >>> csv_file = generate_noise_bank(str(tmpdir), n_files=2, duration=0.5)
    >>> clean = torch.sin(torch.arange(16000.0) / 10).repeat(2, 1)
    >>> clean[1, 8000:] = 0.0  # the second utterance is half padding
    >>> noisy = AddNoiseBank(csv_file, 10, 10)(clean, torch.tensor([1, 0.5]))
    >>> noise_power = (noisy - clean)[1, :8000].pow(2).mean()
    >>> snr = 10 * torch.log10(clean[1, :8000].pow(2).mean() / noise_power)
    >>> round(float(snr), 3)
    10.0
    >>> bool((noisy[1, 8000:] == 0).all())
    True
    """

    def __init__(
        self,
        csv_file,
        snr_low=0.0,
        snr_high=15.0,
        replacements=None,
        sample_rate=16000,
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
        if snr_low > snr_high:
            raise ValueError(f"snr_low {snr_low} > snr_high {snr_high}")
        self.snr_low = snr_low
        self.snr_high = snr_high

    def forward(self, waveforms, lengths):
        """Adds noise to a padded batch.

        Arguments
        ---------
        waveforms : torch.Tensor
            Clean waveforms [batch, time].
        lengths : torch.Tensor
            Relative lengths [batch].

        Returns
        -------
        torch.Tensor
            Noisy waveforms [batch, time].
        """
        if waveforms.dim() != 2:
            raise ValueError(
                f"AddNoiseBank expects [batch, time], got {waveforms.shape}"
            )
        batch, n_samples = waveforms.shape
        noise = self.bank(waveforms.device).random_segments(batch, n_samples)
        snr = torch.rand(batch, device=waveforms.device)
        snr = self.snr_low + (self.snr_high - self.snr_low) * snr
        return mix_at_ratio(
            waveforms, noise.to(waveforms.dtype), snr, target_lens=lengths
        )
