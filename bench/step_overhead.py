"""Benchmark: what each speaker objective adds to one training step.

One training step (forward, backward, Adam step) of ECAPA-TDNN followed by
each objective is timed on one fixed synthetic batch: P x K crops (16
speakers x 2 utterances by default) in V views each, laid out as the
recipe's augmenter lays them out ([view 1; view 2] rows, labels repeated),
as 80-d fbank features computed once. Objectives, built as the hparams
files build them:

- ``aam_softmax``: AAM-softmax (m 0.2, s 30) over ``--n_classes`` speakers;
- ``aamsupcon``: pure AAM-SupCon (m 0.2, tau 0.07), the loss alone;
- ``hybrid``: AAM-SupCon + lambda * AAM-softmax (``WeightedLossSum``);
- ``supcon``: SupCon (AAM-SupCon with m 0).

(``hparams/aamsupcon.yaml`` with ``aam_softmax_weight: 0`` still computes
the AAM-softmax term, so DDP sees every parameter: in the recipe its step
costs what ``hybrid``'s does.)

Every objective trains its own copy of one initial model. Repetitions are
interleaved (each repetition runs every objective once, in a rotating
order), so drifts in machine load hit all objectives alike, and the ratio to
AAM-softmax is taken within each repetition before its median is reported.
The loss alone (forward and backward of the objective on fixed embeddings)
is timed the same way, averaged over ``--loss_calls`` calls per sample.

Run from the repository root::

    python -m bench.step_overhead --out results/bench/step_overhead.json
    python -m bench.step_overhead --device cuda --reps 50 \\
        --channels 512 512 512 512 1536 --out /tmp/step_overhead.json
"""

import argparse
import copy
import time

import torch

from bench.machine import machine_info, synchronize, write_report
from bench.stats import timing_summary
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain_ext.losses import (
    AAMSoftmaxLoss,
    AAMSupConLoss,
    WeightedLossSum,
)

OBJECTIVES = ("aam_softmax", "aamsupcon", "hybrid", "supcon")
BASELINE = "aam_softmax"
N_MELS = 80
SAMPLE_RATE = 16000


def build_objectives(
    emb_dim, n_classes, margin=0.2, temperature=0.07, aam_softmax_weight=1.0
):
    """Builds the compared objectives with the hparams files' settings.

    Arguments
    ---------
    emb_dim : int
        Embedding dimension.
    n_classes : int
        Training speakers of the AAM-softmax classifier.
    margin : float
        AAM-SupCon's angular margin.
    temperature : float
        The contrastive temperature.
    aam_softmax_weight : float
        The hybrid's lambda.

    Returns
    -------
    dict
        Name (see :data:`OBJECTIVES`) -> objective module.

    Example
    -------
    >>> objectives = build_objectives(emb_dim=8, n_classes=4)
    >>> sorted(objectives) == sorted(OBJECTIVES)
    True
    >>> emb, labels = torch.randn(6, 1, 8), torch.tensor([0, 0, 1, 1, 3, 3])
    >>> all(loss(emb, labels).dim() == 0 for loss in objectives.values())
    True
    """

    def aam_softmax():
        return AAMSoftmaxLoss(emb_dim, n_classes, margin=0.2, scale=30)

    return {
        "aam_softmax": aam_softmax(),
        "aamsupcon": AAMSupConLoss(margin=margin, temperature=temperature),
        "hybrid": WeightedLossSum(
            {
                "aam_supcon": AAMSupConLoss(margin, temperature),
                "aam_softmax": aam_softmax(),
            },
            {"aam_supcon": 1.0, "aam_softmax": aam_softmax_weight},
        ),
        "supcon": AAMSupConLoss(margin=0.0, temperature=temperature),
    }


def synthetic_batch(
    n_speakers, n_per_speaker, n_views, seconds, n_classes, seed=0
):
    """Fbank features and labels of a fixed P x K x V batch.

    Arguments
    ---------
    n_speakers : int
        P, speakers in the batch (at most ``n_classes``).
    n_per_speaker : int
        K, crops per speaker.
    n_views : int
        V, views per crop; rows are ``[view 1 of every crop; view 2; ...]``
        as ``speechbrain.augment.Augmenter`` with ``concat_original``
        returns them.
    seconds : float
        Crop length.
    n_classes : int
        Speakers the labels are drawn from.
    seed : int
        Seed of the waveforms and of the speaker choice.

    Returns
    -------
    feats : torch.Tensor
        Features [P * K * V, frames, 80].
    labels : torch.Tensor
        Speaker labels [P * K * V].

    Example
    -------
    >>> feats, labels = synthetic_batch(2, 2, 2, 0.1, n_classes=5)
    >>> feats.shape, labels.shape
    (torch.Size([8, 11, 80]), torch.Size([8]))
    >>> bool((labels[:4] == labels[4:]).all())
    True
    """
    if n_speakers > n_classes:
        raise ValueError(f"n_speakers={n_speakers} > n_classes={n_classes}")
    generator = torch.Generator().manual_seed(seed)
    speakers = torch.randperm(n_classes, generator=generator)[:n_speakers]
    crop_labels = speakers.repeat_interleave(n_per_speaker)
    wavs = 0.1 * torch.randn(
        len(crop_labels) * n_views,
        int(seconds * SAMPLE_RATE),
        generator=generator,
    )
    with torch.no_grad():
        feats = Fbank(n_mels=N_MELS)(wavs)
    return feats, crop_labels.repeat(n_views)


