"""End-to-end speaker verification of a trial list with an exported model.

Reads SpeechBrain CSV manifests (as written by the CN-Celeb preparation);
:func:`embed_trials` embeds enrolment, test and cohort audio with
:class:`EmbeddingExtractor`, and
:func:`~speechbrain_ext.scoring.trial_scoring.score_trials` averages
multi-utterance enrolments, scores trials by cosine (optionally after mean
subtraction and z/t/s/AS-norm against a speaker-averaged cohort) and reports
EER and minDCF. :func:`verify_trials` does both.

A ``test_transform`` (e.g. a
:class:`speechbrain_ext.evaluation.robustness.Corruptor`) corrupts the test
side only, for robustness evaluation; enrolment and cohort audio stay
clean, even where a test file is also an enrolment file.

Enrolment rows carry an ``enrol_id`` column: one row per enrolment for
CN-Celeb's "Concat" mode (the concatenated enrolment file), several rows per
enrolment for "Avg" mode and for users' multi-utterance enrolment; their
embeddings are L2-normalised and averaged.

Example
-------
>>> import torch
>>> from speechbrain_ext.data.audio import save_audio
>>> tmpdir = getfixture("tmpdir")
>>> rows = []
>>> for uid in ["a1", "a2", "b1"]:
...     path = str(tmpdir / f"{uid}.wav")
...     tone = torch.sin(torch.arange(8000) * (0.05 if uid[0] == "a" else 0.3))
...     save_audio(path, tone, 16000)
...     rows.append({"ID": uid, "wav": path, "enrol_id": uid})
>>> class SpectrumEncoder:  # stands in for EncoderClassifier
...     device = "cpu"
...
...     def encode_batch(self, wavs, wav_lens):
...         return torch.fft.rfft(wavs).abs()[:, None, :64]
>>> result = verify_trials(
...     SpectrumEncoder(),
...     rows,
...     rows,
...     [("a1", "a2", 1), ("a1", "b1", 0), ("a2", "b1", 0)],
... )
>>> result["EER"], result["n_trials"]
(0.0, 3)
"""

import json
import logging
import os
import random
import zlib

import numpy as np

from speechbrain_ext.data.manifest import split_wav_paths
from speechbrain_ext.inference.extraction import (
    EmbeddingExtractor,
    describe_transform,
)
from speechbrain_ext.scoring.trial_scoring import (
    TrialEmbeddings,
    check_cohort,
    score_trials,
)
from speechbrain_ext.scoring.trials import read_trials

__all__ = [
    "cohort_rows",
    "embed_trials",
    "read_trial_file",
    "verify_trials",
    "write_report",
]

logger = logging.getLogger(__name__)


def read_trial_file(path):
    """Reads trials from a ``trials.csv`` (enrol_id,test_id,label) or list.

    Arguments
    ---------
    path : str
        The prepared CSV, or any list :func:`read_trials` understands (such as
        CN-Celeb's ``trials.lst``).

    Returns
    -------
    list of tuple
        ``(enrol_id, test_id, label)``.
    """
    return read_trials(path)


def cohort_rows(train_rows, per_speaker=3, seed=1234):
    """Picks a few training utterances per speaker for a score cohort.

    Arguments
    ---------
    train_rows : list of dict
        Training manifest rows with ``spk_id`` and ``wav``.
    per_speaker : int
        Utterances kept per speaker.
    seed : int
        Makes the choice reproducible.

    Returns
    -------
    list of dict
        The chosen rows (joined rows keep their first file only).
    """
    by_speaker = {}
    for row in train_rows:
        by_speaker.setdefault(row["spk_id"], []).append(row)
    rng = random.Random(seed)
    chosen = []
    for speaker in sorted(by_speaker):
        rows = by_speaker[speaker]
        for row in rng.sample(rows, min(per_speaker, len(rows))):
            # One file of a joined item: the cohort embeds files.
            chosen.append({**row, "wav": split_wav_paths(row["wav"])[0]})
    return chosen


def _embed_rows(extractor, rows, cache_folder, desc):
    """Embeds manifest rows, one embedding per distinct audio file."""
    items = {row["wav"]: row["wav"] for row in rows}
    folder = os.path.join(cache_folder, desc) if cache_folder else None
    paths, emb = extractor(list(items.items()), folder, desc=desc)
    return dict(zip(paths, emb))


