"""A SpeechBrain ``Brain`` with the training plumbing no objective owns.

:class:`RobustBrain` adds to ``speechbrain.core.Brain``:

- **non-finite losses skipped, not trained on.** SpeechBrain's own check
  back-propagates the NaN and steps the optimizer. Here the batch is
  dropped before ``backward``, the buffers its forward pass moved (batch-norm
  statistics, a loss's running centre) are put back, and training stops
  with a message naming the batch after ``nonfinite_patience`` consecutive
  skips, leaving the last checkpoint intact;
- **DDP on CPUs.** SpeechBrain 1.1 converts every BatchNorm to
  ``SyncBatchNorm``, which only runs on GPUs; on a CPU (gloo) launch each
  rank keeps its own batch statistics instead;
- **a random stream per DDP rank.** The hparams seed every process alike
  (``seed_everything``), so that all ranks build the same model; at the
  start of ``fit`` each rank is reseeded with ``seed + rank``
  (:func:`speechbrain_ext.distributed.seed_per_rank`), so that ranks draw
  different crops and augmentations instead of the same ones;
- **learning-rate warm-up** over ``lr_warmup_steps`` optimizer steps (a
  constructor argument; 0: none), on top of the epoch scheduler;
- **logged loss terms.** Any module (or other source of
  :meth:`RobustBrain.term_sources`) with a ``last_term_tensors`` dict of
  detached tensors has them averaged over the epoch, so
  :meth:`RobustBrain.train_stage_stats` logs ``loss_<term>`` beside the
  loss.

A recipe subclasses it with its ``compute_forward``/``compute_objectives``
and its own ``on_stage_end`` (calling :meth:`train_stage_stats`).
:class:`TaskBrain` is that subclass for the training step of every
objective of :mod:`speechbrain_ext.tasks`: the hparams' ``task`` makes the
views, embeds them and computes the loss, so one Brain trains any of them
(the CN-Celeb recipe adds its validation on top).

Example
-------
>>> class Regression(RobustBrain):
...     def compute_forward(self, batch, stage):
...         return self.modules.model(batch[0])
...
...     def compute_objectives(self, predictions, batch, stage):
...         return torch.nn.functional.mse_loss(predictions, batch[1])
>>> brain = Regression(
...     modules={"model": torch.nn.Linear(2, 1)},
...     opt_class=lambda params: torch.optim.SGD(params, lr=0.1),
...     lr_warmup_steps=2,
... )
>>> batch = (torch.ones(4, 2), torch.full((4, 1), float("nan")))
>>> brain.on_stage_start(sb.Stage.TRAIN)
>>> brain.on_fit_start()
>>> weight = brain.modules.model.weight.detach().clone()
>>> _ = brain.fit_batch(batch)
>>> brain.nonfinite_skipped, torch.equal(weight, brain.modules.model.weight)
(1, True)
"""

import logging
import os

import torch

import speechbrain as sb
from speechbrain_ext.distributed import (
    gather_for_metrics,
    seed_per_rank,
    world_size,
)
from speechbrain_ext.losses.information import (
    gaussian_information,
    shuffled_partners,
)

__all__ = ["NonFiniteLoss", "RobustBrain", "TaskBrain", "training_precision"]

# speechbrain.core.Brain's positional arguments, in order.
BRAIN_ARGUMENTS = (
    "modules",
    "opt_class",
    "hparams",
    "run_opts",
    "checkpointer",
)

logger = logging.getLogger(__name__)


class NonFiniteLoss(Exception):
    """Raised inside ``fit_batch`` to skip a batch whose loss is NaN/inf."""


