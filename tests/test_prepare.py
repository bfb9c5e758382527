"""Tests of CN-Celeb and folder-corpus preparation and its helpers."""

import csv
import os
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

from speechbrain.dataio.dataio import load_data_csv
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain_ext.data.demo_corpus import generate_demo_corpus
from speechbrain_ext.data.folder_corpus import prepare_folder_corpus
from speechbrain_ext.data.manifest import read_list
from speechbrain_ext.data.preparation import make_trials, split_held_out

sys.path.insert(
    0, os.path.join(os.path.dirname(__file__), "..", "recipes", "CNCeleb")
)
from cnceleb_prepare import prepare_cnceleb, prepare_data  # noqa: E402

N_TRAIN, N_EVAL, N_UTTS, N_TEST = 6, 3, 5, 2


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("cnceleb") / "CN-Celeb_flac"
    return generate_demo_corpus(
        root,
        n_train_speakers=N_TRAIN,
        n_eval_speakers=N_EVAL,
        utts_per_speaker=N_UTTS,
        n_test_per_eval_speaker=N_TEST,
        seed=5,
        num_workers=1,
    )


@pytest.fixture
def corpus(pristine, tmp_path):
    """A copy of the demo corpus that a test may damage."""
    return shutil.copytree(pristine, tmp_path / "CN-Celeb_flac")


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


def test_cnceleb_manifests(pristine, tmp_path):
    save = tmp_path / "csv"
    prepare_cnceleb(pristine, str(save), valid_ratio=2, num_workers=2)
    train = load_data_csv(save / "train.csv", {"data_root": pristine})
    valid = load_data_csv(save / "valid.csv", {"data_root": pristine})
    assert len(train) + len(valid) == N_TRAIN * N_UTTS
    train_spk = {row["spk_id"] for row in train.values()}
    valid_spk = {row["spk_id"] for row in valid.values()}
    assert len(valid_spk) == 2 and not train_spk & valid_spk
    assert train_spk | valid_spk == {f"id{i:05d}" for i in range(N_TRAIN)}
    for utt_id, row in train.items():
        info = sf.info(row["wav"])
        assert (
            utt_id
            == f"{row['spk_id']}-{row['genre']}-"
            + (os.path.basename(row["wav"]).split("-", 1)[1][:-5])
        )
        assert (int(row["start"]), int(row["stop"])) == (0, info.frames)
        assert row["duration"] == pytest.approx(info.duration, abs=1e-4)
    with open(save / "train.csv") as f:
        assert f.readline().strip() == (
            "ID,duration,wav,start,stop,spk_id,genre"
        )

    concat = read_csv(save / "enrol_concat.csv")
    assert [r["ID"] for r in concat] == [
        f"id{800 + i:05d}-enroll" for i in range(N_EVAL)
    ]
    assert all(r["enrol_id"] == r["ID"] for r in concat)
    assert all(r["wav"].startswith("$data_root/eval/enroll/") for r in concat)
    average = read_csv(save / "enrol_avg.csv")
    sources = lines(os.path.join(pristine, "eval", "lists", "enroll.map"))
    assert len(average) == sum(len(s) - 1 for s in sources)
    for enrol_id, *names in sources:
        rows = [r for r in average if r["enrol_id"] == enrol_id]
        assert [r["wav"] for r in rows] == [
            f"$data_root/data/{name}" for name in names
        ]

    tests = read_csv(save / "test.csv")
    assert sorted(r["ID"] + ".flac" for r in tests) == sorted(
        os.listdir(os.path.join(pristine, "eval", "test"))
    )
    trials = read_csv(save / "trials.csv")
    assert len(trials) == N_EVAL * N_EVAL * N_TEST
    assert {t["test_id"] for t in trials} == {r["ID"] for r in tests}
    for trial in trials:
        same = trial["enrol_id"].split("-")[0] == trial["test_id"].split("-")[0]
        assert trial["label"] == str(int(same))

    data = DynamicItemDataset.from_csv(
        str(save / "test.csv"), replacements={"data_root": pristine}
    )
    assert len(data) == N_EVAL * N_TEST


