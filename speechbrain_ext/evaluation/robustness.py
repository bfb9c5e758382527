"""Test-side corruption for evaluating verification under interference.

A robustness evaluation scores the usual trial list once per condition,
with every test utterance corrupted by an interfering talker at a given
SIR, by noise at a given SNR, or both, while enrolment stays clean.
:func:`parse_condition` reads condition names such as ``sir5`` or
``sir0+snr10``, and a :class:`Corruptor` applies one condition to test
waveforms.

Each utterance's corruption is drawn from a generator seeded by
``(seed, crc32(utterance id))``, never by Python's per-process salted
``hash``, so a test file is corrupted identically in any order, batch,
DataLoader worker or run. The interferer, the noise file and their
offsets depend on the seed and the id only, not on the level: conditions
``sir0`` and ``sir10`` add the same interferer at two gains, which makes
an EER-against-SIR curve a paired comparison. Every ratio is exact over
the whole utterance: ``10 log10(P_target / P_added) == level`` with both
powers averaged over all of the target's samples, and the SNR of a
combined condition is also measured against the clean target.

Example
-------
>>> import torch
>>> from speechbrain_ext.data.audio import save_audio
>>> tmpdir = getfixture("tmpdir")
>>> rows = []
>>> for uid, spk in [("a1", "a"), ("a2", "a"), ("b1", "b")]:
...     path = str(tmpdir / f"{uid}.wav")
...     save_audio(path, 0.1 * torch.randn(4000), 16000)
...     rows.append({"ID": uid, "wav": path, "spk_id": spk})
>>> corrupt = Corruptor("sir5", rows, seed=1)
>>> clean = 0.1 * torch.randn(8000)
>>> mixed = corrupt("a1", clean)  # interferer: b1, the only other speaker
>>> added = (mixed - clean).double()
>>> sir = 10 * torch.log10(clean.double().pow(2).sum() / added.pow(2).sum())
>>> round(float(sir), 3)
5.0
>>> torch.equal(mixed, Corruptor("sir5", rows, seed=1)("a1", clean))
True
"""

import collections
import dataclasses
import re
import zlib

import numpy as np
import torch

from speechbrain_ext.augment.mixing import mix_at_ratio
from speechbrain_ext.data.audio import AudioError
from speechbrain_ext.data.manifest import load_row_audio

__all__ = ["Condition", "Corruptor", "parse_condition", "scaled_to_ratio"]

_LEVEL = re.compile(r"(sir|snr)(-?\d+(?:\.\d+)?)")
_GRAMMAR = (
    "'clean', 'sir<dB>', 'snr<dB>' or 'sir<dB>+snr<dB>' "
    "(e.g. sir0, sir-5, snr2.5, sir5+snr10)"
)


@dataclasses.dataclass(frozen=True)
class Condition:
    """A test-side condition: interfering-talker SIR and/or noise SNR.

    Arguments
    ---------
    sir_db : float, optional
        Signal-to-interference ratio of an added talker in dB (None: none).
    snr_db : float, optional
        Signal-to-noise ratio of added noise in dB (None: no noise).

    Example
    -------
    >>> Condition(sir_db=5.0, snr_db=10.0).name
    'sir5+snr10'
    >>> Condition().name
    'clean'
    """

    sir_db: float = None
    snr_db: float = None

    @property
    def name(self):
        """The canonical name, e.g. ``clean``, ``sir-5`` or ``sir0+snr10``."""
        levels = [
            f"{kind}{level:g}"
            for kind, level in (("sir", self.sir_db), ("snr", self.snr_db))
            if level is not None
        ]
        return "+".join(levels) or "clean"

    @property
    def is_clean(self):
        """True when nothing is added."""
        return self.sir_db is None and self.snr_db is None


