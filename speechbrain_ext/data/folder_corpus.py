"""Preparation of any corpus of speaker folders for training and trials.

The speaker of a file is the folder that directly holds it, so
``<root>/<speaker>/<utt>.wav`` and ``<root>/<corpus>/<speaker>/<utt>.opus``
both work. :func:`prepare_folder_corpus` splits the speakers into training,
validation and test speakers and writes the manifests and a trial list
(see :mod:`speechbrain_ext.data.manifest` for the format).
"""

import os

from speechbrain.utils.logger import get_logger
from speechbrain_ext.data.preparation import (
    AUDIO_EXTENSIONS,
    check_split_mode,
    check_unique_ids,
    is_prepared,
    list_audio_files,
    make_trials,
    require_folder,
    scan_audio,
    split_held_out,
    split_validation,
    utterance_row,
    write_prepared,
)
from speechbrain_ext.output_checks import check_writable

__all__ = ["FOLDER_OUTPUTS", "prepare_folder_corpus"]

logger = get_logger(__name__)

FOLDER_OUTPUTS = (
    "train.csv",
    "valid.csv",
    "eval.csv",
    "trials.csv",
    "skipped.csv",
)
# Manifests and trials of a large folder corpus take tens of MB.
MIN_FREE_MB = 200


def prepare_folder_corpus(
    data_folder,
    save_folder,
    n_test_speakers=10,
    test_fold=0,
    valid_ratio=0.05,
    split_mode="speaker",
    max_trials=None,
    different_key_only=False,
    key_field=1,
    extensions=AUDIO_EXTENSIONS,
    seed=1234,
    skip_prep=False,
    num_workers=8,
):
    """Prepares a corpus of speaker folders for training and verification.

    Every audio file under ``data_folder`` (at any depth) belongs to the
    speaker named by the folder that directly contains it, so both
    ``<root>/<speaker>/<utt>.wav`` and ``<root>/<corpus>/<speaker>/<utt>.opus``
    (the shared benchmark data) work. Two different folders with the same
    speaker name are an error. An utterance ID is the file stem, prefixed
    with ``<speaker>-`` unless the stem already starts with the speaker.

    Writes into ``save_folder``: ``train.csv`` and ``valid.csv`` (training
    speakers), ``eval.csv`` (the test speakers' utterances; ``enrol_id`` =
    ``ID``, so any utterance can enrol), ``trials.csv`` (``enrol_id,
    test_id, label`` over eval.csv, see
    :func:`speechbrain_ext.data.preparation.make_trials`) and ``skipped.csv``.
    Paths are ``$data_root/<relative path>``.

    Arguments
    ---------
    data_folder : str
        Corpus root.
    save_folder : str
        Where the CSV files go.
    n_test_speakers : int or float
        Speakers held out for the trials: a count (>= 1; all speakers is
        allowed, leaving training empty) or a fraction (< 1).
    test_fold : int
        Which block of ``n_test_speakers`` speakers of the seeded speaker
        permutation is held out. Rotating it over ``0 .. S // n - 1``
        (S speakers) tests every speaker once with the same ``seed``
        (cross-validation folds); 0 is the usual single split.
    valid_ratio : float or int
        Fraction or count of the training speakers ("speaker") or items
        ("utterance") held out for validation.
    split_mode : str
        "speaker" or "utterance" (see
        :func:`speechbrain_ext.data.preparation.split_validation`).
    max_trials : int, optional
        Upper bound on the trials (half targets, half non-targets); None
        keeps every target pair and as many non-target pairs.
    different_key_only : bool
        Pair only utterances whose key differs (text-independent trials).
    key_field : int
        Which ``-``-separated field (from 0) of the file stem is the key.
        The default, 1, is the word in the shared data's
        ``dsp<id>-w<word>-r<repeat>`` and ``asc<id>-<keyword>-r<repeat>``.
    extensions : tuple of str
        Audio file extensions to include.
    seed : int
        Seed of the test/validation splits and of the trials.
    skip_prep : bool
        If True, do nothing.
    num_workers : int
        Threads reading audio headers.

    Raises
    ------
    FileNotFoundError
        If ``data_folder`` is missing.
    OSError
        If ``save_folder`` cannot be written or has too little free space.
    ValueError
        On speaker-name collisions, duplicate IDs or, with
        ``different_key_only``, stems without a ``key_field``.

    Example
    -------
    >>> import torch
    >>> from speechbrain_ext.data.audio import save_audio
    >>> tmpdir = getfixture("tmpdir")
    >>> for spk in ("s1", "s2", "s3"):
    ...     for word in ("w1", "w2"):
    ...         path = tmpdir / "corpus" / spk / f"{spk}-{word}.wav"
    ...         save_audio(str(path), torch.zeros(1600), 16000)
    >>> prepare_folder_corpus(
    ...     str(tmpdir / "corpus"),
    ...     str(tmpdir / "csv"),
    ...     n_test_speakers=2,
    ...     valid_ratio=0,
    ... )
    >>> open(tmpdir / "csv" / "trials.csv").read().splitlines()[:3]
    ['enrol_id,test_id,label', 's1-w1,s1-w2,1', 's1-w1,s2-w1,0']
    """
    if skip_prep:
        return
    check_split_mode(split_mode)
    options = {
        "corpus": "folder",
        "data_folder": os.path.abspath(data_folder),
        "n_test_speakers": n_test_speakers,
        "test_fold": test_fold,
        "valid_ratio": valid_ratio,
        "split_mode": split_mode,
        "max_trials": max_trials,
        "different_key_only": different_key_only,
        "key_field": key_field,
        "extensions": list(extensions),
        "seed": seed,
    }
    if is_prepared(save_folder, options, FOLDER_OUTPUTS):
        logger.info(
            "%s already prepared in %s, skipping", data_folder, save_folder
        )
        return
    require_folder(data_folder, "data_folder")
    check_writable(save_folder, MIN_FREE_MB)
    logger.info("Creating manifests of %s in %s", data_folder, save_folder)

    rows, keys, skipped = _folder_rows(
        data_folder, extensions, key_field, different_key_only, num_workers
    )
    evaluation, training = _hold_out_test_speakers(
        rows, n_test_speakers, seed, test_fold
    )
    train, valid = split_validation(training, split_mode, valid_ratio, seed)
    trials = make_trials(
        [row["ID"] for row in evaluation],
        [row["spk_id"] for row in evaluation],
        keys=[keys[row["ID"]] for row in evaluation],
        max_trials=max_trials,
        different_key_only=different_key_only,
        seed=seed,
    )
    write_prepared(
        save_folder,
        {"train.csv": train, "valid.csv": valid, "eval.csv": evaluation},
        trials,
        skipped,
        options,
    )
    logger.info(
        "%s: %d train / %d valid / %d eval items, %d test speakers, %d trials",
        data_folder,
        len(train),
        len(valid),
        len(evaluation),
        len({row["spk_id"] for row in evaluation}),
        len(trials),
    )


