"""Training tasks: which rows become views, targets, pairs and labels."""

import pytest
import torch

from speechbrain.lobes.features import Fbank
from speechbrain.processing.features import InputNormalization
from speechbrain_ext.augment import InterferedViews, WaveformMixup
from speechbrain_ext.lobes import (
    CrossViewAttention,
    EMATeacher,
    PrototypeHead,
    SeparativeEncoder,
)
from speechbrain_ext.losses import AAMSoftmaxLoss, CSCInfoMaxLoss, CSCLoss
from speechbrain_ext.tasks import (
    SeparativeCodingTask,
    SupervisedEmbeddingTask,
    SupervisedSeparativeTask,
    ViewContrastTask,
)

N_PROTOTYPES = 16


class Scaled(torch.nn.Module):
    """A shape-preserving 'interference' that only rescales."""

    def forward(self, waveforms, lengths):
        return 2.0 * waveforms


class RecordingEncoder(SeparativeEncoder):
    """Keeps the features it was given."""

    def separate(self, x, lengths=None):
        self.seen = x.detach().clone()
        return super().separate(x, lengths)


def csc_modules(**extra):
    torch.manual_seed(0)
    students = {
        "embedding_model": RecordingEncoder(
            20,
            channels=[8, 8, 8, 8, 24],
            lin_neurons=4,
            attention_channels=4,
            se_channels=4,
            mask_channels=8,
        ),
        "aggregator": CrossViewAttention(4, memory_size=24, num_heads=2),
        "csc_head": PrototypeHead(
            4, N_PROTOTYPES, hidden_size=8, bottleneck_size=4
        ),
    }
    return torch.nn.ModuleDict(
        {
            "compute_features": Fbank(n_mels=20),
            "mean_var_norm": InputNormalization(
                norm_type="sentence", std_norm=False
            ),
            **students,
            "teacher": EMATeacher(students, momentum=0.5),
            "objective": CSCLoss(N_PROTOTYPES, beta=0.1),
            **extra,
        }
    )


@pytest.mark.parametrize("segments, n_copies", [(1, 3), (2, 1)])
def test_target_takes_the_mixture_shift_row_by_row(segments, n_copies):
    """A gain of 2 adds 10 log10(4) dB to every log-mel bin, so the clean
    target, shifted like its mixture, is the encoder's input minus that,
    row for row."""
    modules = csc_modules()
    task = SeparativeCodingTask(
        InterferedViews([Scaled()], n_views=n_copies, segments=segments)
    )
    wavs = torch.randn(4, 8000)
    outputs = task.forward(modules, wavs, torch.ones(4))
    n_views = segments * n_copies
    assert outputs["z"].shape == (n_views * 4, 4)
    # z rows then g rows, each paired with the teacher's other side.
    assert outputs["student_logits"].shape == (2 * n_views * 4, N_PROTOTYPES)
    assert outputs["teacher_logits"].shape == (2 * n_views * 4, N_PROTOTYPES)
    seen = modules.embedding_model.seen
    gain_db = 10 * torch.log10(torch.tensor(4.0))
    torch.testing.assert_close(
        outputs["target"], seen - gain_db, atol=1e-3, rtol=0
    )
    assert torch.isfinite(task.loss(modules, outputs))


def test_student_z_is_paired_with_the_teachers_g_and_back():
    """At momentum 0 the teacher equals the student, so the teacher rows
    are the student rows with the z and g halves swapped."""
    modules = csc_modules()
    modules.teacher.momentum = 0.0
    modules.teacher.update(modules)
    modules.eval()  # batch statistics aside, teacher = student
    task = SeparativeCodingTask(InterferedViews([Scaled()], n_views=2))
    outputs = task.forward(modules, torch.randn(3, 4000), torch.ones(3))
    student, teacher = outputs["student_logits"], outputs["teacher_logits"]
    half = len(student) // 2
    torch.testing.assert_close(teacher[:half], student[half:].detach())
    torch.testing.assert_close(teacher[half:], student[:half].detach())
    assert not teacher.requires_grad


def test_teacher_follows_the_student_after_each_step():
    modules = csc_modules()
    task = SeparativeCodingTask(InterferedViews([Scaled()], n_views=2))
    student = modules.csc_head.prototypes
    teacher = modules.teacher["csc_head"].prototypes
    assert torch.equal(student, teacher)
    with torch.no_grad():
        student.add_(1.0)
    before = teacher.detach().clone()
    task.on_optimizer_step(modules)
    torch.testing.assert_close(teacher, before + 0.5)  # momentum 0.5
    assert not teacher.requires_grad


