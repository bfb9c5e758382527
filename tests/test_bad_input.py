"""Bad input on every path: a clear error naming it, or documented handling.

Each table lists bad inputs with what must happen to them, and the tests
feed one table to every path that reads such input: preparation,
extraction (inference), verification, export and augmentation banks. An
error must name the offending file (and line, for text files); a handled
input must come out as documented (resampled to 16 kHz, down-mixed,
skipped and listed in ``skipped.csv``). A failure must not destroy what
earlier runs wrote: a prepared folder, an export, an embedding cache.
"""

import csv
import dataclasses
import errno
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_ext import output_checks
from speechbrain_ext.augment.bank import load_waveform_bank
from speechbrain_ext.data import (
    folder_corpus as folder_preparation,
    preparation,
)
from speechbrain_ext.data.audio import AudioError, audio_info, load_audio
from speechbrain_ext.data.demo_corpus import generate_demo_corpus
from speechbrain_ext.data.manifest import check_manifest, read_manifest
from speechbrain_ext.evaluation.verification import (
    read_trial_file,
    verify_trials,
)
from speechbrain_ext.inference.export import (
    default_template,
    export_encoder,
    export_from_hparams,
)
from speechbrain_ext.inference.extraction import EmbeddingExtractor
from speechbrain_ext.output_checks import check_writable
from speechbrain_ext.scoring.trials import read_trials

sys.path.insert(
    0, os.path.join(os.path.dirname(__file__), "..", "recipes", "CNCeleb")
)
import cnceleb_prepare  # noqa: E402

RATE = 16000
TINY_ECAPA = {"n_mels": 24, "channels": [16, 16, 16, 16, 48], "lin_neurons": 8}


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------
# Bad audio files
# --------------------------------------------------------------------------


def tone(freq, rate, seconds, amplitude=0.5):
    """A sine of ``freq`` Hz sampled at ``rate``."""
    return amplitude * np.sin(
        2 * np.pi * freq * np.arange(int(rate * seconds)) / rate
    )


def peak_hz(wav, rate=RATE):
    """Frequency of the strongest bin of a waveform's spectrum."""
    return np.argmax(np.abs(np.fft.rfft(np.asarray(wav)))) * rate / len(wav)


def write_dangling_link(path):
    os.symlink(path + ".gone", path)


def write_garbage(path):
    with open(path, "wb") as f:
        f.write(b"this is not audio" * 20)


def write_cut_header(path):
    sf.write(path, tone(440, RATE, 0.1), RATE)
    with open(path, "rb") as f:
        head = f.read(20)  # the RIFF header, cut inside the 'fmt ' chunk
    with open(path, "wb") as f:
        f.write(head)


def write_cut_flac(path):
    """A FLAC whose header promises 2 s but whose frames stop early."""
    noise = 0.1 * np.random.default_rng(0).standard_normal(2 * RATE)
    sf.write(path, noise, RATE)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])


def write_nan(path):
    sf.write(
        path,
        np.array([0.1, np.nan, 0.2] * 100, dtype=np.float32),
        RATE,
        subtype="FLOAT",
    )


def write_stereo(path):
    left, right = np.full(800, 0.5), np.full(800, -0.1)
    sf.write(path, np.stack([left, right], axis=1), RATE, subtype="FLOAT")


def write_clipped(path):
    sf.write(
        path,
        np.clip(tone(200, RATE, 0.1, amplitude=2.0), -1, 1),
        RATE,
        subtype="PCM_16",
    )


@dataclasses.dataclass
class BadAudio:
    """A bad audio file and what every reader must make of it.

    ``error`` is a regex the AudioError must match besides the path (None:
    the file is usable); ``header_ok`` says whether the header alone looks
    fine, so that preparation, which reads headers only, keeps the file;
    ``seconds`` is its duration and ``samples`` its length at 16 kHz when
    usable; ``check`` tests the 16 kHz waveform against the file written.
    """

    name: str
    write: object
    ext: str = "wav"
    error: str = None
    header_ok: bool = False
    seconds: float = None
    samples: int = None
    check: object = None