def _timed(function, device):
    """Seconds taken by ``function()``, device work included."""
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


class TrainingStep:
    """One forward/backward/Adam step of a model and an objective.

    Arguments
    ---------
    model : torch.nn.Module
        The embedding model.
    objective : torch.nn.Module
        Called as ``objective(embeddings, labels)``.
    lr : float
        Adam's learning rate.

    Example
    -------
    >>> model = ECAPA_TDNN(80, channels=[16, 16, 16, 16, 48], lin_neurons=8)
    >>> step = TrainingStep(model, AAMSupConLoss())
    >>> feats, labels = synthetic_batch(2, 2, 2, 0.2, n_classes=2)
    >>> before = model.blocks[0].conv.conv.weight.clone()
    >>> loss = step(feats, labels)
    >>> bool((model.blocks[0].conv.conv.weight != before).any())
    True
    """

    def __init__(self, model, objective, lr=0.001):
        self.model = model
        self.objective = objective
        params = list(model.parameters()) + list(objective.parameters())
        self.optimizer = torch.optim.Adam(params, lr=lr)

    def __call__(self, feats, labels):
        """Runs the step; returns the loss (a detached scalar tensor)."""
        loss = self.objective(self.model(feats), labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def time_steps(steps, feats, labels, reps, warmup, device):
    """Times interleaved training steps.

    Arguments
    ---------
    steps : dict
        Name -> callable ``step(feats, labels)``.
    feats : torch.Tensor
        Input batch.
    labels : torch.Tensor
        Labels of the batch.
    reps : int
        Timed repetitions of each step.
    warmup : int
        Untimed repetitions first (allocator, kernel selection).
    device : str
        Synchronised around each step on CUDA.

    Returns
    -------
    dict
        Name -> list of ``reps`` seconds.

    Example
    -------
    >>> times = time_steps(
    ...     {"a": lambda f, y: f + 1},
    ...     torch.zeros(2),
    ...     None,
    ...     reps=3,
    ...     warmup=1,
    ...     device="cpu",
    ... )
    >>> len(times["a"])
    3
    """
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name](feats, labels)
    times = {name: [] for name in names}
    for rep in range(reps):
        # Rotating the order keeps any one objective from always running
        # right after the same neighbour (caches, frequency scaling).
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            times[name].append(
                _timed(lambda: steps[name](feats, labels), device)
            )
    return times


def loss_only_step(objective, calls):
    """A callable doing ``calls`` objective forward+backward passes.

    Arguments
    ---------
    objective : torch.nn.Module
        Called as ``objective(embeddings, labels)``.
    calls : int
        Passes per call, so that one timing spans more than timer noise.

    Returns
    -------
    callable
        ``step(embeddings, labels)``; ``embeddings`` must require grad.

    Example
    -------
    >>> emb = torch.randn(4, 8, requires_grad=True)
    >>> step = loss_only_step(AAMSupConLoss(), calls=2)
    >>> step(emb, torch.tensor([0, 0, 1, 1]))
    >>> emb.grad is None
    True
    """

    def step(embeddings, labels):
        for _ in range(calls):
            objective(embeddings, labels).backward()
            embeddings.grad = None
        objective.zero_grad(set_to_none=True)

    return step


def paired_ratios(times, baseline=BASELINE):
    """Per-repetition ratios of each step time to the baseline's.

    Arguments
    ---------
    times : dict
        Name -> list of seconds, repetition r at index r for every name.
    baseline : str
        The name divided by.

    Returns
    -------
    dict
        Name -> list of ratios.

    Example
    -------
    >>> paired_ratios({"aam_softmax": [1.0, 2.0], "x": [1.1, 2.0]})
    {'aam_softmax': [1.0, 1.0], 'x': [1.1, 1.0]}
    """
    return {
        name: [t / b for t, b in zip(values, times[baseline])]
        for name, values in times.items()
    }


def summarize(times):
    """Median/IQR of each objective's times and of its paired ratio."""
    ratios = paired_ratios(times)
    return {
        name: {
            "seconds": timing_summary(times[name]),
            "ratio_to_aam_softmax": timing_summary(ratios[name]),
        }
        for name in times
    }


