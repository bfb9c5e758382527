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

import random

import numpy as np
import torch

from speechbrain.utils.distributed import is_distributed_initialized

__all__ = [
    "gather_for_metrics",
    "gather_with_grad",
    "global_group_ids",
    "lr_for_world_size",
    "process_rank",
    "scale_gradient_by_world_size",
    "seed_per_rank",
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


def seed_per_rank(seed):
    """Seeds Python's, NumPy's and torch's random streams with seed + rank.

    ``speechbrain.utils.seed.seed_everything`` (the hparams' ``__set_seed``)
    gives every DDP rank the same seed, which every rank needs while the
    model is built, so that all start from the same weights; afterwards it
    makes every rank draw the same random crops, interfering talkers,
    noises and rooms for its (different) items. Called once the model is
    built, this gives rank r the seed ``seed + r``. ``SB_GLOBAL_SEED``,
    from which SpeechBrain seeds its samplers, is left alone: the samplers
    must shuffle alike on every rank to split an epoch between them.
    Data loader workers draw their seeds from torch's stream, so they
    differ across ranks too.

    Arguments
    ---------
    seed : int
        The run's seed (the hparams' ``seed``).

    Returns
    -------
    int
        The seed of this rank, ``seed + process_rank()``.

    Example
    -------
    >>> seed_per_rank(1986)  # rank 0
    1986
    >>> first = torch.rand(2)
    >>> _ = seed_per_rank(1986)
    >>> torch.equal(torch.rand(2), first)
    True
    """
    seed = int(seed) + process_rank()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every CUDA device too
    return seed


def lr_for_world_size(lr, scale_with_world_size=True):
    """The learning rate of this run: ``lr`` times the number of processes.

    Under DDP every process trains on its own batch, so the global batch
    is ``world_size * batch_size`` items and an epoch has ``world_size``
    times fewer optimizer steps (with the gathered losses of this package,
    one DDP step equals the single-process step on the global batch; see
    :func:`gather_with_grad`). The linear scaling rule (Goyal et al. 2017,
    "Accurate, Large Minibatch SGD"; WeSpeaker multiplies by
    ``n_gpus * batch_size / 64``) keeps the progress per epoch: ``lr`` is
    the rate of one process and is multiplied by the world size. The
    recipes' hparams apply it to their initial and final rates
    (``lr_scale_with_world_size``).

    Arguments
    ---------
    lr : float
        The learning rate of one process.
    scale_with_world_size : bool
        False returns ``lr`` whatever the number of processes.

    Returns
    -------
    float
        ``lr * world_size()``, or ``lr``.

    Example
    -------
    >>> lr_for_world_size(0.001)  # one process
    0.001
    """
    if not scale_with_world_size:
        return lr
    return lr * world_size()


# Dimensions a gathered tensor may have: its shape travels in a fixed-size
# tensor, so that every rank joins the same collective whatever its shape.
MAX_GATHER_DIMS = 8


def _gather_shapes(tensor, caller):
    """Returns the shape of ``tensor`` on every rank, in rank order.

    The shapes travel as one small integer tensor (number of dimensions,
    then the sizes, padded to :data:`MAX_GATHER_DIMS`): one collective and
    one read to the host per call, where ``all_gather_object`` pickles and
    reads twice. A rank whose tensor has another number of dimensions still
    joins the same collective, so every rank can name the mismatch.
    """
    if tensor.dim() == 0:
        raise ValueError(f"{caller} needs at least one dimension, got a scalar")
    if tensor.dim() > MAX_GATHER_DIMS:
        raise ValueError(
            f"{caller} supports at most {MAX_GATHER_DIMS} dimensions, got "
            f"{tuple(tensor.shape)}"
        )
    meta = [tensor.dim(), *tensor.shape]
    meta += [0] * (MAX_GATHER_DIMS + 1 - len(meta))
    rows = torch.stack(
        _all_gather(torch.tensor(meta, device=tensor.device))
    ).tolist()
    return [tuple(row[1 : 1 + row[0]]) for row in rows]


def _all_gather(tensor):
    """Returns ``tensor`` from every rank (same shape on all), rank order."""
    tensor = tensor.detach().contiguous()
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    torch.distributed.all_gather(parts, tensor)
    return parts


def _gather_rows(tensor, caller):
    """Returns every rank's rows of ``tensor`` (rank order), detached.

    Ranks may hold different numbers of rows (dim 0), even none: each pads
    its rows to the largest count, the padded tensors are gathered and
    every part is cut back to its rank's rows (the padding is the mask).
    """
    shapes = _gather_shapes(tensor, caller)
    if len({shape[1:] for shape in shapes}) > 1:
        raise ValueError(
            f"{caller} needs the same shape beyond dim 0 on every rank, got "
            "shapes "
            + ", ".join(f"rank {r}: {s}" for r, s in enumerate(shapes))
        )
    max_rows = max(shape[0] for shape in shapes)
    padded = tensor.new_zeros((max_rows, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor.detach()
    parts = _all_gather(padded)
    return [part[: shape[0]] for part, shape in zip(parts, shapes)]


def gather_with_grad(tensor):
    """Concatenates ``tensor`` from every rank along dim 0, keeping the graph.

    The result is ``[N_0 + N_1 + ..., ...]`` in rank order. This rank's
    slice is ``tensor`` itself, so a loss computed on the result
    back-propagates into this rank's rows; the other ranks' slices are
    constants.

    Ranks may hold different numbers of rows N_r. Whole P x K batches
    (``PKSampler``) or ``drop_last=True`` give every rank the same batch
    size, but an item whose audio cannot be read is dropped from its
    batch (:func:`speechbrain_ext.data.batches.collate_readable`), so one
    unreadable file leaves its rank a row short. The rows are then
    padded to the largest N_r, gathered, and the padding is cut off
    again, so the result holds every readable row of the global batch
    once and nothing else: a loss on it is exactly the loss that one
    process would compute on the global batch without the unreadable
    items. (Replacing the item instead, say by another utterance of the
    same speaker, would keep the sizes but count that utterance twice,
    and a self-supervised batch has no speaker to draw from.) Terms that
    stay local (AAM-softmax, CSC's separation error) are means over the
    rank's own rows, which DDP averages per rank: a rank that lost one of
    64 items gives its 63 rows 64/63 of their weight (1.6 % more), as in
    any DDP training on unequal batches; this is left as is. Only dim 0
    may differ; any other mismatch raises ValueError on every rank
    instead of a hang or a corrupt gather.

    Gradient scaling. If every rank computes the same global loss L on the
    gathered batch, the gradient that rank r gets is the part of dL/dtheta
    that flows through its own rows, and these parts sum over ranks to
    dL/dtheta, whatever the N_r. DDP then *averages* the ranks' gradients,
    so the update is dL/dtheta / world_size: the global loss, but with a
    learning rate divided by the number of processes. The losses of this
    package (``gather_distributed=True``) therefore pass L through
    :func:`scale_gradient_by_world_size`, which keeps its value and
    multiplies its gradient by world_size, so that one DDP step equals
    the single-process step on the global batch (tests/test_distributed.py
    and tests/test_ddp_faults.py check this on two processes, with equal
    and unequal N_r). A caller using this function for its own loss must
    do the same.

    Arguments
    ---------
    tensor : torch.Tensor
        ``[N_r, ...]`` on rank r.

    Returns
    -------
    torch.Tensor
        ``[sum_r N_r, ...]``; ``tensor`` itself when not distributed.

    Raises
    ------
    ValueError
        If the shapes differ between ranks beyond dim 0 (the message lists
        them).

    Example
    -------
    >>> local = torch.ones(2, 3, requires_grad=True)
    >>> gather_with_grad(local) is local  # no process group here
    True
    """
    if world_size() == 1:
        return tensor
    parts = _gather_rows(tensor, "gather_with_grad")
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
    return torch.cat(_gather_rows(tensor, "gather_for_metrics"), dim=0)


def global_group_ids(local_ids, n_local):
    """Makes per-rank group ids unique across ranks: ``id * world + rank``.

    Self-supervised tasks label the views of the i-th utterance of *their*
    batch with group id i in ``0 .. n_local - 1``, so every rank uses the
    same ids. After gathering, the views of different utterances on two
    ranks would then count as positives. Interleaving the ranks (rank r's
    id i becomes ``i * world_size + r``) keeps them apart even when the
    ranks hold different numbers of utterances (an unreadable item
    dropped from one rank's batch), where an offset of ``r * n_local``
    would need the same ``n_local`` on every rank.

    Arguments
    ---------
    local_ids : torch.Tensor
        Integer ids in ``[0, n_local)``, any shape.
    n_local : int
        The number of ids of this rank (it may differ between ranks).

    Returns
    -------
    torch.Tensor
        ``local_ids * world_size() + process_rank()``.

    Raises
    ------
    ValueError
        If an id is outside ``[0, n_local)``.

    Example
    -------
    >>> global_group_ids(torch.tensor([0, 1, 0, 1]), 2)  # rank 0 of 1
    tensor([0, 1, 0, 1])
    """
    if local_ids.numel() and (
        local_ids.min() < 0 or local_ids.max() >= n_local
    ):
        raise ValueError(
            f"group ids must be in [0, {n_local}), got ids from "
            f"{local_ids.min().item()} to {local_ids.max().item()}"
        )
    return local_ids * world_size() + process_rank()
