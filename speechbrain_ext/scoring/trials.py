"""Reading verification trial lists and mapping them to embedding rows.

Trial lists name utterances by path, and the extension they give is not to
be trusted: CN-Celeb's ``trials.lst`` says ``test/id00800-singing-01-005.wav``
although the release is FLAC. Every utterance is therefore identified by its
*stem*: the path without a known audio extension.

Supported line formats (whitespace-separated, one format per file, decided
by the first non-blank line):

- ``enrol test label``: CN-Celeb, Kaldi/WeSpeaker; label is 1/0 or
  target/nontarget;
- ``label enrol test``: SpeechBrain's VoxCeleb ``veri_test2.txt``; label is
  1/0;
- ``enrol test``: no labels (evaluation without keys);
- the CSV that data preparation writes, with the header
  ``enrol_id,test_id,label`` (or ``enrol_id,test_id``) and labels 1/0.

Example
-------
>>> path = str(getfixture("tmpdir") / "trials.lst")
>>> with open(path, "w") as trial_file:
...     _ = trial_file.write(
...         "id00800-enroll test/id00800-singing-01-005.wav 1\\n"
...         "id00800-enroll test/id00801-vlog-01-001.wav 0\\n"
...     )
>>> trials = read_trials(path)
>>> trials[0]
('id00800-enroll', 'test/id00800-singing-01-005', 1)
>>> enrol_idx, test_idx, labels = map_trials(
...     trials,
...     enrol_ids=["id00800-enroll"],
...     test_ids=["id00801-vlog-01-001.flac", "id00800-singing-01-005.flac"],
... )
>>> enrol_idx.tolist(), test_idx.tolist(), labels.tolist()
([0, 0], [1, 0], [True, False])
"""

import csv
import os

import numpy as np

__all__ = ["AUDIO_EXTENSIONS", "map_trials", "read_trials", "utterance_stem"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".sph")

_LABELS = {"1": 1, "0": 0, "target": 1, "nontarget": 0}
_CSV_COLUMNS = ("enrol_id", "test_id", "label")
_MAX_LISTED = 20


def utterance_stem(name):
    """Returns an utterance path without its audio extension.

    Only extensions in :data:`AUDIO_EXTENSIONS` (any case) are removed, so
    ids that merely contain a dot are kept whole.

    Arguments
    ---------
    name : str
        An utterance id or path.

    Returns
    -------
    str
        The path with a leading ``./`` and the audio extension removed.

    Example
    -------
    >>> utterance_stem("test/id00800-singing-01-005.wav")
    'test/id00800-singing-01-005'
    >>> utterance_stem("./spk1.session2")
    'spk1.session2'
    """
    root, extension = os.path.splitext(name)
    if extension.lower() in AUDIO_EXTENSIONS:
        name = root
    while name.startswith("./"):
        name = name[2:]
    return name


