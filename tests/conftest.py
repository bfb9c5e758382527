"""Fixtures shared by several test modules."""

import pytest

from speechbrain_ext.data.demo_corpus import generate_demo_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A tiny generated corpus in CN-Celeb's layout (9 speakers)."""
    root = str(tmp_path_factory.mktemp("corpus") / "CN-Celeb_flac")
    generate_demo_corpus(
        root,
        n_train_speakers=6,
        n_eval_speakers=3,
        utts_per_speaker=8,
        n_test_per_eval_speaker=3,
        seed=7,
    )
    return root