def parse_condition(text):
    """Reads a condition name: clean, sir<dB>, snr<dB> or sir<dB>+snr<dB>.

    Arguments
    ---------
    text : str
        The name, e.g. ``"sir5"``, ``"snr-2.5"`` or ``"sir0+snr10"``.

    Returns
    -------
    Condition
        The levels; its ``name`` is canonical (``sir05`` reads as ``sir5``).

    Raises
    ------
    ValueError
        Naming the text and the accepted grammar.

    Example
    -------
    >>> parse_condition("sir-5")
    Condition(sir_db=-5.0, snr_db=None)
    >>> parse_condition("sir0+snr10").snr_db
    10.0
    """
    if text == "clean":
        return Condition()
    levels = {}
    parts = text.split("+")
    for part in parts:
        match = _LEVEL.fullmatch(part)
        if match is None or match[1] in levels:
            levels = None
            break
        levels[match[1]] = float(match[2]) + 0.0  # "-0" reads as 0
    # Two parts must read sir then snr, so each condition has one name.
    if (
        levels is None
        or len(parts) > 2
        or (len(parts) == 2 and list(levels) != ["sir", "snr"])
    ):
        raise ValueError(
            f"unknown test condition {text!r}: expected {_GRAMMAR}"
        )
    return Condition(sir_db=levels.get("sir"), snr_db=levels.get("snr"))


def scaled_to_ratio(target, interference, ratio_db):
    """Scales ``interference`` to an exact power ratio below ``target``.

    Both powers are averaged over all samples, as
    :func:`~speechbrain_ext.augment.mixing.mix_at_ratio` measures them;
    the arithmetic is in float64 so that the scaled part, recovered from
    the mixture, keeps the ratio to far better than 1e-3 dB.

    Arguments
    ---------
    target : torch.Tensor
        Waveform [time].
    interference : torch.Tensor
        Waveform [time] of the same length, at any level.
    ratio_db : float
        ``10 log10(P_target / P_scaled)`` of the result, in dB.

    Returns
    -------
    torch.Tensor
        The scaled interference, float64 [time]; zeros if either input is
        silent (the ratio is then undefined).

    Example
    -------
    >>> target = torch.tensor([1.0, -1.0, 1.0, -1.0])
    >>> scaled_to_ratio(target, torch.full((4,), 5.0), 20.0)
    tensor([0.1000, 0.1000, 0.1000, 0.1000], dtype=torch.float64)
    """
    target = target.double().unsqueeze(0)
    mixture = mix_at_ratio(
        target,
        interference.double().unsqueeze(0),
        torch.tensor([float(ratio_db)]),
    )
    return (mixture - target)[0]


def _segment(source, length, rng):
    """``length`` samples of ``source`` from a random offset.

    A longer source is cropped at an offset drawn among those that fit; a
    shorter one is tiled end to end from a random phase.
    """
    if len(source) >= length:
        start = int(rng.integers(len(source) - length + 1))
        return source[start : start + length]
    phase = int(rng.integers(len(source)))
    return source[(phase + torch.arange(length)) % len(source)]


