"""Speaker-balanced P x K batch sampling for contrastive objectives.

A shuffled loader over thousands of speakers rarely puts two utterances of
one speaker in a batch, which leaves a supervised contrastive loss without
positives. :class:`PKSampler` builds every batch from P distinct speakers
with K utterances each.

Authors
 * speechbrain_ext contributors
"""

import numpy as np
import torch

from speechbrain.utils.logger import get_logger

__all__ = ["PKSampler"]

logger = get_logger(__name__)

SMALL_SPEAKER_MODES = ("replace", "drop")
_SMALL_SPEAKER_ACTION = {
    "replace": "topped up with replacement",
    "drop": "dropped",
}


class PKSampler(torch.utils.data.Sampler):
    """Batch sampler yielding P speakers x K utterances per batch.

    Each batch is a list of ``n_speakers * n_per_speaker`` dataset indices:
    P distinct speakers, K utterances of each, laid out speaker by speaker.
    An epoch is built as follows, from a generator seeded with
    ``(seed, epoch)``:

    1. Each speaker's utterances are shuffled and cut into groups of K;
       the last (n mod K) utterances are left out for this epoch.
       A speaker with fewer than K utterances ("small") gives one group of
       all its utterances topped up by drawing from them with replacement
       (``small_speakers="replace"``) or is not used (``"drop"``).
    2. With g_s groups for speaker s, the epoch has B batches, the largest
       B with sum_s min(g_s, B) >= P * B; this depends on the labels only,
       so ``len(sampler)`` is the same for every epoch. A speaker with more
       than B groups keeps B random ones for this epoch.
    3. The (fewer than P) groups beyond P * B are dropped at random,
       taking a speaker's first group only when no spare group is left,
       so every speaker is visited each epoch unless there are more
       speakers than the P * B places.
    4. The groups are laid end to end speaker by speaker, in a random
       speaker order, and group j goes to batch j mod B: a speaker's at
       most B consecutive groups land in distinct batches. Batches are
       then shuffled.

    Under DDP, SpeechBrain's Brain wraps the sampler in
    ``DistributedSamplerWrapper``, which deals whole batches to ranks; the
    batches of one epoch share no utterance (except the repeats inside a
    small speaker's group), so ranks never see the same utterance at the
    same step. The wrapper pads the epoch by repeating batches when the
    ranks do not divide it, and needs at least two batches per rank.
    Without DDP, Brain does not call ``set_epoch`` on a batch sampler:
    call it from the recipe (or set ``brain.train_sampler``).

    Arguments
    ---------
    labels : list
        The speaker of each dataset index (any hashable).
    n_speakers : int
        P, distinct speakers per batch.
    n_per_speaker : int
        K, utterances per speaker per batch.
    seed : int
        Non-negative base seed; epoch e is built from (seed, e).
    small_speakers : str
        "replace" or "drop": what to do with speakers that have fewer than
        K utterances.
    epoch : int
        The epoch to start at.

    Attributes
    ----------
    n_small_speakers : int
        Number of speakers with fewer than K utterances (also logged).
    n_usable_speakers : int
        Number of speakers that can appear in a batch.

    Example
    -------
    >>> labels = ["a", "a", "b", "b", "b", "c", "c", "c", "c", "d"]
    >>> sampler = PKSampler(labels, n_speakers=2, n_per_speaker=2, seed=0)
    >>> len(sampler), sampler.n_small_speakers
    (2, 1)
    >>> batches = list(sampler)
    >>> [len({labels[i] for i in batch}) for batch in batches]
    [2, 2]
    >>> sampler.set_epoch(1)
    >>> list(sampler) != batches
    True
    """

    def __init__(
        self,
        labels,
        n_speakers,
        n_per_speaker,
        seed=1234,
        small_speakers="replace",
        epoch=0,
    ):
        if small_speakers not in SMALL_SPEAKER_MODES:
            raise ValueError(
                f"small_speakers must be one of {SMALL_SPEAKER_MODES}, "
                f"got {small_speakers!r}"
            )
        if n_speakers < 1 or n_per_speaker < 1:
            raise ValueError(
                "n_speakers and n_per_speaker must be >= 1, got "
                f"{n_speakers} and {n_per_speaker}"
            )
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.n_speakers = n_speakers
        self.n_per_speaker = n_per_speaker
        self.seed = int(seed)
        self.small_speakers = small_speakers
        self.epoch = epoch

        utterances = {}
        for index, label in enumerate(labels):
            utterances.setdefault(label, []).append(index)
        small = [
            spk for spk, utts in utterances.items() if len(utts) < n_per_speaker
        ]
        self.n_small_speakers = len(small)
        n_all_speakers = len(utterances)
        if small_speakers == "drop":
            for spk in small:
                del utterances[spk]
        self._utterances = [np.array(u) for u in utterances.values()]
        self.n_usable_speakers = len(self._utterances)
        if self.n_usable_speakers < n_speakers:
            raise ValueError(
                f"PKSampler needs at least n_speakers={n_speakers} speakers "
                f"but only {self.n_usable_speakers} are usable: "
                f"{len(labels)} labels hold {n_all_speakers} speakers, "
                f"{len(small)} of them with fewer than "
                f"n_per_speaker={n_per_speaker} utterances "
                f"(small_speakers={small_speakers!r})"
            )
        self._n_groups = np.array(
            [max(len(u) // n_per_speaker, 1) for u in self._utterances]
        )
        self._n_batches = _max_batches(self._n_groups, n_speakers)
        logger.info(
            f"PKSampler: {self.n_usable_speakers} speakers, "
            f"{self.n_small_speakers} with fewer than {n_per_speaker} "
            f"utterances ({_SMALL_SPEAKER_ACTION[small_speakers]}); "
            f"{self._n_batches} batches of "
            f"{n_speakers} x {n_per_speaker} per epoch"
        )

    @classmethod
    def from_dataset(cls, dataset, key="spk_id", **kwargs):
        """Builds the sampler from a dataset's speaker key.

        Arguments
        ---------
        dataset : speechbrain.dataio.dataset.DynamicItemDataset
            The training set; only ``key`` is computed, no audio is read
            if ``key`` is a static (manifest) field.
        key : str
            The key holding the speaker of each example.
        **kwargs : dict
            Passed to ``PKSampler``.

        Returns
        -------
        PKSampler
            The sampler over the dataset's indices.

        Example
        -------
        >>> from speechbrain.dataio.dataset import DynamicItemDataset
        >>> data = {f"u{i}": {"spk_id": i % 3} for i in range(9)}
        >>> dataset = DynamicItemDataset(data)
        >>> sampler = PKSampler.from_dataset(
        ...     dataset, n_speakers=3, n_per_speaker=3
        ... )
        >>> sorted(next(iter(sampler)))
        [0, 1, 2, 3, 4, 5, 6, 7, 8]
        """
        with dataset.output_keys_as([key]):
            labels = [dataset[i][key] for i in range(len(dataset))]
        return cls(labels, **kwargs)

    def set_epoch(self, epoch):
        """Selects the epoch whose batches ``__iter__`` yields.

        Arguments
        ---------
        epoch : int
            The epoch number.
        """
        self.epoch = epoch

    def __len__(self):
        return self._n_batches

    def __iter__(self):
        return iter(self._epoch_batches(self.epoch))

    def _epoch_batches(self, epoch):
        """Returns the batches of one epoch as lists of dataset indices."""
        rng = np.random.default_rng([self.seed, epoch])
        n_batches, k = self._n_batches, self.n_per_speaker
        groups, is_first_group = [], []
        for speaker in rng.permutation(self.n_usable_speakers):
            utterances = rng.permutation(self._utterances[speaker])
            if len(utterances) < k:
                extra = rng.choice(utterances, size=k - len(utterances))
                utterances = np.concatenate([utterances, extra])
            n_groups = min(len(utterances) // k, n_batches)
            groups.append(utterances[: n_groups * k].reshape(n_groups, k))
            is_first_group.extend([True] + [False] * (n_groups - 1))
        groups = np.concatenate(groups)

        n_surplus = len(groups) - n_batches * self.n_speakers
        # Random priorities in [0, 1), +1 for each speaker's first group,
        # so no speaker loses its last group while others have spares.
        priority = rng.random(len(groups)) + np.array(is_first_group)
        drop_order = np.argsort(priority)
        keep = np.sort(drop_order[n_surplus:])
        # Group j goes to batch j mod B: row-major [P, B, K] then swap axes.
        batches = groups[keep].reshape(self.n_speakers, n_batches, k)
        batches = batches.transpose(1, 0, 2)[rng.permutation(n_batches)]
        return batches.reshape(n_batches, -1).tolist()


def _max_batches(n_groups, n_speakers):
    """Largest B with sum_s min(n_groups[s], B) >= n_speakers * B.

    sum_s min(g_s, B) - P * B is concave in B and 0 at B = 0, so the
    admissible B form an interval [0, B_max], found by bisection.
    """
    low, high = 0, int(n_groups.sum()) // n_speakers
    while low < high:
        mid = (low + high + 1) // 2
        if np.minimum(n_groups, mid).sum() >= n_speakers * mid:
            low = mid
        else:
            high = mid - 1
    return low
