"""Data pipelines of speaker-embedding training on prepared manifests.

The pieces a training script composes (the CN-Celeb recipe's ``train.py``
does, and so does ``bench/throughput.py`` to time the same loading): the
``sig`` pipelines that read a random training crop or the validation
audio of a manifest row (:mod:`speechbrain_ext.data.manifest`), and the
DataLoader options, with a speaker-balanced batch sampler when one is
given and :func:`speechbrain_ext.data.batches.collate_readable` so that an
unreadable file costs its item, not the run.

Example
-------
>>> import torch
>>> from speechbrain_ext.data.audio import save_audio
>>> path = str(getfixture("tmpdir") / "a.wav")
>>> save_audio(path, torch.ones(48000), 16000)
>>> train_audio, valid_audio = audio_pipelines(16000, 1.0, 2.0)
>>> train_audio(path, "0", "48000", "3.0").shape
torch.Size([16000])
>>> valid_audio(path, "0", "48000", "3.0").shape
torch.Size([32000])
>>> print(train_audio(path + ".gone", "0", "48000", "3.0"))
None
"""

import logging
import random

import speechbrain as sb
from speechbrain_ext.data.audio import AudioError
from speechbrain_ext.data.batches import collate_readable
from speechbrain_ext.data.manifest import load_row_audio, split_wav_paths

__all__ = [
    "add_speaker_labels",
    "audio_pipelines",
    "crop_or_repeat",
    "speaker_loader_options",
    "worker_options",
    "speakers_of",
]