def _folder_rows(data_folder, extensions, key_field, key_required, workers):
    """Whole-file rows of every readable file, their keys, and the skipped.

    An utterance ID is the file stem, prefixed with ``<speaker>-`` unless
    the stem already starts with the speaker; its key (for text-independent
    trials) is field ``key_field`` of the stem.
    """
    paths = list_audio_files(data_folder, extensions)
    speaker_of = _speakers_by_folder(paths)
    infos, skipped = scan_audio(paths, workers)
    rows, keys = [], {}
    for info in infos:
        spk = speaker_of[info.path]
        stem = os.path.splitext(os.path.basename(info.path))[0]
        utt_id = stem if stem.startswith(spk) else f"{spk}-{stem}"
        rows.append(utterance_row(info, data_folder, utt_id=utt_id, spk_id=spk))
        keys[utt_id] = _key(stem, key_field, info.path, key_required)
    check_unique_ids(rows)
    return rows, keys, skipped


def _hold_out_test_speakers(rows, n_test_speakers, seed, fold=0):
    """``(evaluation rows, training rows)``: test speakers held out.

    Any evaluation utterance can enrol, so its ``enrol_id`` is its ``ID``.
    """
    speakers = sorted({row["spk_id"] for row in rows})
    _, test_speakers = split_held_out(speakers, n_test_speakers, seed, fold)
    test_speakers = set(test_speakers)
    evaluation = [
        dict(row, enrol_id=row["ID"])
        for row in rows
        if row["spk_id"] in test_speakers
    ]
    training = [row for row in rows if row["spk_id"] not in test_speakers]
    return evaluation, training


def _speakers_by_folder(paths):
    """Speaker of each file: the name of its folder, checked for clashes."""
    folder_of, speaker_of = {}, {}
    for path in paths:
        folder = os.path.dirname(path)
        spk = os.path.basename(folder)
        if folder_of.setdefault(spk, folder) != folder:
            raise ValueError(
                f"two folders are named after speaker {spk!r}: "
                f"{folder_of[spk]} and {folder}"
            )
        speaker_of[path] = spk
    return speaker_of


def _key(stem, key_field, path, required):
    """Field ``key_field`` of a file stem ("" if absent and not required)."""
    fields = stem.split("-")
    if key_field < len(fields):
        return fields[key_field]
    if required:
        raise ValueError(
            f"{path}: file name has no field {key_field} (counting from 0, "
            "split on '-') to use as the key for different_key_only"
        )
    return ""
