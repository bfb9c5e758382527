"""Contrastive separative coding loss: self-distillation + separation.

CSC (Wang et al., ICASSP 2021, arXiv 2103.00816) maximises the information
shared by each interfered view's representation and the global speaker
vector aggregated from the *other* views of the same target, without
negative samples, and adds the separation loss of the encoder's mask head.
The paper's estimator is not public. This module uses self-distillation
(DINO, Caron et al. 2021; for speakers WeSpeaker's and 3D-Speaker's DINO
recipes): a teacher's output over K prototypes, centred and sharpened,
is the target distribution p; the student's softer distribution q predicts
it by cross-entropy. No negatives are drawn; centring (no prototype may
dominate) and sharpening (no row may be uniform) keep the teacher from
collapsing.

Why this is an information objective: with T ~ p(. | g) the teacher's
prototype assignment of one side and q(. | z) the student's prediction of
it from the other side, the Barber-Agakov bound gives

    I(z; g) >= I(z; T) >= H(T) - E[-log q(T | z)]
              = H(mean_i p_i) - mean_i CE(p_i, q_i),

so minimising the cross-entropy maximises a lower bound of the mutual
information (H(T) does not depend on the student). :func:`distillation_
information` returns this bound over a batch. It is conservative at any
batch and embedding size: the plug-in H(mean p) is at most log(rows) and
biased low, unrelated z and g make the cross-entropy exceed it (a bound
at or below 0), and a collapsed teacher has H(T) = 0.

Authors
 * speechbrain_ext contributors
"""

import torch
import torch.nn.functional as F

from speechbrain.nnet.losses import l1_loss, mse_loss
from speechbrain_ext.distributed import (
    gather_with_grad,
    scale_gradient_by_world_size,
)
from speechbrain_ext.losses.monitors import HealthMonitor
from speechbrain_ext.losses.shapes import as_matrix
from speechbrain_ext.losses.terms import LoggedTerms

__all__ = [
    "CSCLoss",
    "distillation_information",
    "check_estimate_target",
    "check_weights",
    "entropy",
    "separation_error",
    "sinkhorn_knopp",
    "variance_covariance",
]

CENTERINGS = ("ema", "sinkhorn")

SEPARATION_LOSSES = {"l1": l1_loss, "mse": mse_loss}


def entropy(probabilities):
    """Shannon entropy (nats) of each row of a probability matrix.

    Arguments
    ---------
    probabilities : torch.Tensor
        ``[..., K]``, rows summing to 1.

    Returns
    -------
    torch.Tensor
        ``[...]``.

    Example
    -------
    >>> entropy(torch.tensor([[0.5, 0.5], [1.0, 0.0]])).abs()
    tensor([0.6931, 0.0000])
    """
    return (probabilities * probabilities.clamp(min=1e-30).log()).sum(-1).neg()


def distillation_information(teacher_probs, student_log_probs):
    """Barber-Agakov lower bound (nats) of I(student side; teacher side).

    ``H(mean_i p_i) - mean_i CE(p_i, q_i)``, where ``p_i`` is the teacher's
    distribution over prototypes for row i and ``q_i`` the student's
    prediction of it from the paired representation.

    Arguments
    ---------
    teacher_probs : torch.Tensor
        ``[N, K]`` teacher distributions p.
    student_log_probs : torch.Tensor
        ``[N, K]`` student log-distributions log q.

    Returns
    -------
    torch.Tensor
        Scalar bound; at most ``log K`` and ``log N``, negative when the
        student predicts the teacher worse than ignoring it would.

    Example
    -------
    Two rows, each sure of a different prototype, predicted with 0.9
    confidence: H(mean p) = log 2, CE = -log 0.9.

    >>> p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> q = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    >>> bound = distillation_information(p, q.log())
    >>> round(bound.item(), 4)  # log 2 + log 0.9
    0.5878
    """
    marginal_entropy = entropy(teacher_probs.mean(dim=0))
    cross_entropy = -(teacher_probs * student_log_probs).sum(dim=1).mean()
    return marginal_entropy - cross_entropy