logger = logging.getLogger(__name__)


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
    >>> import torch
    >>> crop_or_repeat(torch.tensor([1.0, 2.0, 3.0]), 7)
    tensor([1., 2., 3., 1., 2., 3., 1.])
    """
    if len(wav) < length:
        wav = wav.repeat(length // len(wav) + 1)
    return wav[:length]


def speakers_of(dataset):
    """The ``spk_id`` of every item, read from the manifest (no audio)."""
    return [dataset.data[uid]["spk_id"] for uid in dataset.data_ids]


def audio_pipelines(sample_rate, sentence_len, valid_max_seconds):
    """The ``sig`` pipelines: a random training crop, the validation audio.

    Both take a row's ``wav, start, stop, duration``. A long single-file
    row is read only over a random span of ``sentence_len`` seconds; a
    joined or short row is read whole, and a crop shorter than
    ``sentence_len`` is tiled (:func:`crop_or_repeat`). Validation reads
    the row from its start, at most ``valid_max_seconds``.

    An unreadable file (deleted or corrupted after preparation) gives no
    signal: the pipeline logs the file and the error and returns None, and
    :func:`speechbrain_ext.data.batches.collate_readable` drops the item
    from its batch, rather than training on audio that is not the
    speaker's under the speaker's label.

    Arguments
    ---------
    sample_rate : int
        Expected sample rate of the audio.
    sentence_len : float
        Training crop, in seconds.
    valid_max_seconds : float
        Longest validation audio, in seconds.

    Returns
    -------
    tuple
        ``(train_audio, valid_audio)`` dynamic items providing ``sig``.
    """
    crop = int(sentence_len * sample_rate)
    max_valid = int(valid_max_seconds * sample_rate)

    def read_row(row, random_crop):
        """Reads one row; a random crop of a long single-file row."""
        start, stop = int(row["start"]), int(row["stop"])
        seconds = float(row["duration"])
        single = len(split_wav_paths(row["wav"])) == 1
        if single and random_crop and seconds > sentence_len:
            # Read only the crop; start/stop count samples at the file's rate.
            span = int((stop - start) * sentence_len / seconds)
            start = random.randint(start, stop - span)
            stop = start + span
        return load_row_audio(row, sample_rate, start, stop)

    def read_or_drop(row, random_crop):
        """The row's crop (or validation audio); None if unreadable."""
        try:
            sig = read_row(row, random_crop)
        except AudioError as err:
            logger.error("dropping unreadable audio from its batch: %s", err)
            return None
        if random_crop:
            offset = random.randint(0, max(0, len(sig) - crop))
            return crop_or_repeat(sig[offset:], crop)
        return sig[:max_valid]

    @sb.utils.data_pipeline.takes("wav", "start", "stop", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def train_audio(wav, start, stop, duration):
        """A random training crop of the row (short rows are tiled)."""
        row = {"wav": wav, "start": start, "stop": stop, "duration": duration}
        return read_or_drop(row, random_crop=True)

    @sb.utils.data_pipeline.takes("wav", "start", "stop", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def valid_audio(wav, start, stop, duration):
        """The row's audio from its start, at most valid_max_seconds."""
        row = {"wav": wav, "start": start, "stop": stop, "duration": duration}
        return read_or_drop(row, random_crop=False)

    return train_audio, valid_audio


# DataLoader options that only exist with worker processes.
WORKER_ONLY_OPTIONS = ("persistent_workers", "prefetch_factor")


def worker_options(dataloader_opts):
    """Loader options without the worker-only ones when there are no workers.

    ``torch.utils.data.DataLoader`` refuses ``persistent_workers`` and
    ``prefetch_factor`` with ``num_workers=0``, so hparams that set them for
    a GPU run still work with ``--num_workers=0`` (tests, debugging).

    Arguments
    ---------
    dataloader_opts : dict
        Loader options, e.g. the hparams' ``train_dataloader_opts``.

    Returns
    -------
    dict
        A copy, without the worker-only options if ``num_workers`` is 0 or
        missing.

    Example
    -------
    >>> opts = {
    ...     "num_workers": 0,
    ...     "persistent_workers": True,
    ...     "prefetch_factor": 4,
    ... }
    >>> worker_options(opts)
    {'num_workers': 0}
    >>> worker_options(dict(opts, num_workers=2)) == dict(opts, num_workers=2)
    True
    """
    options = dict(dataloader_opts)
    if not options.get("num_workers"):
        for key in WORKER_ONLY_OPTIONS:
            options.pop(key, None)
    return options


def speaker_loader_options(
    dataloader_opts, train_data, make_sampler=None, speaker_labels=True
):
    """Training DataLoader options, with a speaker-balanced batch sampler.

    Brain only calls ``set_epoch`` on ``brain.train_sampler``; the caller
    sets it to the returned ``batch_sampler`` so epochs differ.

    Arguments
    ---------
    dataloader_opts : dict
        The hparams' loader options (``batch_size``, ``shuffle``...).
    train_data : DynamicItemDataset
        The training set (its ``spk_id`` column feeds the sampler).
    make_sampler : callable, optional
        ``make_sampler(speaker_of_each_item)`` -> batch sampler (e.g.
        ``speechbrain_ext.data.samplers.PKSampler`` with P and K bound); it
        replaces ``batch_size``, ``shuffle`` and ``drop_last``.
    speaker_labels : bool
        Whether the task may read speaker labels; a self-supervised one
        must not be given a speaker-balanced sampler.

    Returns
    -------
    dict
        The options, with ``collate_fn`` (unless given)
        :func:`speechbrain_ext.data.batches.collate_readable`.

    Raises
    ------
    ValueError
        If a sampler is given for a self-supervised task.
    """
    options = worker_options(dataloader_opts)
    options.setdefault("collate_fn", collate_readable)
    if make_sampler is not None and not speaker_labels:
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


def add_speaker_labels(datasets, label_encoder_file):
    """Adds ``spk_id`` and ``spk_id_encoded`` to datasets; the encoder.

    Classes are numbered over the datasets in order (training first, so a
    classifier's rows are the training speakers), or read back from
    ``label_encoder_file`` when it exists (a resumed run keeps its classes).

    Arguments
    ---------
    datasets : list of DynamicItemDataset
        The datasets whose speakers are encoded.
    label_encoder_file : str
        Where the encoder is saved (or read from).

    Returns
    -------
    speechbrain.dataio.encoder.CategoricalEncoder
        The encoder, checked to hold exactly the datasets' speakers.
    """
    label_encoder = sb.dataio.encoder.CategoricalEncoder()

    @sb.utils.data_pipeline.takes("spk_id")
    @sb.utils.data_pipeline.provides("spk_id", "spk_id_encoded")
    def label_pipeline(spk_id):
        """The speaker id and its encoded class index."""
        yield spk_id
        yield label_encoder.encode_sequence_torch([spk_id])

    sb.dataio.dataset.add_dynamic_item(datasets, label_pipeline)
    label_encoder.load_or_create(
        path=label_encoder_file,
        from_didatasets=datasets,
        output_key="spk_id",
    )
    label_encoder.expect_len(
        len(set().union(*(speakers_of(data) for data in datasets)))
    )
    return label_encoder
