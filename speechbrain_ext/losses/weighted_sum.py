"""A weighted sum of objectives applied to the same embeddings and labels.

The hybrid AAM-SupCon objective of Li and Mak is
``L = L_AAMSupCon + lambda * L_AAMsoftmax`` on one batch of embeddings;
``WeightedLossSum`` builds it (or any other mixture) from the individual
objectives so that the training script still sees a single
``objective(embeddings, labels)``.

Authors
 * speechbrain_ext contributors
"""

import torch

from speechbrain_ext.losses.terms import LoggedTerms

__all__ = ["WeightedLossSum"]


class WeightedLossSum(LoggedTerms, torch.nn.Module):
    """Computes L = sum_k w_k * L_k(embeddings, labels).

    Every term is computed, even with weight 0, so that each parameter
    (e.g. an AAM-softmax classifier) stays in the graph, as DDP requires;
    leave a term out of ``losses`` to skip it.

    Arguments
    ---------
    losses : dict
        Name -> objective module called as ``loss(embeddings, labels)``.
        Held in a ``ModuleDict``, so their parameters are trained and
        checkpointed with this module.
    weights : dict, optional
        Name -> weight w_k, with exactly the names of ``losses``.
        Every weight is 1 when omitted.

    Attributes
    ----------
    last_terms : dict
        Name -> unweighted value (float) of each term in the last call,
        for logging (``last_term_tensors``: the same as detached tensors,
        read without a device sync).

    Example
    -------
    >>> from speechbrain_ext.losses import AAMSoftmaxLoss, AAMSupConLoss
    >>> hybrid = WeightedLossSum(
    ...     losses={
    ...         "aam_supcon": AAMSupConLoss(),
    ...         "aam_softmax": AAMSoftmaxLoss(input_size=16, n_classes=3),
    ...     },
    ...     weights={"aam_supcon": 1.0, "aam_softmax": 0.5},
    ... )
    >>> embeddings = torch.randn(6, 1, 16)
    >>> labels = torch.tensor([0, 0, 1, 1, 2, 2])
    >>> loss = hybrid(embeddings, labels)
    >>> terms = hybrid.last_terms
    >>> expected = terms["aam_supcon"] + 0.5 * terms["aam_softmax"]
    >>> abs(loss.item() - expected) < 1e-5
    True
    """

    def __init__(self, losses, weights=None):
        super().__init__()
        if not losses:
            raise ValueError("WeightedLossSum needs at least one loss")
        if weights is None:
            weights = dict.fromkeys(losses, 1.0)
        if set(weights) != set(losses):
            raise ValueError(
                "weights must name exactly the losses: losses "
                f"{sorted(losses)}, weights {sorted(weights)}"
            )
        self.losses = torch.nn.ModuleDict(losses)
        self.weights = {name: float(weights[name]) for name in losses}

    def forward(self, embeddings, labels):
        """Computes the weighted sum of the terms on one batch.

        Arguments
        ---------
        embeddings : torch.Tensor
            Embeddings, ``[N, D]`` or ``[N, 1, D]``.
        labels : torch.Tensor
            Integer labels, ``[N]`` or ``[N, 1]``.

        Returns
        -------
        torch.Tensor
            The scalar weighted sum.
        """
        total = 0.0
        terms = {}
        for name, loss in self.losses.items():
            value = loss(embeddings, labels)
            terms[name] = value.detach()
            total = total + self.weights[name] * value
        self.last_term_tensors = terms
        return total
