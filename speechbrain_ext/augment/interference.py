"""Interfering talkers and multi-view interfered batches for CSC.

Contrastive separative coding (docs/csc.md) learns from several
views of one clean target, each corrupted by a different interfering
condition: another talker at a random SIR, noise, reverberation. Because
the mixtures are made here, the clean target is known and is returned with
the views as the separation head's reference.

Example
-------
>>> import torch
>>> views = InterferedViews([InterferingTalker(sir_low=5, sir_high=5)])
>>> mixed, lens, clean = views(torch.randn(4, 1600), torch.ones(4))
>>> mixed.shape, lens.shape, clean.shape
(torch.Size([8, 1600]), torch.Size([8]), torch.Size([8, 1600]))
>>> views.group_ids(4)
tensor([0, 1, 2, 3, 0, 1, 2, 3])
"""

import math

import torch

from speechbrain.utils.callchains import lengths_arg_exists
from speechbrain_ext.augment.bank import read_wav_csv
from speechbrain_ext.augment.mixing import mix_in_region, relative_to_absolute
from speechbrain_ext.data.audio import AudioError, audio_info, load_audio

__all__ = ["InterferedViews", "InterferingTalker"]


class InterferingTalker(torch.nn.Module):
    """Adds another utterance to each utterance at a random SIR.

    The interferer covers a random fraction, drawn uniformly in
    [overlap_low, overlap_high], of the target's valid samples, starting at
    a random offset (an interferer shorter than that span is repeated).
    The SIR, drawn uniformly in [sir_low, sir_high] dB per utterance, is
    exact over the overlapped region only: target and interferer powers are
    both averaged over the samples where the two overlap, the usual
    convention for partially overlapped speech. Padding is left untouched.

    Interferers come from one of two sources:

    * ``"batch"``: utterance ``i`` gets utterance ``(i + s_i) % batch``
      with ``s_i`` drawn uniformly in [1, batch - 1] for every row, so
      never itself, and independently of the other rows. In a labelled
      batch (e.g. P x K sampling) the interferer can be the same
      speaker; CSC is unlabelled, so this is accepted. A batch of one
      has no other utterance and is returned unchanged.
    * a CSV path (SpeechBrain format, ID, duration, wav): for every call,
      random rows are picked and a random segment of each file is read
      with :func:`speechbrain_ext.data.audio.load_audio`. Nothing is kept in
      memory, so the corpus can be as large as the training set; the cost
      is one file read per utterance and step. A row may hold the target's
      own speaker.

    Arguments
    ---------
    sir_low : float
        Lowest signal-to-interference ratio in dB.
    sir_high : float
        Highest signal-to-interference ratio in dB.
    overlap_low : float
        Smallest fraction of the target covered by the interferer, in (0, 1].
    overlap_high : float
        Largest fraction of the target covered by the interferer, in (0, 1].
    source : str
        "batch", or the path of a CSV of interfering utterances.
    replacements : dict, optional
        Values of ``$name`` placeholders in the CSV.
    sample_rate : int
        Rate of the waveforms; CSV files are resampled to it.

    Example
    -------
    >>> target = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, -2.0, 0.0, 0.0]])
    >>> talker = InterferingTalker(sir_low=0.0, sir_high=0.0)
    >>> talker(target, torch.tensor([1.0, 0.5]))
    tensor([[2., 0., 2., 0.],
            [4., 0., 0., 0.]])
    """

    def __init__(
        self,
        sir_low=0.0,
        sir_high=10.0,
        overlap_low=1.0,
        overlap_high=1.0,
        source="batch",
        replacements=None,
        sample_rate=16000,
    ):
        super().__init__()
        if sir_low > sir_high:
            raise ValueError(f"sir_low {sir_low} > sir_high {sir_high}")
        if not 0.0 < overlap_low <= overlap_high <= 1.0:
            raise ValueError(
                "need 0 < overlap_low <= overlap_high <= 1, got "
                f"{overlap_low} and {overlap_high}"
            )
        self.sir_low = sir_low
        self.sir_high = sir_high
        self.overlap_low = overlap_low
        self.overlap_high = overlap_high
        self.source = source
        self.replacements = replacements
        self.sample_rate = sample_rate
        self._corpus = None

    def forward(self, waveforms, lengths):
        """Adds an interfering talker to each utterance of a padded batch.

        Arguments
        ---------
        waveforms : torch.Tensor
            Target waveforms [batch, time].
        lengths : torch.Tensor
            Relative lengths [batch].

        Returns
        -------
        torch.Tensor
            Mixtures [batch, time].
        """
        if waveforms.dim() != 2:
            raise ValueError(
                f"InterferingTalker expects [batch, time], got "
                f"{waveforms.shape}"
            )
        batch, n_samples = waveforms.shape
        device = waveforms.device
        valid = relative_to_absolute(lengths.to(device), n_samples)
        if self.source == "batch":
            if batch < 2:
                return waveforms
            # A shift per row: each row draws its own interferer, never
            # itself, so two views of one target rarely share a talker.
            shifts = torch.randint(1, batch, (batch,), device=device)
            source = (torch.arange(batch, device=device) + shifts) % batch
            interferers = waveforms[source]
            interferer_lens = valid[source]
        else:
            interferers, interferer_lens = self._read_corpus(batch, n_samples)
            interferers = interferers.to(device, waveforms.dtype)
            interferer_lens = interferer_lens.to(device)

        placed, overlap = self._place(interferers, interferer_lens, valid)
        sir = torch.rand(batch, device=device)
        sir = self.sir_low + (self.sir_high - self.sir_low) * sir
        return mix_in_region(waveforms, placed, sir, overlap)

    def _place(self, interferers, interferer_lens, target_lens):
        """Shifts each interferer to a random span of its target.

        Returns the placed interferers [batch, time] (zero outside their
        span) and the boolean mask of the span.
        """
        batch, n_samples = interferers.shape
        device = interferers.device
        fraction = torch.rand(batch, device=device)
        fraction = (
            self.overlap_low + (self.overlap_high - self.overlap_low) * fraction
        )
        span = torch.round(fraction * target_lens).long()
        slack = target_lens - span
        offset = (torch.rand(batch, device=device) * (slack + 1)).long()
        offset = offset.clamp(max=slack)

        steps = torch.arange(n_samples, device=device)
        relative = steps - offset.unsqueeze(1)
        overlap = (relative >= 0) & (relative < span.unsqueeze(1))
        # Repeat interferers shorter than their span.
        period = interferer_lens.clamp(min=1).unsqueeze(1)
        placed = interferers.gather(1, relative.remainder(period))
        overlap = overlap & (interferer_lens > 0).unsqueeze(1)
        return placed * overlap, overlap

    def _read_corpus(self, batch, n_samples):
        """Reads ``batch`` random segments of random CSV rows (CPU)."""
        if self._corpus is None:
            self._corpus = read_wav_csv(self.source, self.replacements)
        rows = torch.randint(len(self._corpus), (batch,))
        starts = torch.rand(batch)
        interferers = torch.zeros(batch, n_samples)
        lens = torch.zeros(batch, dtype=torch.long)
        for item, (row, start) in enumerate(zip(rows.tolist(), starts)):
            where, path = self._corpus[row]
            try:
                info = audio_info(path)
                needed = math.ceil(
                    n_samples * info.sample_rate / self.sample_rate
                )
                first = int(start * max(info.num_frames - needed, 0))
                segment = load_audio(
                    path,
                    start=first,
                    stop=min(first + needed, info.num_frames),
                    sample_rate=self.sample_rate,
                )[:n_samples]
            except AudioError as err:
                raise AudioError(f"{where}: {err}") from err
            interferers[item, : len(segment)] = segment
            lens[item] = len(segment)
        return interferers, lens