def zero_length(path):
    sf.write(path, np.zeros(0), RATE)


BAD_AUDIO = [
    BadAudio("missing", write_dangling_link, error="not found"),
    BadAudio("zero_length", zero_length, error="empty|no samples"),
    BadAudio("corrupt", write_garbage, error="cannot read"),
    BadAudio("cut_header", write_cut_header, error="cannot read"),
    BadAudio(
        "cut_flac",
        write_cut_flac,
        ext="flac",
        error="cannot read",
        header_ok=True,
        seconds=2.0,
    ),
    BadAudio(
        "nan_samples",
        write_nan,
        error="NaN",
        header_ok=True,
        seconds=300 / RATE,
    ),
    # Usable, after handling.
    BadAudio(
        "stereo",
        write_stereo,
        header_ok=True,
        seconds=0.05,
        samples=800,
        check=lambda wav: np.allclose(wav, 0.2),
    ),
    BadAudio(
        "rate_8k",
        lambda p: sf.write(p, tone(500, 8000, 0.25), 8000),
        header_ok=True,
        seconds=0.25,
        samples=4000,
        check=lambda wav: peak_hz(wav) == 500,
    ),
    BadAudio(
        "rate_44k",
        lambda p: sf.write(p, tone(1000, 44100, 0.5), 44100),
        header_ok=True,
        seconds=0.5,
        samples=8000,
        check=lambda wav: peak_hz(wav) == 1000,
    ),
    BadAudio(
        "opus_48k",
        lambda p: sf.write(
            p, tone(1000, 48000, 0.5), 48000, format="OGG", subtype="OPUS"
        ),
        ext="opus",
        header_ok=True,
        seconds=0.5,
        samples=8000,
        check=lambda wav: peak_hz(wav) == 1000,
    ),
    # Kept as recorded: the plateaus stay at full scale, nothing rescaled.
    BadAudio(
        "clipped",
        write_clipped,
        header_ok=True,
        seconds=0.1,
        samples=1600,
        check=lambda wav: np.allclose(
            wav, np.clip(tone(200, RATE, 0.1, 2.0), -1, 1), atol=1 / 16384
        ),
    ),
    BadAudio(
        "silent",
        lambda p: sf.write(p, np.zeros(1600), RATE),
        header_ok=True,
        seconds=0.1,
        samples=1600,
        check=lambda wav: not np.any(wav),
    ),
    BadAudio(
        "too_short",
        lambda p: sf.write(
            p, np.linspace(-0.5, 0.5, 10), RATE, subtype="FLOAT"
        ),
        header_ok=True,
        seconds=10 / RATE,
        samples=10,
        # Banks hold float files as int16 scaled to the peak: 1 / 65534.
        check=lambda wav: np.allclose(
            wav, np.linspace(-0.5, 0.5, 10), rtol=0, atol=1e-5
        ),
    ),
]
USABLE = [case for case in BAD_AUDIO if case.error is None]


def audio_cases(cases=BAD_AUDIO):
    return pytest.mark.parametrize("case", cases, ids=[c.name for c in cases])