def check_weights(separation, **weights):
    """Raises a clear error for an unknown separation loss or a negative
    weight of a CSC objective.

    Example
    -------
    >>> check_weights("l1", beta=1.0, information_weight=0.0)
    >>> check_weights("l1", beta=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: weights must be >= 0, got {'beta': -1.0}
    """
    if separation not in SEPARATION_LOSSES:
        raise ValueError(
            f"separation must be one of {sorted(SEPARATION_LOSSES)}, "
            f"got {separation!r}"
        )
    negative = {name: w for name, w in weights.items() if w < 0}
    if negative:
        raise ValueError(f"weights must be >= 0, got {negative}")


def check_estimate_target(estimate, target):
    """Raises unless the separation estimate and target come together.

    Example
    -------
    >>> check_estimate_target(None, None)
    >>> check_estimate_target(torch.zeros(1), None)
    Traceback (most recent call last):
    ...
    ValueError: estimate and target go together: got only the estimate
    """
    if (estimate is None) != (target is None):
        raise ValueError(
            "estimate and target go together: got only the "
            + ("estimate" if target is None else "target")
        )


def separation_error(estimate, target, lengths=None, kind="l1"):
    """L1 or squared error between estimate and target on valid frames.

    Arguments
    ---------
    estimate : torch.Tensor
        Estimated target features ``[N, T, F]``.
    target : torch.Tensor
        Clean target features ``[N, T, F]``, same domain and
        normalisation as ``estimate``.
    lengths : torch.Tensor, optional
        Relative lengths ``[N]``; frames beyond them are ignored.
    kind : str
        ``"l1"`` or ``"mse"`` (SpeechBrain's ``l1_loss`` / ``mse_loss``).

    Returns
    -------
    torch.Tensor
        Scalar mean error per valid element, float32.

    Example
    -------
    >>> separation_error(torch.zeros(2, 3, 4), torch.ones(2, 3, 4))
    tensor(1.)
    """
    if estimate.shape != target.shape:
        raise ValueError(
            f"estimate {tuple(estimate.shape)} and target "
            f"{tuple(target.shape)} must have the same shape"
        )
    with torch.autocast(device_type=estimate.device.type, enabled=False):
        return SEPARATION_LOSSES[kind](
            estimate.float(),
            target.float(),
            length=lengths,
            allowed_len_diff=0,
        )


def sinkhorn_knopp(logits, temperature, iterations=3):
    """Balanced, sharpened assignments of rows to prototypes (SwAV, DINOv2).

    Starts from ``softmax(logits / temperature)`` and alternately
    normalises the prototype marginals to ``1 / K`` and the row sums to
    1, so that across the batch every prototype gets (nearly, after a few
    rounds) the same mass. A
    batch can then neither put all rows on one prototype nor leave every
    row uniform, the two ways self-distillation collapses.

    Arguments
    ---------
    logits : torch.Tensor
        ``[N, K]`` teacher logits.
    temperature : float
        Sharpening temperature.
    iterations : int
        Normalisation rounds.

    Returns
    -------
    torch.Tensor
        ``[N, K]``, each row a distribution.

    Example
    -------
    All rows prefer prototype 0; balancing spreads them over both.

    >>> logits = torch.tensor([[1.0, 0.0], [0.9, 0.0], [0.8, 0.0], [0.7, 0.0]])
    >>> assignments = sinkhorn_knopp(logits, temperature=0.1)
    >>> torch.allclose(assignments.sum(dim=1), torch.ones(4))
    True
    >>> assignments.mean(dim=0).round(decimals=2)  # was 0.99 / 0.01
    tensor([0.4900, 0.5100])
    """
    scaled = logits.float() / temperature
    # [K, N]: exp of logits minus the global max (no overflow).
    assignments = (scaled - scaled.max()).exp().T
    n_prototypes, n_rows = assignments.shape
    assignments = assignments / assignments.sum()
    for _ in range(iterations):
        assignments = assignments / assignments.sum(dim=1, keepdim=True)
        assignments = assignments / n_prototypes
        assignments = assignments / assignments.sum(dim=0, keepdim=True)
        assignments = assignments / n_rows
    return (assignments * n_rows).T