def test_a_training_step_updates_student_not_teacher():
    modules = csc_modules()
    task = SeparativeCodingTask(InterferedViews([Scaled()], n_views=2))
    teacher_before = [p.clone() for p in modules.teacher.parameters()]
    loss = task.loss(
        modules, task.forward(modules, torch.randn(4, 4000), torch.ones(4))
    )
    loss.backward()
    assert all(p.grad is None for p in modules.teacher.parameters())
    for name in ("embedding_model", "aggregator", "csc_head"):
        grads = [
            p.grad for p in modules[name].parameters() if p.grad is not None
        ]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
    for before, after in zip(teacher_before, modules.teacher.parameters()):
        assert torch.equal(before, after)


def test_auxiliary_task_adds_weighted_csc_to_the_speaker_loss():
    modules = csc_modules(
        objective=AAMSoftmaxLoss(input_size=4, n_classes=3),
        csc_objective=CSCLoss(N_PROTOTYPES, beta=0.1),
    )
    views = InterferedViews([Scaled()], n_views=1, segments=2)
    labels = torch.tensor([0, 1, 2, 1])
    wavs = torch.randn(4, 8000)
    modules.csc_objective.eval()  # the centre stays put between calls
    task = SupervisedSeparativeTask(views, csc_weight=0.5)
    outputs = task.forward(modules, wavs, torch.ones(4))
    total = task.loss(modules, outputs, labels)
    speaker = task.last_term_tensors["speaker"]
    csc = modules.csc_objective(
        outputs["student_logits"],
        outputs["teacher_logits"],
        outputs["estimate"],
        outputs["target"],
        outputs["lengths"],
    )
    torch.testing.assert_close(total, speaker + 0.5 * csc)
    # Weight 0: only the embeddings, the same speaker loss.
    off = SupervisedSeparativeTask(views, csc_weight=0.0)
    bare = off.forward(modules, wavs, torch.ones(4))
    assert set(bare) == {"z"}
    torch.testing.assert_close(bare["z"], outputs["z"])
    torch.testing.assert_close(off.loss(modules, bare, labels), speaker)
    with pytest.raises(ValueError, match="needs the speaker labels"):
        off.loss(modules, bare)


def test_bad_view_configurations_are_named():
    with pytest.raises(ValueError, match="at least 2 per target"):
        SeparativeCodingTask(InterferedViews([Scaled()], n_views=1))
    with pytest.raises(ValueError, match="memory must be one of"):
        SeparativeCodingTask(
            InterferedViews([Scaled()], n_views=2), memory="queries"
        )
    with pytest.raises(ValueError, match="csc_weight"):
        SupervisedSeparativeTask(
            InterferedViews([Scaled()], n_views=2), csc_weight=-1
        )


def test_view_contrast_groups_follow_the_view_major_rows():
    task = ViewContrastTask(InterferedViews([Scaled()], n_views=3))
    assert task.group_ids(2).tolist() == [0, 1, 0, 1, 0, 1]
    halves = ViewContrastTask(
        InterferedViews([Scaled()], segments=2, n_views=1)
    )
    assert halves.group_ids(2).tolist() == [0, 1, 0, 1]


class RecordingObjective(torch.nn.Module):
    """A speaker objective that keeps what it was called with."""

    def forward(self, embeddings, labels, **mixing):
        self.embeddings, self.labels, self.mixing = embeddings, labels, mixing
        return embeddings.pow(2).mean()


class Doubled(torch.nn.Module):
    """Augmenter stand-in: [clean; 2 * clean] rows, labels repeated."""

    def forward(self, wavs, lens):
        return torch.cat([wavs, 2 * wavs]), torch.cat([lens, lens])

    def replicate_labels(self, labels):
        return torch.cat([labels, labels])


def infomax_modules(**extra):
    """The CSC modules without teacher or head: the VICReg information term."""
    modules = csc_modules(**{"objective": CSCInfoMaxLoss(beta=0.1), **extra})
    del modules["teacher"], modules["csc_head"]
    return modules


