"""Tests of test-side corruption for robustness evaluation.

Interferers are pure tones, one frequency per utterance, so the talker a
corruption added can be read off the spectrum of ``output - clean``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from audio_helpers import power_ratio_db
from recipe_helpers import RECIPE

from speechbrain_ext.augment.bank import StreamingWaveformBank, WaveformBank
from speechbrain_ext.data.audio import AudioError, load_audio, save_audio
from speechbrain_ext.evaluation.robustness import (
    Condition,
    Corruptor,
    parse_condition,
)
from speechbrain_ext.evaluation.verification import verify_trials
from speechbrain_ext.inference.extraction import EmbeddingExtractor

RATE = 16000
LENGTH = 8000  # samples of each clean target: 2 Hz FFT bins
# Interferer utterances: id -> (speaker, tone in Hz, seconds). Some are
# shorter than the targets (tiled), some longer (cropped).
TONES = {
    "a1": ("a", 300, 0.3),
    "a2": ("a", 500, 0.9),
    "b1": ("b", 700, 0.2),
    "b2": ("b", 900, 1.1),
    "c1": ("c", 1100, 0.4),
    "c2": ("c", 1300, 0.7),
}


@pytest.fixture
def rows(tmp_path):
    """Manifest rows of the tone interferers, as read_manifest gives them."""
    rows = []
    for uid, (spk, hertz, seconds) in TONES.items():
        path = str(tmp_path / f"{uid}.wav")
        time = torch.arange(int(seconds * RATE)) / RATE
        save_audio(path, 0.5 * torch.sin(2 * np.pi * hertz * time), RATE)
        rows.append(
            {
                "ID": uid,
                "wav": path,
                "spk_id": spk,
                "start": "0",
                "stop": str(len(time)),
            }
        )
    return rows


def clean_target(seed):
    """A noise stand-in for a test utterance."""
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(LENGTH, generator=generator)


def added_talker(clean, mixed):
    """The interferer whose tone dominates ``mixed - clean``."""
    spectrum = torch.fft.rfft((mixed - clean).double()).abs()
    hertz = float(spectrum.argmax()) * RATE / LENGTH
    return min(TONES, key=lambda uid: abs(TONES[uid][1] - hertz))


@pytest.mark.parametrize(
    "text, sir, snr, name",
    [
        ("clean", None, None, "clean"),
        ("sir0", 0.0, None, "sir0"),
        ("sir-5", -5.0, None, "sir-5"),
        ("snr2.5", None, 2.5, "snr2.5"),
        ("sir5+snr10", 5.0, 10.0, "sir5+snr10"),
        ("sir05", 5.0, None, "sir5"),
        ("sir-0", 0.0, None, "sir0"),
    ],
)
def test_parse_condition(text, sir, snr, name):
    condition = parse_condition(text)
    assert (condition.sir_db, condition.snr_db) == (sir, snr)
    assert condition.name == name
    assert condition.is_clean == (text == "clean")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIR5",
        "sir",
        "sir+5",
        "sir5+sir10",
        "snr10+sir5",
        "sir5+snr10+snr3",
        "sir5 ",
        "babble5",
        "clean+sir5",
    ],
)
def test_bad_condition_is_named_with_the_grammar(text):
    with pytest.raises(ValueError) as error:
        parse_condition(text)
    assert repr(text) in str(error.value)
    assert "'sir<dB>+snr<dB>'" in str(error.value)


@pytest.mark.parametrize("sir", [-5.0, 0.0, 10.0])
def test_sir_is_exact_over_the_whole_utterance(rows, sir):
    clean = clean_target(0)
    mixed = Corruptor(Condition(sir_db=sir), rows, seed=3)("t1", clean)
    assert mixed.shape == clean.shape and mixed.dtype == clean.dtype
    assert power_ratio_db(clean, mixed - clean) == pytest.approx(sir, abs=1e-3)


def test_combined_condition_adds_both_parts_at_their_levels(rows):
    bank = WaveformBank([torch.randn(3000), torch.randn(12000)])
    clean = clean_target(1)

    def corrupt(name):
        return Corruptor(name, rows, bank, seed=5)("t1", clean) - clean

    talker, noise, both = (
        corrupt("sir5"),
        corrupt("snr10"),
        corrupt("sir5+snr10"),
    )
    # The talker and the noise do not depend on the other's presence, and
    # the SNR is measured against the clean target, not the mixture.
    torch.testing.assert_close(both, talker + noise, atol=1e-6, rtol=0)
    assert power_ratio_db(clean, talker) == pytest.approx(5.0, abs=1e-3)
    assert power_ratio_db(clean, noise) == pytest.approx(10.0, abs=1e-3)
    assert power_ratio_db(clean, both - noise) == pytest.approx(5.0, abs=1e-3)


def test_levels_change_gain_only(rows):
    clean = clean_target(2)
    at_0 = Corruptor("sir0", rows)("t1", clean) - clean
    at_10 = Corruptor("sir10", rows)("t1", clean) - clean
    torch.testing.assert_close(at_0, 10**0.5 * at_10, atol=1e-5, rtol=1e-4)


def test_same_seed_and_id_give_the_same_waveform_in_any_order(rows):
    uids = [f"t{i}" for i in range(8)]
    clean = {uid: clean_target(i) for i, uid in enumerate(uids)}
    first = Corruptor("sir0", rows, seed=11)
    forward = {uid: first(uid, clean[uid]) for uid in uids}
    # A fresh corruptor, reverse order, a one-file cache, repeated calls.
    second = Corruptor("sir0", rows, seed=11, cache_size=1)
    for uid in reversed(uids + uids):
        assert torch.equal(second(uid, clean[uid]), forward[uid]), uid
    other = Corruptor("sir0", rows, seed=12)
    for uid in uids:
        assert not torch.equal(other(uid, clean[uid]), forward[uid]), uid


def test_manifest_row_order_does_not_matter(rows):
    clean = clean_target(3)
    shuffled = [rows[i] for i in (4, 0, 5, 2, 1, 3)]
    assert torch.equal(
        Corruptor("sir5", rows)("t1", clean),
        Corruptor("sir5", shuffled)("t1", clean),
    )


def test_same_result_in_another_process(rows, tmp_path):
    """A salted ``hash`` would change with PYTHONHASHSEED; crc32 does not."""
    manifest = tmp_path / "rows.json"
    manifest.write_text(json.dumps(rows))
    script = (
        "import json, sys, torch\n"
        "from speechbrain_ext.evaluation.robustness import Corruptor\n"
        "rows = json.load(open(sys.argv[1]))\n"
        "clean = torch.load(sys.argv[2])\n"
        "torch.save(Corruptor('sir5', rows, seed=7)('utt-x', clean),"
        " sys.argv[3])\n"
    )
    clean = clean_target(4)
    torch.save(clean, tmp_path / "clean.pt")
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(manifest),
            str(tmp_path / "clean.pt"),
            str(tmp_path / "mixed.pt"),
        ],
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "987"},
    )
    assert torch.equal(
        torch.load(tmp_path / "mixed.pt"),
        Corruptor("sir5", rows, seed=7)("utt-x", clean),
    )


def test_interferer_is_never_the_same_speaker_nor_utterance(rows):
    seen = {uid: set() for uid in TONES}
    for seed in range(40):
        corrupt = Corruptor("sir0", rows, seed=seed)
        for uid in TONES:  # targets from the pool: speaker found there
            clean = clean_target(seed)
            seen[uid].add(added_talker(clean, corrupt(uid, clean)))
    for uid, talkers in seen.items():
        others = {u for u in TONES if TONES[u][0] != TONES[uid][0]}
        # Never its own speaker, and the draws cover every other one.
        assert talkers == others, uid


def test_speaker_given_for_an_utterance_outside_the_pool(rows):
    by_argument = Corruptor("sir0", rows)
    by_mapping = Corruptor("sir0", rows, speakers={"x": "b"})
    for seed in range(10):
        clean = clean_target(seed)
        uid = f"x{seed}"
        talker = added_talker(clean, by_argument(uid, clean, spk_id="b"))
        assert TONES[talker][0] != "b"
        talker = added_talker(clean, by_mapping("x", clean))
        assert TONES[talker][0] != "b"


def test_only_the_utterance_itself_is_excluded_without_speakers(rows):
    one_each = [{**row, "spk_id": row["ID"]} for row in rows[:2]]
    corrupt = Corruptor("sir0", one_each)
    clean = clean_target(0)
    # a1 can only get a2, a2 only a1, though both were one speaker.
    assert added_talker(clean, corrupt("a1", clean)) == "a2"
    assert added_talker(clean, corrupt("a2", clean)) == "a1"


def test_pool_of_the_target_speaker_only_is_an_error(rows):
    corrupt = Corruptor("sir0", rows[:2])
    with pytest.raises(ValueError, match="no interferer for a1.*'a'"):
        corrupt("a1", clean_target(0))


def test_contradicting_speaker_is_an_error(rows):
    with pytest.raises(ValueError, match="a1 is given speaker 'b'.*'a'"):
        Corruptor("sir0", rows)("a1", clean_target(0), spk_id="b")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"condition": "sir5"}, "sir5 adds a talker: pass interferer_rows"),
        ({"condition": "snr5"}, "snr5 adds noise: pass a noise_bank"),
        ({"condition": "sir5", "seed": -1}, "non-negative"),
        ({"condition": "sir6dB"}, "unknown test condition 'sir6dB'"),
    ],
)
def test_construction_errors(rows, kwargs, message):
    if kwargs["condition"].startswith("sir") and "seed" in kwargs:
        kwargs["interferer_rows"] = rows
    with pytest.raises(ValueError, match=message):
        Corruptor(**kwargs)


def test_row_without_speaker_is_named(rows):
    rows[3] = {k: v for k, v in rows[3].items() if k != "spk_id"}
    with pytest.raises(ValueError, match=r"row 3 \(b2\) has no 'spk_id'"):
        Corruptor("sir0", rows)


def test_repeated_interferer_id_is_named(rows):
    with pytest.raises(ValueError, match=r"repeat the IDs \['b1'\]"):
        Corruptor("sir0", rows + [rows[2]])


def test_missing_interferer_file_names_the_row_and_file(rows, tmp_path):
    bad = [
        {**row, "wav": str(tmp_path / f"gone_{row['ID']}.wav")} for row in rows
    ]
    with pytest.raises(AudioError, match=r"interferer \w\d: .*gone_"):
        Corruptor("sir0", bad)("t1", clean_target(0))


def test_silent_and_clean_inputs_are_unchanged(rows):
    silent = torch.zeros(LENGTH)
    assert torch.equal(Corruptor("sir0", rows)("t1", silent), silent)
    clean = clean_target(0)
    assert Corruptor("clean")("t1", clean) is clean
    with pytest.raises(ValueError, match=r"t1: expected .* shape \(2, 5\)"):
        Corruptor("sir0", rows)("t1", torch.ones(2, 5))


class RecordingEncoder:
    """Embeds by spectrum and records every waveform it is given."""

    device = "cpu"

    def __init__(self, fail=False):
        self.seen = []
        self.fail = fail

    def encode_batch(self, wavs, wav_lens):
        if self.fail:
            raise RuntimeError("encoder called")
        for wav, rel in zip(wavs, wav_lens):
            self.seen.append(wav[: int(round(float(rel) * wavs.shape[1]))])
        return torch.fft.rfft(wavs).abs()[:, None, :64]


def count_matches(seen, wav):
    return sum(
        len(s) == len(wav) and torch.allclose(s, wav, atol=1e-6) for s in seen
    )


@pytest.fixture
def speaker_files(tmp_path):
    """Utterance-vs-utterance rows (same files both sides), 2 speakers."""
    rows = []
    for i, (spk, hertz) in enumerate(
        [("p", 150), ("p", 160), ("q", 400), ("q", 420)]
    ):
        uid = f"{spk}{i}"
        path = str(tmp_path / "eval" / f"{uid}.wav")
        time = torch.arange(6000 + 500 * i) / RATE
        save_audio(path, 0.3 * torch.sin(2 * np.pi * hertz * time), RATE)
        rows.append({"ID": uid, "wav": path, "enrol_id": uid, "spk_id": spk})
    trials = [
        (a["ID"], b["ID"], int(a["spk_id"] == b["spk_id"]))
        for a in rows
        for b in rows
        if a is not b
    ]
    return rows, trials


def test_only_the_test_side_is_corrupted(speaker_files, tmp_path):
    rows, trials = speaker_files
    cache = str(tmp_path / "cache")
    corrupt = Corruptor("sir0", rows, seed=1)
    encoder = RecordingEncoder()
    corrupted = verify_trials(
        encoder, rows, rows, trials, cache_folder=cache, test_transform=corrupt
    )
    assert len(encoder.seen) == 2 * len(rows)
    for row in rows:
        clean = load_audio(row["wav"])
        # Once clean (enrolment), once corrupted (test), same file.
        assert count_matches(encoder.seen, clean) == 1, row["ID"]
        noisy = corrupt(row["ID"], clean)
        assert count_matches(encoder.seen, noisy) == 1, row["ID"]

    # Everything now comes from the cache, the corrupted side included...
    again = verify_trials(
        RecordingEncoder(fail=True),
        rows,
        rows,
        trials,
        cache_folder=cache,
        test_transform=corrupt,
    )
    np.testing.assert_array_equal(again["scores"], corrupted["scores"])
    # ...but another level is embedded anew (tests only) and scores apart.
    encoder = RecordingEncoder()
    louder = verify_trials(
        encoder,
        rows,
        rows,
        trials,
        cache_folder=cache,
        test_transform=Corruptor("sir10", rows, seed=1),
    )
    assert len(encoder.seen) == len(rows)
    assert not np.allclose(louder["scores"], corrupted["scores"])
    # The clean scores are untouched by the corrupted caches.
    clean = verify_trials(
        RecordingEncoder(), rows, rows, trials, cache_folder=cache
    )
    fresh = verify_trials(RecordingEncoder(), rows, rows, trials)
    np.testing.assert_array_equal(clean["scores"], fresh["scores"])
    assert not np.allclose(clean["scores"], corrupted["scores"])


def test_corruption_is_the_same_in_dataloader_workers(speaker_files):
    rows, _ = speaker_files
    items = [(row["ID"], row["wav"]) for row in rows]
    corrupt = Corruptor("sir0", rows, seed=2)
    _, in_process = EmbeddingExtractor(
        RecordingEncoder(), batch_size=1, transform=corrupt
    )(items)
    _, in_workers = EmbeddingExtractor(
        RecordingEncoder(), batch_size=1, num_workers=2, transform=corrupt
    )(items)
    np.testing.assert_allclose(in_workers, in_process, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """An untrained small ECAPA-TDNN exported for EncoderClassifier."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain_ext.inference.export import (
        default_template,
        export_encoder,
    )

    values = {"n_mels": 24, "channels": [16, 16, 16, 16, 48], "lin_neurons": 8}
    torch.manual_seed(0)
    model = ECAPA_TDNN(24, channels=values["channels"], lin_neurons=8)
    folder = str(tmp_path_factory.mktemp("untrained") / "export")
    return export_encoder(folder, default_template(), model, values)


