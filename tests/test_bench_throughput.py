"""Tests of the throughput benchmark: its bookkeeping and a --quick run."""

import ast
import csv
import json
import os
import time

import numpy as np
import pytest
import torch

import bench.throughput
from bench.throughput import (
    DEFAULT,
    GpuUtilisation,
    main,
    parse_nvidia_smi,
    rates,
    system_overrides,
    system_ratios,
    targets,
    time_loop,
)

PATHS = {
    "corpus": "/c",
    "prep_folder": "/p",
    "out": "/o",
    "noise_csv": "/p/noise/noise_bank.csv",
    "rir_csv": "/p/rirs/rirs.csv",
}
CONFIG = dict(DEFAULT, seed=1, n_test_speakers=2, n_valid_speakers=2)
SETTINGS = ("fp32/memory", "fp32/loader", "bf16/memory", "bf16/loader")


def test_every_system_gets_the_same_batch_and_model():
    runs = {
        name: system_overrides(name, CONFIG, PATHS)
        for name in ("aam_softmax", "aamsupcon", "csc")
    }
    for key in (
        "batch_size",
        "sentence_len",
        "n_views",
        "channels",
        "emb_dim",
        "num_workers",
        "prep_folder",
        "seed",
    ):
        assert len({repr(run[key]) for run in runs.values()}) == 1, key
    pk = runs["aamsupcon"]
    assert (pk["n_speakers_per_batch"], pk["n_utts_per_speaker"]) == (32, 2)
    assert "n_speakers_per_batch" not in runs["csc"]
    assert runs["csc"]["output_folder"] == os.path.join("/o", "csc")


def test_bad_batch_and_system_are_named():
    with pytest.raises(
        ValueError, match="batch_size=5 .* n_utts_per_speaker=2"
    ):
        system_overrides("aamsupcon", dict(CONFIG, batch_size=5), PATHS)
    with pytest.raises(ValueError, match="'simclr'"):
        system_overrides("simclr", CONFIG, PATHS)


def test_main_needs_a_corpus_unless_quick(tmp_path):
    with pytest.raises(ValueError, match="--data_folder is required"):
        main(["--out", str(tmp_path / "t.json")])


def test_a_cnceleb_root_is_refused(corpus, tmp_path):
    # As speaker folders, eval/enroll and eval/test would be two speakers.
    with pytest.raises(ValueError, match="pass its data/ folder"):
        main(["--data_folder", corpus, "--out", str(tmp_path / "t.json")])