class RobustBrain(sb.core.Brain):
    """``Brain`` that skips non-finite batches, runs DDP on CPUs, warms the
    learning rate up and logs the loss terms its modules report.

    See the module docstring. Subclasses that override ``on_stage_start``,
    ``on_fit_batch_start`` or ``on_fit_batch_end`` call ``super()``.

    Arguments
    ---------
    *args, **kwargs
        Those of ``speechbrain.core.Brain``.
    lr_warmup_steps : int
        Optimizer steps of linear learning-rate warm-up (0: none).
    sync_batchnorm : bool
        Under DDP on GPUs, convert BatchNorm to SyncBatchNorm (see
        :meth:`_wrap_distributed`).
    """

    def __init__(
        self, *args, lr_warmup_steps=0, sync_batchnorm=False, **kwargs
    ):
        # Read by _wrap_distributed, which Brain.__init__ calls.
        self.sync_batchnorm = bool(sync_batchnorm)
        kwargs.update(zip(BRAIN_ARGUMENTS, args))
        kwargs["run_opts"] = _resolved_run_opts(
            kwargs.get("run_opts"), kwargs.get("hparams")
        )
        super().__init__(**kwargs)
        self.lr_warmup_steps = lr_warmup_steps or 0

    def on_fit_start(self):
        """SpeechBrain's start of ``fit``, then a random stream per rank.

        Under DDP every rank is reseeded with ``seed + rank`` once the
        modules are built (and broadcast by DDP), so model initialisation
        stays identical across ranks while the crops and augmentations
        that each rank draws differ. The seed is the hparams' ``seed``,
        else the one ``seed_everything`` recorded (``SB_GLOBAL_SEED``).
        SpeechBrain's own samplers seed themselves (from
        ``SB_GLOBAL_SEED``, which is left alone) and stay the same on
        every rank, as they must to split an epoch between ranks. A
        single process is not reseeded, so its results are unchanged.
        """
        super().on_fit_start()
        if world_size() > 1:
            seed = getattr(getattr(self, "hparams", None), "seed", None)
            if seed is None:
                seed = os.environ.get("SB_GLOBAL_SEED")
            if seed is not None:
                seed = seed_per_rank(int(seed))
                logger.info("random stream of this rank seeded with %d", seed)

    def _wrap_distributed(self):
        """Wraps trainable modules in DDP, with SyncBatchNorm only if asked.

        SpeechBrain converts every BatchNorm to SyncBatchNorm, which adds
        an all-reduce to each BatchNorm layer of every forward pass. Each
        GPU's share of a batch (tens of crops x views) gives BatchNorm
        enough rows, so, as WeSpeaker does, the recipe keeps BatchNorm
        local unless the brain is built with ``sync_batchnorm=True``. On
        CPUs (gloo) SyncBatchNorm does not run at all.
        """
        if not self.distributed_launch:
            return super()._wrap_distributed()
        on_cpu = str(self.device).startswith("cpu")
        if self.sync_batchnorm and not on_cpu:
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = torch.nn.parallel.DistributedDataParallel(
                    module,
                    device_ids=None if on_cpu else [self.device],
                    find_unused_parameters=self.find_unused_parameters,
                )

    def on_fit_batch_start(self, batch, should_step):
        """Remembers the batch's ids; warms the learning rate up if set.

        With ``lr_warmup_steps`` W > 0, optimizer step s < W
        (SpeechBrain's ``optimizer_step``, checkpointed with the Brain)
        runs at lr_epoch * (s + 1) / W, where lr_epoch is the rate the
        epoch scheduler set: the param group's lr at the first warm-up step
        of each epoch, or whenever it is not the rate the warm-up last
        gave it. Each group keeps lr_epoch in ``base_lr_epoch``, that rate
        in ``warmup_lr`` and the epoch in ``warmup_epoch`` (checkpointed
        with the optimizer, so a resumed run continues). At step W every
        group gets its lr_epoch back and the three keys are removed.
        """
        self.batch_ids = [str(uid) for uid in getattr(batch, "id", [])]
        warmup = self.lr_warmup_steps
        step = self.optimizer_step
        counter = getattr(getattr(self, "hparams", None), "epoch_counter", None)
        epoch = getattr(counter, "current", None)
        for group in self.optimizer.param_groups:
            if step >= warmup and "warmup_lr" not in group:
                continue
            if group.get("warmup_epoch") != epoch or group["lr"] != group.get(
                "warmup_lr"
            ):
                group["base_lr_epoch"] = group["lr"]
                group["warmup_epoch"] = epoch
            if step < warmup:
                lr = group["base_lr_epoch"] * (step + 1) / warmup
                group["lr"] = group["warmup_lr"] = lr
            else:
                group["lr"] = group.pop("base_lr_epoch")
                del group["warmup_lr"], group["warmup_epoch"]

    def fit_batch(self, batch):
        """Trains on one batch, or skips it if its loss is NaN/inf.

        A skipped batch leaves no trace: its forward pass already moved
        the batch-norm running statistics (and other buffers, such as a
        loss's running centre), and non-finite activations would make
        them NaN, so every evaluation after it would score NaN. The
        buffers are put back as they were before the batch.
        """
        buffers = [b for b in self.modules.buffers() if b.is_floating_point()]
        saved = self._buffer_backup(buffers)
        try:
            return super().fit_batch(batch)
        except NonFiniteLoss:
            self.zero_grad(set_to_none=True)
            if buffers:
                with torch.no_grad():
                    torch._foreach_copy_(buffers, saved)
            # Keeps the running average of the finite losses unchanged.
            return torch.tensor(self.avg_train_loss)

    def _buffer_backup(self, buffers):
        """Copies ``buffers`` into tensors kept from step to step.

        One fused copy per step into the same tensors, rather than a new
        clone of every buffer (a kernel launch and an allocation each).
        """
        saved = getattr(self, "_saved_buffers", None)
        if saved is None or [(s.shape, s.device) for s in saved] != [
            (b.shape, b.device) for b in buffers
        ]:
            saved = [b.detach().clone() for b in buffers]
            self._saved_buffers = saved
        elif buffers:
            with torch.no_grad():
                torch._foreach_copy_(saved, buffers)
        return saved

    def check_loss_isfinite(self, loss):
        """Skips a non-finite loss; stops after too many in a row.

        After more than ``--nonfinite_patience`` consecutive skips training
        stops with a message naming the batch; the last checkpoint stays
        intact.
        """
        finite = torch.isfinite(loss.detach()).float()
        if sb.utils.distributed.is_distributed_initialized():
            # Every rank must skip together or DDP's all-reduce hangs.
            torch.distributed.all_reduce(
                finite, op=torch.distributed.ReduceOp.MIN
            )
        if bool(finite):
            self.consecutive_nonfinite = 0
            return
        self.nonfinite_skipped += 1
        self.consecutive_nonfinite += 1
        batch = ", ".join(getattr(self, "batch_ids", [])) or "(no ids)"
        logger.warning(
            "skipped a batch with a non-finite loss (%s) at step %d: %s",
            loss.item(),
            self.step,
            batch,
        )
        if self.consecutive_nonfinite > self.nonfinite_patience:
            folder = getattr(self.checkpointer, "checkpoints_dir", "save/")
            raise RuntimeError(
                f"training stopped: the loss was NaN/inf for "
                f"{self.consecutive_nonfinite} batches in a row (step "
                f"{self.step}; {self.nonfinite_skipped} skipped this epoch); "
                f"last batch: {batch}. The last checkpoint in {folder} is "
                "intact: resume with a lower learning rate, without mixed "
                "precision, or after checking that audio."
            )
        raise NonFiniteLoss

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Counts the terms of a trained batch (never of a skipped one)."""
        self._accumulate_terms()

    def term_sources(self):
        """Objects whose ``last_term_tensors`` are logged: every module.

        The hparams hold the modules themselves; ``self.modules`` may hold
        DDP wrappers, which do not forward attributes.
        """
        hparams = getattr(self, "hparams", None)
        modules = getattr(hparams, "modules", None) or self.modules
        return list(modules.values())

    def _accumulate_terms(self):
        """Keeps running sums of the terms the sources report."""
        terms = {}
        for source in self.term_sources():
            terms.update(getattr(source, "last_term_tensors", None) or {})
        # Detached tensors: summed on the device, read once per stage.
        for name, value in terms.items():
            self.term_sums[name] = self.term_sums.get(name, 0.0) + value
        self.term_count += 1 if terms else 0

    def on_stage_start(self, stage, epoch=None):
        """Resets the per-stage accumulators."""
        self.term_sums, self.term_count = {}, 0
        self.nonfinite_skipped, self.consecutive_nonfinite = 0, 0

    def train_stage_stats(self, stage_loss):
        """The training stats to log: loss, skipped batches, mean terms.

        Arguments
        ---------
        stage_loss : float
            The stage's average loss.

        Returns
        -------
        dict
            ``loss``, ``nonfinite_skipped`` (if any) and ``loss_<term>``
            for every reported term, averaged over the batches that
            reported it.
        """
        stats = {"loss": stage_loss}
        if self.nonfinite_skipped:
            stats["nonfinite_skipped"] = self.nonfinite_skipped
        for name, total in self.term_sums.items():
            stats[f"loss_{name}"] = float(total) / self.term_count
        return stats


class TaskBrain(RobustBrain):
    """Trains with the ``task`` of the hparams (:mod:`speechbrain_ext.tasks`).

    Batches are ``PaddedBatch`` es with ``sig`` (and ``spk_id_encoded`` when
    the task reads speaker labels). Training runs ``task.forward`` and
    ``task.loss``; other stages embed with ``task.embed``, and a subclass
    decides what to do with the embeddings (``compute_objectives``). After
    each optimizer step the task may update state that follows the weights
    (e.g. CSC's exponential-moving-average teacher), and the terms it
    reports are logged with the modules'. Parameters that the task never
    trains (``task.unused_parameters``, e.g. CSC's at ``csc_weight`` 0)
    are frozen when the Brain is built, before DDP wraps the modules.

    A task with an ``information_pairs`` method (CSC) also returns, for
    every validation batch, the (z, g) pairs of interfered views of its
    crops; :meth:`information_stats` turns them into the estimate of
    I(z; g) the training log reports, with its shuffled control.
    """

    # Seeds the shuffled pairing, so that it is the same every epoch.
    SHUFFLE_SEED = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.freeze_unused_parameters()

    def freeze_unused_parameters(self):
        """Freezes what the task never trains (e.g. CSC at ``csc_weight`` 0).

        Before DDP wraps the modules: DDP expects a gradient for every
        trainable parameter of a module whose ``forward`` ran and fails
        at the next step otherwise, and a module left without trainable
        parameters is not wrapped at all (see
        :meth:`speechbrain_ext.tasks.EmbeddingTask.unused_parameters`).
        """
        unused = self.hparams.task.unused_parameters(self.modules)
        for params in unused.values():
            for param in params:
                param.requires_grad_(False)
        if unused:
            logger.info("not trained by this task: %s", ", ".join(unused))

    def compute_forward(self, batch, stage):
        """Training outputs of the task, or embeddings for other stages."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        task = self.hparams.task
        if stage == sb.Stage.TRAIN:
            return task.forward(self.modules, wavs, lens)
        if stage == sb.Stage.VALID and hasattr(task, "information_pairs"):
            pairs = task.information_pairs(self.modules, wavs, lens)
            if pairs is not None:
                self.information_pairs.append(pairs)
        return task.embed(self.modules, wavs, lens)

    def on_stage_start(self, stage, epoch=None):
        """Resets the accumulators and the (z, g) pairs of the stage."""
        super().on_stage_start(stage, epoch)
        self.information_pairs = []

    def information_stats(self):
        """Estimated I(z; g) of this stage's validation pairs, in nats.

        Returns
        -------
        dict
            ``loss_information``: the held-out Gaussian estimate
            (:func:`~speechbrain_ext.losses.information.gaussian_information`)
            on the matched pairs; ``loss_information_shuffled``: the same
            with every g paired with another target's z, which stays near
            0 whatever the model. Empty when the task collects no pairs.
        """
        if not self.information_pairs:
            return {}
        z = gather_for_metrics(
            torch.cat([z for z, _ in self.information_pairs])
        )
        g = gather_for_metrics(
            torch.cat([g for _, g in self.information_pairs])
        )
        generator = torch.Generator().manual_seed(self.SHUFFLE_SEED)
        shuffled = shuffled_partners(g.cpu(), generator)
        return {
            "loss_information": gaussian_information(z, g),
            "loss_information_shuffled": gaussian_information(z, shuffled),
        }

    def compute_objectives(self, outputs, batch, stage):
        """The task's loss (with the speaker labels if it reads them)."""
        labels = None
        if self.hparams.task.needs_speaker_labels:
            labels, _ = batch.spk_id_encoded
        return self.hparams.task.loss(self.modules, outputs, labels)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Counts the batch's terms, then lets the task follow the step."""
        super().on_fit_batch_end(batch, outputs, loss, should_step)
        if should_step:
            self.hparams.task.on_optimizer_step(self.modules)

    def term_sources(self):
        """The task (e.g. an auxiliary loss's terms), then every module."""
        return [self.hparams.task, *super().term_sources()]


def training_precision(requested, device):
    """SpeechBrain's ``--precision`` for a run, resolving ``"auto"``.

    ``"auto"`` is bf16 on a CUDA device that supports it (Ampere and
    later: the step runs in bf16 autocast, with fp32 weights and no loss
    scaling, and the losses of this package compute their logits and
    statistics in fp32), else fp32. CPUs stay in fp32: bf16 autocast there
    is slower on most CPUs. Any other value is returned as given.

    Arguments
    ---------
    requested : str
        ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    device : str
        The run's device, e.g. ``"cuda:0"`` or ``"cpu"``.

    Returns
    -------
    str

    Example
    -------
    >>> training_precision("auto", "cpu")
    'fp32'
    >>> training_precision("fp16", "cpu")
    'fp16'
    """
    if requested != "auto":
        return requested
    if (
        str(device).startswith("cuda")
        and torch.cuda.is_available()
        and torch.cuda.is_bf16_supported()
    ):
        return "bf16"
    return "fp32"


def _resolved_run_opts(run_opts, hparams):
    """The run options as a dict of those given, with a ``precision`` of
    ``"auto"`` (from them or, as SpeechBrain ranks them, the hparams)
    resolved by :func:`training_precision`.

    SpeechBrain's ``RunOptions`` holds every option, given or default; only
    the given ones (``overridden_args``) are kept, so SpeechBrain still
    lets the hparams set the others.
    """
    if run_opts is None:
        given = {}
    elif hasattr(run_opts, "overridden_args"):
        given = {key: run_opts[key] for key in run_opts.overridden_args}
    else:
        given = dict(run_opts)
    requested = given.get("precision", (hparams or {}).get("precision"))
    if requested == "auto":
        device = given.get("device") or sb.utils.distributed.infer_device()
        given["precision"] = training_precision("auto", device)
    return given
