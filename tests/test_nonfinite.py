"""Non-finite losses in training: skipped, counted, then a clear stop.

SpeechBrain's own check back-propagates a NaN loss and steps the optimizer,
which turns every parameter into NaN; the recipe's Brain skips the batch
before ``backward`` instead.
"""

import sys

import pytest
import torch
from recipe_helpers import RECIPE  # noqa: E402

import speechbrain as sb
from speechbrain.dataio.batch import PaddedBatch
from speechbrain_ext.tasks import EmbeddingTask

sys.path.insert(0, RECIPE)
from train import SpeakerEmbeddingBrain  # noqa: E402

sys.path.remove(RECIPE)


class ScriptedLossTask(EmbeddingTask):
    """A mean-square loss, multiplied by the next scripted factor."""

    def __init__(self, factors):
        self.factors = list(factors)

    def forward(self, modules, wavs, lens):
        return {"embeddings": modules.embedding_model(wavs)}

    def loss(self, modules, outputs, labels=None):
        factor = self.factors.pop(0)
        return outputs["embeddings"].pow(2).mean() * factor


def make_brain(factors, patience=2):
    torch.manual_seed(0)
    brain = SpeakerEmbeddingBrain(
        modules={"embedding_model": torch.nn.Linear(16, 4)},
        opt_class=lambda params: torch.optim.SGD(params, lr=0.1),
        hparams={"task": ScriptedLossTask(factors)},
        run_opts={"nonfinite_patience": patience},
    )
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN)
    return brain


def make_batch(step):
    return PaddedBatch(
        [{"id": f"spk{i}-utt{step}", "sig": torch.randn(16)} for i in range(2)]
    )


def weights(brain):
    return brain.modules.embedding_model.weight.detach().clone()


def test_nan_batch_is_skipped_and_counted():
    brain = make_brain([1.0, float("nan"), float("inf"), 1.0])
    brain.fit_batch(make_batch(0))
    before = weights(brain)
    brain.fit_batch(make_batch(1))  # NaN: no step
    brain.fit_batch(make_batch(2))  # inf: no step
    assert torch.equal(weights(brain), before)
    assert brain.nonfinite_skipped == 2
    brain.fit_batch(make_batch(3))  # finite again: trains, streak reset
    after = weights(brain)
    assert torch.isfinite(after).all() and not torch.equal(after, before)
    assert brain.consecutive_nonfinite == 0
    assert brain.optimizer_step == 2


def test_persistent_nan_stops_with_a_message_naming_the_batch():
    brain = make_brain([float("nan")] * 5, patience=2)
    brain.fit_batch(make_batch(0))
    brain.fit_batch(make_batch(1))
    with pytest.raises(RuntimeError) as error:
        brain.fit_batch(make_batch(2))
    message = str(error.value)
    assert "3 batches in a row" in message
    assert "spk0-utt2" in message and "spk1-utt2" in message
    assert brain.optimizer_step == 0


class BatchNormTask(ScriptedLossTask):
    """The scripted loss on a batch-normalised model."""

    def forward(self, modules, wavs, lens):
        return {"embeddings": modules.embedding_model(wavs)}


def test_skipped_batch_leaves_batch_norm_statistics_as_they_were():
    """A NaN input poisons the running statistics in the forward pass; a
    skipped batch must not, or every later evaluation scores NaN."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 4), torch.nn.BatchNorm1d(4))
    brain = SpeakerEmbeddingBrain(
        modules={"embedding_model": model},
        opt_class=lambda params: torch.optim.SGD(params, lr=0.1),
        hparams={"task": BatchNormTask([1.0, 1.0])},
        run_opts={"nonfinite_patience": 2},
    )
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN)
    brain.fit_batch(make_batch(0))
    norm = brain.modules.embedding_model[1]
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    poisoned = make_batch(1)
    poisoned.sig.data[0][0] = float("nan")
    brain.fit_batch(poisoned)
    assert brain.nonfinite_skipped == 1
    assert torch.equal(norm.running_mean, mean)
    assert torch.equal(norm.running_var, var)
    brain.modules.eval()
    with torch.no_grad():
        assert torch.isfinite(
            brain.modules.embedding_model(torch.randn(3, 16))
        ).all()
