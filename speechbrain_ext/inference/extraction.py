"""Batched, length-sorted, resumable speaker-embedding extraction.

Calling ``EncoderClassifier.encode_batch`` once per file spends much of the
time on per-call overhead and small matrix products. :class:`EmbeddingExtractor`
sorts utterances by duration so each batch holds similar lengths (little
padding, and that by reflection, see :func:`_pad_batch`), decodes audio in
DataLoader workers while the model runs, and writes finished batches to a
cache folder, so an interrupted extraction of CN-Celeb's 18k test files
resumes where it stopped. An optional per-utterance ``transform`` (e.g. a
:class:`speechbrain_ext.evaluation.robustness.Corruptor`) changes each
waveform after reading; the cache folder records which transform made its
embeddings and refuses to mix them with another's.

Example
-------
>>> import torch
>>> from speechbrain_ext.data.audio import save_audio
>>> tmpdir = getfixture("tmpdir")
>>> items = []
>>> for i, seconds in enumerate([0.5, 1.0, 0.7]):
...     path = str(tmpdir / f"u{i}.wav")
...     save_audio(path, 0.1 * torch.randn(int(16000 * seconds)), 16000)
...     items.append((f"u{i}", path))
>>> class MeanEncoder:  # stands in for EncoderClassifier
...     device = "cpu"
...
...     def encode_batch(self, wavs, wav_lens):
...         return wavs[:, :4].unsqueeze(1)
>>> extractor = EmbeddingExtractor(MeanEncoder(), batch_size=2)
>>> ids, emb = extractor(items)
>>> ids, emb.shape
(['u0', 'u1', 'u2'], (3, 4))
"""

import collections
import glob
import logging
import os

import numpy as np
import torch
from tqdm import tqdm

from speechbrain_ext.data.audio import audio_info, load_audio

__all__ = ["EmbeddingExtractor", "describe_transform"]

logger = logging.getLogger(__name__)

# Written in every cache folder: what was done to the audio before embedding.
TRANSFORM_FILE = "transform.txt"


def describe_transform(transform):
    """A text naming a waveform transform that is the same in every run.

    Arguments
    ---------
    transform : callable or None
        The transform (None: the audio as read).

    Returns
    -------
    str
        ``"none"``; the ``repr`` of an object that defines one (e.g.
        ``Corruptor('sir5', seed=1234, ...)``); else the qualified name of
        the function or class, since the default ``repr`` holds a memory
        address.

    Example
    -------
    >>> describe_transform(None), describe_transform(torch.nn.Identity())
    ('none', 'Identity()')
    """
    if transform is None:
        return "none"
    if hasattr(transform, "__qualname__"):
        return f"{transform.__module__}.{transform.__qualname__}"
    kind = type(transform)
    if kind.__repr__ is not object.__repr__:
        return repr(transform)
    return f"{kind.__module__}.{kind.__qualname__}"


class _AudioList(torch.utils.data.Dataset):
    """Reads (and optionally transforms) the waveforms of (id, path) items."""

    def __init__(
        self, items, sample_rate, max_seconds, transform=None, min_seconds=0
    ):
        self.items = items
        self.sample_rate = sample_rate
        self.min_samples = int(min_seconds * sample_rate)
        self.max_samples = (
            int(max_seconds * sample_rate) if max_seconds else None
        )
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        uid, path = self.items[index]
        wav = load_audio(path, sample_rate=self.sample_rate)
        if self.transform is not None:
            # Before cropping: corruption levels hold over the whole file.
            wav = self.transform(uid, wav)
        wav = wav[: self.max_samples]
        if len(wav) < self.min_samples:
            # ECAPA's reflect padding needs a few frames; mirroring keeps
            # the speaker's voice where zeros would add silence.
            wav = _reflect_to(wav, self.min_samples)
        return uid, wav


def _reflect_to(wav, length):
    """Extends a waveform to ``length`` samples by mirroring it back and forth.

    Arguments
    ---------
    wav : torch.Tensor
        Waveform [time], at most ``length`` samples.
    length : int
        Length of the result.

    Returns
    -------
    torch.Tensor
        ``wav`` followed by its mirror image, repeated as needed.

    Example
    -------
    >>> _reflect_to(torch.tensor([1.0, 2.0, 3.0]), 8)
    tensor([1., 2., 3., 2., 1., 2., 3., 2.])
    """
    if len(wav) == 1:
        return wav.expand(length).clone()
    period = 2 * len(wav) - 2
    index = torch.arange(length) % period
    return wav[torch.where(index < len(wav), index, period - index)]


