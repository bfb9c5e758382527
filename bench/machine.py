"""What a benchmark ran on, recorded next to its numbers."""

import json
import os
import platform
import sys

import torch

__all__ = ["machine_info", "write_report"]


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


def write_report(report, markdown, out, module, argv=None):
    """Adds the command and the table to a report, prints it, writes JSON.

    Arguments
    ---------
    report : dict
        The benchmark's results; ``command`` and ``table`` are added.
    markdown : callable
        Turns the report into a markdown table.
    out : str
        JSON file to write (its folder is created).
    module : str
        The benchmark module, e.g. ``"bench.scoring"``.
    argv : list of str, optional
        The command-line arguments (``sys.argv[1:]`` if None).

    Returns
    -------
    dict
        The report.
    """
    argv = sys.argv[1:] if argv is None else argv
    # As a user types it: no machine-specific interpreter path.
    report["command"] = " ".join(["python", "-m", module] + argv)
    report["table"] = markdown(report)
    print(report["table"])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fout:
        json.dump(report, fout, indent=2)
    print(f"wrote {out}")
    return report