class _InterfererPool:
    """Manifest rows grouped by speaker, for O(1) draws of other speakers.

    Rows are sorted by (speaker, ID), so a draw does not depend on the
    manifest's row order, and each speaker owns one contiguous block that
    a draw skips over.
    """

    def __init__(self, rows):
        for index, row in enumerate(rows):
            missing = [k for k in ("ID", "wav", "spk_id") if not row.get(k)]
            if missing:
                raise ValueError(
                    f"interferer row {index} ({row.get('ID', '?')}) has no "
                    f"{missing[0]!r}: interferers need ID, wav and spk_id "
                    "so that a test utterance never gets its own speaker"
                )
        self.rows = sorted(rows, key=lambda row: (row["spk_id"], row["ID"]))
        self.position = {row["ID"]: i for i, row in enumerate(self.rows)}
        if len(self.position) < len(self.rows):
            counts = collections.Counter(row["ID"] for row in self.rows)
            repeated = sorted(uid for uid, n in counts.items() if n > 1)
            raise ValueError(f"interferer rows repeat the IDs {repeated[:5]}")
        self.blocks = {}
        for i, row in enumerate(self.rows):
            first, _ = self.blocks.get(row["spk_id"], (i, i))
            self.blocks[row["spk_id"]] = (first, i + 1)

    def __len__(self):
        return len(self.rows)

    def speaker_of(self, uid):
        """The speaker of ``uid`` if it is in the pool, else None."""
        position = self.position.get(uid)
        return None if position is None else self.rows[position]["spk_id"]

    def draw(self, uid, speaker, rng):
        """A row of another speaker (if known) that is not ``uid`` itself."""
        position = self.position.get(uid)
        if speaker is None:
            skip = (position, position + 1) if position is not None else (0, 0)
        else:
            skip = self.blocks.get(speaker, (0, 0))
            if position is not None and not skip[0] <= position < skip[1]:
                raise ValueError(
                    f"test utterance {uid} is given speaker {speaker!r} but "
                    f"the interferer rows say {self.speaker_of(uid)!r}"
                )
        choices = len(self.rows) - (skip[1] - skip[0])
        if choices == 0:
            whose = f"of speaker {speaker!r}" if speaker else "the utterance"
            raise ValueError(
                f"no interferer for {uid}: every interferer row is {whose}"
            )
        index = int(rng.integers(choices))
        if index >= skip[0]:
            index += skip[1] - skip[0]
        return self.rows[index]

    def fingerprint(self):
        """A checksum of the pool's IDs, to tell pools apart in cache stamps."""
        ids = "\n".join(row["ID"] for row in self.rows)
        return f"{zlib.crc32(ids.encode('utf-8')):08x}"