def test_list_entries_match_files_by_stem(corpus, tmp_path):
    map_path = os.path.join(corpus, "eval", "lists", "enroll.map")
    original = lines(map_path)
    with open(map_path, "w") as f:
        for enrol_id, *names in original:
            f.write(
                " ".join(
                    [enrol_id] + [n.replace(".flac", ".wav") for n in names]
                )
                + "\n"
            )
    prepare_cnceleb(corpus, str(tmp_path / "csv"))
    average = read_csv(tmp_path / "csv" / "enrol_avg.csv")
    assert [r["wav"] for r in average] == [
        f"$data_root/data/{name}" for _, *names in original for name in names
    ]
    assert len(read_csv(tmp_path / "csv" / "trials.csv")) == (
        N_EVAL * N_EVAL * N_TEST
    )


def test_unknown_trial_names_are_reported_together(corpus, tmp_path):
    trials = os.path.join(corpus, "eval", "lists", "trials.lst")
    with open(trials, "a") as f:
        for i in range(25):
            f.write(f"id00800-enroll test/id00999-nowhere-{i:02d}.wav 0\n")
    with pytest.raises(ValueError) as error:
        prepare_cnceleb(corpus, str(tmp_path / "csv"))
    message = str(error.value)
    assert "trials.lst" in message and "25 entries" in message
    assert "id00999-nowhere-00" in message and "(and 5 more)" in message


def test_joined_utterances_reach_minimum(pristine, tmp_path):
    prepare_cnceleb(pristine, str(tmp_path / "plain"), valid_ratio=0)
    prepare_cnceleb(
        pristine, str(tmp_path / "joined"), valid_ratio=0, join_min_duration=4.0
    )
    plain = read_csv(tmp_path / "plain" / "train.csv")
    joined = read_csv(tmp_path / "joined" / "train.csv")
    group_total = {}
    for row in plain:
        key = (row["spk_id"], row["genre"])
        group_total[key] = group_total.get(key, 0) + float(row["duration"])
    assert any(";" in row["wav"] for row in joined)
    for row in joined:
        files = row["wav"].split(";")
        spk, genre = row["spk_id"], row["genre"]
        assert all(
            f.startswith(f"$data_root/data/{spk}/{genre}-") for f in files
        )
        if group_total[(spk, genre)] >= 4.0:
            assert float(row["duration"]) >= 4.0
        parts = [next(p for p in plain if p["wav"] == f) for f in files]
        assert int(row["stop"]) == sum(int(p["stop"]) for p in parts)
        assert float(row["duration"]) == pytest.approx(
            sum(float(p["duration"]) for p in parts), abs=1e-3
        )
    # Every utterance is used exactly once.
    used = [f for row in joined for f in row["wav"].split(";")]
    assert sorted(used) == sorted(row["wav"] for row in plain)


def test_small_speaker_ratio_still_validates_two_speakers(pristine, tmp_path):
    """A ratio that rounds to one speaker would leave no impostor trials."""
    save = tmp_path / "csv"
    prepare_cnceleb(pristine, str(save), valid_ratio=0.01, num_workers=2)
    valid = load_data_csv(save / "valid.csv", {"data_root": pristine})
    assert len({row["spk_id"] for row in valid.values()}) == 2


def test_utterance_split_keeps_every_speaker_in_training(pristine, tmp_path):
    prepare_cnceleb(
        pristine, str(tmp_path), split_mode="utterance", valid_ratio=0.3
    )
    train = read_csv(tmp_path / "train.csv")
    valid = read_csv(tmp_path / "valid.csv")
    assert len(valid) == round(0.3 * N_TRAIN * N_UTTS)
    assert not {r["ID"] for r in train} & {r["ID"] for r in valid}
    assert {r["spk_id"] for r in valid} <= {r["spk_id"] for r in train}
    assert len({r["spk_id"] for r in train}) == N_TRAIN


