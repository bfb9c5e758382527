"""A small synthetic corpus in CN-Celeb's on-disk layout, for demos and CI.

The voices are made by a source-filter model so that speaker verification on
them behaves like a (much smaller) real task: an untrained network does not
solve it, a trained one can.

Model of a voice (drawn once per speaker, :func:`sample_voice`)
--------------------------------------------------------------
- Source: a Rosenberg glottal pulse train whose flow derivative excites the
  vocal tract. The speaker sets the mean F0 (85-260 Hz, two overlapping
  "low"/"high" groups), the intonation range in semitones, the open quotient,
  the spectral tilt (a one-pole low-pass on the source), jitter (cycle-to-
  cycle F0 noise), shimmer (cycle-to-cycle amplitude noise) and breathiness
  (aspiration noise, modulated by the glottal flow, relative to the pulses).
- Filter: five cascade formant resonators. F1-F4 come from a vowel table of
  adult vowels, multiplied by the speaker's vocal-tract scale (0.8-1.25,
  correlated with F0) and by small per-formant idiosyncrasies; bandwidths are
  scaled per speaker. A nasal pole/zero pair (Klatt's) whose zero moves away
  from the pole with the speaker's nasality colours every vowel.
- Timing: utterances are syllable strings (optional fricative or plosive
  onset, a vowel whose formants glide from the previous vowel, occasional
  pauses that end an intonation phrase with declination). The speaker sets
  the speaking rate.

Sessions (one recording of one genre, :func:`sample_session`) differ the way
recordings do: an F0 offset within the speaker's range, a speaking-rate
change, a band-pass channel with a random peaking EQ, optional synthetic
reverberation, background noise (coloured noise, plus tonal "music" for the
genres that have it) at a genre-dependent SNR, and the recording level. Genre
sets the style: singing holds long vowels on semitone notes with vibrato,
recitation and speech are slow and steady, advertisement is fast, vlog and
live_broadcast are noisy.

The vocal tract is applied in the STFT domain (a complex frequency response
per 8 ms frame), which gives smooth formant transitions without a Python loop
over samples; the fixed channel filters use ``scipy.signal``.

Example
-------
>>> import os
>>> root = generate_demo_corpus(
...     getfixture("tmpdir") / "CN-Celeb_flac",
...     n_train_speakers=2,
...     n_eval_speakers=2,
...     utts_per_speaker=3,
...     n_test_per_eval_speaker=1,
... )
>>> sorted(os.listdir(root))
['data', 'dev', 'eval']
>>> open(os.path.join(root, "dev", "dev.lst")).read().split()
['id00000', 'id00001']
"""

import argparse
import dataclasses
import multiprocessing
import os

import numpy as np
import scipy.fft
import scipy.signal
import soundfile as sf

__all__ = [
    "GENRES",
    "Voice",
    "Session",
    "sample_voice",
    "sample_session",
    "synthesize_utterance",
    "generate_demo_corpus",
]

GENRES = (
    "advertisement",
    "drama",
    "entertainment",
    "interview",
    "live_broadcast",
    "movie",
    "play",
    "recitation",
    "singing",
    "speech",
    "vlog",
)

# F1-F4 (Hz) of adult vowels (Peterson & Barney / Hillenbrand averages for
# a reference tract; each speaker scales them).
VOWEL_FORMANTS = np.array(
    [
        [270, 2290, 3010, 3700],  # i
        [390, 1990, 2550, 3600],  # I
        [530, 1840, 2480, 3600],  # E
        [660, 1720, 2410, 3500],  # ae
        [730, 1090, 2440, 3400],  # a
        [570, 840, 2410, 3300],  # o
        [300, 870, 2240, 3300],  # u
        [640, 1190, 2390, 3400],  # schwa-like open
        [280, 1900, 2350, 3500],  # y (Mandarin u-umlaut)
    ],
    dtype=float,
)
F5 = 4500.0
BANDWIDTHS = np.array([60.0, 90.0, 150.0, 200.0, 280.0])
NASAL_POLE = 270.0

# Onset consonants: (centre Hz, bandwidth Hz, is_plosive).
CONSONANTS = np.array(
    [
        [5500, 2500, 0],  # s
        [3000, 1600, 0],  # sh
        [4500, 7000, 0],  # f (flat)
        [1500, 1200, 0],  # x (velar)
        [900, 1400, 1],  # p
        [4000, 3000, 1],  # t
        [2000, 1400, 1],  # k
    ],
    dtype=float,
)

