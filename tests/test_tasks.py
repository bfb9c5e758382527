"""Training tasks: which rows become views, targets and labels."""

import pytest
import torch
from speechbrain.lobes.features import Fbank
from speechbrain.processing.features import InputNormalization

from speechbrain_ext.augment import InterferedViews
from speechbrain_ext.lobes import CrossViewAttention, SeparativeEncoder
from speechbrain_ext.losses import CSCLoss
from speechbrain_ext.tasks import SeparativeCodingTask, ViewContrastTask


class Scaled(torch.nn.Module):
    """A shape-preserving 'interference' that only rescales."""

    def forward(self, waveforms, lengths):
        return 2.0 * waveforms


class RecordingEncoder(SeparativeEncoder):
    """Keeps the features it was given."""

    def separate(self, x, lengths=None):
        self.seen = x.detach().clone()
        return super().separate(x, lengths)


def csc_modules():
    torch.manual_seed(0)
    return torch.nn.ModuleDict({
        "compute_features": Fbank(n_mels=20),
        "mean_var_norm": InputNormalization(norm_type="sentence",
                                            std_norm=False),
        "embedding_model": RecordingEncoder(
            20, channels=[8, 8, 8, 8, 24], lin_neurons=4,
            attention_channels=4, se_channels=4, mask_channels=8),
        "aggregator": CrossViewAttention(4, memory_size=24, num_heads=2),
        "objective": CSCLoss(beta=0.1),
    })


@pytest.mark.parametrize("segments, n_copies", [(1, 3), (2, 1)])
def test_target_takes_the_mixture_shift_row_by_row(segments, n_copies):
    """A gain of 2 adds 10 log10(4) dB to every log-mel bin, so the clean
    target, shifted like its mixture, is the encoder's input minus that,
    row for row."""
    modules = csc_modules()
    task = SeparativeCodingTask(
        InterferedViews([Scaled()], n_views=n_copies), segments=segments
    )
    wavs = torch.randn(4, 8000)
    outputs = task.forward(modules, wavs, torch.ones(4))
    n_views = max(segments, n_copies)
    assert outputs["z"].shape == (n_views * 4, 4)
    assert outputs["g"].shape == (n_views * 4, 4)
    seen = modules.embedding_model.seen
    gain_db = 10 * torch.log10(torch.tensor(4.0))
    torch.testing.assert_close(
        outputs["target"], seen - gain_db, atol=1e-3, rtol=0
    )
    assert torch.isfinite(task.loss(modules, outputs))


def test_segments_are_consecutive_halves_view_major():
    task = SeparativeCodingTask(InterferedViews([Scaled()], n_views=1),
                                segments=2)
    wavs = torch.arange(12.0).reshape(2, 6)
    parts, lens = task._split(wavs, torch.tensor([1.0, 0.5]))
    assert parts.tolist() == [[0, 1, 2], [6, 7, 8], [3, 4, 5], [9, 10, 11]]
    # The second crop is valid for 3 samples: all of its first half, and a
    # floor of one sample of the second (never an empty view).
    torch.testing.assert_close(lens, torch.tensor([1.0, 1.0, 1.0, 1 / 3]))


def test_bad_view_configurations_are_named():
    with pytest.raises(ValueError, match="n_views must be 1"):
        SeparativeCodingTask(InterferedViews([Scaled()], n_views=2),
                             segments=2)
    with pytest.raises(ValueError, match="at least 2"):
        SeparativeCodingTask(InterferedViews([Scaled()], n_views=1))
    with pytest.raises(ValueError, match="memory must be one of"):
        SeparativeCodingTask(InterferedViews([Scaled()], n_views=2),
                             memory="queries")


def test_view_contrast_groups_follow_the_view_major_rows():
    task = ViewContrastTask(InterferedViews([Scaled()], n_views=3))
    assert task.group_ids(2).tolist() == [0, 1, 0, 1, 0, 1]
