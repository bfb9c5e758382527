"""Runs the recipe table tests/recipes/CNCeleb.csv as SpeechBrain runs it.

SpeechBrain lists its recipes in ``tests/recipes/<Dataset>.csv``, and
``tests/utils/recipe_tests.py`` runs every row from the repository root as

    python <Script_file> <Hparam_file> <test_debug_flags> --device=cpu
        --output_folder=tests/tmp/<Dataset>_row_<NN>

(NN: the row's line in the CSV, unless the flags name an output folder),
then checks that the files of ``file_exists=[...]`` in
``test_debug_checks`` exist in that folder. This module does the same for
the CNCeleb rows, in table order, after generating the tiny corpus where
the rows' flags expect it, and checks that the table lists every hparams
file of the recipe, so a new YAML without a row fails here.
"""

import csv
import glob
import math
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from recipe_helpers import TINY_CORPUS  # noqa: E402

from speechbrain_ext.data.demo_corpus import generate_demo_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join("tests", "recipes", "CNCeleb.csv")
HPARAMS = os.path.join("recipes", "CNCeleb", "hparams")
HEADER = [
    "Task",
    "Dataset",
    "Script_file",
    "Hparam_file",
    "Data_prep_file",
    "Readme_file",
    "Result_url",
    "HF_repo",
    "test_debug_flags",
    "test_debug_checks",
]
# SpeechBrain's default output root, and the part of it the rows' data
# (corpus and prepared manifests) must stay in.
TMP = os.path.join("tests", "tmp")
DATA_ROOT = os.path.join(TMP, "CNCeleb")
ROW_TIMEOUT_S = 600


def read_table():
    """The table's rows, each with SpeechBrain's ``recipe_id`` added."""
    with open(os.path.join(REPO, TABLE), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, skipinitialspace=True))
    dataset = os.path.splitext(os.path.basename(TABLE))[0]
    for line, row in enumerate(rows, start=2):
        row["recipe_id"] = f"{dataset}_row_{line:02d}"
    return rows


def flag_values(row):
    """``--name=value`` flags of a row as a dict (shell quoting removed)."""
    values = {}
    for word in shlex.split(row["test_debug_flags"]):
        name, _, value = word.partition("=")
        values[name.lstrip("-")] = value
    return values


def output_folder(row):
    """Where SpeechBrain's runner puts the row's output (repo-relative)."""
    given = flag_values(row).get("output_folder")
    return given or os.path.join(TMP, row["recipe_id"])


def expected_files(row):
    """The ``file_exists=[...]`` list of a row's ``test_debug_checks``."""
    checks = row["test_debug_checks"].strip()
    match = re.fullmatch(r"file_exists=\[(.*?)\]", checks)
    if match is None:
        raise ValueError(
            f"{TABLE}, {row['recipe_id']}: test_debug_checks must be "
            f"file_exists=[...] (the only check this test applies), got "
            f"{checks!r}"
        )
    return match.group(1).split(",")


def dependencies(row, rows):
    """Other rows whose output folder the row's flags name: they run first."""
    return [
        other
        for other in rows
        if other is not row and output_folder(other) in row["test_debug_flags"]
    ]


def yaml_name(row):
    """The row's hparams file name without folder and extension."""
    return os.path.splitext(os.path.basename(row["Hparam_file"]))[0]


ROWS = read_table()


def remove_outputs():
    """Deletes the corpus, the manifests and every row's output folder."""
    for folder in [DATA_ROOT] + [output_folder(row) for row in ROWS]:
        shutil.rmtree(os.path.join(REPO, folder), ignore_errors=True)
    tmp = os.path.join(REPO, TMP)
    if os.path.isdir(tmp) and not os.listdir(tmp):
        os.rmdir(tmp)


@pytest.fixture(scope="module")
def run_row():
    """Runs rows like SpeechBrain's runner, each once, dependencies first.

    The tiny corpus is generated at the rows' ``--data_folder`` first. Old
    outputs are deleted before (stale files would pass ``file_exists``)
    and after the module.
    """
    data_folders = {flag_values(row)["data_folder"] for row in ROWS}
    assert len(data_folders) == 1, f"rows disagree on data: {data_folders}"
    remove_outputs()
    generate_demo_corpus(os.path.join(REPO, data_folders.pop()), **TINY_CORPUS)
    finished = {}

    def run(row):
        if row["recipe_id"] not in finished:
            for earlier in dependencies(row, ROWS):
                if run(earlier) != 0:
                    pytest.fail(
                        f"{row['recipe_id']} ({row['Hparam_file']}) needs "
                        f"the output of {earlier['recipe_id']}, which failed"
                    )
            finished[row["recipe_id"]] = run_like_speechbrain(row)
        return finished[row["recipe_id"]]

    yield run
    remove_outputs()


