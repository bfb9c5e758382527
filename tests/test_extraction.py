"""Tests of batched, resumable embedding extraction and its benchmark."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from speechbrain_ext.data.audio import AudioError, load_audio, save_audio
from speechbrain_ext.inference.extraction import EmbeddingExtractor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_ECAPA = {"n_mels": 24, "channels": [16, 16, 16, 16, 48], "lin_neurons": 8}
# Deliberately not in length order, so sorting has to be undone.
DURATIONS = {"u0": 0.5, "u1": 1.0, "u2": 0.7, "u3": 0.2, "u4": 0.9}


def write_utterances(folder, durations, seed=0):
    """Writes one 16 kHz noise file per id; returns (id, path) items."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for uid, seconds in durations.items():
        path = os.path.join(str(folder), f"{uid}.wav")
        wav = 0.1 * torch.randn(int(16000 * seconds), generator=generator)
        save_audio(path, wav, 16000)
        items.append((uid, path))
    return items


class RecordingEncoder:
    """Embeds each row as (valid length, first sample); records batches.

    The embedding of an utterance does not depend on its batch mates, so
    results can be checked exactly whatever the batching.
    """

    device = "cpu"

    def __init__(self):
        self.batches = []
        self.wavs = []

    def encode_batch(self, wavs, wav_lens):
        lengths = torch.round(wav_lens * wavs.shape[1])
        self.batches.append([int(n) for n in lengths])
        self.wavs.append(wavs.clone())
        return torch.stack([lengths, wavs[:, 0]], dim=1).unsqueeze(1)


class FailingEncoder(RecordingEncoder):
    """Raises on its batch number ``fail_at`` (counted from 0)."""

    def __init__(self, fail_at):
        super().__init__()
        self.fail_at = fail_at

    def encode_batch(self, wavs, wav_lens):
        if len(self.batches) == self.fail_at:
            raise RuntimeError("encoder called")
        return super().encode_batch(wavs, wav_lens)


def expected_rows(items):
    """What RecordingEncoder returns for each item, computed from the file."""
    rows = []
    for _, path in items:
        wav = load_audio(path)
        rows.append([len(wav), float(wav[0])])
    return np.array(rows, dtype=np.float32)


@pytest.fixture
def items(tmp_path):
    return write_utterances(tmp_path / "audio", DURATIONS)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A small random ECAPA-TDNN exported for EncoderClassifier."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain_ext.inference.export import (
        default_template,
        export_encoder,
    )

    torch.manual_seed(0)
    model = ECAPA_TDNN(
        TINY_ECAPA["n_mels"],
        channels=TINY_ECAPA["channels"],
        lin_neurons=TINY_ECAPA["lin_neurons"],
    )
    folder = str(tmp_path_factory.mktemp("tiny_ecapa"))
    return export_encoder(folder, default_template(), model, TINY_ECAPA)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_export, tmp_path_factory):
    """The exported model, loaded as users load it."""
    from speechbrain.inference.speaker import EncoderClassifier

    return EncoderClassifier.from_hparams(
        source=tiny_export, savedir=str(tmp_path_factory.mktemp("loaded"))
    )


def per_file(encoder, items):
    """The reference: each file embedded alone."""
    with torch.no_grad():
        return torch.stack(
            [
                encoder.encode_batch(load_audio(path)[None]).reshape(-1)
                for _, path in items
            ]
        ).numpy()


def test_ids_and_rows_keep_input_order(items):
    ids, embeddings = EmbeddingExtractor(RecordingEncoder(), batch_size=2)(
        items
    )
    assert ids == ["u0", "u1", "u2", "u3", "u4"]
    assert embeddings.dtype == np.float32
    assert embeddings[:, 0].tolist() == [8000, 16000, 11200, 3200, 14400]
    np.testing.assert_array_equal(embeddings, expected_rows(items))


@pytest.mark.parametrize(
    "batch_size, max_batch_seconds, expected",
    [
        # Longest first, batch_size at a time.
        (2, None, [[1.0, 0.9], [0.7, 0.5], [0.2]]),
        # 3 x 1.0 s padded = 3.0 s > 2.2 s; 3 x 0.7 s = 2.1 s fits.
        (4, 2.2, [[1.0, 0.9], [0.7, 0.5, 0.2]]),
        # No pair fits in 0.8 s; the 1.0 s file, alone, still goes through.
        (4, 0.8, [[1.0], [0.9], [0.7], [0.5], [0.2]]),
    ],
)
def test_batches_are_length_sorted_within_limits(
    items, batch_size, max_batch_seconds, expected
):
    encoder = RecordingEncoder()
    extractor = EmbeddingExtractor(
        encoder, batch_size=batch_size, max_batch_seconds=max_batch_seconds
    )
    extractor(items)
    seconds = [[n / 16000 for n in batch] for batch in encoder.batches]
    assert seconds == expected