def _embed_transformed_tests(extractor, test_rows, cache_folder):
    """Embeds test rows through the extractor's transform, by row ID.

    The transform gets the row ID, not the path, so that what it does to an
    utterance does not depend on where the corpus is stored. The cache
    subfolder is named after the transform (its ``name``, e.g. ``sir5``)
    and a checksum of its description, so another seed or interferer list
    gets its own folder.
    """
    name = getattr(extractor.transform, "name", "transformed")
    description = describe_transform(extractor.transform)
    folder = None
    if cache_folder is not None:
        checksum = zlib.crc32(description.encode("utf-8"))
        folder = os.path.join(cache_folder, f"test-{name}-{checksum:08x}")
    items = [(row["ID"], row["wav"]) for row in test_rows]
    _, emb = extractor(items, folder, desc=f"test {name}")
    return emb


def embed_trials(
    encoder,
    enrol_rows,
    test_rows,
    cohort=None,
    cache_folder=None,
    test_transform=None,
    **extractor_options,
):
    """Embeds the enrolment, test and cohort audio of a trial list.

    Arguments
    ---------
    encoder : object
        Has ``encode_batch(wavs, wav_lens)`` and ``device`` (e.g.
        ``EncoderClassifier``).
    enrol_rows : list of dict
        Enrolment rows with ``wav`` and ``enrol_id`` (see module docstring).
    test_rows : list of dict
        Test rows with ``ID`` and ``wav``.
    cohort : list of dict, optional
        Training rows with ``spk_id`` (see :func:`cohort_rows`), embedded
        when given.
    cache_folder : str, optional
        Keeps embeddings so an interrupted run resumes.
    test_transform : callable, optional
        ``test_transform(test_id, wav) -> wav`` applied to test audio only
        (see :func:`verify_trials`).
    **extractor_options
        ``batch_size``, ``num_workers``, ``max_batch_seconds``: passed to
        :class:`EmbeddingExtractor`.

    Returns
    -------
    TrialEmbeddings
        One row per enrolment row (an audio file embedded once however many
        rows name it), per test row and per cohort row, for
        :func:`~speechbrain_ext.scoring.trial_scoring.score_trials`.
    """
    extractor = EmbeddingExtractor(encoder, **extractor_options)
    if test_transform is None:
        emb_of = _embed_rows(
            extractor, enrol_rows + test_rows, cache_folder, "eval"
        )
        test_emb = np.stack([emb_of[row["wav"]] for row in test_rows])
    else:
        # Same folder as the clean run: enrolment embeddings are reused.
        emb_of = _embed_rows(extractor, enrol_rows, cache_folder, "eval")
        test_emb = _embed_transformed_tests(
            EmbeddingExtractor(
                encoder, transform=test_transform, **extractor_options
            ),
            test_rows,
            cache_folder,
        )
    embeddings = TrialEmbeddings(
        enrol_ids=[row["enrol_id"] for row in enrol_rows],
        enrol=np.stack([emb_of[row["wav"]] for row in enrol_rows]),
        test_ids=[row["ID"] for row in test_rows],
        test=test_emb,
    )
    if cohort:
        cohort_of = _embed_rows(extractor, cohort, cache_folder, "cohort")
        embeddings.cohort_speakers = [row["spk_id"] for row in cohort]
        embeddings.cohort = np.stack([cohort_of[row["wav"]] for row in cohort])
    return embeddings