class InterferedViews(torch.nn.Module):
    """Builds several independently interfered views of each utterance.

    Each view passes clean audio through the ``interferences`` in list
    order; each one is applied to each utterance with its own probability
    and draws its own random condition (interferer, SIR/SNR, RIR), so the
    views of one target differ. With probabilities below 1 a view can come
    out clean. Order matters: an :class:`InterferingTalker` placed after a
    noise adds already-noisy batch rows, and a reverberator placed last
    reverberates the whole mixture (one room for target and interference).

    With ``segments`` S >= 2 each crop is first cut into S consecutive
    segments and every segment gives ``n_views`` views, so the views of a
    target share its speaker and channel but not its words (a model cannot
    match them by what is said). Each segment position is interfered as
    its own batch, so an interfering talker drawn from the batch is always
    another target, never another segment of the same one.

    The output rows follow SpeechBrain's ``Augmenter`` layout,
    ``[view 0 of rows 0..B-1; view 1 of rows 0..B-1; ...]``, with the
    views of segment 0 first.

    Arguments
    ---------
    interferences : list of torch.nn.Module
        Augmenters called as ``module(waveforms, lengths)`` (or
        ``module(waveforms)``), returning waveforms of the same shape, e.g.
        ``[InterferingTalker(), AddNoiseBank(...), AddReverbBank(...)]``.
    n_views : int
        Interfered views per segment (per crop when ``segments`` is 1).
    probabilities : list of float, optional
        Probability of applying each interference to an utterance; all 1
        if None.
    segments : int
        Consecutive segments S each crop is cut into (1: the whole crop).

    Attributes
    ----------
    views_per_target : int
        ``segments * n_views``, the views each target gets.

    Example
    -------
    >>> clean = torch.arange(12.0).reshape(2, 6)
    >>> halves = InterferedViews([], n_views=1, segments=2)
    >>> mixed, lens, target = halves(clean, torch.ones(2))
    >>> mixed
    tensor([[ 0.,  1.,  2.],
            [ 6.,  7.,  8.],
            [ 3.,  4.,  5.],
            [ 9., 10., 11.]])
    >>> halves.group_ids(2)
    tensor([0, 1, 0, 1])
    """

    def __init__(
        self, interferences, n_views=2, probabilities=None, segments=1
    ):
        super().__init__()
        if n_views < 1:
            raise ValueError(f"n_views must be at least 1, got {n_views}")
        if segments < 1:
            raise ValueError(f"segments must be at least 1, got {segments}")
        if probabilities is None:
            probabilities = [1.0] * len(interferences)
        if len(probabilities) != len(interferences):
            raise ValueError(
                f"{len(probabilities)} probabilities given for "
                f"{len(interferences)} interferences"
            )
        if any(not 0.0 <= p <= 1.0 for p in probabilities):
            raise ValueError(
                f"probabilities must be in [0, 1]: {probabilities}"
            )
        self.interferences = torch.nn.ModuleList(interferences)
        self.n_views = n_views
        self.segments = segments
        self.probabilities = list(probabilities)

    @property
    def views_per_target(self):
        """Views of each target: ``segments * n_views``."""
        return self.segments * self.n_views

    def forward(self, waveforms, lengths):
        """Returns the interfered views, their lengths and their clean audio.

        Arguments
        ---------
        waveforms : torch.Tensor
            Clean waveforms [batch, time].
        lengths : torch.Tensor
            Relative lengths [batch].

        Returns
        -------
        views : torch.Tensor
            [views_per_target * batch, time / segments] interfered
            waveforms, view-major.
        view_lens : torch.Tensor
            [views_per_target * batch] relative lengths of the views.
        clean : torch.Tensor
            The clean audio of every view row, same shape as ``views``:
            the separation target.
        """
        views, view_lens, clean = [], [], []
        for part, part_lens in self._segments(waveforms, lengths):
            for _ in range(self.n_views):
                views.append(self._interfere(part, part_lens))
                view_lens.append(part_lens)
                clean.append(part)
        return torch.cat(views), torch.cat(view_lens), torch.cat(clean)

    def group_ids(self, batch_size, device=None):
        """Source row of each view: views of one target share an id.

        Arguments
        ---------
        batch_size : int
            Number of clean utterances B.
        device : torch.device, optional
            Device of the result.

        Returns
        -------
        torch.Tensor
            Long tensor [views_per_target * batch_size].
        """
        return torch.arange(batch_size, device=device).repeat(
            self.views_per_target
        )

    def replicate_labels(self, labels):
        """Each utterance's label for each of its view rows.

        Arguments
        ---------
        labels : torch.Tensor
            ``[batch]`` or ``[batch, 1]`` labels.

        Returns
        -------
        torch.Tensor
            The labels repeated in the views' row order.

        Example
        -------
        >>> InterferedViews([], n_views=3).replicate_labels(
        ...     torch.tensor([4, 7])
        ... )
        tensor([4, 7, 4, 7, 4, 7])
        """
        return labels.repeat(self.views_per_target, *labels.shape[1:])

    def _segments(self, waveforms, lengths):
        """``(segment, relative lengths)`` for each of the S positions."""
        if self.segments == 1:
            return [(waveforms, lengths)]
        n_samples = waveforms.shape[1]
        length = n_samples // self.segments
        if length == 0:
            raise ValueError(
                f"cannot cut {n_samples} samples into {self.segments} segments"
            )
        valid = lengths * n_samples
        parts = []
        for index in range(self.segments):
            offset = index * length
            # Training crops are full (all 1); a segment is never empty.
            part_lens = ((valid - offset) / length).clamp(
                min=1.0 / length, max=1.0
            )
            parts.append((waveforms[:, offset : offset + length], part_lens))
        return parts

    def _interfere(self, waveforms, lengths):
        """One view: every interference applied with its probability."""
        view = waveforms
        for module, probability in zip(self.interferences, self.probabilities):
            if probability == 0.0:
                continue
            if lengths_arg_exists(module.forward):
                changed = module(view, lengths=lengths)
            else:
                changed = module(view)
            if isinstance(changed, tuple):
                changed = changed[0]
            if changed.shape != view.shape:
                raise ValueError(
                    f"{type(module).__name__} changed the shape from "
                    f"{tuple(view.shape)} to {tuple(changed.shape)}; "
                    "InterferedViews needs shape-preserving interferences"
                )
            if probability < 1.0:
                chosen = torch.rand(len(view), device=view.device) < probability
                changed = torch.where(chosen.unsqueeze(1), changed, view)
            view = changed
        return view
