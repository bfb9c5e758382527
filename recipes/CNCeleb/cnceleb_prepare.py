"""Data preparation for CN-Celeb speaker verification (and folder corpora).

:func:`prepare_cnceleb` reads the extracted CN-Celeb release (openslr 82,
the ``CN-Celeb_flac`` folder, optionally with CN-Celeb2 from openslr 82b) and
writes SpeechBrain CSV manifests into ``save_folder``:

- ``train.csv``, ``valid.csv``: the CN-Celeb1 dev speakers (``dev/dev.lst``)
  plus CN-Celeb2, split speaker-disjoint or by held-out utterances. Columns
  ``ID, duration, wav, start, stop, spk_id, genre``.
- ``enrol_concat.csv``: one row per enrolment id, the concatenated
  ``eval/enroll/<id>.flac`` ("Concat" enrolment).
- ``enrol_avg.csv``: one row per source utterance listed in
  ``eval/lists/enroll.map`` ("Avg" enrolment: average their embeddings).
  Both enrolment CSVs have an ``enrol_id`` column.
- ``test.csv``: the ``eval/test`` files; the ID is the file stem, e.g.
  ``id00800-singing-01-005``.
- ``trials.csv``: ``enrol_id, test_id, label`` from ``trials.lst``.
- ``calibration_trials.csv``: ``enrol_id, test_id, label`` over the
  validation utterances (ids of ``valid.csv``), for fitting a score
  calibration (``verify.py --calibrate``) on speakers the test trials never
  use; see :func:`calibration_trials`. Header only when nothing is held out.
- ``skipped.csv``: every unusable audio file with the reason.

The outputs replace those of an earlier preparation only once all of them
are written: a preparation that fails (a malformed list, a full disk)
leaves the earlier one as it was. An unwritable ``save_folder`` or one on
a disk with less than ``MIN_FREE_MB`` free is an error before any audio is
read.

Paths are ``$data_root/...`` for CN-Celeb1 and ``$data_root2/...`` for
CN-Celeb2, so load with::

    DynamicItemDataset.from_csv(
        csv,
        replacements={"data_root": data_folder, "data_root2": cnceleb2_folder},
    )

(``data_root2`` is only needed when CN-Celeb2 was prepared). A joined
training item (see ``join_min_duration``) lists its files in ``wav``
separated by ``;``; its ``stop`` is the total number of samples.

The lists name files ``.wav`` although the release holds ``.flac``: list
entries are matched to files by stem, never by extension.

:func:`speechbrain_ext.data.folder_corpus.prepare_folder_corpus` prepares
any corpus of speaker folders (e.g. ``<root>/<speaker>/<utt>.wav``);
:func:`prepare_data` picks it or :func:`prepare_cnceleb` by a
``data_format`` name.

Run it from the command line (``python cnceleb_prepare.py --help``) or from
a training script through ``speechbrain.utils.distributed.run_on_main``.
Header reads are logged every 20,000 files with their rate.

Multi-GPU runs: prepare once before ``torchrun``. Inside ``torchrun`` the
main process prepares while the other ranks wait at a barrier, and
CN-Celeb1+2 (about 630k files, 3.48M trials) takes minutes (see
``bench/prepare_scale.py``), which a short process-group timeout may not
allow. With the same options as the YAML's ``prepare_options`` (and the
same ``prep_folder``), ``train.py`` then finds ``prepare_options.json``
matching and skips preparation on every rank::

    python cnceleb_prepare.py --data_folder /data/CN-Celeb_flac \
        --cnceleb2_folder /data/CN-Celeb2_flac \
        --save_folder results/prepared --valid_ratio 0.02 \
        --join_min_duration 5.0 --min_duration 1.0
    torchrun --nproc_per_node=8 train.py hparams/aam_softmax.yaml \
        --data_folder /data/CN-Celeb_flac \
        --prepare_options="{cnceleb2_folder: /data/CN-Celeb2_flac}"

Authors
 * speechbrain_ext contributors
"""

import argparse
import inspect
import os
import random
import sys