def test_without_a_teacher_the_infomax_objective_pairs_z_with_g():
    """No teacher module: the loss is CSCInfoMaxLoss(z, g, ...), and every
    student part (encoder, mask head, aggregator) gets a gradient."""
    modules = infomax_modules()
    task = SeparativeCodingTask(InterferedViews([Scaled()], n_views=2))
    outputs = task.forward(modules, torch.randn(4, 4000), torch.ones(4))
    assert "teacher_logits" not in outputs
    assert outputs["z"].shape == outputs["g"].shape == (8, 4)
    loss = task.loss(modules, outputs)
    expected = modules.objective(
        outputs["z"],
        outputs["g"],
        outputs["estimate"],
        outputs["target"],
        outputs["lengths"],
        n_views=2,
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    for name in ("embedding_model", "aggregator"):
        grads = [
            p.grad for p in modules[name].parameters() if p.grad is not None
        ]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
    task.on_optimizer_step(modules)  # no teacher to move: no error


def test_information_pairs_crop_and_skip():
    """Validation pairs are [targets, views, dim], cropped to the training
    crop; a batch too short or of one utterance gives None."""
    modules = infomax_modules().eval()
    task = SeparativeCodingTask(
        InterferedViews([Scaled()], n_views=1, segments=2),
        monitor_samples=6000,
    )
    z, g = task.information_pairs(modules, torch.randn(3, 9000), torch.ones(3))
    assert z.shape == g.shape == (3, 2, 4)
    assert (
        task.information_pairs(modules, torch.randn(3, 3000), torch.ones(3))
        is None
    )
    assert (
        task.information_pairs(modules, torch.randn(1, 9000), torch.ones(1))
        is None
    )


def test_auxiliary_task_trains_the_speaker_objective_on_the_recipe_views():
    """With speaker_views the speaker objective sees [clean; augmented]
    rows of the whole crop with repeated labels; CSC keeps its interfered
    segment views."""
    modules = infomax_modules(objective=RecordingObjective())
    modules["csc_objective"] = CSCInfoMaxLoss(beta=0.1)
    views = InterferedViews([Scaled()], n_views=1, segments=2)
    task = SupervisedSeparativeTask(
        views, csc_weight=0.5, speaker_views=Doubled()
    )
    wavs, labels = torch.randn(4, 8000), torch.tensor([0, 1, 2, 1])
    outputs = task.forward(modules, wavs, torch.ones(4))
    total = task.loss(modules, outputs, labels)
    seen = modules.objective
    assert seen.embeddings.shape == (8, 1, 4)
    assert seen.labels.tolist() == [0, 1, 2, 1, 0, 1, 2, 1]
    assert outputs["z"].shape == (8, 4)  # 2 segment views of 4 crops
    csc = modules.csc_objective(
        outputs["z"],
        outputs["g"],
        outputs["estimate"],
        outputs["target"],
        outputs["lengths"],
        n_views=2,
    )
    torch.testing.assert_close(total, seen.embeddings.pow(2).mean() + 0.5 * csc)
    # csc_weight 0: the recipe alone, no CSC outputs computed.
    off = SupervisedSeparativeTask(
        views, csc_weight=0.0, speaker_views=Doubled()
    )
    assert set(off.forward(modules, wavs, torch.ones(4))) == {
        "speaker_embeddings"
    }


def test_mixup_hands_partner_labels_and_weights_to_the_objective():
    modules = torch.nn.ModuleDict(
        {
            "compute_features": Fbank(n_mels=20),
            "mean_var_norm": InputNormalization(
                norm_type="sentence", std_norm=False
            ),
            "embedding_model": csc_modules()["embedding_model"],
            "objective": RecordingObjective(),
        }
    )
    task = SupervisedEmbeddingTask(Doubled(), mixup=WaveformMixup(mix_prob=1.0))
    outputs = task.forward(modules, torch.randn(3, 4000), torch.ones(3))
    task.loss(modules, outputs, torch.tensor([5, 6, 7]))
    mixing = modules.objective.mixing
    labels = modules.objective.labels
    assert labels.tolist() == [5, 6, 7, 5, 6, 7]
    torch.testing.assert_close(
        mixing["partner_labels"], labels[outputs["partner"]]
    )
    assert (outputs["partner"] != torch.arange(6)).all()
    assert ((mixing["weights"] >= 0.5) & (mixing["weights"] <= 1)).all()
