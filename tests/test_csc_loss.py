"""Tests pinning the mathematics of the CSC loss (Gaussian MI + separation)."""

import math

import numpy as np
import pytest
import torch

from speechbrain_ext.losses import CSCLoss
from speechbrain_ext.losses.csc import gaussian_mutual_information


def hadamard_columns():
    """Columns 1..7 of the 8 x 8 Sylvester-Hadamard matrix.

    They are orthogonal, have zero mean and sample variance 8 / 7, so
    ``r * h_i + sqrt(1 - r^2) * h_j`` has correlation exactly r with h_i.
    """
    h = torch.ones(1, 1, dtype=torch.float64)
    for _ in range(3):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h[:, 1:]


def correlated_pair(r):
    """z, g of shape [8, 1] with sample correlation exactly r."""
    h = hadamard_columns()
    z = h[:, :1]
    g = r * h[:, :1] + math.sqrt(1 - r**2) * h[:, 1:2]
    return z, g


@pytest.mark.parametrize("shrinkage", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("r", [0.3, 0.8, -0.9])
def test_one_dimension_is_minus_half_log_one_minus_shrunk_r_squared(
    r, shrinkage
):
    # In 1-D the shrinkage target of each variance is the variance itself,
    # so only the covariance shrinks: rho = (1 - a) r.
    z, g = correlated_pair(r)
    expected = -0.5 * math.log(1 - ((1 - shrinkage) * r) ** 2)
    value = gaussian_mutual_information(z, g, shrinkage=shrinkage, eps=0.0)
    assert value.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("shrinkage", [0.0, 0.2])
def test_independent_pairs_add_up(shrinkage):
    # z = (h1, h2), g = (r1 h1 + s1 h3, r2 h2 + s2 h4): unit-variance
    # blocks, cross-covariance diag(r1, r2), so
    # I = -1/2 sum_i log(1 - (1 - a)^2 r_i^2).
    h = hadamard_columns()
    r1, r2 = 0.6, 0.9
    z = h[:, :2]
    g = torch.stack(
        [
            r1 * h[:, 0] + math.sqrt(1 - r1**2) * h[:, 2],
            r2 * h[:, 1] + math.sqrt(1 - r2**2) * h[:, 3],
        ],
        dim=1,
    )
    expected = sum(
        -0.5 * math.log(1 - ((1 - shrinkage) * r) ** 2) for r in (r1, r2)
    )
    value = gaussian_mutual_information(z, g, shrinkage=shrinkage, eps=0.0)
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_matches_the_formula_on_a_general_covariance():
    # Unequal variances and cross terms: S from numpy, float64.
    generator = torch.Generator().manual_seed(3)
    mixing = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    joint = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    joint = joint @ mixing
    z, g = joint[:, :3], joint[:, 3:]
    a, eps = 0.3, 1e-3
    c = np.cov(joint.numpy(), rowvar=False)
    scale_z, scale_g = np.trace(c[:3, :3]) / 3, np.trace(c[3:, 3:]) / 2
    target = np.diag([scale_z] * 3 + [scale_g] * 2)
    s = (1 - a) * c + a * target + eps * np.eye(5)
    expected = 0.5 * (
        np.linalg.slogdet(s[:3, :3])[1]
        + np.linalg.slogdet(s[3:, 3:])[1]
        - np.linalg.slogdet(s)[1]
    )
    value = gaussian_mutual_information(z, g, shrinkage=a, eps=eps)
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_large_batch_approaches_the_population_value():
    rho = 0.6
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 1, generator=generator)
    noise = torch.randn(20000, 1, generator=generator)
    g = rho * z + math.sqrt(1 - rho**2) * noise
    value = CSCLoss(shrinkage=0.0, eps=0.0).mutual_information(z, g)
    assert value.item() == pytest.approx(-0.5 * math.log(1 - rho**2), abs=0.01)


def informative_batch(n=256, dim=16, noise=0.5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=generator)
    g = z + noise * torch.randn(n, dim, generator=generator)
    return z, g


def test_invariant_to_scale_and_batch_order():
    z, g = informative_batch()
    loss = CSCLoss(eps=0.0)
    reference = loss(z, g)
    assert loss(3.0 * z, 0.2 * g).item() == pytest.approx(
        reference.item(), rel=1e-4
    )
    order = torch.randperm(
        z.shape[0], generator=torch.Generator().manual_seed(1)
    )
    assert loss(z[order], g[order]).item() == pytest.approx(
        reference.item(), rel=1e-4
    )


def test_collapsed_representations_score_worse():
    z, informative = informative_batch()
    loss = CSCLoss()
    informative_loss = loss(z, informative).item()
    constant = torch.full_like(informative, 0.7)
    constant_loss = loss(z, constant).item()
    # Rank 1: every g on one line, even a perfectly predictable one.
    direction = torch.nn.functional.normalize(torch.ones(1, 16), dim=1)
    rank_one = z[:, :1] * direction
    rank_one_loss = loss(z, rank_one).item()
    assert constant_loss == pytest.approx(0.0, abs=1e-4)
    assert informative_loss < rank_one_loss < constant_loss + 1e-4
    # ... and a collapsed z is no better than a collapsed g.
    assert loss(torch.zeros_like(z), informative).item() == pytest.approx(
        0.0, abs=1e-4
    )


