"""Export of trained encoders to folders SpeechBrain's inference loads offline.

The exported folder holds ``hyperparams.yaml`` (a filled-in copy of an
inference template such as the repository's ``hparams/inference_ecapa.yaml``)
and one ``<name>.ckpt`` file per pretrainer loadable. The template's
pretrainer has no ``paths``, so
``EncoderClassifier.from_hparams(source=<folder>)`` reads every loadable from
the folder itself and never reaches for a model hub.

A score calibration (``calibration.json``, a
:class:`~speechbrain_ext.scoring.calibration.LinearCalibration` fitted by
``verify.py --calibrate``) travels in the same folder: pass it to
:func:`export_encoder` or add it later with :func:`add_calibration`;
:class:`~speechbrain_ext.inference.calibrated_recognition.CalibratedSpeakerRecognition`
then returns log-likelihood ratios and decisions at a stated prior.

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
>>> from speechbrain.inference.speaker import EncoderClassifier
>>> tmpdir = getfixture("tmpdir")
>>> model = ECAPA_TDNN(40, channels=[32, 32, 32, 32, 96], lin_neurons=16)
>>> folder = export_encoder(
...     str(tmpdir / "model"),
...     default_template(),
...     model,
...     values={
...         "n_mels": 40,
...         "channels": [32, 32, 32, 32, 96],
...         "lin_neurons": 16,
...     },
... )
>>> encoder = EncoderClassifier.from_hparams(
...     source=folder, savedir=str(tmpdir / "loaded")
... )
>>> encoder.encode_batch(torch.rand(2, 16000)).shape
torch.Size([2, 1, 16])
"""

import importlib.resources
import os
import pathlib
import shutil
import tempfile

import ruamel.yaml
import torch

from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)

__all__ = [
    "CALIBRATION_FILE",
    "add_calibration",
    "default_template",
    "export_best_checkpoint",
    "export_encoder",
    "export_from_hparams",
    "find_classifier",
]

TEMPLATE_NAME = "inference_ecapa.yaml"
CALIBRATION_FILE = "calibration.json"


def default_template(name=TEMPLATE_NAME):
    """Returns the path of one of the package's inference templates.

    Arguments
    ---------
    name : str
        Template file name (the repository keeps them in its top-level
        ``hparams/`` folder, which ships as ``speechbrain_ext/hparams``).

    Returns
    -------
    str
        The installed template, or the checkout's copy when the package is
        imported from a source tree that was never installed.

    Example
    -------
    >>> os.path.basename(default_template())
    'inference_ecapa.yaml'
    """
    candidates = []
    try:
        candidates.append(
            importlib.resources.files("speechbrain_ext.hparams") / name
        )
    except ModuleNotFoundError:  # a source tree on sys.path, not installed
        pass
    # speechbrain_ext/inference/export.py -> the checkout's root
    repo = pathlib.Path(__file__).resolve().parents[2]
    candidates.append(repo / "hparams" / name)
    for path in candidates:
        if path.is_file():
            return str(path)
    raise FileNotFoundError(
        f"inference template {name} is not installed: reinstall "
        "speechbrain_ext (pip install .) so speechbrain_ext/hparams/ holds it"
    )


def _fill_template(template, values, with_classifier):
    """Loads the template keeping its comments and tags, sets ``values``."""
    yaml = ruamel.yaml.YAML()
    with open(template, encoding="utf-8") as fin:
        doc = yaml.load(fin)
    unknown = sorted(set(values) - set(doc))
    if unknown:
        raise KeyError(
            f"{template} has no top-level keys {unknown}; "
            f"settable keys: {sorted(doc)}"
        )
    for key, value in values.items():
        doc[key] = value
    if not with_classifier:
        doc["classifier"] = yaml.load("!new:torch.nn.Identity {}\n")
        del doc["label_encoder"]
        loadables = doc["pretrainer"]["loadables"]
        del loadables["classifier"]
        del loadables["label_encoder"]
    return yaml, doc


