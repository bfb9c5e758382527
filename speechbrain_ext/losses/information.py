"""A held-out estimate of I(z; g) that a training log can be trusted with.

CSC's objective is about the information a view's embedding z shares with
the global speaker vector g aggregated from the other views of the same
target. :func:`gaussian_information` estimates it on a batch of (z, g)
pairs so that the estimate means something at the small batches of a
benchmark:

1. the rows are split by target into two halves;
2. on the first half, z and g are each projected on their top ``dims``
   principal directions (a projection can only lose information:
   I(Pz; Qg) <= I(z; g));
3. on the second half, the projections' joint covariance gives the
   mutual information of jointly Gaussian variables with that covariance,
   ``0.5 * (log det S_zz + log det S_gg - log det S)``, in nats.

Fitting the projections on other rows than the ones scored keeps the
estimate from rewarding directions that happen to correlate in one batch;
with rows far exceeding ``dims`` its finite-sample bias is about
``dims ** 2 / (2 n)`` nats. :func:`shuffled_partners` pairs every z with
the g of another target: the same estimate on those pairs measures that
bias and must stay near 0, so the two together tell an information term
that works from one that does nothing.

Authors
 * speechbrain_ext contributors
"""

import torch

__all__ = ["gaussian_information", "shuffled_partners"]


def _top_directions(centred, dims):
    """The ``dims`` leading right singular vectors ``[D, dims]``."""
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return vh[:dims].T


def gaussian_information(z, g, dims=4, min_rows_per_dim=10):
    """Held-out Gaussian estimate of I(z; g) in nats on paired rows.

    Arguments
    ---------
    z : torch.Tensor
        ``[targets, views, D]`` (or ``[N, D]``: one view per target).
    g : torch.Tensor
        Same shape; ``g[t, v]`` is paired with ``z[t, v]``.
    dims : int
        Principal directions kept per side (fewer when the rows are few).
    min_rows_per_dim : int
        Scored rows per kept direction: ``dims`` shrinks to
        ``scored rows // min_rows_per_dim`` when the batch is small.

    Returns
    -------
    float
        The estimate (nats); 0.0 for a degenerate batch.

    Example
    -------
    g carries half of z's first two dimensions plus noise: the estimate is
    close to the true 2 * 0.5 * log(2) = 0.69 nats; unrelated rows score
    about 0.

    >>> gen = torch.Generator().manual_seed(0)
    >>> z = torch.randn(4000, 2, 8, generator=gen)
    >>> g = z.clone()
    >>> g[..., :2] += torch.randn(4000, 2, 2, generator=gen)
    >>> g[..., 2:] = torch.randn(4000, 2, 6, generator=gen)
    >>> z[..., :2] *= 3  # the shared dimensions lead the principal axes
    >>> g[..., :2] *= 3
    >>> round(gaussian_information(z, g, dims=2), 1)
    0.7
    >>> other = torch.randn(4000, 2, 8, generator=gen)
    >>> abs(gaussian_information(z, other, dims=2)) < 0.01
    True
    """
    if z.shape != g.shape:
        raise ValueError(
            f"z {tuple(z.shape)} and g {tuple(g.shape)} must pair row by row"
        )
    if z.dim() == 2:
        z, g = z.unsqueeze(1), g.unsqueeze(1)
    z, g = z.detach().double().cpu(), g.detach().double().cpu()
    # Whole targets go to one half: views of a target share more than the
    # pair being measured.
    fit_z, fit_g = z[0::2].flatten(0, 1), g[0::2].flatten(0, 1)
    test_z, test_g = z[1::2].flatten(0, 1), g[1::2].flatten(0, 1)
    dims = min(dims, len(test_z) // min_rows_per_dim, z.shape[-1])
    if dims < 1 or len(fit_z) < 2:
        return 0.0
    proj_z = _top_directions(fit_z - fit_z.mean(0), dims)
    proj_g = _top_directions(fit_g - fit_g.mean(0), dims)
    joint = torch.cat([test_z @ proj_z, test_g @ proj_g], dim=1)
    covariance = torch.cov(joint.T)
    _, log_det_z = torch.linalg.slogdet(covariance[:dims, :dims])
    _, log_det_g = torch.linalg.slogdet(covariance[dims:, dims:])
    sign, log_det = torch.linalg.slogdet(covariance)
    if sign <= 0 or not torch.isfinite(log_det):
        return 0.0
    return float(0.5 * (log_det_z + log_det_g - log_det))


def shuffled_partners(g, generator=None):
    """g re-paired with other targets: ``out[t] = g[perm[t]]``, perm(t) != t.

    The permutation is a random cyclic shift of a random order of the
    targets, so no target keeps its own g and every g is used once.

    Arguments
    ---------
    g : torch.Tensor
        ``[targets, ...]``, at least 2 targets.
    generator : torch.Generator, optional
        Source of the permutation.

    Returns
    -------
    torch.Tensor
        Same shape as ``g``.

    Example
    -------
    >>> g = torch.arange(5.0)
    >>> shuffled = shuffled_partners(g, torch.Generator().manual_seed(0))
    >>> bool((shuffled != g).all()), sorted(shuffled.tolist())
    (True, [0.0, 1.0, 2.0, 3.0, 4.0])
    """
    n_targets = len(g)
    if n_targets < 2:
        raise ValueError("shuffling needs at least 2 targets")
    order = torch.randperm(n_targets, generator=generator)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)
    return g[partner.to(g.device)]
