"""CSC with a VICReg information term between z_v and g_v.

The CSC objective asks each interfered view's embedding z_v to share as
much information as possible with the global speaker vector g_v that the
aggregator builds from the *other* views of the same target, without
negatives. :class:`CSCInfoMaxLoss` maximises that information the way
VICReg (Bardes, Ponce and LeCun, ICLR 2022) does between two branches:

- invariance: the mean squared error between z_v and g_v pulls each pair
  together;
- variance: a hinge keeps the standard deviation of every dimension of z
  and of g at or above 1 across the batch, so the pair cannot agree by
  both collapsing to a constant;
- covariance: the squared off-diagonal covariances of z and of g push
  their dimensions apart, so the information is spread, not repeated.

Shwartz-Ziv et al. (NeurIPS 2023, arXiv 2303.00633) derive this objective
as maximising a lower bound on I(z; g): the variance and covariance terms
raise the (Gaussian) entropy of each branch, the invariance term lowers
the conditional entropy of one given the other. Unlike self-distillation
it needs no teacher, no prototypes and no centring, and it is known to
work at batches of a few hundred rows, which is where a benchmark on two
CPU cores lives. Plus, as in every CSC, beta times the separation loss of
the encoder's mask head.

Authors
 * speechbrain_ext contributors
"""

import torch
import torch.nn.functional as F

from speechbrain_ext.distributed import (
    gather_with_grad,
    scale_gradient_by_world_size,
)
from speechbrain_ext.lobes.cross_attention import unstack_views
from speechbrain_ext.losses.csc import (
    check_estimate_target,
    check_weights,
    separation_error,
    variance_covariance,
)
from speechbrain_ext.losses.monitors import HealthMonitor
from speechbrain_ext.losses.shapes import as_matrix
from speechbrain_ext.losses.terms import LoggedTerms

__all__ = ["CSCInfoMaxLoss", "cross_correlation"]

CRITERIA = ("vicreg", "barlow")


def cross_correlation(z, g, eps=1e-5):
    """Cross-correlation matrix ``[D, D]`` of two batches of vectors.

    Each dimension is standardised over the batch; entry (i, j) is the
    correlation of z's dimension i with g's dimension j.

    Example
    -------
    >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    >>> cross_correlation(z, 2 * z + 3).diagonal().round(decimals=3)
    tensor([1., 1.])
    """
    z = (z - z.mean(0)) / (z.std(0) + eps)
    g = (g - g.mean(0)) / (g.std(0) + eps)
    return z.T @ g / (len(z) - 1)


