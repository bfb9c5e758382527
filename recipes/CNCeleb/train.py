#!/usr/bin/env python3
"""Trains speaker embeddings on CN-Celeb (or any <speaker>/<utt> corpus).

One script serves every objective: the hparams file builds the embedding
model, the views, the objective and the *task* that ties them together
(``speechbrain_ext.tasks``): supervised AAM-softmax, SupCon, AAM-SupCon and
their hybrid; self-supervised SimCLR and CSC (contrastive separative
coding), whose training data pipeline never reads a speaker label; and
fine-tuning of a pretrained encoder (``pretrainer`` in the hparams). This
script only says how data flows.

To run:
    python train.py hparams/aam_softmax.yaml --data_folder=/path/CN-Celeb_flac
    python train.py hparams/csc.yaml --data_folder=/path/CN-Celeb_flac
    python train.py hparams/csc_finetune.yaml \\
        --data_folder=/path/CN-Celeb_flac \\
        --pretrained_encoder=results/csc/1986/export

At the end the best checkpoint (lowest validation EER) is exported to
``<output_folder>/export``, a folder that
``speechbrain.inference.speaker.EncoderClassifier.from_hparams`` loads
offline. ``export.py`` does the same for any finished or interrupted run.

Authors
 * speechbrain_ext contributors 2026
"""

import csv
import logging
import os
import random
import sys

import speechbrain as sb
import torch
import torch.nn.functional as F
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

from speechbrain_ext.audio import AudioError, load_audio
from speechbrain_ext.distributed import (
    gather_for_metrics,
    process_rank,
    world_size,
)
from speechbrain_ext.export import export_from_hparams
from speechbrain_ext.output_checks import check_writable
from speechbrain_ext.scoring import compute_eer_mindcf

logger = logging.getLogger(__name__)


class NonFiniteLoss(Exception):
    """Raised inside ``fit_batch`` to skip a batch whose loss is NaN/inf."""


