"""Contrastive separative coding loss: L = -I(z; g) + beta * L_separation.

CSC (Wang et al., ICASSP 2021, arXiv 2103.00816) maximises the mutual
information between each view's representation z_v and the global speaker
vector g_v aggregated from the other views of the same target, without
negative samples, and adds the separation loss of the encoder's mask head.
The paper's estimator is not public; this module uses the Gaussian one of
METHODS.md: z and g are treated as jointly Gaussian over the batch and

    I_G(z; g) = 1/2 [log det S_z + log det S_g - log det S_[z;g]]

with shrinkage-regularised covariances.

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
from speechbrain_ext.losses.terms import LoggedTerms

__all__ = ["CSCLoss", "gaussian_mutual_information"]

SEPARATION_LOSSES = {"l1": l1_loss, "mse": mse_loss}


def _as_matrix(name, tensor):
    """Brings ``[N, D]`` or ``[N, 1, D]`` to ``[N, D]``."""
    if tensor.dim() == 3 and tensor.shape[1] == 1:
        tensor = tensor.squeeze(1)
    if tensor.dim() != 2:
        raise ValueError(
            f"{name} must be [N, D] or [N, 1, D], got shape "
            f"{tuple(tensor.shape)}"
        )
    return tensor


def _logdet(matrix):
    """log det of a symmetric positive definite matrix, via Cholesky."""
    factor = torch.linalg.cholesky(matrix)
    return 2.0 * factor.diagonal().log().sum()


def gaussian_mutual_information(z, g, shrinkage=0.1, eps=1e-6):
    """Mutual information (nats) of z and g if they were jointly Gaussian.

    With C the sample covariance of the rows of ``[z, g]`` (blocks C_z,
    C_g, C_zg), the covariance is shrunk toward a block-diagonal scaled
    identity,

        S = (1 - a) C + a blockdiag(tr(C_z)/d_z I, tr(C_g)/d_g I) + eps I,

    and I = 1/2 [log det S_z + log det S_g - log det S], where S_z and S_g
    are the diagonal blocks of S (i.e. the shrunk marginal covariances).
    Consequences:

    * I >= 0 (Fischer's inequality), with I = 0 when the cross-covariance
      is 0, e.g. when g is constant (collapsed): a collapsed g cannot
      score, whatever its scale.
    * I = -1/2 sum_i log(1 - rho_i^2) over the canonical correlations
      rho_i of S, each strictly below 1 because the shrinkage keeps S
      positive definite: I stays finite even for z = g, and a rank-r g
      has at most r non-zero rho_i. Concentrating the batch variance in
      few directions does not pay: for z = g of rank r with equal
      variances, rho = (1 - a) / (1 - a + a r / d), which for d = 192 and
      a = 0.1 gives I of about 3.4 nats at r = 1 against 159 at r = d.
    * I is unchanged by rescaling z or g (the shrinkage targets scale
      with them), apart from ``eps``, which only keeps S positive definite
      when a block has (near) zero variance.
    * With a > 0, S is positive definite even when N <= d_z + d_g, where
      the sample covariance is singular (e.g. 192-d embeddings in batches
      of 128); with a = 0 and eps = 0 such a batch has no Cholesky factor.

    In one dimension, with r the sample correlation, this is
    I = -1/2 log(1 - (1 - a)^2 r^2) (up to ``eps``).

    Arguments
    ---------
    z : torch.Tensor
        ``[N, d_z]``, one row per sample.
    g : torch.Tensor
        ``[N, d_g]``, paired row by row with ``z``.
    shrinkage : float
        The shrinkage a in [0, 1]; 0 uses the sample covariance as is.
    eps : float
        Ridge added to S's diagonal.

    Returns
    -------
    torch.Tensor
        Scalar I in nats, in the dtype of the inputs.

    Example
    -------
    >>> z = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])
    >>> g = torch.tensor([[1.75], [0.25], [-0.25], [-1.75]])  # r = 0.8
    >>> gaussian_mutual_information(z, g, shrinkage=0.0, eps=0.0)
    tensor(0.5108)
    """
    n_samples, dim_z = z.shape
    dim_g = g.shape[1]
    joint = torch.cat([z, g], dim=1)
    centered = joint - joint.mean(dim=0, keepdim=True)
    covariance = centered.T @ centered / (n_samples - 1)
    variances = covariance.diagonal()
    scale_z = variances[:dim_z].mean()
    scale_g = variances[dim_z:].mean()
    target = torch.cat(
        [scale_z.expand(dim_z), scale_g.expand(dim_g)]
    ).diag_embed()
    identity = torch.eye(dim_z + dim_g, dtype=z.dtype, device=z.device)
    shrunk = (1 - shrinkage) * covariance + shrinkage * target + eps * identity
    return 0.5 * (
        _logdet(shrunk[:dim_z, :dim_z])
        + _logdet(shrunk[dim_z:, dim_z:])
        - _logdet(shrunk)
    )


class CSCLoss(LoggedTerms, torch.nn.Module):
    """Negative-free CSC objective: -I_G(z; g) + beta * separation loss.

    ``z`` holds each view's own representation and ``g`` the global
    speaker vector of the same view (e.g. ``CrossViewAttention``'s output,
    back in the stacked-views row order). The mutual information is
    estimated over the N rows of the batch by
    :func:`gaussian_mutual_information`: maximising it makes g
    predictable from z *and* keeps g's batch covariance full-rank, because
    a collapsed g has no covariance with z and scores I = 0 (see that
    function for why the shrinkage keeps this true in high dimension).
    The separation loss is the L1 or squared error between the mask head's
    estimate and the clean target's features, averaged over the valid
    frames (``lengths``) and features, as SpeechBrain's ``l1_loss`` /
    ``mse_loss`` do.

    Scales: I is in nats and grows with the dimension (at most about
    ``0.83 * d`` for a = 0.1); the separation loss is in feature units (dB
    for SpeechBrain's ``Fbank``). ``beta`` balances the two.

    Everything runs in float32 with autocast disabled, so half-precision
    inputs and mixed-precision training give the float32 value.

    Under DDP, ``gather_distributed=True`` gathers the z and g rows of all
    ranks (:func:`~speechbrain_ext.distributed.gather_with_grad`), so the
    covariances are estimated over the global batch, and rescales the
    MI's gradient for DDP's averaging. The separation loss stays local:
    it is a mean over rows, which DDP's averaging already turns into the
    global mean (exactly so when the ranks have as many valid frames; a
    mean of the ranks' means otherwise). One DDP step then equals the
    single-process step on the global batch. Every rank must hold the
    same number of rows. Without a process group the option does nothing.

    Arguments
    ---------
    beta : float
        Weight of the separation loss.
    shrinkage : float
        Covariance shrinkage a in [0, 1].
    separation : str
        "l1" or "mse".
    normalize : bool
        Whether to L2-normalise the rows of z and g before the estimate
        (the MI is then that of the directions, which cosine scoring uses).
    eps : float
        Ridge of the covariance, see :func:`gaussian_mutual_information`.
    gather_distributed : bool
        Whether to estimate the MI over the batches of all DDP ranks.

    Attributes
    ----------
    last_terms : dict
        ``"mi"`` (nats; of the global batch with ``gather_distributed``)
        and, when an estimate was given, ``"separation"`` of the last
        call, as floats for logging (``last_term_tensors``: detached
        tensors, read without a device sync).

    Example
    -------
    >>> generator = torch.Generator().manual_seed(0)
    >>> z = torch.randn(64, 4, generator=generator)
    >>> g = z + 0.5 * torch.randn(64, 4, generator=generator)
    >>> estimate, target = torch.zeros(64, 10, 3), torch.ones(64, 10, 3)
    >>> loss = CSCLoss(beta=0.5)
    >>> value = loss(z, g, estimate, target)
    >>> terms = loss.last_terms
    >>> terms["separation"]
    1.0
    >>> abs(value.item() - (-terms["mi"] + 0.5 * 1.0)) < 1e-5
    True
    >>> collapsed = torch.ones(64, 4)  # g carries no information about z
    >>> abs(loss(z, collapsed).item()) < 1e-6
    True
    """

    def __init__(
        self,
        beta=1.0,
        shrinkage=0.1,
        separation="l1",
        normalize=False,
        eps=1e-6,
        gather_distributed=False,
    ):
        super().__init__()
        if separation not in SEPARATION_LOSSES:
            raise ValueError(
                f"separation must be one of {sorted(SEPARATION_LOSSES)}, "
                f"got {separation!r}"
            )
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.beta = float(beta)
        self.shrinkage = float(shrinkage)
        self.separation = separation
        self.normalize = normalize
        self.eps = float(eps)
        self.gather_distributed = gather_distributed

    def mutual_information(self, z, g):
        """Returns the Gaussian MI estimate (nats) of paired rows.

        Arguments
        ---------
        z : torch.Tensor
            ``[N, D]`` or ``[N, 1, D]``.
        g : torch.Tensor
            ``[N, D']`` or ``[N, 1, D']``.

        Returns
        -------
        torch.Tensor
            Scalar, float32.
        """
        z = _as_matrix("z", z)
        g = _as_matrix("g", g)
        if z.shape[0] != g.shape[0]:
            raise ValueError(f"z has {z.shape[0]} rows but g has {g.shape[0]}")
        if z.shape[0] < 2:
            raise ValueError(
                f"the MI estimate needs at least 2 rows, got {z.shape[0]}"
            )
        with torch.autocast(device_type=z.device.type, enabled=False):
            z, g = z.float(), g.float()
            if self.normalize:
                z, g = F.normalize(z, dim=1), F.normalize(g, dim=1)
            return gaussian_mutual_information(
                z, g, shrinkage=self.shrinkage, eps=self.eps
            )

    def separation_loss(self, estimate, target, lengths=None):
        """Returns the L1 / MSE between estimate and target on valid frames.

        Arguments
        ---------
        estimate : torch.Tensor
            Estimated target features ``[N, T, F]``.
        target : torch.Tensor
            Clean target features ``[N, T, F]``, same domain and
            normalisation as ``estimate``.
        lengths : torch.Tensor, optional
            Relative lengths ``[N]``; frames beyond them are ignored.

        Returns
        -------
        torch.Tensor
            Scalar mean error per valid element, float32.
        """
        if estimate.shape != target.shape:
            raise ValueError(
                f"estimate {tuple(estimate.shape)} and target "
                f"{tuple(target.shape)} must have the same shape"
            )
        with torch.autocast(device_type=estimate.device.type, enabled=False):
            return SEPARATION_LOSSES[self.separation](
                estimate.float(),
                target.float(),
                length=lengths,
                allowed_len_diff=0,
            )

    def forward(self, z, g, estimate=None, target=None, lengths=None):
        """Computes the loss of one batch.

        Arguments
        ---------
        z : torch.Tensor
            Per-view representations ``[N, D]`` or ``[N, 1, D]``.
        g : torch.Tensor
            Global speaker vectors ``[N, D']`` or ``[N, 1, D']``, row i
            belonging to the same view as ``z``'s row i.
        estimate : torch.Tensor, optional
            Mask-head estimate ``[N, T, F]``; with it, ``target`` is
            required. Without both, the loss is -I alone.
        target : torch.Tensor, optional
            Clean target features ``[N, T, F]``.
        lengths : torch.Tensor, optional
            Relative lengths ``[N]`` of ``estimate`` / ``target``.

        Returns
        -------
        torch.Tensor
            The scalar loss, float32.
        """
        if (estimate is None) != (target is None):
            raise ValueError(
                "estimate and target go together: got only the "
                + ("estimate" if target is None else "target")
            )
        if self.gather_distributed:
            z = gather_with_grad(_as_matrix("z", z))
            g = gather_with_grad(_as_matrix("g", g))
        mutual_information = self.mutual_information(z, g)
        loss = -mutual_information
        if self.gather_distributed:
            loss = scale_gradient_by_world_size(loss)
        terms = {"mi": mutual_information.detach()}
        if estimate is not None:
            separation = self.separation_loss(estimate, target, lengths)
            terms["separation"] = separation.detach()
            loss = loss + self.beta * separation
        self.last_term_tensors = terms
        return loss