# Per genre: (speaking-rate factor, F0 offset in semitones, F0 range factor,
# SNR range in dB, probability of tonal background).
GENRE_STYLE = {
    "advertisement": (0.8, 1.0, 1.3, (10, 25), 0.7),
    "drama": (1.0, 0.5, 1.6, (10, 25), 0.4),
    "entertainment": (0.9, 1.0, 1.4, (8, 22), 0.5),
    "interview": (1.0, 0.0, 1.0, (15, 30), 0.0),
    "live_broadcast": (0.9, 1.0, 1.2, (3, 15), 0.3),
    "movie": (1.0, 0.0, 1.5, (8, 25), 0.5),
    "play": (1.1, 0.5, 1.5, (10, 25), 0.2),
    "recitation": (1.3, 0.0, 0.8, (20, 35), 0.1),
    "singing": (3.0, 3.0, 1.0, (5, 20), 1.0),
    "speech": (1.2, 0.0, 0.8, (18, 35), 0.0),
    "vlog": (0.95, 0.5, 1.1, (3, 15), 0.3),
}

HOP = 128  # control-track frame shift (8 ms at 16 kHz)
N_FFT = 512
STFT_HOP = 2 * HOP  # the tract changes slowly: 50 % overlap is enough


@dataclasses.dataclass
class Voice:
    """Fixed properties of one synthetic speaker (see the module docstring).

    Arguments
    ---------
    f0 : float
        Mean fundamental frequency in Hz.
    f0_range : float
        Standard deviation of syllable pitch targets, in semitones.
    tract_scale : float
        Formant scaling factor (1 = reference tract; > 1 = shorter tract).
    formant_offsets : numpy.ndarray
        Per-formant multiplicative idiosyncrasy for F1-F4, shape [4].
    bandwidth_scale : float
        Multiplies the reference formant bandwidths.
    open_quotient : float
        Fraction of the glottal cycle during which the glottis is open.
    tilt : float
        One-pole low-pass coefficient on the source (higher = darker).
    breathiness : float
        Aspiration noise RMS relative to the voiced source RMS.
    jitter : float
        Relative standard deviation of the F0 from one cycle to the next.
    shimmer : float
        Relative standard deviation of the pulse amplitude.
    nasality : float
        Distance (Hz) of the nasal zero above the nasal pole.
    frication_level : float
        RMS of the consonant noise relative to the vowels.
    vowel_duration : float
        Mean vowel duration in seconds (sets the speaking rate).
    """

    f0: float
    f0_range: float
    tract_scale: float
    formant_offsets: np.ndarray
    bandwidth_scale: float
    open_quotient: float
    tilt: float
    breathiness: float
    jitter: float
    shimmer: float
    nasality: float
    frication_level: float
    vowel_duration: float


@dataclasses.dataclass
class Session:
    """One recording session of a speaker: genre, voice shift and channel.

    Arguments
    ---------
    genre : str
        One of :data:`GENRES`.
    f0_shift : float
        Session F0 offset from the speaker's mean, in semitones.
    rate : float
        Multiplies the speaker's vowel duration.
    channel_sos : numpy.ndarray
        Second-order sections of the microphone/channel filter.
    reverb : numpy.ndarray or None
        Room impulse response, or None for a dry room.
    snr_db : float
        Speech-to-background ratio.
    noise_colour : float
        One-pole low-pass coefficient of the background noise.
    music : numpy.ndarray
        Frequencies (Hz) of a tonal background; empty for none.
    level_db : float
        Peak level of the recording in dBFS.
    """

    genre: str
    f0_shift: float
    rate: float
    channel_sos: np.ndarray
    reverb: object
    snr_db: float
    noise_colour: float
    music: np.ndarray
    level_db: float


