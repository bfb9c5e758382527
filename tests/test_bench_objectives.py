"""Tests of the objectives benchmark's bookkeeping (no training here)."""

import json
import math
import os

import numpy as np
import pytest
import torch

from bench.objectives import (
    SUPERVISED,
    build_config,
    markdown_report,
    markdown_table,
    paired_against,
    parse_args,
    parse_variant,
    select_by_validation,
    summarize_runs,
)
from bench.runs import (
    BUDGET as DEFAULT,
    OBJECTIVES,
    QUICK,
    RUN_RECORD,
    SCORES_FILE,
    best_validation_eer,
    cached_overrides,
    corpus_folder,
    ensure_current,
    epoch_seconds,
    load_recipe_hparams,
    subset_corpus,
    train_overrides,
    trial_scores,
    trial_speakers,
    validation_curve,
)
from bench.stats import format_spread, seed_summary, timing_summary
from bench.step_overhead import added_loss_share, paired_ratios, summarize
from speechbrain_ext.augment import generate_noise_bank, simulate_rirs

PATHS = dict(
    corpus="/c",
    prep_folder="/p",
    output_folder="/o",
    noise_csv="/n.csv",
    rir_csv="/r.csv",
)


def test_seed_summary_hand_computed():
    # mean 4, squared deviations 4 + 0 + 4 -> sample variance 8 / 2 = 4
    summary = seed_summary([2.0, 4.0, 6.0])
    assert summary == {"mean": 4.0, "std": 2.0, "min": 2.0, "max": 6.0, "n": 3}


def test_seed_summary_single_seed_has_no_std():
    summary = seed_summary([7.5])
    assert summary["mean"] == 7.5 and math.isnan(summary["std"])
    assert format_spread(summary) == "7.50"


def test_summaries_reject_empty_input():
    with pytest.raises(ValueError, match="at least one value"):
        seed_summary([])
    with pytest.raises(ValueError, match="at least one value"):
        timing_summary([])


def test_timing_summary_ignores_one_outlier():
    summary = timing_summary([1.0, 1.0, 1.0, 1.0, 100.0])
    assert summary["median"] == 1.0 and summary["iqr"] == 0.0


def test_paired_ratios_divide_within_repetition():
    times = {"aam_softmax": [2.0, 4.0], "hybrid": [2.2, 4.0]}
    ratios = paired_ratios(times)
    assert ratios["hybrid"] == pytest.approx([1.1, 1.0])
    assert ratios["aam_softmax"] == [1.0, 1.0]


def test_added_loss_share_is_relative_to_the_baseline_step():
    steps = summarize(
        {"aam_softmax": [2.0, 2.0, 2.0], "hybrid": [2.1, 1.9, 2.0]}
    )
    losses = summarize(
        {
            "aam_softmax": [0.010, 0.010, 0.010],
            "hybrid": [0.014, 0.014, 0.013],
            "supcon": [0.004, 0.004, 0.004],
        }
    )
    share = added_loss_share(steps, losses)
    # (0.014 - 0.010) / 2.0 = 0.2 %; (0.004 - 0.010) / 2.0 = -0.3 %
    assert share["hybrid"] == pytest.approx(0.2)
    assert share["supcon"] == pytest.approx(-0.3)
    assert steps["hybrid"]["ratio_to_aam_softmax"]["median"] == 1.0


def test_epoch_seconds_pairs_start_and_end_lines():
    events = [
        (1.0, "speechbrain.utils.epoch_loop - Going into epoch 1\n"),
        (
            30.0,
            "speechbrain.utils.checkpoints - Saved an end-of-epoch "
            "checkpoint in x\n",
        ),
        (31.0, "speechbrain.utils.epoch_loop - Going into epoch 2\n"),
        (
            71.0,
            "speechbrain.utils.checkpoints - Saved an end-of-epoch "
            "checkpoint in y\n",
        ),
        (80.0, "Going into epoch 3\n"),  # interrupted: no end line
    ]
    assert epoch_seconds(events) == [29.0, 40.0]


def hybrid_records(valid=(20.0, 22.0, 18.0)):
    return [
        {
            "name": "hybrid",
            "seed": s,
            "EER": eer,
            "minDCF": dcf,
            "epoch_seconds": [sec],
            "best_valid_EER": v,
        }
        for (s, eer, dcf, sec), v in zip(
            [
                (1, 10.0, 0.6, 100.0),
                (2, 12.0, 0.8, 120.0),
                (3, 14.0, 0.7, 110.0),
            ],
            valid,
        )
    ]


