"""Tests of the interfering-talker augmenter and the CSC view builder."""

import csv

import pytest
import torch
from audio_helpers import padded_batch, power_ratio_db  # noqa: E402

from speechbrain_ext.augment import (
    AddNoiseBank,
    AddReverbBank,
    InterferedViews,
    InterferingTalker,
    generate_noise_bank,
    simulate_rirs,
)
from speechbrain_ext.data.audio import AudioError, save_audio

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def source_rows(added, candidates):
    """Row of ``candidates`` each added signal is a scaled copy of."""
    added = torch.nn.functional.normalize(added, dim=1)
    candidates = torch.nn.functional.normalize(candidates, dim=1)
    return (added @ candidates.T).abs().argmax(dim=1)


# ------------------------------------------------------ InterferingTalker


@pytest.mark.parametrize("device", DEVICES)
def test_talker_sir_is_exact_on_padded_batch(device):
    valid = [6000, 6000, 4500, 3001, 6000]
    clean, lens = padded_batch(valid, 6000)
    clean, lens = clean.to(device), lens.to(device)
    torch.manual_seed(0)
    mixed = InterferingTalker(sir_low=0.0, sir_high=10.0)(clean, lens)
    assert mixed.device == clean.device
    added = (mixed - clean).cpu()
    sirs = []
    for row, n in enumerate(valid):
        sirs.append(power_ratio_db(clean[row, :n].cpu(), added[row, :n]))
        assert (mixed[row, n:] == 0).all()
        # Full overlap: shorter interferers are repeated to cover it all.
        assert (added[row, :n] != 0).float().mean() > 0.99
    assert all(-1e-3 <= sir <= 10 + 1e-3 for sir in sirs)
    assert len({round(sir, 2) for sir in sirs}) == len(valid)


def test_talker_fixed_sir_is_exact():
    clean, lens = padded_batch([3000, 2000, 1000], 3000)
    mixed = InterferingTalker(sir_low=4.2, sir_high=4.2)(clean, lens)
    for row, n in enumerate([3000, 2000, 1000]):
        sir = power_ratio_db(clean[row, :n], mixed[row, :n] - clean[row, :n])
        assert sir == pytest.approx(4.2, abs=1e-3)


def test_talker_draws_each_rows_interferer_and_never_picks_itself():
    clean, lens = padded_batch([2000] * 6, 2000)
    talker = InterferingTalker(sir_low=0.0, sir_high=0.0)
    per_row_shifts = []
    for seed in range(12):
        torch.manual_seed(seed)
        sources = source_rows(talker(clean, lens) - clean, clean)
        shift = (sources - torch.arange(6)) % 6
        assert (shift != 0).all()
        per_row_shifts.append(shift)
    shifts = torch.stack(per_row_shifts)
    # Rows draw independently: within a call the shifts differ.
    assert any(len(set(row.tolist())) > 1 for row in shifts)
    assert set(shifts.flatten().tolist()) == {1, 2, 3, 4, 5}


def test_two_views_rarely_share_the_interferer():
    """With one shift per call both views of a target got the same talker
    with probability 1/(B-1) for *every* target at once; per row, the
    share of targets whose two views share a talker is about 1/(B-1)."""
    batch = 8
    clean, lens = padded_batch([1000] * batch, 1000)
    talker = InterferingTalker(sir_low=0.0, sir_high=0.0)
    torch.manual_seed(0)
    same = []
    for _ in range(40):
        first = source_rows(talker(clean, lens) - clean, clean)
        second = source_rows(talker(clean, lens) - clean, clean)
        same.append((first == second).float().mean())
    share = float(torch.stack(same).mean())
    assert 0.03 < share < 0.3  # 1/7 = 0.14 expected
    assert max(same) < 1.0


def test_talker_batch_of_one_is_unchanged():
    clean = torch.randn(1, 500)
    assert torch.equal(InterferingTalker()(clean, torch.ones(1)), clean)


def test_talker_partial_overlap_covers_the_drawn_fraction():
    valid = [8000, 6000, 4000, 8000]
    clean, lens = padded_batch(valid, 8000)
    talker = InterferingTalker(
        sir_low=3.0, sir_high=3.0, overlap_low=0.5, overlap_high=0.5
    )
    torch.manual_seed(3)
    added = talker(clean, lens) - clean
    offsets = []
    for row, n in enumerate(valid):
        covered = torch.nonzero(added[row]).squeeze(1)
        first, last = int(covered[0]), int(covered[-1])
        assert last - first + 1 == n // 2  # one contiguous half
        assert last < n
        offsets.append(first)
        # SIR measured over the overlapped region only.
        span = slice(first, last + 1)
        sir = power_ratio_db(clean[row, span], added[row, span])
        assert sir == pytest.approx(3.0, abs=1e-3)
    assert len(set(offsets)) > 1  # random placement


