"""Margin-mixup: waveform mixing of a batch and AAM targets shared by lam."""

import math

import pytest
import torch

from speechbrain_ext.augment import WaveformMixup
from speechbrain_ext.losses import AAMSoftmaxLoss


def fixed_loss(margin=0.2, scale=30.0):
    """AAM-softmax over 3 classes at angles 0, 90 and 180 degrees."""
    loss = AAMSoftmaxLoss(input_size=2, n_classes=3, margin=margin, scale=scale)
    with torch.no_grad():
        loss.classifier.weight.copy_(
            torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
        )
    return loss


def test_mixed_target_loss_hand_computed():
    """Embedding at 45 degrees, lam 0.75 toward class 0, 0.25 toward 1.

    Logits: 30 cos(pi/4 + 0.75 * 0.2), 30 cos(pi/4 + 0.25 * 0.2) and
    30 cos(3 pi / 4); loss -0.75 log p_0 - 0.25 log p_1.
    """
    logits = torch.tensor(
        [
            30 * math.cos(math.pi / 4 + 0.15),
            30 * math.cos(math.pi / 4 + 0.05),
            30 * math.cos(3 * math.pi / 4),
        ]
    )
    log_p = torch.log_softmax(logits, dim=0)
    expected = -(0.75 * log_p[0] + 0.25 * log_p[1])
    value = fixed_loss()(
        torch.tensor([[1.0, 1.0]]),
        torch.tensor([0]),
        partner_labels=torch.tensor([1]),
        weights=torch.tensor([0.75]),
    )
    assert value.item() == pytest.approx(expected.item(), rel=1e-4)


def test_unmixed_rows_are_the_ordinary_aam_loss():
    """lam = 1, or a partner of the same speaker, is plain AAM-softmax."""
    torch.manual_seed(0)
    loss = AAMSoftmaxLoss(input_size=8, n_classes=5)
    embeddings, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    plain = loss(embeddings, labels)
    own_partner = loss(
        embeddings, labels, partner_labels=labels, weights=torch.rand(6)
    )
    lam_one = loss(
        embeddings,
        labels,
        partner_labels=labels.roll(1),
        weights=torch.ones(6),
    )
    torch.testing.assert_close(own_partner, plain, atol=1e-4, rtol=0)
    torch.testing.assert_close(lam_one, plain, atol=1e-4, rtol=0)


def test_mixed_target_gradient_pulls_toward_both_speakers():
    """At lam 0.5 the embedding is drawn toward classes 0 and 1 alike, and
    away from class 2."""
    embedding = torch.tensor([[1.0, 0.2]], requires_grad=True)
    fixed_loss()(
        embedding,
        torch.tensor([0]),
        partner_labels=torch.tensor([1]),
        weights=torch.tensor([0.5]),
    ).backward()
    step = -embedding.grad[0]
    assert step[1] > 0  # toward class 1 (the partner), from class 0's side
    assert torch.isfinite(embedding.grad).all()


def test_waveform_mixup_mixes_with_another_row():
    torch.manual_seed(0)
    wavs = torch.randn(8, 100)
    lens = torch.linspace(0.3, 1.0, 8)
    mixed, mixed_lens, partner, lam = WaveformMixup(mix_prob=1.0)(wavs, lens)
    rows = torch.arange(8)
    assert (partner != rows).all()
    assert ((lam >= 0.5) & (lam <= 1.0)).all()
    expected = lam[:, None] * wavs + (1 - lam[:, None]) * wavs[partner]
    torch.testing.assert_close(mixed, expected)
    torch.testing.assert_close(mixed_lens, torch.maximum(lens, lens[partner]))


def test_waveform_mixup_off_and_single_row_are_identity():
    wavs = torch.randn(4, 50)
    mixed, _, partner, lam = WaveformMixup(mix_prob=0.0)(wavs, torch.ones(4))
    torch.testing.assert_close(mixed, wavs)
    assert partner.tolist() == [0, 1, 2, 3] and (lam == 1).all()
    one = WaveformMixup(mix_prob=1.0)(wavs[:1], torch.ones(1))
    torch.testing.assert_close(one[0], wavs[:1])


def test_waveform_mixup_checks_its_settings():
    with pytest.raises(ValueError, match="mix_prob"):
        WaveformMixup(mix_prob=1.5)
    with pytest.raises(ValueError, match="alpha"):
        WaveformMixup(alpha=0.0)