def run_like_speechbrain(row):
    """Runs one row from the repository root; returns its exit status.

    The command is that of SpeechBrain's ``run_recipe_tests`` with its
    default ``run_opts`` (``--device=cpu``); stdout and stderr go to
    ``stdout.txt`` / ``stderr.txt`` in the output folder, as there.
    """
    out = output_folder(row)
    os.makedirs(os.path.join(REPO, out), exist_ok=True)
    command = [
        sys.executable,
        row["Script_file"],
        row["Hparam_file"],
        *shlex.split(row["test_debug_flags"]),
        "--device=cpu",
    ]
    if "output_folder" not in flag_values(row):
        command.append(f"--output_folder={out}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, os.path.dirname(row["Script_file"]))
    # The tiny model gains nothing from threads; on a shared machine they
    # only slow every row down.
    env.setdefault("OMP_NUM_THREADS", "1")
    with open(os.path.join(REPO, out, "stdout.txt"), "w") as stdout, open(
        os.path.join(REPO, out, "stderr.txt"), "w"
    ) as stderr:
        process = subprocess.run(
            command,
            cwd=REPO,
            env=env,
            stdout=stdout,
            stderr=stderr,
            timeout=ROW_TIMEOUT_S,
        )
    return process.returncode


def tail(path, n_chars=3000):
    """The end of a text file, for failure messages."""
    with open(path, encoding="utf-8", errors="replace") as fin:
        return fin.read()[-n_chars:]


def test_header_is_speechbrains():
    with open(os.path.join(REPO, TABLE), newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == HEADER


def test_every_hparams_file_has_a_row():
    listed = [row["Hparam_file"] for row in ROWS]
    on_disk = sorted(
        os.path.relpath(path, REPO)
        for path in glob.glob(os.path.join(REPO, HPARAMS, "*.yaml"))
    )
    assert on_disk, f"no hparams files found in {HPARAMS}"
    missing = sorted(set(on_disk) - set(listed))
    assert not missing, f"{TABLE} has no row for {missing}"
    assert sorted(listed) == on_disk, f"{TABLE} lists {listed}"


@pytest.mark.parametrize("row", ROWS, ids=yaml_name)
def test_row_points_at_files_and_writes_under_tests_tmp(row):
    where = f"{TABLE}, {row['recipe_id']}"
    for field in ("Script_file", "Hparam_file", "Data_prep_file"):
        assert os.path.isfile(os.path.join(REPO, row[field])), (
            f"{where}: {field} {row[field]} does not exist"
        )
    flags = flag_values(row)
    for name in ("data_folder", "prep_folder"):
        # Elsewhere, a run from the repository root would write into the
        # checkout (the YAMLs' default prep_folder is results/prepared).
        folder = os.path.normpath(flags.get(name, "."))
        assert folder.startswith(DATA_ROOT + os.sep), (
            f"{where}: --{name} must lie in {DATA_ROOT}, got {flags.get(name)}"
        )
    assert expected_files(row), f"{where}: no file_exists check"
    later = ROWS[ROWS.index(row) + 1 :]
    assert not any(other in later for other in dependencies(row, ROWS)), (
        f"{where} uses the output of a later row"
    )


@pytest.mark.parametrize("row", ROWS, ids=yaml_name)
def test_row_runs_and_writes_its_files(row, run_row):
    out = os.path.join(REPO, output_folder(row))
    status = run_row(row)
    assert status == 0, (
        f"{row['recipe_id']} ({row['Hparam_file']}) exited with {status}; "
        f"see {out}/stderr.txt:\n{tail(os.path.join(out, 'stderr.txt'))}"
    )
    missing = [
        name
        for name in expected_files(row)
        if not os.path.exists(os.path.join(out, name))
    ]
    assert not missing, (
        f"{row['recipe_id']} ({row['Hparam_file']}) did not write {missing} "
        f"in {out}"
    )
    # Beyond SpeechBrain's checks: no batch was skipped as NaN/inf, which
    # matters most for the rows trained with --precision=bf16.
    with open(os.path.join(out, "train_log.txt"), encoding="utf-8") as fin:
        log = fin.read()
    assert "nonfinite_skipped" not in log, log
    losses = re.findall(r"train loss: (\S+?)(?:,| -)", log)
    assert losses and all(math.isfinite(float(v)) for v in losses), log
