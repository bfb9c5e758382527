"""Tests pinning the mathematics of AAMSupConLoss and NTXentLoss."""

import math

import pytest
import torch
import torch.nn.functional as F

from speechbrain_ext.losses import AAMSupConLoss, NTXentLoss


def unit_vectors(angles):
    """2-D unit vectors at the given angles (radians)."""
    angles = torch.tensor(angles, dtype=torch.float32)
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def psi_by_hand(theta, margin, margin_type):
    """Positive-pair similarity (docs/aamsupcon.md), in plain math."""
    if margin_type == "cos":
        return math.cos(theta) - margin
    if theta + margin <= math.pi:
        return math.cos(theta + margin)
    return math.cos(theta) - margin * math.sin(margin)


def anchor_loss_by_hand(pos_angles, neg_angles, margin, margin_type, tau):
    """-1/|P| sum_p log softmax for one anchor, from its angles to others."""
    s = 1.0 / tau
    pos_logits = [s * psi_by_hand(t, margin, margin_type) for t in pos_angles]
    neg_logits = [s * math.cos(t) for t in neg_angles]
    log_denominator = math.log(
        sum(math.exp(v) for v in pos_logits + neg_logits)
    )
    return -sum(v - log_denominator for v in pos_logits) / len(pos_logits)


def reference_loss(embeddings, labels, margin, margin_type, tau):
    """Per-anchor Python loop over angles, in float64."""
    z = F.normalize(embeddings.double(), dim=1)
    angles = torch.acos((z @ z.T).clamp(-1, 1)).tolist()
    labels = labels.tolist()
    losses = []
    for i, label in enumerate(labels):
        others = [j for j in range(len(labels)) if j != i]
        pos = [angles[i][j] for j in others if labels[j] == label]
        neg = [angles[i][j] for j in others if labels[j] != label]
        if pos:
            losses.append(
                anchor_loss_by_hand(pos, neg, margin, margin_type, tau)
            )
    return sum(losses) / len(losses)