def sample_voice(rng):
    """Draws the fixed properties of a new speaker.

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    Voice
        The speaker's voice parameters.

    Example
    -------
    >>> voice = sample_voice(np.random.default_rng(0))
    >>> 85 <= voice.f0 <= 260 and 0.8 <= voice.tract_scale <= 1.25
    True
    """
    high = rng.random() < 0.5
    # Two overlapping groups: low voices have longer tracts.
    f0 = float(np.clip(rng.normal(205 if high else 118, 22), 85, 260))
    position = np.log(f0 / 85) / np.log(260 / 85)
    tract = 0.86 + 0.3 * position + rng.normal(0, 0.04)
    return Voice(
        f0=f0,
        f0_range=float(rng.uniform(1.0, 4.0)),
        tract_scale=float(np.clip(tract, 0.8, 1.25)),
        formant_offsets=np.exp(rng.normal(0, 0.05, 4)),
        bandwidth_scale=float(rng.uniform(0.7, 1.6)),
        open_quotient=float(rng.uniform(0.4, 0.8)),
        tilt=float(rng.uniform(0.2, 0.9)),
        breathiness=float(rng.uniform(0.02, 0.4)),
        jitter=float(rng.uniform(0.002, 0.02)),
        shimmer=float(rng.uniform(0.02, 0.15)),
        nasality=float(rng.uniform(0, 200)),
        frication_level=float(rng.uniform(0.1, 0.3)),
        vowel_duration=float(rng.uniform(0.08, 0.2)),
    )


def sample_session(rng, genre, sample_rate=16000):
    """Draws the recording conditions of one session.

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of randomness.
    genre : str
        One of :data:`GENRES`.
    sample_rate : int
        Sample rate the channel filters are designed for.

    Returns
    -------
    Session
        The session's voice shift and channel.

    Example
    -------
    >>> session = sample_session(np.random.default_rng(0), "vlog")
    >>> 3 <= session.snr_db <= 15
    True
    """
    rate, _, _, (snr_low, snr_high), music_prob = GENRE_STYLE[genre]
    nyquist = sample_rate / 2
    low = rng.uniform(60, 300)
    high = min(rng.uniform(3000, 7500), 0.95 * nyquist)
    sos = scipy.signal.butter(
        2, [low, high], btype="bandpass", fs=sample_rate, output="sos"
    )
    for _ in range(2):
        centre = rng.uniform(300, min(5000, 0.8 * nyquist))
        peak = _peaking_eq(
            centre, rng.uniform(-8, 8), rng.uniform(0.7, 3), sample_rate
        )
        sos = np.vstack([sos, peak])
    reverb = None
    if rng.random() < 0.5:
        rt60 = rng.uniform(0.15, 0.6)
        length = int(rt60 * sample_rate)
        decay = np.exp(-6.9 * np.arange(length) / length)
        reverb = rng.normal(0, 1, length) * decay * rng.uniform(0.05, 0.3)
        reverb[0] = 1.0
    n_tones = rng.integers(3, 6) if rng.random() < music_prob else 0
    return Session(
        genre=genre,
        f0_shift=float(rng.normal(0, 1.5)),
        rate=float(rate * rng.uniform(0.85, 1.15)),
        channel_sos=sos,
        reverb=reverb,
        snr_db=float(rng.uniform(snr_low, snr_high)),
        noise_colour=float(rng.uniform(0, 0.95)),
        music=110 * 2 ** (rng.integers(0, 36, n_tones) / 12),
        level_db=float(rng.uniform(-20, -3)),
    )


