"""AtomicCheckpointer: a save interrupted midway leaves no checkpoint."""

import os

import pytest
import torch

from speechbrain.utils.checkpoints import Checkpointer
from speechbrain_ext.checkpoints import AtomicCheckpointer


class Interrupted(Exception):
    """Stands in for the process being killed."""


def interrupt_during_second_file(checkpointer_class, folder):
    """Saves one good checkpoint, then one that dies after the first file."""
    model = torch.nn.Linear(3, 3)
    checkpointer = checkpointer_class(
        folder, {"a_model": model, "b_model": torch.nn.Linear(3, 3)}
    )
    checkpointer.save_checkpoint(meta={"step": 1})

    def die(obj, path):
        with open(path, "wb"):  # a truncated file, as SIGKILL leaves it
            raise Interrupted

    checkpointer.add_recoverable("b_model", model, custom_save_hook=die)
    with pytest.raises(Interrupted):
        checkpointer.save_checkpoint(meta={"step": 2})
    return checkpointer


def test_interrupted_save_is_not_a_checkpoint(tmp_path):
    checkpointer = interrupt_during_second_file(AtomicCheckpointer, tmp_path)
    assert [c.meta["step"] for c in checkpointer.list_checkpoints()] == [1]
    recovered = checkpointer.recover_if_possible()
    assert recovered.meta["step"] == 1
    assert len(os.listdir(tmp_path)) == 2  # the broken folder stays inert


def test_stock_checkpointer_would_recover_the_broken_save(tmp_path):
    """Why the subclass exists: SpeechBrain marks the folder first."""
    checkpointer = interrupt_during_second_file(Checkpointer, tmp_path)
    steps = sorted(c.meta["step"] for c in checkpointer.list_checkpoints())
    assert steps == [1, 2]
    # torch.load of the truncated file
    with pytest.raises(EOFError):
        checkpointer.recover_if_possible()
