"""Tests of the CSC objective: the information bound, the distillation
loss, its behaviour at the recipe's own batch and embedding size, and the
aggregator's lack of a copy path."""

import math

import pytest
import torch
import torch.nn.functional as F

from speechbrain_ext.lobes import CrossViewAttention, PrototypeHead
from speechbrain_ext.losses import CSCLoss
from speechbrain_ext.losses.csc import (
    distillation_information,
    entropy,
    sinkhorn_knopp,
    variance_covariance,
)

# The recipe's sizes (hparams/csc.yaml): 192-d embeddings, K = 4096, and
# batches of 64 crops x 2 views, each view giving a z row and a g row.
EMB_DIM = 192
RECIPE_HEAD = dict(n_prototypes=4096, hidden_size=1024, bottleneck_size=256)
# The CPU benchmark's (bench/csc.py): 32 crops, K = 1024.
BENCH_HEAD = dict(n_prototypes=1024, hidden_size=512, bottleneck_size=128)


def generator(seed):
    """A seeded generator."""
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------ hand-worked cases


def test_entropy_and_bound_by_hand():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert entropy(p).tolist() == pytest.approx([math.log(2), 0.0])
    # mean p = (1/4, 1/4, 1/2): H = 1.5 log 2.
    q = torch.tensor([[0.25, 0.25, 0.5], [0.1, 0.1, 0.8]])
    cross_entropy = (-math.log(0.25) + -math.log(0.8)) / 2
    expected = 1.5 * math.log(2) - cross_entropy
    value = distillation_information(p, q.log())
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_loss_value_temperatures_and_centre_by_hand():
    loss = CSCLoss(
        n_prototypes=2,
        teacher_temperature=0.5,
        student_temperature=1.0,
        center_momentum=0.5,
        beta=0.0,
    )
    loss.center.copy_(torch.tensor([[0.5, -0.5]]))
    teacher = torch.tensor([[1.5, 0.5]])
    student = torch.tensor([[0.0, math.log(3.0)]])
    value = loss(student, teacher)
    # Centred teacher (1, 1): p = (1/2, 1/2); q = (1/4, 3/4).
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert value.item() == pytest.approx(expected, abs=1e-6)
    terms = loss.last_terms
    assert terms["teacher_entropy"] == pytest.approx(math.log(2), abs=1e-6)
    assert terms["information"] == pytest.approx(
        math.log(2) - expected, abs=1e-6
    )
    # c <- 0.5 c + 0.5 mean(t)
    assert loss.center.tolist() == [[1.0, 0.0]]
    loss.eval()
    loss(student, teacher)
    assert loss.center.tolist() == [[1.0, 0.0]]  # frozen outside training


def test_separation_term_and_beta():
    loss = CSCLoss(n_prototypes=3, beta=0.25)
    logits = torch.randn(4, 3, generator=generator(0))
    estimate = torch.zeros(4, 5, 2)
    target = torch.full((4, 5, 2), 2.0)
    value = loss(logits, logits, estimate, target)
    terms = loss.last_terms
    assert terms["separation"] == pytest.approx(2.0)
    assert value.item() == pytest.approx(terms["cross_entropy"] + 0.5, abs=1e-5)
    # Frames beyond the relative lengths do not count.
    target[:, 3:] = 100.0
    short = loss.separation_loss(estimate, target, torch.full((4,), 0.6))
    assert short.item() == pytest.approx(2.0)


def test_gradient_reaches_the_student_only_and_points_at_the_teacher():
    loss = CSCLoss(n_prototypes=5, beta=0.0)
    student = torch.zeros(3, 5, requires_grad=True)
    teacher = torch.zeros(3, 5)
    teacher[torch.arange(3), torch.tensor([1, 3, 4])] = 1.0
    teacher.requires_grad_(True)
    loss(student, teacher).backward()
    assert teacher.grad is None
    # Descending the gradient raises the logit the teacher picked.
    picked = student.grad[torch.arange(3), torch.tensor([1, 3, 4])]
    assert (picked < 0).all()
    assert (student.grad.sum(dim=1).abs() < 1e-6).all()


