"""ONNX Runtime backend for :mod:`speechbrain_ext.inference.extraction`.

:class:`OnnxEncoder` runs the ``embedding_model.onnx`` that
:mod:`speechbrain_ext.inference.onnx_export` writes into an export folder,
behind the ``encode_batch(wavs, wav_lens)`` / ``device`` interface of
SpeechBrain's ``EncoderClassifier``. The extractor is unchanged: the same
length-sorted batches, mirror padding, relative lengths, DataLoader workers
and resumable cache feed either backend. :func:`load_encoder` gives one or
the other with the same ``threads`` setting, torch's intra-op threads or
ONNX Runtime's ``intra_op_num_threads``, as ``verify.py --backend
--threads`` does.

``onnxruntime`` is optional (``pip install speechbrain_ext[onnx]``): this
module imports without it, and asking for the ONNX backend without it
raises an ``ImportError`` that says how to install it.

Example
-------
>>> load_encoder("some/export", backend="tensorflow")
Traceback (most recent call last):
    ...
ValueError: unknown backend 'tensorflow': choose from ['onnx', 'torch']
"""

import os

import numpy as np
import torch

__all__ = [
    "BACKENDS",
    "ONNX_FILE",
    "OnnxEncoder",
    "load_encoder",
    "make_session",
    "onnx_extractor",
    "onnx_path",
    "require_onnxruntime",
]

BACKENDS = ("torch", "onnx")
INSTALL_HINT = "pip install speechbrain_ext[onnx]"
# The file an export folder holds the graph in (onnx_export writes it).
ONNX_FILE = "embedding_model.onnx"


def onnx_path(model_folder):
    """Where the ONNX graph of an export folder lives.

    Example
    -------
    >>> onnx_path("results/aam_softmax/1986/export")
    'results/aam_softmax/1986/export/embedding_model.onnx'
    """
    return os.path.join(model_folder, ONNX_FILE)


def require_onnxruntime():
    """Imports ``onnxruntime``, or says how to install it.

    Returns
    -------
    module
        ``onnxruntime``.
    """
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            f"the ONNX backend needs onnxruntime, which is not installed "
            f"({err}): {INSTALL_HINT}"
        ) from err
    return onnxruntime


def make_session(path, threads=None):
    """An ONNX Runtime CPU session with all graph optimisations.

    Arguments
    ---------
    path : str
        ONNX file.
    threads : int, optional
        ``intra_op_num_threads`` (None: ONNX Runtime's choice, one per
        physical core).

    Returns
    -------
    onnxruntime.InferenceSession
    """
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(
        path, options, providers=["CPUExecutionProvider"]
    )


class OnnxEncoder:
    """An exported ``embedding_model.onnx`` behind ``encode_batch``.

    Arguments
    ---------
    path : str
        The ONNX file, or the export folder holding ``embedding_model.onnx``.
    threads : int, optional
        ONNX Runtime intra-op threads (None: its default).

    Attributes
    ----------
    device : str
        Always ``"cpu"``: inputs are handed to ONNX Runtime as numpy arrays.
    sample_rate : int
        Rate the graph expects (from its metadata).
    """

    device = "cpu"

    def __init__(self, path, threads=None):
        if os.path.isdir(path):
            path = onnx_path(path)
        require_onnxruntime()
        if not os.path.isfile(path):
            folder = os.path.dirname(path) or "."
            raise FileNotFoundError(
                f"no ONNX model {path}: export it first with "
                "`python -m speechbrain_ext.inference.onnx_export "
                f"{folder}` (or the recipe's export.py --onnx)"
            )
        self.path = path
        self.threads = threads
        self.session = make_session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.sample_rate = int(meta.get("sample_rate", 16000))

    def encode_batch(self, wavs, wav_lens=None):
        """Embeds a padded batch, as ``EncoderClassifier.encode_batch`` does.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms [batch, samples] (or one [samples]).
        wav_lens : torch.Tensor, optional
            Relative lengths [batch] (None: all 1.0).

        Returns
        -------
        torch.Tensor
            Embeddings [batch, 1, dim] on the CPU.
        """
        if wavs.ndim == 1:
            wavs = wavs.unsqueeze(0)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        inputs = {
            "wavs": _float_array(wavs),
            "wav_lens": _float_array(wav_lens),
        }
        embeddings = self.session.run(["embeddings"], inputs)[0]
        return torch.from_numpy(embeddings).unsqueeze(1)

    def __repr__(self):
        return f"OnnxEncoder({self.path!r}, threads={self.threads})"


def _float_array(tensor):
    """A contiguous float32 numpy array of a tensor, on the CPU."""
    array = tensor.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(array)


def load_encoder(
    model_folder,
    backend="torch",
    threads=None,
    device="cpu",
    savedir=None,
    onnx_model=None,
):
    """The encoder of an export folder, run by torch or ONNX Runtime.

    Arguments
    ---------
    model_folder : str
        Folder ``EncoderClassifier.from_hparams`` loads.
    backend : str
        ``"torch"`` (SpeechBrain's ``EncoderClassifier``) or ``"onnx"``
        (:class:`OnnxEncoder` on ``<model_folder>/embedding_model.onnx``).
    threads : int, optional
        Intra-op threads of the backend (None leaves its default). For
        torch this sets ``torch.set_num_threads`` for the process.
    device : str
        Torch device; the ONNX backend runs on the CPU only.
    savedir : str, optional
        Where SpeechBrain links the loaded files (torch backend).
    onnx_model : str, optional
        Another ONNX file than the folder's (ONNX backend).

    Returns
    -------
    object
        Has ``encode_batch(wavs, wav_lens)`` and ``device``.
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown backend {backend!r}: choose from {sorted(BACKENDS)}"
        )
    if backend == "onnx":
        if str(device) != "cpu":
            raise ValueError(
                f"the ONNX backend runs on the CPU, not on {device}"
            )
        return OnnxEncoder(onnx_model or model_folder, threads=threads)
    from speechbrain.inference.speaker import EncoderClassifier

    if threads:
        torch.set_num_threads(int(threads))
    return EncoderClassifier.from_hparams(
        source=os.path.abspath(model_folder),
        savedir=savedir,
        run_opts={"device": device},
    )


def onnx_extractor(path, threads=None, **extractor_options):
    """An :class:`EmbeddingExtractor` running an ONNX model.

    Arguments
    ---------
    path : str
        ONNX file or export folder holding ``embedding_model.onnx``.
    threads : int, optional
        ONNX Runtime intra-op threads.
    **extractor_options
        ``batch_size``, ``num_workers``, ``transform``... as for
        :class:`speechbrain_ext.inference.extraction.EmbeddingExtractor`.

    Returns
    -------
    EmbeddingExtractor
    """
    from speechbrain_ext.inference.extraction import EmbeddingExtractor

    encoder = OnnxEncoder(path, threads=threads)
    extractor_options.setdefault("sample_rate", encoder.sample_rate)
    return EmbeddingExtractor(encoder, **extractor_options)