from speechbrain_ext.data.folder_corpus import prepare_folder_corpus
from speechbrain_ext.data.manifest import (
    join_wav_paths,
    read_list,
    write_trials,
)
from speechbrain_ext.data.preparation import (
    SPLIT_MODES,
    check_split_mode,
    drop_short,
    is_prepared,
    list_audio_files,
    make_trials,
    require_folder,
    scan_audio,
    split_validation,
    utterance_row,
    write_prepared,
)
from speechbrain_ext.output_checks import check_writable

from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)

CNCELEB_OUTPUTS = (
    "train.csv",
    "valid.csv",
    "enrol_concat.csv",
    "enrol_avg.csv",
    "test.csv",
    "trials.csv",
    "calibration_trials.csv",
    "skipped.csv",
)
CALIBRATION_TRIALS = "calibration_trials.csv"
MAX_LISTED = 20
# CN-Celeb's 3.5 million trials alone take about 150 MB as CSV.
MIN_FREE_MB = 200


def prepare_cnceleb(
    data_folder,
    save_folder,
    cnceleb2_folder=None,
    split_mode="speaker",
    valid_ratio=0.05,
    join_min_duration=0.0,
    min_duration=0.0,
    seed=1234,
    skip_prep=False,
    num_workers=8,
    calibration_utts_per_speaker=20,
    calibration_max_trials=200_000,
):
    """Writes the CN-Celeb manifests described in the module docstring.

    Arguments
    ---------
    data_folder : str
        The extracted ``CN-Celeb_flac`` folder (holds data/, dev/, eval/).
    save_folder : str
        Where the CSV files go.
    cnceleb2_folder : str, optional
        The extracted ``CN-Celeb2_flac`` folder, added to training. Its
        speakers are read from ``spk.lst`` if present, else from data/.
    split_mode : str
        "speaker": validation speakers are held out from training;
        "utterance": utterances of training speakers are held out (every
        speaker keeps at least one training item).
    valid_ratio : float or int
        Fraction (< 1) or number (>= 1) of speakers or items held out.
    join_min_duration : float
        If > 0, consecutive utterances of one speaker and genre (in session
        and utterance order) are joined until each item lasts at least this
        long, as WeSpeaker does with 5 s. A remainder shorter than that is
        added to the previous item of its group.
    min_duration : float
        Training items (after joining) shorter than this are skipped.
        Evaluation files are never dropped for their length.
    seed : int
        Seed of the validation split.
    skip_prep : bool
        If True, do nothing.
    num_workers : int
        Threads reading audio headers.
    calibration_utts_per_speaker : int
        Validation utterances per speaker in ``calibration_trials.csv``
        (keeps the audio to embed for calibration small).
    calibration_max_trials : int
        Upper bound on the calibration trials.

    Raises
    ------
    FileNotFoundError
        If ``data_folder``, ``dev/dev.lst``, an evaluation list or
        ``cnceleb2_folder`` is missing.
    OSError
        If ``save_folder`` cannot be written or has too little free space
        (see :func:`speechbrain_ext.output_checks.check_writable`).
    ValueError
        If a list names files that do not exist (all of them are listed in
        one message) or has a malformed line.

    Example
    -------
    >>> from speechbrain_ext.data.demo_corpus import generate_demo_corpus
    >>> tmpdir = getfixture("tmpdir")
    >>> root = generate_demo_corpus(
    ...     tmpdir / "CN-Celeb_flac",
    ...     n_train_speakers=3,
    ...     n_eval_speakers=2,
    ...     utts_per_speaker=3,
    ...     n_test_per_eval_speaker=1,
    ... )
    >>> prepare_cnceleb(root, str(tmpdir / "csv"), valid_ratio=2)
    >>> open(tmpdir / "csv" / "trials.csv").read().splitlines()[0]
    'enrol_id,test_id,label'
    """
    if skip_prep:
        return
    check_split_mode(split_mode)
    options = {
        "corpus": "cnceleb",
        "data_folder": os.path.abspath(data_folder),
        "cnceleb2_folder": cnceleb2_folder and os.path.abspath(cnceleb2_folder),
        "split_mode": split_mode,
        "valid_ratio": valid_ratio,
        "join_min_duration": join_min_duration,
        "min_duration": min_duration,
        "seed": seed,
        "calibration_utts_per_speaker": calibration_utts_per_speaker,
        "calibration_max_trials": calibration_max_trials,
    }
    if is_prepared(save_folder, options, CNCELEB_OUTPUTS):
        logger.info("CN-Celeb already prepared in %s, skipping", save_folder)
        return
    require_folder(data_folder, "CN-Celeb data_folder")
    check_writable(save_folder, MIN_FREE_MB)
    logger.info("Creating CN-Celeb manifests in %s", save_folder)
    skipped = []
    rows = _training_rows(
        data_folder,
        cnceleb2_folder,
        join_min_duration,
        min_duration,
        skipped,
        num_workers,
    )
    train, valid = split_validation(rows, split_mode, valid_ratio, seed)

    evaluation = _evaluation_rows(data_folder, skipped, num_workers)
    tables = {"train.csv": train, "valid.csv": valid}
    for name in ("enrol_concat", "enrol_avg", "test"):
        tables[f"{name}.csv"] = evaluation[name]
    calibration = calibration_trials(
        valid, calibration_utts_per_speaker, calibration_max_trials, seed
    )
    # Written aside first and moved in only after the other outputs, so a
    # failed preparation leaves the previous calibration list with its own.
    partial = os.path.join(save_folder, f".{CALIBRATION_TRIALS}.partial")
    write_trials(partial, calibration)
    try:
        write_prepared(
            save_folder, tables, evaluation["trials"], skipped, options
        )
        os.replace(partial, os.path.join(save_folder, CALIBRATION_TRIALS))
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    logger.info(
        "CN-Celeb: %d train / %d valid items (%d / %d speakers), "
        "%d enrolments, %d test files, %d trials, %d calibration trials",
        len(train),
        len(valid),
        len({r["spk_id"] for r in train}),
        len({r["spk_id"] for r in valid}),
        len(evaluation["enrol_concat"]),
        len(evaluation["test"]),
        len(evaluation["trials"]),
        len(calibration),
    )