def write_case(case, folder, stem=None):
    """Writes the bad file into ``folder``; returns its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(str(folder), f"{stem or case.name}.{case.ext}")
    case.write(path)
    return path


def raises_naming(reason, *names, error=AudioError):
    """pytest.raises for an error giving ``reason`` and naming ``names``."""
    named = "".join(f"(?=.*{re.escape(str(name))})" for name in names)
    return pytest.raises(error, match=f"(?s){named}(?=.*({reason}))")


@audio_cases()
def test_load_audio(case, tmp_path):
    path = write_case(case, tmp_path)
    if case.error:
        with raises_naming(case.error, path):
            load_audio(path)
        return
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.shape == (case.samples,)
    assert case.check(wav.numpy())


@audio_cases()
def test_audio_info(case, tmp_path):
    path = write_case(case, tmp_path)
    if not case.header_ok:
        with raises_naming(case.error, path):
            audio_info(path)
        return
    assert audio_info(path).duration == pytest.approx(case.seconds, abs=1e-4)


class LengthEncoder:
    """Embeds each utterance as its length in samples; counts its calls."""

    device = "cpu"

    def __init__(self):
        self.calls = 0

    def encode_batch(self, wavs, wav_lens):
        self.calls += 1
        return torch.round(wav_lens * wavs.shape[1])[:, None, None]


def write_good(folder, name, seconds=0.2, seed=0):
    """Writes a usable 16 kHz noise file ``<folder>/<name>.wav``."""
    path = os.path.join(str(folder), f"{name}.wav")
    noise = 0.1 * np.random.default_rng(seed).standard_normal(
        int(RATE * seconds)
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, noise, RATE)
    return path


# How a file too short for the encoder reaches it is left to the extraction
# fix that test_extraction_with_ecapa_gives_finite_embeddings awaits.
@audio_cases([case for case in BAD_AUDIO if case.name != "too_short"])
def test_extraction(case, tmp_path):
    good = write_good(tmp_path, "good")
    path = write_case(case, tmp_path)
    # min_seconds=0: the lengths show what was read, unpadded.
    extractor = EmbeddingExtractor(LengthEncoder(), batch_size=1, min_seconds=0)
    if case.error:
        with raises_naming(case.error, path):
            extractor([("good", good), ("bad", path)])
        return
    ids, embeddings = extractor([("good", good), ("bad", path)])
    assert ids == ["good", "bad"]
    assert embeddings[:, 0].tolist() == [0.2 * RATE, case.samples]


@audio_cases()
def test_folder_preparation(case, tmp_path):
    corpus, save = tmp_path / "corpus", tmp_path / "csv"
    for spk in ("s1", "s2"):
        for utt in range(2):
            write_good(corpus / spk, f"{spk}-u{utt}", seed=utt)
    path = write_case(case, corpus / "s1", stem="s1-bad")
    folder_preparation.prepare_folder_corpus(
        str(corpus), str(save), n_test_speakers=1, valid_ratio=0, num_workers=1
    )
    skipped = read_rows(save / "skipped.csv")
    rows = {
        row["ID"]: row
        for name in ("train.csv", "eval.csv")
        for row in read_rows(save / name)
    }
    if not case.header_ok:
        assert [row["path"] for row in skipped] == [path]
        assert re.search(case.error, skipped[0]["reason"])
        assert "s1-bad" not in rows and len(rows) == 4
        return
    # Headers only are read: a file whose samples are bad is kept here
    # and named by load_audio where it is read (the tests above).
    assert skipped == []
    frames = sf.info(path).frames
    assert rows["s1-bad"]["wav"] == f"$data_root/s1/s1-bad.{case.ext}"
    assert (int(rows["s1-bad"]["start"]), int(rows["s1-bad"]["stop"])) == (
        0,
        frames,
    )
    assert float(rows["s1-bad"]["duration"]) == pytest.approx(
        case.seconds, abs=1e-4
    )


@audio_cases()
def test_waveform_bank(case, tmp_path):
    path = write_case(case, tmp_path / "noise")
    csv_file = tmp_path / "noise.csv"
    csv_file.write_text(
        f"ID,duration,wav\nn0,0.2,$root/good.wav\nn1,0.1,$root/"
        f"{os.path.basename(path)}\n"
    )
    write_good(tmp_path / "noise", "good")
    if case.error:
        with raises_naming(case.error, path, f"{csv_file}, line 3 (ID n1)"):
            load_waveform_bank(str(csv_file), {"root": tmp_path / "noise"})
        return
    bank = load_waveform_bank(str(csv_file), {"root": tmp_path / "noise"})
    assert bank.lengths.tolist() == [0.2 * RATE, case.samples]
    assert case.check(bank.select(torch.tensor([1]))[0][0].numpy())


def test_verification_names_a_missing_test_file(tmp_path):
    enrol = write_good(tmp_path, "e1")
    test = write_good(tmp_path, "t1", seed=1)
    gone = str(tmp_path / "t2.wav")
    rows = [{"ID": "e1", "wav": enrol, "enrol_id": "e1"}]
    tests = [{"ID": "t1", "wav": test}, {"ID": "t2", "wav": gone}]
    with raises_naming("not found", gone):
        verify_trials(
            LengthEncoder(), rows, tests, [("e1", "t1", 1), ("e1", "t2", 0)]
        )


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A small random ECAPA-TDNN, exported and loaded as users load it."""
    from speechbrain.inference.speaker import EncoderClassifier
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    torch.manual_seed(0)
    model = ECAPA_TDNN(
        TINY_ECAPA["n_mels"],
        channels=TINY_ECAPA["channels"],
        lin_neurons=TINY_ECAPA["lin_neurons"],
    )
    folder = export_encoder(
        str(tmp_path_factory.mktemp("export")),
        default_template(),
        model,
        TINY_ECAPA,
    )
    return EncoderClassifier.from_hparams(
        source=folder, savedir=str(tmp_path_factory.mktemp("loaded"))
    )


