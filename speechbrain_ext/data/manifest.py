"""The manifest format: SpeechBrain CSVs, trial lists and their audio.

A manifest is a SpeechBrain CSV with at least ``ID`` and ``wav`` (the
prepared ones: ``ID, duration, wav, start, stop, spk_id`` plus any extra
columns). ``wav`` is a path that may hold ``$name`` placeholders, resolved
with the replacements given when reading (as SpeechBrain's ``load_data_csv``
does), and may list several files joined by ``;``: a training item made of
consecutive short utterances, whose ``start`` is 0 and ``stop`` the total
sample count. ``start``/``stop`` of a single file count samples at the
file's own rate.

This module is the one place that reads and writes that format:
:func:`check_manifest` (every bad line named before anything is read),
:func:`read_manifest`, :func:`write_csv`, :func:`write_trials`,
:func:`join_wav_paths` / :func:`split_wav_paths` and :func:`load_row_audio`.

Example
-------
>>> import torch
>>> from speechbrain_ext.data.audio import save_audio
>>> root = getfixture("tmpdir")
>>> for name in ("a", "b"):
...     save_audio(str(root / f"{name}.wav"), torch.ones(800), 16000)
>>> write_csv(
...     str(root / "m.csv"),
...     [
...         {
...             "ID": "ab",
...             "duration": 0.1,
...             "wav": join_wav_paths(["$root/a.wav", "$root/b.wav"]),
...             "start": 0,
...             "stop": 1600,
...             "spk_id": "s",
...         }
...     ],
... )
>>> row = read_manifest(str(root / "m.csv"), {"root": str(root)})[0]
>>> len(split_wav_paths(row["wav"])), load_row_audio(row).shape
(2, torch.Size([1600]))
"""

import csv
import os
import re

import torch

from speechbrain_ext.data.audio import load_audio

__all__ = [
    "CSV_COLUMNS",
    "PLACEHOLDER",
    "WAV_SEPARATOR",
    "check_manifest",
    "join_wav_paths",
    "load_row_audio",
    "read_list",
    "read_manifest",
    "resolve_placeholders",
    "split_wav_paths",
    "write_csv",
    "write_trials",
]

CSV_COLUMNS = ("ID", "duration", "wav", "start", "stop", "spk_id")
# As SpeechBrain's load_data_csv finds them.
PLACEHOLDER = re.compile(r"\$([\w.]+)")
# Between the files of a joined training item.
WAV_SEPARATOR = ";"


def read_list(path, min_fields):
    """Reads a whitespace-separated list file, skipping blank lines.

    Arguments
    ---------
    path : str
        The list (e.g. CN-Celeb's ``trials.lst``).
    min_fields : int
        Fields every line must have.

    Returns
    -------
    list of (int, list of str)
        Line number (from 1) and fields of each non-blank line.

    Raises
    ------
    FileNotFoundError
        If the list does not exist.
    ValueError
        If a line has too few fields; the message names file and line.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"list file not found: {path}")
    lines = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < min_fields:
                raise ValueError(
                    f"{path}:{number}: expected at least {min_fields} "
                    f"fields, got {line.strip()!r}"
                )
            lines.append((number, fields))
    return lines


def check_manifest(path, columns=("ID", "wav"), replacements=None):
    """Checks a SpeechBrain CSV before it is read, naming any bad line.

    SpeechBrain's ``load_data_csv`` and ``csv.DictReader`` meet a short
    row, a repeated ID or an unknown ``$placeholder`` with a ``TypeError``
    or ``KeyError`` that names neither the file nor the line.

    Arguments
    ---------
    path : str
        The CSV file.
    columns : tuple of str
        Columns the header must have.
    replacements : dict, optional
        If given, every ``$name`` placeholder must be one of its keys.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming file and line: an empty file, a missing column, a row whose
        field count differs from the header's, an empty or repeated ID, a
        duration that is not a number, or a placeholder with no value.

    Example
    -------
    >>> path = getfixture("tmpdir") / "bad.csv"
    >>> path.write("ID,duration,wav\\na,1.0,a.wav\\na,2.0\\n")
    >>> check_manifest(str(path))
    Traceback (most recent call last):
    ...
    ValueError: ...bad.csv:3: expected 3 fields (ID,duration,wav), got 2: ...
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CSV file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, skipinitialspace=True)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}:1: no header line (the file is empty)")
        missing = [name for name in columns if name not in header]
        if missing:
            raise ValueError(
                f"{path}:1: no column {', '.join(missing)} in "
                f"the header {','.join(header)!r}"
            )
        first_seen = {}
        for fields in reader:
            if not fields:  # DictReader skips blank lines too
                continue
            where = f"{path}:{reader.line_num}"
            if len(fields) != len(header):
                raise ValueError(
                    f"{where}: expected {len(header)} fields "
                    f"({','.join(header)}), got {len(fields)}: "
                    f"{','.join(fields)!r}"
                )
            row = dict(zip(header, fields))
            utt_id = row.get("ID")
            if utt_id is not None:
                if not utt_id:
                    raise ValueError(f"{where}: empty ID")
                if utt_id in first_seen:
                    raise ValueError(
                        f"{where}: ID {utt_id!r} repeats line "
                        f"{first_seen[utt_id]}"
                    )
                first_seen[utt_id] = reader.line_num
            try:
                float(row.get("duration", 0.0))
            except ValueError:
                raise ValueError(
                    f"{where}: duration {row['duration']!r} is not a number"
                ) from None
            if replacements is None:
                continue
            unknown = sorted(
                {
                    name
                    for value in fields
                    for name in PLACEHOLDER.findall(value)
                }
                - set(replacements)
            )
            if unknown:
                raise ValueError(
                    f"{where}: no value given for "
                    f"${unknown[0]} (pass it as a replacement)"
                )