def test_summarize_runs_and_table():
    records = hybrid_records()
    summary = summarize_runs(records)["hybrid"]
    assert summary["seeds"] == [1, 2, 3]
    assert summary["EER"]["mean"] == pytest.approx(12.0)
    assert summary["EER"]["std"] == pytest.approx(2.0)
    assert summary["minDCF"]["min"] == 0.6
    assert summary["valid_EER"]["mean"] == pytest.approx(20.0)
    assert summary["epoch_seconds"]["mean"] == pytest.approx(110.0)
    paired = {"hybrid": {"verdict": "worse", "delta": 1.5, "p_value": 0.012}}
    table = markdown_table(
        summarize_runs(records),
        {"name": "ref", "EER": 17.25, "minDCF": 0.9},
        paired,
    )
    rows = table.splitlines()
    assert rows[0].count("|") == rows[2].count("|") == 8
    assert rows[2] == (
        "| hybrid | 3 | 12.00 ± 2.00 [10.00-14.00] "
        "| 0.700 ± 0.100 [0.600-0.800] "
        "| 20.00 ± 2.00 [18.00-22.00] "
        "| worse (+1.50, p=0.012) | 110 ± 10 [100-120] |"
    )
    assert rows[3] == "| ref | - | 17.25 | 0.900 | - | - | - |"


def test_runs_without_validation_curve_have_no_valid_summary():
    records = hybrid_records()
    del records[1]["best_valid_EER"]
    assert summarize_runs(records)["hybrid"]["valid_EER"] is None
    assert "| - |" in markdown_table(summarize_runs(records))


def test_every_objective_gets_the_same_budget():
    runs = {
        name: train_overrides(name, {}, DEFAULT, 3, PATHS)
        for name in SUPERVISED
    }
    assert set(runs) == {
        "aam_softmax",
        "supcon",
        "aamsupcon",
        "hybrid",
        "authors",
    }
    shared = (
        "seed",
        "number_of_epochs",
        "channels",
        "sentence_len",
        "prepare_options",
        "emb_dim",
        "batch_size",
    )
    for key in shared:
        assert len({repr(run[key]) for run in runs.values()}) == 1, key
    assert runs["aam_softmax"]["batch_size"] == 128
    for name in ("supcon", "aamsupcon", "hybrid"):
        run = runs[name]
        assert (run["n_speakers_per_batch"], run["n_utts_per_speaker"]) == (
            64,
            2,
        )
        assert run["lr"] == 0.002 and run["lr_final"] == 0.0002
    for name in ("aam_softmax", "authors"):
        assert "n_speakers_per_batch" not in runs[name]
    # The authors' preset keeps its SGD schedule; a variant may override it.
    assert "lr" not in runs["authors"] and "lr_final" not in runs["authors"]
    assert (
        train_overrides("authors", {"lr": 0.1}, DEFAULT, 3, PATHS)["lr"] == 0.1
    )
    assert runs["aamsupcon"]["aam_softmax_weight"] == 0.0
    assert "aam_softmax_weight" not in runs["hybrid"]


def test_default_budget_is_the_documented_one():
    assert DEFAULT["epochs"] >= 8
    assert (DEFAULT["n_test_speakers"], DEFAULT["n_valid_speakers"]) == (40, 10)
    assert DEFAULT["max_utts_per_speaker"] == 40
    assert DEFAULT["n_speakers"] is None  # all 250 speakers
    assert QUICK["n_speakers"] and QUICK["epochs"] >= 2


def test_build_config_options():
    config = build_config(
        parse_args(
            [
                "--data_folder",
                "d",
                "--embeddings_per_view",
                "64",
                "--max_utts_per_speaker",
                "0",
                "--n_test_speakers",
                "30",
            ]
        )
    )
    assert config["embeddings_per_view"] == 64
    assert config["max_utts_per_speaker"] is None  # 0: every utterance
    assert config["n_test_speakers"] == 30 and config["epochs"] == 8
    quick = build_config(parse_args(["--data_folder", "d", "--quick"]))
    assert quick["n_speakers"] == QUICK["n_speakers"]


def test_batch_not_divisible_by_k_is_an_error():
    config = dict(DEFAULT, embeddings_per_view=33)
    with pytest.raises(ValueError, match="not a multiple"):
        train_overrides("supcon", {}, config, 1, PATHS)


def test_variant_overrides_win_and_bad_variants_are_named():
    name, objective, extra = parse_variant("h=hybrid:aam_softmax_weight=0.5")
    run = train_overrides(objective, extra, DEFAULT, 1, PATHS)
    assert (name, run["aam_softmax_weight"]) == ("h", 0.5)
    with pytest.raises(ValueError, match="'x=arcface'"):
        parse_variant("x=arcface")
    with pytest.raises(ValueError, match="'margin' is not key=value"):
        parse_variant("x=hybrid:margin")


