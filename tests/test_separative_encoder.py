"""Tests of the CSC separative encoder (ECAPA-TDNN + mask head)."""

import math

import pytest
import torch

from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain_ext.lobes import SeparativeEncoder

N_MELS = 12
TINY = dict(
    channels=[16, 16, 16, 16, 48],
    lin_neurons=8,
    attention_channels=8,
    se_channels=8,
    res2net_scale=4,
)


def tiny_encoder(seed=0, **kwargs):
    torch.manual_seed(seed)
    return SeparativeEncoder(N_MELS, mask_channels=10, **TINY, **kwargs)


def features(batch=3, frames=40, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, N_MELS, generator=generator)


LENGTHS = torch.tensor([1.0, 0.75, 0.5])


@pytest.mark.parametrize("train_mode", [False, True])
def test_forward_equals_stock_ecapa_with_same_weights(train_mode):
    encoder = tiny_encoder()
    stock = ECAPA_TDNN(N_MELS, **TINY)
    stock.load_state_dict(encoder.embedding_state_dict(), strict=True)
    encoder.train(train_mode)
    stock.train(train_mode)
    x = features()
    assert torch.equal(encoder(x, LENGTHS), stock(x, LENGTHS))
    assert torch.equal(encoder(x), stock(x))


def test_embedding_state_dict_drops_only_the_mask_head():
    encoder = tiny_encoder()
    full = encoder.state_dict()
    embedding = encoder.embedding_state_dict()
    dropped = set(full) - set(embedding)
    assert dropped and all(name.startswith("mask_head.") for name in dropped)
    assert set(embedding) == set(ECAPA_TDNN(N_MELS, **TINY).state_dict())
    with pytest.raises(RuntimeError, match="mask_head"):
        ECAPA_TDNN(N_MELS, **TINY).load_state_dict(full, strict=True)


def test_separate_shapes_and_embedding_matches_forward():
    encoder = tiny_encoder().eval()
    x = features()
    outputs = encoder.separate(x, LENGTHS)
    assert outputs["embedding"].shape == (3, 1, 8)
    assert outputs["frames"].shape == (3, 40, 48)
    assert outputs["mask"].shape == (3, 40, N_MELS)
    assert outputs["estimate"].shape == (3, 40, N_MELS)
    assert torch.equal(outputs["embedding"], encoder(x, LENGTHS))


def test_separate_runs_the_trunk_once():
    encoder = tiny_encoder()
    calls = []
    encoder.mfa.register_forward_hook(lambda *args: calls.append(1))
    encoder.separate(features(), LENGTHS)
    assert len(calls) == 1


def test_mask_in_unit_interval_and_estimate_is_mixture_plus_db_gain():
    encoder = tiny_encoder()
    x = features()
    outputs = encoder.separate(x, LENGTHS)
    mask = outputs["mask"]
    assert ((mask >= 0) & (mask <= 1)).all()
    # Power mask on Fbank's 10 * log10(mel power) features.
    expected = x + (10 * torch.log10(mask)).clamp(min=-80.0)
    assert torch.allclose(outputs["estimate"], expected, atol=1e-4)


def set_mask_logits(encoder, value):
    """Makes the mask head output the constant logit ``value``."""
    last = encoder.mask_head[-1].conv
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(value)


def test_half_mask_attenuates_by_three_db():
    encoder = tiny_encoder()
    set_mask_logits(encoder, 0.0)
    x = features()
    outputs = encoder.separate(x)
    assert torch.allclose(outputs["mask"], torch.full_like(x, 0.5))
    gain_db = 10 * math.log10(0.5)  # -3.0103 dB
    assert torch.allclose(outputs["estimate"] - x, torch.full_like(x, gain_db))


@pytest.mark.parametrize("floor_db", [-80.0, -30.0])
def test_vanishing_mask_is_floored(floor_db):
    encoder = tiny_encoder(mask_floor_db=floor_db)
    set_mask_logits(encoder, -100.0)  # 10 log10(sigmoid(-100)) = -434 dB
    x = features()
    estimate = encoder.separate(x)["estimate"]
    assert torch.isfinite(estimate).all()
    assert torch.allclose(estimate - x, torch.full_like(x, floor_db))


def test_magnitude_features_use_twenty_db_per_decade():
    encoder = tiny_encoder(feature_db_multiplier=20.0)
    set_mask_logits(encoder, 0.0)
    x = features()
    gain = encoder.separate(x)["estimate"] - x
    assert torch.allclose(gain, torch.full_like(x, 20 * math.log10(0.5)))


def test_gradients_reach_both_heads_and_the_shared_trunk():
    encoder = tiny_encoder()
    outputs = encoder.separate(features(), LENGTHS)
    embedding_loss = outputs["embedding"].square().sum()
    embedding_loss.backward(retain_graph=True)
    # The embedding does not depend on the mask head.
    assert all(p.grad is None for p in encoder.mask_head.parameters())
    trunk = encoder.blocks[0].conv.conv.weight
    from_embedding = trunk.grad.clone()
    encoder.zero_grad()
    outputs["estimate"].square().sum().backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for p in encoder.mask_head.parameters()
    )
    assert encoder.fc.conv.weight.grad is None
    assert trunk.grad.abs().sum() > 0 and from_embedding.abs().sum() > 0


def test_rejects_a_non_negative_floor():
    with pytest.raises(ValueError, match="mask_floor_db"):
        SeparativeEncoder(N_MELS, mask_floor_db=0.0, **TINY)


def test_embedding_weights_export_through_the_inference_template(tmpdir):
    from speechbrain.inference.speaker import EncoderClassifier
    from speechbrain.lobes.features import Fbank
    from speechbrain_ext.inference.export import (
        default_template,
        export_encoder,
    )

    config = dict(channels=[16, 16, 16, 16, 48], lin_neurons=8)
    torch.manual_seed(0)
    encoder = SeparativeEncoder(20, mask_channels=10, **config).eval()
    stock = ECAPA_TDNN(20, **config)
    stock.load_state_dict(encoder.embedding_state_dict(), strict=True)
    folder = export_encoder(
        str(tmpdir / "export"),
        default_template(),
        stock,
        values={"n_mels": 20, **config},
    )
    loaded = EncoderClassifier.from_hparams(
        source=folder, savedir=str(tmpdir / "loaded")
    )
    wavs = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    feats = Fbank(n_mels=20)(wavs)
    feats = feats - feats.mean(dim=1, keepdim=True)  # sentence mean norm
    with torch.no_grad():
        expected = encoder(feats, torch.ones(2))
        assert torch.allclose(loaded.encode_batch(wavs), expected, atol=1e-5)