def test_mean_entropy_term_rewards_using_many_prototypes():
    teacher = torch.zeros(4, 4)
    one_prototype = torch.tensor([[5.0, 0, 0, 0]]).repeat(4, 1)
    spread = 5.0 * torch.eye(4)
    plain = CSCLoss(n_prototypes=4, beta=0.0)
    weighted = CSCLoss(n_prototypes=4, beta=0.0, mean_entropy_weight=1.0)
    gap_plain = plain(one_prototype, teacher) - plain(spread, teacher)
    gap_weighted = weighted(one_prototype, teacher) - weighted(spread, teacher)
    assert gap_plain.abs() < 1e-6  # same CE against a uniform teacher
    assert gap_weighted > 1.0  # log 4 - H(mean) of one prototype


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"separation": "sisnr"}, "separation must be"),
        ({"teacher_temperature": 0.0}, "temperatures must be positive"),
        ({"center_momentum": 1.0}, "center_momentum"),
        ({"beta": -1.0}, "must be >= 0"),
        ({"variance_weight": -1.0}, "variance_weight"),
        ({"centering": "mean"}, "centering must be"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CSCLoss(n_prototypes=4, **kwargs)


def test_mismatched_inputs_are_named():
    loss = CSCLoss(n_prototypes=4)
    with pytest.raises(ValueError, match="pair row by row"):
        loss(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="n_prototypes=4"):
        loss(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="only the estimate"):
        loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 2, 2))


def test_monitors_are_logged_with_embeddings():
    loss = CSCLoss(n_prototypes=4, monitor_interval=1)
    logits = torch.randn(8, 4, generator=generator(1))
    loss(logits, logits, embeddings=torch.ones(8, 1, 6))
    terms = loss.last_terms
    assert terms["emb_std"] == 0.0 and terms["emb_rank"] == 0.0
    loss(logits, logits, embeddings=torch.randn(8, 6, generator=generator(2)))
    assert loss.last_terms["emb_rank"] > 3.0


def test_monitors_are_sampled_every_interval_steps():
    loss = CSCLoss(n_prototypes=4, monitor_interval=3)
    logits = torch.randn(8, 4, generator=generator(1))
    spread = torch.randn(8, 6, generator=generator(2))
    ranks = []
    for step in range(4):
        embeddings = spread if step == 0 else torch.ones(8, 6)
        loss(logits, logits, embeddings=embeddings)
        ranks.append(loss.last_terms["emb_rank"])
    # Steps 1 and 2 repeat step 0's sample; step 3 samples the collapse.
    assert ranks[0] > 3.0 and ranks[1] == ranks[2] == ranks[0]
    assert ranks[3] == 0.0


def test_sinkhorn_balances_prototypes_and_keeps_rows_sharp():
    gen = generator(4)
    # Every row prefers prototype 0 a little: plain softmax piles them up.
    logits = 0.2 * torch.randn(64, 8, generator=gen)
    logits[:, 0] += 0.3
    plain = torch.softmax(logits / 0.04, dim=1)
    balanced = sinkhorn_knopp(logits, temperature=0.04, iterations=50)
    assert plain.mean(0)[0] > 0.5
    torch.testing.assert_close(balanced.sum(1), torch.ones(64))
    torch.testing.assert_close(
        balanced.mean(0), torch.full((8,), 1 / 8), atol=1e-3, rtol=0
    )
    assert entropy(balanced).mean() < 0.5 * math.log(8)  # rows stay sharp


def test_sinkhorn_centering_of_a_collapsed_teacher_scores_nothing():
    loss = CSCLoss(16, centering="sinkhorn")
    student = torch.randn(32, 16, generator=generator(5))
    value = loss(student, torch.ones(32, 16))
    assert loss.last_terms["information"] <= 1e-6
    assert loss.last_terms["teacher_entropy"] == pytest.approx(
        math.log(16), abs=1e-4
    )
    assert torch.isfinite(value)


