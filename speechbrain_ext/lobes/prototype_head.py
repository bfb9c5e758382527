"""Projection head onto K prototypes, as in DINO's self-distillation.

Authors
 * speechbrain_ext contributors
"""

import torch

from speechbrain_ext.losses.shapes import as_matrix, unit_norm

__all__ = ["PrototypeHead"]

# F.normalize's default eps: NORM_EPS would shrink bottlenecks shorter than
# 1e-4 instead of projecting them, changing the logits of trained heads.
_HEAD_EPS = 1e-12


class PrototypeHead(torch.nn.Module):
    """MLP to a unit-norm bottleneck, then cosine logits to K prototypes.

    The layout of DINO's head (Caron et al., 2021): ``n_layers`` linear
    layers with GELU between them end in a bottleneck that is
    L2-normalised, and the logits are its cosines with K learned
    prototypes (DINO's weight-normalised last layer with its gain fixed at
    1). Bounded logits keep the temperatures of
    :class:`~speechbrain_ext.losses.CSCLoss` meaningful. With
    ``batch_norm`` each hidden layer is batch-normalised (as in BYOL's and
    SimSiam's projectors, and DINO's ResNet heads), which keeps the
    bottleneck from collapsing to one point early in training.

    Arguments
    ---------
    input_size : int
        Size of the embeddings fed in.
    n_prototypes : int
        K.
    hidden_size : int
        Width of the hidden layers.
    bottleneck_size : int
        Size of the normalised bottleneck.
    n_layers : int
        Linear layers before the prototypes (1: a single projection).
    batch_norm : bool
        Whether to batch-normalise the hidden layers.
    learn_prototypes : bool
        Whether the prototypes are trained. Fixed random prototypes
        (False) span the bottleneck space, so no bottleneck can have the
        same cosine with every prototype: the logits of every row keep a
        spread and the distributions cannot drift to uniform, a collapse
        that learned prototypes allow early in training (DINO freezes them
        for its first epoch for this reason).

    Example
    -------
    >>> head = PrototypeHead(
    ...     8, n_prototypes=16, hidden_size=12, bottleneck_size=4
    ... )
    >>> logits = head(torch.randn(5, 8))
    >>> logits.shape, bool(logits.abs().max() <= 1.0 + 1e-6)
    (torch.Size([5, 16]), True)
    """

    def __init__(
        self,
        input_size,
        n_prototypes,
        hidden_size=512,
        bottleneck_size=128,
        n_layers=3,
        batch_norm=True,
        learn_prototypes=True,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        sizes = [input_size] + [hidden_size] * (n_layers - 1)
        layers = []
        for size_in, size_out in zip(sizes, sizes[1:]):
            layers.append(torch.nn.Linear(size_in, size_out))
            if batch_norm:
                layers.append(torch.nn.BatchNorm1d(size_out))
            layers.append(torch.nn.GELU())
        layers.append(torch.nn.Linear(sizes[-1], bottleneck_size))
        self.mlp = torch.nn.Sequential(*layers)
        prototypes = torch.randn(n_prototypes, bottleneck_size)
        prototypes = unit_norm(prototypes, eps=_HEAD_EPS)
        if learn_prototypes:
            self.prototypes = torch.nn.Parameter(prototypes)
        else:
            self.register_buffer("prototypes", prototypes)

    def forward(self, embeddings):
        """Cosine logits ``[N, K]`` of embeddings ``[N, (1,) D]``."""
        bottleneck = unit_norm(self.mlp(as_matrix(embeddings)), eps=_HEAD_EPS)
        return bottleneck @ unit_norm(self.prototypes, eps=_HEAD_EPS).T