def test_talker_is_deterministic_under_manual_seed():
    clean, lens = padded_batch([3000, 2500, 1000, 3000], 3000)
    talker = InterferingTalker(overlap_low=0.3, overlap_high=1.0)
    torch.manual_seed(11)
    first = talker(clean, lens)
    torch.manual_seed(11)
    assert torch.equal(first, talker(clean, lens))
    assert not torch.equal(first, talker(clean, lens))


def test_talker_rejects_bad_ranges():
    with pytest.raises(ValueError, match="overlap"):
        InterferingTalker(overlap_low=0.0)
    with pytest.raises(ValueError, match="sir_low"):
        InterferingTalker(sir_low=5, sir_high=1)


def write_corpus(folder, waveforms, rate=16000):
    """Writes waveforms and a SpeechBrain CSV with a $root placeholder."""
    with open(folder / "corpus.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "spk_id"])
        for index, wav in enumerate(waveforms):
            save_audio(str(folder / f"u{index}.wav"), wav, rate)
            writer.writerow(
                [f"u{index}", len(wav) / rate, f"$root/u{index}.wav", "s"]
            )
    return str(folder / "corpus.csv")


def test_talker_from_csv_mixes_corpus_utterances_exactly(tmp_path):
    generator = torch.Generator().manual_seed(5)
    corpus = [torch.randn(3000, generator=generator) * 0.2 for _ in range(3)]
    csv_file = write_corpus(tmp_path, corpus)
    talker = InterferingTalker(
        sir_low=6.0,
        sir_high=6.0,
        source=csv_file,
        replacements={"root": str(tmp_path)},
    )
    clean, lens = padded_batch([2000, 1500], 2000)
    added = talker(clean, lens) - clean
    # Every added signal is a stretch of one corpus utterance (16-bit wav).
    stored = torch.stack([c.mul(32767).round().div(32767) for c in corpus])
    for row, n in enumerate([2000, 1500]):
        sir = power_ratio_db(clean[row, :n], added[row, :n])
        assert sir == pytest.approx(6.0, abs=1e-3)
        windows = stored.unfold(1, n, 1).reshape(-1, n)
        similarity = torch.nn.functional.cosine_similarity(
            windows, added[row, :n].unsqueeze(0)
        )
        assert similarity.max() > 0.999
        assert (added[row, n:] == 0).all()


def test_talker_from_csv_resamples_and_pads_short_files(tmp_path):
    csv_file = write_corpus(tmp_path, [torch.randn(400) * 0.1], rate=8000)
    talker = InterferingTalker(
        source=csv_file, replacements={"root": str(tmp_path)}
    )
    clean = torch.randn(2, 2000)
    added = talker(clean, torch.ones(2)) - clean
    # 400 samples at 8 kHz are 800 at 16 kHz, repeated to fill 2000.
    assert (added != 0).float().mean() > 0.99
    assert torch.allclose(added[:, :800], added[:, 800:1600], atol=1e-6)


def test_talker_from_csv_error_names_missing_file(tmp_path):
    csv_file = write_corpus(tmp_path, [torch.randn(800) * 0.1])
    (tmp_path / "u0.wav").unlink()
    talker = InterferingTalker(
        source=csv_file, replacements={"root": str(tmp_path)}
    )
    with pytest.raises(AudioError) as error:
        talker(torch.randn(2, 100), torch.ones(2))
    message = str(error.value)
    assert str(tmp_path / "u0.wav") in message
    assert "corpus.csv, line 2 (ID u0)" in message


# -------------------------------------------------------- InterferedViews


class Doubling(torch.nn.Module):
    """A deterministic stand-in interference: y = 2 x."""

    def forward(self, waveforms, lengths):
        """Doubles the waveforms."""
        return 2 * waveforms


def test_views_layout_lengths_and_group_ids():
    clean, lens = padded_batch([1000, 800, 600], 1000)
    views = InterferedViews([Doubling()], n_views=3)
    mixed, view_lens, target = views(clean, lens)
    assert torch.equal(mixed, torch.cat([2 * clean] * 3))
    assert torch.equal(view_lens, torch.cat([lens] * 3))
    assert torch.equal(target, clean.repeat(3, 1))
    ids = views.group_ids(3)
    assert ids.dtype == torch.long
    assert torch.equal(ids, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2]))
    assert torch.equal(mixed, 2 * clean[ids])


