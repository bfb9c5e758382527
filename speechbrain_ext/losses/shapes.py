"""Shape and normalisation helpers shared by the objectives and lobes.

Every objective of this package takes embeddings ``[N, D]`` or
SpeechBrain's ``[N, 1, D]``; these helpers bring them to the ``[N, D]``
rows the mathematics is written for and put them on the unit sphere, so
that each objective handles the layouts, and near-zero rows, alike.

Authors
 * speechbrain_ext contributors
"""

import torch.nn.functional as F

__all__ = ["NORM_EPS", "as_matrix", "flatten_batch", "unit_norm"]

# F.normalize's default eps (1e-12) gives a (near-)zero row a gradient of
# ~1e12, infinite once cast back to float16; 1e-4 bounds it by 1e4 and is far
# below the norm of any trained embedding.
NORM_EPS = 1e-4


def flatten_batch(embeddings, labels):
    """Brings embeddings to ``[N, D]`` and labels to ``[N]``.

    Arguments
    ---------
    embeddings : torch.Tensor
        Embeddings, ``[N, D]`` or ``[N, 1, D]`` (SpeechBrain's layout).
    labels : torch.Tensor
        Integer labels, ``[N]`` or ``[N, 1]``.

    Returns
    -------
    embeddings : torch.Tensor
        The embeddings as ``[N, D]``.
    labels : torch.Tensor
        The labels as ``[N]``.

    Raises
    ------
    ValueError
        If a shape is not one of the above or the batch sizes differ.

    Example
    -------
    >>> import torch
    >>> emb, lab = flatten_batch(torch.ones(4, 1, 3), torch.zeros(4, 1))
    >>> emb.shape, lab.shape
    (torch.Size([4, 3]), torch.Size([4]))
    """
    if embeddings.dim() == 3 and embeddings.shape[1] == 1:
        embeddings = embeddings.squeeze(1)
    if embeddings.dim() != 2:
        raise ValueError(
            "embeddings must be [N, D] or [N, 1, D], got shape "
            f"{tuple(embeddings.shape)}"
        )
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels.squeeze(1)
    if labels.dim() != 1:
        raise ValueError(
            f"labels must be [N] or [N, 1], got shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"{embeddings.shape[0]} embeddings but {labels.shape[0]} labels"
        )
    return embeddings, labels


def as_matrix(tensor):
    """Stacks the vectors along the last dimension into rows ``[M, D]``.

    Unlike :func:`flatten_batch` this takes any leading dimensions, for
    statistics and heads that treat every vector alike: ``[N, 1, D]``
    gives ``[N, D]``, and e.g. views ``[B, V, D]`` give ``[B * V, D]`` in
    row-major order.

    Arguments
    ---------
    tensor : torch.Tensor
        ``[..., D]``, at least one dimension.

    Returns
    -------
    torch.Tensor
        ``[M, D]`` with M the product of the leading sizes (a view of the
        input where possible).

    Example
    -------
    >>> import torch
    >>> as_matrix(torch.zeros(4, 1, 3)).shape
    torch.Size([4, 3])
    >>> as_matrix(torch.arange(12).reshape(2, 3, 2))[:, 0]
    tensor([ 0,  2,  4,  6,  8, 10])
    """
    return tensor.reshape(-1, tensor.shape[-1])


def unit_norm(tensor, eps=NORM_EPS):
    """L2-normalises every vector along the last dimension.

    Computes ``x / max(||x||, eps)``, as ``F.normalize`` does; the default
    ``eps`` is :data:`NORM_EPS`, which keeps the gradient of a (near-)zero
    vector finite in half precision.

    Arguments
    ---------
    tensor : torch.Tensor
        ``[..., D]``.
    eps : float
        Lower bound of the norm divided by; vectors shorter than ``eps``
        are scaled by ``1 / eps`` instead of brought to unit norm.

    Returns
    -------
    torch.Tensor
        Same shape and dtype; unit-norm vectors, zero ones left at zero.

    Example
    -------
    >>> import torch
    >>> unit_norm(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    tensor([[0.6000, 0.8000],
            [0.0000, 0.0000]])
    >>> unit_norm(torch.tensor([1e-5, 0.0]))  # below eps: not unit norm
    tensor([0.1000, 0.0000])
    """
    return F.normalize(tensor, dim=-1, eps=eps)
