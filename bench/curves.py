"""Learning curves from SpeechBrain training logs, plotted over seeds.

SpeechBrain's ``FileTrainLogger`` appends one line per epoch to
``train_log.txt``, for example::

    epoch: 1, lr: 2.00e-03 - train loss: 1.23 - valid EER: 25.31

:func:`read_learning_curve` turns such a file into one record per epoch,
:func:`curve_points` picks one statistic out of the records, and
:func:`plot_learning_curves` and :func:`curves_table` show the mean and
spread of that statistic over seeds, per system and epoch.

Example
-------
>>> path = getfixture("tmp_path") / "train_log.txt"
>>> _ = path.write_text(
...     "epoch: 1, lr: 1.00e-03 - train loss: 2.5 - valid EER: 30.0\\n"
...     "epoch: 2, lr: 1.00e-03 - train loss: 1.5 - valid EER: 20.0\\n"
... )
>>> curve_points(read_learning_curve(str(path)))
[(1, 30.0), (2, 20.0)]
"""

import math
import os
import re
import tempfile

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench.stats import seed_summary

__all__ = [
    "curve_points",
    "curves_table",
    "plot_learning_curves",
    "read_learning_curve",
]

# The first section of a line holds the epoch and other metadata (lr).
_META = re.compile(r"^epoch: (\d+)(?:, .*)?$")
# Every later item reads "<dataset> <name>: <number>".
_ITEM = re.compile(r"^(\S+) (.+): (\S+)$")
# Above this many epochs a tick per epoch would overlap.
_MAX_EPOCH_TICKS = 20


def _parse_section(section):
    """Parses ``"train loss: 1.23, train acc: 0.5"`` into its stats.

    Arguments
    ---------
    section : str
        One " - " separated section of a log line, after the first.

    Returns
    -------
    dataset : str
        The prefix shared by the section's items (``train``, ``valid``).
    stats : dict
        Statistic name to float.
    """
    dataset, stats = None, {}
    for item in section.split(", "):
        match = _ITEM.match(item)
        if match is None:
            raise ValueError(
                f"item {item!r} is not '<dataset> <name>: <value>'"
            )
        prefix, name, value = match.groups()
        if dataset not in (None, prefix):
            raise ValueError(
                f"section mixes datasets {dataset!r} and {prefix!r}"
            )
        dataset = prefix
        try:
            stats[name] = float(value)
        except ValueError:
            raise ValueError(
                f"{name!r} has non-numeric value {value!r}"
            ) from None
    return dataset, stats


def _parse_line(line):
    """Parses one ``FileTrainLogger`` line into an epoch record.

    Arguments
    ---------
    line : str
        The line, without its newline.

    Returns
    -------
    dict
        ``epoch`` (int) and one dict of stats per dataset section; ``train``
        and ``valid`` are always present, empty if the line has none.
    """
    meta, *sections = line.split(" - ")
    match = _META.match(meta)
    if match is None:
        raise ValueError(f"first section {meta!r} does not start with epoch")
    record = {"epoch": int(match.group(1)), "train": {}, "valid": {}}
    for section in sections:
        dataset, stats = _parse_section(section)
        if dataset == "epoch" or record.get(dataset):
            raise ValueError(f"dataset {dataset!r} appears twice")
        record[dataset] = stats
    return record


