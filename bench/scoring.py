"""Benchmark: our scoring against SpeechBrain's on CN-Celeb-sized trials.

Synthetic embeddings stand in for CN-Celeb's evaluation set: 196 enrolment
speakers x 17,777 test utterances = 3,484,292 trials, every test utterance
from one enrolled speaker (17,777 targets, 0.51%, as in CN-Celeb), 192-d,
with a shared offset (so mean subtraction matters), per-genre channel
directions (so cohort normalisation matters) and per-utterance noise levels.
The cohort is 2,800 speaker averages of 4 training utterances each.

Each measurement runs in a fresh process (multiprocessing "spawn") that loads
its inputs, resets the kernel's peak-RSS mark, runs the measured call once and
reports wall time, peak RSS and the increase over the RSS before the call
(Linux /proc), so one measurement's memory cannot hide another's and the
figures include torch's and numpy's real allocations, not only Python's.

Measured:

1. ours: EER + minDCF on all trials; trial list read + map by stem;
   cosine scoring; AS-norm (top-300) on all trials; Cllr, min Cllr (PAV),
   actDCF (p_target 0.01) and the prior-weighted calibration fit on all
   trials (Cllr and actDCF of LLRs from a calibration fitted, outside the
   measurement, on a fixed half of the trials);
2. SpeechBrain's ``metric_stats.EER`` and ``metric_stats.minDCF`` on
   growing random subsets until one takes over ``--cap-seconds`` or is
   predicted to need over ``--cap-gb`` (its minDCF holds a thresholds x
   trials matrix), next to ours on the same subset;
3. a per-trial AS-norm loop written like SpeechBrain's
   ``speaker_verification_cosine.py`` s-norm, timed on a few hundred trials
   and extrapolated (linearly, labelled as such) to all trials.

Run from the repository root::

    python -m bench.scoring --out results/bench/scoring.json
    python -m bench.scoring --quick --out /tmp/scoring_quick.json
"""

import argparse
import multiprocessing
import os
import tempfile
import time

import numpy as np

from bench.machine import machine_info, write_report
from speechbrain_ext.scoring.calibration import (
    act_dcf,
    cllr,
    fit_calibration,
    min_cllr,
)
from speechbrain_ext.scoring.metrics import compute_eer_mindcf
from speechbrain_ext.scoring.normalization import (
    cosine_scores,
    score_normalize,
    speaker_cohort,
)
from speechbrain_ext.scoring.trials import map_trials, read_trials

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)
FULL = {
    "n_enrol": 196,
    "n_test": 17777,
    "n_cohort": 2800,
    "utts_per_cohort_speaker": 4,
    "dim": 192,
    "n_genres": 11,
    "top_n": 300,
    "speechbrain_sizes": [10_000, 20_000, 30_000, 100_000, 300_000],
    "reference_trials": 300,
}
QUICK = {
    "n_enrol": 20,
    "n_test": 1000,
    "n_cohort": 300,
    "utts_per_cohort_speaker": 2,
    "dim": 192,
    "n_genres": 11,
    "top_n": 100,
    "speechbrain_sizes": [2_000, 5_000],
    "reference_trials": 50,
}


def make_data(config, folder, seed=0):
    """Draws synthetic embeddings and trials and saves them as .npy files.

    Arguments
    ---------
    config : dict
        Sizes (``FULL`` or ``QUICK``).
    folder : str
        Where the arrays are written.
    seed : int
        Random seed.

    Returns
    -------
    dict
        Trial count, target count and dimensions, for the report.
    """
    rng = np.random.default_rng(seed)
    dim = config["dim"]

    def directions(count, length=1.0):
        vectors = rng.normal(size=(count, dim))
        return length * vectors / np.linalg.norm(vectors, axis=1)[:, None]

    offset = directions(1, 0.8)[0]
    genres = directions(config["n_genres"], 0.8)

    def utterances(centres, noise):
        genre = rng.integers(0, len(genres), size=len(centres))
        noise = np.broadcast_to(noise, (len(centres), 1))
        return (
            offset + centres + genres[genre] + noise * directions(len(centres))
        )

    n_enrol, n_test = config["n_enrol"], config["n_test"]
    enrol_centres = directions(n_enrol)
    test_speaker = rng.integers(0, n_enrol, size=n_test)
    enrol = utterances(enrol_centres, 0.7)
    test = utterances(
        enrol_centres[test_speaker], rng.uniform(1.2, 3.5, size=(n_test, 1))
    )

    per_speaker = config["utts_per_cohort_speaker"]
    train_speaker = np.repeat(np.arange(config["n_cohort"]), per_speaker)
    train_centres = directions(config["n_cohort"])[train_speaker]
    train = utterances(train_centres, 1.5)
    mean = train.mean(axis=0)
    cohort = speaker_cohort(train, train_speaker.tolist(), mean=mean)

    enrol_idx = np.repeat(np.arange(n_enrol), n_test)
    test_idx = np.tile(np.arange(n_test), n_enrol)
    labels = test_speaker[test_idx] == enrol_idx
    scores = cosine_scores(enrol, test, enrol_idx, test_idx, mean=mean)
    arrays = {
        "enrol": enrol.astype(np.float32),
        "test": test.astype(np.float32),
        "cohort": cohort.astype(np.float32),
        "mean": mean.astype(np.float32),
        "enrol_idx": enrol_idx,
        "test_idx": test_idx,
        "labels": labels,
        "scores": scores,
        "subset_order": rng.permutation(labels.size),
    }
    for name, array in arrays.items():
        np.save(os.path.join(folder, f"{name}.npy"), array)
    _write_trial_list(folder, enrol_idx, test_idx, labels)
    return {
        "n_trials": int(labels.size),
        "n_targets": int(labels.sum()),
        "n_enrol": n_enrol,
        "n_test": n_test,
        "n_cohort": config["n_cohort"],
        "dim": dim,
        "top_n": config["top_n"],
    }