def synthesize_utterance(voice, session, duration, rng, sample_rate=16000):
    """Synthesises one utterance of a speaker in a session.

    Arguments
    ---------
    voice : Voice
        The speaker.
    session : Session
        The recording conditions.
    duration : float
        Length in seconds.
    rng : numpy.random.Generator
        Source of randomness (phonetic content, noise).
    sample_rate : int
        Output sample rate.

    Returns
    -------
    numpy.ndarray
        Float32 waveform of ``round(duration * sample_rate)`` samples with
        peak ``10 ** (session.level_db / 20)``.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> wav = synthesize_utterance(
    ...     sample_voice(rng), sample_session(rng, "speech"), 1.5, rng
    ... )
    >>> wav.shape, wav.dtype
    ((24000,), dtype('float32'))
    """
    n_samples = int(round(duration * sample_rate))
    n_frames = n_samples // HOP + 1
    track = _syllable_tracks(voice, session, n_frames, rng, sample_rate)
    f0 = _f0_track(voice, session, track, rng, sample_rate)
    frame_times = np.arange(n_frames) * HOP
    times = np.arange(n_samples)
    f0 = np.interp(times, frame_times, f0)
    voicing = np.interp(times, frame_times, track["voicing"]).astype(np.float32)
    frication = np.interp(times, frame_times, track["frication"]).astype(
        np.float32
    )

    glottal, flow = _glottal_source(voice, f0, rng, sample_rate)
    # Aspiration (voiced frames) and frication (unvoiced frames) hardly
    # overlap in time, so they can share one white-noise draw.
    white = _white(rng, n_samples)
    aspiration = white * (0.3 + flow)
    aspiration *= voice.breathiness * _rms(glottal) / _rms(aspiration)
    voiced = (glottal + aspiration) * voicing
    noise = white * frication

    freqs = np.fft.rfftfreq(N_FFT, 1 / sample_rate)
    step = STFT_HOP // HOP
    tract = _tract_response(
        voice, track["formants"][::step], freqs, sample_rate
    )
    onset = _consonant_response(
        voice, track["consonant"][::step], freqs, sample_rate
    )
    vowels, consonants = _filter_stft(
        np.stack([voiced, noise]), np.stack([tract, onset])
    )
    # Consonants sit 10-20 dB under the vowels, whatever the filter gains.
    speech = vowels + consonants * (
        voice.frication_level * _rms(vowels) / _rms(consonants)
    )
    return _record(speech[:n_samples], session, rng, sample_rate)


def generate_demo_corpus(
    out_dir,
    n_train_speakers=24,
    n_eval_speakers=8,
    utts_per_speaker=16,
    n_test_per_eval_speaker=6,
    seed=1234,
    sample_rate=16000,
    num_workers=None,
):
    """Writes a synthetic corpus in CN-Celeb's on-disk layout.

    The layout is that of the ``CN-Celeb_flac`` folder::

        data/<spk>/<genre>-<session>-<utt>.flac   all speakers' utterances
        dev/dev.lst                               training speaker ids
        eval/enroll/<spk>-enroll.flac             concatenated enrolment
        eval/test/<spk>-<genre>-<session>-<utt>.flac
        eval/lists/enroll.lst    <spk>-enroll enroll/<spk>-enroll.flac
        eval/lists/enroll.map    <spk>-enroll <spk>/<utt>.flac ...
        eval/lists/trials.lst    <spk>-enroll test/<utt>.wav 0|1

    Training speakers are id00000..., evaluation speakers id00800...
    Enrolment uses the first session of an evaluation speaker, tests come
    from the other sessions (other genres and channels) where there are any.
    Trials pair every enrolment with every test file and, as in the real
    release, name test files with a ``.wav`` extension.

    Arguments
    ---------
    out_dir : str
        Root folder to create (the ``CN-Celeb_flac`` equivalent).
    n_train_speakers : int
        Speakers listed in dev/dev.lst (at most 800).
    n_eval_speakers : int
        Evaluation speakers.
    utts_per_speaker : int
        Utterances of each speaker under data/.
    n_test_per_eval_speaker : int
        Of an evaluation speaker's utterances, how many are test files.
    seed : int
        Everything written depends only on the arguments and this seed.
    sample_rate : int
        Sample rate of the FLAC files (16-bit PCM).
    num_workers : int, optional
        Processes that synthesise speakers in parallel; the output does not
        depend on it. None uses up to 4 CPUs, or 1 for corpora of under 100
        utterances, where starting processes costs more than it saves.

    Returns
    -------
    str
        ``out_dir``.
    """
    if not 0 < n_train_speakers <= 800 or n_eval_speakers < 1:
        raise ValueError(
            "need 1-800 training speakers and at least 1 evaluation speaker"
        )
    if not 0 < n_test_per_eval_speaker < utts_per_speaker:
        raise ValueError(
            "n_test_per_eval_speaker must be at least 1 and leave one "
            f"utterance of the {utts_per_speaker} for enrolment"
        )
    out_dir = str(out_dir)
    for folder in ("dev", "eval/lists", "eval/enroll", "eval/test"):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)

    train_ids = [f"id{i:05d}" for i in range(n_train_speakers)]
    eval_ids = [f"id{800 + i:05d}" for i in range(n_eval_speakers)]
    jobs = [
        (
            out_dir,
            spk,
            [seed, index],
            utts_per_speaker,
            n_test_per_eval_speaker if spk in eval_ids else 0,
            sample_rate,
        )
        for index, spk in enumerate(train_ids + eval_ids)
    ]
    if num_workers is None:
        small = len(jobs) * utts_per_speaker < 100
        num_workers = 1 if small else min(4, os.cpu_count() or 1)
    if num_workers > 1:
        context = multiprocessing.get_context("spawn")
        with context.Pool(num_workers) as pool:
            results = pool.starmap(_write_speaker, jobs)
    else:
        results = [_write_speaker(*job) for job in jobs]

    _write_lines(os.path.join(out_dir, "dev", "dev.lst"), train_ids)
    _write_eval_lists(out_dir, dict(zip(eval_ids, results[len(train_ids) :])))
    return out_dir


