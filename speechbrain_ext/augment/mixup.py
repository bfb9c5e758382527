"""Waveform mixup of a batch with itself, for margin-mixup training.

Margin-mixup (Thienpondt and Demuynck, ICASSP 2023, arXiv 2304.03515)
makes speaker embeddings robust to a second talker without changing the
model: some utterances of a batch are mixed with another utterance of the
same batch, and the AAM-softmax target of a mixture is shared by both
speakers in proportion to their weight, each with its share of the margin
(see :meth:`~speechbrain_ext.losses.AAMSoftmaxLoss.forward`).

Authors
 * speechbrain_ext contributors
"""

import torch

__all__ = ["WaveformMixup"]


class WaveformMixup(torch.nn.Module):
    """Mixes rows of a batch: ``lam * x_i + (1 - lam) * x_partner(i)``.

    Each row is mixed with probability ``mix_prob``, with a partner drawn
    uniformly among the *other* rows and a weight ``lam`` drawn from
    Beta(``alpha``, ``alpha``) folded to [0.5, 1], so the row's own
    speaker always dominates its label; rows left alone get ``lam = 1``
    and themselves as partner. Lengths become the longer of the two.

    Arguments
    ---------
    mix_prob : float
        Probability that a row is mixed.
    alpha : float
        Beta distribution parameter of the mixing weight.

    Example
    -------
    >>> mixup = WaveformMixup(mix_prob=1.0)
    >>> wavs = torch.stack([torch.ones(4), -torch.ones(4)])
    >>> mixed, lens, partner, lam = mixup(wavs, torch.ones(2))
    >>> partner.tolist()  # each row mixed with the other one
    [1, 0]
    >>> bool((lam >= 0.5).all()), torch.allclose(mixed[0], 2 * lam[0] - 1)
    (True, True)
    """

    def __init__(self, mix_prob=0.5, alpha=1.0):
        super().__init__()
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob}")
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.mix_prob = float(mix_prob)
        self.alpha = float(alpha)

    def forward(self, waveforms, lengths):
        """Returns ``(mixed, lengths, partner index, lam)``, row-aligned."""
        n_rows = len(waveforms)
        device = waveforms.device
        rows = torch.arange(n_rows, device=device)
        if n_rows < 2:
            return waveforms, lengths, rows, torch.ones(n_rows, device=device)
        shift = torch.randint(1, n_rows, (n_rows,), device=device)
        mixed_rows = torch.rand(n_rows, device=device) < self.mix_prob
        partner = torch.where(mixed_rows, (rows + shift) % n_rows, rows)
        beta = torch.distributions.Beta(self.alpha, self.alpha)
        lam = beta.sample((n_rows,)).to(device)
        lam = torch.where(mixed_rows, torch.maximum(lam, 1 - lam), 1.0)
        weight = lam.to(waveforms.dtype).unsqueeze(1)
        mixed = weight * waveforms + (1 - weight) * waveforms[partner]
        return mixed, torch.maximum(lengths, lengths[partner]), partner, lam