def test_views_draw_independent_conditions():
    clean, lens = padded_batch([2000, 2000, 1200, 2000], 2000)
    before = clean.clone()
    views = InterferedViews(
        [InterferingTalker(sir_low=0.0, sir_high=10.0)], n_views=2
    )
    torch.manual_seed(0)
    mixed, _, target = views(clean, lens)
    # The clean target of every view row is the untouched input.
    assert torch.equal(target, before.repeat(2, 1))
    first, second = mixed[:4], mixed[4:]
    for row, n in enumerate([2000, 2000, 1200, 2000]):
        assert not torch.allclose(first[row, :n], second[row, :n])
        assert (mixed[[row, row + 4], n:] == 0).all()


def test_views_apply_each_interference_with_its_probability():
    clean = torch.randn(200, 50)
    never = InterferedViews([Doubling()], probabilities=[0.0])
    assert torch.equal(never(clean, torch.ones(200))[0], clean.repeat(2, 1))
    torch.manual_seed(0)
    half = InterferedViews([Doubling()], n_views=1, probabilities=[0.5])
    mixed = half(clean, torch.ones(200))[0]
    doubled = (mixed == 2 * clean).all(dim=1)
    kept = (mixed == clean).all(dim=1)
    assert torch.equal(doubled, ~kept)
    assert 70 < int(doubled.sum()) < 130


def test_views_reject_shape_changing_interference():
    class Cropping(torch.nn.Module):
        def forward(self, waveforms):
            return waveforms[:, :-1]

    views = InterferedViews([Cropping()])
    with pytest.raises(ValueError, match="Cropping changed the shape"):
        views(torch.randn(2, 10), torch.ones(2))


def test_views_reject_mismatched_probabilities():
    with pytest.raises(ValueError, match="probabilities"):
        InterferedViews([Doubling()], probabilities=[0.5, 0.5])


def test_views_with_talker_noise_and_reverb(tmp_path):
    noise_csv = generate_noise_bank(tmp_path, n_files=3, duration=0.25)
    rir_csv = simulate_rirs(tmp_path, n_rirs=2)
    views = InterferedViews(
        [
            InterferingTalker(),
            AddNoiseBank(noise_csv),
            AddReverbBank(rir_csv),
        ],
        n_views=2,
        probabilities=[1.0, 0.5, 0.5],
    )
    clean, lens = padded_batch([3000, 2000, 2500], 3000)
    mixed, view_lens, target = views(clean, lens)
    assert mixed.shape == (6, 3000) and view_lens.shape == (6,)
    assert torch.isfinite(mixed).all()
    for row, n in enumerate([3000, 2000, 2500]):
        assert (mixed[[row, row + 3], n:] == 0).all()
    assert torch.equal(target, clean.repeat(2, 1))


def test_segment_views_share_the_speaker_not_the_samples():
    clean, lens = padded_batch([3000, 3000, 3000, 3000], 3000)
    views = InterferedViews(
        [InterferingTalker(sir_low=0.0, sir_high=0.0)],
        n_views=1,
        segments=3,
    )
    torch.manual_seed(0)
    mixed, view_lens, target = views(clean, lens)
    assert mixed.shape == (12, 1000) and views.views_per_target == 3
    assert torch.equal(view_lens, torch.ones(12))
    for segment in range(3):
        rows = slice(4 * segment, 4 * segment + 4)
        part = clean[:, 1000 * segment : 1000 * (segment + 1)]
        assert torch.equal(target[rows], part)
        # The interferer is the same segment of *another* target.
        sources = source_rows(mixed[rows] - part, part)
        assert (sources != torch.arange(4)).all()
    assert torch.equal(views.group_ids(4), torch.arange(4).repeat(3))
    labels = torch.tensor([5, 6, 7, 8])
    assert torch.equal(views.replicate_labels(labels), labels.repeat(3))


def test_segment_lengths_follow_a_padded_crop():
    clean, lens = padded_batch([3000, 1500], 3000)
    views = InterferedViews([], n_views=1, segments=2)
    _, view_lens, _ = views(clean, lens)
    assert torch.allclose(view_lens, torch.tensor([1.0, 1.0, 1.0, 1 / 1500]))
