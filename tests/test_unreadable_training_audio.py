"""A training file that vanishes after preparation costs its item only."""

import os

import torch
from recipe_helpers import TINY_CORPUS, run_recipe, train_args

from speechbrain_ext.data.batches import collate_readable
from speechbrain_ext.data.demo_corpus import generate_demo_corpus
from speechbrain_ext.data.manifest import read_manifest
from speechbrain_ext.data.pipelines import audio_pipelines


def test_unreadable_item_is_dropped_not_silenced(tmp_path):
    """The pipeline gives no signal, so the batch has no item for it."""
    train_audio, _ = audio_pipelines(16000, 1.0, 2.0)
    gone = str(tmp_path / "gone.wav")
    examples = [
        {"id": "ok", "sig": torch.ones(16000), "spk_id_encoded": 0},
        {"id": "gone", "sig": train_audio(gone, "0", "16000", "1.0")},
    ]
    examples[1]["spk_id_encoded"] = 1
    batch = collate_readable(examples)
    assert batch.id == ["ok"]
    assert batch.spk_id_encoded.tolist() == [0]


def test_training_survives_files_deleted_after_preparation(tmp_path):
    corpus = generate_demo_corpus(tmp_path / "CN-Celeb_flac", **TINY_CORPUS)
    prep = str(tmp_path / "prepared")
    run_recipe(
        "train.py",
        *train_args(
            corpus, str(tmp_path / "first"), epochs=1, prep_folder=prep
        ),
    )
    rows = read_manifest(
        os.path.join(prep, "train.csv"), {"data_root": str(corpus)}
    )
    # One file of each of three speakers: several batches lose an item.
    deleted, speakers = [], set()
    for row in rows:
        if row["spk_id"] not in speakers and len(speakers) < 3:
            speakers.add(row["spk_id"])
            os.remove(row["wav"])
            deleted.append(row["wav"])

    out = run_recipe(
        "train.py",
        *train_args(
            corpus, str(tmp_path / "second"), epochs=1, prep_folder=prep
        ),
    )
    assert "dropping unreadable audio from its batch" in out
    assert any(os.path.basename(path) in out for path in deleted)
    assert "unreadable item(s) from a batch" in out
    assert os.path.isfile(
        tmp_path / "second" / "export" / "embedding_model.ckpt"
    )