class Corruptor:
    """Corrupts test waveforms with a talker and/or noise, per utterance id.

    Called as ``corrupt(uid, wav)``, the signature of the ``transform`` of
    :class:`~speechbrain_ext.inference.extraction.EmbeddingExtractor`. The
    interfering talker is a row of ``interferer_rows`` of another speaker
    than the target (its ``spk_id`` argument, else ``speakers[uid]``, else
    the speaker the rows give ``uid``; with none known, any row but
    ``uid`` itself), cropped at a random offset or tiled to the target's
    length. Noise is a random segment of a random waveform of
    ``noise_bank``.

    Arguments
    ---------
    condition : Condition or str
        What to add, e.g. ``"sir5"`` (see :func:`parse_condition`).
    interferer_rows : list of dict, optional
        Manifest rows (``ID``, ``wav``, ``spk_id``, optional ``start`` and
        ``stop`` in file samples), as
        :func:`speechbrain_ext.data.manifest.read_manifest` returns them;
        needed when the condition has an SIR.
    noise_bank : speechbrain_ext.augment.bank.WaveformBank, optional
        Noises (e.g. from ``load_waveform_bank``, in memory or streamed
        from disk); needed for an SNR.
    seed : int
        Non-negative seed shared by all utterances.
    sample_rate : int
        Rate of the waveforms; interferer files are resampled to it.
    speakers : dict, optional
        Speaker of each test utterance id.
    cache_size : int
        Interferer waveforms kept in memory (least recently used dropped).

    Example
    -------
    >>> from speechbrain_ext.augment.bank import WaveformBank
    >>> bank = WaveformBank([torch.ones(100), -torch.ones(300)])
    >>> corrupt = Corruptor("snr0", noise_bank=bank)
    >>> clean = torch.full((200,), 0.5)
    >>> (corrupt("u1", clean) - clean).abs().unique()
    tensor([0.5000])
    """

    def __init__(
        self,
        condition,
        interferer_rows=None,
        noise_bank=None,
        seed=1234,
        sample_rate=16000,
        speakers=None,
        cache_size=64,
    ):
        if isinstance(condition, str):
            condition = parse_condition(condition)
        if condition.sir_db is not None and not interferer_rows:
            raise ValueError(
                f"condition {condition.name} adds a talker: pass "
                "interferer_rows"
            )
        if condition.snr_db is not None and noise_bank is None:
            raise ValueError(
                f"condition {condition.name} adds noise: pass a noise_bank"
            )
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.condition = condition
        self.pool = (
            _InterfererPool(interferer_rows)
            if condition.sir_db is not None
            else None
        )
        self.noise_bank = noise_bank if condition.snr_db is not None else None
        self.seed = seed
        self.sample_rate = sample_rate
        self.speakers = dict(speakers or {})
        self.cache_size = cache_size
        self._cache = collections.OrderedDict()

    @property
    def name(self):
        """The condition's name, e.g. ``sir5``."""
        return self.condition.name

    def __repr__(self):
        # Stored beside cached embeddings: must be stable across runs.
        talkers = (
            f", interferers={len(self.pool)} rows {self.pool.fingerprint()}"
            if self.pool
            else ""
        )
        noises = ""
        if self.noise_bank is not None:
            noises = (
                f", noises={len(self.noise_bank)} waveforms "
                f"{self.noise_bank.fingerprint()}"
            )
        return (
            f"Corruptor({self.name!r}, seed={self.seed}, "
            f"sample_rate={self.sample_rate}{talkers}{noises})"
        )

    def __call__(self, uid, wav, spk_id=None):
        """Returns ``wav`` with the condition's talker and/or noise added.

        Arguments
        ---------
        uid : str
            The test utterance's id; it alone (with the seed) decides what
            is added.
        wav : torch.Tensor
            Clean waveform [time].
        spk_id : str, optional
            The utterance's speaker, if not in ``speakers`` or the rows.

        Returns
        -------
        torch.Tensor
            The corrupted waveform, same shape and dtype. A silent
            ``wav`` is returned unchanged (no ratio is defined).
        """
        if wav.dim() != 1 or len(wav) == 0:
            raise ValueError(
                f"{uid}: expected a non-empty waveform [time], got shape "
                f"{tuple(wav.shape)}"
            )
        if self.condition.is_clean:
            return wav
        uid = str(uid)
        clean = wav.double()
        mixture = clean.clone()
        if self.pool is not None:
            talker = self._talker(uid, spk_id, len(wav), self._rng(uid, 0))
            mixture += scaled_to_ratio(clean, talker, self.condition.sir_db)
        if self.noise_bank is not None:
            noise = self._noise(len(wav), self._rng(uid, 1))
            mixture += scaled_to_ratio(clean, noise, self.condition.snr_db)
        return mixture.to(wav.dtype)

    def _rng(self, uid, stream):
        """The generator of one utterance: stream 0 talker, 1 noise."""
        key = zlib.crc32(uid.encode("utf-8"))
        return np.random.default_rng([self.seed, key, stream])

    def _talker(self, uid, spk_id, length, rng):
        """A segment of another speaker's utterance, ``length`` samples."""
        speaker = spk_id or self.speakers.get(uid) or self.pool.speaker_of(uid)
        row = self.pool.draw(uid, speaker, rng)
        return _segment(self._read(row), length, rng)

    def _noise(self, length, rng):
        """A segment of a random noise of the bank, ``length`` samples."""
        index = int(rng.integers(len(self.noise_bank)))
        noises, lengths = self.noise_bank.select(torch.tensor([index]))
        return _segment(noises[0, : int(lengths[0])].cpu(), length, rng)

    def _read(self, row):
        """An interferer's waveform, from the cache or the file."""
        uid = row["ID"]
        if uid in self._cache:
            self._cache.move_to_end(uid)
            return self._cache[uid]
        try:
            wav = load_row_audio(row, self.sample_rate)
        except AudioError as err:
            raise AudioError(f"interferer {uid}: {err}") from err
        self._cache[uid] = wav
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return wav