def variance_covariance(embeddings, eps=1e-4):
    """VICReg's variance and covariance terms of a batch of embeddings.

    Arguments
    ---------
    embeddings : torch.Tensor
        ``[N, D]`` or ``[N, 1, D]``.
    eps : float
        Added to the variances before the square root.

    Returns
    -------
    tuple of torch.Tensor
        ``mean_d relu(1 - sqrt(var_d + eps))`` and the sum of the squared
        off-diagonal covariances divided by D.

    Example
    -------
    >>> z = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])  # dim 1 never varies
    >>> variance, covariance = variance_covariance(z, eps=0.0)
    >>> variance.item(), covariance.item()
    (0.5, 0.0)
    """
    flat = as_matrix(embeddings).float()
    centred = flat - flat.mean(dim=0, keepdim=True)
    covariance = centred.T @ centred / max(len(flat) - 1, 1)
    std = (covariance.diagonal() + eps).sqrt()
    off_diagonal = covariance - torch.diag_embed(covariance.diagonal())
    return (
        F.relu(1.0 - std).mean(),
        off_diagonal.pow(2).sum() / flat.shape[1],
    )


class CSCLoss(LoggedTerms, torch.nn.Module):
    """Negative-free CSC objective: distillation CE + beta * separation.

    Each student row is paired with the teacher row at the same index
    (e.g. a view's embedding z_v with the teacher's global vector g_v of
    the other views, and the student's g_v with the teacher's z_v; see
    :class:`~speechbrain_ext.tasks.SeparativeCodingTask`). Both sides are
    logits over the same K prototypes
    (:class:`~speechbrain_ext.lobes.PrototypeHead`). With ``c`` the
    running centre of the teacher logits,

        p = softmax((t - c) / tau_t),   q = softmax(s / tau_s),
        L = mean_i CE(p_i, q_i) - lambda * H(mean_i q_i) + beta * L_sep
            + mu * V(z) + nu * C(z),

    and after each training call ``c <- m c + (1 - m) mean_i t_i``. The
    optional mean-entropy term (``lambda``, as in SDPN/MSN) rewards a
    student that uses many prototypes across the batch; centring alone
    usually suffices. V and C are the variance and covariance terms of
    VICReg (Bardes et al., 2022) on the student's embeddings z, as RDINO
    adds them to DINO for speakers: V = mean_d relu(1 - std_d(z)) keeps
    every dimension varying across the batch, C = sum of the squared
    off-diagonal covariances / D decorrelates them; both are off (0) by
    default. The separation loss is the L1 or squared error
    between the mask head's estimate and the clean target's features over
    the valid frames, as SpeechBrain's ``l1_loss`` / ``mse_loss``.

    Everything runs in float32 with autocast disabled. Under DDP,
    ``gather_distributed=True`` gathers the rows of every rank, so the
    centre and the logged bound are those of the global batch; the
    gradient is rescaled for DDP's averaging.

    Arguments
    ---------
    n_prototypes : int
        K, the width of the logits (sizes the centre buffer).
    teacher_temperature : float
        tau_t; low values sharpen the targets (DINO: 0.04-0.07).
    student_temperature : float
        tau_s (DINO: 0.1).
    center_momentum : float
        m of the running centre.
    centering : str
        ``"ema"``: subtract the running centre c (DINO); ``"sinkhorn"``:
        balance the sharpened teacher distributions over the prototypes
        across the batch (:func:`sinkhorn_knopp`, as DINOv2), which holds
        off collapse far more firmly in short trainings; the running
        centre is then neither used nor updated.
    beta : float
        Weight of the separation loss.
    mean_entropy_weight : float
        lambda of the mean-entropy term (0: off).
    variance_weight : float
        mu of the variance term on the embeddings (0: off).
    covariance_weight : float
        nu of the covariance term on the embeddings (0: off).
    separation : str
        "l1" or "mse".
    gather_distributed : bool
        Whether to use the rows of all DDP ranks.
    information_weight : float
        Weight of the distillation cross-entropy (0: the information term
        off, for ablations).
    monitor_interval : int
        Steps between two computations of the collapse monitors (see
        :class:`~speechbrain_ext.losses.monitors.HealthMonitor`).

    Attributes
    ----------
    last_terms : dict
        ``"information"`` (the bound of :func:`distillation_information`,
        nats), ``"cross_entropy"``, ``"teacher_entropy"`` and
        ``"student_entropy"`` (mean per-row entropies: a teacher entropy
        near 0 with a marginal near 0 is collapse to one prototype, near
        log K is collapse to uniform), ``"teacher_marginal_entropy"``
        (entropy of the batch-mean teacher distribution), and when given
        ``"separation"``, ``"emb_std"`` and ``"emb_rank"`` (see
        :func:`~speechbrain_ext.losses.monitors.embedding_health`).

    Example
    -------
    >>> loss = CSCLoss(n_prototypes=4, beta=0.5)
    >>> student = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0]])
    >>> teacher = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    >>> estimate, target = torch.zeros(2, 5, 3), torch.ones(2, 5, 3)
    >>> value = loss(student, teacher, estimate, target)
    >>> terms = loss.last_terms
    >>> terms["separation"]
    1.0
    >>> abs(value.item() - (terms["cross_entropy"] + 0.5)) < 1e-5
    True
    >>> loss.center[0, :2]  # moved 10% of the way to the batch mean
    tensor([0.0500, 0.0500])
    """

    def __init__(
        self,
        n_prototypes,
        teacher_temperature=0.04,
        student_temperature=0.1,
        center_momentum=0.9,
        centering="ema",
        beta=1.0,
        mean_entropy_weight=0.0,
        variance_weight=0.0,
        covariance_weight=0.0,
        separation="l1",
        gather_distributed=False,
        information_weight=1.0,
        monitor_interval=10,
    ):
        super().__init__()
        check_weights(
            separation,
            information_weight=information_weight,
            beta=beta,
            mean_entropy_weight=mean_entropy_weight,
            variance_weight=variance_weight,
            covariance_weight=covariance_weight,
        )
        if teacher_temperature <= 0 or student_temperature <= 0:
            raise ValueError(
                "temperatures must be positive, got teacher "
                f"{teacher_temperature} and student {student_temperature}"
            )
        if centering not in CENTERINGS:
            raise ValueError(
                f"centering must be one of {CENTERINGS}, got {centering!r}"
            )
        if not 0.0 <= center_momentum < 1.0:
            raise ValueError(
                f"center_momentum must be in [0, 1), got {center_momentum}"
            )
        self.teacher_temperature = float(teacher_temperature)
        self.student_temperature = float(student_temperature)
        self.center_momentum = float(center_momentum)
        self.centering = centering
        self.information_weight = float(information_weight)
        self.beta = float(beta)
        self.mean_entropy_weight = float(mean_entropy_weight)
        self.variance_weight = float(variance_weight)
        self.covariance_weight = float(covariance_weight)
        self.separation = separation
        self.gather_distributed = gather_distributed
        self.health = HealthMonitor(monitor_interval)
        self.register_buffer("center", torch.zeros(1, int(n_prototypes)))

    def teacher_probabilities(self, teacher_logits):
        """Centred (or balanced), sharpened teacher distributions ``[N, K]``."""
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(teacher_logits, self.teacher_temperature)
        centred = teacher_logits.float() - self.center
        return F.softmax(centred / self.teacher_temperature, dim=1)

    def student_log_probabilities(self, student_logits):
        """Student log-distributions ``[N, K]``."""
        return F.log_softmax(
            student_logits.float() / self.student_temperature, dim=1
        )

    def information(self, student_logits, teacher_logits):
        """The bound of :func:`distillation_information` for paired logits.

        Arguments
        ---------
        student_logits : torch.Tensor
            ``[N, K]``.
        teacher_logits : torch.Tensor
            ``[N, K]``, row i paired with the student's row i.

        Returns
        -------
        torch.Tensor
            Scalar, nats.
        """
        with torch.autocast(
            device_type=student_logits.device.type, enabled=False
        ):
            return distillation_information(
                self.teacher_probabilities(teacher_logits),
                self.student_log_probabilities(student_logits),
            )

    def separation_loss(self, estimate, target, lengths=None):
        """See :func:`separation_error` (with this loss's ``separation``)."""
        return separation_error(estimate, target, lengths, self.separation)

    def forward(
        self,
        student_logits,
        teacher_logits,
        estimate=None,
        target=None,
        lengths=None,
        embeddings=None,
    ):
        """Computes the loss of one batch.

        Arguments
        ---------
        student_logits : torch.Tensor
            ``[N, K]`` prototype logits of the student rows.
        teacher_logits : torch.Tensor
            ``[N, K]`` prototype logits of the paired teacher rows (no
            gradient flows into them).
        estimate : torch.Tensor, optional
            Mask-head estimate ``[M, T, F]``; with it, ``target`` is
            required. Without both, the loss is the distillation alone.
        target : torch.Tensor, optional
            Clean target features ``[M, T, F]``.
        lengths : torch.Tensor, optional
            Relative lengths ``[M]`` of ``estimate`` / ``target``.
        embeddings : torch.Tensor, optional
            Student embeddings, only for the health monitors.

        Returns
        -------
        torch.Tensor
            The scalar loss, float32.
        """
        check_estimate_target(estimate, target)
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student logits {tuple(student_logits.shape)} and teacher "
                f"logits {tuple(teacher_logits.shape)} must pair row by row"
            )
        if student_logits.shape[1] != self.center.shape[1]:
            raise ValueError(
                f"logits have {student_logits.shape[1]} prototypes, the "
                f"loss was built for n_prototypes={self.center.shape[1]}"
            )
        teacher_logits = teacher_logits.detach()
        if self.gather_distributed:
            student_logits = gather_with_grad(student_logits)
            teacher_logits = gather_with_grad(teacher_logits)
        with torch.autocast(
            device_type=student_logits.device.type, enabled=False
        ):
            teacher = self.teacher_probabilities(teacher_logits)
            log_student = self.student_log_probabilities(student_logits)
            student = log_student.exp()
            cross_entropy = -(teacher * log_student).sum(dim=1).mean()
            student_marginal = entropy(student.mean(dim=0))
        loss = (
            self.information_weight * cross_entropy
            - self.mean_entropy_weight * student_marginal
        )
        if self.gather_distributed:
            loss = scale_gradient_by_world_size(loss)
        teacher_marginal = entropy(teacher.mean(dim=0))
        terms = {
            "information": (teacher_marginal - cross_entropy).detach(),
            "cross_entropy": cross_entropy.detach(),
            "teacher_entropy": entropy(teacher).mean().detach(),
            "student_entropy": entropy(student).mean().detach(),
            "teacher_marginal_entropy": teacher_marginal.detach(),
        }
        if estimate is not None:
            separation = self.separation_loss(estimate, target, lengths)
            terms["separation"] = separation.detach()
            loss = loss + self.beta * separation
        if embeddings is not None:
            loss = loss + self._embedding_terms(embeddings, terms)
        if self.training and self.centering == "ema":
            self._update_center(teacher_logits)
        self.last_term_tensors = terms
        return loss

    def _embedding_terms(self, embeddings, terms):
        """Logs the collapse monitors; returns the weighted VICReg terms."""
        # Covariances in bfloat16 would round away the variance term.
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            terms.update(self.health(embeddings))
            if not (self.variance_weight or self.covariance_weight):
                return 0.0
            variance, covariance = variance_covariance(embeddings)
        terms["variance"] = variance.detach()
        terms["covariance"] = covariance.detach()
        return (
            self.variance_weight * variance
            + self.covariance_weight * covariance
        )

    @torch.no_grad()
    def _update_center(self, teacher_logits):
        """Moves the centre toward the batch mean of the teacher logits."""
        batch_mean = teacher_logits.float().mean(dim=0, keepdim=True)
        self.center.mul_(self.center_momentum).add_(
            batch_mean, alpha=1.0 - self.center_momentum
        )