def test_shorter_waveforms_are_padded_by_reflection(tmp_path):
    short, long = str(tmp_path / "short.wav"), str(tmp_path / "long.wav")
    save_audio(short, torch.tensor([0.1, 0.2, 0.3]), 16000)
    save_audio(long, torch.linspace(-0.5, 0.5, 8), 16000)
    encoder = RecordingEncoder()
    extractor = EmbeddingExtractor(encoder, min_seconds=0)
    extractor([("short", short), ("long", long)])
    (wavs,) = encoder.wavs
    assert encoder.batches == [[8, 3]]
    torch.testing.assert_close(wavs[0], load_audio(long))
    mirrored = load_audio(short)[[0, 1, 2, 1, 0, 1, 2, 1]]
    torch.testing.assert_close(wavs[1], mirrored)


def test_max_seconds_crops_long_files(items):
    encoder = RecordingEncoder()
    _, embeddings = EmbeddingExtractor(encoder, max_seconds=0.6)(items)
    assert embeddings[:, 0].tolist() == [8000, 9600, 9600, 3200, 9600]


def test_matches_per_file_encode_batch(items, tiny_encoder):
    reference = per_file(tiny_encoder, items)
    _, unbatched = EmbeddingExtractor(tiny_encoder, batch_size=1)(items)
    np.testing.assert_allclose(unbatched, reference, atol=1e-5)


def test_batching_without_padding_matches_per_file(tmp_path, tiny_encoder):
    same_length = write_utterances(
        tmp_path, {f"s{i}": 0.6 for i in range(4)}, seed=1
    )
    reference = per_file(tiny_encoder, same_length)
    _, batched = EmbeddingExtractor(tiny_encoder, batch_size=4)(same_length)
    np.testing.assert_allclose(batched, reference, atol=1e-5)