def _pad_batch(batch):
    """Pads waveforms by reflection and returns SpeechBrain's relative lengths.

    Zero padding becomes log-Fbank frames 80 dB below the speech, and ECAPA's
    convolutions carry these outliers into the last valid frames: on 2 s of
    noise padded by 0.06 s, a random ECAPA-TDNN (C=512) embedding fell to a
    cosine of 0.91 with the unpadded one. Mirrored audio has the statistics
    of the utterance itself, as the reflect padding that ECAPA gives a lone
    utterance does (cosine 1.0000 there); the relative lengths still keep
    the padding out of the normalisation and the pooling.
    """
    ids = [uid for uid, _ in batch]
    lengths = torch.tensor([len(wav) for _, wav in batch])
    longest = int(lengths.max())
    wavs = torch.stack([_reflect_to(wav, longest) for _, wav in batch])
    return ids, wavs, lengths.float() / longest


class EmbeddingExtractor:
    """Embeds many audio files in length-sorted batches.

    Arguments
    ---------
    encoder : object
        Anything with ``encode_batch(wavs, wav_lens)`` and ``device``, e.g.
        ``speechbrain.inference.speaker.EncoderClassifier``.
    batch_size : int
        Utterances per batch.
    max_batch_seconds : float, optional
        Also caps the padded audio per batch, ``len(batch)`` x its longest
        item in seconds (long files get small batches; one longer than the
        cap is embedded alone).
    max_seconds : float, optional
        Crops each utterance to at most this long (None keeps it whole).
    sample_rate : int
        Rate the encoder expects; files at other rates are resampled.
    num_workers : int
        DataLoader workers decoding audio beside the model.
    transform : callable, optional
        ``transform(uid, wav) -> wav`` applied to each waveform [time]
        after reading, before cropping and padding (in the workers: it
        must be picklable, and should depend on ``uid``, not on call order).
    min_seconds : float
        Shorter audio is mirrored up to this length: ECAPA-TDNN fails on
        fewer than 5 Fbank frames (0.04 s); 0.1 s leaves a margin.

    Example
    -------
    >>> class FirstSamples:
    ...     device = "cpu"
    ...
    ...     def encode_batch(self, wavs, wav_lens):
    ...         return wavs[:, None, :2]
    >>> from speechbrain_ext.data.audio import save_audio
    >>> path = str(getfixture("tmpdir") / "ramp.wav")
    >>> save_audio(path, torch.tensor([0.25, 0.5, 0.75]), 16000)
    >>> negate = EmbeddingExtractor(
    ...     FirstSamples(), transform=lambda uid, wav: -wav
    ... )
    >>> negate([("u", path)])[1]
    array([[-0.25, -0.5 ]], dtype=float32)
    """

    def __init__(
        self,
        encoder,
        batch_size=32,
        max_batch_seconds=None,
        max_seconds=None,
        sample_rate=16000,
        num_workers=0,
        transform=None,
        min_seconds=0.1,
    ):
        self.encoder = encoder
        self.min_seconds = min_seconds
        self.batch_size = batch_size
        self.max_batch_seconds = max_batch_seconds
        self.max_seconds = max_seconds
        self.sample_rate = sample_rate
        self.num_workers = num_workers
        self.transform = transform

    def _batches(self, durations):
        """Groups length-sorted indices under the batch limits."""
        order = np.argsort(durations, kind="stable")[::-1]
        batch = []
        for index in order:
            # Longest first: the batch's first item sets everyone's padding.
            padded = durations[batch[0]] * (len(batch) + 1) if batch else 0.0
            over = self.max_batch_seconds and padded > self.max_batch_seconds
            if len(batch) == self.batch_size or (batch and over):
                yield batch
                batch = []
            batch.append(int(index))
        if batch:
            yield batch

    @torch.no_grad()
    def __call__(self, items, cache_folder=None, desc="embedding"):
        """Embeds ``items``, resuming from ``cache_folder`` if given.

        Arguments
        ---------
        items : list of (str, str)
            Utterance ids and audio paths. Ids must be unique.
        cache_folder : str, optional
            Folder of finished batches (``part-*.npz``); items found there are
            not embedded again. It belongs to one ``transform``: a folder
            written with another one raises ``ValueError``.
        desc : str
            Progress-bar label.

        Returns
        -------
        ids : list of str
            The ids, in the order of ``items``.
        embeddings : numpy.ndarray
            Float32 array [len(items), dim].
        """
        items = [(str(uid), str(path)) for uid, path in items]
        uids = [uid for uid, _ in items]
        counts = collections.Counter(uids)
        repeated = [uid for uid, count in counts.items() if count > 1]
        if repeated:
            raise ValueError(
                f"utterance ids to embed are not unique: {repeated[:5]} "
                f"({len(repeated)} repeated)"
            )
        self._check_cache_transform(cache_folder)
        done = self._load_cache(cache_folder)
        todo = [item for item in items if item[0] not in done]
        if todo:
            self._embed(todo, done, cache_folder, desc)
        return uids, np.stack([done[uid] for uid in uids]).astype(np.float32)

    def _embed(self, todo, done, cache_folder, desc):
        """Embeds the items not cached yet, saving each batch."""
        durations = np.array([audio_info(p).duration for _, p in todo])
        if self.max_seconds:
            durations = np.minimum(durations, self.max_seconds)
        batches = list(self._batches(durations))
        loader = torch.utils.data.DataLoader(
            _AudioList(
                todo,
                self.sample_rate,
                self.max_seconds,
                self.transform,
                self.min_seconds,
            ),
            batch_sampler=batches,
            collate_fn=_pad_batch,
            num_workers=self.num_workers,
        )
        part = len(done)
        for ids, wavs, lens in tqdm(loader, desc=desc, total=len(batches)):
            device = self.encoder.device
            emb = self.encoder.encode_batch(wavs.to(device), lens.to(device))
            emb = emb.reshape(len(ids), -1).float().cpu().numpy()
            done.update(zip(ids, emb))
            if cache_folder is not None:
                self._stamp_cache(cache_folder)
                path = os.path.join(cache_folder, f"part-{part:09d}.npz")
                # Write then rename: a kill mid-write leaves no broken part.
                np.savez(path + ".tmp.npz", ids=np.array(ids), emb=emb)
                os.replace(path + ".tmp.npz", path)
                part += len(ids)

    def _check_cache_transform(self, cache_folder):
        """Raises if ``cache_folder`` holds another transform's embeddings."""
        if cache_folder is None:
            return
        wanted = describe_transform(self.transform)
        stamp = os.path.join(cache_folder, TRANSFORM_FILE)
        if os.path.isfile(stamp):
            with open(stamp, encoding="utf-8") as fin:
                found = fin.read().strip()
        elif glob.glob(os.path.join(cache_folder, "part-*.npz")):
            found = "none"  # written before transforms existed
        else:
            return
        if found != wanted:
            raise ValueError(
                f"{cache_folder} holds embeddings of audio transformed by "
                f"{found}, not {wanted}: use one cache folder per transform"
            )

    def _stamp_cache(self, cache_folder):
        """Creates ``cache_folder`` and records the transform, once."""
        stamp = os.path.join(cache_folder, TRANSFORM_FILE)
        if not os.path.isfile(stamp):
            os.makedirs(cache_folder, exist_ok=True)
            with open(stamp, "w", encoding="utf-8") as fout:
                fout.write(describe_transform(self.transform) + "\n")

    @staticmethod
    def _load_cache(cache_folder):
        """Reads finished batches from the cache folder."""
        done = {}
        if cache_folder is None:
            return done
        for path in sorted(glob.glob(os.path.join(cache_folder, "part-*.npz"))):
            if path.endswith(".tmp.npz"):
                continue
            with np.load(path) as part:
                done.update(zip(part["ids"].tolist(), part["emb"]))
        if done:
            logger.info("%d embeddings cached in %s", len(done), cache_folder)
        return done
