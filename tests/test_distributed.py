"""Two real gloo processes on the CPU: gathers and DDP steps of the losses.

One spawn runs every distributed check (process start-up dominates the
cost); each rank saves what it saw and the tests below compare it with
what one process computes on the global batch.
"""

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist

from speechbrain_ext.distributed import (
    gather_for_metrics,
    gather_with_grad,
    global_group_ids,
    scale_gradient_by_world_size,
)
from speechbrain_ext.losses import AAMSupConLoss, CSCLoss, NTXentLoss

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)

WORLD_SIZE = 2
ROWS_PER_RANK = 4
# Speaker labels of the global batch; speakers 1 and 2 have a view on each
# rank, so positives cross ranks as well.
SPEAKERS = torch.tensor([0, 0, 1, 2, 1, 2, 3, 3])
# Views of two utterances per rank in view-major order, as
# ViewContrastTask numbers them on every rank ...
LOCAL_VIEW_IDS = torch.tensor([0, 1, 0, 1])
# ... and the same rows numbered once over the global batch.
GLOBAL_VIEW_IDS = torch.tensor([0, 1, 0, 1, 2, 3, 2, 3])
OBJECTIVES = ("aam_supcon", "ntxent", "csc")


class TinyCSCModel(torch.nn.Module):
    """Student logits from a linear map, teacher logits from a frozen one,
    and a linear 'mask head' on frames."""

    def __init__(self):
        super().__init__()
        self.student = torch.nn.Linear(6, 3)
        self.teacher = torch.nn.Linear(6, 3).requires_grad_(False)
        self.mask = torch.nn.Linear(5, 5)

    def forward(self, inputs, frames):
        return self.student(inputs), self.teacher(inputs), self.mask(frames)


def global_batch():
    """Inputs of the 8 rows, frames for the mask head and its target."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(WORLD_SIZE * ROWS_PER_RANK, 6, generator=generator)
    frames = torch.randn(WORLD_SIZE * ROWS_PER_RANK, 3, 5, generator=generator)
    target = torch.randn(WORLD_SIZE * ROWS_PER_RANK, 3, 5, generator=generator)
    return inputs, frames, target


def make_model(objective):
    """The same initial parameters in every process."""
    torch.manual_seed(1)
    if objective == "csc":
        return TinyCSCModel()
    return torch.nn.Linear(6, 4)


def make_loss(objective, gather_distributed):
    if objective == "aam_supcon":
        return AAMSupConLoss(
            margin=0.2, temperature=0.5, gather_distributed=gather_distributed
        )
    if objective == "ntxent":
        return NTXentLoss(
            temperature=0.5, gather_distributed=gather_distributed
        )
    # The mean-entropy term is the one that needs the global batch.
    return CSCLoss(
        3,
        teacher_temperature=0.5,
        student_temperature=1.0,
        beta=0.5,
        mean_entropy_weight=1.0,
        gather_distributed=gather_distributed,
    )


def loss_and_gradients(model, objective, loss_fn, rows, view_ids):
    """One forward/backward on the given rows; returns loss and gradients."""
    inputs, frames, target = (part[rows] for part in global_batch())
    if objective == "csc":
        student, teacher, estimate = model(inputs, frames)
        loss = loss_fn(student, teacher, estimate, target)
    else:
        labels = view_ids if objective == "ntxent" else SPEAKERS[rows]
        loss = loss_fn(model(inputs), labels)
    loss.backward()
    module = getattr(model, "module", model)
    gradients = {
        name: param.grad.clone()
        for name, param in module.named_parameters()
        if param.grad is not None
    }
    return loss.detach(), gradients


def ddp_step(rank, objective, gather_distributed):
    """One DDP backward of this rank's half of the global batch."""
    model = torch.nn.parallel.DistributedDataParallel(make_model(objective))
    rows = slice(rank * ROWS_PER_RANK, (rank + 1) * ROWS_PER_RANK)
    return loss_and_gradients(
        model,
        objective,
        make_loss(objective, gather_distributed),
        rows,
        LOCAL_VIEW_IDS,
    )


def unscaled_gathered_step(rank):
    """AAM-SupCon on the gathered batch, without the world-size scaling."""
    model = torch.nn.parallel.DistributedDataParallel(make_model("aam_supcon"))
    rows = slice(rank * ROWS_PER_RANK, (rank + 1) * ROWS_PER_RANK)
    embeddings = gather_with_grad(model(global_batch()[0][rows]))
    loss = make_loss("aam_supcon", False)(embeddings, SPEAKERS)
    loss.backward()
    return {
        name: param.grad.clone()
        for name, param in model.module.named_parameters()
    }


def error_message(function, tensor):
    try:
        function(tensor)
    except ValueError as error:
        return str(error)
    return None


def gather_checks(rank):
    """gather_with_grad on known values, with rank-dependent weights."""
    local = torch.arange(6.0).reshape(2, 3) + 10 * rank
    local.requires_grad_(True)
    gathered = gather_with_grad(local)
    weights = (rank + 1) * torch.arange(12.0).reshape(4, 3)
    (weights * gathered).sum().backward()
    return {"gathered": gathered.detach(), "grad": local.grad}


def metrics_checks(rank):
    """gather_for_metrics with 3 + 1 rows and with 3 + 0 rows."""
    rows = 3 if rank == 0 else 1
    embeddings = torch.full((rows, 2), float(rank + 1), requires_grad=True)
    labels = torch.arange(rows) + 100 * rank
    empty_on_rank1 = torch.ones(3 if rank == 0 else 0, 2)
    gathered = gather_for_metrics(embeddings)
    return {
        "embeddings": gathered,
        "requires_grad": gathered.requires_grad,
        "labels": gather_for_metrics(labels),
        "empty_on_rank1": gather_for_metrics(empty_on_rank1),
    }


