"""Tests of the synthetic CN-Celeb-shaped demo corpus."""

import dataclasses
import os
import re

import numpy as np
import pytest
import soundfile as sf

from speechbrain_ext.data.demo_corpus import (
    GENRES,
    generate_demo_corpus,
    sample_session,
    sample_voice,
    synthesize_utterance,
)

SMALL = dict(
    n_train_speakers=3,
    n_eval_speakers=2,
    utts_per_speaker=4,
    n_test_per_eval_speaker=2,
    num_workers=1,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "CN-Celeb_flac"
    return generate_demo_corpus(root, seed=7, **SMALL)


def read_lines(root, *parts):
    with open(os.path.join(root, *parts), encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


def test_layout_follows_cnceleb(corpus):
    train = [f"id{i:05d}" for i in range(3)]
    evaluation = ["id00800", "id00801"]
    assert [line[0] for line in read_lines(corpus, "dev", "dev.lst")] == train
    assert sorted(os.listdir(os.path.join(corpus, "data"))) == (
        train + evaluation
    )
    name = re.compile(rf"^({'|'.join(GENRES)})-\d\d-\d\d\d\.flac$")
    for spk in train + evaluation:
        files = os.listdir(os.path.join(corpus, "data", spk))
        assert len(files) == 4
        assert all(name.match(f) for f in files), files
        for f in files:
            info = sf.info(os.path.join(corpus, "data", spk, f))
            assert (info.samplerate, info.channels) == (16000, 1)
            assert (info.format, info.subtype) == ("FLAC", "PCM_16")
            assert 1.0 <= info.duration <= 5.0
    assert sorted(os.listdir(os.path.join(corpus, "eval", "enroll"))) == [
        "id00800-enroll.flac",
        "id00801-enroll.flac",
    ]
    assert len(os.listdir(os.path.join(corpus, "eval", "test"))) == 4


def test_eval_lists_are_consistent(corpus):
    enroll = read_lines(corpus, "eval", "lists", "enroll.lst")
    assert enroll == [
        ["id00800-enroll", "enroll/id00800-enroll.flac"],
        ["id00801-enroll", "enroll/id00801-enroll.flac"],
    ]
    for enrol_id, *sources in read_lines(corpus, "eval", "lists", "enroll.map"):
        spk = enrol_id.split("-")[0]
        assert sources and all(s.startswith(spk + "/") for s in sources)
        # The enrolment file is the concatenation of the listed sources.
        frames = [
            sf.info(os.path.join(corpus, "data", s)).frames for s in sources
        ]
        enrol_path = os.path.join(corpus, "eval", "enroll", f"{enrol_id}.flac")
        assert sf.info(enrol_path).frames == sum(frames)
        first, _ = sf.read(os.path.join(corpus, "data", sources[0]))
        enrolment, _ = sf.read(enrol_path)
        np.testing.assert_array_equal(enrolment[: len(first)], first)

    trials = read_lines(corpus, "eval", "lists", "trials.lst")
    tests = os.listdir(os.path.join(corpus, "eval", "test"))
    assert len(trials) == 2 * len(tests)
    for enrol_id, test, label in trials:
        assert test.startswith("test/") and test.endswith(".wav")
        stem = test[len("test/") : -len(".wav")]
        assert stem + ".flac" in tests
        same = stem.split("-")[0] == enrol_id.split("-")[0]
        assert label == str(int(same))
        # The test file is a copy of the speaker's utterance under data/.
        spk, utt = stem.split("-", 1)
        assert os.path.isfile(os.path.join(corpus, "data", spk, utt + ".flac"))


def test_same_seed_same_corpus_other_seed_differs(corpus, tmp_path):
    again = generate_demo_corpus(tmp_path / "again", seed=7, **SMALL)
    other = generate_demo_corpus(tmp_path / "other", seed=8, **SMALL)
    for name in (
        "dev/dev.lst",
        "eval/lists/trials.lst",
        "eval/lists/enroll.map",
    ):
        with open(os.path.join(corpus, name)) as a, open(
            os.path.join(again, name)
        ) as b:
            assert a.read() == b.read()
    files = sorted(os.listdir(os.path.join(corpus, "data", "id00000")))
    assert files == sorted(os.listdir(os.path.join(again, "data", "id00000")))
    first = os.path.join("data", "id00000", files[0])
    np.testing.assert_array_equal(
        sf.read(os.path.join(corpus, first))[0],
        sf.read(os.path.join(again, first))[0],
    )
    enrol = os.path.join("eval", "enroll", "id00800-enroll.flac")
    a, b = (
        sf.read(os.path.join(corpus, enrol))[0],
        sf.read(os.path.join(other, enrol))[0],
    )
    assert len(a) != len(b) or not np.array_equal(a, b)


def test_parallel_generation_gives_the_same_files(tmp_path):
    small = dict(
        SMALL,
        n_train_speakers=2,
        n_eval_speakers=1,
        utts_per_speaker=3,
        n_test_per_eval_speaker=1,
    )
    serial = generate_demo_corpus(tmp_path / "a", **small)
    parallel = generate_demo_corpus(
        tmp_path / "b", **dict(small, num_workers=2)
    )
    for parent, _, files in os.walk(serial):
        for name in files:
            path = os.path.join(parent, name)
            twin = os.path.join(parallel, os.path.relpath(path, serial))
            with open(path, "rb") as a, open(twin, "rb") as b:
                assert a.read() == b.read(), path


def test_rejects_too_few_utterances(tmp_path):
    with pytest.raises(ValueError, match="n_test_per_eval_speaker"):
        generate_demo_corpus(
            tmp_path, utts_per_speaker=3, n_test_per_eval_speaker=3
        )


def median_f0(wav, sample_rate=16000):
    """Autocorrelation F0 (60-400 Hz) of the louder half of 40 ms frames."""
    frame, hop = 640, 320
    frames = np.lib.stride_tricks.sliding_window_view(wav, frame)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = (frames**2).sum(axis=1)
    loud = frames[energy >= np.median(energy)]
    spectrum = np.fft.rfft(loud, 2 * frame)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2)[:, :frame]
    low, high = sample_rate // 400, sample_rate // 60
    lags = low + np.argmax(autocorr[:, low:high], axis=1)
    return float(np.median(sample_rate / lags))


def clean_session(genre="interview"):
    session = sample_session(np.random.default_rng(0), genre)
    flat = np.array([[1.0, 0, 0, 1, 0, 0]])
    return dataclasses.replace(
        session, f0_shift=0.0, reverb=None, snr_db=60.0, channel_sos=flat
    )


def test_f0_follows_the_voice():
    voice = dataclasses.replace(
        sample_voice(np.random.default_rng(3)),
        f0=100.0,
        f0_range=0.5,
        jitter=0.002,
        breathiness=0.02,
    )
    session = clean_session()
    low = synthesize_utterance(voice, session, 3.0, np.random.default_rng(11))
    high = synthesize_utterance(
        dataclasses.replace(voice, f0=200.0),
        session,
        3.0,
        np.random.default_rng(11),
    )
    f0_low, f0_high = median_f0(low), median_f0(high)
    # Intonation and declination move the median a little below the mean.
    assert 80 <= f0_low <= 110
    assert 1.8 <= f0_high / f0_low <= 2.2


def log_spectrum(wav):
    spectrum = (
        np.abs(
            np.fft.rfft(
                np.lib.stride_tricks.sliding_window_view(wav, 512)[::256]
                * np.hanning(512)
            )
        )
        ** 2
    )
    bands = spectrum[:, 1:].reshape(len(spectrum), 32, 8).sum(axis=2)
    log = np.log(bands.mean(axis=0) + 1e-10)
    return log - log.mean()


def test_speakers_differ_more_than_their_sessions(tmp_path):
    root = generate_demo_corpus(
        tmp_path,
        n_train_speakers=8,
        n_eval_speakers=1,
        utts_per_speaker=4,
        n_test_per_eval_speaker=1,
        seed=3,
        num_workers=1,
    )
    spectra, speakers = [], []
    for spk in sorted(os.listdir(os.path.join(root, "data"))):
        for name in sorted(os.listdir(os.path.join(root, "data", spk))):
            wav, _ = sf.read(os.path.join(root, "data", spk, name))
            spectra.append(log_spectrum(wav))
            speakers.append(spk)
    spectra, speakers = np.array(spectra), np.array(speakers)
    distance = np.linalg.norm(spectra[:, None] - spectra[None], axis=2)
    same = speakers[:, None] == speakers[None]
    off_diagonal = ~np.eye(len(speakers), dtype=bool)
    within = distance[same & off_diagonal].mean()
    across = distance[~same].mean()
    assert within < 0.93 * across
    # ...but sessions do vary: utterances of one speaker are not copies.
    assert within > 0.2 * across