def _write_trial_list(folder, enrol_idx, test_idx, labels):
    """Writes a CN-Celeb-style trials.lst (``.wav`` names) for the data."""
    enrol_names = [f"id{i:05d}-enroll" for i in range(enrol_idx.max() + 1)]
    test_names = [
        f"test/id{i % 1000:05d}-vlog-01-{i:05d}.wav"
        for i in range(test_idx.max() + 1)
    ]
    with open(os.path.join(folder, "trials.lst"), "w") as trial_file:
        for e, t, label in zip(enrol_idx, test_idx, labels.astype(int)):
            trial_file.write(f"{enrol_names[e]} {test_names[t]} {label}\n")


def _load(folder, *names):
    """Loads the named arrays saved by :func:`make_data`."""
    return [np.load(os.path.join(folder, f"{name}.npy")) for name in names]


def _subset(folder, n_trials):
    """Scores and labels of the first ``n_trials`` of a fixed permutation."""
    scores, labels, order = _load(folder, "scores", "labels", "subset_order")
    keep = order[:n_trials]
    return scores[keep], labels[keep]


# Each task loads its inputs and returns the call to be measured.


def task_ours_metrics(folder, n_trials=None):
    if n_trials is None:
        scores, labels = _load(folder, "scores", "labels")
    else:
        scores, labels = _subset(folder, n_trials)
    return lambda: compute_eer_mindcf(scores, labels)


