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
"""

from speechbrain_ext.losses.aam_softmax import AAMSoftmaxLoss
from speechbrain_ext.losses.aam_supcon import (
    AAMSupConLoss,
    NTXentLoss,
    flatten_batch,
)
from speechbrain_ext.losses.weighted_sum import WeightedLossSum

__all__ = [
    "AAMSoftmaxLoss",
    "AAMSupConLoss",
    "NTXentLoss",
    "WeightedLossSum",
    "flatten_batch",
]