def verify_trials(
    encoder,
    enrol_rows,
    test_rows,
    trials,
    cohort=None,
    score_norm="none",
    top_n=300,
    mean_norm=False,
    batch_size=32,
    cache_folder=None,
    num_workers=0,
    test_transform=None,
    max_batch_seconds=None,
):
    """Scores a trial list with an encoder and returns EER and minDCF.

    :func:`embed_trials` then
    :func:`~speechbrain_ext.scoring.trial_scoring.score_trials`; the
    cohort is embedded only when the scoring options use it.

    Arguments
    ---------
    encoder : object
        Has ``encode_batch(wavs, wav_lens)`` and ``device`` (e.g.
        ``EncoderClassifier``).
    enrol_rows : list of dict
        Enrolment rows with ``wav`` and ``enrol_id`` (see module docstring).
    test_rows : list of dict
        Test rows with ``ID`` and ``wav``.
    trials : list of tuple
        ``(enrol_id, test_id, label)``, ids matched by stem.
    cohort : list of dict, optional
        Training rows with ``spk_id`` (see :func:`cohort_rows`); needed for
        score normalisation and for ``mean_norm``.
    score_norm : str
        "none", "z-norm", "t-norm", "s-norm" or "as-norm".
    top_n : int
        Cohort size per item for AS-norm.
    mean_norm : bool
        Subtract the cohort's mean embedding before cosine scoring.
    batch_size : int
        Utterances per embedding batch.
    cache_folder : str, optional
        Keeps embeddings so an interrupted run resumes.
    num_workers : int
        Audio-decoding workers.
    test_transform : callable, optional
        ``test_transform(test_id, wav) -> wav`` applied to test audio only,
        e.g. :class:`speechbrain_ext.evaluation.robustness.Corruptor`. Test
        embeddings are then cached in
        ``<cache_folder>/test-<name>-<checksum>``, where ``name`` is
        ``test_transform.name`` (e.g. ``sir5``).
    max_batch_seconds : float, optional
        Caps the padded audio of an embedding batch (``batch_size`` x its
        longest item, in seconds): long concatenated enrolments are then
        embedded a few at a time instead of exhausting a small GPU. An item
        longer than the cap is embedded alone.

    Returns
    -------
    dict
        ``EER`` and ``minDCF`` (fractions / normalised), ``threshold``,
        ``n_trials``, ``n_target`` and the arrays ``scores``, ``labels``
        and ``trials`` (for writing reports).
    """
    # Checked before hours of embedding, not after.
    needs_cohort = check_cohort(score_norm, mean_norm, bool(cohort))
    embeddings = embed_trials(
        encoder,
        enrol_rows,
        test_rows,
        cohort=cohort if needs_cohort else None,
        cache_folder=cache_folder,
        test_transform=test_transform,
        batch_size=batch_size,
        num_workers=num_workers,
        max_batch_seconds=max_batch_seconds,
    )
    return score_trials(
        trials,
        embeddings,
        score_norm=score_norm,
        top_n=top_n,
        mean_norm=mean_norm,
    )


def write_report(results, output_folder, name="system", plots=True):
    """Writes scores, a JSON and markdown summary and (optionally) plots.

    Arguments
    ---------
    results : dict
        Condition name -> result of :func:`verify_trials`.
    output_folder : str
        Where ``scores_<condition>.txt``, ``summary.json``, ``summary.md``,
        ``det.png`` and ``score_hist.png`` go.
    name : str
        System name shown in tables and plots.
    plots : bool
        Draw the DET curve and score histograms (needs matplotlib).

    Returns
    -------
    str
        The markdown table.
    """
    os.makedirs(output_folder, exist_ok=True)
    summary = {}
    for condition, result in results.items():
        with open(
            os.path.join(output_folder, f"scores_{condition}.txt"), "w"
        ) as fout:
            for (enrol, test, label), score in zip(
                result["trials"], result["scores"]
            ):
                fout.write(f"{enrol} {test} {label} {score:.6f}\n")
        summary[condition] = {
            k: v
            for k, v in result.items()
            if k not in ("scores", "labels", "trials")
        }
    with open(os.path.join(output_folder, "summary.json"), "w") as fout:
        json.dump({"system": name, "results": summary}, fout, indent=2)
    lines = [
        "| system | condition | EER (%) | minDCF (p=0.01) | trials |",
        "| --- | --- | --- | --- | --- |",
    ]
    for condition, r in summary.items():
        lines.append(
            f"| {name} | {condition} | {100 * r['EER']:.2f} | "
            f"{r['minDCF']:.3f} | {r['n_trials']} |"
        )
    table = "\n".join(lines)
    with open(os.path.join(output_folder, "summary.md"), "w") as fout:
        fout.write(table + "\n")
    if plots:
        from speechbrain_ext.scoring.plots import plot_det, plot_score_histogram

        systems = {
            f"{name} ({c})": (r["scores"], r["labels"])
            for c, r in results.items()
        }
        plot_det(systems, os.path.join(output_folder, "det.png"))
        plot_score_histogram(
            systems, os.path.join(output_folder, "score_hist.png")
        )
    return table