def _calibrated(folder):
    """LLRs of all trials from a calibration fitted on a fixed half."""
    scores, labels, order = _load(folder, "scores", "labels", "subset_order")
    half = order[: len(order) // 2]
    calibration = fit_calibration(scores[half], labels[half], p_target=0.01)
    return calibration(scores), labels


def task_ours_cllr(folder):
    llrs, labels = _calibrated(folder)
    return lambda: (cllr(llrs, labels),)


def task_ours_act_dcf(folder):
    llrs, labels = _calibrated(folder)
    return lambda: (act_dcf(llrs, labels, p_target=0.01),)


def task_ours_min_cllr(folder):
    # min_cllr imports scipy.optimize on first use: not what is measured.
    import scipy.optimize  # noqa: F401

    scores, labels = _load(folder, "scores", "labels")
    return lambda: (min_cllr(scores, labels),)


def task_ours_fit_calibration(folder):
    scores, labels = _load(folder, "scores", "labels")

    def fit():
        calibration = fit_calibration(scores, labels, p_target=0.01)
        return calibration.a, calibration.b

    return fit


def task_speechbrain_eer(folder, n_trials):
    import torch

    from speechbrain.utils.metric_stats import EER

    scores, labels = _subset(folder, n_trials)
    positives = torch.from_numpy(scores[labels]).float()
    negatives = torch.from_numpy(scores[~labels]).float()
    return lambda: EER(positives, negatives)


def task_speechbrain_min_dcf(folder, n_trials):
    import torch

    from speechbrain.utils.metric_stats import minDCF

    scores, labels = _subset(folder, n_trials)
    positives = torch.from_numpy(scores[labels]).float()
    negatives = torch.from_numpy(scores[~labels]).float()
    return lambda: minDCF(positives, negatives, p_target=0.01)


def task_ours_trial_list(folder):
    enrol, test = _load(folder, "enrol", "test")
    enrol_ids = [f"id{i:05d}-enroll" for i in range(len(enrol))]
    # Embeddings keyed by FLAC basenames, trials naming test/....wav.
    test_ids = [
        f"id{i % 1000:05d}-vlog-01-{i:05d}.flac" for i in range(len(test))
    ]
    path = os.path.join(folder, "trials.lst")

    def read_and_map():
        trials = read_trials(path)
        return map_trials(trials, enrol_ids, test_ids)

    return read_and_map


def task_ours_cosine(folder):
    enrol, test, mean, enrol_idx, test_idx = _load(
        folder, "enrol", "test", "mean", "enrol_idx", "test_idx"
    )
    return lambda: cosine_scores(enrol, test, enrol_idx, test_idx, mean)


def task_ours_as_norm(folder, top_n, n_trials=None):
    arrays = _load(
        folder, "scores", "enrol_idx", "test_idx", "enrol", "test", "cohort"
    )
    (mean,) = _load(folder, "mean")
    if n_trials is not None:
        arrays[:3] = [a[:n_trials] for a in arrays[:3]]
    return lambda: score_normalize(*arrays, top_n=top_n, mean=mean)


def task_loop_as_norm(folder, top_n, n_trials):
    """Per-trial AS-norm as SpeechBrain's recipe loop computes s-norm."""
    import torch

    arrays = _load(
        folder, "enrol", "test", "cohort", "mean", "enrol_idx", "test_idx"
    )
    enrol, test, cohort, mean = (torch.from_numpy(a) for a in arrays[:4])
    enrol_idx, test_idx = arrays[4][:n_trials], arrays[5][:n_trials]
    similarity = torch.nn.CosineSimilarity(dim=-1, eps=1e-6)

    def stats(embedding):
        # As in the recipe: repeat the embedding over the cohort, score,
        # keep the top-N (ddof=0 to match the definition used here).
        repeated = embedding.repeat(cohort.shape[0], 1)
        cohort_scores = similarity(repeated, cohort)
        top = torch.topk(cohort_scores, k=top_n, dim=0)[0]
        return top.mean(), top.std(correction=0)

    def loop():
        out = []
        for e, t in zip(enrol_idx, test_idx):
            enrol_emb, test_emb = enrol[e] - mean, test[t] - mean
            score = similarity(enrol_emb, test_emb)
            mean_e, std_e = stats(enrol_emb)
            mean_t, std_t = stats(test_emb)
            out.append(
                0.5 * ((score - mean_e) / std_e + (score - mean_t) / std_t)
            )
        return torch.stack(out).numpy()

    return loop


TASKS = {
    name[len("task_") :]: function
    for name, function in globals().items()
    if name.startswith("task_")
}


def _memory_status_mb(field):
    """Reads VmRSS or VmHWM of this process from /proc, in MB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(task, folder, kwargs, queue):
    """Runs one task in this (fresh) process and reports time and memory.

    ``ru_maxrss`` cannot be used here: Linux carries the high-water mark of
    the forked parent across exec, so every child would start at the
    parent's size. VmHWM is reset to the current RSS after the inputs are
    loaded (``clear_refs`` 5), so the peak covers the measured call only.
    """
    call = TASKS[task](folder, **kwargs)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before_mb = _memory_status_mb("VmRSS")
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    peak_mb = _memory_status_mb("VmHWM")
    if isinstance(result, np.ndarray):
        summary = None
        np.save(os.path.join(folder, f"out_{task}.npy"), result)
    elif isinstance(result, tuple) and np.isscalar(result[0]):
        summary = [float(value) for value in result]
    else:
        summary = None
    queue.put(
        {
            "seconds": seconds,
            "peak_rss_mb": peak_mb,
            "rss_increase_mb": peak_mb - before_mb,
            "result": summary,
        }
    )


def measure(task, folder, timeout, **kwargs):
    """Runs ``task`` in a spawned process; None fields if it times out.

    Arguments
    ---------
    task : str
        Key of :data:`TASKS`.
    folder : str
        Data folder.
    timeout : float
        Seconds after which the process is killed.
    **kwargs
        Passed to the task.

    Returns
    -------
    dict
        seconds, peak_rss_mb, rss_increase_mb, result (or an error).
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(task, folder, kwargs, queue))
    process.start()
    try:
        report = queue.get(timeout=timeout)
    except Exception:
        process.kill()
        report = {"error": f"no result within {timeout:.0f} s (killed)"}
    process.join()
    if "error" not in report and process.exitcode != 0:
        report = {"error": f"exit code {process.exitcode}"}
    print(f"  {task} {kwargs}: {_brief(report)}", flush=True)
    return report