def read_trials(path):
    """Reads a trial list into (enrol_id, test_id, label) tuples.

    Both ids are returned as stems (see :func:`utterance_stem`); the label is
    1 (target), 0 (non-target) or None for a list without labels. Blank lines
    are skipped. The format is decided by the first non-blank line (see the
    module docstring) and every other line must follow it.

    Arguments
    ---------
    path : str
        The trial list.

    Returns
    -------
    list of tuple
        ``(enrol_id, test_id, label)`` per trial, in file order.

    Raises
    ------
    ValueError
        If a line does not follow the format, naming the file and line.

    Example
    -------
    >>> path = str(getfixture("tmpdir") / "veri_test2.txt")
    >>> with open(path, "w") as trial_file:
    ...     _ = trial_file.write("1 id10270/x6u/00001.wav id10270/a/2.wav\\n")
    >>> read_trials(path)
    [('id10270/x6u/00001', 'id10270/a/2', 1)]
    """
    if _is_trial_csv(path):
        return _read_trial_csv(path)
    trials = []
    stems = {}
    layout = None
    with open(path, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            fields = line.split()
            if layout is None:
                if not fields:
                    continue
                layout = _detect_layout(fields, path, line_number)
                enrol_col, test_col, label_col = layout
                n_fields = 2 if label_col is None else 3
            if len(fields) != n_fields:
                if not fields:
                    continue
                raise ValueError(
                    f"{path}:{line_number}: expected {n_fields} fields like "
                    f"the first line, got {len(fields)}: {' '.join(fields)!r}"
                )
            label = None
            if label_col is not None:
                label = _LABELS.get(fields[label_col])
                if label is None or (label_col == 0 and len(fields[0]) > 1):
                    label = _parse_label(
                        fields[label_col], layout, path, line_number
                    )
            # One string per distinct id keeps millions of trials small and
            # computes each stem once.
            enrol = stems.get(fields[enrol_col])
            if enrol is None:
                enrol = stems[fields[enrol_col]] = utterance_stem(
                    fields[enrol_col]
                )
            test = stems.get(fields[test_col])
            if test is None:
                test = stems[fields[test_col]] = utterance_stem(
                    fields[test_col]
                )
            trials.append((enrol, test, label))
    if not trials:
        raise ValueError(f"{path}: the trial list is empty")
    return trials


def _is_trial_csv(path):
    """Tells whether the first non-blank line is the prepared CSV header."""
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                return line.strip().startswith("enrol_id,test_id")
    return False


def _read_trial_csv(path):
    """Reads the ``enrol_id,test_id[,label]`` CSV that preparation writes.

    Arguments
    ---------
    path : str
        The CSV file.

    Returns
    -------
    list of tuple
        ``(enrol_id, test_id, label)`` with stems, as :func:`read_trials`.
    """
    trials = []
    with open(path, newline="", encoding="utf-8") as fin:
        reader = csv.reader(fin)
        header = next(reader)
        if header not in (list(_CSV_COLUMNS), list(_CSV_COLUMNS[:2])):
            raise ValueError(
                f"{path}:1: expected the header {','.join(_CSV_COLUMNS)}, "
                f"got {','.join(header)!r}"
            )
        for fields in reader:
            if not fields:
                continue
            where = f"{path}:{reader.line_num}"
            if len(fields) != len(header) or not all(fields):
                raise ValueError(
                    f"{where}: expected {len(header)} non-empty fields, "
                    f"got {','.join(fields)!r}"
                )
            label = None
            if len(fields) == 3:
                if fields[2] not in ("0", "1"):
                    raise ValueError(f"{where}: label {fields[2]!r} is not 0/1")
                label = int(fields[2])
            trials.append(
                (utterance_stem(fields[0]), utterance_stem(fields[1]), label)
            )
    if not trials:
        raise ValueError(f"{path}: the trial list is empty")
    return trials


def _detect_layout(fields, path, line_number):
    """Decides the column layout from the first line of a trial list.

    Arguments
    ---------
    fields : list of str
        The whitespace-separated fields of the line.
    path : str
        The trial list, for error messages.
    line_number : int
        The line number, for error messages.

    Returns
    -------
    tuple
        Columns of the enrolment id, test id and label (None if unlabelled).
    """
    if len(fields) == 2:
        return 0, 1, None
    if len(fields) == 3:
        if fields[2].lower() in _LABELS:
            return 0, 1, 2
        if fields[0] in ("0", "1"):
            return 1, 2, 0
    raise ValueError(
        f"{path}:{line_number}: cannot tell the trial format from "
        f"{' '.join(fields)!r}; expected 'enrol test label', "
        "'label enrol test' or 'enrol test'"
    )


def _parse_label(label, layout, path, line_number):
    """Reads a label that is not a plain lower-case token, or fails.

    Arguments
    ---------
    label : str
        The label field.
    layout : tuple
        As returned by :func:`_detect_layout`.
    path : str
        The trial list, for error messages.
    line_number : int
        The line number, for error messages.

    Returns
    -------
    int
        1 for a target trial, 0 for a non-target one.
    """
    label_first = layout[2] == 0
    value = None if label_first else _LABELS.get(label.lower())
    if value is None:
        raise ValueError(
            f"{path}:{line_number}: label {label!r} is not 0/1"
            + ("" if label_first else " or target/nontarget")
        )
    return value


class _IdMatcher:
    """Finds the row of an utterance among available ids by stem.

    A name matches the available id whose stem equals it; otherwise the
    one whose stem ends with it on a path-component boundary (``test/x``
    matches ``/data/eval/test/x.flac``); otherwise, the same with the name's
    basename. A name with several candidates at every step is ambiguous.

    Arguments
    ---------
    available : list of str
        The ids (or paths) that have embeddings, in row order.
    kind : str
        "enrol" or "test", for error messages.
    """

    def __init__(self, available, kind):
        self.stems = [
            utterance_stem(str(name)).strip("/") for name in available
        ]
        self.by_stem = {}
        for row, stem in enumerate(self.stems):
            if stem in self.by_stem:
                raise ValueError(
                    f"{kind} ids {available[self.by_stem[stem]]!r} and "
                    f"{available[row]!r} have the same stem {stem!r}"
                )
            self.by_stem[stem] = row
        self.by_suffix = {}
        for row, stem in enumerate(self.stems):
            parts = stem.split("/")
            for first in range(len(parts)):
                suffix = "/".join(parts[first:])
                self.by_suffix.setdefault(suffix, []).append(row)

    def find(self, name):
        """Returns the row of ``name``, or why there is none.

        Arguments
        ---------
        name : str
            A stem from a trial list.

        Returns
        -------
        int or str
            The row, or a message explaining the failure.
        """
        key = name.strip("/")
        if key in self.by_stem:
            return self.by_stem[key]
        candidates = self.by_suffix.get(key, [])
        if not candidates:
            candidates = self.by_suffix.get(key.rsplit("/", 1)[-1], [])
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            return "not found"
        shown = ", ".join(repr(self.stems[row]) for row in candidates[:3])
        return f"ambiguous: {len(candidates)} matches such as {shown}"


def map_trials(trials, enrol_ids, test_ids):
    """Maps trials to rows of the enrolment and test embeddings.

    Names are compared by stem, so ``.wav`` in the list matches ``.flac``
    ids. A trial id matches an available id that equals it or ends with it
    (whole path components); failing that, its basename is matched if that
    is unambiguous. Every unmatched name is reported in one error.

    Arguments
    ---------
    trials : list of tuple
        ``(enrol_id, test_id, label)`` as returned by :func:`read_trials`.
    enrol_ids : list of str
        Ids or paths of the enrolment embeddings, in row order.
    test_ids : list of str
        Ids or paths of the test embeddings, in row order.

    Returns
    -------
    enrol_idx : numpy.ndarray
        int64 row of ``enrol_ids`` per trial.
    test_idx : numpy.ndarray
        int64 row of ``test_ids`` per trial.
    labels : numpy.ndarray or None
        bool, True for target trials; None if the trials have no labels.

    Raises
    ------
    ValueError
        Listing the first unmatched (or ambiguous) names and their count,
        or if only some trials have labels.

    Example
    -------
    >>> trials = [("spk1-enroll", "test/spk1-a", 1), ("spk1-enroll", "x", 0)]
    >>> map_trials(trials, ["spk1-enroll"], ["eval/test/spk1-a.flac"])
    Traceback (most recent call last):
      ...
    ValueError: 1 trial id(s) match no embedding ...: test 'x' (not found)
    """
    enrol_rows = _rows(trials, 0, _IdMatcher(enrol_ids, "enrol"))
    test_rows = _rows(trials, 1, _IdMatcher(test_ids, "test"))
    failures = [
        f"{kind} {name!r} ({row})"
        for kind, rows in (("enrol", enrol_rows), ("test", test_rows))
        for name, row in rows.items()
        if isinstance(row, str)
    ]
    if failures:
        raise ValueError(
            f"{len(failures)} trial id(s) match no embedding (first "
            f"{_MAX_LISTED} shown): {', '.join(failures[:_MAX_LISTED])}"
        )
    count = len(trials)
    enrol_idx = np.fromiter(
        (enrol_rows[t[0]] for t in trials), dtype=np.int64, count=count
    )
    test_idx = np.fromiter(
        (test_rows[t[1]] for t in trials), dtype=np.int64, count=count
    )
    unlabelled = sum(1 for t in trials if t[2] is None)
    if unlabelled == count:
        return enrol_idx, test_idx, None
    if unlabelled:
        raise ValueError(
            f"{unlabelled} of {count} trials have no label; either all or "
            "none must be labelled"
        )
    labels = np.fromiter((t[2] == 1 for t in trials), dtype=bool, count=count)
    return enrol_idx, test_idx, labels


def _rows(trials, column, matcher):
    """Looks up each distinct name of one trial column once.

    Arguments
    ---------
    trials : list of tuple
        The trials.
    column : int
        0 for enrolment ids, 1 for test ids.
    matcher : _IdMatcher
        The available ids of that column.

    Returns
    -------
    dict
        Name -> row, or name -> failure message, in first-seen order.
    """
    rows = {}
    for trial in trials:
        name = trial[column]
        if name not in rows:
            rows[name] = matcher.find(utterance_stem(name))
    return rows
