"""What a benchmark ran on, recorded next to its numbers."""

import importlib
import json
import os
import platform
import resource
import sys

import torch

__all__ = [
    "HostReads",
    "machine_info",
    "peak_rss_mb",
    "rss_mb",
    "synchronize",
    "write_report",
]


def machine_info(device="cpu", libraries=()):
    """Describes the machine, the software and the device used.

    Arguments
    ---------
    device : str
        The torch device the benchmark ran on.
    libraries : sequence of str
        Modules whose ``__version__`` is recorded too.

    Returns
    -------
    dict
        ``platform``, ``processor``, ``python``, ``cpu_count``,
        ``torch_threads``, ``torch`` and ``device`` (with the GPU's name
        for a CUDA device), then one entry per library.

    Example
    -------
    >>> info = machine_info("cpu", libraries=["numpy"])
    >>> info["device"], info["torch"] == torch.__version__, "numpy" in info
    ('cpu', True, True)
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
    for name in libraries:
        info[name] = importlib.import_module(name).__version__
    return info


def rss_mb():
    """Current resident memory of this process, in MB (Linux)."""
    with open("/proc/self/statm") as fin:
        pages = int(fin.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb():
    """Peak resident memory of this process so far, in MB (Linux).

    Example
    -------
    >>> peak_rss_mb() > 0 and rss_mb() > 0
    True
    """
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device):
    """Waits for the device's queued work (CUDA), so timings include it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


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


# Tensor methods that copy a value to the host: on a GPU each one waits for
# every queued kernel (a synchronisation) before Python can go on.
HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "numpy")


class HostReads(torch.overrides.TorchFunctionMode):
    """Counts tensor reads to the host, by the code that asked for them.

    Counting works on any device, so the syncs a training step would cost
    on a GPU can be found and counted on a CPU. Each read is attributed to
    the innermost frame outside torch (``"module:function"``).

    Example
    -------
    >>> x = torch.arange(4)
    >>> with HostReads() as reads:
    ...     _ = int(x.max()) + x.sum().item()
    >>> reads.total, list(reads.by_caller.values())
    (2, [2])
    """

    def __init__(self):
        super().__init__()
        self.by_caller = {}

    @property
    def total(self):
        """Reads counted so far."""
        return sum(self.by_caller.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in HOST_READS:
            caller = _caller_outside_torch()
            self.by_caller[caller] = self.by_caller.get(caller, 0) + 1
        return func(*args, **(kwargs or {}))


def _caller_outside_torch():
    """``"module:function"`` of the innermost frame not in torch or here.

    Reads inside ``torch.optim`` are named ``"torch.optim"``: they read the
    optimizers' step counters, which torch keeps on the CPU (no GPU sync).
    """
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("torch.optim"):
            return "torch.optim"
        if not module.startswith(("torch", __name__)):
            return f"{module}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "?"