def random_batch(n_speakers=4, n_per_speaker=3, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(
        n_speakers * n_per_speaker, dim, generator=generator
    )
    labels = torch.arange(n_speakers).repeat_interleave(n_per_speaker)
    return embeddings, labels


@pytest.mark.parametrize("margin_type", ["arc", "cos"])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_two_speakers_known_angles(margin_type, tau):
    # Speaker A at 0 and 0.6 rad, speaker B at 1.4 and 2.4 rad, so the
    # angles from each anchor are read off the circle:
    embeddings = unit_vectors([0.0, 0.6, 1.4, 2.4])
    labels = torch.tensor([0, 0, 1, 1])
    m = 0.2
    expected = (
        anchor_loss_by_hand([0.6], [1.4, 2.4], m, margin_type, tau)
        + anchor_loss_by_hand([0.6], [0.8, 1.8], m, margin_type, tau)
        + anchor_loss_by_hand([1.0], [1.4, 0.8], m, margin_type, tau)
        + anchor_loss_by_hand([1.0], [2.4, 1.8], m, margin_type, tau)
    ) / 4
    loss = AAMSupConLoss(margin=m, temperature=tau, margin_type=margin_type)
    assert loss(embeddings, labels).item() == pytest.approx(expected, rel=1e-5)


def test_arc_fallback_beyond_pi_and_singleton_anchor():
    # A's two embeddings are 3.0 rad apart, beyond pi - m = 2.94, so psi is
    # cos(3.0) - m sin(m). B has one embedding (at 1.5 rad from both A's):
    # it is no anchor but a negative for both.
    m, tau = 0.2, 0.5
    embeddings = unit_vectors([0.0, 3.0, 1.5])
    labels = torch.tensor([0, 0, 1])
    s = 1 / tau
    positive = s * (math.cos(3.0) - m * math.sin(m))
    negative = s * math.cos(1.5)
    expected = -(positive - math.log(math.exp(positive) + math.exp(negative)))
    loss = AAMSupConLoss(margin=m, temperature=tau)(embeddings, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("margin", [0.1, 0.3])
def test_arc_margin_similarity_monotonic(margin):
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    psi = AAMSupConLoss(margin=margin).margin_similarity(theta.cos())
    assert torch.all(psi[1:] <= psi[:-1])
    # Near theta = 0 the clamp that keeps the sqrt gradient finite moves
    # psi by up to sin(m) * sqrt(2e-7); test the formula away from there.
    inside = (theta > 1e-2) & (theta + margin < math.pi - 1e-3)
    assert torch.allclose(
        psi[inside], (theta[inside] + margin).cos(), atol=1e-6
    )
    beyond = theta + margin > math.pi + 1e-3
    assert torch.allclose(
        psi[beyond],
        theta[beyond].cos() - margin * math.sin(margin),
        atol=1e-6,
    )


@pytest.mark.parametrize("tau", [0.07, 0.3])
def test_margin_zero_is_plain_supcon(tau):
    embeddings, labels = random_batch()
    expected = reference_loss(embeddings, labels, 0.0, "arc", tau)
    loss = AAMSupConLoss(margin=0.0, temperature=tau)(embeddings, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("margin_type", ["arc", "cos"])
def test_uneven_speakers_match_reference(margin_type):
    embeddings, _ = random_batch(n_speakers=3, n_per_speaker=3, seed=1)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    expected = reference_loss(embeddings, labels, 0.25, margin_type, 0.1)
    loss = AAMSupConLoss(margin=0.25, temperature=0.1, margin_type=margin_type)
    assert loss(embeddings, labels).item() == pytest.approx(expected, rel=1e-5)


def test_margin_increases_loss():
    embeddings, labels = random_batch()
    plain = AAMSupConLoss(margin=0.0)(embeddings, labels)
    with_margin = AAMSupConLoss(margin=0.2)(embeddings, labels)
    assert with_margin > plain


def test_batch_order_does_not_matter():
    embeddings, labels = random_batch(seed=2)
    order = torch.randperm(
        len(labels), generator=torch.Generator().manual_seed(3)
    )
    loss = AAMSupConLoss()
    assert torch.allclose(
        loss(embeddings, labels), loss(embeddings[order], labels[order])
    )


@pytest.mark.parametrize("margin_type", ["arc", "cos"])
def test_sgd_step_pulls_positives_and_pushes_negatives(margin_type):
    embeddings, labels = random_batch(seed=4)
    embeddings.requires_grad_(True)
    loss = AAMSupConLoss(margin=0.2, margin_type=margin_type)
    loss(embeddings, labels).backward()
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool)

    def mean_cosines(x):
        z = F.normalize(x, dim=1)
        cosine = z @ z.T
        return cosine[positive].mean(), cosine[~same].mean()

    with torch.no_grad():
        pos_before, neg_before = mean_cosines(embeddings)
        pos_after, neg_after = mean_cosines(embeddings - 0.5 * embeddings.grad)
    assert pos_after > pos_before
    assert neg_after < neg_before


def test_anchor_without_positive_is_excluded_but_is_a_negative():
    embeddings, _ = random_batch(n_speakers=3, n_per_speaker=2, seed=5)
    embeddings = embeddings[:5]
    labels = torch.tensor([0, 0, 1, 1, 2])
    # Khosla's mean over the four anchors that have a positive, with the
    # singleton (speaker 2) kept in their denominators.
    s = 1 / 0.07
    z = F.normalize(embeddings.double(), dim=1)
    logits = (z @ z.T * s).tolist()
    anchors = []
    for i, p in [(0, 1), (1, 0), (2, 3), (3, 2)]:
        others = [j for j in range(5) if j != i]
        log_sum = math.log(sum(math.exp(logits[i][j]) for j in others))
        anchors.append(log_sum - logits[i][p])
    loss = AAMSupConLoss(margin=0.0)(embeddings, labels)
    assert loss.item() == pytest.approx(sum(anchors) / 4, rel=1e-5)


@pytest.mark.parametrize("n", [1, 4])
def test_no_positive_in_batch_gives_zero_with_gradient(n):
    embeddings = torch.randn(n, 8, requires_grad=True)
    loss = AAMSupConLoss()(embeddings, torch.arange(n))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(embeddings.grad, torch.zeros(n, 8))


def test_speechbrain_layout_gives_same_result():
    embeddings, labels = random_batch(seed=6)
    loss = AAMSupConLoss()
    assert torch.equal(
        loss(embeddings, labels),
        loss(embeddings.unsqueeze(1), labels.unsqueeze(1)),
    )


def test_identical_positives_have_finite_gradient():
    # Two views that collapsed onto one point sit at the acos singularity.
    embeddings = unit_vectors([0.3, 0.3, 2.0, 2.0]).requires_grad_(True)
    loss = AAMSupConLoss()(embeddings, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    embeddings, labels = random_batch(dim=192, seed=7)
    loss = AAMSupConLoss()
    half = embeddings.to(dtype).requires_grad_(True)
    value = loss(half, labels)
    value.backward()
    assert value.dtype == torch.float32
    assert torch.isfinite(half.grad).all()
    # Computed in float32 from the rounded inputs...
    rounded = loss(half.detach().float(), labels)
    assert value.item() == pytest.approx(rounded.item(), rel=1e-6)
    # ...so the only difference from float32 is the input rounding.
    full = loss(embeddings, labels)
    assert value.item() == pytest.approx(full.item(), rel=2e-2)


def test_bf16_autocast_on_cpu_computes_in_float32():
    embeddings, labels = random_batch(dim=32, seed=8)
    projection = torch.nn.Linear(32, 32)
    loss = AAMSupConLoss()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        projected = projection(embeddings)
        value = loss(projected, labels)
    assert projected.dtype == torch.bfloat16
    assert value.dtype == torch.float32
    expected = loss(projected.float(), labels)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_ntxent_matches_simclr_for_two_views():
    generator = torch.Generator().manual_seed(9)
    view1 = torch.randn(6, 16, generator=generator)
    view2 = view1 + torch.randn(6, 16, generator=generator)
    tau = 0.1
    # SimCLR's formulation: cross-entropy over the 2N - 1 other rows, the
    # target being the other view of the same instance.
    z = F.normalize(torch.cat([view1, view2]), dim=1)
    logits = (z @ z.T / tau).fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(6, 12), torch.arange(0, 6)])
    expected = F.cross_entropy(logits, targets)
    instance_ids = torch.arange(6).repeat(2)
    loss = NTXentLoss(temperature=tau)(torch.cat([view1, view2]), instance_ids)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_inputs_are_named():
    loss = AAMSupConLoss()
    with pytest.raises(ValueError, match="5 embeddings but 4 labels"):
        loss(torch.randn(5, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[N, 1, D\], got shape \(5, 2, 8\)"):
        loss(torch.randn(5, 2, 8), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="margin_type must be one of"):
        AAMSupConLoss(margin_type="sphere")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        AAMSupConLoss(temperature=0.0)
