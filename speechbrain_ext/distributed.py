"""All-gather helpers for contrastive losses and metrics under DDP.

SpeechBrain runs a recipe on N processes with ``torchrun
--nproc_per_node=N train.py hparams.yaml``: ``ddp_init_group`` creates the
process group, ``Brain`` wraps the modules in DistributedDataParallel (DDP)
and the training sampler in ``DistributedSamplerWrapper``, and
``run_on_main`` runs data preparation once (see
``speechbrain.utils.distributed``). Every rank then sees only its own part
of the batch. That is enough for losses that are means over samples
(AAM-softmax), but a contrastive loss compares every embedding with every
other one, so its negatives (and the covariance of CSC's estimate) should
come from the global batch. The functions here gather the other ranks'
rows; when no process group is initialised (or it has one process) they
return their input unchanged, so single-process code pays nothing.

Authors
 * speechbrain_ext contributors
"""

import torch

from speechbrain.utils.distributed import is_distributed_initialized

__all__ = [
    "gather_for_metrics",
    "gather_with_grad",
    "global_group_ids",
    "process_rank",
    "scale_gradient_by_world_size",
    "world_size",
]


def world_size():
    """Returns the number of processes of the default group (1 without one).

    Returns
    -------
    int
        ``torch.distributed.get_world_size()``, or 1 when not distributed.

    Example
    -------
    >>> world_size()
    1
    """
    if not is_distributed_initialized():
        return 1
    return torch.distributed.get_world_size()


def process_rank():
    """Returns this process's rank in the default group (0 without one).

    Unlike ``speechbrain.utils.distributed.get_rank``, which reads the
    launcher's environment variables and is None outside ``torchrun``, this
    asks the initialised process group and is always an int.

    Returns
    -------
    int
        ``torch.distributed.get_rank()``, or 0 when not distributed.

    Example
    -------
    >>> process_rank()
    0
    """
    if not is_distributed_initialized():
        return 0
    return torch.distributed.get_rank()


def _gather_shapes(tensor, caller):
    """Returns the shape of ``tensor`` on every rank, in rank order."""
    if tensor.dim() == 0:
        raise ValueError(f"{caller} needs at least one dimension, got a scalar")
    shapes = [None] * world_size()
    # Objects, not a tensor of sizes: a rank whose tensor has another number
    # of dimensions must get this error rather than a mismatched collective.
    torch.distributed.all_gather_object(shapes, tuple(tensor.shape))
    return shapes


def _all_gather(tensor):
    """Returns ``tensor`` from every rank (same shape on all), rank order."""
    tensor = tensor.detach().contiguous()
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    torch.distributed.all_gather(parts, tensor)
    return parts


def gather_with_grad(tensor):
    """Concatenates ``tensor`` from every rank along dim 0, keeping the graph.

    The result is ``[world_size * N, ...]`` in rank order. This rank's slice
    is ``tensor`` itself, so a loss computed on the result back-propagates
    into this rank's rows; the other ranks' slices are constants. Every
    rank must pass the same shape (``drop_last=True``, or whole P x K
    batches from ``PKSampler``, guarantee equal batch sizes); this is
    checked, and a mismatch raises ValueError on every rank instead of a
    hang or a corrupt gather.

    Gradient scaling. If every rank computes the same global loss L on the
    gathered batch, the gradient that rank r gets is the part of dL/dtheta
    that flows through its own rows, and these parts sum over ranks to
    dL/dtheta. DDP then *averages* the ranks' gradients, so the update is
    dL/dtheta / world_size: the global loss, but with a learning rate
    divided by the number of processes. The losses of this package
    (``gather_distributed=True``) therefore pass L through
    :func:`scale_gradient_by_world_size`, which keeps its value and
    multiplies its gradient by world_size, so that one DDP step equals
    the single-process step on the global batch (tests/test_distributed.py
    checks this on two processes). A caller using this function for its
    own loss must do the same.

    Arguments
    ---------
    tensor : torch.Tensor
        ``[N, ...]`` on this rank.

    Returns
    -------
    torch.Tensor
        ``[world_size * N, ...]``; ``tensor`` itself when not distributed.

    Raises
    ------
    ValueError
        If the shapes differ between ranks (the message lists them).

    Example
    -------
    >>> local = torch.ones(2, 3, requires_grad=True)
    >>> gather_with_grad(local) is local  # no process group here
    True
    """
    if world_size() == 1:
        return tensor
    shapes = _gather_shapes(tensor, "gather_with_grad")
    if len(set(shapes)) > 1:
        raise ValueError(
            "gather_with_grad needs the same shape on every rank (use "
            "drop_last=True or whole P x K batches), got shapes "
            + ", ".join(f"rank {r}: {s}" for r, s in enumerate(shapes))
        )
    parts = _all_gather(tensor)
    parts[process_rank()] = tensor
    return torch.cat(parts, dim=0)


