"""Mixing a target with an interference at an exact power ratio.

Every additive augmenter of this package (noise, interfering talker) goes
through :func:`mix_in_region`, so that "SNR" and "SIR" mean the same thing
everywhere: the ratio, in dB, of the mean power of the target to the mean
power of the scaled interference, both measured over the same samples.
The ratio asked for is the ratio obtained, to float32 rounding.

Example
-------
>>> import torch
>>> target = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
>>> noise = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
>>> mix_at_ratio(target, noise, torch.tensor([20.0]))
tensor([[ 1.1000, -0.9000,  1.1000, -0.9000]])
"""

import torch

from speechbrain.dataio.dataio import length_to_mask

__all__ = ["mix_at_ratio", "mix_in_region", "relative_to_absolute"]


def relative_to_absolute(lengths, max_len):
    """Turns SpeechBrain's relative lengths into sample counts.

    Arguments
    ---------
    lengths : torch.Tensor
        Relative lengths in [0, 1], shape [batch], as produced by
        SpeechBrain's padded batches (1.0 is the longest item).
    max_len : int
        Number of samples of the padded batch.

    Returns
    -------
    torch.Tensor
        Long tensor [batch]: valid samples of each item.

    Example
    -------
    >>> relative_to_absolute(torch.tensor([1.0, 0.5, 0.26]), 8)
    tensor([8, 4, 2])
    """
    return torch.round(lengths * max_len).long().clamp(0, max_len)


def mix_in_region(target, interference, ratio_db, region):
    """Adds ``interference`` so that the power ratio over ``region`` is exact.

    The gain ``g`` of each item solves
    ``10 * log10(P_target / P_{g * interference}) == ratio_db``, where both
    mean powers are taken over the samples where ``region`` is True. Outside
    the region the interference is zeroed, so padding stays as it was.

    Arguments
    ---------
    target : torch.Tensor
        Waveforms [batch, time].
    interference : torch.Tensor
        Waveforms [batch, time] to add, at any level.
    ratio_db : torch.Tensor
        Target-to-interference ratio in dB, shape [batch].
    region : torch.Tensor
        Boolean mask [batch, time] of the samples that are mixed and over
        which the ratio is measured.

    Returns
    -------
    torch.Tensor
        ``target + g * interference * region``, shape [batch, time]. An
        item whose interference or target is silent over the region (where
        the ratio is undefined) is returned unchanged, never NaN.

    Example
    -------
    >>> target = torch.ones(1, 4)
    >>> interference = torch.tensor([[5.0, 1.0, 1.0, 9.0]])
    >>> region = torch.tensor([[False, True, True, False]])
    >>> mix_in_region(target, interference, torch.tensor([0.0]), region)
    tensor([[1., 2., 2., 1.]])
    """
    if target.shape != interference.shape or target.dim() != 2:
        raise ValueError(
            "target and interference must both be [batch, time], got "
            f"{tuple(target.shape)} and {tuple(interference.shape)}"
        )
    region = region.to(target.dtype)
    # Sums rather than means: the sample count cancels in the ratio.
    target_energy = (target.float() ** 2 * region).sum(dim=1)
    interference = interference * region
    interference_energy = (interference.float() ** 2).sum(dim=1)
    ratio = torch.pow(10.0, ratio_db.float().to(target.device) / 10.0)
    audible = (target_energy > 0) & (interference_energy > 0)
    # Silent items get energies of 1 before the division so that neither
    # the forward nor the backward pass sees 0/0; their gain is then 0.
    one = torch.ones_like(target_energy)
    gain = torch.sqrt(
        torch.where(audible, target_energy, one)
        / (ratio * torch.where(audible, interference_energy, one))
    )
    gain = torch.where(audible, gain, torch.zeros_like(gain))
    return target + gain.to(target.dtype).unsqueeze(1) * interference


def mix_at_ratio(
    target, interference, ratio_db, target_lens=None, interference_lens=None
):
    """Adds ``interference`` to ``target`` at an exact ratio in dB.

    The ratio is measured over the samples valid in both signals: the first
    ``min(target_len, interference_len)`` samples of each item. Samples past
    the target's length (padding) are left untouched, and the interference
    past its own length is ignored.

    Arguments
    ---------
    target : torch.Tensor
        Waveforms [batch, time].
    interference : torch.Tensor
        Waveforms [batch, time], e.g. noise or another utterance.
    ratio_db : torch.Tensor
        SNR or SIR in dB, shape [batch].
    target_lens : torch.Tensor, optional
        Relative lengths [batch] of the targets (SpeechBrain convention:
        valid samples = ``round(length * time)``). None means all valid.
    interference_lens : torch.Tensor, optional
        Relative lengths [batch] of the interferences. None means all valid.

    Returns
    -------
    torch.Tensor
        The mixtures [batch, time]; items whose target or interference is
        silent over the valid samples are returned unchanged.

    Example
    -------
    >>> target = torch.tensor([[2.0, 2.0, 0.0, 0.0]])
    >>> noise = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    >>> mix_at_ratio(target, noise, torch.tensor([0.0]), torch.tensor([0.5]))
    tensor([[4., 0., 0., 0.]])
    """
    batch, max_len = target.shape[0], target.shape[-1]
    valid = torch.full((batch,), max_len, device=target.device)
    if target_lens is not None:
        valid = relative_to_absolute(target_lens.to(target.device), max_len)
    if interference_lens is not None:
        valid = torch.minimum(
            valid,
            relative_to_absolute(interference_lens.to(target.device), max_len),
        )
    region = length_to_mask(valid, max_len, dtype=torch.bool)
    return mix_in_region(target, interference, ratio_db, region)