def test_padding_changes_only_shorter_utterances_slightly(items, tiny_encoder):
    reference = per_file(tiny_encoder, items)
    # One batch: u1 (1.0 s) sets the length, the others are padded by up to
    # 80%. Zero padding of these noise files gives cosines of 0.4-0.6.
    _, batched = EmbeddingExtractor(tiny_encoder, batch_size=5)(items)
    np.testing.assert_allclose(batched[1], reference[1], atol=1e-5)
    cosine = (batched * reference).sum(1) / (
        np.linalg.norm(batched, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() > 0.99


def test_duplicate_ids_are_named(items):
    with pytest.raises(ValueError, match=r"not unique: \['u2'\]"):
        EmbeddingExtractor(RecordingEncoder())(items + [("u2", items[0][1])])


def test_missing_file_is_named(items, tmp_path):
    missing = str(tmp_path / "gone.wav")
    with pytest.raises(AudioError, match="gone.wav"):
        EmbeddingExtractor(RecordingEncoder())(items + [("gone", missing)])


def test_corrupt_file_is_named(items, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(AudioError, match="corrupt.wav"):
        EmbeddingExtractor(RecordingEncoder())(items + [("bad", str(corrupt))])


def test_complete_cache_is_returned_without_the_model(
    items, tmp_path, tiny_encoder
):
    cache = str(tmp_path / "cache")
    ids, first = EmbeddingExtractor(tiny_encoder, batch_size=2)(items, cache)
    again_ids, again = EmbeddingExtractor(FailingEncoder(fail_at=0))(
        items, cache
    )
    assert again_ids == ids
    np.testing.assert_array_equal(again, first)


def test_partial_cache_embeds_only_the_rest(items, tmp_path):
    cache = str(tmp_path / "cache")
    EmbeddingExtractor(RecordingEncoder())(items[:3], cache)
    encoder = RecordingEncoder()
    ids, embeddings = EmbeddingExtractor(encoder)(items, cache)
    assert encoder.batches == [[14400, 3200]]  # u4 and u3 only
    assert ids == [uid for uid, _ in items]
    np.testing.assert_array_equal(embeddings, expected_rows(items))


def test_interrupted_run_resumes_after_last_saved_batch(items, tmp_path):
    cache = str(tmp_path / "cache")
    # A stray half-written part must not be read as a finished batch.
    os.makedirs(cache)
    np.savez(
        os.path.join(cache, "part-000000099.npz.tmp.npz"),
        ids=np.array(["u0"]),
        emb=np.zeros((1, 2)),
    )
    with pytest.raises(RuntimeError, match="encoder called"):
        EmbeddingExtractor(FailingEncoder(fail_at=1), batch_size=2)(
            items, cache
        )
    encoder = RecordingEncoder()
    _, embeddings = EmbeddingExtractor(encoder, batch_size=2)(items, cache)
    # The first run saved [u1, u4]; the resumed one embeds the other three.
    assert encoder.batches == [[11200, 8000], [3200]]
    np.testing.assert_array_equal(embeddings, expected_rows(items))


def test_sample_files_reads_manifest_paths(tmp_path):
    from bench.extract import sample_files

    write_utterances(tmp_path, {"a": 0.1, "b": 0.1})
    (tmp_path / "manifest.csv").write_text(
        "ID,duration,wav\na,0.1,$data_root/a.wav\nb,0.1,b.wav\n"
    )
    assert sample_files(str(tmp_path), 5) == [
        ("a", os.path.join(str(tmp_path), "a.wav")),
        ("b", os.path.join(str(tmp_path), "b.wav")),
    ]


def test_benchmark_command_writes_report(tmp_path, tiny_export):
    data = tmp_path / "data"
    write_utterances(data, {f"f{i}": 0.25 + 0.05 * i for i in range(6)})
    out = tmp_path / "extract.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.extract",
            "--data_folder",
            str(data),
            "--n_files",
            "4",
            "--model",
            tiny_export,
            "--batch_sizes",
            "2",
            "--workers",
            "0",
            "--out",
            str(out),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    report = json.loads(out.read_text())
    per_file_row, batched_row = report["result"]["rows"]
    assert report["data"]["n_files"] == 4
    assert batched_row["speed_up"] == pytest.approx(
        per_file_row["seconds"] / batched_row["seconds"]
    )
    assert batched_row["files_per_second"] == pytest.approx(
        4 / batched_row["seconds"]
    )
    assert report["result"]["control"]["max_abs_diff"] < 1e-5
    assert "| EmbeddingExtractor | 2 | 0 |" in report["table"]


def reverse(uid, wav):
    """A transform whose effect on the first sample shows it ran."""
    return wav.flip(0)


def test_transform_gets_each_id_before_cropping(items):
    given = []

    def recording_reverse(uid, wav):
        given.append(uid)
        return reverse(uid, wav)

    extractor = EmbeddingExtractor(
        RecordingEncoder(), max_seconds=0.6, transform=recording_reverse
    )
    _, embeddings = extractor(items)
    assert sorted(given) == [uid for uid, _ in items]
    # Cropped after reversing: each row starts with the file's last sample.
    last = [float(load_audio(path)[-1]) for _, path in items]
    np.testing.assert_array_equal(embeddings[:, 1], np.float32(last))
    assert embeddings[:, 0].tolist() == [8000, 9600, 9600, 3200, 9600]


def test_cache_of_another_transform_is_refused(items, tmp_path):
    cache = str(tmp_path / "cache")
    EmbeddingExtractor(RecordingEncoder())(items[:2], cache)
    with pytest.raises(
        ValueError,
        match=r"transformed by none, not "
        r"test_extraction\.reverse: use one cache folder",
    ):
        EmbeddingExtractor(RecordingEncoder(), transform=reverse)(items, cache)
    other = str(tmp_path / "reversed")
    _, first = EmbeddingExtractor(RecordingEncoder(), transform=reverse)(
        items, other
    )
    # The same transform resumes from its own folder without the model.
    _, again = EmbeddingExtractor(FailingEncoder(0), transform=reverse)(
        items, other
    )
    np.testing.assert_array_equal(again, first)
    with pytest.raises(ValueError, match="transformed by test_extraction"):
        EmbeddingExtractor(RecordingEncoder())(items, other)


def test_cache_written_before_stamps_counts_as_untransformed(items, tmp_path):
    cache = str(tmp_path / "cache")
    EmbeddingExtractor(RecordingEncoder())(items, cache)
    os.remove(os.path.join(cache, "transform.txt"))
    _, embeddings = EmbeddingExtractor(FailingEncoder(0))(items, cache)
    np.testing.assert_array_equal(embeddings, expected_rows(items))
    with pytest.raises(ValueError, match="transformed by none"):
        EmbeddingExtractor(RecordingEncoder(), transform=reverse)(items, cache)


def test_audio_under_min_seconds_is_mirrored_up_to_it(tmp_path):
    path = str(tmp_path / "blip.wav")
    save_audio(path, torch.tensor([0.1, 0.2, 0.3]), 16000)
    encoder = RecordingEncoder()
    EmbeddingExtractor(encoder, min_seconds=0.001)([("blip", path)])
    (wavs,) = encoder.wavs
    assert encoder.batches == [[16]]
    torch.testing.assert_close(wavs[0, :5], load_audio(path)[[0, 1, 2, 1, 0]])
