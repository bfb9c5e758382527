"""The CSC benchmark compares its systems at the same budget, as a user runs them.

Each labelled system of ``bench/csc.py`` is built from its recipe YAML with
the benchmark's overrides, and one training batch is run through its task:
the auxiliary CSC system must train on exactly the utterances per step,
steps per epoch, epochs and crop of the AAM-softmax recipe, and its speaker
objective must see the recipe's own views (a clean crop and an augmented
copy), not only interfered segments.
"""

import argparse
import os

import pytest
import torch

from bench.csc import (
    ABLATIONS,
    CSC_HEAD,
    DEFAULT,
    STEP_TIME_SYSTEMS,
    main,
    system_plan,
)
from bench.runs import OBJECTIVES, load_recipe_hparams, train_overrides
from speechbrain_ext.augment import generate_noise_bank, simulate_rirs

ARGS = argparse.Namespace(ssl_epochs=3, finetune_epochs=1)
LABELLED = (
    "aam_softmax",
    "aam_softmax_mixup",
    "aam_softmax_csc",
    "aam_softmax_same_views",
    *ABLATIONS,
)
N_TRAIN = 1000  # training utterances of an imaginary corpus


class RecordingObjective(torch.nn.Module):
    """Stands in for the speaker objective: keeps its rows."""

    def forward(self, embeddings, labels, **mixing):
        self.rows = len(embeddings)
        self.labels = labels
        return embeddings.sum() * 0.0


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("banks")
    return {
        "noise_csv": generate_noise_bank(
            str(folder / "noise"), n_files=2, duration=1.0
        ),
        "rir_csv": simulate_rirs(str(folder / "rirs"), n_rirs=2),
        "folder": str(folder),
    }


def build(system, banks):
    """The system's hparams as the benchmark trains it (model kept small)."""
    objective, epochs, extra = system_plan(system, 1, ARGS, "out", CSC_HEAD)
    paths = {
        "corpus": banks["folder"],
        "prep_folder": banks["folder"],
        "output_folder": os.path.join(banks["folder"], system),
        "noise_csv": banks["noise_csv"],
        "rir_csv": banks["rir_csv"],
    }
    config = dict(
        DEFAULT,
        epochs=epochs,
        channels=[16, 16, 16, 16, 48],
        attention_channels=8,
        emb_dim=16,
    )
    overrides = train_overrides(objective, extra, config, 1, paths)
    overrides["n_train_speakers"] = 8
    return load_recipe_hparams(OBJECTIVES[objective][0], overrides)


def speaker_views(task):
    """What makes the speaker objective's views, as comparable settings."""
    views = getattr(task, "speaker_views", None)
    if views is None:
        views = task.views
    return (
        type(views).__name__,
        getattr(views, "concat_original", None),
        getattr(views, "repeat_augment", None),
        getattr(views, "min_augmentations", None),
        getattr(views, "max_augmentations", None),
        [type(a).__name__ for a in getattr(views, "augmentations", {}).values()]
        if hasattr(views, "augmentations")
        else None,
    )


def speaker_rows(hparams, batch_size):
    """Rows the speaker objective sees for one training batch."""
    torch.manual_seed(0)
    modules = torch.nn.ModuleDict(hparams["modules"])
    modules["objective"] = RecordingObjective()
    crop = int(hparams["sentence_len"] * hparams["sample_rate"])
    wavs = 0.1 * torch.randn(batch_size, crop)
    labels = torch.arange(batch_size) % 8
    task = hparams["task"]
    outputs = task.forward(modules, wavs, torch.ones(batch_size))
    task.loss(modules, outputs, labels)
    return modules["objective"].rows


def test_labelled_systems_share_the_recipes_budget(banks):
    budgets = {}
    for system in LABELLED:
        hparams = build(system, banks)
        loader = hparams["train_dataloader_opts"]
        assert hparams.get("train_sampler") is None  # shuffled batches
        assert loader["drop_last"] and loader["shuffle"]
        budgets[system] = {
            "utterances_per_step": loader["batch_size"],
            "steps_per_epoch": N_TRAIN // loader["batch_size"],
            "epochs": hparams["number_of_epochs"],
            "crop": hparams["sentence_len"],
            "speaker_rows": speaker_rows(hparams, loader["batch_size"]),
            "speaker_views": speaker_views(hparams["task"]),
        }
    recipe = budgets["aam_softmax"]
    assert recipe["utterances_per_step"] == DEFAULT["embeddings_per_view"]
    assert recipe["epochs"] == ARGS.ssl_epochs + ARGS.finetune_epochs
    # The recipe's views: the clean crop and one augmented copy.
    assert recipe["speaker_rows"] == 2 * recipe["utterances_per_step"]
    for system, budget in budgets.items():
        for key in ("utterances_per_step", "steps_per_epoch", "epochs", "crop"):
            assert budget[key] == recipe[key], (system, key)
        if system != "aam_softmax_same_views":
            # CSC is added on top: the speaker objective keeps the recipe's
            # clean and augmented views.
            assert budget["speaker_rows"] == recipe["speaker_rows"], system
            assert budget["speaker_views"] == recipe["speaker_views"], system
    # The ablation that never shows AAM-softmax a clean view: its rows are
    # the 2 interfered segments of each crop.
    same = budgets["aam_softmax_same_views"]
    assert same["speaker_rows"] == 2 * same["utterances_per_step"]
    assert same["speaker_views"][0] == "InterferedViews"
    assert recipe["speaker_views"][:2] == ("Augmenter", True)


def test_ablations_switch_off_what_they_name(banks):
    full = build("aam_softmax_csc", banks)["csc_objective"]
    separation = build("aam_softmax_csc_separation", banks)["csc_objective"]
    information = build("aam_softmax_csc_information", banks)["csc_objective"]
    assert full.information_weight > 0 and full.beta > 0
    assert full.variance_weight > 0 and full.covariance_weight > 0
    assert separation.beta == full.beta
    assert separation.information_weight == 0
    assert separation.variance_weight == separation.covariance_weight == 0
    assert information.beta == 0
    assert information.information_weight == full.information_weight
    same = build("aam_softmax_same_views", banks)["task"]
    assert same.csc_weight == 0 and same.speaker_views is None


def test_step_time_times_every_system_in_turns(tmp_path):
    out = tmp_path / "step_time.json"
    report = main(["--step_time", str(out), "--rounds", "2", "--warmup", "0"])
    assert list(report["summary"]) == list(STEP_TIME_SYSTEMS)
    for row in report["summary"].values():
        assert row["n"] == 2 and 0 < row["min"] <= row["max"]
    assert report["summary"]["aam_softmax"]["ratio_to_aam_softmax"] == 1.0
    assert report["config"]["budget"]["embeddings_per_view"] == 32
    assert report["command"].startswith("python -m bench.csc --step_time")
    assert "| aam_softmax_csc |" in report["table"]
