"""Scoring a trial list from precomputed embeddings, with no encoder.

``verify_trials`` is :func:`embed_trials` then :func:`score_trials`; these
tests score embeddings made by hand and check that ``verify_trials`` gives
the same scores as scoring the embeddings its encoder produces.
"""

import numpy as np
import pytest
import torch

from speechbrain_ext.data.audio import save_audio
from speechbrain_ext.evaluation.verification import embed_trials, verify_trials
from speechbrain_ext.scoring import TrialEmbeddings, score_trials
from speechbrain_ext.scoring.normalization import (
    score_normalize,
    speaker_cohort,
)

RNG = np.random.default_rng(0)
# Four speakers, D = 8: enrolment a has two files, b and c one each.
CENTRES = RNG.normal(size=(4, 8))


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _near(speaker, n=1, spread=0.3):
    return CENTRES[speaker] + spread * RNG.normal(size=(n, 8))


ENROL_IDS = ["a", "a", "b", "c"]
ENROL = np.concatenate([_near(0, 2), _near(1), _near(2)])
TEST_IDS = ["t_a", "t_b", "t_c", "t_d"]
TEST = np.concatenate([_near(0), _near(1), _near(2), _near(3)])
TRIALS = [
    (enrol, test, int(enrol == test[-1]))
    for enrol in "abc"
    for test in TEST_IDS
]
COHORT_SPEAKERS = [s for s in ("p", "q", "r", "s", "u") for _ in range(3)]
COHORT = RNG.normal(size=(15, 8))


def _embeddings(with_cohort=False):
    extra = {}
    if with_cohort:
        extra = {"cohort_speakers": COHORT_SPEAKERS, "cohort": COHORT}
    return TrialEmbeddings(ENROL_IDS, ENROL, TEST_IDS, TEST, **extra)


def test_scores_precomputed_embeddings_by_cosine():
    """Multi-file enrolments average unit-norm embeddings; the scores are
    cosines, in trial order."""
    result = score_trials(TRIALS, _embeddings())
    enrol = {
        "a": _unit(_unit(ENROL[:2]).mean(0)),
        "b": _unit(ENROL[2]),
        "c": _unit(ENROL[3]),
    }
    test = dict(zip(TEST_IDS, _unit(TEST)))
    expected = [float(enrol[e] @ test[t]) for e, t, _ in TRIALS]
    np.testing.assert_allclose(result["scores"], expected, atol=1e-12)
    assert result["labels"].tolist() == [bool(t[2]) for t in TRIALS]
    assert result["n_trials"] == 12 and result["n_target"] == 3
    assert result["trials"] is TRIALS
    assert result["EER"] == 0.0  # the speakers are well apart


def test_score_norm_uses_the_speaker_averaged_cohort():
    result = score_trials(
        TRIALS, _embeddings(with_cohort=True), score_norm="s-norm"
    )
    plain = score_trials(TRIALS, _embeddings())
    cohort = speaker_cohort(_unit(COHORT), COHORT_SPEAKERS)
    enrol_emb = np.stack(
        [_unit(ENROL[:2]).mean(0), _unit(ENROL[2]), _unit(ENROL[3])]
    )
    enrol_idx = np.array(["abc".index(t[0]) for t in TRIALS])
    test_idx = np.array([TEST_IDS.index(t[1]) for t in TRIALS])
    expected = score_normalize(
        plain["scores"],
        enrol_idx,
        test_idx,
        _unit(enrol_emb),
        _unit(TEST),
        cohort,
        method="s-norm",
    )
    np.testing.assert_allclose(result["scores"], expected, atol=1e-12)


@pytest.mark.parametrize(
    "options", [{"score_norm": "z-norm"}, {"mean_norm": True}]
)
def test_cohort_options_without_a_cohort_are_refused(options):
    with pytest.raises(ValueError, match="need a cohort"):
        score_trials(TRIALS, _embeddings(), **options)


def test_rows_and_ids_must_agree():
    embeddings = TrialEmbeddings(ENROL_IDS, ENROL[:3], TEST_IDS, TEST)
    with pytest.raises(ValueError, match=r"enrolment embeddings must be"):
        score_trials(TRIALS, embeddings)


def test_unknown_trial_id_is_named():
    with pytest.raises(ValueError, match="'t_x'"):
        score_trials([("a", "t_x", 1)], _embeddings())


class TableEncoder:
    """Stands in for EncoderClassifier: file k (a constant k / 100 signal)
    embeds as row k of a table."""

    device = "cpu"

    def __init__(self, table):
        self.table = torch.as_tensor(table, dtype=torch.float32)

    def encode_batch(self, wavs, wav_lens):
        index = torch.round(wavs[:, 0] * 100).long()
        return self.table[index].unsqueeze(1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Enrolment, test and cohort rows over files that TableEncoder embeds
    as ENROL, TEST and COHORT."""
    folder = tmp_path_factory.mktemp("table_corpus")
    table = np.concatenate([ENROL, TEST, COHORT]).astype(np.float32)
    paths = []
    for k in range(len(table)):
        path = str(folder / f"f{k}.wav")
        save_audio(path, torch.full((1600,), k / 100), 16000, "FLOAT")
        paths.append(path)
    enrol = [
        {"ID": f"e{k}", "wav": paths[k], "enrol_id": ENROL_IDS[k]}
        for k in range(4)
    ]
    test = [{"ID": TEST_IDS[k], "wav": paths[4 + k]} for k in range(len(TEST))]
    cohort = [
        {"ID": f"c{k}", "wav": paths[8 + k], "spk_id": COHORT_SPEAKERS[k]}
        for k in range(len(COHORT))
    ]
    return TableEncoder(table), enrol, test, cohort


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"score_norm": "s-norm"},
        {"score_norm": "as-norm", "top_n": 2, "mean_norm": True},
    ],
)
def test_verify_trials_is_embedding_then_scoring(corpus, options):
    encoder, enrol, test, cohort = corpus
    embeddings = embed_trials(encoder, enrol, test, cohort=cohort)
    np.testing.assert_allclose(embeddings.enrol, ENROL, rtol=1e-6)
    np.testing.assert_allclose(embeddings.cohort, COHORT, rtol=1e-6)
    assert embeddings.test_ids == TEST_IDS
    verified = verify_trials(
        encoder, enrol, test, TRIALS, cohort=cohort, **options
    )
    scored = score_trials(TRIALS, embeddings, **options)
    np.testing.assert_array_equal(verified["scores"], scored["scores"])
    assert verified["EER"] == scored["EER"]
    assert verified["minDCF"] == scored["minDCF"]


def test_missing_cohort_is_refused_before_embedding(corpus):
    class Unused:
        device = "cpu"

        def encode_batch(self, wavs, wav_lens):
            raise AssertionError("embedded before checking the options")

    _, enrol, test, _ = corpus
    with pytest.raises(ValueError, match="need a cohort"):
        verify_trials(Unused(), enrol, test, TRIALS, score_norm="t-norm")