def _write_speaker(out_dir, spk, seed, n_utts, n_test, sample_rate):
    """Writes one speaker's files; see :func:`generate_demo_corpus`.

    Returns the enrolment sources (relative to data/) and the test stems of
    an evaluation speaker (``n_test > 0``), else None.
    """
    rng = np.random.default_rng(seed)
    utterances = _write_utterances(out_dir, spk, rng, n_utts, sample_rate)
    if n_test:
        return _write_eval_files(out_dir, spk, utterances, n_test, sample_rate)
    return None


def _write_utterances(out_dir, spk, rng, n_utts, sample_rate):
    """Writes data/<spk>/ and returns [(session index, name, waveform)]."""
    voice = sample_voice(rng)
    n_genres = min(rng.integers(1, 4), n_utts)
    genres = rng.choice(GENRES, n_genres, replace=False)
    n_sessions = int(np.clip(rng.integers(2, 5), n_genres, n_utts))
    session_genres = list(genres) + list(
        rng.choice(genres, n_sessions - n_genres)
    )
    sessions = [sample_session(rng, g, sample_rate) for g in session_genres]
    # Every session gets an utterance, the rest are spread at random.
    owner = np.sort(
        np.concatenate(
            [
                np.arange(n_sessions),
                rng.integers(0, n_sessions, n_utts - n_sessions),
            ]
        )
    )
    number_in_genre = {}
    utterances = []
    for index, session in enumerate(sessions):
        number_in_genre[session.genre] = (
            number_in_genre.get(session.genre, 0) + 1
        )
        prefix = f"{session.genre}-{number_in_genre[session.genre]:02d}"
        for utt in range(int(np.sum(owner == index))):
            # Log-uniform 1-5 s: about 40 % are under 2 s, as in CN-Celeb.
            duration = float(np.exp(rng.uniform(0, np.log(5))))
            wav = synthesize_utterance(
                voice, session, duration, rng, sample_rate
            )
            name = f"{prefix}-{utt + 1:03d}"
            path = os.path.join(out_dir, "data", spk, name + ".flac")
            _write_flac(path, wav, sample_rate)
            utterances.append((index, name, wav))
    return utterances


def _write_eval_files(out_dir, spk, utterances, n_test, sample_rate):
    """Writes an evaluation speaker's enrolment and test files.

    Returns the enrolment sources (relative to data/) and the test stems.
    """
    # Tests come from later sessions first, so enrolment and test differ in
    # channel and usually genre, as in CNC-Eval.
    later = [u for u in utterances if u[0] != 0]
    first = [u for u in utterances if u[0] == 0]
    tests = (later + first[::-1])[:n_test]
    test_names = {name for _, name, _ in tests}
    enrol = [u for u in first if u[1] not in test_names] or [
        u for u in utterances if u[1] not in test_names
    ][:1]
    enrol_wav = np.concatenate([wav for _, _, wav in enrol])
    _write_flac(
        os.path.join(out_dir, "eval", "enroll", f"{spk}-enroll.flac"),
        enrol_wav,
        sample_rate,
    )
    for _, name, wav in tests:
        _write_flac(
            os.path.join(out_dir, "eval", "test", f"{spk}-{name}.flac"),
            wav,
            sample_rate,
        )
    return (
        [f"{spk}/{name}.flac" for _, name, _ in enrol],
        [f"{spk}-{name}" for _, name, _ in tests],
    )