def run_checks(rank, port, out_dir):
    """Body of one spawned process: init gloo, run the checks, save."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        results = {
            "gather": gather_checks(rank),
            "metrics": metrics_checks(rank),
            "group_ids": global_group_ids(LOCAL_VIEW_IDS, 2),
            "size_error": error_message(
                gather_with_grad, torch.zeros(2, 3 + rank)
            ),
            "trailing_error": error_message(
                gather_for_metrics, torch.zeros(2, 3 + rank)
            ),
            "unscaled": unscaled_gathered_step(rank),
        }
        for objective in OBJECTIVES:
            for gather_distributed in (True, False):
                results[objective, gather_distributed] = ddp_step(
                    rank, objective, gather_distributed
                )
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of the two processes saved."""
    out_dir = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(
        run_checks, args=(free_port(), str(out_dir)), nprocs=WORLD_SIZE
    )
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


def single_process_step(objective):
    """The reference: one process, the whole batch, no gathering."""
    all_rows = slice(None)
    return loss_and_gradients(
        make_model(objective),
        objective,
        make_loss(objective, gather_distributed=False),
        all_rows,
        GLOBAL_VIEW_IDS,
    )


def assert_same_gradients(actual, expected):
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(
            actual[name], expected[name], rtol=1e-4, atol=1e-5
        )


def test_gather_with_grad_concatenates_in_rank_order(ranks):
    rank0_rows = torch.arange(6.0).reshape(2, 3)
    expected = torch.cat([rank0_rows, rank0_rows + 10])
    for result in ranks:
        torch.testing.assert_close(result["gather"]["gathered"], expected)


def test_gather_with_grad_backpropagates_into_the_local_slice_only(ranks):
    # Rank r weights the gathered rows by (r + 1) * [0..11]; its own rows are
    # 2r and 2r + 1. If the other rank's weights reached it (as with an
    # all-reduce in the backward), the factor would be 1 + 2 = 3.
    weights = torch.arange(12.0).reshape(4, 3)
    for rank, result in enumerate(ranks):
        expected = (rank + 1) * weights[2 * rank : 2 * rank + 2]
        torch.testing.assert_close(result["gather"]["grad"], expected)


def test_gather_with_grad_names_mismatched_feature_sizes(ranks):
    # Unequal row counts are gathered (tests/test_ddp_faults.py).
    for result in ranks:
        message = result["size_error"]
        assert message is not None
        assert "rank 0: (2, 3)" in message and "rank 1: (2, 4)" in message


def test_gather_for_metrics_handles_unequal_sizes(ranks):
    for result in ranks:
        metrics = result["metrics"]
        torch.testing.assert_close(
            metrics["embeddings"],
            torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [2.0, 2.0]]),
        )
        assert not metrics["requires_grad"]
        assert metrics["labels"].tolist() == [0, 1, 2, 100]
        torch.testing.assert_close(metrics["empty_on_rank1"], torch.ones(3, 2))


def test_gather_for_metrics_names_mismatched_feature_sizes(ranks):
    for result in ranks:
        message = result["trailing_error"]
        assert message is not None
        assert "rank 0: (2, 3)" in message and "rank 1: (2, 4)" in message


def test_global_group_ids_interleave_the_ranks(ranks):
    assert ranks[0]["group_ids"].tolist() == [0, 2, 0, 2]
    assert ranks[1]["group_ids"].tolist() == [1, 3, 1, 3]


def test_ddp_without_scaling_takes_a_step_divided_by_world_size(ranks):
    _, expected = single_process_step("aam_supcon")
    for result in ranks:
        halved = {name: 2 * grad for name, grad in result["unscaled"].items()}
        assert_same_gradients(halved, expected)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_gathered_ddp_step_equals_single_process_step(ranks, objective):
    expected_loss, expected_gradients = single_process_step(objective)
    for result in ranks:
        loss, gradients = result[objective, True]
        assert_same_gradients(gradients, expected_gradients)
        if objective != "csc":
            # CSC's separation term stays local, so only its gradient is
            # global; the contrastive losses return the global value.
            torch.testing.assert_close(loss, expected_loss)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_local_ddp_step_differs_from_single_process_step(ranks, objective):
    _, expected_gradients = single_process_step(objective)
    _, gradients = ranks[0][objective, False]
    largest_difference = max(
        (gradients[name] - expected_gradients[name]).abs().max().item()
        for name in expected_gradients
    )
    assert largest_difference > 1e-3


@pytest.mark.parametrize("objective", ["aam_supcon", "ntxent"])
def test_gathering_without_process_group_changes_nothing(objective):
    embeddings = global_batch()[0]
    labels = GLOBAL_VIEW_IDS if objective == "ntxent" else SPEAKERS
    gathered = make_loss(objective, True)(embeddings, labels)
    local = make_loss(objective, False)(embeddings, labels)
    torch.testing.assert_close(gathered, local)


def test_gradient_scaling_without_process_group_is_identity():
    loss = torch.tensor(2.0, requires_grad=True)
    scale_gradient_by_world_size(3 * loss).backward()
    assert loss.grad.item() == 3.0


def test_global_group_ids_rejects_ids_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 2\).*from 0 to 2"):
        global_group_ids(torch.tensor([0, 1, 2]), 2)