def test_subset_corpus_links_even_spread(tmp_path):
    for spk in ("s1", "s2", "s3", "s4"):
        folder = tmp_path / "corpus" / "group" / spk
        folder.mkdir(parents=True)
        for word in range(6):
            (folder / f"{spk}-w{word}.opus").write_bytes(b"x")
    (tmp_path / "corpus" / "manifest.csv").write_text("ID\n")
    out = subset_corpus(
        str(tmp_path / "corpus"),
        str(tmp_path / "sub"),
        n_speakers=2,
        utts_per_speaker=3,
    )
    assert sorted(os.listdir(out)) == ["s1", "s3"]
    files = sorted(os.listdir(os.path.join(out, "s3")))
    assert files == ["s3-w0.opus", "s3-w2.opus", "s3-w4.opus"]
    assert os.path.islink(os.path.join(out, "s3", "s3-w2.opus"))


def test_corpus_folder_is_named_after_the_subset(tmp_path):
    for spk in ("s1", "s2"):
        folder = tmp_path / "corpus" / spk
        folder.mkdir(parents=True)
        for word in range(4):
            (folder / f"{spk}-w{word}.opus").write_bytes(b"x")
    data = str(tmp_path / "corpus")
    out = str(tmp_path / "out")
    config = {"n_speakers": None, "max_utts_per_speaker": 2}
    subset = corpus_folder(data, out, config)
    assert subset == os.path.join(out, "corpus_allspk_2utt")
    assert len(os.listdir(os.path.join(subset, "s1"))) == 2
    bigger = corpus_folder(data, out, dict(config, max_utts_per_speaker=3))
    assert bigger != subset
    assert len(os.listdir(os.path.join(bigger, "s1"))) == 3
    assert (
        corpus_folder(
            data, out, {"n_speakers": None, "max_utts_per_speaker": None}
        )
        == data
    )


def write_record(folder, overrides):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, RUN_RECORD), "w") as fout:
        json.dump({"EER": 10.0, "overrides": overrides}, fout)


def test_ensure_current_keeps_a_run_with_the_same_overrides(tmp_path):
    folder = str(tmp_path / "runs" / "hybrid" / "1")
    overrides = train_overrides("hybrid", {}, DEFAULT, 1, PATHS)
    write_record(folder, json.loads(json.dumps(overrides)))
    other_workers = dict(overrides, num_workers=8)  # same computation
    assert ensure_current(folder, other_workers) is None
    assert os.path.isfile(os.path.join(folder, RUN_RECORD))


def test_ensure_current_moves_a_run_with_other_overrides(tmp_path):
    folder = str(tmp_path / "runs" / "hybrid" / "1")
    old = train_overrides("hybrid", {}, dict(DEFAULT, epochs=1), 1, PATHS)
    write_record(folder, old)
    new = train_overrides("hybrid", {}, DEFAULT, 1, PATHS)
    moved = ensure_current(folder, new)
    assert moved is not None and os.path.isdir(moved)
    assert os.path.isfile(os.path.join(moved, RUN_RECORD))
    # The fresh folder records what is being trained, so that an
    # interrupted run is recognised (and kept) on the next call.
    assert not os.path.exists(os.path.join(folder, RUN_RECORD))
    assert cached_overrides(folder) == json.loads(json.dumps(new))
    assert ensure_current(folder, new) is None
    # ... and an interrupted run of other settings is moved as well.
    assert ensure_current(folder, old) is not None


def test_ensure_current_moves_runs_of_unknown_settings(tmp_path):
    folder = tmp_path / "runs" / "supcon" / "2"
    (folder / "save").mkdir(parents=True)  # older benchmark, no request
    assert cached_overrides(str(folder)) == "unknown"
    assert ensure_current(str(folder), {"seed": 2}) is not None
    assert cached_overrides(str(tmp_path / "absent")) is None


def test_validation_curve_and_its_best_epoch(tmp_path):
    log = tmp_path / "train_log.txt"
    log.write_text(
        "epoch: 1, lr: 2.00e-03 - train loss: 9.1 - valid EER: 30.5, "
        "valid minDCF: 9.90e-01\n"
        "epoch: 2, lr: 1.50e-03 - train loss: 7.2 - valid EER: 24.0, "
        "valid minDCF: 9.50e-01\n"
        "epoch: 3, lr: 1.00e-03 - train loss: 6.0 - valid EER: 25.5, "
        "valid minDCF: 9.60e-01\n"
    )
    curve = validation_curve(str(tmp_path))
    assert curve == [(1, 30.5), (2, 24.0), (3, 25.5)]
    assert best_validation_eer(curve) == 24.0
    assert validation_curve(str(tmp_path / "no_run")) == []
    assert math.isnan(best_validation_eer([(1, float("nan"))]))