def added_loss_share(step_summary, loss_summary, baseline=BASELINE):
    """Extra loss time of each objective, in % of the baseline's step.

    The step ratios carry the machine's step-to-step noise; the loss-alone
    times do not, so (loss - baseline loss) / baseline step is the sharper
    estimate of what an objective adds to a training step (the model's
    forward and backward are the same for all).

    Arguments
    ---------
    step_summary : dict
        :func:`summarize` of the training steps.
    loss_summary : dict
        :func:`summarize` of the loss-only passes.
    baseline : str
        The objective compared with.

    Returns
    -------
    dict
        Name -> percentage (negative when cheaper than the baseline).

    Example
    -------
    >>> steps = {"aam_softmax": {"seconds": {"median": 2.0}}}
    >>> losses = {
    ...     "aam_softmax": {"seconds": {"median": 0.25}},
    ...     "hybrid": {"seconds": {"median": 0.75}},
    ... }
    >>> added_loss_share(steps, losses)
    {'aam_softmax': 0.0, 'hybrid': 25.0}
    """
    step = step_summary[baseline]["seconds"]["median"]
    base = loss_summary[baseline]["seconds"]["median"]
    return {
        name: 100 * (entry["seconds"]["median"] - base) / step
        for name, entry in loss_summary.items()
    }


def markdown_table(step_summary, loss_summary):
    """The step and loss-only timings as a markdown table.

    Arguments
    ---------
    step_summary : dict
        :func:`summarize` of the training steps.
    loss_summary : dict
        :func:`summarize` of the loss-only passes.

    Returns
    -------
    str
        One row per objective; times in ms as median [IQR], ratios as the
        median of paired ratios [q25-q75].
    """

    def cell(entry, scale=1000.0, digits=1):
        s = entry["seconds"]
        return (
            f"{scale * s['median']:.{digits}f} [{scale * s['iqr']:.{digits}f}]"
        )

    def ratio(entry):
        r = entry["ratio_to_aam_softmax"]
        return f"{r['median']:.3f} [{r['q25']:.3f}-{r['q75']:.3f}]"

    share = added_loss_share(step_summary, loss_summary)
    lines = [
        "| objective | step ms, median [IQR] | step / AAM-softmax "
        "| loss fwd+bwd ms, median [IQR] | loss / AAM-softmax loss "
        "| added loss time, % of AAM-softmax step |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in step_summary:
        lines.append(
            f"| {name} | {cell(step_summary[name])} "
            f"| {ratio(step_summary[name])} "
            f"| {cell(loss_summary[name], digits=3)} "
            f"| {ratio(loss_summary[name])} | {share[name]:+.3f} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/bench/step_overhead.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice)",
    )
    parser.add_argument(
        "--channels",
        type=int,
        nargs=5,
        default=[256, 256, 256, 256, 768],
        help="ECAPA-TDNN channels (recipe: 512 x4, 1536)",
    )
    parser.add_argument("--emb_dim", type=int, default=192)
    parser.add_argument("--n_speakers", type=int, default=16, help="P")
    parser.add_argument("--n_per_speaker", type=int, default=2, help="K")
    parser.add_argument("--n_views", type=int, default=2, help="V")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="crop length"
    )
    parser.add_argument(
        "--n_classes",
        type=int,
        default=800,
        help="AAM-softmax classes (CN-Celeb1 dev: 800)",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=8,
        help="a multiple of the 4 objectives balances "
        "their positions in the rotation",
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--loss_reps", type=int, default=30)
    parser.add_argument(
        "--loss_calls",
        type=int,
        default=20,
        help="loss passes averaged per loss-only sample",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    """Runs the benchmark, prints the table and writes the JSON."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = args.device
    feats, labels = synthetic_batch(
        args.n_speakers,
        args.n_per_speaker,
        args.n_views,
        args.seconds,
        args.n_classes,
        seed=args.seed,
    )
    feats, labels = feats.to(device), labels.to(device)
    objectives = build_objectives(args.emb_dim, args.n_classes)
    model = ECAPA_TDNN(N_MELS, channels=args.channels, lin_neurons=args.emb_dim)
    steps = {
        name: TrainingStep(
            copy.deepcopy(model).to(device), objective.to(device)
        )
        for name, objective in objectives.items()
    }
    print(
        f"Timing {args.reps} interleaved training steps per objective "
        f"on {len(labels)} crops x {args.seconds} s ...",
        flush=True,
    )
    step_times = time_steps(
        steps, feats, labels, args.reps, args.warmup, device
    )

    embeddings = torch.randn(
        len(labels), args.emb_dim, device=device, requires_grad=True
    )
    loss_steps = {
        name: loss_only_step(objective, args.loss_calls)
        for name, objective in objectives.items()
    }
    loss_times = time_steps(
        loss_steps, embeddings, labels, args.loss_reps, args.warmup, device
    )
    loss_times = {
        name: [t / args.loss_calls for t in values]
        for name, values in loss_times.items()
    }

    step_summary, loss_summary = summarize(step_times), summarize(loss_times)
    result = {
        "config": vars(args),
        "machine": machine_info(device),
        "batch": {"rows": len(labels), "frames": feats.shape[1]},
        "step": {"seconds": step_times, "summary": step_summary},
        "loss_only": {"seconds": loss_times, "summary": loss_summary},
        "added_loss_percent_of_step": added_loss_share(
            step_summary, loss_summary
        ),
    }
    return write_report(
        result,
        lambda result: markdown_table(step_summary, loss_summary),
        args.out,
        "bench.step_overhead",
        argv,
    )


if __name__ == "__main__":
    main()