class SpeakerEmbeddingBrain(sb.core.Brain):
    """Trains an embedding model with whatever task the hparams build.

    The task (``speechbrain_ext.tasks``) turns a batch of clean crops into
    the loss; validation embeds every model the same way and scores
    all-pairs trials, so every objective is selected by the same criterion.
    """

    def compute_forward(self, batch, stage):
        """Training outputs of the task, or embeddings for validation."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        if stage == sb.Stage.TRAIN:
            return self.hparams.task.forward(self.modules, wavs, lens)
        return self.hparams.task.embed(self.modules, wavs, lens)

    def compute_objectives(self, outputs, batch, stage):
        """The task's loss; validation only collects embeddings.

        Validation speakers may be unseen by a classifier, so validation
        scores trials instead of evaluating the objective (see
        ``_validation_eer``).
        """
        if stage != sb.Stage.TRAIN:
            labels, _ = batch.spk_id_encoded
            self.valid_embeddings.append(outputs.detach().squeeze(1).float())
            self.valid_labels.append(labels.detach().view(-1))
            return torch.zeros((), device=self.device)
        labels = None
        if self.hparams.task.needs_speaker_labels:
            labels, _ = batch.spk_id_encoded
        return self.hparams.task.loss(self.modules, outputs, labels)

    def _wrap_distributed(self):
        """Wraps trainable modules in DDP; on CPUs without SyncBatchNorm.

        SpeechBrain 1.1 converts every BatchNorm to ``SyncBatchNorm``,
        which only runs on GPUs, so a CPU (gloo) run would fail; there each
        rank keeps its own batch statistics instead.
        """
        if not self.distributed_launch or not str(self.device).startswith(
            "cpu"
        ):
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = torch.nn.parallel.DistributedDataParallel(
                    module, find_unused_parameters=self.find_unused_parameters
                )

    def on_fit_batch_start(self, batch, should_step):
        """Remembers the batch's ids; warms the learning rate up if set.

        With ``lr_warmup_steps`` W > 0 in the hparams, optimizer step s < W
        (SpeechBrain's ``optimizer_step``, checkpointed with the Brain)
        runs at lr_epoch * (s + 1) / W, where lr_epoch is the rate the
        epoch scheduler set: the param group's lr at the first warm-up step
        of each epoch, or whenever it is not the rate the warm-up last
        gave it. Each group keeps lr_epoch in ``base_lr_epoch``, that rate
        in ``warmup_lr`` and the epoch in ``warmup_epoch`` (checkpointed
        with the optimizer, so a resumed run continues). At step W every
        group gets its lr_epoch back and the three keys are removed.
        """
        self.batch_ids = list(batch.id)
        if not hasattr(self.hparams, "lr_warmup_steps"):
            return
        warmup = self.hparams.lr_warmup_steps or 0
        step = self.optimizer_step
        epoch = getattr(getattr(self.hparams, "epoch_counter", None),
                        "current", None)
        for group in self.optimizer.param_groups:
            if step >= warmup and "warmup_lr" not in group:
                continue
            if (group.get("warmup_epoch") != epoch
                    or group["lr"] != group.get("warmup_lr")):
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
        buffers = [
            (buffer, buffer.detach().clone())
            for buffer in self.modules.buffers()
            if buffer.is_floating_point()
        ]
        try:
            return super().fit_batch(batch)
        except NonFiniteLoss:
            self.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            # Keeps the running average of the finite losses unchanged.
            return torch.tensor(self.avg_train_loss)

    def check_loss_isfinite(self, loss):
        """Skips a non-finite loss; stops after too many in a row.

        SpeechBrain's own check still back-propagates the NaN and steps
        the optimizer, which poisons every parameter. Here the batch is
        skipped before ``backward`` and counted; after more than
        ``--nonfinite_patience`` consecutive skips training stops with a
        message naming the batch, and the last checkpoint stays intact.
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
        logger.warning(
            "skipped a batch with a non-finite loss (%s) at step %d: %s",
            loss.item(), self.step, ", ".join(self.batch_ids),
        )
        if self.consecutive_nonfinite > self.nonfinite_patience:
            folder = getattr(self.checkpointer, "checkpoints_dir", "save/")
            raise RuntimeError(
                f"training stopped: the loss was NaN/inf for "
                f"{self.consecutive_nonfinite} batches in a row (step "
                f"{self.step}; {self.nonfinite_skipped} skipped this epoch); "
                f"last batch: {', '.join(self.batch_ids)}. The last "
                f"checkpoint in {folder} is "
                "intact: resume with a lower learning rate, without mixed "
                "precision, or after checking that audio."
            )
        raise NonFiniteLoss

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Counts the terms of a trained batch (never of a skipped one).

        After an optimizer step the task may update state that follows
        the weights (e.g. CSC's exponential-moving-average teacher).
        """
        self._accumulate_terms()
        if should_step:
            self.hparams.task.on_optimizer_step(self.modules)

    def _accumulate_terms(self):
        """Keeps running sums of the terms the task and losses report.

        A hybrid objective reports its separate terms, CSC its information
        bound and collapse monitors, a task with an auxiliary loss its
        speaker term.
        """
        # hparams hold the modules themselves; self.modules may hold DDP
        # wrappers, which do not forward attributes.
        modules = getattr(self.hparams, "modules", None) or {}
        sources = [self.hparams.task, *modules.values()]
        terms = {}
        for source in sources:
            terms.update(getattr(source, "last_term_tensors", None) or {})
        # Detached tensors: summed on the device, read once per stage.
        for name, value in terms.items():
            self.term_sums[name] = self.term_sums.get(name, 0.0) + value
        self.term_count += 1 if terms else 0

    def on_stage_start(self, stage, epoch=None):
        """Resets the per-stage accumulators."""
        self.term_sums, self.term_count = {}, 0
        self.nonfinite_skipped, self.consecutive_nonfinite = 0, 0
        self.valid_embeddings, self.valid_labels = [], []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, anneals and checkpoints on the validation EER."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            if self.nonfinite_skipped:
                self.train_stats["nonfinite_skipped"] = self.nonfinite_skipped
            for name, total in self.term_sums.items():
                self.train_stats[f"loss_{name}"] = (
                    float(total) / self.term_count
                )
            return
        stats = self._validation_eer()
        if stage == sb.Stage.VALID:
            old_lr, new_lr = self.hparams.lr_annealing(epoch)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": old_lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"EER": stats["EER"]},
                min_keys=["EER"],
                num_to_keep=self.hparams.keep_checkpoints,
            )

    def _validation_eer(self):
        """EER (%) and minDCF of all-pairs cosine trials on validation data.

        Works for every objective, classifier or not, so checkpoints of
        different objectives are selected by the same criterion.
        """
        emb = gather_for_metrics(torch.cat(self.valid_embeddings))
        labels = gather_for_metrics(torch.cat(self.valid_labels))
        emb, labels = F.normalize(emb.cpu(), dim=-1), labels.cpu()
        logger.info(
            "validation trials over %d utterances from %d process(es)",
            len(labels), world_size(),
        )
        upper = torch.triu(torch.ones(len(labels), len(labels)), 1).bool()
        scores = (emb @ emb.T)[upper]
        targets = (labels[:, None] == labels[None, :])[upper]
        if targets.all() or not targets.any():
            logger.warning("validation holds one class only: no EER")
            return {"EER": float("nan"), "minDCF": float("nan")}
        eer, min_dcf, _ = compute_eer_mindcf(scores.numpy(), targets.numpy())
        return {"EER": 100 * eer, "minDCF": min_dcf}


def crop_or_repeat(wav, length):
    """Tiles a waveform shorter than ``length`` samples, then cuts it.

    CN-Celeb holds many utterances shorter than the training crop; repeating
    them keeps the speaker's voice in every frame where zero padding would
    teach the model silence.

    Arguments
    ---------
    wav : torch.Tensor
        Waveform [time].
    length : int
        Samples wanted.

    Returns
    -------
    torch.Tensor
        Waveform [length].

    Example
    -------
    >>> crop_or_repeat(torch.tensor([1.0, 2.0, 3.0]), 7)
    tensor([1., 2., 3., 1., 2., 3., 1.])
    """
    if len(wav) < length:
        wav = wav.repeat(length // len(wav) + 1)
    return wav[:length]


def speakers_of(dataset):
    """The ``spk_id`` of every item, read from the manifest (no audio)."""
    return [dataset.data[uid]["spk_id"] for uid in dataset.data_ids]


def dataio_prep(hparams):
    """Builds the training/validation datasets and their pipelines."""
    # CN-Celeb2 rows are written relative to $data_root2.
    cnceleb2 = hparams["prepare_options"].get("cnceleb2_folder")
    replacements = {
        "data_root": hparams["data_folder"],
        "data_root2": cnceleb2 or hparams["data_folder"],
    }
    train_data = sb.dataio.dataset.DynamicItemDataset.from_csv(
        hparams["train_annotation"], replacements=replacements
    )
    valid_data = sb.dataio.dataset.DynamicItemDataset.from_csv(
        hparams["valid_annotation"], replacements=replacements
    )
    # A fixed random subset keeps all-pairs validation trials affordable.
    valid_ids = list(valid_data.data_ids)
    random.Random(hparams["seed"]).shuffle(valid_ids)
    kept = valid_ids[: hparams["valid_max_utterances"]]
    # Under DDP each rank embeds its own share; the EER is computed on the
    # embeddings gathered from every rank (see _validation_eer).
    kept = set(sorted(kept)[process_rank() :: world_size()])
    valid_data = valid_data.filtered_sorted(
        sort_key="duration", key_test={"id": lambda uid: uid in kept}
    )
    sample_rate = hparams["sample_rate"]
    crop = int(hparams["sentence_len"] * sample_rate)
    max_valid = int(hparams["valid_max_seconds"] * sample_rate)

    def read_row(wav, start, stop, duration, random_crop):
        """Reads one manifest row: a file segment or several joined files."""
        paths = wav.split(";")
        if len(paths) > 1:  # consecutive short utterances joined in prep
            wavs = [load_audio(path, 0, None, sample_rate) for path in paths]
            return torch.cat(wavs)
        start, stop, seconds = int(start), int(stop), float(duration)
        if random_crop and seconds > hparams["sentence_len"]:
            # Read only the crop; start/stop count samples at the file's rate.
            span = int((stop - start) * hparams["sentence_len"] / seconds)
            start = random.randint(start, stop - span)
            stop = start + span
        return load_audio(paths[0], start, stop, sample_rate)

    def safe_read(wav, start, stop, duration, random_crop):
        """Substitutes silence for a file that vanished after preparation."""
        try:
            sig = read_row(wav, start, stop, duration, random_crop)
        except AudioError as err:
            logger.error("skipping unreadable audio in training: %s", err)
            sig = torch.zeros(sample_rate)
        if random_crop:
            offset = random.randint(0, max(0, len(sig) - crop))
            return crop_or_repeat(sig[offset:], crop)
        return sig[:max_valid]

    @sb.utils.data_pipeline.takes("wav", "start", "stop", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def train_audio(wav, start, stop, duration):
        """A random training crop of the row (short rows are tiled)."""
        return safe_read(wav, start, stop, duration, random_crop=True)

    @sb.utils.data_pipeline.takes("wav", "start", "stop", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def valid_audio(wav, start, stop, duration):
        """The row's audio from its start, at most valid_max_seconds."""
        return safe_read(wav, start, stop, duration, random_crop=False)

    label_encoder = sb.dataio.encoder.CategoricalEncoder()

    @sb.utils.data_pipeline.takes("spk_id")
    @sb.utils.data_pipeline.provides("spk_id", "spk_id_encoded")
    def label_pipeline(spk_id):
        """The speaker id and its encoded class index."""
        yield spk_id
        yield label_encoder.encode_sequence_torch([spk_id])

    train_data.add_dynamic_item(train_audio)
    valid_data.add_dynamic_item(valid_audio)
    # Self-supervised tasks never see the training speakers: only the
    # held-out validation speakers are read, to group validation trials.
    labelled = [valid_data]
    if hparams["task"].needs_speaker_labels:
        labelled.insert(0, train_data)  # classes 0..N-1: training speakers
    sb.dataio.dataset.add_dynamic_item(labelled, label_pipeline)
    label_encoder.load_or_create(
        path=hparams["label_encoder_file"],
        from_didatasets=labelled,
        output_key="spk_id",
    )
    if len(set(speakers_of(valid_data))) < 2:
        raise ValueError(
            f"{hparams['valid_annotation']} holds fewer than two speakers, "
            "so validation trials cannot be scored: raise "
            "prepare_options.valid_ratio or use split_mode: utterance"
        )
    label_encoder.expect_len(
        len(set().union(*(speakers_of(data) for data in labelled)))
    )
    sb.dataio.dataset.set_output_keys(
        [valid_data], ["id", "sig", "spk_id_encoded"]
    )
    train_keys = ["id", "sig"]
    if hparams["task"].needs_speaker_labels:
        train_keys.append("spk_id_encoded")
    sb.dataio.dataset.set_output_keys([train_data], train_keys)
    return train_data, valid_data, label_encoder


def train_loader_options(hparams, train_data):
    """Loader options, with a speaker-balanced batch sampler if configured.

    Brain only calls ``set_epoch`` on ``brain.train_sampler``; the caller
    sets it to the returned ``batch_sampler`` so epochs differ.
    """
    options = dict(hparams["train_dataloader_opts"])
    make_sampler = hparams.get("train_sampler")
    if make_sampler is not None and not hparams["task"].needs_speaker_labels:
        raise ValueError(
            "train_sampler balances speakers, but the task is "
            "self-supervised and must not read speaker labels: remove "
            "train_sampler from the hparams"
        )
    if make_sampler is not None:
        options["batch_sampler"] = make_sampler(speakers_of(train_data))
        for key in ("batch_size", "shuffle", "drop_last"):
            options.pop(key, None)
    return options


def prepare_corpus(hparams):
    """Prepares the corpus the hparams name, on the main process only.

    Skipped when ``prep_folder`` already holds a preparation with the same
    options (see ``cnceleb_prepare``).
    """
    recipe_folder = os.path.dirname(os.path.abspath(__file__))
    if recipe_folder not in sys.path:
        sys.path.insert(0, recipe_folder)
    from cnceleb_prepare import prepare_data

    run_on_main(
        prepare_data,
        kwargs={
            "data_format": hparams["data_format"],
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["prep_folder"],
            **hparams["prepare_options"],
        },
    )


def prepare_augmentation_sources(hparams):
    """Generates noise and simulated RIRs unless their CSVs already exist."""
    for csv_key, prepare_key in (
        ("noise_csv", "prepare_noise"),
        ("rir_csv", "prepare_rirs"),
    ):
        if hparams.get(csv_key) is None or os.path.exists(hparams[csv_key]):
            continue
        run_on_main(hparams[prepare_key])
        if not os.path.exists(hparams[csv_key]):
            raise FileNotFoundError(
                f"{prepare_key} did not write {csv_key}={hparams[csv_key]}"
            )


def size_classifier(hparams_file, overrides, hparams):
    """Reloads the hparams with ``n_train_speakers`` counted from the data.

    A classifier head must have one output per training speaker, which is
    only known once the corpus is prepared.
    """
    if "n_train_speakers" not in hparams:  # objective without classifier
        return hparams
    with open(hparams["train_annotation"], encoding="utf-8") as fin:
        speakers = {row["spk_id"] for row in csv.DictReader(fin)}
    if hparams["n_train_speakers"] == len(speakers):
        return hparams
    logger.info("%d training speakers in %s", len(speakers),
                hparams["train_annotation"])
    overrides = dict(yaml.safe_load(overrides or "") or {})
    overrides["n_train_speakers"] = len(speakers)
    with open(hparams_file, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides)


def load_hparams(hparams_file, overrides):
    """Loads the hparams, naming the folder if one cannot be created.

    Building the hparams already creates folders (the checkpointer's, the
    log's), so an unwritable ``output_folder`` fails here, before anything
    else runs.
    """
    try:
        with open(hparams_file, encoding="utf-8") as fin:
            return load_hyperpyyaml(fin, overrides)
    except OSError as error:
        if error.filename is None or error.filename == hparams_file:
            raise
        raise type(error)(
            error.errno,
            f"cannot write to output folder {error.filename} named by "
            f"{hparams_file} ({error.strerror}): fix its permissions or "
            "choose another --output_folder",
        ) from error


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = load_hparams(hparams_file, overrides)
    # A read-only or full disk fails now, not at the first checkpoint.
    check_writable(hparams["output_folder"])
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    prepare_corpus(hparams)
    prepare_augmentation_sources(hparams)
    hparams = size_classifier(hparams_file, overrides, hparams)

    train_data, valid_data, label_encoder = dataio_prep(hparams)
    if "pretrainer" in hparams:  # e.g. fine-tuning a CSC encoder
        run_on_main(hparams["pretrainer"].collect_files)
        hparams["pretrainer"].load_collected()
    brain = SpeakerEmbeddingBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    train_options = train_loader_options(hparams, train_data)
    brain.train_sampler = train_options.get("batch_sampler")
    brain.fit(
        brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=train_options,
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    if if_main_process():
        folder = export_from_hparams(hparams, label_encoder)
        logger.info("exported the best checkpoint to %s", folder)
        print(f"Exported model: {folder}")
        if hparams.get("export_onnx", False):  # off unless the yaml says
            from speechbrain_ext.onnx_export import export_onnx

            print(f"Exported ONNX model: {export_onnx(folder)}")