def calibration_trials(
    valid_rows, utts_per_speaker=20, max_trials=200_000, seed=1234
):
    """Trials among validation utterances for fitting a score calibration.

    A calibration fitted on the test trials would be judged on the trials
    it was fitted to; these trials use only held-out training data. Up to
    ``utts_per_speaker`` utterances of each validation speaker are drawn
    (seeded), and :func:`speechbrain_ext.data.preparation.make_trials`
    pairs them, half targets and half non-targets. As in CN-Celeb's test
    trials, the two sides of a target trial come from different recordings:
    the session (``<genre>-<session>`` of the utterance id) plays the role
    of the key that ``different_key_only`` keeps apart. Both sides are
    single utterances: enrolment and test ids are ``valid.csv`` IDs.

    Note that the validation speakers also chose the exported checkpoint
    (lowest validation EER); with ``split_mode: utterance`` they are
    training speakers. Either way the calibration is somewhat optimistic
    about a model that has never heard the test speakers.

    Arguments
    ---------
    valid_rows : list of dict
        Validation rows with ``ID`` and ``spk_id``.
    utts_per_speaker : int
        Utterances kept per speaker.
    max_trials : int
        Upper bound on the trials.
    seed : int
        Seed of the utterance choice and of the trials.

    Returns
    -------
    list of (str, str, int)
        ``(enrol_id, test_id, label)``, label 1 for target; empty when
        fewer than two speakers are held out.

    Example
    -------
    >>> rows = [
    ...     {"ID": f"{spk}-{genre}-01-001", "spk_id": spk}
    ...     for spk in ("id1", "id2")
    ...     for genre in ("vlog", "sing")
    ... ]
    >>> for trial in calibration_trials(rows, seed=1):
    ...     print(*trial)
    id1-sing-01-001 id1-vlog-01-001 1
    id1-sing-01-001 id2-vlog-01-001 0
    id1-vlog-01-001 id2-sing-01-001 0
    id2-sing-01-001 id2-vlog-01-001 1
    """
    by_speaker = {}
    for row in valid_rows:
        by_speaker.setdefault(row["spk_id"], []).append(row)
    if len(by_speaker) < 2:
        return []
    rng = random.Random(seed)
    chosen = []
    for speaker in sorted(by_speaker):
        rows = sorted(by_speaker[speaker], key=lambda row: row["ID"])
        chosen += rng.sample(rows, min(utts_per_speaker, len(rows)))
    return make_trials(
        [row["ID"] for row in chosen],
        [row["spk_id"] for row in chosen],
        keys=[_session(row) for row in chosen],
        max_trials=max_trials,
        different_key_only=True,
        seed=seed,
    )


