"""Tests for the P x K speaker-balanced batch sampler."""

import logging
from collections import Counter

import pytest
import torch

from speechbrain.dataio.dataloader import SaveableDataLoader
from speechbrain.dataio.sampler import DistributedSamplerWrapper
from speechbrain_ext.data.samplers import PKSampler

# 40 speakers with 1..12 utterances each, interleaved as in a manifest.
UTTERANCE_COUNTS = {f"spk{s:02d}": 1 + (7 * s) % 12 for s in range(40)}
LABELS = [
    spk
    for round_ in range(12)
    for spk, count in UTTERANCE_COUNTS.items()
    if round_ < count
]


def speaker_counts(batch, labels=LABELS):
    return Counter(labels[i] for i in batch)


@pytest.mark.parametrize("mode", ["replace", "drop"])
def test_every_batch_is_p_speakers_times_k(mode):
    sampler = PKSampler(
        LABELS, n_speakers=5, n_per_speaker=3, small_speakers=mode
    )
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert len(batch) == 15
        assert sorted(speaker_counts(batch).values()) == [3] * 5


def test_epoch_length_is_limited_by_a_dominant_speaker():
    # Groups of K=2: "big" has 5, the others 1 each. P=2: 4 batches would
    # need big in all 4 plus 4 other groups, but only 3 exist; 3 batches
    # fit (big in each, plus a, b, c).
    labels = ["big"] * 10 + ["a", "a", "b", "b", "c", "c"]
    sampler = PKSampler(labels, n_speakers=2, n_per_speaker=2)
    assert len(sampler) == 3
    batches = list(sampler)
    assert all(speaker_counts(b, labels)["big"] == 2 for b in batches)
    others = [s for b in batches for s in speaker_counts(b, labels)]
    assert sorted(s for s in others if s != "big") == ["a", "b", "c"]


def test_no_utterance_repeats_within_an_epoch():
    sampler = PKSampler(
        LABELS, n_speakers=5, n_per_speaker=3, small_speakers="drop"
    )
    for epoch in range(3):
        sampler.set_epoch(epoch)
        indices = [i for batch in sampler for i in batch]
        assert len(indices) == len(set(indices))


def test_every_speaker_is_visited_each_epoch():
    sampler = PKSampler(LABELS, n_speakers=5, n_per_speaker=3)
    assert sampler.n_speakers * len(sampler) >= sampler.n_usable_speakers
    for epoch in range(3):
        sampler.set_epoch(epoch)
        visited = {LABELS[i] for batch in sampler for i in batch}
        assert visited == set(UTTERANCE_COUNTS)


def test_reproducible_per_epoch_and_different_across_epochs():
    first = PKSampler(LABELS, n_speakers=4, n_per_speaker=2, seed=7)
    second = PKSampler(LABELS, n_speakers=4, n_per_speaker=2, seed=7)
    epoch0 = list(first)
    first.set_epoch(1)
    epoch1 = list(first)
    second.set_epoch(1)
    assert list(second) == epoch1
    second.set_epoch(0)
    assert list(second) == epoch0
    assert epoch0 != epoch1
    other_seed = PKSampler(LABELS, n_speakers=4, n_per_speaker=2, seed=8)
    assert list(other_seed) != epoch0


def test_small_speakers_replaced_with_their_own_utterances(caplog):
    labels = ["a"] * 4 + ["b"] * 4 + ["solo"] + ["pair"] * 2
    with caplog.at_level(logging.INFO, logger="speechbrain_ext.data.samplers"):
        sampler = PKSampler(labels, n_speakers=2, n_per_speaker=3)
    assert sampler.n_small_speakers == 2
    assert "2 with fewer than 3 utterances" in caplog.text
    batches = list(sampler)
    for speaker in ("solo", "pair"):
        members = [i for i, spk in enumerate(labels) if spk == speaker]
        drawn = [i for b in batches for i in b if labels[i] == speaker]
        assert len(drawn) == 3
        assert set(drawn) == set(members)


