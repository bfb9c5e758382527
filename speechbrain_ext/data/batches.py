"""Batches that leave out the items whose audio could not be read.

A file that vanished or was corrupted after preparation should cost its
item, not the run, and must not be replaced by audio that still carries its
speaker label. The audio pipeline returns ``None`` for such an item (having
logged the file and the error) and :func:`collate_readable` drops it.
"""

import logging

from speechbrain.dataio.batch import PaddedBatch

__all__ = ["collate_readable"]

logger = logging.getLogger(__name__)


def collate_readable(examples, signal_key="sig"):
    """``PaddedBatch`` of the examples whose ``signal_key`` is not None.

    Arguments
    ---------
    examples : list of dict
        Items of a ``DynamicItemDataset``.
    signal_key : str
        The key whose None marks an unreadable item.

    Returns
    -------
    speechbrain.dataio.batch.PaddedBatch
        The readable items, in order.

    Raises
    ------
    RuntimeError
        If no item of the batch could be read (the corpus is probably gone).

    Example
    -------
    >>> import torch
    >>> batch = collate_readable(
    ...     [
    ...         {"id": "a", "sig": torch.ones(3)},
    ...         {"id": "b", "sig": None},
    ...         {"id": "c", "sig": torch.ones(2)},
    ...     ]
    ... )
    >>> batch.id, batch.sig.data.shape
    (['a', 'c'], torch.Size([2, 3]))
    """
    readable = [ex for ex in examples if ex[signal_key] is not None]
    dropped = [str(ex.get("id")) for ex in examples if ex[signal_key] is None]
    if not readable:
        raise RuntimeError(
            f"no item of a batch could be read ({', '.join(dropped)}): "
            "see the audio errors logged above; is the corpus still there?"
        )
    if dropped:
        logger.warning(
            "dropped %d unreadable item(s) from a batch: %s",
            len(dropped),
            ", ".join(dropped),
        )
    return PaddedBatch(readable)