def _session(row):
    """``<genre>-<session>`` of a CN-Celeb utterance id (speaker first)."""
    stem = row["ID"][len(row["spk_id"]) + 1 :]
    return "-".join(stem.split("-")[:2])


def _training_rows(
    data_folder,
    cnceleb2_folder,
    join_min_duration,
    min_duration,
    skipped,
    num_workers,
):
    """Rows of the CN-Celeb1 dev speakers (and CN-Celeb2), joined, filtered.

    Unusable and too-short items are appended to ``skipped``.
    """
    dev_list = os.path.join(data_folder, "dev", "dev.lst")
    train_speakers = [fields[0] for _, fields in read_list(dev_list, 1)]
    rows = _speaker_rows(
        data_folder, "data_root", train_speakers, skipped, num_workers
    )
    if cnceleb2_folder is not None:
        require_folder(cnceleb2_folder, "cnceleb2_folder")
        rows += _speaker_rows(
            cnceleb2_folder,
            "data_root2",
            _cnceleb2_speakers(cnceleb2_folder),
            skipped,
            num_workers,
        )
    if join_min_duration > 0:
        rows = join_short_utterances(rows, join_min_duration)
    rows, short = drop_short(rows, min_duration)
    skipped += short
    return rows


# CN-Celeb options a folder corpus ignores instead of refusing (see
# prepare_data).
FOLDER_IGNORED = ("join_min_duration", "min_duration")


def prepare_data(data_format, data_folder, save_folder, **options):
    """Runs :func:`prepare_cnceleb` or :func:`prepare_folder_corpus`.

    Lets one set of recipe options serve both formats: options the chosen
    preparation does not take are ignored while they hold that option's
    default in the other preparation (e.g. ``cnceleb2_folder: null`` for a
    folder corpus), and are an error otherwise. ``join_min_duration`` and
    ``min_duration`` (CN-Celeb's segment joining, which the recipe's YAMLs
    set as the anchors do) are ignored with a warning for a folder corpus,
    whose files are kept whole.

    Arguments
    ---------
    data_format : str
        "cnceleb" or "folder".
    data_folder : str
        Corpus root.
    save_folder : str
        Where the CSV files go.
    **options
        Keyword arguments of the chosen preparation.

    Raises
    ------
    ValueError
        For an unknown format, or an option the format cannot honour.

    Example
    -------
    >>> prepare_data("cnceleb", "nowhere", "csv", n_test_speakers=5)
    Traceback (most recent call last):
    ...
    ValueError: options n_test_speakers do not apply to data_format 'cnceleb'
    """
    functions = {"cnceleb": prepare_cnceleb, "folder": prepare_folder_corpus}
    if data_format not in functions:
        raise ValueError(
            f"data_format must be one of {sorted(functions)}, "
            f"got {data_format!r}"
        )
    chosen = inspect.signature(functions[data_format]).parameters
    if data_format == "folder":
        ignored = {
            name: options.pop(name)
            for name in FOLDER_IGNORED
            if options.get(name, 0.0) != 0.0
        }
        if ignored:
            logger.warning(
                "a folder corpus is not joined or filtered by duration: "
                "ignoring %s",
                ", ".join(f"{k}={v}" for k, v in sorted(ignored.items())),
            )
    defaults = {
        name: parameter.default
        for function in functions.values()
        for name, parameter in inspect.signature(function).parameters.items()
    }
    foreign = sorted(
        name
        for name, value in options.items()
        if name not in chosen
        and (name not in defaults or value != defaults[name])
    )
    if foreign:
        raise ValueError(
            f"options {', '.join(foreign)} do not apply to "
            f"data_format {data_format!r}"
        )
    functions[data_format](
        data_folder,
        save_folder,
        **{name: value for name, value in options.items() if name in chosen},
    )