def test_variance_covariance_by_hand():
    z = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [1.0, 2.0], [-1.0, -2.0]])
    variance, covariance = variance_covariance(z, eps=0.0)
    # var = 4/3 and 16/3; cov = 8/3 off the diagonal, twice, over D = 2.
    expected_variance = (
        max(0, 1 - (4 / 3) ** 0.5) + max(0, 1 - (16 / 3) ** 0.5)
    ) / 2
    assert variance.item() == pytest.approx(expected_variance, abs=1e-6)
    assert covariance.item() == pytest.approx(2 * (8 / 3) ** 2 / 2, rel=1e-5)
    loss = CSCLoss(4, variance_weight=2.0, covariance_weight=0.5)
    logits = torch.randn(4, 4, generator=generator(6))
    total = loss(logits, logits, embeddings=z)
    terms = loss.last_terms
    assert total.item() == pytest.approx(
        terms["cross_entropy"]
        + 2.0 * terms["variance"]
        + 0.5 * terms["covariance"],
        rel=1e-5,
    )


# ------------------------------------- the recipe's batch and embedding size


def bound(head, loss, z, g):
    """The information bound of z (student side) and g (teacher side)."""
    with torch.no_grad():
        return loss.information(head(z), head(g)).item()


@pytest.mark.parametrize("centering", ["ema", "sinkhorn"])
@pytest.mark.parametrize("rows", [128, 256])
@pytest.mark.parametrize(
    "sizes", [RECIPE_HEAD, BENCH_HEAD], ids=["recipe_head", "bench_head"]
)
def test_unrelated_scores_nothing_related_scores_at_recipe_size(
    rows, sizes, centering
):
    """What broke the Gaussian estimate: 192-d embeddings in 128-256 rows.

    Unrelated z, g must score at most 10% of z = g + small noise, and a
    collapsed g nothing, with the head as initialised (the start of every
    training run).
    """
    torch.manual_seed(0)
    head = PrototypeHead(EMB_DIM, **sizes).eval()
    loss = CSCLoss(sizes["n_prototypes"], centering=centering)
    gen = generator(rows)
    z = torch.randn(rows, EMB_DIM, generator=gen)
    related = bound(
        head, loss, z, z + 0.1 * torch.randn(rows, EMB_DIM, generator=gen)
    )
    unrelated = bound(head, loss, z, torch.randn(rows, EMB_DIM, generator=gen))
    collapsed = bound(head, loss, z, torch.ones(rows, EMB_DIM))
    assert related > 0.3
    assert unrelated <= 0.1 * related
    assert collapsed <= 0.0
    # A bound of a batch: never above log(rows) or log K.
    assert related <= min(math.log(rows), math.log(sizes["n_prototypes"]))


def train_head(pairs, steps=100, seed=0, centering="ema"):
    """Trains a bench-size head by self-distillation on fresh batches.

    ``pairs(generator)`` returns a batch (z, g); the teacher is the
    student itself with its gradient stopped (no EMA, the harshest case
    for collapse). Returns the bound on 8 fresh batches before and after.
    """
    torch.manual_seed(seed)
    head = PrototypeHead(EMB_DIM, **BENCH_HEAD)
    loss = CSCLoss(BENCH_HEAD["n_prototypes"], beta=0.0, centering=centering)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    held_out = [pairs(generator(10_000 + i)) for i in range(8)]

    def evaluate():
        loss.eval()
        head.eval()
        values = [bound(head, loss, z, g) for z, g in held_out]
        loss.train()
        head.train()
        return sum(values) / len(values)

    before = evaluate()
    gen = generator(seed)
    for _ in range(steps):
        z, g = pairs(gen)
        value = loss(head(z), head(g).detach())
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    return before, evaluate()


# Sixteen fixed "speakers", the same for every batch, as in a corpus.
SPEAKERS = torch.randn(16, EMB_DIM, generator=generator(99))


def related_pairs(gen, rows=128):
    """z and g of the same speaker, each its speaker plus noise."""
    which = torch.randint(16, (rows,), generator=gen)
    base = SPEAKERS[which]
    return (
        base + 0.5 * torch.randn(rows, EMB_DIM, generator=gen),
        base + 0.5 * torch.randn(rows, EMB_DIM, generator=gen),
    )