def read_learning_curve(train_log_path, key="EER"):
    """Reads the per-epoch statistics of a SpeechBrain ``train_log.txt``.

    Arguments
    ---------
    train_log_path : str
        A file written by ``speechbrain.utils.train_logger.FileTrainLogger``:
        one line per epoch, sections separated by " - ", the first holding
        ``epoch`` (and e.g. ``lr``), each later one ``<dataset> <name>:
        <value>`` items separated by ", ".
    key : str or None
        Validation statistic the curve follows: epochs whose ``valid``
        section lacks it (validation skipped that epoch) are left out.
        ``None`` keeps every epoch.

    Returns
    -------
    list of dict
        ``{"epoch": int, "train": {...}, "valid": {...}}`` per epoch, in
        file order, values as floats (a ``test`` section, if logged, is
        kept under ``"test"``). When an epoch is logged twice, as after
        resuming from an earlier checkpoint, the last line wins.

    Raises
    ------
    FileNotFoundError
        If ``train_log_path`` does not exist.
    ValueError
        For a line that cannot be parsed, naming the file and line number.

    Example
    -------
    >>> path = getfixture("tmp_path") / "train_log.txt"
    >>> _ = path.write_text(
    ...     "epoch: 1, lr: 2.00e-03 - train loss: 1.23, train loss_mi: 3.4"
    ...     " - valid EER: 25.31, valid minDCF: 9.87e-01\\n"
    ... )
    >>> [record] = read_learning_curve(str(path))
    >>> record["epoch"], record["train"]
    (1, {'loss': 1.23, 'loss_mi': 3.4})
    >>> record["valid"]
    {'EER': 25.31, 'minDCF': 0.987}
    """
    if not os.path.isfile(train_log_path):
        raise FileNotFoundError(f"no training log at {train_log_path}")
    records = {}
    with open(train_log_path, encoding="utf-8") as log:
        for number, line in enumerate(log, start=1):
            if not line.strip():
                continue
            try:
                record = _parse_line(line.rstrip("\n"))
            except ValueError as error:
                raise ValueError(
                    f"{train_log_path}, line {number}: {error}"
                ) from None
            # Re-assigning keeps the epoch's first position in the file.
            records[record["epoch"]] = record
    return [
        record
        for record in records.values()
        if key is None or key in record["valid"]
    ]


def curve_points(records, key="EER", dataset="valid"):
    """Picks one statistic per epoch out of :func:`read_learning_curve`.

    Arguments
    ---------
    records : list of dict
        Output of :func:`read_learning_curve`.
    key : str
        Statistic name, e.g. ``EER`` or ``loss``.
    dataset : str
        Section holding it: ``train``, ``valid`` or ``test``.

    Returns
    -------
    list of tuple
        ``(epoch, value)`` for every record that has the statistic.

    Example
    -------
    >>> records = [
    ...     {"epoch": 1, "train": {"loss": 2.0}, "valid": {}},
    ...     {"epoch": 2, "train": {"loss": 1.0}, "valid": {"EER": 9.0}},
    ... ]
    >>> curve_points(records, "loss", "train")
    [(1, 2.0), (2, 1.0)]
    >>> curve_points(records)
    [(2, 9.0)]
    """
    return [
        (record["epoch"], record[dataset][key])
        for record in records
        if key in record.get(dataset, {})
    ]


def _values_by_epoch(seeds):
    """Groups one system's per-seed curves by epoch.

    Arguments
    ---------
    seeds : dict
        Seed to list of ``(epoch, value)``.

    Returns
    -------
    dict
        Epoch to the list of values of the seeds that reached it, sorted
        by epoch.
    """
    grouped = {}
    for points in seeds.values():
        for epoch, value in points:
            grouped.setdefault(int(epoch), []).append(float(value))
    return dict(sorted(grouped.items()))


def _check_curves(curves):
    """Validates ``{system: {seed: [(epoch, value), ...]}}``.

    Arguments
    ---------
    curves : dict
        The curves to plot or tabulate.

    Returns
    -------
    dict
        System to :func:`_values_by_epoch` of its seeds.
    """
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    grouped = {}
    for system, seeds in curves.items():
        grouped[system] = _values_by_epoch(seeds)
        if not grouped[system]:
            raise ValueError(f"system {system!r} has no (epoch, value) point")
    return grouped


def _draw_system(axes, system, by_epoch):
    """Draws one system's mean line and min-max band over seeds.

    Arguments
    ---------
    axes : matplotlib.axes.Axes
        Where to draw.
    system : str
        Legend label.
    by_epoch : dict
        Epoch to the seeds' values.
    """
    epochs = list(by_epoch)
    values = list(by_epoch.values())
    mean = [float(np.mean(v)) for v in values]
    (line,) = axes.plot(epochs, mean, marker="o", markersize=4, label=system)
    axes.fill_between(
        epochs,
        [min(v) for v in values],
        [max(v) for v in values],
        color=line.get_color(),
        alpha=0.2,
        linewidth=0,
    )


def _fit_y_axis(axes, grouped):
    """Fits the y axis to the plotted values with a small margin.

    Arguments
    ---------
    axes : matplotlib.axes.Axes
        The axes.
    grouped : dict
        System to epoch to values.
    """
    values = [
        value
        for by_epoch in grouped.values()
        for seed_values in by_epoch.values()
        for value in seed_values
        if math.isfinite(value)
    ]
    if not values:
        return
    low, high = min(values), max(values)
    # A flat curve still needs a visible range around it.
    margin = 0.08 * (high - low) or 0.05 * abs(high) or 1.0
    axes.set_ylim(low - margin, high + margin)