def join_short_utterances(rows, min_duration):
    """Joins consecutive short utterances of one speaker and genre.

    Within each (``spk_id``, ``genre``) group, in ID order (CN-Celeb IDs
    sort by session, then utterance), utterances are gathered until the
    gathered duration reaches ``min_duration``; a short remainder joins the
    group's last item. Utterances already long enough stay as they are.

    Arguments
    ---------
    rows : list of dict
        Whole-file rows with ``ID, duration, wav, stop, spk_id, genre``.
    min_duration : float
        Target minimum duration in seconds.

    Returns
    -------
    list of dict
        Rows; a joined one has ID ``<first ID>-join<count>``, its files in
        ``wav`` separated by ";", start 0 and stop the total sample count.

    Example
    -------
    >>> rows = [
    ...     dict(
    ...         ID=f"s-speech-01-00{i}",
    ...         duration=1.0,
    ...         wav=f"{i}.flac",
    ...         start=0,
    ...         stop=16000,
    ...         spk_id="s",
    ...         genre="speech",
    ...     )
    ...     for i in range(3)
    ... ]
    >>> joined = join_short_utterances(rows, 1.5)
    >>> [(row["ID"], row["duration"], row["wav"]) for row in joined]
    [('s-speech-01-000-join3', 3.0, '0.flac;1.flac;2.flac')]
    """
    groups = {}
    for row in sorted(rows, key=lambda row: row["ID"]):
        groups.setdefault((row["spk_id"], row["genre"]), []).append(row)
    joined = []
    for members in groups.values():
        runs, current, length = [], [], 0.0
        for row in members:
            current.append(row)
            length += row["duration"]
            if length >= min_duration:
                runs.append(current)
                current, length = [], 0.0
        if current and runs:
            runs[-1] += current
        elif current:
            runs.append(current)
        joined += [_join(run) for run in runs]
    return joined


def _join(run):
    if len(run) == 1:
        return run[0]
    return dict(
        run[0],
        ID=f"{run[0]['ID']}-join{len(run)}",
        duration=round(sum(row["duration"] for row in run), 4),
        wav=join_wav_paths([row["wav"] for row in run]),
        start=0,
        stop=sum(row["stop"] for row in run),
    )


def _cnceleb2_speakers(folder):
    """Speakers of CN-Celeb2: spk.lst if present, else data/'s folders."""
    spk_list = os.path.join(folder, "spk.lst")
    if os.path.isfile(spk_list):
        return [fields[0] for _, fields in read_list(spk_list, 1)]
    data = os.path.join(folder, "data")
    require_folder(data, "CN-Celeb2 data folder")
    return sorted(
        name
        for name in os.listdir(data)
        if os.path.isdir(os.path.join(data, name))
    )


def _speaker_rows(root, key, speakers, skipped, num_workers):
    """Whole-file rows of ``root/data/<spk>/*`` for the given speakers."""
    paths, speaker_of = [], {}
    for spk in speakers:
        folder = os.path.join(root, "data", spk)
        if not os.path.isdir(folder):
            skipped.append((folder, "speaker folder not found"))
            continue
        for path in list_audio_files(folder):
            paths.append(path)
            speaker_of[path] = spk
    infos, bad = scan_audio(paths, num_workers)
    skipped += bad
    rows = []
    for info in infos:
        spk = speaker_of[info.path]
        stem = os.path.splitext(os.path.basename(info.path))[0]
        rows.append(
            utterance_row(
                info,
                root,
                key,
                utt_id=f"{spk}-{stem}",
                spk_id=spk,
                genre=stem.split("-")[0],
            )
        )
    return rows


def _evaluation_rows(root, skipped, num_workers):
    """Enrolment, test and trial rows from CN-Celeb's eval/lists."""
    lists = _evaluation_lists(root)
    needed = (
        list(lists["concat_paths"].values())
        + list(lists["source_paths"].values())
        + [lists["test_files"][test] for _, test, _ in lists["trials"]]
    )
    infos, bad = scan_audio(sorted(set(needed)), num_workers)
    skipped += bad
    info_of = {info.path: info for info in infos}
    concat, average, tests = _evaluation_manifests(root, lists, info_of)
    # A trial is kept only if both enrolment modes and the test are usable,
    # so that Concat and Avg are scored on the same trials.
    usable = {row["enrol_id"] for row in concat} & {
        row["enrol_id"] for row in average
    }
    tested = {row["ID"] for row in tests}
    trials = lists["trials"]
    kept = [t for t in trials if t[0] in usable and t[1] in tested]
    if len(kept) < len(trials):
        logger.warning(
            "dropped %d of %d trials whose audio is unusable",
            len(trials) - len(kept),
            len(trials),
        )
    return {
        "enrol_concat": concat,
        "enrol_avg": average,
        "test": tests,
        "trials": kept,
    }


