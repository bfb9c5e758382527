"""A linked subset of a ``<speaker>/<utt>`` corpus, for smoke tests."""

import os

__all__ = ["subset_corpus"]


def subset_corpus(data_folder, folder, n_speakers, utts_per_speaker):
    """Links a subset of a ``<speaker>/<utt>`` corpus into ``folder``.

    Speakers are taken evenly from the sorted speaker folders and
    utterances evenly from each speaker's sorted files, so a subset of the
    shared data keeps both corpora and many different words.

    Arguments
    ---------
    data_folder : str
        Corpus root (speaker folders at any depth).
    folder : str
        Where ``<speaker>/<file>`` symbolic links are made.
    n_speakers : int or None
        Speakers kept (None: all).
    utts_per_speaker : int or None
        Files kept per speaker (None: all).

    Returns
    -------
    str
        ``folder``.

    Example
    -------
    >>> tmpdir = getfixture("tmpdir")
    >>> for spk in ("a", "b", "c"):
    ...     for i in range(4):
    ...         _ = (tmpdir / "corpus" / spk).ensure(f"{spk}-w{i}.wav")
    >>> out = subset_corpus(str(tmpdir / "corpus"), str(tmpdir / "sub"), 2, 2)
    >>> sorted(os.listdir(out)), sorted(os.listdir(os.path.join(out, "a")))
    (['a', 'c'], ['a-w0.wav', 'a-w2.wav'])
    """
    speakers = {}
    for root, _, files in os.walk(data_folder):
        audio = sorted(f for f in files if not f.endswith((".csv", ".md")))
        if audio:
            speakers[root] = audio
    roots = sorted(speakers, key=os.path.basename)
    if n_speakers:
        roots = [
            roots[round(i * len(roots) / n_speakers)]
            for i in range(min(n_speakers, len(roots)))
        ]
    for root in roots:
        files = speakers[root]
        if utts_per_speaker and utts_per_speaker < len(files):
            files = [
                files[i * len(files) // utts_per_speaker]
                for i in range(utts_per_speaker)
            ]
        target = os.path.join(folder, os.path.basename(root))
        os.makedirs(target, exist_ok=True)
        for name in files:
            link = os.path.join(target, name)
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(os.path.join(root, name)), link)
    return folder
