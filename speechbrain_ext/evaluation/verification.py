"""End-to-end speaker verification of a trial list with an exported model.

Reads SpeechBrain CSV manifests (as written by the CN-Celeb preparation),
embeds enrolment and test audio with :class:`EmbeddingExtractor`, averages
multi-utterance enrolments, scores trials by cosine (optionally after
mean subtraction and z/t/s/AS-norm against a speaker-averaged cohort) and
reports EER and minDCF.

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
from speechbrain_ext.scoring import (
    compute_eer_mindcf,
    cosine_scores,
    map_trials,
    read_trials,
    score_normalize,
    speaker_cohort,
)

__all__ = [
    "cohort_rows",
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


def _unit(x):
    """L2-normalises rows."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _average_by(rows, key, emb_of, mean=None):
    """Averages unit-norm embeddings of rows sharing ``row[key]``."""
    groups = {}
    for row in rows:
        groups.setdefault(row[key], []).append(emb_of[row["wav"]])
    ids = list(groups)
    shift = 0.0 if mean is None else mean
    emb = np.stack([_unit(np.stack(groups[i]) - shift).mean(0) for i in ids])
    return ids, emb


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
    needs_cohort = score_norm != "none" or mean_norm
    if needs_cohort and not cohort:
        raise ValueError(f"score_norm={score_norm!r} / mean_norm need a cohort")
    extractor = EmbeddingExtractor(
        encoder,
        batch_size=batch_size,
        num_workers=num_workers,
        max_batch_seconds=max_batch_seconds,
    )
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
                encoder,
                batch_size=batch_size,
                num_workers=num_workers,
                transform=test_transform,
                max_batch_seconds=max_batch_seconds,
            ),
            test_rows,
            cache_folder,
        )
    mean = cohort_emb = None
    if needs_cohort:
        cohort_of = _embed_rows(extractor, cohort, cache_folder, "cohort")
        cohort_raw = np.stack([cohort_of[row["wav"]] for row in cohort])
        mean = _unit(cohort_raw).mean(0) if mean_norm else None
        cohort_emb = speaker_cohort(
            _unit(cohort_raw), [row["spk_id"] for row in cohort], mean=mean
        )
    enrol_ids, enrol_emb = _average_by(enrol_rows, "enrol_id", emb_of, mean)
    test_ids = [row["ID"] for row in test_rows]
    if mean is not None:
        test_emb = _unit(test_emb) - mean
    enrol_idx, test_idx, labels = map_trials(trials, enrol_ids, test_ids)
    if labels is None:
        raise ValueError("the trial list has no target/non-target labels")
    scores = cosine_scores(enrol_emb, test_emb, enrol_idx, test_idx)
    if score_norm != "none":
        scores = score_normalize(
            scores,
            enrol_idx,
            test_idx,
            _unit(enrol_emb),
            _unit(test_emb),
            cohort_emb,
            method=score_norm,
            top_n=top_n,
        )
    eer, min_dcf, threshold = compute_eer_mindcf(scores, labels)
    return {
        "EER": float(eer),
        "minDCF": float(min_dcf),
        "threshold": float(threshold),
        "n_trials": int(len(scores)),
        "n_target": int(labels.sum()),
        "scores": scores,
        "labels": labels,
        "trials": trials,
    }


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
