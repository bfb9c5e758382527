"""SimCLR's NT-Xent loss over the views of each instance.

NT-Xent (Chen et al., 2020, "A Simple Framework for Contrastive Learning
of Visual Representations") is SupCon with instance ids as labels, so it
reuses :class:`~speechbrain_ext.losses.aam_supcon.AAMSupConLoss` with the
margin fixed at 0; only the distributed gathering differs, because
instance ids are local to each rank.

Authors
 * speechbrain_ext contributors
"""

import torch

from speechbrain_ext.distributed import global_group_ids
from speechbrain_ext.losses.aam_supcon import AAMSupConLoss

__all__ = ["NTXentLoss"]


class NTXentLoss(AAMSupConLoss):
    """SimCLR's normalised temperature-scaled cross-entropy (NT-Xent).

    ``labels`` are instance ids: the rows sharing an id are views of one
    instance (e.g. augmented copies of one crop) and are positives of each
    other; every other row is a negative. With two views per instance each
    anchor has exactly one positive and

        L_i = -log(exp(s cos_ip) / sum_{a != i} exp(s cos_ia)),

    which is Chen et al.'s NT-Xent and equals SupCon (``AAMSupConLoss``
    with ``margin=0``) term by term, so this class only fixes the margin.
    With V > 2 views it is the multi-positive form, averaging the V - 1
    positives of each anchor.

    With ``gather_distributed=True`` the ids stay per rank: the views of
    the i-th utterance of every rank's batch may all carry id i (as
    ``ViewContrastTask.group_ids`` gives them). Before gathering, the loss
    renumbers each rank's ids and interleaves the ranks
    (:func:`~speechbrain_ext.distributed.global_group_ids`), so views of
    different ranks are never positives of each other, even when the
    ranks hold different numbers of views.

    Arguments
    ---------
    temperature : float
        The temperature tau.
    gather_distributed : bool
        Whether to contrast against the views of all DDP ranks.

    Example
    -------
    >>> views = torch.randn(8, 16)
    >>> instance_ids = torch.arange(4).repeat(2)
    >>> NTXentLoss(temperature=0.1)(views, instance_ids).shape
    torch.Size([])
    """

    def __init__(self, temperature=0.1, gather_distributed=False):
        super().__init__(
            margin=0.0,
            temperature=temperature,
            gather_distributed=gather_distributed,
        )

    def gather_batch(self, embeddings, labels):
        """Gathers the views of every rank with rank-unique group ids.

        Arguments
        ---------
        embeddings : torch.Tensor
            This rank's views, ``[N, D]``.
        labels : torch.Tensor
            This rank's group ids, ``[N]``, any integers.

        Returns
        -------
        embeddings : torch.Tensor
            ``[sum_r N_r, D]``, this rank's rows keeping their graph.
        labels : torch.Tensor
            ``[sum_r N_r]`` group ids, unique to each rank.
        """
        # Renumbered to 0..G-1 with G <= N, then interleaved by rank, so
        # the ranks stay apart whatever ids the caller used.
        _, local_ids = torch.unique(labels, return_inverse=True)
        labels = global_group_ids(local_ids, n_local=len(labels))
        return super().gather_batch(embeddings, labels)