def _write_eval_lists(out_dir, eval_files):
    """Writes enroll.lst, enroll.map and trials.lst.

    ``eval_files`` maps each evaluation speaker to (enrolment sources, test
    stems).
    """
    enrolments = {spk: enrol for spk, (enrol, _) in eval_files.items()}
    tests = [test for _, spk_tests in eval_files.values() for test in spk_tests]
    lists = os.path.join(out_dir, "eval", "lists")
    _write_lines(
        os.path.join(lists, "enroll.lst"),
        [f"{spk}-enroll enroll/{spk}-enroll.flac" for spk in enrolments],
    )
    _write_lines(
        os.path.join(lists, "enroll.map"),
        [
            f"{spk}-enroll {' '.join(sources)}"
            for spk, sources in enrolments.items()
        ],
    )
    _write_lines(
        os.path.join(lists, "trials.lst"),
        [
            f"{spk}-enroll test/{test}.wav {int(test.startswith(spk + '-'))}"
            for spk in enrolments
            for test in tests
        ],
    )


def _write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def _write_flac(path, wav, sample_rate):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, wav, sample_rate, format="FLAC", subtype="PCM_16")


def _syllable_tracks(voice, session, n_frames, rng, sample_rate):
    """Frame-level control tracks (hop :data:`HOP`) for a syllable string."""
    frame_rate = sample_rate / HOP
    vowel_frames = voice.vowel_duration * session.rate * frame_rate
    # (frames, vowel, consonant, voiced, frication, pitch, pause)
    total = int(rng.integers(2, 12))  # leading silence
    segments = [(total, -1, -1, 0, 0, 0, 1)]
    pitch = 0.0
    singing = session.genre == "singing"
    while total < n_frames:
        if rng.random() < 0.7:
            consonant = int(rng.integers(len(CONSONANTS)))
            if CONSONANTS[consonant, 2]:  # closure, then burst
                segments.append((int(rng.integers(3, 8)), -1, -1, 0, 0, 0, 0))
                burst = int(rng.integers(2, 5))
            else:
                burst = int(rng.integers(5, 15))
            segments.append((burst, -1, consonant, 0, 1, 0, 0))
        pitch = rng.normal(0, voice.f0_range)
        if singing:
            pitch = np.round(pitch * 1.5)
        length = max(3, int(vowel_frames * rng.uniform(0.6, 1.6)))
        vowel = int(rng.integers(len(VOWEL_FORMANTS)))
        segments.append((length, vowel, -1, 1, 0, pitch, 0))
        if rng.random() < 0.15:  # phrase break
            segments.append((int(rng.integers(12, 45)), -1, -1, 0, 0, 0, 1))
        total = sum(s[0] for s in segments)

    lengths = np.array([s[0] for s in segments])
    columns = np.array([s[1:] for s in segments], dtype=float)
    per_frame = np.repeat(columns, lengths, axis=0)[:n_frames]
    vowel = per_frame[:, 0].astype(int)
    # Between vowels the tract holds the last vowel, so transitions glide.
    last_vowel = np.maximum.accumulate(
        np.where(vowel >= 0, np.arange(n_frames), 0)
    )
    held = np.where(vowel[last_vowel] >= 0, vowel[last_vowel], 7)
    formants = VOWEL_FORMANTS[held] * voice.formant_offsets
    formants = _smooth(formants, 6)
    return {
        "formants": formants * voice.tract_scale,
        "consonant": per_frame[:, 1].astype(int),
        "voicing": _smooth(per_frame[:, 2], 3),
        "frication": _smooth(per_frame[:, 3], 2),
        "pitch": per_frame[:, 4],
        "voiced": per_frame[:, 2] > 0,
        "pause": per_frame[:, 5] > 0,
    }


def _f0_track(voice, session, track, rng, sample_rate):
    """Frame-level F0 in Hz: targets, declination, vibrato, jitter."""
    _, genre_shift, range_factor, _, _ = GENRE_STYLE[session.genre]
    n_frames = len(track["pitch"])
    semitones = track["pitch"] * range_factor
    # Hold the pitch through unvoiced frames, then smooth into a contour.
    voiced_index = np.maximum.accumulate(
        np.where(track["voiced"], np.arange(n_frames), 0)
    )
    semitones = _smooth(semitones[voiced_index], 8)
    # Declination: about -2 semitones per second within each phrase.
    phrase_start = np.maximum.accumulate(
        np.where(track["pause"], np.arange(n_frames), 0)
    )
    semitones -= 2.0 * (np.arange(n_frames) - phrase_start) * HOP / sample_rate
    if session.genre == "singing":
        time = np.arange(n_frames) * HOP / sample_rate
        semitones += 0.5 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * time)
    semitones += session.f0_shift + genre_shift
    f0 = voice.f0 * 2 ** (semitones / 12)
    f0 *= 1 + voice.jitter * rng.normal(0, 1, n_frames)
    return np.clip(f0, 60, 600)


