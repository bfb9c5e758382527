"""Tests of exact-ratio mixing, the noise bank and the RIR bank."""

import csv
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.utils.data
from audio_helpers import padded_batch, power_ratio_db  # noqa: E402

from speechbrain.augment.augmenter import Augmenter
from speechbrain.processing.signal_processing import reverberate
from speechbrain_ext.augment import (
    AddNoiseBank,
    AddReverbBank,
    WaveformBank,
    generate_noise_bank,
    load_waveform_bank,
    mix_at_ratio,
    simulate_rirs,
)
from speechbrain_ext.augment.bank import StreamingWaveformBank
from speechbrain_ext.data import audio
from speechbrain_ext.data.audio import AudioError, save_audio

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def write_csv(path, rows, header=("ID", "duration", "wav")):
    """Writes a SpeechBrain CSV."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def noise_csv(tmp_path_factory):
    """A small generated noise bank."""
    folder = tmp_path_factory.mktemp("noise")
    return generate_noise_bank(str(folder), n_files=6, duration=0.5)


@pytest.fixture(scope="module")
def rir_csv(tmp_path_factory):
    """A small simulated RIR bank."""
    folder = tmp_path_factory.mktemp("rirs")
    return simulate_rirs(str(folder), n_rirs=3)


# ----------------------------------------------------------------- mixing


def test_mix_at_ratio_hand_computed():
    # P_target = 1, P_noise = 1: 20 dB needs a noise gain of 0.1.
    target = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    noise = torch.ones(1, 4)
    mixture = mix_at_ratio(target, noise, torch.tensor([20.0]))
    assert torch.allclose(mixture, torch.tensor([[1.1, -0.9, 1.1, -0.9]]))


def test_mix_at_ratio_is_exact_on_padded_batch():
    valid = [8000, 6000, 4001, 2500]
    target, lens = padded_batch(valid, 8000)
    interference = torch.rand(4, 8000) * 3 + 1  # far from zero-mean
    ratios = torch.tensor([-5.0, 0.0, 7.3, 20.0])
    mixture = mix_at_ratio(target, interference, ratios, target_lens=lens)
    added = mixture - target
    for row, n in enumerate(valid):
        measured = power_ratio_db(target[row, :n], added[row, :n])
        assert measured == pytest.approx(float(ratios[row]), abs=1e-3)
        assert (mixture[row, n:] == 0).all()


def test_mix_at_ratio_uses_common_valid_part():
    target = torch.randn(2, 1000)
    interference = torch.randn(2, 1000)
    interference[:, 500:] = 1e6  # padding of the interference: never added
    mixture = mix_at_ratio(
        target,
        interference,
        torch.tensor([3.0, 3.0]),
        interference_lens=torch.tensor([0.5, 0.5]),
    )
    added = mixture - target
    assert (added[:, 500:] == 0).all()
    for row in range(2):
        measured = power_ratio_db(target[row, :500], added[row, :500])
        assert measured == pytest.approx(3.0, abs=1e-3)


def test_mix_at_ratio_leaves_silent_items_unchanged():
    target = torch.randn(3, 100)
    target[1] = 0.0
    interference = torch.randn(3, 100)
    interference[0] = 0.0
    target.requires_grad_(True)
    mixture = mix_at_ratio(target, interference, torch.zeros(3))
    mixture.sum().backward()
    assert torch.isfinite(mixture).all()
    assert torch.isfinite(target.grad).all()
    assert torch.equal(mixture[0], target[0])  # nothing to add
    assert torch.equal(mixture[1], target[1])  # ratio undefined: untouched
    assert not torch.equal(mixture[2], target[2])


def test_mix_at_ratio_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="batch, time"):
        mix_at_ratio(torch.zeros(2, 10), torch.zeros(2, 9), torch.zeros(2))


# ------------------------------------------------------------ waveform bank


# Multiples of 1 / 32768 are what 16-bit files hold: int16 keeps them exact.
STEP = 1 / 32768


def test_bank_tiles_short_waveforms_and_slices_long_ones():
    short = torch.tensor([1.0, 2.0, 3.0]) * STEP
    long = torch.arange(10.0, 30.0) * STEP
    torch.manual_seed(0)
    segments = WaveformBank([short, long]).random_segments(512, 7) / STEP
    starts = set()
    for segment in segments:
        if segment[0] < 10:  # from the short waveform: repeated from 0
            assert segment.tolist() == [1, 2, 3, 1, 2, 3, 1]
        else:  # a contiguous stretch of the long one, never wrapped
            assert torch.equal(segment, segment[0] + torch.arange(7.0))
            starts.add(int(segment[0]))
    assert starts == set(range(10, 24))  # every start that fits


def test_bank_select_pads_with_zeros():
    bank = WaveformBank([torch.tensor([0.25, 0.5]), torch.tensor([0.75])])
    waveforms, lengths = bank.select(torch.tensor([1, 0, 1]))
    expected = torch.tensor([[0.75, 0], [0.25, 0.5], [0.75, 0.0]])
    assert torch.equal(waveforms, expected)
    assert torch.equal(lengths, torch.tensor([1, 2, 1]))


def test_bank_stores_int16_and_returns_float32():
    wavs = [torch.randn(1000) * 0.1, torch.randn(300) * 3.0]
    bank = WaveformBank(wavs)
    assert bank.samples.dtype == torch.int16
    assert bank.nbytes == 2 * 1300  # half of float32
    waveforms, _ = bank.select(torch.tensor([0, 1]))
    assert waveforms.dtype == torch.float32
    # Scaled per waveform: quiet and loud ones both keep ~96 dB of range.
    for row, wav in enumerate(wavs):
        error = (waveforms[row, : len(wav)] - wav).abs().max()
        assert error <= wav.abs().max() / 32767 * 0.51


def test_bank_keeps_16_bit_files_exact_and_float_rirs_close(tmp_path):
    pcm = torch.randint(-32768, 32768, (4000,)) / 32768
    save_audio(str(tmp_path / "pcm.wav"), pcm, 16000, subtype="PCM_16")
    rir = torch.exp(-torch.arange(2000.0) / 300) * torch.randn(2000)
    rir = rir / rir.abs().max()
    save_audio(str(tmp_path / "rir.wav"), rir, 16000, subtype="FLOAT")
    rows = [["pcm", 0.25, "$root/pcm.wav"], ["rir", 0.125, "$root/rir.wav"]]
    csv_file = write_csv(tmp_path / "mixed.csv", rows)
    bank = load_waveform_bank(csv_file, {"root": str(tmp_path)})
    waveforms, _ = bank.select(torch.tensor([0, 1]))
    assert torch.equal(waveforms[0], pcm.float())
    assert (waveforms[1, :2000] - rir).abs().max() <= 0.51 / 32767


def noise_files(folder, n_files=4, seconds=0.5, rate=16000):
    """Writes ``n_files`` 16-bit noises and their CSV; returns the CSV."""
    rows = []
    for index in range(n_files):
        wav = torch.randn(int(seconds * rate) + 37 * index).clamp(-3, 3) / 4
        save_audio(str(folder / f"n{index}.wav"), wav, rate, subtype="PCM_16")
        rows.append([f"n{index}", seconds, f"$root/n{index}.wav"])
    return write_csv(folder / "noises.csv", rows)


def test_augmenters_of_one_csv_share_one_bank_per_device(tmp_path):
    csv_file = noise_files(tmp_path)
    root = {"root": str(tmp_path)}
    music, noise = (
        AddNoiseBank(csv_file, 5, 15, root),
        AddNoiseBank(csv_file, 0, 15, root),
    )
    clean, lens = padded_batch([8000, 6000], 8000)
    music(clean, lens), noise(clean, lens)
    assert music.bank("cpu") is noise.bank("cpu")
    for device in DEVICES[1:]:
        assert music.bank(device) is noise.bank(device)
        assert music.bank(device).samples.dtype == torch.int16


def test_memory_bank_above_the_guard_says_to_stream(tmp_path):
    csv_file = noise_files(tmp_path)
    with pytest.raises(MemoryError, match="storage='stream'") as error:
        load_waveform_bank(
            csv_file,
            {"root": str(tmp_path)},
            storage="memory",
            max_memory_mb=0.01,
        )
    assert "noises.csv" in str(error.value) and " h of audio" in str(
        error.value
    )


def test_auto_streams_above_the_threshold_with_the_same_draws(tmp_path):
    csv_file = noise_files(tmp_path)
    root = {"root": str(tmp_path)}
    memory = load_waveform_bank(csv_file, root, storage="auto")
    streamed = load_waveform_bank(csv_file, root, stream_above_mb=0.01)
    assert isinstance(memory, WaveformBank)
    assert isinstance(streamed, StreamingWaveformBank)
    # Same generator calls in the same order: the same noises, exactly.
    for length in (300, 20000):  # sliced from long files, and tiled
        torch.manual_seed(3)
        expected = memory.random_segments(16, length)
        torch.manual_seed(3)
        assert torch.equal(streamed.random_segments(16, length), expected)
    indices = torch.tensor([3, 0, 2])
    for got, want in zip(streamed.select(indices), memory.select(indices)):
        assert torch.equal(got, want)


def test_streaming_reads_only_the_segments_of_the_batch(tmp_path, monkeypatch):
    csv_file = noise_files(tmp_path, n_files=3, seconds=5.0)
    bank = load_waveform_bank(
        csv_file, {"root": str(tmp_path)}, storage="stream"
    )
    reads = []
    real_read = sf.read

    def counting_read(*args, **kwargs):
        data, rate = real_read(*args, **kwargs)
        reads.append(len(data))
        return data, rate

    monkeypatch.setattr(audio.sf, "read", counting_read)
    bank.random_segments(8, 1600)
    assert len(reads) == 8 and max(reads) == 1600  # not the 80000-sample files


def test_streaming_resamples_other_rates(tmp_path):
    t = torch.arange(8000 * 2) / 8000
    save_audio(
        str(tmp_path / "tone.wav"), 0.5 * torch.sin(2 * np.pi * 440 * t), 8000
    )
    csv_file = write_csv(tmp_path / "tone.csv", [["t", 2.0, "$root/tone.wav"]])
    root = {"root": str(tmp_path)}
    memory = load_waveform_bank(csv_file, root, storage="memory")
    streamed = load_waveform_bank(csv_file, root, storage="stream")
    assert int(streamed.lengths[0]) == 32000
    torch.manual_seed(0)
    expected = memory.random_segments(4, 4000)
    torch.manual_seed(0)
    got = streamed.random_segments(4, 4000)
    # Resampling a segment differs from resampling the file only near the
    # segment's edges.
    torch.testing.assert_close(
        got[:, 100:-100], expected[:, 100:-100], atol=2e-3, rtol=0
    )


def test_streaming_error_names_the_csv_line(tmp_path):
    csv_file = noise_files(tmp_path, n_files=2)
    bank = load_waveform_bank(
        csv_file, {"root": str(tmp_path)}, storage="stream"
    )
    os.remove(tmp_path / "n1.wav")
    with pytest.raises(AudioError, match=r"noises.csv, line 3 \(ID n1\)"):
        for _ in range(20):
            bank.random_segments(4, 100)


def test_streamed_augmenters_match_in_memory_ones(tmp_path):
    csv_file = noise_files(tmp_path)
    root = {"root": str(tmp_path)}
    clean, lens = padded_batch([8000, 6000, 8000], 8000)
    outputs = []
    for storage in ("memory", "stream"):
        torch.manual_seed(11)
        noisy = AddNoiseBank(csv_file, 5, 5, root, storage=storage)(clean, lens)
        outputs.append(noisy)
    torch.testing.assert_close(outputs[0], outputs[1])
    rir_folder = tmp_path / "rirs"
    rirs = simulate_rirs(str(rir_folder), n_rirs=2)
    wet = []
    for storage in ("memory", "stream"):
        torch.manual_seed(11)
        wet.append(AddReverbBank(rirs, storage=storage)(clean, lens))
    # Float RIRs are held as int16 in memory, exactly when streamed.
    assert power_ratio_db(wet[1], wet[0] - wet[1]) > 60


# ------------------------------------------------------------- noise bank


def test_noise_bank_is_deterministic_and_listed(tmp_path):
    first = generate_noise_bank(tmp_path / "a", n_files=7, duration=0.25)
    again = generate_noise_bank(tmp_path / "b", n_files=7, duration=0.25)
    other = generate_noise_bank(
        tmp_path / "c", n_files=7, duration=0.25, seed=99
    )
    with open(first, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7
    assert {row["noise_type"] for row in rows} == {
        "white",
        "pink",
        "brown",
        "hum",
        "fan",
        "babble",
    }
    for row in rows:
        samples, rate = sf.read(row["wav"])
        assert rate == 16000 and len(samples) == 4000
        assert float(row["duration"]) == 0.25
        assert 0.5 < np.abs(samples).max() <= 0.9 + 1e-4
    names = sorted(os.listdir(tmp_path / "a" / "noise_bank"))
    for name in names:
        a = sf.read(tmp_path / "a" / "noise_bank" / name)[0]
        b = sf.read(tmp_path / "b" / "noise_bank" / name)[0]
        c = sf.read(tmp_path / "c" / "noise_bank" / name)[0]
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)
    assert again.endswith("noise_bank.csv") and other != first


def test_noise_bank_skips_existing_csv(tmp_path):
    csv_file = generate_noise_bank(tmp_path, n_files=2, duration=0.1)
    os.remove(tmp_path / "noise_bank" / "noise0000_white.wav")
    assert generate_noise_bank(tmp_path, n_files=2, duration=0.1) == csv_file
    assert not os.path.exists(tmp_path / "noise_bank" / "noise0000_white.wav")


def test_noise_colours_have_the_right_spectral_tilt(tmp_path):
    csv_file = generate_noise_bank(tmp_path, n_files=4, duration=1.0)
    with open(csv_file, encoding="utf-8") as f:
        rows = {row["noise_type"]: row["wav"] for row in csv.DictReader(f)}

    def low_to_high_db(path):
        samples, rate = sf.read(path)
        power = np.abs(np.fft.rfft(samples)) ** 2
        freqs = np.fft.rfftfreq(len(samples), 1 / rate)
        low = power[(freqs > 50) & (freqs < 500)].mean()
        high = power[(freqs > 2000) & (freqs < 7000)].mean()
        return 10 * np.log10(low / high)

    white, pink, brown = (
        low_to_high_db(rows[kind]) for kind in ("white", "pink", "brown")
    )
    assert abs(white) < 3  # flat
    # 1/f and 1/f^2 over a ~1.2 decade gap between band centres.
    assert 8 < pink < 16 and 20 < brown < 32


def test_hum_peaks_at_mains_frequency(tmp_path):
    generate_noise_bank(tmp_path, n_files=4, duration=1.0)
    samples, rate = sf.read(tmp_path / "noise_bank" / "noise0003_hum.wav")
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()]
    assert min(abs(peak_hz - 50), abs(peak_hz - 60)) <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_add_noise_bank_snr_is_exact_and_padding_zero(noise_csv, device):
    valid = [16000, 12000, 8000, 3000]
    clean, lens = padded_batch(valid, 16000)
    clean, lens = clean.to(device), lens.to(device)
    noisy = AddNoiseBank(noise_csv, snr_low=0, snr_high=15)(clean, lens)
    assert noisy.device == clean.device
    added = (noisy - clean).cpu()
    snrs = []
    for row, n in enumerate(valid):
        snrs.append(power_ratio_db(clean[row, :n].cpu(), added[row, :n]))
        assert (noisy[row, n:] == 0).all()
        assert (added[row, :n] != 0).float().mean() > 0.99
    assert all(0 - 1e-3 <= snr <= 15 + 1e-3 for snr in snrs)
    assert len({round(snr, 2) for snr in snrs}) == 4  # drawn per utterance


def test_add_noise_bank_reports_exact_fixed_snr(noise_csv):
    clean, lens = padded_batch([4000, 2001], 4000)
    noisy = AddNoiseBank(noise_csv, snr_low=12.5, snr_high=12.5)(clean, lens)
    for row, n in enumerate([4000, 2001]):
        measured = power_ratio_db(
            clean[row, :n], noisy[row, :n] - clean[row, :n]
        )
        assert measured == pytest.approx(12.5, abs=1e-3)


def test_add_noise_bank_is_deterministic_under_manual_seed(noise_csv):
    clean, lens = padded_batch([8000, 5000], 8000)
    add_noise = AddNoiseBank(noise_csv)
    torch.manual_seed(7)
    first = add_noise(clean, lens)
    torch.manual_seed(7)
    second = add_noise(clean, lens)
    third = add_noise(clean, lens)
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def test_add_noise_bank_reads_files_once_without_dataloader(
    tmp_path, monkeypatch
):
    # Five noises shorter than the utterances: the case that made
    # SpeechBrain's AddNoise rebuild its DataLoader every step.
    rows = []
    for index in range(5):
        path = tmp_path / f"n{index}.wav"
        save_audio(str(path), torch.randn(700 + index) * 0.1, 16000)
        rows.append([f"n{index}", 0.04, f"$root/n{index}.wav"])
    csv_file = write_csv(tmp_path / "five.csv", rows)
    reads = []
    real_load_audio = audio.load_audio

    def counting_load_audio(*args, **kwargs):
        reads.append(args[0])
        return real_load_audio(*args, **kwargs)

    def no_dataloader(*args, **kwargs):
        raise AssertionError("AddNoiseBank built a DataLoader")

    monkeypatch.setattr(
        "speechbrain_ext.augment.bank.load_audio", counting_load_audio
    )
    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", no_dataloader)
    add_noise = AddNoiseBank(csv_file, replacements={"root": str(tmp_path)})
    twin = AddNoiseBank(csv_file, replacements={"root": str(tmp_path)})
    clean, lens = padded_batch([8000, 8000, 6000], 8000)
    for _ in range(20):
        noisy = add_noise(clean, lens)
    twin(clean, lens)
    assert sorted(reads) == sorted(
        str(tmp_path / f"n{i}.wav") for i in range(5)
    )
    # Tiled: the 700-sample noises cover the whole 8000-sample utterance.
    assert ((noisy - clean)[0] != 0).float().mean() > 0.99


def test_add_noise_bank_error_names_missing_file_and_line(tmp_path):
    save_audio(str(tmp_path / "ok.wav"), torch.randn(800) * 0.1, 16000)
    csv_file = write_csv(
        tmp_path / "broken.csv",
        [["ok", 0.05, "$root/ok.wav"], ["gone", 0.05, "$root/gone.wav"]],
    )
    add_noise = AddNoiseBank(csv_file, replacements={"root": str(tmp_path)})
    with pytest.raises(AudioError) as error:
        add_noise(torch.randn(1, 100), torch.ones(1))
    message = str(error.value)
    assert str(tmp_path / "gone.wav") in message
    assert (
        "line 3" in message and "ID gone" in message and "broken.csv" in message
    )


def test_add_noise_bank_error_names_corrupt_file(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wav file")
    csv_file = write_csv(tmp_path / "bad.csv", [["bad", 1.0, "$r/bad.wav"]])
    add_noise = AddNoiseBank(csv_file, replacements={"r": str(tmp_path)})
    with pytest.raises(AudioError, match="bad.wav"):
        add_noise(torch.randn(1, 100), torch.ones(1))


# --------------------------------------------------------------- RIR bank


def test_simulate_rirs_is_deterministic_trimmed_and_normalised(tmp_path):
    first = simulate_rirs(tmp_path / "a", n_rirs=3, rt60_range=(0.3, 0.3))
    again = simulate_rirs(tmp_path / "b", n_rirs=3, rt60_range=(0.3, 0.3))
    with open(first, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(again, encoding="utf-8") as f:
        rows_again = list(csv.DictReader(f))
    assert len(rows) == 3
    for row, row_again in zip(rows, rows_again):
        rir, rate = sf.read(row["wav"])
        assert rate == 16000
        assert np.array_equal(rir, sf.read(row_again["wav"])[0])
        assert float(row["rt60"]) == 0.3
        assert float(row["duration"]) == pytest.approx(len(rir) / rate)
        assert np.abs(rir).max() == pytest.approx(1.0)
        assert abs(rir[-1]) >= 1e-3  # cut at the -60 dB point
        # An RT60 of 0.3 s decays 60 dB in 0.3 s: far shorter than a second.
        assert 0.05 < len(rir) / rate < 0.6


def test_simulate_rirs_skips_existing_csv(tmp_path):
    csv_file = simulate_rirs(tmp_path, n_rirs=1)
    os.remove(tmp_path / "rirs" / "rir0000.wav")
    assert simulate_rirs(tmp_path, n_rirs=1) == csv_file
    assert not os.path.exists(tmp_path / "rirs" / "rir0000.wav")


def hand_made_rir_csv(folder, rirs):
    """A CSV of the given RIRs, written exactly (float wav)."""
    rows = []
    for index, rir in enumerate(rirs):
        path = str(folder / f"h{index}.wav")
        save_audio(path, torch.tensor(rir), 16000, subtype="FLOAT")
        rows.append([f"h{index}", len(rir) / 16000, path])
    return write_csv(folder / "hand.csv", rows)


def test_add_reverb_bank_convolves_aligned_on_direct_path(tmp_path):
    csv_file = hand_made_rir_csv(tmp_path, [[0.0, 0.0, 1.0, 0.5]])
    dry = torch.tensor([[1.0, 2.0, 0.0, 0.0, 0.0]])
    wet = AddReverbBank(csv_file, rescale_amp=None)(dry, torch.tensor([0.8]))
    # y[t] = sum_j h[j] x[t + 2 - j]; the fifth sample is padding.
    expected = torch.tensor([[1.0, 2.5, 1.0, 0.0, 0.0]])
    # The bank holds RIRs as int16 scaled to their peak: 0.5 -> 16384/32767.
    assert torch.allclose(wet, expected, atol=1e-4)
    assert wet[0, 4] == 0.0


def test_add_reverb_bank_matches_speechbrain_reverberate(tmp_path):
    generator = torch.Generator().manual_seed(0)
    rir = torch.randn(300, generator=generator) * 0.1
    rir[40] = 1.0  # direct path after a few pre-echo samples
    csv_file = hand_made_rir_csv(tmp_path, [rir.tolist()])
    # Silence at both ends: SpeechBrain's circular convolution is then
    # linear, and the two implementations must agree.
    dry = torch.zeros(2, 2000)
    dry[:, 400:1600] = torch.randn(2, 1200, generator=generator)
    wet = AddReverbBank(csv_file)(dry, torch.ones(2))
    expected = reverberate(dry, rir, rescale_amp="avg")
    # Up to the int16 rounding of the RIR, 1 / 65534 of its peak per tap.
    assert torch.allclose(wet, expected, atol=1e-3)
    assert power_ratio_db(expected.flatten(), (wet - expected).flatten()) > 75


def test_add_reverb_bank_is_linear_not_circular(tmp_path):
    csv_file = hand_made_rir_csv(tmp_path, [[1.0] + [0.5] * 99])
    dry = torch.zeros(1, 300)
    dry[0, 299] = 1.0  # its tail would wrap to the start if circular
    wet = AddReverbBank(csv_file, rescale_amp=None)(dry, torch.ones(1))
    # A circular convolution would put 0.5 on the first 99 samples.
    assert wet[0, :299].abs().max() < 1e-6
    assert wet[0, 299] == pytest.approx(1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_add_reverb_bank_keeps_length_level_and_padding(rir_csv, device):
    valid = [8000, 5000, 2000]
    dry, lens = padded_batch(valid, 8000)
    dry, lens = dry.to(device), lens.to(device)
    wet = AddReverbBank(rir_csv)(dry, lens)
    assert wet.shape == dry.shape and wet.device == dry.device
    for row, n in enumerate(valid):
        dry_level = dry[row, :n].abs().mean()
        assert wet[row, :n].abs().mean() == pytest.approx(
            float(dry_level), rel=1e-4
        )
        assert (wet[row, n:] == 0).all()
        assert not torch.allclose(wet[row, :n], dry[row, :n], atol=1e-2)


def test_add_reverb_bank_draws_one_rir_per_utterance(tmp_path):
    csv_file = hand_made_rir_csv(tmp_path, [[1.0, 0.0, 0.5], [1.0, 0.0, -0.5]])
    dry = torch.zeros(32, 10)
    dry[:, 0] = 1.0
    torch.manual_seed(0)
    wet = AddReverbBank(csv_file, rescale_amp=None)(dry, torch.ones(32))
    echoes = {round(echo, 4) for echo in wet[:, 2].tolist()}
    assert echoes == {0.5, -0.5}


# ------------------------------------------------ SpeechBrain's Augmenter


def test_banks_work_inside_speechbrain_augmenter(noise_csv, rir_csv):
    augment = Augmenter(
        concat_original=True,
        min_augmentations=1,
        max_augmentations=1,
        augmentations=[AddNoiseBank(noise_csv), AddReverbBank(rir_csv)],
    )
    clean, lens = padded_batch([4000, 3000, 2000], 4000)
    labels = torch.tensor([5, 6, 7])
    out, out_lens = augment(clean, lens)
    assert out.shape == (6, 4000)
    assert torch.equal(out[:3], clean)
    assert not torch.equal(out[3:], clean)
    assert torch.equal(out_lens, torch.cat([lens, lens]))
    assert torch.equal(augment.replicate_labels(labels), labels.repeat(2))


def test_banks_work_in_parallel_augmenter(noise_csv, rir_csv):
    augment = Augmenter(
        parallel_augment=True,
        concat_original=True,
        min_augmentations=2,
        max_augmentations=2,
        augmentations=[AddNoiseBank(noise_csv), AddReverbBank(rir_csv)],
    )
    clean, lens = padded_batch([4000, 2500], 4000)
    out, out_lens = augment(clean, lens)
    assert out.shape == (6, 4000) and out_lens.shape == (6,)
    assert (out[[3, 5], 2500:] == 0).all()  # padding of row 1 stays zero
    labels = torch.tensor([1, 2])
    assert torch.equal(augment.replicate_labels(labels), labels.repeat(3))


def test_select_pads_to_a_given_length_without_reading_lengths():
    bank = WaveformBank([torch.ones(3), torch.ones(5)])
    assert bank.max_length == 5
    waveforms, lengths = bank.select(torch.tensor([0]), pad_to=bank.max_length)
    assert waveforms.shape == (1, 5) and lengths.tolist() == [3]
    assert waveforms[0].tolist() == pytest.approx([1, 1, 1, 0, 0], abs=1e-3)
