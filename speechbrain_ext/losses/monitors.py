"""Collapse monitors of a batch of embeddings, for training logs.

Self-supervised objectives without negatives can collapse: every input
mapped to one point (the spread vanishes) or to a low-dimensional subspace
(the rank drops). Logging both each epoch shows it long before the
validation EER does.

Authors
 * speechbrain_ext contributors
"""

import torch

from speechbrain_ext.losses.shapes import as_matrix, unit_norm

__all__ = ["HealthMonitor", "effective_rank", "embedding_health"]


def effective_rank(embeddings):
    """Effective rank (Roy and Vetterli, 2007) of a batch of row vectors.

    ``exp(H(s / sum(s)))`` of the singular values ``s`` of the centred
    rows: 1 when the batch varies along one direction, ``min(N, D)`` when
    it fills every direction equally.

    Arguments
    ---------
    embeddings : torch.Tensor
        ``[N, D]``.

    Returns
    -------
    torch.Tensor
        Scalar in [1, min(N, D)] (0 for a constant batch).

    Example
    -------
    >>> round(effective_rank(torch.eye(4)).item(), 3)  # 3 centred dims
    3.0
    >>> effective_rank(torch.ones(5, 3)).item()
    0.0
    """
    embeddings = embeddings.float()
    centred = embeddings - embeddings.mean(0, keepdim=True)
    singular = torch.linalg.svdvals(centred)
    total = singular.sum()
    # Rounding leaves a constant batch a tiny spread, not a direction.
    # Decided on the device (torch.where, xlogy's 0 log 0 = 0): a Python
    # branch on a GPU value would stall the training step.
    scale = embeddings.norm(dim=1).mean()
    share = singular / total.clamp_min(torch.finfo(total.dtype).tiny)
    rank = torch.exp(-torch.xlogy(share, share).sum())
    return torch.where(total <= 1e-5 * scale, rank.new_zeros(()), rank)


@torch.no_grad()
def embedding_health(embeddings):
    """Spread and effective rank of L2-normalised embeddings.

    Arguments
    ---------
    embeddings : torch.Tensor
        ``[N, D]`` or ``[N, 1, D]``.

    Returns
    -------
    dict
        ``"emb_std"``: standard deviation over the batch of each dimension
        of the unit-norm embeddings, averaged over dimensions (about
        ``1 / sqrt(D)`` for directions spread over the sphere, 0 for a
        collapsed batch); ``"emb_rank"``: :func:`effective_rank`. Both are
        detached scalar tensors.

    Example
    -------
    >>> health = embedding_health(torch.ones(8, 1, 4))
    >>> float(health["emb_std"]), float(health["emb_rank"])
    (0.0, 0.0)
    """
    # F.normalize's eps rather than NORM_EPS: no gradient flows here, and
    # it keeps the logged values comparable with those of earlier runs.
    unit = unit_norm(as_matrix(embeddings).float(), eps=1e-12)
    return {
        "emb_std": unit.std(dim=0).mean(),
        "emb_rank": effective_rank(unit),
    }


class HealthMonitor:
    """:func:`embedding_health` every ``interval`` calls, reused between.

    The SVD behind the effective rank is the costliest part of a CSC loss
    call on a GPU; the monitors only feed epoch averages, so a sample every
    few steps serves them as well. Between samples the last values are
    returned again (detached tensors, so the epoch average stays a mean
    over the sampled batches, each counted ``interval`` times).

    Arguments
    ---------
    interval : int
        Compute on calls 0, interval, 2 * interval, ... (1: every call).

    Example
    -------
    >>> monitor = HealthMonitor(interval=2)
    >>> first = monitor(torch.eye(4))["emb_rank"]
    >>> monitor(torch.ones(4, 4))["emb_rank"] is first  # reused
    True
    >>> float(monitor(torch.ones(4, 4))["emb_rank"])  # the third call
    0.0
    """

    def __init__(self, interval=10):
        if int(interval) != interval or interval < 1:
            raise ValueError(f"interval must be an int >= 1, got {interval!r}")
        self.interval = int(interval)
        self.calls = 0
        self.last = None

    def __call__(self, embeddings):
        """The monitors of ``embeddings`` (or the last sampled ones)."""
        if self.last is None or self.calls % self.interval == 0:
            self.last = embedding_health(embeddings)
        self.calls += 1
        return dict(self.last)