def test_no_recipe_code_is_loaded():
    """bench/ reaches recipe Python neither by path nor via sys.path."""
    with open(bench.throughput.__file__, encoding="utf-8") as fin:
        tree = ast.parse(fin.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
        elif isinstance(node, ast.Attribute):
            assert ast.unparse(node) != "sys.path"
            assert node.attr not in ("spec_from_file_location", "exec_module")
    assert not {name for name in imported if name.startswith("importlib")}
    assert {name.split(".")[0] for name in imported} <= {
        "argparse",
        "bench",
        "itertools",
        "os",
        "resource",
        "speechbrain",
        "speechbrain_ext",
        "statistics",
        "subprocess",
        "sys",
        "threading",
        "time",
        "torch",
    }


def test_rates_and_ratios_by_hand():
    # medians: fp32 0.4 / 0.5 s, bf16 0.2 / 0.4 s, loader alone 0.25 s
    runs = {
        "fp32/memory": rates([0.4, 0.3, 0.5], 8.0),
        "fp32/loader": rates([0.5, 0.5, 0.6], 8.0),
        "bf16/memory": rates([0.2, 0.2, 0.1], 8.0),
        "bf16/loader": rates([0.4, 0.3, 0.4], 8.0),
    }
    assert runs["fp32/memory"]["steps_per_second"] == pytest.approx(2.5)
    assert runs["fp32/memory"]["utterance_seconds_per_second"] == (
        pytest.approx(20.0)
    )
    ratios = system_ratios(runs, rates([0.25, 0.25], 8.0), "bf16")
    assert ratios["mixed_speedup"] == pytest.approx(
        {"memory": 2.0, "loader": 1.25}
    )
    assert ratios["loading_slowdown"] == pytest.approx(
        {"fp32": 1.25, "bf16": 2.0}
    )
    # loader 4 batches/s against 2.5 (fp32) and 5 (bf16) steps/s
    assert ratios["loader_headroom"] == pytest.approx(
        {"fp32": 1.6, "bf16": 0.8}
    )
    assert ratios["bound"] == {"fp32": "compute", "bf16": "loading"}


def test_targets_only_on_cuda():
    system = {
        "mixed_speedup": {"memory": 1.6, "loader": 1.5},
        "loader_headroom": {"fp32": 2.0, "fp16": 0.9},
    }
    report = {"config": {"device": "cuda:0"}, "systems": {"csc": system}}
    assert targets(report) == {
        "csc": {"mixed_at_least_1.5x": True, "loading_never_the_bound": False}
    }
    report["config"]["device"] = "cpu"
    assert targets(report) is None


def test_step_time_counts_waiting_for_data():
    def slow_batches():
        while True:
            time.sleep(0.05)
            yield None

    times = time_loop(lambda batch: None, slow_batches(), 3, 1, "cpu")
    assert len(times) == 3 and min(times) >= 0.05


def test_monitor_samples_the_timed_steps_only():
    events, steps = [], []

    class Monitor:
        def start(self):
            events.append(("start", len(steps)))

        def stop(self):
            events.append(("stop", len(steps)))

    time_loop(steps.append, iter(range(10)), 4, 2, "cpu", Monitor())
    assert events == [("start", 2), ("stop", 6)]


def test_gpu_sampler_summarises_its_readings(monkeypatch):
    monitor = GpuUtilisation("cpu", interval=0.001)
    readings = [30.0, 90.0, 60.0]

    def read(source):
        if len(monitor.samples) == len(readings) - 1:
            monitor._stop.set()  # the sampling loop ends after this one
        return readings[len(monitor.samples)]

    monitor.source = "nvml"
    monkeypatch.setattr(monitor, "_read", read)
    monitor.start()
    monitor._thread.join(timeout=10)
    monitor.stop()
    assert monitor.samples == readings
    assert monitor.summary() == {
        "mean": 60.0,
        "median": 60.0,
        "min": 30.0,
        "n": 3,
        "source": "nvml",
    }


def test_nvidia_smi_output_parsing():
    assert parse_nvidia_smi("87\n") == 87.0
    assert parse_nvidia_smi("87\n 5\n", index=1) == 5.0


@pytest.fixture(scope="module")
def quick_report(corpus, tmp_path_factory):
    """A --quick run on the generated corpus (three systems, CPU)."""
    out = tmp_path_factory.mktemp("throughput") / "throughput.json"
    threads = torch.get_num_threads()
    try:
        report = main(
            [
                "--quick",
                "--data_folder",
                os.path.join(corpus, "data"),
                "--out",
                str(out),
                "--threads",
                "1",
                "--steps",
                "2",
                "--warmup",
                "1",
            ]
        )
    finally:
        torch.set_num_threads(threads)  # --threads sets it process-wide
    return report, out


def test_quick_run_writes_its_report(quick_report):
    report, out = quick_report
    with open(out, encoding="utf-8") as fin:
        written = json.load(fin)
    assert written["systems"].keys() == {"aam_softmax", "aamsupcon", "csc"}
    assert written["command"].endswith(
        " ".join(["-m", "bench.throughput", "--quick", "--data_folder"])
        + " "
        + report["config"]["data_folder"]
        + " --out "
        + str(out)
        + " --threads 1 --steps 2 --warmup 1"
    )
    markdown = open(str(out).replace(".json", ".md"), encoding="utf-8").read()
    assert written["command"] in markdown and "| csc | bf16 |" in markdown
    assert written["targets"] is None  # CPU: the GPU targets do not apply
    assert written["config"]["mixed_precision"] == "bf16"
    batch = written["batch"]
    assert batch["utterance_seconds_per_step"] == pytest.approx(
        batch["clean_crops"] * batch["crop_seconds"]
    )


def test_quick_run_rates_are_positive_and_measured(quick_report):
    report, _ = quick_report
    per_step = report["batch"]["utterance_seconds_per_step"]
    for name, system in report["systems"].items():
        assert set(system["runs"]) == set(SETTINGS), name
        medians = {}
        for key, run in system["runs"].items():
            assert len(run["seconds"]) == 2 and min(run["seconds"]) > 0
            medians[key] = float(np.median(run["seconds"]))
            assert run["steps_per_second"] == pytest.approx(1 / medians[key])
            assert run["utterance_seconds_per_second"] == pytest.approx(
                per_step / medians[key]
            )
            assert run["gpu_utilisation"] is None
            assert run["peak_memory_mib"] > 0
            assert run["nonfinite_skipped"] == 0
        alone = float(np.median(system["loader_alone"]["seconds"]))
        assert alone > 0
        for loading in ("memory", "loader"):
            assert system["mixed_speedup"][loading] == pytest.approx(
                medians[f"fp32/{loading}"] / medians[f"bf16/{loading}"]
            )
        for precision in ("fp32", "bf16"):
            assert system["loading_slowdown"][precision] == pytest.approx(
                medians[f"{precision}/loader"] / medians[f"{precision}/memory"]
            )
            assert system["loader_headroom"][precision] == pytest.approx(
                medians[f"{precision}/memory"] / alone
            )


def test_quick_run_sizes_the_classifier_from_the_data(quick_report):
    report, _ = quick_report
    prep = os.path.join(
        os.path.dirname(report["systems"]["csc"]["overrides"]["output_folder"]),
        "prepared",
    )
    with open(os.path.join(prep, "train.csv"), encoding="utf-8") as fin:
        speakers = {row["spk_id"] for row in csv.DictReader(fin)}
    systems = report["systems"]
    assert len(speakers) > 1 and not speakers & {"enroll", "test", "data"}
    for system in systems.values():  # the corpus's speaker folders
        assert system["overrides"]["data_format"] == "folder"
        assert system["overrides"]["data_folder"].endswith(os.sep + "data")
    assert systems["aam_softmax"]["n_train_speakers"] == len(speakers)
    assert systems["aamsupcon"]["n_train_speakers"] == len(speakers)
    assert systems["csc"]["n_train_speakers"] is None  # no classifier
    views = report["batch"]["n_views"]
    assert {s["embedding_rows"] for s in systems.values()} == {
        report["batch"]["clean_crops"] * views
    }


def test_our_training_step_reads_the_device_once(quick_report):
    # The non-finite guard must decide on the host whether to step; every
    # other read of ours (label checks, monitors, bank padding) is gone.
    report, _ = quick_report
    for name, system in report["systems"].items():
        ours = {
            caller: count
            for caller, count in system["host_reads_per_step"][
                "by_caller"
            ].items()
            if caller.startswith("speechbrain_ext")
        }
        assert ours == {"speechbrain_ext.brain:check_loss_isfinite": 1.0}, (
            name,
            ours,
        )
