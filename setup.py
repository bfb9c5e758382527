"""Installs speechbrain_ext: AAM-SupCon, CSC and CN-Celeb tools for SpeechBrain."""

import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="speechbrain_ext",
    version="0.1.0",
    description=(
        "Speaker-verification extensions for SpeechBrain: AAM-SupCon, "
        "contrastive separative coding, P x K sampling, scalable scoring "
        "and a CN-Celeb recipe"
    ),
    long_description=long_description,
    long_description_content_type="text/markdown",
    # The inference templates are kept in the top-level hparams/ folder
    # (YAML shared across recipes) and ship inside the package as
    # speechbrain_ext/hparams/, so an installed package exports without the
    # repository.
    packages=find_packages(include=["speechbrain_ext", "speechbrain_ext.*"])
    + ["speechbrain_ext.hparams"],
    package_dir={"speechbrain_ext.hparams": "hparams"},
    package_data={"speechbrain_ext.hparams": ["*.yaml"]},
    python_requires=">=3.9",
    # torch is capped because newer releases than the tested one pull
    # multi-GB CUDA wheels and break torchaudio's ABI pairing.
    install_requires=[
        "torch>=2.7.1,<=2.14.1",
        "torchaudio>=2.7.1,<=2.11.0",
        "speechbrain>=1.1.0,<1.2",
        "soundfile>=0.12",
        "numpy>=1.24",
        "scipy>=1.10",
        "pyroomacoustics>=0.7",
        "matplotlib>=3.7",
        "hyperpyyaml>=1.2",
        "tqdm>=4.60",
    ],
    extras_require={
        "dev": ["pytest>=7", "ruff==0.12.4", "yamllint>=1.30"],
        "bench": ["resemblyzer==0.1.4"],
        # ONNX export (onnx, onnxscript) and the ONNX Runtime backend of
        # speechbrain_ext.inference.onnx_backend / verify.py --backend onnx.
        "onnx": ["onnx>=1.17", "onnxruntime>=1.20", "onnxscript>=0.5"],
    },
    license="Apache-2.0",
)