def test_independent_inputs_give_small_non_negative_information():
    generator = torch.Generator().manual_seed(5)
    z = torch.randn(512, 8, generator=generator)
    g = torch.randn(512, 8, generator=generator)
    value = CSCLoss().mutual_information(z, g).item()
    assert 0.0 <= value < 0.1


def test_fewer_rows_than_dimensions_stays_finite_with_shrinkage():
    z, g = informative_batch(n=32, dim=64)
    z.requires_grad_()
    g.requires_grad_()
    value = CSCLoss(shrinkage=0.1)(z, g)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(z.grad).all() and torch.isfinite(g.grad).all()


def test_gradient_step_on_g_increases_information():
    z, g = informative_batch(noise=1.0)
    g.requires_grad_()
    loss = CSCLoss()
    before = loss(z, g)
    before.backward()
    with torch.no_grad():
        stepped = g - 0.1 * g.grad / g.grad.norm() * g.norm()
    assert loss(z, stepped).item() < before.item()


def test_separation_l1_and_mse_on_valid_frames_only():
    # Two items, 4 frames, 2 features; item 1 has 2 valid frames. Valid
    # errors: item 0 all 1.0, item 1 all 3.0 -> 8 and 4 elements.
    estimate = torch.zeros(2, 4, 2)
    target = torch.ones(2, 4, 2)
    target[1] = 3.0
    target[1, 2:] = 1000.0  # padding: must not count
    lengths = torch.tensor([1.0, 0.5])
    l1 = CSCLoss(separation="l1").separation_loss(estimate, target, lengths)
    mse = CSCLoss(separation="mse").separation_loss(estimate, target, lengths)
    assert l1.item() == pytest.approx((8 * 1.0 + 4 * 3.0) / 12)
    assert mse.item() == pytest.approx((8 * 1.0 + 4 * 9.0) / 12)


def test_forward_combines_terms_and_logs_them():
    z, g = informative_batch()
    estimate = torch.zeros(256, 5, 3)
    target = torch.full((256, 5, 3), 2.0)
    loss = CSCLoss(beta=0.25)
    value = loss(z, g, estimate, target)
    terms = loss.last_terms
    assert set(terms) == {"mi", "separation"}
    assert terms["separation"] == pytest.approx(2.0)
    assert terms["mi"] > 0
    assert value.item() == pytest.approx(-terms["mi"] + 0.25 * 2.0, rel=1e-6)
    loss(z, g)
    assert set(loss.last_terms) == {"mi"}


def test_bf16_inputs_and_autocast_give_finite_float32_loss():
    z, g = informative_batch()
    estimate, target = torch.randn(256, 5, 3), torch.randn(256, 5, 3)
    loss = CSCLoss()
    half = [t.bfloat16() for t in (z, g, estimate, target)]
    value = loss(*half)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(
        loss(*[t.float() for t in half]).item(), rel=1e-6
    )

    torch.manual_seed(0)
    encoder = torch.nn.Linear(16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        projected = encoder(z)
        assert projected.dtype == torch.bfloat16
        value = loss(projected, encoder(g))
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(encoder.weight.grad).all()


def test_errors_name_the_problem():
    z, g = informative_batch(n=4, dim=3)
    loss = CSCLoss()
    with pytest.raises(ValueError, match="only the estimate"):
        loss(z, g, estimate=torch.zeros(4, 2, 2))
    with pytest.raises(ValueError, match="same shape"):
        loss(z, g, torch.zeros(4, 2, 2), torch.zeros(4, 3, 2))
    with pytest.raises(ValueError, match="4 rows but g has 3"):
        loss(z, g[:3])
    with pytest.raises(ValueError, match="at least 2 rows"):
        loss(z[:1], g[:1])
    with pytest.raises(ValueError, match=r"z must be \[N, D\]"):
        loss(z[None], g)
    with pytest.raises(ValueError, match="separation must be one of"):
        CSCLoss(separation="sisnr")
    with pytest.raises(ValueError, match="shrinkage"):
        CSCLoss(shrinkage=1.5)


def test_end_to_end_gradients_reach_encoder_and_aggregator():
    from speechbrain_ext.lobes import (
        CrossViewAttention,
        SeparativeEncoder,
        stack_views,
        unstack_views,
    )

    torch.manual_seed(0)
    n_views, batch, n_mels = 2, 6, 10
    encoder = SeparativeEncoder(
        n_mels,
        channels=[8, 8, 8, 8, 24],
        lin_neurons=8,
        attention_channels=4,
        se_channels=4,
        res2net_scale=2,
        mask_channels=6,
    )
    aggregator = CrossViewAttention(query_size=8, memory_size=24, num_heads=2)
    mixtures = torch.randn(n_views * batch, 30, n_mels)
    clean = torch.randn(n_views * batch, 30, n_mels)
    lengths = torch.ones(n_views * batch)
    outputs = encoder.separate(mixtures, lengths)
    g = aggregator(
        unstack_views(outputs["embedding"], n_views),
        unstack_views(outputs["frames"], n_views),
        unstack_views(lengths, n_views),
    )
    value = CSCLoss()(
        outputs["embedding"],
        stack_views(g),
        outputs["estimate"],
        clean,
        lengths,
    )
    value.backward()
    for module in (encoder.blocks, encoder.mask_head, encoder.fc, aggregator):
        grads = [p.grad for p in module.parameters()]
        assert all(grad is not None for grad in grads)
        assert sum(grad.abs().sum() for grad in grads) > 0
