"""Tests of the objectives benchmark's bookkeeping (no training here)."""

import math
import os

import pytest

from bench.corpus_subset import subset_corpus
from bench.objective_runs import epoch_seconds, train_overrides
from bench.objectives import (
    DEFAULT,
    markdown_table,
    parse_variant,
    summarize_runs,
)
from bench.stats import format_spread, seed_summary, timing_summary
from bench.step_overhead import added_loss_share, paired_ratios, summarize

PATHS = dict(corpus="/c", prep_folder="/p", output_folder="/o",
             noise_csv="/n.csv", rir_csv="/r.csv")


def test_seed_summary_hand_computed():
    # mean 4, squared deviations 4 + 0 + 4 -> sample variance 8 / 2 = 4
    summary = seed_summary([2.0, 4.0, 6.0])
    assert summary == {"mean": 4.0, "std": 2.0, "min": 2.0, "max": 6.0,
                       "n": 3}


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
    steps = summarize({"aam_softmax": [2.0, 2.0, 2.0],
                       "hybrid": [2.1, 1.9, 2.0]})
    losses = summarize({"aam_softmax": [0.010, 0.010, 0.010],
                        "hybrid": [0.014, 0.014, 0.013],
                        "supcon": [0.004, 0.004, 0.004]})
    share = added_loss_share(steps, losses)
    # (0.014 - 0.010) / 2.0 = 0.2 %; (0.004 - 0.010) / 2.0 = -0.3 %
    assert share["hybrid"] == pytest.approx(0.2)
    assert share["supcon"] == pytest.approx(-0.3)
    assert steps["hybrid"]["ratio_to_aam_softmax"]["median"] == 1.0


def test_epoch_seconds_pairs_start_and_end_lines():
    events = [
        (1.0, "speechbrain.utils.epoch_loop - Going into epoch 1\n"),
        (30.0, "speechbrain.utils.checkpoints - Saved an end-of-epoch "
               "checkpoint in x\n"),
        (31.0, "speechbrain.utils.epoch_loop - Going into epoch 2\n"),
        (71.0, "speechbrain.utils.checkpoints - Saved an end-of-epoch "
               "checkpoint in y\n"),
        (80.0, "Going into epoch 3\n"),  # interrupted: no end line
    ]
    assert epoch_seconds(events) == [29.0, 40.0]


def test_summarize_runs_and_table():
    records = [
        {"name": "hybrid", "seed": s, "EER": eer, "minDCF": dcf,
         "epoch_seconds": [sec]}
        for s, eer, dcf, sec in [(1, 10.0, 0.6, 100.0), (2, 12.0, 0.8, 120.0),
                                 (3, 14.0, 0.7, 110.0)]
    ]
    summary = summarize_runs(records)["hybrid"]
    assert summary["seeds"] == [1, 2, 3]
    assert summary["EER"]["mean"] == pytest.approx(12.0)
    assert summary["EER"]["std"] == pytest.approx(2.0)
    assert summary["minDCF"]["min"] == 0.6
    assert summary["epoch_seconds"]["mean"] == pytest.approx(110.0)
    table = markdown_table(summarize_runs(records),
                           {"name": "ref", "EER": 17.25, "minDCF": 0.9})
    rows = table.splitlines()
    assert rows[2] == ("| hybrid | 3 | 12.00 ± 2.00 [10.00-14.00] "
                       "| 0.700 ± 0.100 [0.600-0.800] | 110 ± 10 [100-120] |")
    assert rows[3] == "| ref | - | 17.25 | 0.900 | - |"


def test_every_objective_gets_the_same_budget():
    runs = {name: train_overrides(name, {}, DEFAULT, 3, PATHS)
            for name in ("aam_softmax", "supcon", "aamsupcon", "hybrid")}
    shared = ("seed", "number_of_epochs", "channels", "sentence_len", "lr",
              "prepare_options", "emb_dim")
    for key in shared:
        assert len({repr(run[key]) for run in runs.values()}) == 1, key
    assert runs["aam_softmax"]["batch_size"] == 32
    for name in ("supcon", "aamsupcon", "hybrid"):
        run = runs[name]
        assert run["n_speakers_per_batch"] * run["n_utts_per_speaker"] == 32
    assert "n_speakers_per_batch" not in runs["aam_softmax"]
    assert runs["aamsupcon"]["aam_softmax_weight"] == 0.0
    assert "aam_softmax_weight" not in runs["hybrid"]


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
    out = subset_corpus(str(tmp_path / "corpus"), str(tmp_path / "sub"),
                        n_speakers=2, utts_per_speaker=3)
    assert sorted(os.listdir(out)) == ["s1", "s3"]
    files = sorted(os.listdir(os.path.join(out, "s3")))
    assert files == ["s3-w0.opus", "s3-w2.opus", "s3-w4.opus"]
    assert os.path.islink(os.path.join(out, "s3", "s3-w2.opus"))
