"""Tests for AAMSoftmaxLoss, WeightedLossSum and the shared interface."""

import math

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain.lobes.models.ECAPA_TDNN import Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
from speechbrain_ext.losses import (
    AAMSoftmaxLoss,
    AAMSupConLoss,
    NTXentLoss,
    WeightedLossSum,
)


def unit_vectors(angles):
    """2-D unit vectors at the given angles (radians)."""
    angles = torch.tensor(angles, dtype=torch.float32)
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def random_batch(n=8, dim=16, n_classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(n, dim, generator=generator)
    labels = torch.arange(n) % n_classes
    return embeddings, labels


def test_aam_softmax_known_angles():
    # Class weights at 0, 2pi/3 and 4pi/3; embeddings at 0.3 (class 0) and
    # 2.0 (class 1). Angles to the classes are read off the circle.
    loss = AAMSoftmaxLoss(input_size=2, n_classes=3, margin=0.2, scale=30)
    with torch.no_grad():
        loss.classifier.weight.copy_(
            unit_vectors([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
        )
    s, m, third = 30.0, 0.2, 2 * math.pi / 3

    def cross_entropy(target_angle, other_angles):
        target = s * math.cos(target_angle + m)
        others = [s * math.cos(t) for t in other_angles]
        return -(target - math.log(sum(map(math.exp, [target] + others))))

    expected = (
        cross_entropy(0.3, [third - 0.3, 2 * math.pi - 2 * third - 0.3])
        + cross_entropy(third - 2.0, [2.0, 2 * third - 2.0])
    ) / 2
    value = loss(unit_vectors([0.3, 2.0]), torch.tensor([0, 1]))
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_aam_softmax_equals_speechbrain_recipe():
    embeddings, labels = random_batch(dim=12)
    loss = AAMSoftmaxLoss(input_size=12, n_classes=4, margin=0.2, scale=30)
    # compute_objectives of recipes/VoxCeleb/SpeakerRec, same weights.
    outputs = loss.classifier(embeddings.unsqueeze(1))
    recipe_loss = LogSoftmaxWrapper(
        AdditiveAngularMargin(margin=0.2, scale=30)
    )(outputs, labels.unsqueeze(1))
    assert torch.allclose(loss(embeddings.unsqueeze(1), labels), recipe_loss)


def test_aam_softmax_trains_its_classifier():
    embeddings, labels = random_batch(dim=12)
    loss = AAMSoftmaxLoss(input_size=12, n_classes=4)
    loss(embeddings, labels).backward()
    grad = loss.classifier.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert "classifier.weight" in loss.state_dict()


def test_aam_softmax_accepts_prebuilt_classifier():
    classifier = Classifier(12, out_neurons=4)
    loss = AAMSoftmaxLoss(classifier=classifier)
    assert loss.classifier is classifier
    embeddings, labels = random_batch(dim=12)
    assert torch.isfinite(loss(embeddings, labels))


def test_aam_softmax_under_bf16_autocast_is_float32():
    embeddings, labels = random_batch(dim=12)
    loss = AAMSoftmaxLoss(input_size=12, n_classes=4)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = loss(embeddings, labels)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(
        loss(embeddings, labels).item(), rel=1e-6
    )


def test_aam_softmax_errors():
    with pytest.raises(ValueError, match="needs n_classes"):
        AAMSoftmaxLoss(input_size=12)
    loss = AAMSoftmaxLoss(input_size=12, n_classes=4)
    embeddings, _ = random_batch(n=3, dim=12)
    with pytest.raises(ValueError, match=r"\[0, 4\).*\[0, 7\]"):
        loss(embeddings, torch.tensor([0, 7, 2]))


def test_weighted_sum_arithmetic_and_terms():
    embeddings, labels = random_batch(dim=12)
    supcon = AAMSupConLoss()
    softmax = AAMSoftmaxLoss(input_size=12, n_classes=4)
    hybrid = WeightedLossSum(
        {"aam_supcon": supcon, "aam_softmax": softmax},
        {"aam_supcon": 1.0, "aam_softmax": 0.25},
    )
    expected_supcon = supcon(embeddings, labels).item()
    expected_softmax = softmax(embeddings, labels).item()
    value = hybrid(embeddings, labels)
    assert value.item() == pytest.approx(
        expected_supcon + 0.25 * expected_softmax, rel=1e-6
    )
    assert hybrid.last_terms == pytest.approx(
        {"aam_supcon": expected_supcon, "aam_softmax": expected_softmax}
    )


def test_weighted_sum_gradient_is_weighted_sum_of_gradients():
    embeddings, labels = random_batch(dim=12)
    first, second = AAMSupConLoss(), NTXentLoss(temperature=0.5)

    def grad_of(objective):
        leaf = embeddings.clone().requires_grad_(True)
        objective(leaf, labels).backward()
        return leaf.grad

    hybrid = WeightedLossSum(
        {"first": first, "second": second}, {"first": 2.0, "second": -0.5}
    )
    expected = 2.0 * grad_of(first) - 0.5 * grad_of(second)
    assert torch.allclose(grad_of(hybrid), expected, atol=1e-6)


def test_weighted_sum_registers_parameters_and_defaults_to_unit_weights():
    softmax = AAMSoftmaxLoss(input_size=12, n_classes=4)
    hybrid = WeightedLossSum({"supcon": AAMSupConLoss(), "aam": softmax})
    assert hybrid.weights == {"supcon": 1.0, "aam": 1.0}
    assert "losses.aam.classifier.weight" in hybrid.state_dict()
    assert list(hybrid.parameters()) == [softmax.classifier.weight]


def test_weighted_sum_rejects_mismatched_weights():
    with pytest.raises(ValueError, match=r"losses \['a', 'b'\], weights"):
        WeightedLossSum(
            {"a": AAMSupConLoss(), "b": AAMSupConLoss()}, {"a": 1.0}
        )


def test_hybrid_objective_builds_from_yaml():
    hparams = load_hyperpyyaml(
        """
        emb_dim: 12
        n_speakers: 4
        lambda_aam: 0.5
        objective: !new:speechbrain_ext.losses.WeightedLossSum
            losses:
                aam_supcon: !new:speechbrain_ext.losses.AAMSupConLoss
                    margin: 0.2
                    temperature: 0.07
                aam_softmax: !new:speechbrain_ext.losses.AAMSoftmaxLoss
                    input_size: !ref <emb_dim>
                    n_classes: !ref <n_speakers>
            weights:
                aam_supcon: 1.0
                aam_softmax: !ref <lambda_aam>
        """
    )
    objective = hparams["objective"]
    assert objective.weights == {"aam_supcon": 1.0, "aam_softmax": 0.5}
    embeddings, labels = random_batch(dim=12)
    assert objective(embeddings.unsqueeze(1), labels.unsqueeze(1)).dim() == 0


@pytest.mark.parametrize(
    "objective",
    [
        AAMSupConLoss(),
        NTXentLoss(),
        AAMSoftmaxLoss(input_size=16, n_classes=4),
        WeightedLossSum(
            {
                "a": AAMSupConLoss(),
                "b": AAMSoftmaxLoss(input_size=16, n_classes=4),
            }
        ),
    ],
    ids=["aam_supcon", "ntxent", "aam_softmax", "weighted_sum"],
)
def test_uniform_interface(objective):
    embeddings, labels = random_batch(dim=16)
    flat = objective(embeddings, labels)
    speechbrain_layout = objective(embeddings.unsqueeze(1), labels.unsqueeze(1))
    assert flat.shape == torch.Size([])
    assert torch.allclose(flat, speechbrain_layout)