def scale_gradient_by_world_size(loss):
    """Returns ``loss`` unchanged in value, its gradient times world_size.

    Compensates DDP's averaging of gradients for a loss that every rank
    computes on the same gathered global batch (see
    :func:`gather_with_grad`). The value is kept, rather than multiplying
    the loss by world_size, so that the logged loss is the global-batch
    loss whatever the number of processes.

    Arguments
    ---------
    loss : torch.Tensor
        The loss of the global batch, computed on every rank.

    Returns
    -------
    torch.Tensor
        ``loss + (world_size - 1) * (loss - loss.detach())``, whose value is
        exactly ``loss``; ``loss`` itself when not distributed.

    Example
    -------
    >>> loss = torch.tensor(2.0, requires_grad=True)
    >>> scale_gradient_by_world_size(loss) is loss  # no process group
    True
    """
    n_ranks = world_size()
    if n_ranks == 1:
        return loss
    return loss + (n_ranks - 1) * (loss - loss.detach())


def gather_for_metrics(tensor):
    """Concatenates ``tensor`` from every rank along dim 0, without gradient.

    For validation embeddings, labels or scores, where the ranks may hold
    different numbers of rows (even none): every rank pads its rows to the
    largest count, all of them are gathered and the padding is cut off
    again. Only dim 0 may differ. The result, in rank order, is the same on
    every rank. Note that a ``DistributedSampler`` repeats items to give
    every rank as many; such repeats come back twice and must be dropped
    by id if they matter.

    Arguments
    ---------
    tensor : torch.Tensor
        ``[N_r, ...]`` on rank r.

    Returns
    -------
    torch.Tensor
        ``[sum_r N_r, ...]``, detached; ``tensor`` itself when not
        distributed.

    Raises
    ------
    ValueError
        If the shapes differ between ranks beyond dim 0.

    Example
    -------
    >>> scores = torch.tensor([0.5, -0.2, 0.9])
    >>> gather_for_metrics(scores)  # no process group here
    tensor([ 0.5000, -0.2000,  0.9000])
    """
    if world_size() == 1:
        return tensor
    shapes = _gather_shapes(tensor, "gather_for_metrics")
    if len({shape[1:] for shape in shapes}) > 1:
        raise ValueError(
            "gather_for_metrics needs the same shape beyond dim 0 on every "
            "rank, got shapes "
            + ", ".join(f"rank {r}: {s}" for r, s in enumerate(shapes))
        )
    max_rows = max(shape[0] for shape in shapes)
    padded = tensor.new_zeros((max_rows, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor.detach()
    parts = _all_gather(padded)
    return torch.cat(
        [part[: shape[0]] for part, shape in zip(parts, shapes)], dim=0
    )


def global_group_ids(local_ids, n_local):
    """Offsets per-rank group ids by ``rank * n_local`` to keep them unique.

    Self-supervised tasks label the views of the i-th utterance of *their*
    batch with group id i in ``0 .. n_local - 1``, so every rank uses the
    same ids. After gathering, the views of different utterances on two
    ranks would then count as positives; shifting rank r's ids to
    ``r * n_local .. (r + 1) * n_local - 1`` keeps them apart.

    Arguments
    ---------
    local_ids : torch.Tensor
        Integer ids in ``[0, n_local)``, any shape.
    n_local : int
        The number of ids per rank (the same on every rank).

    Returns
    -------
    torch.Tensor
        ``local_ids + process_rank() * n_local``.

    Raises
    ------
    ValueError
        If an id is outside ``[0, n_local)``.

    Example
    -------
    >>> global_group_ids(torch.tensor([0, 1, 0, 1]), 2)  # rank 0
    tensor([0, 1, 0, 1])
    """
    if local_ids.numel() and (
        local_ids.min() < 0 or local_ids.max() >= n_local
    ):
        raise ValueError(
            f"group ids must be in [0, {n_local}), got ids from "
            f"{local_ids.min().item()} to {local_ids.max().item()}"
        )
    return local_ids + process_rank() * n_local