def test_verify_script_scores_each_condition(
    corpus, tiny_export, tmp_path, capsys
):
    # In-process: a subprocess would spend most of the test importing.
    sys.path.insert(0, RECIPE)
    try:
        from cnceleb_prepare import prepare_cnceleb
        from plot_robustness import main as plot_main
        from verify import main as verify_main
    finally:
        sys.path.remove(RECIPE)
    prep = str(tmp_path / "prepared")
    prepare_cnceleb(corpus, prep, num_workers=0)
    out = str(tmp_path / "verify")
    verify_main(
        [
            "--model",
            tiny_export,
            "--data_folder",
            corpus,
            "--prep_folder",
            prep,
            "--output_folder",
            out,
            "--name",
            "tiny",
            "--enrol_mode",
            "concat",
            "avg",
            "--no_plots",
            "--conditions",
            "clean",
            "sir0",
            "sir5+snr10",
        ]
    )
    stdout = capsys.readouterr().out
    keys = [
        "concat",
        "concat@sir0",
        "concat@sir5+snr10",
        "avg",
        "avg@sir0",
        "avg@sir5+snr10",
    ]
    table_rows = [
        line for line in stdout.splitlines() if line.startswith("| tiny |")
    ]
    assert [row.split(" | ")[1] for row in table_rows] == keys

    with open(os.path.join(out, "summary.json")) as fin:
        results = json.load(fin)["results"]
    assert list(results) == keys
    levels = {
        key: (r["test_condition"], r["sir_db"], r["snr_db"])
        for key, r in results.items()
    }
    assert levels["avg"] == ("clean", None, None)
    assert levels["concat@sir0"] == ("sir0", 0.0, None)
    assert levels["avg@sir5+snr10"] == ("sir5+snr10", 5.0, 10.0)
    assert {r["enrol_mode"] for r in results.values()} == {"concat", "avg"}
    assert {r["n_trials"] for r in results.values()} == {27}
    # The default noise bank was generated in the output folder.
    assert os.path.isfile(os.path.join(out, "noise", "noise_bank.csv"))

    def scores(key):
        with open(os.path.join(out, f"scores_{key}.txt")) as fin:
            return [line.split() for line in fin]

    clean, noisy = scores("concat"), scores("concat@sir0")
    assert [s[:3] for s in clean] == [s[:3] for s in noisy]
    assert [s[3] for s in clean] != [s[3] for s in noisy]

    report = os.path.join(out, "summary.json")
    figure = str(tmp_path / "eer_vs_sir.png")
    systems = plot_main(
        [
            "--reports",
            report,
            report,
            "--names",
            "a",
            "b",
            "--enrol_mode",
            "avg",
            "--out",
            figure,
        ]
    )
    assert systems["a"] == {
        "clean": 100 * results["avg"]["EER"],
        0.0: 100 * results["avg@sir0"]["EER"],
    }
    assert os.path.getsize(figure) > 0