def test_selection_uses_validation_never_test():
    # hybrid_m0.1 has the better test EER, hybrid_warm the better validation
    # EER: the validation speakers decide.
    records = [
        {"name": "hybrid", "seed": 1, "EER": 15.0, "best_valid_EER": 21.0},
        {"name": "hybrid", "seed": 2, "EER": 15.0, "best_valid_EER": 10.0},
        {"name": "hybrid_m0.1", "seed": 1, "EER": 11.0, "best_valid_EER": 20.0},
        {"name": "hybrid_warm", "seed": 1, "EER": 14.0, "best_valid_EER": 19.0},
        {"name": "supcon", "seed": 1, "EER": 16.0, "best_valid_EER": 22.0},
    ]
    variants = [
        ("hybrid", "hybrid", {}),
        ("supcon", "supcon", {}),
        ("hybrid_m0.1", "hybrid", {"margin": 0.1}),
        ("hybrid_warm", "hybrid", {"lr_warmup_steps": 10}),
    ]
    selection = select_by_validation(records, variants)
    assert set(selection) == {"hybrid"}  # supcon had a single setting
    # Compared on seed 1, the only one every candidate has (hybrid's seed
    # 2 would otherwise make it look best).
    assert selection["hybrid"]["seeds"] == [1]
    assert selection["hybrid"]["candidates"]["hybrid"] == 21.0
    assert selection["hybrid"]["selected"] == "hybrid_warm"