ECAPA_CASES = [
    pytest.param(case, id=case.name)
    for case in USABLE
    if case.name in ("clipped", "silent", "too_short")
]


@pytest.mark.parametrize("case", ECAPA_CASES)
def test_extraction_with_ecapa_gives_finite_embeddings(
    case, tmp_path, tiny_encoder
):
    path = write_case(case, tmp_path)
    _, embeddings = EmbeddingExtractor(tiny_encoder)([("u", path)])
    assert embeddings.shape == (1, TINY_ECAPA["lin_neurons"])
    assert np.isfinite(embeddings).all()


def test_extraction_cache_survives_a_failing_file(tmp_path):
    """Batches embedded before a bad file are kept; the rerun resumes."""
    items = [
        (f"u{i}", write_good(tmp_path, f"u{i}", 0.5 - 0.1 * i, seed=i))
        for i in range(3)
    ]
    # Its header is fine, so the failure comes mid-run, at the last batch.
    nan_samples = next(c for c in BAD_AUDIO if c.name == "nan_samples")
    bad = write_case(nan_samples, tmp_path, stem="u3")
    cache = str(tmp_path / "cache")
    with raises_naming("NaN", bad):
        EmbeddingExtractor(LengthEncoder(), batch_size=1)(
            items + [("u3", bad)], cache
        )
    os.remove(bad)
    write_good(tmp_path, "u3", 0.1, seed=3)
    encoder = LengthEncoder()
    _, embeddings = EmbeddingExtractor(encoder, batch_size=1)(
        items + [("u3", bad)], cache
    )
    assert encoder.calls == 1  # u3 only; u0-u2 came from the cache
    assert embeddings[:, 0].tolist() == [8000, 6400, 4800, 1600]


# --------------------------------------------------------------------------
# Malformed CSV files and trial lists
# --------------------------------------------------------------------------


# (text, expected message after "<path>:", verification.read_manifest mark)
MANIFESTS = {
    "no_wav_column": (
        "ID,duration,path\na,1.0,a.wav\n",
        "1: no column wav",
        None,
    ),
    "short_row": (
        "ID,duration,wav\na,1.0,a.wav\nb,1.0\n",
        "3: expected 3 fields",
        None,
    ),
    "unknown_placeholder": (
        "ID,duration,wav\na,1.0,$nowhere/a.wav\n",
        r"2: no value .*\$nowhere",
        None,
    ),
}


def manifest_cases(with_marks):
    return [
        pytest.param(
            text, message, id=name, marks=[mark] if mark and with_marks else []
        )
        for name, (text, message, mark) in MANIFESTS.items()
    ]


@pytest.mark.parametrize("text, message", manifest_cases(with_marks=True))
def test_verification_manifest(text, message, tmp_path):
    path = tmp_path / "test.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ":" + message):
        read_manifest(str(path), {"data_root": "/data"})