def _glottal_source(voice, f0, rng, sample_rate):
    """Rosenberg pulse flow derivative with shimmer and spectral tilt.

    Returns the tilted flow derivative (the excitation) and the flow itself
    (which modulates the aspiration noise), both float32 like ``f0``.
    """
    phase = np.cumsum(f0 / sample_rate)
    cycle = np.floor(phase).astype(int)
    position = (phase - cycle).astype(np.float32)
    opening = 0.6 * voice.open_quotient
    closing = voice.open_quotient - opening
    flow = np.zeros_like(position)
    rising = position < opening
    falling = ~rising & (position < voice.open_quotient)
    flow[rising] = 0.5 - 0.5 * np.cos(position[rising] * (np.pi / opening))
    flow[falling] = np.cos(
        (position[falling] - opening) * (0.5 * np.pi / closing)
    )
    shimmer = 1 + voice.shimmer * _white(rng, cycle[-1] + 1)
    derivative = np.diff(flow, prepend=np.float32(0)) * shimmer[cycle]
    return _one_pole(derivative, voice.tilt), flow


def _one_pole(signal, coefficient):
    """Unity-DC-gain one-pole low-pass, keeping float32."""
    b = np.array([1 - coefficient], np.float32)
    a = np.array([1, -coefficient], np.float32)
    return scipy.signal.lfilter(b, a, signal)


def _white(rng, n):
    return rng.standard_normal(n, dtype=np.float32)


def _peaking_eq(centre, gain_db, q, sample_rate):
    """One second-order section of an RBJ-cookbook peaking equaliser."""
    amplitude = 10 ** (gain_db / 40)
    omega = 2 * np.pi * centre / sample_rate
    alpha = np.sin(omega) / (2 * q)
    b = [1 + alpha * amplitude, -2 * np.cos(omega), 1 - alpha * amplitude]
    a = [1 + alpha / amplitude, -2 * np.cos(omega), 1 - alpha / amplitude]
    return np.concatenate([b, a]) / a[0]


def _resonance(freqs, centre, bandwidth, sample_rate):
    """Complex response of a unity-DC-gain two-pole resonator.

    ``centre`` and ``bandwidth`` (Hz) broadcast against each other; the
    result gains a trailing axis over ``freqs``.
    """
    radius = np.exp(-np.pi * np.asarray(bandwidth)[..., None] / sample_rate)
    angle = 2 * np.pi * np.asarray(centre)[..., None] / sample_rate
    a1 = (-2 * radius * np.cos(angle)).astype(np.float32)
    a2 = (radius**2).astype(np.float32)
    omega = (2 * np.pi * freqs / sample_rate).astype(np.float32)
    # The denominator 1 + a1 z^-1 + a2 z^-2 on the unit circle is
    # real - j * imag; dividing in real arithmetic is several times faster.
    real = 1 + a1 * np.cos(omega) + a2 * np.cos(2 * omega)
    imag = a1 * np.sin(omega) + a2 * np.sin(2 * omega)
    gain = (1 + a1 + a2) / (real * real + imag * imag)
    response = np.empty(real.shape, np.complex64)
    response.real = gain * real
    response.imag = gain * imag
    return response


def _tract_response(voice, formants, freqs, sample_rate):
    """Per-frame vocal-tract response [frames, freqs] of the cascade."""
    n_frames = len(formants)
    centres = np.concatenate(
        [formants, np.full((n_frames, 1), F5 * voice.tract_scale)], axis=1
    )
    centres = np.minimum(centres, 0.45 * sample_rate)
    widths = BANDWIDTHS * voice.bandwidth_scale
    response = np.prod(_resonance(freqs, centres, widths, sample_rate), axis=1)
    # Klatt's nasal pair: a pole at NASAL_POLE over a zero above it.
    nasal = _resonance(freqs, NASAL_POLE, 100.0, sample_rate) / _resonance(
        freqs, NASAL_POLE + voice.nasality, 100.0, sample_rate
    )
    # First difference: lip radiation.
    radiation = 1 - np.exp(-2j * np.pi * freqs / sample_rate)
    return response * nasal * radiation


