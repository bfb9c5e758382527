"""The built wheel carries what an installed package needs to export."""

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Not sources: a checkout's build/ keeps modules that were since moved or
# deleted, and setuptools would put them in the wheel.
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "results",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".bench_data",
    ".whl",
    "tmp",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel of the repository's sources, built offline.

    Built from a copy without build outputs, as on a fresh clone. A failed
    build fails the tests instead of skipping them: a package that cannot
    be built is the defect these tests exist to catch.
    """
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "repo"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                str(out),
                str(source),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    except subprocess.CalledProcessError as error:
        stderr = error.stderr.decode(errors="replace")
        pytest.fail(f"pip wheel failed (exit {error.returncode}):\n{stderr}")
    wheels = glob.glob(str(out / "*.whl"))
    if len(wheels) != 1:
        pytest.fail(f"pip wheel wrote {wheels} instead of one wheel")
    return wheels[0]


def test_wheel_ships_the_inference_template(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "speechbrain_ext/hparams/inference_ecapa.yaml" in names


def test_wheel_holds_every_module_of_the_package_and_no_other(wheel):
    """Every sub-package is found (none lacks an ``__init__.py``) and no
    module moved or deleted since an earlier build travels along."""
    shipped = {
        name
        for name in zipfile.ZipFile(wheel).namelist()
        if name.startswith("speechbrain_ext/") and name.endswith(".py")
    }
    package = os.path.join(REPO, "speechbrain_ext")
    sources = {
        os.path.relpath(path, REPO).replace(os.sep, "/")
        for path in glob.glob(
            os.path.join(package, "**", "*.py"), recursive=True
        )
    }
    assert shipped == sources


def test_installed_package_finds_its_template_without_the_repo(wheel, tmp_path):
    """Unpacked away from the checkout, default_template() still works."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import speechbrain_ext.inference.export as e; "
        "print(e.__file__); print(e.default_template())"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    module, template = result.stdout.split()
    assert module.startswith(str(site))
    assert template == str(
        site / "speechbrain_ext" / "hparams" / "inference_ecapa.yaml"
    )