def write_csv(path, rows, columns=CSV_COLUMNS):
    """Writes rows as a CSV file; columns not in ``columns`` come after.

    Arguments
    ---------
    path : str
        Output file (its folder is created).
    rows : list of dict
        The rows; all have the same keys.
    columns : tuple of str
        Leading columns, in order; written even when there are no rows.
    """
    fields = list(columns)
    for row in rows[:1]:
        fields += [name for name in row if name not in fields]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_trials(path, trials):
    """Writes a trial list as CSV with columns ``enrol_id,test_id,label``.

    Arguments
    ---------
    path : str
        Output file (its folder is created).
    trials : iterable of (str, str, int)
        Enrolment id, test id and label (1 target, 0 non-target).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Plain writes: trial lists run to millions of lines.
    with open(path, "w", encoding="utf-8") as f:
        f.write("enrol_id,test_id,label\n")
        f.writelines(
            f"{enrol},{test},{label}\n" for enrol, test, label in trials
        )


def resolve_placeholders(value, replacements, where):
    """Replaces every ``$name`` in ``value`` by ``replacements[name]``.

    Arguments
    ---------
    value : str
        A manifest field.
    replacements : dict
        Placeholder name -> value.
    where : str
        ``<file>:<line>`` for the error message.

    Returns
    -------
    str
        The resolved value.

    Raises
    ------
    ValueError
        Naming ``where`` and the first placeholder with no replacement.

    Example
    -------
    >>> resolve_placeholders("$root/a.wav", {"root": "/d"}, "m.csv:2")
    '/d/a.wav'
    >>> resolve_placeholders("$root/a.wav", {}, "m.csv:2")
    Traceback (most recent call last):
    ...
    ValueError: m.csv:2: no value for $root in '$root/a.wav' (pass it as a replacement)
    """
    missing = set(PLACEHOLDER.findall(value)) - set(replacements)
    if missing:
        raise ValueError(
            f"{where}: no value for ${sorted(missing)[0]} in {value!r} "
            "(pass it as a replacement)"
        )
    return PLACEHOLDER.sub(lambda m: str(replacements[m.group(1)]), value)


def read_manifest(path, replacements=None, columns=("ID", "wav")):
    """Reads a SpeechBrain CSV, resolving ``$data_root``-style placeholders.

    The file is checked first (:func:`check_manifest`), so a bad line is
    named with its file and line number rather than failing later.

    Arguments
    ---------
    path : str
        CSV with at least the ``columns``.
    replacements : dict, optional
        Placeholder name -> value, e.g. ``{"data_root": "/data/cnceleb"}``;
        every placeholder of ``wav`` must have one.
    columns : tuple of str
        Columns the header must have.

    Returns
    -------
    list of dict
        One dict per row, in file order, with ``wav`` resolved.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file and line of a bad row (see :func:`check_manifest`).

    Example
    -------
    >>> path = getfixture("tmpdir") / "m.csv"
    >>> path.write("ID,wav,spk_id\\nu1,$root/u1.wav,s1\\n")
    >>> read_manifest(str(path), {"root": "/d"})
    [{'ID': 'u1', 'wav': '/d/u1.wav', 'spk_id': 's1'}]
    """
    replacements = replacements or {}
    check_manifest(path, columns, replacements)
    rows = []
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin, skipinitialspace=True)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            row["wav"] = resolve_placeholders(row["wav"], replacements, where)
            rows.append(row)
    return rows


def join_wav_paths(paths):
    """The ``wav`` field of a training item made of several files.

    Example
    -------
    >>> join_wav_paths(["a.flac", "b.flac"])
    'a.flac;b.flac'
    """
    return WAV_SEPARATOR.join(paths)


def split_wav_paths(wav):
    """The files of a ``wav`` field (one, or several joined ones).

    Example
    -------
    >>> split_wav_paths("a.flac;b.flac"), split_wav_paths("c.wav")
    (['a.flac', 'b.flac'], ['c.wav'])
    """
    return wav.split(WAV_SEPARATOR)


def load_row_audio(row, sample_rate=16000, start=None, stop=None):
    """Loads a manifest row's audio: a file segment or joined files.

    Arguments
    ---------
    row : dict
        A row with a resolved ``wav`` and optional ``start``/``stop``
        (samples at the file's rate; empty means the whole file).
    sample_rate : int
        Expected sample rate (see
        :func:`speechbrain_ext.data.audio.load_audio`).
    start, stop : int, optional
        A segment of a single-file row instead of the row's own
        ``start``/``stop`` (e.g. a random crop).

    Returns
    -------
    torch.Tensor
        The mono waveform; a joined row's files concatenated whole.

    Raises
    ------
    speechbrain_ext.data.audio.AudioError
        Naming the file that cannot be read.
    """
    paths = split_wav_paths(row["wav"])
    if len(paths) > 1:  # consecutive short utterances joined in preparation
        wavs = [load_audio(path, 0, None, sample_rate) for path in paths]
        return torch.cat(wavs)
    if start is None:
        start = int(row.get("start") or 0)
    if stop is None and row.get("stop") not in (None, ""):
        stop = int(row["stop"])
    return load_audio(paths[0], start, stop, sample_rate)
