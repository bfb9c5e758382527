"""Building blocks of data preparation: scan, split, pair, write.

Preparation functions (:mod:`speechbrain_ext.data.folder_corpus`, the
CN-Celeb recipe's ``cnceleb_prepare.py``) combine these into SpeechBrain CSV
manifests (the format of :mod:`speechbrain_ext.data.manifest`) with the
columns ``ID, duration, wav, start, stop, spk_id`` (plus any extra ones).
Audio paths are written as ``$<key>/<path relative to a corpus root>`` so
that ``DynamicItemDataset.from_csv(path, replacements={key: root})``
relocates them; ``start``/``stop`` count samples at the file's own rate.

Every audio file is validated through
:func:`speechbrain_ext.data.audio.audio_info` (header reads, in a thread
pool): unusable files are collected with the reason and written to
``skipped.csv`` rather than stopping a preparation of a million files at the
first bad one.

Example
-------
>>> import torch
>>> from speechbrain_ext.data.audio import save_audio
>>> root = getfixture("tmpdir")
>>> for spk in ("a", "b"):
...     for utt in range(2):
...         save_audio(
...             str(root / spk / f"{spk}-w{utt}.wav"), torch.zeros(8000), 16000
...         )
>>> infos, skipped = scan_audio(list_audio_files(str(root)))
>>> rows = [
...     utterance_row(i, str(root), spk_id=i.path.split("/")[-2]) for i in infos
... ]
>>> rows[0]["wav"], rows[0]["duration"], skipped
('$data_root/a/a-w0.wav', 0.5, [])
>>> trials = make_trials([r["ID"] for r in rows], [r["spk_id"] for r in rows])
>>> [trial for trial in trials if trial[2] == 1]
[('a-w0', 'a-w1', 1), ('b-w0', 'b-w1', 1)]
>>> sum(label == 0 for _, _, label in trials)
2
"""

import concurrent.futures
import json
import os
import shutil
import tempfile
import time

import numpy as np

from speechbrain.utils.logger import get_logger
from speechbrain_ext.data.audio import AudioError, audio_info
from speechbrain_ext.data.manifest import write_csv, write_trials

__all__ = [
    "AUDIO_EXTENSIONS",
    "list_audio_files",
    "scan_audio",
    "utterance_row",
    "drop_short",
    "split_held_out",
    "split_validation",
    "check_split_mode",
    "make_trials",
    "write_prepared",
    "is_prepared",
    "save_prepare_options",
]

logger = get_logger(__name__)

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "opus")
OPTIONS_FILE = "prepare_options.json"
SKIP_REPORT = "skipped.csv"
SPLIT_MODES = ("speaker", "utterance")