def test_missing_folder_and_lists_are_named(corpus, tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_cnceleb(missing, str(tmp_path / "csv"))
    os.remove(os.path.join(corpus, "eval", "lists", "trials.lst"))
    with pytest.raises(FileNotFoundError, match="trials.lst"):
        prepare_cnceleb(corpus, str(tmp_path / "csv"))
    os.remove(os.path.join(corpus, "dev", "dev.lst"))
    with pytest.raises(FileNotFoundError, match="dev.lst"):
        prepare_cnceleb(corpus, str(tmp_path / "csv"))


def test_unusable_audio_is_skipped_and_reported(corpus, tmp_path):
    data = os.path.join(corpus, "data")
    corrupt = os.path.join(
        data, "id00000", sorted(os.listdir(os.path.join(data, "id00000")))[0]
    )
    with open(corrupt, "wb") as f:
        f.write(b"this is not audio" * 10)
    empty = os.path.join(data, "id00001", "speech-09-001.wav")
    sf.write(empty, np.zeros(0), 16000)
    missing = os.path.join(data, "id00002", "speech-09-001.flac")
    os.symlink(os.path.join(corpus, "gone.flac"), missing)
    test_dir = os.path.join(corpus, "eval", "test")
    bad_test = os.path.join(test_dir, sorted(os.listdir(test_dir))[0])
    with open(bad_test, "wb") as f:
        f.write(b"")

    save = tmp_path / "csv"
    prepare_cnceleb(corpus, str(save), valid_ratio=0)
    report = {r["path"]: r["reason"] for r in read_csv(save / "skipped.csv")}
    assert set(report) == {corrupt, empty, missing, bad_test}
    assert "cannot read" in report[corrupt]
    assert "empty" in report[empty]
    assert "not found" in report[missing]
    written = "".join(
        open(save / name).read()
        for name in ("train.csv", "valid.csv", "test.csv")
    )
    for path in report:
        assert os.path.relpath(path, corpus) not in written
    bad_id = os.path.basename(bad_test)[: -len(".flac")]
    trials = read_csv(save / "trials.csv")
    assert trials and bad_id not in {t["test_id"] for t in trials}
    assert len(trials) == N_EVAL * (N_EVAL * N_TEST - 1)


def test_min_duration_drops_short_training_files(pristine, tmp_path):
    prepare_cnceleb(pristine, str(tmp_path), valid_ratio=0, min_duration=2.0)
    train = read_csv(tmp_path / "train.csv")
    short = read_csv(tmp_path / "skipped.csv")
    assert train and short
    assert all(float(r["duration"]) >= 2.0 for r in train)
    assert all("shorter than min_duration" in r["reason"] for r in short)
    assert len(train) + len(short) == N_TRAIN * N_UTTS


def test_skips_when_prepared_and_redoes_on_new_options(pristine, tmp_path):
    prepare_cnceleb(pristine, str(tmp_path))
    marker = "ID,duration,wav,start,stop,spk_id\n"
    with open(tmp_path / "train.csv", "w") as f:
        f.write(marker)
    prepare_cnceleb(pristine, str(tmp_path))
    assert open(tmp_path / "train.csv").read() == marker
    prepare_cnceleb(pristine, str(tmp_path), seed=99)
    assert len(read_csv(tmp_path / "train.csv")) > 0
    prepare_cnceleb(pristine, str(tmp_path / "other"), skip_prep=True)
    assert not os.path.exists(tmp_path / "other")


def test_cnceleb2_rows_use_their_own_root(pristine, tmp_path):
    second = tmp_path / "CN-Celeb2_flac"
    for spk in ("id10001", "id10002"):
        for utt in range(2):
            path = second / "data" / spk / f"vlog-01-00{utt + 1}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.full(8000, 0.1), 16000)
    (second / "spk.lst").write_text("id10001\n")
    prepare_cnceleb(
        pristine,
        str(tmp_path / "csv"),
        cnceleb2_folder=str(second),
        valid_ratio=0,
    )
    train = load_data_csv(
        tmp_path / "csv" / "train.csv",
        {"data_root": pristine, "data_root2": second},
    )
    extra = [row for row in train.values() if row["spk_id"] == "id10001"]
    assert len(extra) == 2 and len(train) == N_TRAIN * N_UTTS + 2
    assert all(os.path.isfile(row["wav"]) for row in extra)
    assert not any(row["spk_id"] == "id10002" for row in train.values())


def make_folder_corpus(root, layout):
    """<root>/<corpus>/<spk>/<spk>-w<word>-r<repeat>.<ext> for each entry."""
    rng = np.random.default_rng(0)
    for corpus, spk, ext in layout:
        for word in range(3):
            for repeat in range(2):
                path = root / corpus / spk / f"{spk}-w{word}-r{repeat}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                wav = 0.1 * rng.standard_normal(8000)
                if ext == "wav":
                    sf.write(path, wav, 16000)
                else:
                    subtype = "OPUS" if ext == "opus" else "VORBIS"
                    sf.write(path, wav, 16000, format="OGG", subtype=subtype)


def test_folder_corpus_with_different_key_only(tmp_path):
    make_folder_corpus(
        tmp_path / "speakers",
        [
            ("dsp", "dsp1", "opus"),
            ("dsp", "dsp2", "opus"),
            ("asc", "asc1", "ogg"),
            ("asc", "asc2", "ogg"),
            ("asc", "x3", "wav"),
        ],
    )
    save = tmp_path / "csv"
    prepare_folder_corpus(
        str(tmp_path / "speakers"),
        str(save),
        n_test_speakers=2,
        valid_ratio=2,
        different_key_only=True,
        seed=3,
    )
    train, valid = read_csv(save / "train.csv"), read_csv(save / "valid.csv")
    evaluation = read_csv(save / "eval.csv")
    spk = {
        name: {r["spk_id"] for r in rows}
        for name, rows in (
            ("train", train),
            ("valid", valid),
            ("eval", evaluation),
        )
    }
    assert len(spk["train"]) == 1 and len(spk["valid"]) == 2
    assert len(spk["eval"]) == 2
    assert spk["train"] | spk["valid"] | spk["eval"] == {
        "dsp1",
        "dsp2",
        "asc1",
        "asc2",
        "x3",
    }
    assert not (spk["train"] & spk["eval"] or spk["valid"] & spk["eval"])
    assert all(r["enrol_id"] == r["ID"] for r in evaluation)
    x3 = [r["ID"] for r in train + valid + evaluation if r["spk_id"] == "x3"]
    assert "x3-w0-r0" in x3  # the stem already names the speaker

    trials = read_csv(save / "trials.csv")
    ids = {r["ID"] for r in evaluation}
    targets = [t for t in trials if t["label"] == "1"]
    # Per speaker: 15 pairs of 6 utterances, minus 3 same-word pairs.
    assert len(targets) == 2 * 12
    assert len(trials) == 2 * len(targets)
    assert len({(t["enrol_id"], t["test_id"]) for t in trials}) == len(trials)
    for trial in trials:
        assert trial["enrol_id"] in ids and trial["test_id"] in ids
        assert trial["enrol_id"].split("-")[1] != trial["test_id"].split("-")[1]


def test_folder_corpus_errors(tmp_path):
    make_folder_corpus(
        tmp_path / "a", [("c1", "spk", "wav"), ("c2", "spk", "wav")]
    )
    with pytest.raises(ValueError, match="two folders are named after"):
        prepare_folder_corpus(str(tmp_path / "a"), str(tmp_path / "csv"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_folder_corpus(str(tmp_path / "nowhere"), str(tmp_path))


def test_make_trials_balances_and_caps():
    utts = [f"s{s}-u{u}" for s in range(4) for u in range(5)]
    spks = [u.split("-")[0] for u in utts]
    trials = make_trials(utts, spks, seed=1)
    labels = [label for _, _, label in trials]
    assert labels.count(1) == 4 * 10 and labels.count(0) == 40
    for enrol, test, label in trials:
        assert enrol < test and label == int(enrol[:2] == test[:2])
    capped = make_trials(utts, spks, max_trials=10, seed=1)
    assert [label for *_, label in capped].count(1) == 5
    assert len(capped) == 10
    assert make_trials(utts, spks, seed=1) == trials
    with pytest.raises(ValueError, match="keys"):
        make_trials(utts, spks, different_key_only=True)


def test_split_held_out_counts_and_fractions():
    items = list(range(10))
    kept, held = split_held_out(items, 3, seed=0)
    assert len(held) == 3 and sorted(kept + held) == items
    assert split_held_out(items, 3, seed=0) == (kept, held)
    assert len(split_held_out(items, 0.01, seed=0)[1]) == 1
    assert split_held_out(items, 0, seed=0) == (items, [])
    with pytest.raises(ValueError, match="cannot hold out 11 of 10"):
        split_held_out(items, 11, seed=0)


def test_split_held_out_blocks_are_disjoint_folds():
    items = list(range(10))
    folds = [split_held_out(items, 2, seed=3, block=b)[1] for b in range(5)]
    assert sorted(sum(folds, [])) == items
    assert folds[0] == split_held_out(items, 2, seed=3)[1]
    for block, held in enumerate(folds):
        kept = split_held_out(items, 2, seed=3, block=block)[0]
        assert not set(kept) & set(held) and len(kept) == 8
    with pytest.raises(ValueError, match="blocks are 0 to 4"):
        split_held_out(items, 2, seed=3, block=5)


def test_folder_corpus_test_folds_rotate_the_test_speakers(tmp_path):
    for spk in ("s1", "s2", "s3", "s4"):
        os.makedirs(tmp_path / "corpus" / spk)
        for word in ("w1", "w2"):
            sf.write(
                tmp_path / "corpus" / spk / f"{spk}-{word}.wav",
                np.full(1600, 0.1, dtype=np.float32),
                16000,
            )
    tested = []
    for fold in (0, 1):
        out = tmp_path / f"fold{fold}"
        prepare_folder_corpus(
            str(tmp_path / "corpus"),
            str(out),
            n_test_speakers=2,
            test_fold=fold,
            valid_ratio=0,
        )
        evaluation = {row["spk_id"] for row in read_csv(out / "eval.csv")}
        training = {row["spk_id"] for row in read_csv(out / "train.csv")}
        assert len(evaluation) == 2 and not evaluation & training
        tested.append(evaluation)
    assert tested[0] | tested[1] == {"s1", "s2", "s3", "s4"}


def test_read_list_names_file_and_line(tmp_path):
    path = tmp_path / "trials.lst"
    path.write_text("a test/b.wav 1\n\nc test/d.wav\n")
    with pytest.raises(ValueError, match=r"trials.lst:3: expected at least 3"):
        read_list(str(path), 3)
    assert read_list(str(path), 2)[1] == (3, ["c", "test/d.wav"])


def test_prepare_data_dispatches_and_ignores_joining_for_folders(
    tmp_path, caplog
):
    make_folder_corpus(
        tmp_path / "corpus", [("c", "s1", "wav"), ("c", "s2", "wav")]
    )
    # CN-Celeb options left at their defaults do not stop a folder corpus.
    prepare_data(
        "folder",
        str(tmp_path / "corpus"),
        str(tmp_path / "csv"),
        n_test_speakers=2,
        valid_ratio=0,
        cnceleb2_folder=None,
        join_min_duration=0.0,
    )
    assert len(read_csv(tmp_path / "csv" / "eval.csv")) == 12
    # The YAMLs' CN-Celeb joining default: a folder corpus keeps its files
    # whole and says so, rather than failing every folder-corpus run.
    prepare_data(
        "folder",
        str(tmp_path / "corpus"),
        str(tmp_path / "joined"),
        n_test_speakers=2,
        valid_ratio=0,
        join_min_duration=5.0,
        min_duration=1.0,
    )
    assert any("join_min_duration=5.0" in m for m in caplog.messages)
    assert len(read_csv(tmp_path / "joined" / "eval.csv")) == 12
    with pytest.raises(ValueError, match="data_format"):
        prepare_data("voxceleb", str(tmp_path), str(tmp_path))


def test_one_validation_speaker_is_refused_at_preparation(tmp_path):
    """A one-speaker validation set has no EER: refused before training."""
    make_folder_corpus(
        tmp_path / "speakers",
        [("dsp", f"dsp{i}", "wav") for i in range(1, 5)],
    )
    with pytest.raises(ValueError, match="holds out one speaker"):
        prepare_folder_corpus(
            str(tmp_path / "speakers"),
            str(tmp_path / "csv"),
            n_test_speakers=1,
            valid_ratio=1,
        )
    assert not (tmp_path / "csv" / "train.csv").exists()
