"""Every recipe YAML key is read, and every YAML loads without overrides.

SpeechBrain's CI checks each recipe's hparams against its script: a
top-level key must be referenced by another entry (``!ref <key>``) or read
by the script (``hparams["key"]``, ``hparams.get("key"``, ``hparams.key``,
``modules.key``), unless it is a run option or only applies a side effect
(``!apply``). A key that is read only indirectly (say through a key built
in a loop, or by a package function handed the whole dict) looks unused to
that checker, and a reader of the script cannot find where it goes either.
This module checks the same property for every YAML of the recipe, and that
each one loads with only ``data_folder`` given (SpeechBrain's pre-release
load check), so that neither regresses.
"""

import glob
import os
import re

import pytest
from hyperpyyaml import load_hyperpyyaml

from speechbrain.utils.run_opts import RunOptions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, "recipes", "CNCeleb")
SCRIPT = os.path.join(RECIPE, "train.py")
YAMLS = sorted(glob.glob(os.path.join(RECIPE, "hparams", "*.yaml")))
KEY_LINE = re.compile(r"^([A-Za-z_]\w*):")
REFERENCE = re.compile(r"<([A-Za-z_]\w*)")


def declared_keys(yaml_text):
    """Top-level keys that must be read somewhere.

    Arguments
    ---------
    yaml_text : str
        A hyperpyyaml file's text.

    Returns
    -------
    set
        Keys defined at column 0, without those that only run a side
        effect (``!apply``) or build a pretrainer (which reads its own
        entries), and without those another entry references.

    Example
    -------
    >>> sorted(declared_keys("a: 1\\nb: !ref <a>\\n__s: !apply:f [1]\\n"))
    ['b']
    """
    keys = set()
    for line in yaml_text.splitlines():
        match = KEY_LINE.match(line)
        if match and "!apply" not in line and "Pretrainer" not in line:
            keys.add(match.group(1))
    return keys - set(REFERENCE.findall(yaml_text))


def read_by_script(key, script_text):
    """Whether the script reads ``key`` in a form a reader can search for.

    Example
    -------
    >>> read_by_script("lr", 'x = hparams["lr"]')
    True
    >>> read_by_script("lr", "x = self.hparams.lr_final")
    False
    """
    forms = (
        rf'hparams\["{key}"\]',
        rf'hparams\.get\("{key}"',
        rf"hparams\.{key}\b",
        rf"modules\.{key}\b",
        rf'attr\(self\.hparams, "{key}"',
    )
    return any(re.search(form, script_text) for form in forms)


def unread_keys(yaml_file, script_file=SCRIPT):
    """Keys of ``yaml_file`` that neither the YAML nor the script reads."""
    with open(yaml_file, encoding="utf-8") as fin:
        keys = declared_keys(fin.read())
    with open(script_file, encoding="utf-8") as fin:
        script = fin.read()
    run_options = set(RunOptions().as_dict())
    return sorted(
        key for key in keys - run_options if not read_by_script(key, script)
    )


@pytest.mark.parametrize("yaml_file", YAMLS, ids=os.path.basename)
def test_every_key_is_read(yaml_file):
    assert unread_keys(yaml_file) == [], (
        f"{os.path.basename(yaml_file)} declares keys that train.py never "
        "reads by name"
    )


def test_an_unread_key_is_reported(tmp_path):
    """The check can fail: a key nothing reads is named."""
    yaml_file = tmp_path / "extra.yaml"
    with open(YAMLS[0], encoding="utf-8") as fin:
        text = fin.read()
    yaml_file.write_text(text + "\nforgotten_option: 3\n", encoding="utf-8")
    assert unread_keys(str(yaml_file)) == ["forgotten_option"]


def test_indirect_read_is_not_counted(tmp_path):
    """A key built in a loop (``hparams[key]``) does not count as read."""
    script = tmp_path / "train.py"
    script.write_text(
        'for key in ("prepare_noise",):\n    hparams[key]()\n',
        encoding="utf-8",
    )
    yaml_file = tmp_path / "h.yaml"
    yaml_file.write_text("prepare_noise: !name:f\n", encoding="utf-8")
    assert unread_keys(str(yaml_file), str(script)) == ["prepare_noise"]


@pytest.mark.parametrize("yaml_file", YAMLS, ids=os.path.basename)
def test_loads_with_only_the_data_folder(yaml_file, tmp_path):
    """No key but ``data_folder`` is a placeholder a user must fill in."""
    overrides = {
        "data_folder": str(tmp_path / "data"),
        "output_folder": str(tmp_path / "out"),
        "prep_folder": str(tmp_path / "prep"),
    }
    with open(yaml_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    assert hparams["data_folder"] == overrides["data_folder"]