@pytest.fixture
def recipe_scripts():
    """verify.py and plot_robustness.py, imported from the recipe."""
    sys.path.insert(0, RECIPE)
    try:
        import plot_robustness
        import verify
    finally:
        sys.path.remove(RECIPE)
    return verify, plot_robustness


@pytest.mark.parametrize(
    "conditions, message",
    [
        (["clean", "sir5dB"], "unknown test condition 'sir5dB'"),
        (["sir5", "sir05"], "repeats a condition: ['sir5', 'sir5']"),
    ],
)
def test_verify_rejects_bad_conditions(
    recipe_scripts, capsys, conditions, message
):
    verify, _ = recipe_scripts
    with pytest.raises(SystemExit):
        verify.parse_args(
            ["--model", "m", "--data_folder", "d", "--conditions", *conditions]
        )
    assert message in capsys.readouterr().err


def test_verify_defaults_to_the_clean_test_side(recipe_scripts):
    verify, _ = recipe_scripts
    args = verify.parse_args(["--model", "m", "--data_folder", "d"])
    assert [c.name for c in args.conditions] == ["clean"]
    assert args.corruption_seed == 1234


def test_plot_needs_per_condition_reports(recipe_scripts, tmp_path, capsys):
    _, plot_robustness = recipe_scripts
    old = tmp_path / "summary.json"
    old.write_text(
        json.dumps({"system": "x", "results": {"concat": {"EER": 0.1}}})
    )
    with pytest.raises(ValueError, match="'concat' names no test_condition"):
        plot_robustness.main(["--reports", str(old)])
    with pytest.raises(SystemExit):
        plot_robustness.main(["--reports", str(old), "--names", "a", "b"])
    assert "2 --names for 1 --reports" in capsys.readouterr().err
    clean_only = tmp_path / "clean.json"
    clean_only.write_text(
        json.dumps(
            {
                "system": "x",
                "results": {
                    "avg": {
                        "EER": 0.1,
                        "enrol_mode": "avg",
                        "score_norm": "none",
                        "test_condition": "clean",
                        "sir_db": None,
                        "snr_db": None,
                    }
                },
            }
        )
    )
    with pytest.raises(ValueError, match="no sir<dB> result for enrol_mode"):
        plot_robustness.main(["--reports", str(clean_only)])


def test_noise_conditions_work_with_a_streamed_bank(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        path = str(tmp_path / f"noise{i}.wav")
        save_audio(path, torch.from_numpy(rng.normal(size=800)) * 0.1, 16000)
        paths.append(path)
    streamed = StreamingWaveformBank(paths, [800, 800])
    clean = torch.sin(torch.arange(1600) / 5.0)
    corrupt = Corruptor("snr5", noise_bank=streamed, seed=3)
    noisy = corrupt("u1", clean)
    assert power_ratio_db(clean, noisy - clean) == pytest.approx(5.0, abs=0.01)
    # The cache stamp names the bank's files: another file list differs.
    assert "noises=2 waveforms" in repr(corrupt)
    other = Corruptor(
        "snr5", noise_bank=StreamingWaveformBank(paths[:1], [800])
    )
    assert repr(other) != repr(corrupt)
    assert repr(Corruptor("snr5", noise_bank=streamed, seed=3)) == repr(corrupt)
