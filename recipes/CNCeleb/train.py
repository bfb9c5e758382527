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
    python train.py hparams/csc_finetune.yaml --data_folder=/path/CN-Celeb_flac

At the end the best checkpoint (lowest validation EER) is exported to
``<output_folder>/export``, a folder that
``speechbrain.inference.speaker.EncoderClassifier.from_hparams`` loads
offline. ``export.py`` does the same for any finished or interrupted run.

Authors
 * speechbrain_ext contributors 2026
"""

import logging
import os
import random
import sys

import torch
import torch.nn.functional as F
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain_ext.augment.bank import ensure_bank_csv
from speechbrain_ext.brain import TaskBrain
from speechbrain_ext.data.batches import collate_readable
from speechbrain_ext.data.manifest import check_manifest, read_manifest
from speechbrain_ext.data.pipelines import (
    add_speaker_labels,
    audio_pipelines,
    speaker_loader_options,
    speakers_of,
)
from speechbrain_ext.distributed import (
    gather_for_metrics,
    process_rank,
    world_size,
)
from speechbrain_ext.inference.export import export_best_checkpoint
from speechbrain_ext.output_checks import check_writable
from speechbrain_ext.scoring import compute_eer_mindcf

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process, run_on_main

logger = logging.getLogger(__name__)

# What the pipelines below read from a prepared manifest row; spk_id too
# where speakers are read (validation, supervised training).
MANIFEST_COLUMNS = ("ID", "duration", "wav", "start", "stop")


class SpeakerEmbeddingBrain(TaskBrain):
    """Trains an embedding model with whatever task the hparams build.

    The task (``speechbrain_ext.tasks``) turns a batch of clean crops into
    the loss (``speechbrain_ext.brain.TaskBrain``, which also skips
    non-finite batches, runs DDP on CPUs, warms the learning rate up and
    logs the loss terms); validation embeds every model the same way and
    scores all-pairs trials, so every objective is selected by the same
    criterion.
    """

    def compute_objectives(self, outputs, batch, stage):
        """The task's loss; validation only collects embeddings.

        Validation speakers may be unseen by a classifier, so validation
        scores trials instead of evaluating the objective (see
        ``_validation_eer``).
        """
        if stage == sb.Stage.TRAIN:
            return super().compute_objectives(outputs, batch, stage)
        labels, _ = batch.spk_id_encoded
        self.valid_embeddings.append(outputs.detach().squeeze(1).float())
        self.valid_labels.append(labels.detach().view(-1))
        return torch.zeros((), device=self.device)

    def on_stage_start(self, stage, epoch=None):
        """Resets the accumulators and the validation embeddings."""
        super().on_stage_start(stage, epoch)
        self.valid_embeddings, self.valid_labels = [], []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, anneals and checkpoints on the validation EER."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = self.train_stage_stats(stage_loss)
            return
        stats = {**self._validation_eer(), **self.information_stats()}
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
            len(labels),
            world_size(),
        )
        upper = torch.triu(torch.ones(len(labels), len(labels)), 1).bool()
        scores = (emb @ emb.T)[upper]
        targets = (labels[:, None] == labels[None, :])[upper]
        if targets.all() or not targets.any():
            logger.warning("validation holds one class only: no EER")
            return {"EER": float("nan"), "minDCF": float("nan")}
        eer, min_dcf, _ = compute_eer_mindcf(scores.numpy(), targets.numpy())
        return {"EER": 100 * eer, "minDCF": min_dcf}


def manifest_replacements(hparams):
    """Values of the manifests' ``$data_root`` (and CN-Celeb2's
    ``$data_root2``) placeholders."""
    cnceleb2 = hparams["prepare_options"].get("cnceleb2_folder")
    return {
        "data_root": hparams["data_folder"],
        "data_root2": cnceleb2 or hparams["data_folder"],
    }


def load_manifests(hparams):
    """The training set and this process's share of the validation subset.

    A fixed random subset (``valid_max_utterances``) keeps all-pairs
    validation trials affordable; under DDP each rank embeds its own share
    and the EER is computed on the embeddings gathered from every rank
    (see ``_validation_eer``).
    """
    replacements = manifest_replacements(hparams)

    def read(path, with_speakers):
        """The manifest as a dataset, checked line by line first."""
        columns = MANIFEST_COLUMNS + (("spk_id",) if with_speakers else ())
        check_manifest(path, columns, replacements)
        return sb.dataio.dataset.DynamicItemDataset.from_csv(
            path, replacements=replacements
        )

    # Self-supervised training never reads the training speakers.
    supervised = hparams["task"].needs_speaker_labels
    train_data = read(hparams["train_annotation"], supervised)
    valid_data = read(hparams["valid_annotation"], True)
    valid_ids = list(valid_data.data_ids)
    random.Random(hparams["seed"]).shuffle(valid_ids)
    kept = valid_ids[: hparams["valid_max_utterances"]]
    kept = set(sorted(kept)[process_rank() :: world_size()])
    valid_data = valid_data.filtered_sorted(
        sort_key="duration", key_test={"id": lambda uid: uid in kept}
    )
    return train_data, valid_data


def dataio_prep(hparams):
    """Builds the training/validation datasets and their pipelines."""
    train_data, valid_data = load_manifests(hparams)
    train_audio, valid_audio = audio_pipelines(
        hparams["sample_rate"],
        hparams["sentence_len"],
        hparams["valid_max_seconds"],
    )
    train_data.add_dynamic_item(train_audio)
    valid_data.add_dynamic_item(valid_audio)
    if len(set(speakers_of(valid_data))) < 2:
        raise ValueError(
            f"{hparams['valid_annotation']} holds fewer than two speakers, "
            "so validation trials cannot be scored: raise "
            "prepare_options.valid_ratio or use split_mode: utterance"
        )
    # Self-supervised tasks never see the training speakers: only the
    # held-out validation speakers are read, to group validation trials.
    labelled = [valid_data]
    if hparams["task"].needs_speaker_labels:
        labelled.insert(0, train_data)  # classes 0..N-1: training speakers
    label_encoder = add_speaker_labels(labelled, hparams["label_encoder_file"])
    sb.dataio.dataset.set_output_keys(
        [valid_data], ["id", "sig", "spk_id_encoded"]
    )
    train_keys = ["id", "sig"]
    if hparams["task"].needs_speaker_labels:
        train_keys.append("spk_id_encoded")
    sb.dataio.dataset.set_output_keys([train_data], train_keys)
    return train_data, valid_data, label_encoder


def train_loader_options(hparams, train_data):
    """The training DataLoader options (see ``speaker_loader_options``)."""
    return speaker_loader_options(
        hparams["train_dataloader_opts"],
        train_data,
        make_sampler=hparams.get("train_sampler"),
        speaker_labels=hparams["task"].needs_speaker_labels,
    )


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
    ensure_bank_csv(
        hparams.get("noise_csv"), hparams.get("prepare_noise"), "noise_csv"
    )
    ensure_bank_csv(
        hparams.get("rir_csv"), hparams.get("prepare_rirs"), "rir_csv"
    )


def load_pretrained(pretrainer, hparams_file):
    """Initialises modules from a pretrainer's local files.

    The files are checked first so that a fine-tuning run started before
    its pretraining names the missing file and the command that writes it,
    instead of failing inside the collector.
    """
    for name, path in pretrainer.paths.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{hparams_file} initialises {name} from {path}, which does "
                "not exist: train that model first (for csc_finetune.yaml: "
                "python train.py hparams/csc.yaml with the same --seed and "
                "--data_folder) or pass --pretrained_encoder=<its export "
                "folder>"
            )
    run_on_main(pretrainer.collect_files)
    pretrainer.load_collected()


def size_classifier(hparams_file, overrides, hparams):
    """Reloads the hparams with ``n_train_speakers`` counted from the data.

    A classifier head must have one output per training speaker, which is
    only known once the corpus is prepared.
    """
    if "n_train_speakers" not in hparams:  # objective without classifier
        return hparams
    rows = read_manifest(
        hparams["train_annotation"],
        manifest_replacements(hparams),
        columns=MANIFEST_COLUMNS + ("spk_id",),
    )
    speakers = {row["spk_id"] for row in rows}
    if hparams["n_train_speakers"] == len(speakers):
        return hparams
    logger.info(
        "%d training speakers in %s", len(speakers), hparams["train_annotation"]
    )
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
    if str(run_opts.get("device", "")).startswith("cuda"):
        # Training crops have one length, so cuDNN's autotuner picks the
        # fastest convolution kernels once and reuses them every step.
        torch.backends.cudnn.benchmark = True
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
        load_pretrained(hparams["pretrainer"], hparams_file)
    brain = SpeakerEmbeddingBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        lr_warmup_steps=hparams.get("lr_warmup_steps", 0),
        sync_batchnorm=hparams.get("sync_batchnorm", False),
    )
    train_options = train_loader_options(hparams, train_data)
    brain.train_sampler = train_options.get("batch_sampler")
    brain.fit(
        brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=train_options,
        valid_loader_kwargs={
            "collate_fn": collate_readable,
            **hparams["valid_dataloader_opts"],
        },
    )
    if if_main_process():
        folder = export_best_checkpoint(
            hparams["checkpointer"],
            hparams["embedding_model"],
            hparams["objective"],
            hparams["export_folder"],
            hparams["export_template"],
            hparams["export_values"],
            label_encoder=label_encoder,
        )
        logger.info("exported the best checkpoint to %s", folder)
        print(f"Exported model: {folder}")
        if hparams.get("export_onnx", False):  # off unless the yaml says
            from speechbrain_ext.inference.onnx_export import export_onnx

            print(f"Exported ONNX model: {export_onnx(folder)}")
    # Every process leaves the group together: a rank that exits while
    # another still exports can abort in gloo's teardown.
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
