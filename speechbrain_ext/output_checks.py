"""Checks that an output folder can take a run's results, before the run.

A training or extraction run that finds out at its first checkpoint, hours
in, that its output folder is read-only or its disk is full has wasted those
hours; :func:`check_writable` finds out in milliseconds at start-up.

Example
-------
>>> folder = str(getfixture("tmpdir") / "results" / "run1")
>>> check_writable(folder, min_free_mb=1) == folder
True
"""

import errno
import os
import shutil
import tempfile

__all__ = ["check_writable"]


def check_writable(folder, min_free_mb=100):
    """Creates ``folder`` if needed and proves that results can be written.

    A probe file is written to the folder and removed again, and the free
    space of the folder's file system is compared with ``min_free_mb``.

    Arguments
    ---------
    folder : str
        The output folder (created with its parents if missing).
    min_free_mb : float
        Free space required on the folder's file system, in MB (10^6
        bytes); 0 skips the check.

    Returns
    -------
    str
        ``folder``, unchanged.

    Raises
    ------
    OSError
        If the folder cannot be created or written (the subclass and errno
        of the failure are kept, e.g. ``PermissionError``), or if less
        than ``min_free_mb`` is free (errno ``ENOSPC``). The message names
        the folder and what to do about it.

    Example
    -------
    >>> check_writable(str(getfixture("tmpdir")), min_free_mb=10**12)
    Traceback (most recent call last):
    ...
    OSError: [Errno 28] only ... MB free on the disk of ... MB needed: ...
    """
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-") as f:
            f.write(b"probe")
            f.flush()
    except OSError as err:
        raise type(err)(
            err.errno,
            f"cannot write to output folder {folder} ({err.strerror}): fix "
            "its permissions or choose another output folder",
        ) from err
    free_mb = shutil.disk_usage(folder).free / 1e6
    if free_mb < min_free_mb:
        raise OSError(
            errno.ENOSPC,
            f"only {free_mb:.0f} MB free on the disk of {folder}, "
            f"{min_free_mb:.0f} MB needed: free some space or choose an "
            "output folder on another disk",
        )
    return folder