def _brief(report):
    if "error" in report:
        return report["error"]
    return (
        f"{report['seconds']:.3f} s, peak RSS {report['peak_rss_mb']:.0f} MB"
        f" (+{report['rss_increase_mb']:.0f} MB)"
    )


def speechbrain_min_dcf_bytes(n_trials, n_targets):
    """Predicted size of SpeechBrain minDCF's largest temporaries.

    It stacks the non-target scores once per threshold (2U - 1 thresholds
    for U distinct scores) as float32, compares them into a bool matrix of
    the same shape and sums that (through an int64 copy): 13 bytes per
    (threshold, non-target) pair, within 10% of the measured increase.
    """
    n_thresholds = 2 * n_trials - 1
    return n_thresholds * (n_trials - n_targets) * 13


def compare_with_speechbrain(folder, config, target_rate, args):
    """Runs SpeechBrain's EER and minDCF on growing subsets, ours beside."""
    rows = []
    for function in ("eer", "min_dcf"):
        previous = None
        for n_trials in config["speechbrain_sizes"]:
            row = {"function": function, "n_trials": n_trials}
            rows.append(row)
            predicted_gb = (
                speechbrain_min_dcf_bytes(n_trials, n_trials * target_rate)
                / 1e9
            )
            if function == "min_dcf" and predicted_gb > args.cap_gb:
                row["speechbrain"] = {
                    "skipped": f"predicted {predicted_gb:.1f} GB > cap"
                }
                break
            if previous is not None:
                n_before, seconds_before = previous
                # SpeechBrain's threshold loop is quadratic in trials.
                predicted_s = seconds_before * (n_trials / n_before) ** 2
                if predicted_s > 3 * args.cap_seconds:
                    row["speechbrain"] = {
                        "skipped": f"predicted {predicted_s:.0f} s > cap"
                    }
                    break
            theirs = measure(
                f"speechbrain_{function}",
                folder,
                timeout=3 * args.cap_seconds,
                n_trials=n_trials,
            )
            row["speechbrain"] = theirs
            row["ours"] = measure(
                "ours_metrics", folder, timeout=600, n_trials=n_trials
            )
            if "error" in theirs:
                break
            previous = (n_trials, theirs["seconds"])
            if theirs["seconds"] > args.cap_seconds:
                break
    return rows


