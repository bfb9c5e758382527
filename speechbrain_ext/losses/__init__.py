"""Training objectives, all called as ``loss = objective(embeddings, labels)``.

Embeddings are ``[N, D]`` or SpeechBrain's ``[N, 1, D]``, labels integer
``[N]`` or ``[N, 1]``; each objective returns a scalar tensor and holds its
own trainable parameters, so a recipe puts it in ``modules`` and never asks
which objective it has.

* :class:`AAMSupConLoss` - supervised contrastive loss with an angular
  margin on positive pairs (``margin=0``: plain SupCon).
* :class:`NTXentLoss` - SimCLR's NT-Xent over views of one instance.
* :class:`AAMSoftmaxLoss` - AAM-softmax over its own cosine classifier.
* :class:`WeightedLossSum` - sum_k w_k L_k, e.g. the hybrid
  AAM-SupCon + lambda * AAM-softmax.

The self-supervised CSC objective is the exception: it compares each
view's representation with its global speaker vector (and the mask head's
estimate with the clean target), so it is called as
``loss = CSCInfoMaxLoss(...)(z, g, estimate, target, lengths)``.

* :class:`CSCInfoMaxLoss` - VICReg between z and g (an information
  lower bound, no negatives) + beta * separation loss; the default.
* :class:`CSCLoss` - self-distillation (DINO) over prototypes + beta *
  separation loss.

The shape helpers all of them share live in
:mod:`speechbrain_ext.losses.shapes`: :func:`flatten_batch`,
:func:`as_matrix`, :func:`unit_norm` and its ``NORM_EPS``.
"""

from speechbrain_ext.losses.aam_softmax import AAMSoftmaxLoss
from speechbrain_ext.losses.aam_supcon import AAMSupConLoss
from speechbrain_ext.losses.csc import CSCLoss
from speechbrain_ext.losses.csc_infomax import CSCInfoMaxLoss
from speechbrain_ext.losses.ntxent import NTXentLoss
from speechbrain_ext.losses.shapes import (
    NORM_EPS,
    as_matrix,
    flatten_batch,
    unit_norm,
)
from speechbrain_ext.losses.view_subset import SingleViewLoss
from speechbrain_ext.losses.weighted_sum import WeightedLossSum

__all__ = [
    "AAMSoftmaxLoss",
    "AAMSupConLoss",
    "CSCInfoMaxLoss",
    "CSCLoss",
    "NORM_EPS",
    "NTXentLoss",
    "SingleViewLoss",
    "WeightedLossSum",
    "as_matrix",
    "flatten_batch",
    "unit_norm",
]
