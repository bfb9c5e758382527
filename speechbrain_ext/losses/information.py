"""A held-out estimate of I(z; g) that a training log can be trusted with.

CSC's objective is about the information a view's embedding z shares with
the global speaker vector g aggregated from the other views of the same
target. :func:`gaussian_information` estimates it on a batch of (z, g)
pairs so that the estimate means something at the small batches of a
benchmark:

1. the rows are split by target into two halves (or the directions below
   are fitted on other pairs, e.g. the training batches');
2. on the first half, z and g are each reduced to their leading principal
   directions, and canonical correlation analysis between the two finds
   the ``dims`` pairs of directions along which z and g agree most (a
   projection can only lose information: I(Pz; Qg) <= I(z; g));
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


def _whitening(centred, dims):
    """``[D, dims]``: the leading principal directions, scaled to unit
    variance (directions of negligible variance are dropped)."""
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    keep = singular[:dims] > singular[0] * 1e-6
    scale = (len(centred) - 1) ** 0.5 / singular[:dims][keep]
    return vh[:dims][keep].T * scale


def _centre_views(x):
    """``[targets, views, D]`` -> ``[targets * views, D]``, each view
    position centred on its own mean."""
    return (x - x.mean(dim=0, keepdim=True)).flatten(0, 1)


def canonical_directions(z, g, dims, pca_dims):
    """Projections ``[D, k]`` of z and of g with the largest correlation.

    Each side is whitened on its ``pca_dims`` leading principal
    directions; the SVD of the whitened cross-covariance gives the
    canonical pairs, of which the ``dims`` first are kept.
    """
    white_z = _whitening(z - z.mean(0), pca_dims)
    white_g = _whitening(g - g.mean(0), pca_dims)
    cross = (z - z.mean(0)) @ white_z
    cross = cross.T @ ((g - g.mean(0)) @ white_g) / (len(z) - 1)
    u, _, vh = torch.linalg.svd(cross, full_matrices=False)
    return white_z @ u[:, :dims], white_g @ vh[:dims].T


def gaussian_information(
    z, g, dims=2, fit=None, min_rows_per_dim=10, pca_dims=32
):
    """Held-out Gaussian estimate of I(z; g) in nats on paired rows.

    Arguments
    ---------
    z : torch.Tensor
        ``[targets, views, D]`` (or ``[N, D]``: one view per target).
    g : torch.Tensor
        Same shape; ``g[t, v]`` is paired with ``z[t, v]``.
    dims : int
        Canonical directions kept per side (fewer when the rows are few).
    fit : tuple of torch.Tensor, optional
        ``(z, g)`` pairs of other targets, shaped like ``z`` and ``g``
        but for their number of targets, on which the directions are
        fitted (e.g. training batches); then every row of ``z`` and ``g``
        is scored. Without it, the targets are split in two halves, one
        to fit and one to score.
    min_rows_per_dim : int
        Rows per direction: ``dims`` (and ``pca_dims``) shrink when the
        scored (fitting) rows are few.
    pca_dims : int
        Principal directions each side is reduced to before the canonical
        analysis, so that it is not fitted to noise.

    Returns
    -------
    float
        The estimate (nats); 0.0 for a degenerate batch.

    Example
    -------
    g carries z's first two dimensions plus as much noise: the estimate is
    close to the true 2 * 0.5 * log(2) = 0.69 nats; unrelated rows score
    about 0.

    >>> gen = torch.Generator().manual_seed(0)
    >>> z = torch.randn(4000, 2, 8, generator=gen)
    >>> g = torch.randn(4000, 2, 8, generator=gen)
    >>> g[..., :2] += z[..., :2]
    >>> round(gaussian_information(z, g, dims=2), 1)
    0.7
    >>> other = torch.randn(4000, 2, 8, generator=gen)
    >>> abs(gaussian_information(z, other, dims=2)) < 0.01
    True
    >>> round(
    ...     gaussian_information(z[:2000], g[:2000], fit=(z[2000:], g[2000:])),
    ...     1,
    ... )
    0.7
    """
    z, g = _as_views(z, g)
    if fit is None:
        # Whole targets go to one half: views of a target share more than
        # the pair being measured.
        fit_z, fit_g, z, g = z[0::2], g[0::2], z[1::2], g[1::2]
    else:
        fit_z, fit_g = _as_views(*fit)
    # Each view position is centred on its own: the position (e.g. first
    # or second segment of a crop) is known by construction and shared by
    # every pair, matched or not.
    fit_z, fit_g = _centre_views(fit_z), _centre_views(fit_g)
    test_z, test_g = _centre_views(z), _centre_views(g)
    pca_dims = min(pca_dims, len(fit_z) // min_rows_per_dim, z.shape[-1])
    dims = min(dims, len(test_z) // min_rows_per_dim, pca_dims)
    if dims < 1:
        return 0.0
    proj_z, proj_g = canonical_directions(fit_z, fit_g, dims, pca_dims)
    dims = min(proj_z.shape[1], proj_g.shape[1])
    if dims < 1:
        return 0.0
    joint = torch.cat([test_z @ proj_z[:, :dims], test_g @ proj_g[:, :dims]], 1)
    covariance = torch.cov(joint.T)
    _, log_det_z = torch.linalg.slogdet(covariance[:dims, :dims])
    _, log_det_g = torch.linalg.slogdet(covariance[dims:, dims:])
    sign, log_det = torch.linalg.slogdet(covariance)
    if sign <= 0 or not torch.isfinite(log_det):
        return 0.0
    return float(0.5 * (log_det_z + log_det_g - log_det))


def _as_views(z, g):
    """Checked float64 CPU copies, ``[targets, views, D]``."""
    if z.shape != g.shape:
        raise ValueError(
            f"z {tuple(z.shape)} and g {tuple(g.shape)} must pair row by row"
        )
    if z.dim() == 2:
        z, g = z.unsqueeze(1), g.unsqueeze(1)
    return z.detach().double().cpu(), g.detach().double().cpu()


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