def speaker_trials(n_speakers=16, per_speaker=10, seed=0):
    enrol = np.repeat([f"spk{i}" for i in range(n_speakers)], per_speaker)
    test = np.roll(enrol, per_speaker // 2)  # half target, half not
    labels = enrol == test
    noise = np.random.default_rng(seed).normal(size=(3, labels.size))
    return labels, enrol, test, noise


def test_paired_tests_against_aam_softmax():
    labels, enrol, test, noise = speaker_trials()
    scores = {
        "aam_softmax": {
            s: noise[i] + 1.0 * labels for i, s in enumerate((1, 2, 3))
        },
        "hybrid": {s: noise[i] + 3.0 * labels for i, s in enumerate((1, 2, 3))},
        "supcon": {s: noise[i] + 0.2 * labels for i, s in enumerate((1, 2, 3))},
        "same": {s: noise[i] + 1.0 * labels for i, s in enumerate((1, 2))},
    }
    paired = paired_against(scores, labels, enrol, test, n_resamples=300)
    assert set(paired) == {"hybrid", "supcon", "same"}
    assert paired["hybrid"]["verdict"] == "better"
    assert paired["hybrid"]["delta"] < 0
    assert paired["supcon"]["verdict"] == "worse"
    same = paired["same"]
    assert same["seeds"] == [1, 2] and same["delta"] == 0.0
    assert same["verdict"] == "no significant difference"
    assert same["text"].startswith("same vs aam_softmax:")
    json.dumps(paired)  # the report stores it as is
    assert (
        paired_against({"hybrid": scores["hybrid"]}, labels, enrol, test) == {}
    )


def test_trial_speakers_follow_the_trial_file(tmp_path):
    from speechbrain_ext.data.audio import save_audio
    from speechbrain_ext.data.folder_corpus import prepare_folder_corpus

    for spk in ("s1", "s2", "s3"):
        for word in ("w1", "w2"):
            save_audio(
                str(tmp_path / "corpus" / spk / f"{spk}-{word}.wav"),
                torch.zeros(1600),
                16000,
            )
    prep = str(tmp_path / "prep")
    prepare_folder_corpus(
        str(tmp_path / "corpus"),
        prep,
        n_test_speakers=3,
        valid_ratio=0,
        different_key_only=True,
    )
    labels, enrol, test = trial_speakers(prep)
    with open(os.path.join(prep, "trials.csv")) as fin:
        rows = [line.split(",") for line in fin.read().splitlines()[1:]]
    assert len(labels) == len(rows) > 0
    for (enrol_id, test_id, label), target, e, t in zip(
        rows, labels, enrol, test
    ):
        assert (enrol_id.split("-")[0], test_id.split("-")[0]) == (e, t)
        assert target == (label == "1") == (e == t)


def test_trial_scores_are_read_back_from_the_run(tmp_path):
    saved = np.array([0.5, -0.25, 0.75])
    np.save(tmp_path / SCORES_FILE, saved)
    # No export in the folder: the cached scores are used, not recomputed.
    scores = trial_scores(str(tmp_path), {"EER": 10.0}, {}, {})
    assert np.array_equal(scores, saved)


def test_report_shows_tests_selection_and_curves():
    records = hybrid_records()
    for record in records:
        record.update(n_trials=1000, n_target=500)
    summary = summarize_runs(records)
    paired = {
        "hybrid": {
            "text": "hybrid vs aam_softmax: ...",
            "seeds": [1],
            "p_value": 0.5,
        }
    }
    selection = {
        "hybrid": {
            "selected": "hybrid",
            "seeds": [1],
            "candidates": {"hybrid": 20.0},
        }
    }
    curves = {"hybrid": {1: [(1, 30.0), (2, 20.0)]}}
    machine = {"platform": "p", "cpu_count": 2, "torch": "t", "device": "cpu"}
    report = markdown_report(
        markdown_table(summary),
        DEFAULT,
        [1, 2, 3],
        records,
        machine,
        "cmd",
        paired,
        selection,
        curves,
    )
    assert "- hybrid vs aam_softmax: ... (seeds [1], p = 0.500)" in report
    assert "- hybrid: **hybrid** (hybrid 20.00%; seeds [1])" in report
    assert "| hybrid | 30.00 | 20.00 |" in report
    assert "![learning curves](objectives_curves.png)" in report
    assert "1000 trials (500 target)" in report
    assert "P x K = 64 x 2" in report


class RecordingObjective(torch.nn.Module):
    """Stands in for a speaker objective: keeps how many rows it saw."""

    def forward(self, embeddings, labels, **kwargs):
        self.rows = len(embeddings)
        return embeddings.sum() * 0.0


def built_budget(objective, tmp_path):
    """Steps per epoch, utterances per step and embeddings per step of an
    objective built from its YAML with the benchmark's overrides."""
    config = dict(
        DEFAULT, channels=[16, 16, 16, 16, 48], attention_channels=8, emb_dim=16
    )
    paths = dict(
        PATHS,
        output_folder=str(tmp_path / objective),
        noise_csv=generate_noise_bank(
            str(tmp_path / "noise"), n_files=2, duration=1.0
        ),
        rir_csv=simulate_rirs(str(tmp_path / "rirs"), n_rirs=2),
    )
    overrides = train_overrides(objective, {}, config, 1, paths)
    overrides["n_train_speakers"] = 8
    hparams = load_recipe_hparams(
        OBJECTIVES[objective][0], overrides, optional=["n_train_speakers"]
    )
    # An imaginary training set: 250 speakers x 4 utterances.
    speakers = [f"spk{i // 4}" for i in range(1000)]
    if hparams.get("train_sampler") is not None:
        batches = list(hparams["train_sampler"](speakers))
        steps, per_step = len(batches), len(batches[0])
    else:
        loader = hparams["train_dataloader_opts"]
        assert loader["drop_last"] and loader["shuffle"]
        per_step = loader["batch_size"]
        steps = len(speakers) // per_step
    torch.manual_seed(0)
    modules = torch.nn.ModuleDict(hparams["modules"])
    recorder = RecordingObjective()
    for name in ("objective", "supcon_objective", "classifier_objective"):
        if name in modules:
            modules[name] = recorder
    crop = int(hparams["sentence_len"] * hparams["sample_rate"])
    wavs = 0.1 * torch.randn(per_step, crop)
    labels = torch.arange(per_step) // 2 % 8
    task = hparams["task"]
    outputs = task.forward(modules, wavs, torch.ones(per_step))
    task.loss(modules, outputs, labels)
    return {
        "steps_per_epoch": steps,
        "utterances_per_step": per_step,
        "embeddings_per_step": recorder.rows,
        "epochs": hparams["number_of_epochs"],
        "crop": hparams["sentence_len"],
    }


def test_built_objectives_train_the_same_steps_and_embeddings(tmp_path):
    budgets = {name: built_budget(name, tmp_path) for name in SUPERVISED}
    recipe = budgets["aam_softmax"]
    assert recipe["utterances_per_step"] == DEFAULT["embeddings_per_view"]
    assert recipe["epochs"] == DEFAULT["epochs"]
    for name, budget in budgets.items():
        for key in ("steps_per_epoch", "utterances_per_step", "epochs", "crop"):
            assert budget[key] == recipe[key], (name, key)
        # Two views of every utterance, except the authors' five.
        views = 5 if name == "authors" else 2
        assert (
            budget["embeddings_per_step"]
            == views * recipe["utterances_per_step"]
        ), name