class CSCInfoMaxLoss(LoggedTerms, torch.nn.Module):
    """Negative-free CSC objective: VICReg between z and g + separation.

    With z and g the ``[N, D]`` embeddings and global vectors of the N
    view rows (row i of z paired with row i of g),

        L = lambda * mean((z - g) ** 2)
            + mu * (V(z) + V(g)) / 2 + nu * (C(z) + C(g))
            + beta * L_sep,

    where V(x) = mean_d relu(1 - sqrt(var_d(x) + eps)) and C(x) = sum of
    the squared off-diagonal covariances of x / D (VICReg's terms and
    weighting: its default 25 / 25 / 1 is 1 / 1 / 0.04 here). Each
    weight may be 0: ``information_weight`` = ``variance_weight`` =
    ``covariance_weight`` = 0 leaves the separation loss alone, ``beta``
    = 0 the information term alone.

    Everything runs in float32 with autocast disabled (the covariances
    would lose the variance term in bfloat16). Under DDP,
    ``gather_distributed=True`` computes the variance and covariance over
    the global batch; the gradient is rescaled for DDP's averaging.

    Arguments
    ---------
    information_weight : float
        lambda, the invariance weight.
    variance_weight : float
        mu.
    covariance_weight : float
        nu.
    beta : float
        Weight of the separation loss.
    separation : str
        "l1" or "mse".
    gather_distributed : bool
        Whether to use the rows of all DDP ranks.
    criterion : str
        "vicreg" or "barlow".
    monitor_interval : int
        Steps between two computations of the collapse monitors (see
        :class:`~speechbrain_ext.losses.monitors.HealthMonitor`).

    Attributes
    ----------
    last_terms : dict
        ``"invariance"``, ``"variance"``, ``"covariance"`` (unweighted, z
        and g together), ``"separation"`` when given, and the collapse
        monitors ``"emb_std"`` and ``"emb_rank"`` of z (see
        :func:`~speechbrain_ext.losses.monitors.embedding_health`).

    Example
    -------
    z equal to g, two dimensions of standard deviation 2 and uncorrelated:
    only the separation term is left.

    >>> loss = CSCInfoMaxLoss(beta=0.5)
    >>> z = torch.tensor([[2.0, 2.0], [-2.0, -2.0], [2.0, -2.0], [-2, 2]])
    >>> z = z * 3**0.5 / 2  # unbiased std exactly 2
    >>> estimate, target = torch.zeros(4, 5, 3), torch.ones(4, 5, 3)
    >>> value = loss(z, z.clone(), estimate, target)
    >>> round(value.item(), 4), loss.last_terms["invariance"]
    (0.5, 0.0)
    """

    def __init__(
        self,
        information_weight=1.0,
        variance_weight=1.0,
        covariance_weight=0.04,
        beta=1.0,
        separation="l1",
        gather_distributed=False,
        criterion="vicreg",
        monitor_interval=10,
    ):
        super().__init__()
        if criterion not in CRITERIA:
            raise ValueError(
                f"criterion must be one of {CRITERIA}, got {criterion!r}"
            )
        self.criterion = criterion
        check_weights(
            separation,
            information_weight=information_weight,
            variance_weight=variance_weight,
            covariance_weight=covariance_weight,
            beta=beta,
        )
        self.information_weight = float(information_weight)
        self.variance_weight = float(variance_weight)
        self.covariance_weight = float(covariance_weight)
        self.beta = float(beta)
        self.separation = separation
        self.gather_distributed = gather_distributed
        self.health = HealthMonitor(monitor_interval)

    def forward(
        self, z, g, estimate=None, target=None, lengths=None, n_views=1
    ):
        """Computes the loss of one batch.

        Arguments
        ---------
        z : torch.Tensor
            ``[N, D]`` (or ``[N, 1, D]``) view embeddings.
        g : torch.Tensor
            Global speaker vectors, row i paired with z's row i.
        estimate : torch.Tensor, optional
            Mask-head estimate ``[M, T, F]``; with it, ``target`` is
            required.
        target : torch.Tensor, optional
            Clean target features ``[M, T, F]``.
        lengths : torch.Tensor, optional
            Relative lengths ``[M]`` of ``estimate`` / ``target``.
        n_views : int
            Views per target, when z and g are SpeechBrain's stacked view
            rows ``[view 0 of every target; view 1 ...]``: the terms are
            then computed per view position and averaged (see the class
            docstring).

        Returns
        -------
        torch.Tensor
            The scalar loss, float32.
        """
        check_estimate_target(estimate, target)
        z, g = as_matrix(z), as_matrix(g)
        if z.shape != g.shape:
            raise ValueError(
                f"z {tuple(z.shape)} and g {tuple(g.shape)} must pair row "
                "by row"
            )
        terms = self.health(z.detach())
        # [targets, views, D]: targets are gathered across ranks, and each
        # view position keeps its own batch statistics.
        z, g = unstack_views(z, n_views), unstack_views(g, n_views)
        if self.gather_distributed:
            z, g = gather_with_grad(z), gather_with_grad(g)
        with torch.autocast(device_type=z.device.type, enabled=False):
            z, g = z.float(), g.float()
            terms_of = (
                self._barlow_terms
                if self.criterion == "barlow"
                else self._vicreg_terms
            )
            positions = [terms_of(z[:, v], g[:, v]) for v in range(n_views)]
            parts = {
                name: torch.stack([p[name] for p in positions]).mean()
                for name in positions[0]
            }
            loss = (
                self.information_weight * parts["invariance"]
                + self.variance_weight * parts.get("variance", 0.0)
                + self.covariance_weight * parts["covariance"]
            )
        if self.gather_distributed:
            loss = scale_gradient_by_world_size(loss)
        terms.update({name: value.detach() for name, value in parts.items()})
        if estimate is not None:
            separation = separation_error(
                estimate, target, lengths, self.separation
            )
            terms["separation"] = separation.detach()
            loss = loss + self.beta * separation
        self.last_term_tensors = terms
        return loss

    @staticmethod
    def _vicreg_terms(z, g):
        """VICReg's invariance, variance (mean of both) and covariance."""
        variance_z, covariance_z = variance_covariance(z)
        variance_g, covariance_g = variance_covariance(g)
        # Centred: what every row of a view position shares is not
        # information about its target.
        return {
            "invariance": F.mse_loss(z - z.mean(0), g - g.mean(0)),
            "variance": (variance_z + variance_g) / 2,
            "covariance": covariance_z + covariance_g,
        }

    @staticmethod
    def _barlow_terms(z, g):
        """Barlow Twins: mean (1 - C_ii)^2 and sum C_ij^2 (i != j) / D."""
        correlation = cross_correlation(z, g)
        diagonal = correlation.diagonal()
        off_diagonal = correlation - torch.diag_embed(diagonal)
        return {
            "invariance": (1 - diagonal).pow(2).mean(),
            "covariance": off_diagonal.pow(2).sum() / len(diagonal),
        }
