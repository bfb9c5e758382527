"""Fixtures shared by several test modules."""

import pytest
from recipe_helpers import TINY_CORPUS

from speechbrain_ext.data.demo_corpus import generate_demo_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A tiny generated corpus in CN-Celeb's layout (9 speakers)."""
    root = str(tmp_path_factory.mktemp("corpus") / "CN-Celeb_flac")
    generate_demo_corpus(root, **TINY_CORPUS)
    return root