def unrelated_pairs(gen, rows=128):
    """z and g of independently drawn speakers."""
    return related_pairs(gen, rows)[0], related_pairs(gen, rows)[1]


@pytest.mark.parametrize("centering", ["ema", "sinkhorn"])
def test_training_raises_the_bound_only_when_z_and_g_are_related(centering):
    related_before, related_after = train_head(
        related_pairs, centering=centering
    )
    _, unrelated_after = train_head(unrelated_pairs, centering=centering)
    assert related_after > related_before + 1.0
    assert related_after > 1.5  # of at most log 16 = 2.77 here
    # Training on unrelated pairs cannot create information.
    assert unrelated_after <= 0.1 * related_after


# ----------------------------------------------------------- no copy path


def copy_path_experiment(aggregate, parameters, steps=100, seed=0):
    """Trains only an aggregator to make g predict z through a fixed head.

    The other views' frames are random and unrelated to z, so a sound
    aggregator cannot raise the bound; ``aggregate(z_views, frames)``
    returns g for every view. Returns the bound on fresh held-out batches
    before and after training.
    """
    batch, n_views, n_frames, channels = 32, 2, 12, 24
    torch.manual_seed(seed)
    head = PrototypeHead(EMB_DIM, **BENCH_HEAD)
    loss = CSCLoss(BENCH_HEAD["n_prototypes"], beta=0.0)
    head.requires_grad_(False)
    optimizer = torch.optim.Adam(parameters, lr=1e-3)

    def batch_of(gen):
        z = torch.randn(batch, n_views, EMB_DIM, generator=gen)
        frames = torch.randn(batch, n_views, n_frames, channels, generator=gen)
        return z, frames

    def step_bound(z, frames):
        g = aggregate(z, frames).reshape(-1, EMB_DIM)
        with torch.no_grad():
            target = head(z.reshape(-1, EMB_DIM))
        return head(g), target

    def evaluate():
        values = []
        loss.eval()
        for index in range(6):
            student, teacher = step_bound(*batch_of(generator(500 + index)))
            values.append(loss.information(student, teacher).item())
        loss.train()
        return sum(values) / len(values)

    before = evaluate()
    gen = generator(seed + 1)
    for _ in range(steps):
        student, teacher = step_bound(*batch_of(gen))
        value = loss(student, teacher)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    return before, evaluate()


@pytest.mark.parametrize("query", ["others", "learned"])
def test_aggregator_cannot_copy_the_views_own_embedding(query):
    torch.manual_seed(0)  # the result must not depend on earlier tests
    aggregator = CrossViewAttention(
        EMB_DIM, memory_size=24, num_heads=4, query=query
    )

    def aggregate(z, frames):
        return aggregator(frames, embeddings=z)

    before, after = copy_path_experiment(
        aggregate, list(aggregator.parameters())
    )
    assert after <= 0.05 and after < before + 0.1


def test_control_an_aggregator_that_sees_its_own_view_does_copy_it():
    """The experiment can fail: attention whose keys include view v's own
    embedding raises the bound (the old design's failure, made blatant)."""
    attention = torch.nn.MultiheadAttention(EMB_DIM, 4, batch_first=True)

    def aggregate(z, frames):
        return attention(z, z, z, need_weights=False)[0]

    before, after = copy_path_experiment(
        aggregate, list(attention.parameters())
    )
    # Seeds 0-2 all rise by about 0.7 nats (to +0.14); the sound
    # aggregator stays within 0.06 of where it started.
    assert after > before + 0.5 and after > 0.0


# ---------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_the_float32_value(dtype):
    gen = generator(3)
    student = torch.randn(16, 32, generator=gen)
    teacher = torch.randn(16, 32, generator=gen)
    reference = CSCLoss(32)(
        student.to(dtype).float(), teacher.to(dtype).float()
    )
    value = CSCLoss(32)(student.to(dtype), teacher.to(dtype))
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(reference.item(), rel=1e-5)
    assert torch.isfinite(F.softmax(teacher.to(dtype).float() / 0.04, 1)).all()