@pytest.mark.parametrize("text, message", manifest_cases(with_marks=False))
def test_check_manifest(text, message, tmp_path):
    path = tmp_path / "test.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ":" + message):
        check_manifest(str(path), ("ID", "wav"), {"data_root": "/data"})


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "1: no header"),
        (
            "ID,duration,wav\nn1,1.0,a.wav\nn1,2.0,b.wav\n",
            "3: ID 'n1' repeats line 2",
        ),
        ("ID,duration,wav\nn1,long,a.wav\n", "2: duration 'long' is not a"),
        ("ID,duration,wav\n,1.0,a.wav\n", "2: empty ID"),
        ("ID,duration,wav\nn1,1.0,a.wav,extra\n", "2: expected 3 fields"),
        (
            "ID,duration,wav\nn1,1.0,$noise_root/a.wav\n",
            r"2: no value given for \$noise_root",
        ),
    ],
)
def test_bank_csv_line_is_named(text, message, tmp_path):
    path = tmp_path / "noise.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ":" + message):
        load_waveform_bank(str(path), {"root": str(tmp_path)})


def test_bank_csv_without_rows_or_file(tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text("ID,duration,wav\n")
    with pytest.raises(ValueError, match="header.csv lists no audio files"):
        load_waveform_bank(str(header_only))
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        load_waveform_bank(str(tmp_path / "nowhere.csv"))


# (file name, text, expected message after "<path>:")
TRIAL_LISTS = {
    "lst_short_line": (
        "trials.lst",
        "e t.wav 1\ne t2.wav\n",
        "2: expected 3 fields",
        None,
    ),
    "lst_bad_label": (
        "trials.lst",
        "e t.wav 1\ne t2.wav yes\n",
        "2: label 'yes' is not 0/1",
        None,
    ),
    "csv_label_2": (
        "trials.csv",
        "enrol_id,test_id,label\ne,t,1\ne,u,2\n",
        "3: label '2' is not 0/1",
        None,
    ),
    "csv_text_label": (
        "trials.csv",
        "enrol_id,test_id,label\ne,t,yes\n",
        "2: label 'yes' is not 0/1",
        None,
    ),
    "csv_short_row": (
        "trials.csv",
        "enrol_id,test_id,label\ne,t,1\ne,u\n",
        "3: expected 3 non-empty fields",
        None,
    ),
    "csv_header_only": (
        "trials.csv",
        "enrol_id,test_id,label\n",
        " the trial list is empty",
        None,
    ),
    "csv_other_header": (
        "trials.csv",
        "enrol,test,label\ne,t,1\n",
        "1: cannot tell the trial format",
        None,
    ),
}


def trial_cases(with_marks):
    return [
        pytest.param(
            *case[:3],
            id=name,
            marks=[case[3]] if case[3] and with_marks else [],
        )
        for name, case in TRIAL_LISTS.items()
    ]


@pytest.mark.parametrize("name, text, message", trial_cases(True))
def test_verification_trial_file(name, text, message, tmp_path):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ":" + message):
        read_trial_file(str(path))


@pytest.mark.parametrize("name, text, message", trial_cases(False))
def test_read_trials(name, text, message, tmp_path):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ":" + message):
        read_trials(str(path))


def test_read_trials_reads_the_prepared_csv(tmp_path):
    path = tmp_path / "trials.csv"
    path.write_text("enrol_id,test_id,label\ne1,t1,1\n\ne1,t2,0\n")
    assert read_trials(str(path)) == [("e1", "t1", 1), ("e1", "t2", 0)]
    path.write_text("enrol_id,test_id\ne1,t1\n")
    assert read_trials(str(path)) == [("e1", "t1", None)]


def test_verification_names_unknown_speakers(tmp_path):
    enrol = write_good(tmp_path, "e1")
    test = write_good(tmp_path, "t1", seed=1)
    rows = [{"ID": "e1", "wav": enrol, "enrol_id": "spk1-enroll"}]
    trials = [
        ("spk1-enroll", "t1", 1),
        ("spk9-enroll", "t1", 0),
        ("spk1-enroll", "ghost", 0),
    ]
    with pytest.raises(ValueError) as error:
        verify_trials(
            LengthEncoder(), rows, [{"ID": "t1", "wav": test}], trials
        )
    message = str(error.value)
    assert message.startswith("2 trial id(s) match no embedding")
    assert "enrol 'spk9-enroll' (not found)" in message
    assert "test 'ghost' (not found)" in message


