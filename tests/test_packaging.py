"""The built wheel carries what an installed package needs to export."""

import glob
import os
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel of the repository, built offline.

    A failed build fails the tests instead of skipping them: a package
    that cannot be built is the defect these tests exist to catch.
    """
    out = tmp_path_factory.mktemp("wheel")
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
                REPO,
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