def export_encoder(
    export_folder,
    template,
    embedding_model,
    values=None,
    classifier=None,
    label_encoder=None,
    calibration=None,
):
    """Writes an inference folder for ``EncoderClassifier.from_hparams``.

    Arguments
    ---------
    export_folder : str
        Folder to write (created; existing files are overwritten, and
        kept as they were if the export fails).
    template : str
        Inference hyperparams template whose top-level scalar keys describe
        the model (see ``hparams/inference_ecapa.yaml``).
    embedding_model : torch.nn.Module
        The trained embedding network; saved as ``embedding_model.ckpt``.
    values : dict, optional
        Top-level template keys to set, e.g. ``{"n_mels": 80, "channels":
        [...], "lin_neurons": 192, "n_classes": 800}``. They must match the
        trained model or loading the checkpoint fails.
    classifier : torch.nn.Module, optional
        Speaker classifier (e.g. the AAM-softmax head) saved as
        ``classifier.ckpt``; without one the export holds an identity so
        that ``encode_batch`` works and ``classify_batch`` is not offered.
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder, optional
        Speaker label encoder, saved with the classifier.
    calibration : LinearCalibration or str, optional
        Score calibration (or its JSON file) for plain cosine scores of
        this model, saved as ``calibration.json`` (see
        :func:`add_calibration`). Without one, a ``calibration.json`` left
        by an earlier export is removed: it belonged to other weights.

    Returns
    -------
    str
        The export folder.
    """
    if calibration is not None:
        calibration = _exportable_calibration(calibration)
    with_classifier = classifier is not None
    if with_classifier and label_encoder is None:
        raise ValueError("a classifier is exported with its label_encoder")
    yaml, doc = _fill_template(template, dict(values or {}), with_classifier)
    os.makedirs(export_folder, exist_ok=True)
    # Written aside, then moved in: a failed export (a full disk) leaves a
    # previous export whole instead of a new yaml beside old weights.
    staging = tempfile.mkdtemp(prefix=".partial-", dir=export_folder)
    try:
        with open(os.path.join(staging, "hyperparams.yaml"), "w") as fout:
            fout.write(
                "# Exported by "
                "speechbrain_ext.inference.export.export_encoder from\n"
                f"# {os.path.basename(template)}.\n"
            )
            yaml.dump(doc, fout)
        torch.save(
            _cpu_state(embedding_model),
            os.path.join(staging, "embedding_model.ckpt"),
        )
        if with_classifier:
            torch.save(
                _cpu_state(classifier),
                os.path.join(staging, "classifier.ckpt"),
            )
            label_encoder.save(os.path.join(staging, "label_encoder.ckpt"))
        if calibration is not None:
            calibration.to_json(os.path.join(staging, CALIBRATION_FILE))
        for name in os.listdir(staging):
            os.replace(
                os.path.join(staging, name), os.path.join(export_folder, name)
            )
        stale = os.path.join(export_folder, CALIBRATION_FILE)
        if calibration is None and os.path.exists(stale):
            os.remove(stale)
            logger.warning(
                "removed %s: it calibrated the weights of an earlier "
                "export (add a new one with add_calibration)",
                stale,
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_folder


def _exportable_calibration(calibration):
    """Loads a calibration and checks it was fitted on plain cosine scores.

    The exported verifier scores a trial by the cosine of two raw
    embeddings; a map fitted on mean-subtracted or normalised scores would
    give it wrong LLRs.
    """
    from speechbrain_ext.scoring.calibration import LinearCalibration

    if not isinstance(calibration, LinearCalibration):
        calibration = LinearCalibration.from_json(calibration)
    scoring = calibration.info.get("scoring") or {}
    if scoring.get("score_norm", "none") != "none" or scoring.get(
        "mean_norm", False
    ):
        raise ValueError(
            "the calibration was fitted on scores with score_norm "
            f"{scoring.get('score_norm')!r} and mean_norm "
            f"{scoring.get('mean_norm')!r}, but the exported verifier scores "
            "plain cosine: fit it with verify.py --calibrate without "
            "--score_norm and --mean_norm"
        )
    return calibration


def add_calibration(export_folder, calibration):
    """Adds a score calibration to an exported model folder.

    Arguments
    ---------
    export_folder : str
        A folder written by :func:`export_encoder`.
    calibration : LinearCalibration or str
        The calibration or its JSON file (``verify.py --calibrate`` writes
        ``calibration.json``); it must have been fitted on plain cosine
        scores of this model (no score normalisation, no mean
        subtraction), which is what the exported verifier computes.

    Returns
    -------
    str
        The written ``<export_folder>/calibration.json``.

    Raises
    ------
    FileNotFoundError
        If ``export_folder`` holds no ``hyperparams.yaml``.
    ValueError
        If the calibration was fitted on other scores.
    """
    if not os.path.isfile(os.path.join(export_folder, "hyperparams.yaml")):
        raise FileNotFoundError(
            f"{export_folder} is not an exported model (no hyperparams.yaml)"
        )
    calibration = _exportable_calibration(calibration)
    return calibration.to_json(os.path.join(export_folder, CALIBRATION_FILE))


def _cpu_state(module):
    """State dict on the CPU, unwrapped from DDP / DataParallel.

    Modules with training-only heads (e.g. the separative encoder's mask
    head) give their inference weights through ``embedding_state_dict``.
    """
    module = getattr(module, "module", module)
    state = getattr(module, "embedding_state_dict", module.state_dict)()
    return {k: v.detach().cpu() for k, v in state.items()}


def find_classifier(objective):
    """Returns the speaker classifier an objective trains, if any.

    Arguments
    ---------
    objective : torch.nn.Module
        A training objective (AAM-softmax, a weighted sum holding one...).

    Returns
    -------
    torch.nn.Module or None
        The first ``classifier`` attribute found among its submodules.
    """
    for module in objective.modules():
        classifier = getattr(module, "classifier", None)
        if isinstance(classifier, torch.nn.Module):
            return classifier
    return None


def export_best_checkpoint(
    checkpointer,
    embedding_model,
    objective,
    export_folder,
    export_template,
    export_values,
    label_encoder=None,
    label_encoder_file=None,
    min_key="EER",
):
    """Exports the best checkpoint of a training run.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
        The run's checkpointer; its best checkpoint is loaded into
        ``embedding_model`` (and the objective's classifier, if any).
    embedding_model : torch.nn.Module
        The trained encoder.
    objective : torch.nn.Module
        The training objective; an AAM-softmax head in it is exported as
        the classifier.
    export_folder : str
        Where the inference folder is written.
    export_template : str
        The inference template (e.g. :func:`default_template`).
    export_values : dict
        Template keys to set (model sizes, sample rate...).
    label_encoder : CategoricalEncoder, optional
        The run's speaker encoder; read from ``label_encoder_file`` if None
        and the objective has a classifier.
    label_encoder_file : str, optional
        The run's saved speaker encoder.
    min_key : str
        Checkpoint meta key to minimise when choosing the checkpoint.

    Returns
    -------
    str
        The export folder.
    """
    if checkpointer.recover_if_possible(min_key=min_key) is None:
        raise FileNotFoundError(
            f"no checkpoint with '{min_key}' in {checkpointer.checkpoints_dir}"
            ": train first"
        )
    classifier = find_classifier(objective)
    if classifier is not None and label_encoder is None:
        from speechbrain.dataio.encoder import CategoricalEncoder

        label_encoder = CategoricalEncoder()
        label_encoder.load(label_encoder_file)
    values = dict(export_values)
    if classifier is not None:
        # Rows of the classifier, not len(label_encoder): the encoder also
        # numbers validation speakers, which the classifier never saw.
        values["n_classes"] = classifier.weight.shape[0]
    return export_encoder(
        export_folder,
        export_template,
        embedding_model,
        values=values,
        classifier=classifier,
        label_encoder=label_encoder,
    )


def export_from_hparams(hparams, label_encoder=None, min_key="EER"):
    """:func:`export_best_checkpoint` with the arguments of a training YAML.

    Arguments
    ---------
    hparams : dict
        Loaded training hparams with ``checkpointer``, ``embedding_model``,
        ``objective``, ``export_folder``, ``export_template``,
        ``export_values`` and ``label_encoder_file``.
    label_encoder : CategoricalEncoder, optional
        The run's speaker encoder; read from ``label_encoder_file`` if None.
    min_key : str
        Checkpoint meta key to minimise when choosing the checkpoint.

    Returns
    -------
    str
        The export folder.
    """
    # .get: a run without checkpoints is named before any other key.
    return export_best_checkpoint(
        hparams["checkpointer"],
        hparams.get("embedding_model"),
        hparams.get("objective"),
        hparams.get("export_folder"),
        hparams.get("export_template"),
        hparams.get("export_values"),
        label_encoder=label_encoder,
        label_encoder_file=hparams.get("label_encoder_file"),
        min_key=min_key,
    )