def list_audio_files(folder, extensions=AUDIO_EXTENSIONS):
    """Lists audio files under a folder, recursively, sorted.

    Arguments
    ---------
    folder : str
        Folder to walk (symbolic links to folders are followed).
    extensions : tuple of str
        File extensions to keep, without the dot, case-insensitive.

    Returns
    -------
    list of str
        Sorted paths starting with ``folder``.

    Raises
    ------
    FileNotFoundError
        If ``folder`` is not a directory.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"audio folder not found: {folder}")
    suffixes = tuple("." + ext.lower().lstrip(".") for ext in extensions)
    paths = []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        paths += [
            os.path.join(parent, name)
            for name in files
            if name.lower().endswith(suffixes)
        ]
    return sorted(paths)


def scan_audio(paths, num_workers=8, log_every=20000):
    """Reads the headers of audio files, separating the unusable ones.

    Progress is logged (INFO) every ``log_every`` files: CN-Celeb1+2 has
    630k files, minutes of header reads during which the other ranks of a
    ``torchrun`` job wait at a barrier.

    Arguments
    ---------
    paths : list of str
        Audio files to check.
    num_workers : int
        Threads reading headers (I/O bound, so more than the CPU count is
        fine).
    log_every : int
        Files between two progress lines (0: none).

    Returns
    -------
    infos : list of speechbrain_ext.data.audio.AudioInfo
        One per usable file, in the order of ``paths``.
    skipped : list of (str, str)
        ``(path, reason)`` of each missing, corrupt or empty file.

    Example
    -------
    >>> import torch
    >>> from speechbrain_ext.data.audio import save_audio
    >>> tmpdir = getfixture("tmpdir")
    >>> paths = [str(tmpdir / f"{i}.wav") for i in range(3)]
    >>> for path in paths:
    ...     save_audio(path, torch.zeros(160), 16000)
    >>> caplog = getfixture("caplog")
    >>> caplog.set_level("INFO")
    >>> infos, skipped = scan_audio(paths + ["gone.wav"], log_every=2)
    >>> len(infos), len(skipped)
    (3, 1)
    >>> print(caplog.messages[-1])  # doctest: +ELLIPSIS
    audio headers: 4 / 4 read (1 unusable), ... files/s, 0 s left
    """

    def check(chunk):
        """(info, None) or (None, reason) for each path of a chunk."""
        results = []
        for path in chunk:
            try:
                results.append((audio_info(path), None))
            except AudioError as err:
                results.append((None, str(err)))
        return results

    # One task per chunk: a future per file costs more than the header read;
    # at most 1000 files per chunk, so that progress is seen as it goes.
    size = max(1, min(1000, -(-len(paths) // (4 * max(1, num_workers)))))
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    results, bad = [], 0
    begin = time.monotonic()
    next_log = log_every
    with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
        for part in pool.map(check, chunks):
            results += part
            bad += sum(reason is not None for _, reason in part)
            done = len(results)
            if log_every and (done >= next_log or done == len(paths)):
                next_log = (done // log_every + 1) * log_every
                rate = done / max(time.monotonic() - begin, 1e-9)
                logger.info(
                    "audio headers: %d / %d read (%d unusable), "
                    "%.0f files/s, %.0f s left",
                    done,
                    len(paths),
                    bad,
                    rate,
                    (len(paths) - done) / rate,
                )
    infos = [info for info, _ in results if info is not None]
    skipped = [
        (path, reason)
        for path, (_, reason) in zip(paths, results)
        if reason is not None
    ]
    return infos, skipped


def utterance_row(info, root, key="data_root", utt_id=None, **extra):
    """Builds one SpeechBrain CSV row for a whole audio file.

    Arguments
    ---------
    info : speechbrain_ext.data.audio.AudioInfo
        The file's header, from :func:`scan_audio`.
    root : str
        Corpus root that ``info.path`` is written relative to.
    key : str
        Replacement variable standing for ``root`` in the ``wav`` column.
    utt_id : str, optional
        The row's ID; the file name without extension if None.
    **extra
        Further columns, e.g. ``spk_id`` or ``genre``.

    Returns
    -------
    dict
        ``ID, duration, wav, start, stop`` and the extra columns.
    """
    relative = os.path.relpath(info.path, root).replace(os.sep, "/")
    if utt_id is None:
        utt_id = os.path.splitext(os.path.basename(info.path))[0]
    return {
        "ID": utt_id,
        "duration": round(info.duration, 4),
        "wav": f"${key}/{relative}",
        "start": 0,
        "stop": info.num_frames,
        **extra,
    }


def drop_short(rows, min_duration):
    """Splits rows into those at least ``min_duration`` long and the rest.

    Arguments
    ---------
    rows : list of dict
        Rows with ``duration`` and ``wav`` columns.
    min_duration : float
        Shortest duration kept, in seconds.

    Returns
    -------
    kept : list of dict
        Rows long enough.
    skipped : list of (str, str)
        ``(wav, reason)`` for each dropped row.

    Example
    -------
    >>> drop_short(
    ...     [
    ...         {"wav": "a.wav", "duration": 0.5},
    ...         {"wav": "b.wav", "duration": 2.0},
    ...     ],
    ...     1.0,
    ... )[1]
    [('a.wav', 'shorter than min_duration (0.500 s < 1.000 s)')]
    """
    kept = [row for row in rows if row["duration"] >= min_duration]
    skipped = [
        (
            row["wav"],
            f"shorter than min_duration ({row['duration']:.3f} s "
            f"< {min_duration:.3f} s)",
        )
        for row in rows
        if row["duration"] < min_duration
    ]
    return kept, skipped


def split_held_out(items, held_out, seed, block=0):
    """Splits items at random into kept and held-out parts.

    The items are permuted with ``seed`` and the held-out part is block
    ``block`` of that permutation, so blocks ``0, 1, ...`` of one seed are
    disjoint: rotating ``block`` over ``len(items) // count`` values holds
    out every item once (cross-validation folds).

    Arguments
    ---------
    items : list
        Items to split (speaker ids, rows...).
    held_out : float or int
        A fraction of the items in [0, 1), or a count (an int >= 1).
        A positive fraction holds out at least one item when there are two
        or more.
    seed : int
        The split depends only on the items, their order and this seed.
    block : int
        Which block of ``count`` consecutive items of the permutation is
        held out (0: the first).

    Returns
    -------
    kept : list
        Items not held out, in their original order.
    held : list
        Held-out items, in their original order.

    Example
    -------
    >>> kept, held = split_held_out(list("abcdefghij"), 0.2, seed=1)
    >>> len(kept), len(held), sorted(kept + held) == list("abcdefghij")
    (8, 2, True)
    >>> folds = [
    ...     split_held_out(list("abcdefghij"), 2, 1, b)[1] for b in range(5)
    ... ]
    >>> sorted(sum(folds, [])) == list("abcdefghij")
    True
    """
    n = len(items)
    if isinstance(held_out, (int, np.integer)) and held_out >= 1:
        count = int(held_out)
    elif 0 <= held_out < 1:
        count = int(round(held_out * n))
        if held_out > 0 and n > 1:
            count = max(count, 1)
    else:
        raise ValueError(
            f"held-out share must be a fraction in [0, 1) or a count >= 1, "
            f"got {held_out!r}"
        )
    if count > n:
        raise ValueError(f"cannot hold out {count} of {n} items")
    if block < 0 or (block + 1) * count > n:
        raise ValueError(
            f"cannot hold out block {block} of {count} of {n} items: the "
            f"blocks are 0 to {n // max(count, 1) - 1}"
        )
    start = block * count
    held_index = set(
        np.random.default_rng(seed).permutation(n)[start : start + count]
    )
    kept = [item for i, item in enumerate(items) if i not in held_index]
    held = [item for i, item in enumerate(items) if i in held_index]
    return kept, held


def make_trials(
    utt_ids,
    spk_ids,
    keys=None,
    max_trials=None,
    different_key_only=False,
    seed=1234,
):
    """Pairs utterances into balanced target and non-target trials.

    All same-speaker pairs are targets (or ``max_trials // 2`` of them,
    drawn at random); as many different-speaker pairs are drawn at random
    as non-targets (fewer only if fewer exist).

    Arguments
    ---------
    utt_ids : list of str
        Utterance ids.
    spk_ids : list of str
        Speaker of each utterance.
    keys : list of str, optional
        A content key of each utterance (e.g. the word spoken); needed by
        ``different_key_only``.
    max_trials : int, optional
        Upper bound on the number of trials.
    different_key_only : bool
        Pair only utterances whose keys differ, so that a trial cannot be
        decided by the words being the same (text-independent trials).
    seed : int
        The trials depend only on the inputs and this seed.

    Returns
    -------
    list of (str, str, int)
        ``(enrol_id, test_id, label)`` sorted by ids, label 1 for target.
        Within a pair the smaller id is the enrolment side.

    Example
    -------
    >>> make_trials(
    ...     ["a1", "a2", "b1", "b2"],
    ...     ["a", "a", "b", "b"],
    ...     keys=["x", "y", "x", "y"],
    ...     different_key_only=True,
    ... )
    [('a1', 'a2', 1), ('a1', 'b2', 0), ('a2', 'b1', 0), ('b1', 'b2', 1)]
    """
    if different_key_only and keys is None:
        raise ValueError("different_key_only needs the utterance keys")
    order = np.argsort(utt_ids, kind="stable")
    ids = np.asarray(utt_ids, dtype=object)[order]
    _, spk = np.unique(
        np.asarray(spk_ids, dtype=object)[order], return_inverse=True
    )
    key = None
    if different_key_only:
        _, key = np.unique(
            np.asarray(keys, dtype=object)[order], return_inverse=True
        )
    rng = np.random.default_rng(seed)

    first, second = [], []
    for speaker in range(spk.max() + 1 if len(spk) else 0):
        members = np.flatnonzero(spk == speaker)
        i, j = np.triu_indices(len(members), 1)
        first.append(members[i])
        second.append(members[j])
    first = np.concatenate(first) if first else np.zeros(0, int)
    second = np.concatenate(second) if second else np.zeros(0, int)
    if key is not None:
        differ = key[first] != key[second]
        first, second = first[differ], second[differ]
    n_target = len(first)
    if max_trials is not None and n_target > max_trials // 2:
        n_target = max_trials // 2
        keep = np.sort(rng.choice(len(first), n_target, replace=False))
        first, second = first[keep], second[keep]

    others = _nontarget_pairs(spk, key, n_target, rng)
    pairs = [(ids[i], ids[j], 1) for i, j in zip(first, second)]
    pairs += [(ids[p // len(ids)], ids[p % len(ids)], 0) for p in others]
    if len(others) < n_target:
        logger.warning(
            "only %d non-target pairs exist for %d target trials",
            len(others),
            n_target,
        )
    return sorted(pairs)


def _nontarget_pairs(spk, key, count, rng, max_rounds=100):
    """Draws ``count`` distinct different-speaker pairs, coded i * n + j."""
    n = len(spk)
    chosen = np.zeros(0, dtype=np.int64)
    for _ in range(max_rounds):
        if len(chosen) >= count or n < 2:
            break
        draw = rng.integers(0, n, size=(2, 2 * (count - len(chosen)) + 16))
        i, j = draw.min(axis=0), draw.max(axis=0)
        valid = spk[i] != spk[j]
        if key is not None:
            valid &= key[i] != key[j]
        new = np.setdiff1d(i[valid] * n + j[valid], chosen)
        # Keep the first draws in drawing order so the result is seeded.
        _, first_seen = np.unique(new, return_index=True)
        new = new[np.sort(first_seen)]
        chosen = np.concatenate([chosen, new[: count - len(chosen)]])
    return chosen


def write_prepared(save_folder, tables, trials, skipped, options):
    """Writes every output of a preparation, keeping the old ones on failure.

    The files are first written to a hidden folder inside ``save_folder``
    and only then moved over the previous outputs, so a preparation that
    fails while writing (a full disk, a killed job) leaves the previous
    outputs as they were. The options file that :func:`is_prepared` reads
    is removed before the move and written after it: an interruption
    during the move leaves a folder that is prepared again, never one that
    mixes two preparations under the old options.

    Arguments
    ---------
    save_folder : str
        Folder of the outputs (created if missing).
    tables : dict
        File name -> rows, each written by :func:`write_csv`.
    trials : iterable of (str, str, int)
        Written to ``trials.csv`` by :func:`write_trials`.
    skipped : list of (str, str)
        ``(path, reason)`` of unusable audio, written to ``skipped.csv``.
    options : dict
        JSON-serialisable options of the preparation.

    Example
    -------
    >>> folder = str(getfixture("tmpdir"))
    >>> write_prepared(
    ...     folder,
    ...     {"train.csv": []},
    ...     [("a", "b", 1)],
    ...     [("c.wav", "audio file is empty")],
    ...     {"seed": 1},
    ... )
    >>> sorted(os.listdir(folder))
    ['prepare_options.json', 'skipped.csv', 'train.csv', 'trials.csv']
    >>> is_prepared(folder, {"seed": 1}, ["train.csv", "trials.csv"])
    True
    """
    os.makedirs(save_folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".partial-", dir=save_folder)
    try:
        for name, rows in tables.items():
            write_csv(os.path.join(staging, name), rows)
        write_trials(os.path.join(staging, "trials.csv"), trials)
        write_csv(
            os.path.join(staging, SKIP_REPORT),
            [{"path": p, "reason": r} for p, r in skipped],
            columns=("path", "reason"),
        )
        options_file = os.path.join(save_folder, OPTIONS_FILE)
        if os.path.exists(options_file):
            os.remove(options_file)
        for name in os.listdir(staging):
            os.replace(
                os.path.join(staging, name), os.path.join(save_folder, name)
            )
        save_prepare_options(save_folder, options)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if skipped:
        logger.warning(
            "skipped %d unusable audio files (first: %s: %s); see %s",
            len(skipped),
            skipped[0][0],
            skipped[0][1],
            os.path.join(save_folder, SKIP_REPORT),
        )


def is_prepared(save_folder, options, outputs):
    """Tells whether a preparation with the same options already finished.

    Arguments
    ---------
    save_folder : str
        Folder holding the outputs and ``prepare_options.json``.
    options : dict
        JSON-serialisable options of the preparation.
    outputs : list of str
        Files (relative to ``save_folder``) the preparation writes.

    Returns
    -------
    bool
        True if every output exists and the saved options equal ``options``.

    Example
    -------
    >>> folder = str(getfixture("tmpdir"))
    >>> save_prepare_options(folder, {"seed": 1})
    >>> is_prepared(folder, {"seed": 1}, [])
    True
    >>> is_prepared(folder, {"seed": 2}, [])
    False

    A corrupt options file means "not prepared", with a warning naming it:

    >>> with open(f"{folder}/{OPTIONS_FILE}", "w") as f:
    ...     _ = f.write('{"seed": ')
    >>> caplog = getfixture("caplog")
    >>> is_prepared(folder, {"seed": 1}, [])
    False
    >>> print(caplog.messages[-1])  # doctest: +ELLIPSIS
    ignoring corrupt preparation options .../prepare_options.json (...)...
    """
    saved = os.path.join(save_folder, OPTIONS_FILE)
    if not all(
        os.path.isfile(os.path.join(save_folder, name))
        for name in [OPTIONS_FILE, *outputs]
    ):
        return False
    with open(saved, encoding="utf-8") as f:
        try:
            previous = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            # Preparing again is the right outcome, but a damaged file
            # (e.g. a run killed while writing it) should not go unnoticed.
            logger.warning(
                "ignoring corrupt preparation options %s (%s); preparing again",
                saved,
                err,
            )
            return False
    return previous == json.loads(json.dumps(options))


def save_prepare_options(save_folder, options):
    """Records the options of a finished preparation (see is_prepared).

    Arguments
    ---------
    save_folder : str
        Folder of ``prepare_options.json``.
    options : dict
        JSON-serialisable options.
    """
    os.makedirs(save_folder, exist_ok=True)
    with open(
        os.path.join(save_folder, OPTIONS_FILE), "w", encoding="utf-8"
    ) as f:
        json.dump(options, f, indent=2, sort_keys=True)


def split_validation(rows, split_mode, valid_ratio, seed):
    """Holds out validation speakers ("speaker") or utterances ("utterance").

    Arguments
    ---------
    rows : list of dict
        Training rows with ``spk_id``.
    split_mode : str
        "speaker": whole speakers are held out (speaker-disjoint, as the
        test trials are); "utterance": items are held out, never a
        speaker's last one, so every validation speaker is also trained on.
    valid_ratio : float or int
        Fraction (< 1) or count of the speakers or items held out; 0 holds
        out nothing. A fraction of at least 4 speakers holds out at least 2.
    seed : int
        Seed of the choice.

    Returns
    -------
    tuple of list
        ``(train_rows, valid_rows)``.

    Raises
    ------
    ValueError
        If validation would hold a single speaker: its trials would all be
        target trials, so its EER, which selects the checkpoint, is
        undefined.

    Example
    -------
    >>> rows = [{"ID": f"{s}{i}", "spk_id": s} for s in "abcd" for i in (1, 2)]
    >>> train, valid = split_validation(rows, "speaker", 0.5, seed=1)
    >>> len(train), len({row["spk_id"] for row in valid})
    (4, 2)
    >>> split_validation(rows, "speaker", 1, seed=1)
    Traceback (most recent call last):
    ...
    ValueError: split_mode 'speaker' with valid_ratio 1 holds out one speaker...
    """
    check_split_mode(split_mode)
    if split_mode == "speaker":
        train, valid = _held_out_speakers(rows, valid_ratio, seed)
    else:
        train, valid = _held_out_utterances(rows, valid_ratio, seed)
    if len({row["spk_id"] for row in valid}) == 1:
        raise ValueError(
            f"split_mode {split_mode!r} with valid_ratio {valid_ratio} holds "
            "out one speaker, so validation has no different-speaker trials "
            "and no EER to select checkpoints by: hold out at least two "
            "speakers (e.g. valid_ratio 2), or use split_mode 'utterance'"
        )
    return train, valid


def check_split_mode(split_mode):
    """Raises ``ValueError`` unless ``split_mode`` is one of SPLIT_MODES.

    Preparations call it before reading any audio.

    Example
    -------
    >>> check_split_mode("speakers")
    Traceback (most recent call last):
    ...
    ValueError: split_mode must be one of ('speaker', 'utterance'), got 'speakers'
    """
    if split_mode not in SPLIT_MODES:
        raise ValueError(
            f"split_mode must be one of {SPLIT_MODES}, got {split_mode!r}"
        )


def _held_out_speakers(rows, valid_ratio, seed):
    """Speaker-disjoint split (see :func:`split_validation`)."""
    speakers = sorted({row["spk_id"] for row in rows})
    if 0 < valid_ratio < 1 and len(speakers) >= 4:
        # Validation scores same/different-speaker trials: it needs at
        # least two speakers, whatever the ratio gives.
        valid_ratio = max(int(round(valid_ratio * len(speakers))), 2)
    _, held = split_held_out(speakers, valid_ratio, seed)
    held = set(held)
    return (
        [row for row in rows if row["spk_id"] not in held],
        [row for row in rows if row["spk_id"] in held],
    )


def _held_out_utterances(rows, valid_ratio, seed):
    """Held-out-item split (see :func:`split_validation`)."""
    _, held = split_held_out(list(range(len(rows))), valid_ratio, seed)
    # Never hold out a speaker's last item: validation classes must exist
    # in training.
    left = {}
    for row in rows:
        left[row["spk_id"]] = left.get(row["spk_id"], 0) + 1
    valid_index = set()
    for index in held:
        spk = rows[index]["spk_id"]
        if left[spk] > 1:
            left[spk] -= 1
            valid_index.add(index)
    return (
        [row for i, row in enumerate(rows) if i not in valid_index],
        [row for i, row in enumerate(rows) if i in valid_index],
    )


def require_folder(folder, what):
    """Raises ``FileNotFoundError`` naming ``what`` if ``folder`` is absent.

    Example
    -------
    >>> require_folder("/nonexistent", "data_folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: data_folder not found: /nonexistent
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} not found: {folder}")


def check_unique_ids(rows):
    """Raises ``ValueError`` naming both files of a repeated utterance ID.

    Example
    -------
    >>> check_unique_ids([{"ID": "u", "wav": "a.wav"}, {"ID": "u", "wav": "b"}])
    Traceback (most recent call last):
    ...
    ValueError: duplicate utterance ID 'u': a.wav and b
    """
    seen = {}
    for row in rows:
        if row["ID"] in seen:
            raise ValueError(
                f"duplicate utterance ID {row['ID']!r}: "
                f"{seen[row['ID']]} and {row['wav']}"
            )
        seen[row["ID"]] = row["wav"]