def markdown(report):
    """Formats the measurements as markdown tables."""
    lines = [
        f"Synthetic CN-Celeb-sized data: {report['data']['n_trials']:,} "
        f"trials ({report['data']['n_targets']:,} targets), "
        f"{report['data']['n_cohort']:,}-speaker cohort, "
        f"{report['data']['dim']}-d. Peak RSS per fresh process; "
        "'+' is the increase during the measured call.",
        "",
        "| what (ours, all trials) | time (s) | peak RSS (MB) | + (MB) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in report["ours_full"].items():
        lines.append(
            f"| {name} | {row['seconds']:.2f} | {row['peak_rss_mb']:.0f}"
            f" | {row['rss_increase_mb']:.0f} |"
            if "error" not in row
            else f"| {name} | {row['error']} | | |"
        )
    lines += [
        "",
        "| SpeechBrain function | trials | SB value | our value "
        "| SB time (s) | ours (s) | speed-up"
        " | SB + RSS (MB) | ours + RSS (MB) | memory ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for row in report["speechbrain_comparison"]:
        theirs, ours = row["speechbrain"], row.get("ours")
        label = f"| {row['function']} | {row['n_trials']:,} |"
        if "skipped" in theirs or "error" in theirs:
            reason = theirs.get("skipped") or theirs.get("error")
            lines.append(f"{label} {reason} | | | | | | | | |")
            continue
        if row["function"] == "eer":
            values = theirs["result"][0], ours["result"][0]
        else:
            # SpeechBrain's minDCF is not normalised: divide by
            # min(c_miss * p_target, c_fa * (1 - p_target)) = 0.01.
            values = theirs["result"][0] / 0.01, ours["result"][1]
        label += f" {values[0]:.5f} | {values[1]:.5f} |"
        if ours["rss_increase_mb"] >= 1:
            ratio = theirs["rss_increase_mb"] / ours["rss_increase_mb"]
            ratio = f"{ratio:.0f}x"
        else:
            ratio = "n/a (ours < 1 MB)"
        lines.append(
            f"{label} {theirs['seconds']:.3f} | {ours['seconds']:.4f} | "
            f"{theirs['seconds'] / ours['seconds']:.0f}x | "
            f"{theirs['rss_increase_mb']:.0f} | "
            f"{ours['rss_increase_mb']:.1f} | {ratio} |"
        )
    norm = report["as_norm"]
    eer, min_dcf, _ = report["ours_full"]["EER + minDCF"]["result"]
    calibrated = _calibration_line(report["ours_full"])
    lines += [
        "",
        f"Ours on all trials: EER {100 * eer:.2f}%, minDCF(0.01) "
        f"{min_dcf:.4f} (synthetic cosine scores, mean-subtracted)"
        f"{calibrated}.",
        "",
        "| AS-norm | trials | time (s) |",
        "| --- | ---: | ---: |",
        f"| per-trial loop (SpeechBrain recipe style), measured | "
        f"{norm['loop_trials']:,} | {norm['loop']['seconds']:.2f} |",
        f"| per-trial loop, **extrapolated** linearly | "
        f"{report['data']['n_trials']:,} | "
        f"{norm['loop_extrapolated_seconds']:.0f} |",
        f"| ours, measured | {report['data']['n_trials']:,} | "
        f"{report['ours_full']['AS-norm']['seconds']:.2f} |",
        "",
        f"Loop vs ours on the same {norm['loop_trials']} trials: max |diff| "
        f"= {norm['max_abs_diff']:.2e} (float32 loop vs float64).",
    ]
    return "\n".join(lines)


def _calibration_line(ours_full):
    """The calibration measures for the summary line, if measured."""
    values = {
        name: ours_full[name]["result"][0]
        for name in ("Cllr", "min Cllr (PAV)", "actDCF (p_target 0.01)")
        if name in ours_full and ours_full[name].get("result")
    }
    if len(values) < 3:
        return ""
    return (
        f"; calibrated on half the trials: Cllr {values['Cllr']:.4f} bits "
        f"(min {values['min Cllr (PAV)']:.4f}), actDCF(0.01) "
        f"{values['actDCF (p_target 0.01)']:.4f}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/bench/scoring.json")
    parser.add_argument(
        "--quick", action="store_true", help="small CI-sized run"
    )
    parser.add_argument("--cap-seconds", type=float, default=60.0)
    parser.add_argument("--cap-gb", type=float, default=4.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads per measured process (same for all)",
    )
    args = parser.parse_args(argv)
    # Inherited by the spawned processes before they import numpy / torch;
    # one thread keeps timings stable on a shared machine and fair to both.
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(args.threads)
    config = QUICK if args.quick else FULL

    with tempfile.TemporaryDirectory(prefix="bench_scoring_") as folder:
        print("generating data...", flush=True)
        data = make_data(config, folder)
        target_rate = data["n_targets"] / data["n_trials"]
        top_n = config["top_n"]
        print("ours on all trials:", flush=True)
        ours_full = {
            "EER + minDCF": measure("ours_metrics", folder, 600),
            "read + map trials.lst": measure("ours_trial_list", folder, 600),
            "cosine scoring": measure("ours_cosine", folder, 600),
            "AS-norm": measure("ours_as_norm", folder, 600, top_n=top_n),
            "Cllr": measure("ours_cllr", folder, 600),
            "min Cllr (PAV)": measure("ours_min_cllr", folder, 600),
            "actDCF (p_target 0.01)": measure("ours_act_dcf", folder, 600),
            "fit_calibration (p_target 0.01)": measure(
                "ours_fit_calibration", folder, 600
            ),
        }
        print("SpeechBrain vs ours:", flush=True)
        comparison = compare_with_speechbrain(folder, config, target_rate, args)
        print("AS-norm per-trial loop:", flush=True)
        n_loop = config["reference_trials"]
        loop = measure(
            "loop_as_norm", folder, 600, top_n=top_n, n_trials=n_loop
        )
        (loop_scores,) = _load(folder, "out_loop_as_norm")
        ours_small = measure(
            "ours_as_norm", folder, 600, top_n=top_n, n_trials=n_loop
        )
        (our_scores,) = _load(folder, "out_ours_as_norm")

    report = {
        "machine": {
            **machine_info("cpu", ("numpy", "scipy", "speechbrain")),
            "threads_per_measurement": os.environ.get("OMP_NUM_THREADS"),
        },
        "data": data,
        "ours_full": ours_full,
        "speechbrain_comparison": comparison,
        "as_norm": {
            "loop_trials": n_loop,
            "loop": loop,
            "loop_extrapolated_seconds": loop["seconds"]
            * data["n_trials"]
            / n_loop,
            "ours_same_trials": ours_small,
            "max_abs_diff": float(np.abs(loop_scores - our_scores).max()),
        },
    }
    write_report(report, markdown, args.out, "bench.scoring", argv)


if __name__ == "__main__":
    main()