def _evaluation_lists(root):
    """eval/lists read and checked: every listed file is resolved.

    Returns a dict: ``concat_paths`` (enrolment id -> its eval/enroll
    file), ``sources`` (enrolment id -> [(listed name, data stem)]),
    ``source_paths`` ("<id>\\t<name>" -> file), ``trials`` ((enrol, test
    stem, label)) and ``test_files`` (stem -> eval/test file). Unknown
    files or enrolment ids raise one ``ValueError`` naming them all.
    """
    lists = os.path.join(root, "eval", "lists")
    enroll_lst = os.path.join(lists, "enroll.lst")
    enroll_map = os.path.join(lists, "enroll.map")
    trials_lst = os.path.join(lists, "trials.lst")
    enroll_lines = read_list(enroll_lst, 2)
    map_lines = read_list(enroll_map, 2)
    trial_lines = read_list(trials_lst, 3)

    enroll_files = _files_by_stem(os.path.join(root, "eval", "enroll"))
    test_files = _files_by_stem(os.path.join(root, "eval", "test"))
    concat_paths = _resolve(
        enroll_lst,
        {
            enrol: os.path.basename(_stem(path))
            for _, (enrol, path, *_) in enroll_lines
        },
        enroll_files,
    )
    sources = {}
    for _, (enrol, *names) in map_lines:
        sources[enrol] = [(name, _source_key(enrol, name)) for name in names]
    source_files = _data_files(
        root,
        {stem.split("/")[0] for pairs in sources.values() for _, stem in pairs},
    )
    flat = {
        f"{enrol}\t{name}": stem
        for enrol, pairs in sources.items()
        for name, stem in pairs
    }
    source_paths = _resolve(enroll_map, flat, source_files)
    trials = []
    for number, (enrol, test, label, *_) in trial_lines:
        if label not in ("0", "1"):
            raise ValueError(
                f"{trials_lst}:{number}: label must be 0 or 1, got {label!r}"
            )
        trials.append((enrol, os.path.basename(_stem(test)), int(label)))
    unknown_enrol = sorted(
        {enrol for enrol, _, _ in trials} - (set(concat_paths) & set(sources))
    )
    if unknown_enrol:
        _raise_unknown(
            trials_lst,
            unknown_enrol,
            "enrolment id of both enroll.lst and enroll.map",
        )
    _resolve(trials_lst, {test: test for _, test, _ in trials}, test_files)
    return {
        "concat_paths": concat_paths,
        "sources": sources,
        "source_paths": source_paths,
        "trials": trials,
        "test_files": test_files,
    }


def _evaluation_manifests(root, lists, info_of):
    """Concat-enrolment, Avg-enrolment and test rows of the usable files."""
    concat = [
        utterance_row(
            info_of[path],
            root,
            utt_id=enrol,
            enrol_id=enrol,
            spk_id=_speaker(enrol),
        )
        for enrol, path in lists["concat_paths"].items()
        if path in info_of
    ]
    average = []
    for enrol, pairs in lists["sources"].items():
        for name, stem in pairs:
            path = lists["source_paths"][f"{enrol}\t{name}"]
            if path in info_of:
                spk, utt = stem.split("/")[0], os.path.basename(stem)
                average.append(
                    utterance_row(
                        info_of[path],
                        root,
                        utt_id=f"{spk}-{utt}",
                        enrol_id=enrol,
                        spk_id=spk,
                        genre=utt.split("-")[0],
                    )
                )
    tests = [
        utterance_row(
            info_of[path],
            root,
            utt_id=stem,
            spk_id=stem.split("-")[0],
            genre=_genre(stem),
        )
        for stem, path in sorted(lists["test_files"].items())
        if path in info_of
    ]
    return concat, average, tests


def _stem(name):
    """A list entry without its extension: stems match .wav and .flac."""
    return os.path.splitext(name)[0]


