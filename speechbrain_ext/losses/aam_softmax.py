"""AAM-softmax classification loss that owns its speaker classifier.

The computation is that of SpeechBrain's VoxCeleb ECAPA-TDNN recipe: an
``ECAPA_TDNN.Classifier`` produces cosine logits and
``LogSoftmaxWrapper(AdditiveAngularMargin(margin, scale))`` turns them into
the loss. Holding the classifier inside the objective gives it the same
``objective(embeddings, labels)`` call as the contrastive losses, and
puts its weights wherever the objective goes (``modules``, checkpoints).

Authors
 * speechbrain_ext contributors
"""

import math

import torch
import torch.nn.functional as F

from speechbrain.lobes.models.ECAPA_TDNN import Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
from speechbrain_ext.losses.margin_schedule import MarginWarmup
from speechbrain_ext.losses.shapes import flatten_batch, unit_norm

__all__ = ["AAMSoftmaxLoss"]


class AAMSoftmaxLoss(torch.nn.Module):
    """Additive angular margin softmax over a trainable cosine classifier.

    For an embedding with label y and angles theta_j to the (normalised)
    class weights, the loss is the cross-entropy of the logits
    s * cos(theta_y + m) for the target class and s * cos(theta_j) for the
    others, averaged over the batch (SpeechBrain's AdditiveAngularMargin
    with ``easy_margin=False``).

    The classifier runs in float32 with autocast disabled: at scale 30 a
    half-precision cosine would move the logits by about 0.1.

    Margin warm-up (off by default), as in WeSpeaker: the margin is 0 for
    the first ``margin_warmup_start`` training calls, then rises linearly
    to ``margin`` over ``margin_warmup_steps`` calls (see
    :class:`~speechbrain_ext.losses.margin_schedule.MarginWarmup`). The
    calls in training mode are counted in the buffer
    ``margin_warmup.step``, saved with the loss's ``state_dict``.

    Arguments
    ---------
    input_size : int
        Embedding dimension.
    n_classes : int
        Number of training speakers; needed unless ``classifier`` is given.
    margin : float
        Additive angular margin m (radians).
    scale : float
        Logit scale s.
    classifier : torch.nn.Module, optional
        A module mapping ``[N, 1, D]`` embeddings to ``[N, 1, C]`` cosine
        logits, e.g. an existing ``ECAPA_TDNN.Classifier``. Built from
        ``input_size`` and ``n_classes`` when omitted.
    margin_warmup_start : int
        Training calls made with margin 0 before the ramp starts.
    margin_warmup_steps : int
        Training calls of the linear ramp from 0 to ``margin``.

    Example
    -------
    >>> loss = AAMSoftmaxLoss(input_size=8, n_classes=5)
    >>> embeddings = torch.randn(4, 1, 8)
    >>> labels = torch.tensor([[0], [1], [4], [4]])
    >>> loss(embeddings, labels).shape
    torch.Size([])
    >>> loss.classifier.weight.shape
    torch.Size([5, 8])
    >>> warming = AAMSoftmaxLoss(
    ...     input_size=8,
    ...     n_classes=5,
    ...     margin_warmup_start=1,
    ...     margin_warmup_steps=2,
    ... )
    >>> margins = []
    >>> for _ in range(4):
    ...     margins.append(warming.current_margin)
    ...     _ = warming(embeddings, labels)
    >>> [round(m, 2) for m in margins]
    [0.0, 0.0, 0.1, 0.2]
    """

    def __init__(
        self,
        input_size=192,
        n_classes=None,
        margin=0.2,
        scale=30.0,
        classifier=None,
        margin_warmup_start=0,
        margin_warmup_steps=0,
    ):
        super().__init__()
        if classifier is None:
            if n_classes is None:
                raise ValueError(
                    "AAMSoftmaxLoss needs n_classes (or a classifier module)"
                )
            classifier = Classifier(input_size, out_neurons=n_classes)
        self.classifier = classifier
        self.margin = float(margin)
        self.aam_loss = LogSoftmaxWrapper(
            AdditiveAngularMargin(margin=margin, scale=scale)
        )
        self.margin_warmup = MarginWarmup(
            margin_warmup_start, margin_warmup_steps
        )
        self._checked_on = set()

    def _check_labels(self, labels, n_classes):
        """Labels must index the classifier's classes.

        Reading them costs a host-device sync, so only the first batch on
        each device is checked: the label encoder fixes the range for a run
        (a later bad label still fails, in the one-hot scatter, less
        clearly).
        """
        device = labels.device
        if device in self._checked_on:
            return
        lowest, highest = int(labels.min()), int(labels.max())
        if lowest < 0 or highest >= n_classes:
            raise ValueError(
                f"labels must lie in [0, {n_classes}) (the classifier's "
                f"classes), got values in [{lowest}, {highest}]"
            )
        self._checked_on.add(device)

    @property
    def current_margin(self):
        """The margin of the next call: ``margin`` after the warm-up."""
        return self.margin_warmup.margin(self.margin)

    def _use_margin(self, margin):
        """Sets the margin of SpeechBrain's AdditiveAngularMargin.

        It precomputes cos(m), sin(m) and the fallback's threshold and
        offset from the margin; all are recomputed here, as its
        ``__init__`` does.
        """
        aam = self.aam_loss.loss_fn
        if aam.margin == margin:
            return
        aam.margin = margin
        aam.cos_m = math.cos(margin)
        aam.sin_m = math.sin(margin)
        aam.th = math.cos(math.pi - margin)
        aam.mm = math.sin(math.pi - margin) * margin

    def _cosine_logits(self, embeddings):
        """Cosines to the class weights, ``[N, 1, n_classes]``.

        SpeechBrain's ``Classifier`` normalises with ``F.normalize``'s eps
        of 1e-12, which gives a (near-)zero embedding an infinite float16
        gradient; for the stock classifier without hidden blocks the same
        cosines are computed here with
        :data:`~speechbrain_ext.losses.shapes.NORM_EPS` instead.
        """
        classifier = self.classifier
        if isinstance(classifier, Classifier) and not len(classifier.blocks):
            cosine = F.linear(
                unit_norm(embeddings),
                F.normalize(classifier.weight.float(), dim=1),
            )
            return cosine.unsqueeze(1)
        return classifier(embeddings.unsqueeze(1))

    def forward(self, embeddings, labels, partner_labels=None, weights=None):
        """Computes the loss of one batch.

        With ``partner_labels`` and ``weights`` (margin-mixup, see
        :class:`~speechbrain_ext.augment.WaveformMixup`), row i is a
        mixture weighted ``lam_i`` toward ``labels[i]`` = a and ``1 -
        lam_i`` toward ``partner_labels[i]`` = b: the logit of a becomes
        s * cos(theta_a + lam_i * m), that of b s * cos(theta_b + (1 -
        lam_i) * m), and the loss is ``-lam_i log p_a - (1 - lam_i) log
        p_b``. A row with ``lam_i = 1`` (or a = b) gets the ordinary AAM
        target.

        Arguments
        ---------
        embeddings : torch.Tensor
            Embeddings, ``[N, D]`` or ``[N, 1, D]``.
        labels : torch.Tensor
            Integer speaker indices in ``[0, n_classes)``, ``[N]`` or
            ``[N, 1]``.
        partner_labels : torch.Tensor, optional
            ``[N]`` speaker of each row's mixing partner.
        weights : torch.Tensor, optional
            ``[N]`` mixing weight of ``labels`` (lam).

        Returns
        -------
        torch.Tensor
            The scalar loss, float32.

        Example
        -------
        A mixture weighted 1 toward its own speaker is the ordinary loss.

        >>> loss = AAMSoftmaxLoss(input_size=8, n_classes=5)
        >>> embeddings, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
        >>> plain = loss(embeddings, labels)
        >>> mixed = loss(
        ...     embeddings, labels, torch.tensor([1, 2, 3, 0]), torch.ones(4)
        ... )
        >>> torch.allclose(plain, mixed, atol=1e-4)
        True
        """
        embeddings, labels = flatten_batch(embeddings, labels)
        self._use_margin(self.current_margin)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            logits = self._cosine_logits(embeddings.float())
            self._check_labels(labels, logits.shape[-1])
            if partner_labels is None:
                loss = self.aam_loss(logits, labels.unsqueeze(1))
            else:
                loss = self._mixed_target_loss(
                    logits.squeeze(1), labels, partner_labels, weights
                )
        self.margin_warmup.advance()  # counts training calls only
        return loss

    def _mixed_target_loss(self, cosines, labels, partner_labels, weights):
        """Margin-mixup's loss: margins and targets shared by lam."""
        weights = weights.float().view(-1, 1)
        partner_labels = partner_labels.view(-1, 1)
        own = torch.zeros_like(cosines).scatter_(1, labels.view(-1, 1), 1.0)
        other = torch.zeros_like(cosines).scatter_(1, partner_labels, 1.0)
        targets = weights * own + (1 - weights) * other
        margins = self.current_margin * targets
        # acos has an infinite slope at +-1.
        angles = torch.acos(cosines.clamp(-1 + 1e-6, 1 - 1e-6))
        logits = self.aam_loss.loss_fn.scale * torch.cos(angles + margins)
        log_probs = F.log_softmax(logits, dim=1)
        return -(targets * log_probs).sum(dim=1).mean()
