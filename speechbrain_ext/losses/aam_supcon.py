"""Supervised contrastive loss with an additive angular margin (AAM-SupCon).

Every embedding in a batch is an anchor; the other embeddings with the same
label are its positives and all embeddings with another label its negatives
(Khosla et al., 2020, "Supervised Contrastive Learning", L_out). AAM-SupCon
(Li and Mak, 2022, arXiv 2210.16636) subtracts an angular margin from the
positive logits only, so a positive pair must be closer than the negatives
by the margin before the loss is satisfied. With ``margin=0`` it is plain
SupCon, and with two views per instance it is SimCLR's NT-Xent
(:class:`~speechbrain_ext.losses.ntxent.NTXentLoss`).

Every objective of this package is called as ``objective(embeddings,
labels)`` with embeddings ``[N, D]`` or SpeechBrain's ``[N, 1, D]`` and
integer labels ``[N]`` or ``[N, 1]``, and returns a scalar.

Authors
 * speechbrain_ext contributors
"""

import math

import torch

from speechbrain_ext.distributed import (
    gather_with_grad,
    scale_gradient_by_world_size,
)
from speechbrain_ext.losses.margin_schedule import MarginWarmup
from speechbrain_ext.losses.shapes import flatten_batch, unit_norm

__all__ = ["AAMSupConLoss"]

MARGIN_TYPES = ("arc", "cos")

# Keeps sqrt(1 - cos^2) and its gradient finite (SpeechBrain's
# AdditiveAngularMargin uses the same clamp).
_COS_EPS = 1e-7