def _source_key(enrol_id, name):
    """ "<spk>/<stem>" of an enroll.map entry such as id00800/x-01-001.wav.

    The speaker is the entry's folder, or the enrolment's speaker when the
    entry is a bare file name.
    """
    folder = os.path.basename(os.path.dirname(name)) or _speaker(enrol_id)
    return f"{folder}/{os.path.basename(_stem(name))}"


def _speaker(enrol_id):
    return (
        enrol_id[: -len("-enroll")]
        if enrol_id.endswith("-enroll")
        else enrol_id
    )


def _genre(test_stem):
    fields = test_stem.split("-")
    return fields[1] if len(fields) > 1 else ""


def _files_by_stem(folder):
    """Maps file stem -> path for the audio files directly in ``folder``."""
    require_folder(folder, "CN-Celeb evaluation folder")
    return {
        _stem(os.path.basename(path)): path for path in list_audio_files(folder)
    }


def _data_files(root, speakers):
    """Maps "<spk>/<stem>" -> path under root/data for the given speakers."""
    files = {}
    for spk in speakers:
        folder = os.path.join(root, "data", spk)
        if os.path.isdir(folder):
            files.update(
                {
                    f"{spk}/{_stem(os.path.basename(path))}": path
                    for path in list_audio_files(folder)
                }
            )
    return files


def _resolve(list_path, names, files):
    """Maps each entry of ``names`` (entry -> stem) to a file, or raises."""
    unknown = sorted(
        entry for entry, stem in names.items() if stem not in files
    )
    if unknown:
        _raise_unknown(
            list_path, [u.split("\t")[-1] for u in unknown], "audio file"
        )
    return {entry: files[stem] for entry, stem in names.items()}


def _raise_unknown(list_path, unknown, what):
    shown = ", ".join(unknown[:MAX_LISTED])
    more = (
        f" (and {len(unknown) - MAX_LISTED} more)"
        if len(unknown) > MAX_LISTED
        else ""
    )
    raise ValueError(
        f"{list_path}: {len(unknown)} entries name no known "
        f"{what}: {shown}{more}"
    )


def _count_or_fraction(text):
    value = float(text)
    return int(value) if value >= 1 and value == int(value) else value


def main(argv=None):
    """Command-line entry point; see ``--help``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data_folder",
        required=True,
        help="CN-Celeb_flac folder, or a folder corpus root",
    )
    parser.add_argument("--save_folder", required=True)
    parser.add_argument(
        "--folder_corpus",
        action="store_true",
        help="prepare a <speaker>/<utt> folder corpus",
    )
    parser.add_argument("--cnceleb2_folder", default=None)
    parser.add_argument("--split_mode", choices=SPLIT_MODES, default="speaker")
    parser.add_argument("--valid_ratio", type=_count_or_fraction, default=0.05)
    parser.add_argument("--join_min_duration", type=float, default=0.0)
    parser.add_argument("--min_duration", type=float, default=0.0)
    parser.add_argument(
        "--n_test_speakers", type=_count_or_fraction, default=10
    )
    parser.add_argument(
        "--test_fold",
        type=int,
        default=0,
        help="folder corpus: hold out block K of --n_test_speakers "
        "speakers (rotate K for cross-validation folds)",
    )
    parser.add_argument("--max_trials", type=int, default=None)
    parser.add_argument("--different_key_only", action="store_true")
    parser.add_argument("--key_field", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--num_workers", type=int, default=8)
    parser.add_argument(
        "--calibration_utts_per_speaker",
        type=int,
        default=20,
        help="validation utterances per speaker in calibration_trials.csv",
    )
    args = vars(parser.parse_args(argv))
    common = {
        name: args.pop(name)
        for name in (
            "data_folder",
            "save_folder",
            "split_mode",
            "valid_ratio",
            "seed",
            "num_workers",
        )
    }
    if args["folder_corpus"]:
        prepare_folder_corpus(
            n_test_speakers=args["n_test_speakers"],
            test_fold=args["test_fold"],
            max_trials=args["max_trials"],
            different_key_only=args["different_key_only"],
            key_field=args["key_field"],
            **common,
        )
    else:
        prepare_cnceleb(
            cnceleb2_folder=args["cnceleb2_folder"],
            join_min_duration=args["join_min_duration"],
            min_duration=args["min_duration"],
            calibration_utts_per_speaker=args["calibration_utts_per_speaker"],
            **common,
        )


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    main()
