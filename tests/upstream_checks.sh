#!/usr/bin/env bash
# SpeechBrain's own PR checks on the CNCeleb recipe, as they would run on a
# contribution: a scratch tree holds SpeechBrain's tests/, templates/ and root
# config
# (from a checkout of its develop branch) with recipes/CNCeleb/ and
# tests/recipes/CNCeleb.csv copied in unchanged; the installed speechbrain
# and speechbrain_ext are the ones imported.
#
#   bash tests/upstream_checks.sh /path/to/speechbrain [scratch_folder]
#
# Runs, in the scratch tree: pytest tests/consistency; SpeechBrain's YAML
# load check and recipe runner (every CNCeleb row, with its file checks) on
# the tiny generated corpus the rows' flags name; ruff check and ruff
# format --check of the recipe with SpeechBrain's settings. Exits non-zero
# on the first failure.
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1/tests/utils" ]; then
    echo "usage: $0 <speechbrain checkout> [scratch folder]" >&2
    exit 2
fi
UPSTREAM=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${2:-$(mktemp -d -t sb_upstream.XXXXXX)}
PYTHON=${PYTHON:-python}
RUFF=${RUFF:-ruff}
# SpeechBrain's runner starts recipes with the `python` on PATH.
PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"
export PATH

mkdir -p "$SCRATCH/recipes"
rm -rf "$SCRATCH/tests" "$SCRATCH/templates" "$SCRATCH/recipes/CNCeleb"
cp -r "$UPSTREAM/tests" "$SCRATCH/tests"
# tests/templates links into the top-level templates/ folder.
cp -r "$UPSTREAM/templates" "$SCRATCH/templates"
for file in pytest.ini pyproject.toml conftest.py .yamllint.yaml; do
    cp "$UPSTREAM/$file" "$SCRATCH/"
done
# Only this recipe is in the tree, so only its table is listed.
find "$SCRATCH/tests/recipes" -name '*.csv' -delete
cp "$REPO/tests/recipes/CNCeleb.csv" "$SCRATCH/tests/recipes/"
cp -r "$REPO/recipes/CNCeleb" "$SCRATCH/recipes/CNCeleb"
find "$SCRATCH/recipes/CNCeleb" -name __pycache__ -prune -exec rm -rf {} +
cd "$SCRATCH"
echo "== scratch tree: $SCRATCH"

echo "== pytest tests/consistency"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/consistency

echo "== tiny corpus for the recipe rows (tests/tmp/CNCeleb)"
"$PYTHON" - <<EOF
import sys
sys.path.insert(0, "$REPO/tests")
from recipe_helpers import TINY_CORPUS
from speechbrain_ext.data.demo_corpus import generate_demo_corpus
generate_demo_corpus("tests/tmp/CNCeleb/CN-Celeb_flac", **TINY_CORPUS)
EOF

echo "== load_yaml_test (CNCeleb)"
"$PYTHON" -c 'import sys
from tests.utils.recipe_tests import load_yaml_test
sys.exit(0 if load_yaml_test(filters_fields=["Dataset"],
                             filters=[["CNCeleb"]]) else 1)'

echo "== run_recipe_tests (CNCeleb rows, with checks)"
"$PYTHON" -c 'import sys
from tests.utils.recipe_tests import run_recipe_tests
sys.exit(0 if run_recipe_tests(filters_fields=["Dataset"],
                               filters=[["CNCeleb"]], do_checks=True,
                               run_opts="--device=cpu") else 1)'

echo "== ruff with SpeechBrain's settings"
"$RUFF" check recipes/CNCeleb
"$RUFF" format --check recipes/CNCeleb
echo "== all upstream checks passed"
