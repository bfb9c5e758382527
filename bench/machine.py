"""What a benchmark ran on, recorded next to its numbers."""

import os
import platform

import torch

__all__ = ["machine_info"]


def machine_info(device="cpu"):
    """Describes the machine, the software and the device used.

    Arguments
    ---------
    device : str
        The torch device the benchmark ran on.

    Returns
    -------
    dict
        ``platform``, ``processor``, ``python``, ``cpu_count``,
        ``torch_threads``, ``torch`` and ``device`` (with the GPU's name
        for a CUDA device).

    Example
    -------
    >>> info = machine_info("cpu")
    >>> info["device"], info["torch"] == torch.__version__
    ('cpu', True)
    """
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