# --------------------------------------------------------------------------
# CN-Celeb preparation: malformed lists and unknown speakers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("cnceleb") / "CN-Celeb_flac"
    return generate_demo_corpus(
        root,
        n_train_speakers=3,
        n_eval_speakers=2,
        utts_per_speaker=3,
        n_test_per_eval_speaker=1,
        seed=3,
        num_workers=1,
    )


@pytest.fixture(scope="module")
def prepared(pristine, tmp_path_factory):
    """A folder prepared from the intact corpus, as an earlier run left it."""
    folder = str(tmp_path_factory.mktemp("prepared"))
    cnceleb_prepare.prepare_cnceleb(
        pristine, folder, valid_ratio=2, num_workers=1
    )
    return folder


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def a_test_file(corpus):
    return sorted(os.listdir(os.path.join(corpus, "eval", "test")))[0][:-5]


# (list to append to, line appended, expected message; {list} is the list's
# path and {line} the number of the appended line).
BAD_LISTS = {
    "trials_short_line": (
        "eval/lists/trials.lst",
        "id00800-enroll x.wav",
        "{list}:{line}: expected at least 3 fields",
    ),
    "trials_bad_label": (
        "eval/lists/trials.lst",
        "id00800-enroll test/{test}.wav 2",
        "{list}:{line}: label must be 0 or 1, got '2'",
    ),
    "enroll_short_line": (
        "eval/lists/enroll.lst",
        "id00802-enroll",
        "{list}:{line}: expected at least 2 fields",
    ),
    "enroll_map_unknown_file": (
        "eval/lists/enroll.map",
        "id00802-enroll id00802/ghost-01-001.wav",
        "{list}: 1 entries name no known audio file: id00802/ghost-01-001.wav",
    ),
    "trials_unknown_speaker": (
        "eval/lists/trials.lst",
        "id00999-enroll test/{test}.wav 0",
        "{list}: 1 entries name no known enrolment id .*: id00999-enroll",
    ),
    "trials_unknown_test_file": (
        "eval/lists/trials.lst",
        "id00800-enroll test/id00999-ghost.wav 0",
        "{list}: 1 entries name no known audio file: id00999-ghost",
    ),
}


@pytest.mark.parametrize(
    "list_name, line, message", BAD_LISTS.values(), ids=list(BAD_LISTS)
)
def test_cnceleb_bad_list_keeps_prepared_folder(
    list_name, line, message, pristine, prepared, tmp_path
):
    corpus = shutil.copytree(pristine, tmp_path / "corpus")
    save = shutil.copytree(prepared, tmp_path / "csv")
    before = snapshot(save)
    list_path = os.path.join(corpus, list_name)
    with open(list_path) as f:
        number = len(f.readlines()) + 1
    with open(list_path, "a") as f:
        f.write(line.format(test=a_test_file(corpus)) + "\n")
    expected = message.format(list=re.escape(list_path), line=number)
    with pytest.raises(ValueError, match=expected):
        # Other options than the saved ones: the folder is prepared anew.
        cnceleb_prepare.prepare_cnceleb(
            corpus, str(save), valid_ratio=2, seed=2, num_workers=1
        )
    assert snapshot(save) == before


def test_cnceleb_unknown_training_speaker_is_skipped(pristine, tmp_path):
    corpus = shutil.copytree(pristine, tmp_path / "corpus")
    with open(os.path.join(corpus, "dev", "dev.lst"), "a") as f:
        f.write("\nid00999\n")
    cnceleb_prepare.prepare_cnceleb(
        corpus, str(tmp_path / "csv"), valid_ratio=2, num_workers=1
    )
    skipped = read_rows(tmp_path / "csv" / "skipped.csv")
    assert skipped == [
        {
            "path": os.path.join(corpus, "data", "id00999"),
            "reason": "speaker folder not found",
        }
    ]
    speakers = {
        row["spk_id"]
        for name in ("train.csv", "valid.csv")
        for row in read_rows(tmp_path / "csv" / name)
    }
    assert speakers == {"id00000", "id00001", "id00002"}