def test_small_speakers_dropped(caplog):
    labels = ["a"] * 4 + ["b"] * 4 + ["solo"] + ["pair"] * 2
    with caplog.at_level(logging.INFO, logger="speechbrain_ext.data.samplers"):
        sampler = PKSampler(
            labels, n_speakers=2, n_per_speaker=3, small_speakers="drop"
        )
    assert sampler.n_small_speakers == 2
    assert sampler.n_usable_speakers == 2
    assert "(dropped)" in caplog.text
    drawn = {labels[i] for batch in sampler for i in batch}
    assert drawn == {"a", "b"}


def test_too_few_speakers_error_names_the_numbers():
    labels = ["a"] * 4 + ["b"] * 4 + ["c"] * 4 + ["solo"]
    message = (
        "needs at least n_speakers=4 speakers but only 3 are usable: "
        "13 labels hold 4 speakers, 1 of them with fewer than "
        "n_per_speaker=2 utterances"
    )
    with pytest.raises(ValueError, match=message):
        PKSampler(labels, n_speakers=4, n_per_speaker=2, small_speakers="drop")
    with pytest.raises(ValueError, match="n_speakers=5 speakers but only 4"):
        PKSampler(labels, n_speakers=5, n_per_speaker=2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="small_speakers must be one of"):
        PKSampler(LABELS, 2, 2, small_speakers="pad")
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        PKSampler(LABELS, 2, 2, seed=-1)


def ddp_epoch(sampler_args, epoch, rank):
    """The batches rank `rank` of 2 gets, as Brain would wrap the sampler."""
    wrapper = DistributedSamplerWrapper(
        PKSampler(**sampler_args), num_replicas=2, rank=rank, shuffle=True
    )
    wrapper.set_epoch(epoch)
    return list(wrapper)


def test_ddp_ranks_get_disjoint_whole_batches():
    args = dict(labels=LABELS, n_speakers=4, n_per_speaker=2, seed=3)
    sampler = PKSampler(**args)
    assert len(sampler) % 2 == 0
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        full_epoch = sorted(list(sampler))
        rank0, rank1 = ddp_epoch(args, epoch, 0), ddp_epoch(args, epoch, 1)
        assert len(rank0) == len(rank1) == len(sampler) // 2
        for batch0, batch1 in zip(rank0, rank1):
            assert not set(batch0) & set(batch1)
        assert sorted(list(rank0) + list(rank1)) == full_epoch
    assert ddp_epoch(args, 0, 0) == ddp_epoch(args, 0, 0)
    assert ddp_epoch(args, 0, 0) != ddp_epoch(args, 1, 0)


def test_works_as_dataloader_batch_sampler():
    sampler = PKSampler(LABELS, n_speakers=3, n_per_speaker=2, seed=5)
    loader = torch.utils.data.DataLoader(
        list(range(len(LABELS))), batch_sampler=sampler
    )
    loaded = [batch.tolist() for batch in loader]
    assert loaded == list(sampler)


def test_saveable_dataloader_fast_forwards_after_recovery(tmp_path):
    def make_loader():
        sampler = PKSampler(LABELS, n_speakers=3, n_per_speaker=2, seed=5)
        sampler.set_epoch(2)
        dataset = list(range(len(LABELS)))
        return SaveableDataLoader(dataset, batch_sampler=sampler)

    loader = make_loader()
    iterator = iter(loader)
    seen = [next(iterator).tolist() for _ in range(3)]
    loader._speechbrain_save(tmp_path / "loader.ckpt")
    rest = [batch.tolist() for batch in iterator]

    resumed = make_loader()
    resumed._speechbrain_load(tmp_path / "loader.ckpt", end_of_epoch=False)
    assert [batch.tolist() for batch in resumed] == rest
    assert len(seen) + len(rest) == len(resumed.batch_sampler)
