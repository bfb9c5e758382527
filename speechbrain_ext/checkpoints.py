"""A SpeechBrain Checkpointer whose checkpoints survive being killed mid-save.

SpeechBrain 1.1's ``Checkpointer.save_checkpoint`` writes ``CKPT.yaml``, the
file that marks a folder as a checkpoint, *before* the parameter files. A
run killed (SIGKILL, out-of-memory, pre-emption) while an intra-epoch
checkpoint is being written leaves a folder that looks complete but holds a
truncated ``optimizer.ckpt``; the next run picks it as the latest checkpoint
and crashes with ``EOFError`` instead of resuming. :class:`AtomicCheckpointer`
writes the metadata under a temporary name and renames it only once every
parameter file is written, so an interrupted save is simply not a
checkpoint.

Example
-------
>>> import torch
>>> tmpdir = getfixture("tmpdir")
>>> model = torch.nn.Linear(2, 2)
>>> checkpointer = AtomicCheckpointer(tmpdir, {"model": model})
>>> ckpt = checkpointer.save_checkpoint(meta={"EER": 3.5})
>>> [c.meta["EER"] for c in checkpointer.list_checkpoints()]
[3.5]
"""

import os

from speechbrain.utils.checkpoints import METAFNAME, Checkpointer
from speechbrain.utils.distributed import if_main_process

__all__ = ["AtomicCheckpointer"]

PENDING_SUFFIX = ".pending"


class AtomicCheckpointer(Checkpointer):
    """Checkpointer that marks a checkpoint complete only after writing it.

    Takes the same arguments as ``speechbrain.utils.checkpoints.Checkpointer``.
    """

    def _save_checkpoint_metafile(
        self, fpath, meta_to_include={}, end_of_epoch=True
    ):
        """Writes the metadata under a name that does not mark a checkpoint."""
        return super()._save_checkpoint_metafile(
            str(fpath) + PENDING_SUFFIX, meta_to_include, end_of_epoch
        )

    def save_checkpoint(self, *args, **kwargs):
        """Saves as SpeechBrain does, then publishes the metadata file."""
        checkpoint = super().save_checkpoint(*args, **kwargs)
        if if_main_process() and checkpoint is not None:
            meta = os.path.join(checkpoint.path, METAFNAME)
            os.replace(meta + PENDING_SUFFIX, meta)
        return checkpoint