# --------------------------------------------------------------------------
# Unwritable or full output folders
# --------------------------------------------------------------------------


def test_check_writable_creates_the_folder_and_leaves_nothing(tmp_path):
    folder = tmp_path / "results" / "run"
    assert check_writable(str(folder), min_free_mb=1) == str(folder)
    assert folder.is_dir() and os.listdir(folder) == []


def test_check_writable_read_only_folder(tmp_path, monkeypatch):
    # Root writes to a chmod-ed read-only folder anyway (and CI runs as
    # root), so the kernel's refusal is raised where the probe is created.
    folder = tmp_path / "locked"
    folder.mkdir()
    real_probe = output_checks.tempfile.NamedTemporaryFile

    def refused_probe(*args, dir=None, **kwargs):
        if dir == str(folder):
            raise PermissionError(
                errno.EACCES, os.strerror(errno.EACCES), f"{dir}/.probe-x"
            )
        return real_probe(*args, dir=dir, **kwargs)

    monkeypatch.setattr(
        output_checks.tempfile, "NamedTemporaryFile", refused_probe
    )
    with pytest.raises(
        PermissionError, match=f"cannot write to output folder {folder}"
    ) as err:
        check_writable(str(folder))
    assert err.value.errno == errno.EACCES
    assert "fix its permissions" in str(err.value)


def test_check_writable_folder_inside_a_file(tmp_path):
    (tmp_path / "results").write_text("a file, not a folder")
    folder = tmp_path / "results" / "run"
    with pytest.raises(
        OSError,
        match=re.escape(f"cannot write to output folder {folder}")
        + ".*another output",
    ):
        check_writable(str(folder))


def test_check_writable_disk_too_small(tmp_path):
    free_mb = shutil.disk_usage(tmp_path).free / 1e6
    with pytest.raises(
        OSError,
        match=f"MB free on the disk of {tmp_path}, {2 * free_mb:.0f} MB needed",
    ) as err:
        check_writable(str(tmp_path), min_free_mb=2 * free_mb)
    assert err.value.errno == errno.ENOSPC


@pytest.fixture
def folder_corpus(tmp_path):
    for spk in ("s1", "s2", "s3"):
        for utt in range(2):
            write_good(tmp_path / "corpus" / spk, f"{spk}-u{utt}", seed=utt)
    return str(tmp_path / "corpus")


def prepare_folder(corpus, save, **options):
    folder_preparation.prepare_folder_corpus(
        corpus,
        str(save),
        n_test_speakers=2,
        valid_ratio=0,
        num_workers=1,
        **options,
    )


@pytest.mark.parametrize("problem", ["folder_is_a_file", "disk_full"])
def test_preparation_fails_at_start_on_unusable_output(
    problem, folder_corpus, tmp_path, monkeypatch
):
    def scan_audio(*args, **kwargs):
        raise AssertionError("audio scanned before the output was checked")

    monkeypatch.setattr(folder_preparation, "scan_audio", scan_audio)
    save = tmp_path / "csv"
    if problem == "folder_is_a_file":
        save.write_text("")
        message = f"cannot write to output folder {save}"
    else:
        monkeypatch.setattr(folder_preparation, "MIN_FREE_MB", 10**12)
        message = f"MB free on the disk of {save}"
    with pytest.raises(OSError, match=message):
        prepare_folder(folder_corpus, save)


def test_preparation_failing_to_write_keeps_earlier_outputs(
    folder_corpus, tmp_path, monkeypatch
):
    save = tmp_path / "csv"
    prepare_folder(folder_corpus, save, seed=1)
    before = snapshot(save)

    def disk_full(path, trials):
        with open(path, "w") as f:
            f.write("enrol_id,test_id,label\n")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(preparation, "write_trials", disk_full)
    with pytest.raises(OSError, match="No space left"):
        prepare_folder(folder_corpus, save, seed=2)
    assert snapshot(save) == before


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


