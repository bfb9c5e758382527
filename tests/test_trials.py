"""Tests for trial-list parsing and stem-based mapping to embeddings."""

import numpy as np
import pytest

from speechbrain_ext.scoring.trials import map_trials, read_trials


def write(tmp_path, text, name="trials.lst"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_cnceleb_format_gives_stems(tmp_path):
    path = write(
        tmp_path,
        "id00800-enroll test/id00800-singing-01-005.wav 1\n"
        "\n"
        "id00801-enroll test/id00800-singing-01-005.wav 0\n",
    )
    assert read_trials(path) == [
        ("id00800-enroll", "test/id00800-singing-01-005", 1),
        ("id00801-enroll", "test/id00800-singing-01-005", 0),
    ]


def test_label_first_voxceleb_format(tmp_path):
    path = write(
        tmp_path, "1 id1/a/1.wav id1/b/2.wav\n0 id1/a/1.wav id2/c/3.wav\n"
    )
    assert read_trials(path) == [
        ("id1/a/1", "id1/b/2", 1),
        ("id1/a/1", "id2/c/3", 0),
    ]


def test_kaldi_target_nontarget_and_unlabelled(tmp_path):
    kaldi = write(tmp_path, "e1 t1 target\ne1 t2 nontarget\n", "kaldi")
    assert [t[2] for t in read_trials(kaldi)] == [1, 0]
    keyless = write(tmp_path, "e1 t1.flac\ne2 t2.flac\n", "keyless")
    assert read_trials(keyless) == [("e1", "t1", None), ("e2", "t2", None)]


def test_only_audio_extensions_are_stripped(tmp_path):
    path = write(tmp_path, "spk.v2 sess.01/utt.FLAC 1\n")
    assert read_trials(path) == [("spk.v2", "sess.01/utt", 1)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("e t 1\ne t 0\ne t\n", r"trials.lst:3: expected 3 fields.*got 2"),
        ("e t 1\ne t yes\n", r"trials.lst:2: label 'yes' is not 0/1"),
        ("\n\ne t maybe\n", r"trials.lst:3: cannot tell the trial format"),
        ("1 e t\ntarget e t\n", r"trials.lst:2: label 'target' is not 0/1"),
        ("a b c d\n", r"trials.lst:1: cannot tell"),
        ("\n\n", r"trials.lst: the trial list is empty"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_trials(write(tmp_path, text))


def test_map_wav_trials_to_flac_ids(tmp_path):
    path = write(
        tmp_path,
        "id00800-enroll test/id00800-singing-01-005.wav 1\n"
        "id00801-enroll test/id00800-singing-01-005.wav 0\n"
        "id00801-enroll test/id00801-vlog-02-001.wav 1\n",
    )
    enrol_idx, test_idx, labels = map_trials(
        read_trials(path),
        enrol_ids=["id00801-enroll.flac", "id00800-enroll"],
        # Basenames only, and absolute paths: both resolve by stem.
        test_ids=[
            "/data/CN-Celeb_flac/eval/test/id00801-vlog-02-001.flac",
            "id00800-singing-01-005.flac",
        ],
    )
    assert enrol_idx.tolist() == [1, 0, 0]
    assert test_idx.tolist() == [1, 1, 0]
    assert labels.dtype == bool
    assert labels.tolist() == [True, False, True]


def test_full_relative_stem_beats_ambiguous_basename():
    trials = [("e", "test/x.wav", 1), ("e", "other/x", 0)]
    enrol_idx, test_idx, _ = map_trials(
        trials, ["e"], ["eval/other/x.flac", "eval/test/x.flac"]
    )
    assert test_idx.tolist() == [1, 0]


def test_ambiguous_basename_is_reported():
    with pytest.raises(ValueError, match=r"test 'x' \(ambiguous: 2 matches"):
        map_trials([("e", "x", 1)], ["e"], ["a/x.wav", "b/x.wav"])


def test_all_unknown_names_reported_in_one_error():
    trials = [(f"enrol{i}", f"test/t{i}.wav", i % 2) for i in range(30)]
    trials.append(("enrol0", "test/t0.wav", 1))
    with pytest.raises(ValueError) as error:
        map_trials(trials, ["enrol0"], ["t0.flac", "t1.flac"])
    message = str(error.value)
    # 29 enrol + 28 test names are missing; repeats are counted once.
    assert message.startswith("57 trial id(s) match no embedding")
    assert "enrol 'enrol1' (not found)" in message
    assert "enrol 'enrol20' (not found)" in message
    assert "enrol 'enrol21'" not in message  # only the first 20 are listed
    assert message.count("(not found)") == 20


def test_unlabelled_trials_give_no_labels():
    enrol_idx, test_idx, labels = map_trials([("e", "t", None)], ["e"], ["t"])
    assert labels is None
    assert enrol_idx.dtype == np.int64 and test_idx.tolist() == [0]


def test_partly_labelled_trials_rejected():
    with pytest.raises(ValueError, match="1 of 2 trials have no label"):
        map_trials([("e", "t", None), ("e", "t", 1)], ["e"], ["t"])


def test_duplicate_stems_in_available_ids_rejected():
    with pytest.raises(ValueError, match="have the same stem 'test/x'"):
        map_trials([("e", "x", 1)], ["e"], ["test/x.wav", "test/x.flac"])