class AAMSupConLoss(torch.nn.Module):
    """Supervised contrastive loss with an angular margin on positive pairs.

    With z_i the L2-normalised embeddings, cos(theta_ij) = z_i . z_j and
    s = 1 / temperature, the logits are

        l_ij = s * psi(theta_ij)  if i != j and label(i) == label(j)
        l_ij = s * cos(theta_ij)  if label(i) != label(j)

    where psi(theta) = cos(theta + m) for ``margin_type="arc"`` (ArcFace;
    where theta + m > pi it becomes cos(theta) - m * sin(m) so that psi
    keeps decreasing with theta) or psi(theta) = cos(theta) - m for
    ``margin_type="cos"`` (CosFace). With P(i) the positives of anchor i
    and A(i) every index but i,

        L_i = -1/|P(i)| sum_{p in P(i)} [l_ip - log sum_{a in A(i)} exp(l_ia)]

    and the loss is the mean of L_i over the anchors with at least one
    positive. Anchors without positives still act as negatives for the
    others. A batch in which no anchor has a positive gives 0 (with a
    zero gradient) rather than NaN.

    The computation runs in float32 with autocast disabled, so half
    precision inputs and mixed-precision training give the float32 value.

    Under DDP each rank holds only its part of the batch. With
    ``gather_distributed=True`` the embeddings and labels of all ranks are
    gathered (:func:`~speechbrain_ext.distributed.gather_with_grad`), so
    every anchor meets the negatives and positives of the global batch,
    and the gradient is rescaled for DDP's averaging: one DDP step then
    equals the single-process step on the global batch, and the returned
    value is the global-batch loss on every rank. The ranks may hold
    different numbers of rows (a rank whose batch lost an unreadable
    item). Without a process group the option does nothing.

    Margin warm-up (off by default): the margin is 0 for the first
    ``margin_warmup_start`` training calls, then rises linearly to
    ``margin`` over ``margin_warmup_steps`` calls (WeSpeaker's schedule,
    counted in steps; see
    :class:`~speechbrain_ext.losses.margin_schedule.MarginWarmup`). The loss
    counts its calls in training mode in the buffer ``margin_warmup.step``,
    saved with its ``state_dict``, so a resumed run continues the schedule.

    Arguments
    ---------
    margin : float
        The margin m (radians for "arc", cosine units for "cos"); 0 gives
        plain SupCon.
    temperature : float
        The temperature tau; the logits are scaled by s = 1 / tau.
    margin_type : str
        "arc" for cos(theta + m) or "cos" for cos(theta) - m.
    gather_distributed : bool
        Whether to compute the loss over the batches of all DDP ranks.
    margin_warmup_start : int
        Training calls made with margin 0 before the ramp starts.
    margin_warmup_steps : int
        Training calls of the linear ramp from 0 to ``margin``.

    Example
    -------
    >>> import math
    >>> angles = torch.tensor([0.0, 0.5, 1.0, 1.5])
    >>> embeddings = torch.stack([angles.cos(), angles.sin()], dim=1)
    >>> labels = torch.tensor([0, 0, 1, 1])
    >>> loss = AAMSupConLoss(margin=0.2, temperature=0.07)
    >>> loss(embeddings, labels)
    tensor(0.9196)
    >>> AAMSupConLoss(margin=0.0)(embeddings, labels)
    tensor(0.3526)
    >>> warming = AAMSupConLoss(margin=0.2, margin_warmup_steps=2)
    >>> [warming(embeddings, labels) for _ in range(3)]
    [tensor(0.3526), tensor(0.5784), tensor(0.9196)]
    >>> int(warming.margin_warmup.step), warming.current_margin
    (3, 0.2)
    """

    def __init__(
        self,
        margin=0.2,
        temperature=0.07,
        margin_type="arc",
        gather_distributed=False,
        margin_warmup_start=0,
        margin_warmup_steps=0,
    ):
        super().__init__()
        if margin_type not in MARGIN_TYPES:
            raise ValueError(
                f"margin_type must be one of {MARGIN_TYPES}, "
                f"got {margin_type!r}"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= margin < math.pi / 2:
            raise ValueError(f"margin must be in [0, pi/2), got {margin}")
        self.margin = float(margin)
        self.temperature = float(temperature)
        self.margin_type = margin_type
        self.gather_distributed = gather_distributed
        self.margin_warmup = MarginWarmup(
            margin_warmup_start, margin_warmup_steps
        )

    @property
    def current_margin(self):
        """The margin of the next call: ``margin`` after the warm-up."""
        return self.margin_warmup.margin(self.margin)

    def margin_similarity(self, cosine, margin=None):
        """Returns psi(theta), the similarity of a positive pair.

        Arguments
        ---------
        cosine : torch.Tensor
            Cosine similarities cos(theta), any shape.
        margin : float, optional
            The margin to apply; ``self.margin`` when omitted.

        Returns
        -------
        torch.Tensor
            psi(theta), same shape as ``cosine``.

        Example
        -------
        >>> loss = AAMSupConLoss(margin=0.5, margin_type="cos")
        >>> loss.margin_similarity(torch.tensor([1.0, 0.0]))
        tensor([ 0.5000, -0.5000])
        """
        if margin is None:
            margin = self.margin
        if self.margin_type == "cos":
            return cosine - margin
        cos_m, sin_m = math.cos(margin), math.sin(margin)
        cosine = cosine.clamp(-1 + _COS_EPS, 1 - _COS_EPS)
        sine = torch.sqrt(1.0 - cosine**2)
        cos_theta_plus_m = cosine * cos_m - sine * sin_m
        # Beyond theta = pi - m, cos(theta + m) would rise again and reward
        # pushing positives apart; ArcFace's linear fallback keeps psi
        # decreasing.
        beyond_pi = cosine <= -cos_m
        return torch.where(beyond_pi, cosine - margin * sin_m, cos_theta_plus_m)

    def forward(self, embeddings, labels):
        """Computes the loss of one batch.

        Arguments
        ---------
        embeddings : torch.Tensor
            Embeddings, ``[N, D]`` or ``[N, 1, D]``; normalised inside.
        labels : torch.Tensor
            Integer class (speaker) labels, ``[N]`` or ``[N, 1]``.

        Returns
        -------
        torch.Tensor
            The scalar loss, float32; with ``gather_distributed`` that of
            the global batch, the same on every rank.
        """
        embeddings, labels = flatten_batch(embeddings, labels)
        margin = self.current_margin
        self.margin_warmup.advance()  # counts training calls only
        if not self.gather_distributed:
            return self.batch_loss(embeddings, labels, margin)
        embeddings, labels = self.gather_batch(embeddings, labels)
        return scale_gradient_by_world_size(
            self.batch_loss(embeddings, labels, margin)
        )

    def gather_batch(self, embeddings, labels):
        """Gathers the rows of every DDP rank (identity without DDP).

        Arguments
        ---------
        embeddings : torch.Tensor
            This rank's embeddings, ``[N, D]``.
        labels : torch.Tensor
            This rank's labels, ``[N]``; speaker labels are global already.

        Returns
        -------
        embeddings : torch.Tensor
            ``[sum_r N_r, D]``, this rank's rows keeping their graph.
        labels : torch.Tensor
            ``[sum_r N_r]``.
        """
        return gather_with_grad(embeddings), gather_with_grad(labels)

    def batch_loss(self, embeddings, labels, margin=None):
        """Computes the loss over the rows given, without gathering.

        Arguments
        ---------
        embeddings : torch.Tensor
            Embeddings ``[N, D]``; normalised inside.
        labels : torch.Tensor
            Integer labels ``[N]``.
        margin : float, optional
            The margin to apply; :attr:`current_margin` when omitted (the
            warm-up is not advanced here).

        Returns
        -------
        torch.Tensor
            The scalar loss, float32.
        """
        if margin is None:
            margin = self.current_margin
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            z = unit_norm(embeddings.float())
            cosine = z @ z.T
            n = z.shape[0]
            is_self = torch.eye(n, dtype=torch.bool, device=z.device)
            positive = (labels[:, None] == labels[None, :]) & ~is_self
            if margin > 0:
                similarity = torch.where(
                    positive, self.margin_similarity(cosine, margin), cosine
                )
            else:
                similarity = cosine
            logits = (similarity / self.temperature).masked_fill(
                is_self, float("-inf")
            )
            log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
            positive_log_prob = log_prob.masked_fill(~positive, 0.0).sum(dim=1)
            n_positive = positive.sum(dim=1)
            anchor_loss = -positive_log_prob / n_positive.clamp(min=1)
            # Anchors without positives add 0 and are not counted; this
            # also avoids a host sync to test whether any anchor is left.
            n_anchors = (n_positive > 0).sum().clamp(min=1)
            return anchor_loss.sum() / n_anchors