def test_export_names_a_missing_template(tmp_path):
    template = str(tmp_path / "inference.yaml")
    with pytest.raises(FileNotFoundError, match=re.escape(template)):
        export_encoder(str(tmp_path / "out"), template, torch.nn.Linear(2, 2))


def test_export_names_a_broken_template_line(tmp_path):
    template = tmp_path / "inference.yaml"
    template.write_text("n_mels: 80\nchannels: [512, 512\nlin_neurons: 1\n")
    with pytest.raises(Exception, match=rf'"{template}", line 3'):
        export_encoder(
            str(tmp_path / "out"), str(template), torch.nn.Linear(2, 2)
        )
    assert not (tmp_path / "out").exists()


def test_export_names_an_unknown_template_key(tmp_path):
    template = default_template()
    with pytest.raises(KeyError, match=re.escape(template) + ".*'n_melz'"):
        export_encoder(
            str(tmp_path / "out"),
            template,
            torch.nn.Linear(2, 2),
            values={"n_melz": 80},
        )


def test_export_into_a_file_names_it(tmp_path):
    target = tmp_path / "export"
    target.write_text("")
    with pytest.raises(OSError, match=re.escape(str(target))):
        export_encoder(str(target), default_template(), torch.nn.Linear(2, 2))


def test_export_without_checkpoint_says_train_first(tmp_path):
    from speechbrain.utils.checkpoints import Checkpointer

    checkpointer = Checkpointer(str(tmp_path / "save"))
    with pytest.raises(
        FileNotFoundError, match=f"in {tmp_path / 'save'}: train first"
    ):
        export_from_hparams({"checkpointer": checkpointer})


def test_failed_export_keeps_the_previous_export(tmp_path, monkeypatch):
    folder = str(tmp_path / "export")
    export_encoder(folder, default_template(), torch.nn.Linear(2, 2))
    before = snapshot(folder)
    saved = []

    def disk_full(state, path):
        saved.append(path)
        with open(path, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_encoder(
            folder,
            default_template(),
            torch.nn.Linear(3, 3),
            values={"lin_neurons": 3},
        )
    assert saved and snapshot(folder) == before


# --------------------------------------------------------------------------
# verify.py on a machine where the data were never prepared
# --------------------------------------------------------------------------


@pytest.fixture
def tiny_export(tmp_path):
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    model = ECAPA_TDNN(
        TINY_ECAPA["n_mels"],
        channels=TINY_ECAPA["channels"],
        lin_neurons=TINY_ECAPA["lin_neurons"],
    )
    return export_encoder(
        str(tmp_path / "export"), default_template(), model, TINY_ECAPA
    )


def test_verify_prepares_a_cnceleb_release_it_finds_unprepared(
    pristine, tiny_export, tmp_path
):
    import verify

    prep = tmp_path / "never_prepared"
    verify.main(
        [
            "--model",
            tiny_export,
            "--data_folder",
            str(pristine),
            "--prep_folder",
            str(prep),
            "--output_folder",
            str(tmp_path / "verify"),
        ]
    )
    assert (prep / "trials.csv").is_file()
    with open(tmp_path / "verify" / "summary.json") as fin:
        summary = json.load(fin)
    assert summary["results"]["concat"]["n_trials"] == len(
        read_trials(str(prep / "trials.csv"))
    )


def test_verify_names_the_command_for_an_unprepared_folder_corpus(
    folder_corpus, tiny_export, tmp_path
):
    import verify

    prep = tmp_path / "never_prepared"
    with pytest.raises(FileNotFoundError) as error:
        verify.main(
            [
                "--model",
                tiny_export,
                "--data_folder",
                folder_corpus,
                "--prep_folder",
                str(prep),
            ]
        )
    message = str(error.value)
    assert f"{prep} holds no trials.csv" in message
    assert "python cnceleb_prepare.py --folder_corpus" in message
    assert f"--data_folder {folder_corpus}" in message