def _set_epoch_ticks(axes, grouped):
    """Puts x ticks on integer epochs: each one, unless there are many.

    Arguments
    ---------
    axes : matplotlib.axes.Axes
        The axes.
    grouped : dict
        System to epoch to values.
    """
    epochs = sorted(
        {epoch for by_epoch in grouped.values() for epoch in by_epoch}
    )
    if len(epochs) <= _MAX_EPOCH_TICKS:
        axes.set_xticks(epochs)
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save_atomically(figure, path, dpi):
    """Writes a figure as PNG to a temporary file, then renames it.

    A reader (or a crashed run) never sees a half-written image.

    Arguments
    ---------
    figure : matplotlib.figure.Figure
        The figure.
    path : str
        Destination.
    dpi : int
        Resolution.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".png.tmp")
    os.close(handle)
    try:
        figure.savefig(temporary, format="png", dpi=dpi, bbox_inches="tight")
        os.replace(temporary, path)
    except BaseException:
        os.remove(temporary)
        raise


def plot_learning_curves(curves, path, title, ylabel="validation EER (%)"):
    """Plots one learning curve per system: mean and range over seeds.

    Arguments
    ---------
    curves : dict
        ``{system label: {seed: [(epoch, value), ...]}}``; seeds may stop
        at different epochs, each epoch averages the seeds that reached it.
    path : str
        Output PNG file, written atomically.
    title : str
        Figure title.
    ylabel : str
        Label of the y axis.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        If ``curves`` is empty or a system has no point.

    Example
    -------
    >>> curves = {
    ...     "aam": {1: [(1, 30.0), (2, 22.0)], 2: [(1, 28.0), (2, 21.0)]},
    ...     "hybrid": {1: [(1, 27.0), (2, 19.0)], 2: [(1, 29.0), (2, 20.0)]},
    ... }
    >>> path = str(getfixture("tmp_path") / "curves.png")
    >>> plot_learning_curves(curves, path, "CN-Celeb subset") == path
    True
    """
    grouped = _check_curves(curves)
    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for system, by_epoch in grouped.items():
        _draw_system(axes, system, by_epoch)
    _fit_y_axis(axes, grouped)
    _set_epoch_ticks(axes, grouped)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    # Outside the axes on the right, so it can never cover a curve.
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    _save_atomically(figure, path, dpi=120)
    return path


def _format_cell(values, digits):
    """Formats the seeds' values at one epoch as ``mean ± std``.

    Arguments
    ---------
    values : list of float or None
        Values of the seeds that reached the epoch; None if none did.
    digits : int
        Decimals shown.

    Returns
    -------
    str
        ``mean ± std``, the mean alone for one seed, ``–`` for none.
    """
    if not values:
        return "–"
    summary = seed_summary(values)
    mean = f"{summary['mean']:.{digits}f}"
    if summary["n"] < 2:
        return mean
    return f"{mean} ± {summary['std']:.{digits}f}"


def curves_table(curves, digits=2):
    """Markdown table of learning curves: systems by epochs.

    Arguments
    ---------
    curves : dict
        ``{system label: {seed: [(epoch, value), ...]}}``.
    digits : int
        Decimals shown.

    Returns
    -------
    str
        One row per system, one column per epoch, cells ``mean ± std``
        over seeds (sample std; the mean alone for a single seed, ``–``
        where no seed reached the epoch).

    Example
    -------
    >>> curves = {
    ...     "aam": {1: [(1, 30.0), (2, 22.0)], 2: [(1, 28.0), (2, 20.0)]},
    ...     "hybrid": {1: [(1, 27.0)]},
    ... }
    >>> print(curves_table(curves, digits=1))
    | system | epoch 1 | epoch 2 |
    |---|---|---|
    | aam | 29.0 ± 1.4 | 21.0 ± 1.4 |
    | hybrid | 27.0 | – |
    """
    grouped = _check_curves(curves)
    epochs = sorted(
        {epoch for by_epoch in grouped.values() for epoch in by_epoch}
    )
    lines = [
        "| system | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
        "|---" * (len(epochs) + 1) + "|",
    ]
    for system, by_epoch in grouped.items():
        cells = [_format_cell(by_epoch.get(e), digits) for e in epochs]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