def _consonant_response(voice, consonant, freqs, sample_rate):
    """Per-frame noise-source response [frames, freqs] of the onsets."""
    centres = np.minimum(
        CONSONANTS[:, 0] * voice.tract_scale, 0.45 * sample_rate
    )
    table = _resonance(freqs, centres, CONSONANTS[:, 1], sample_rate)
    return table[np.maximum(consonant, 0)] * (consonant >= 0)[:, None]


def _filter_stft(signals, responses):
    """Applies per-frame frequency responses by overlap-add.

    Frames of :data:`N_FFT` samples at 50 % overlap, centred every
    :data:`STFT_HOP` samples, with a square-root Hann window on analysis and
    synthesis (the squared windows sum to one, so an all-pass response
    returns the input).

    Arguments
    ---------
    signals : numpy.ndarray
        Signals of shape [channels, time].
    responses : numpy.ndarray
        Complex responses [channels, frames, N_FFT // 2 + 1]; the last one
        is repeated if there are fewer frames than the signal needs.

    Returns
    -------
    numpy.ndarray
        Filtered signals of shape [channels, time].
    """
    channels, length = signals.shape
    n_frames = -(-length // STFT_HOP) + 1
    padded = np.zeros((channels, (n_frames + 1) * STFT_HOP), np.float32)
    padded[:, STFT_HOP : STFT_HOP + length] = signals
    blocks = padded.reshape(channels, n_frames + 1, STFT_HOP)
    frames = np.concatenate([blocks[:, :-1], blocks[:, 1:]], axis=-1)
    window = np.sqrt(scipy.signal.get_window("hann", N_FFT)).astype(np.float32)
    index = np.minimum(np.arange(n_frames), responses.shape[1] - 1)
    spec = scipy.fft.rfft(frames * window) * responses[:, index]
    out = scipy.fft.irfft(spec, N_FFT) * window
    joined = out[:, :-1, STFT_HOP:] + out[:, 1:, :STFT_HOP]
    return joined.reshape(channels, -1)[:, :length]


def _record(speech, session, rng, sample_rate):
    """Room, background, channel and level of a session."""
    if session.reverb is not None:
        speech = scipy.signal.fftconvolve(speech, session.reverb)[: len(speech)]
    n = len(speech)
    background = _one_pole(_white(rng, n), session.noise_colour)
    if len(session.music):
        time = np.arange(n, dtype=np.float32) / sample_rate
        phases = rng.uniform(0, 2 * np.pi, len(session.music))
        tones = np.sin(
            (2 * np.pi * session.music[:, None]).astype(np.float32) * time
            + phases[:, None].astype(np.float32)
        ).sum(axis=0)
        background = background / _rms(background) + 2 * tones / _rms(tones)
    gain = _rms(speech) / _rms(background) * 10 ** (-session.snr_db / 20)
    mixed = scipy.signal.sosfilt(
        session.channel_sos, speech + gain * background
    )
    peak = 10 ** (session.level_db / 20)
    return (mixed * peak / np.max(np.abs(mixed))).astype(np.float32)


def _smooth(values, width):
    """Moving average over frames along the first axis (same length)."""
    kernel = np.ones(width) / width
    padded = np.pad(
        values,
        [(width // 2, width - 1 - width // 2)]
        + [(0, 0)] * (np.ndim(values) - 1),
        mode="edge",
    )
    return np.apply_along_axis(np.convolve, 0, padded, kernel, mode="valid")


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x)))) + 1e-12


def main(argv=None):
    """Command-line entry point; see ``--help``."""
    parser = argparse.ArgumentParser(
        description="Write a synthetic corpus in CN-Celeb's layout."
    )
    parser.add_argument("out_dir", help="root (CN-Celeb_flac equivalent)")
    parser.add_argument("--n_train_speakers", type=int, default=24)
    parser.add_argument("--n_eval_speakers", type=int, default=8)
    parser.add_argument("--utts_per_speaker", type=int, default=16)
    parser.add_argument("--n_test_per_eval_speaker", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--num_workers", type=int, default=None)
    args = parser.parse_args(argv)
    generate_demo_corpus(**vars(args))
    print(f"wrote demo corpus to {args.out_dir}")


if __name__ == "__main__":
    main()
