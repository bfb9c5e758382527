"""ONNX export of an exported speaker encoder, feature front end included.

:func:`export_onnx` reads a folder written by
:func:`speechbrain_ext.inference.export.export_encoder` (any folder
``EncoderClassifier.from_hparams`` loads) and writes
``<folder>/embedding_model.onnx``, beside ``embedding_model.ckpt``. The
graph is what ``EncoderClassifier.encode_batch`` computes, whole:

    wavs [batch, samples], wav_lens [batch] -> embeddings [batch, dim]

with Fbank, sentence mean normalisation and the embedding network inside,
and dynamic ``batch`` and ``samples`` axes. ``wav_lens`` are SpeechBrain's
relative lengths (as
:class:`~speechbrain_ext.inference.extraction.EmbeddingExtractor` passes
them): the normalisation and ECAPA's squeeze-excitation and attentive
pooling use them, so a padded batch gives the embeddings it gives in torch.

Why the front end is in the graph, and how
------------------------------------------
``torch.stft`` returns complex numbers, which the TorchScript exporter
(``torch.onnx.export(dynamo=False)``) refuses ("STFT does not currently
support complex types"). The ``torch.export`` based exporter
(``dynamo=True``, opset 18) exports the stock Fbank to an ONNX ``STFT``
node and matches torch, but ONNX Runtime computes that node as a direct DFT
(``n_fft`` = 400 is not a power of two) instead of with the optimised
convolution kernels the rest of the graph runs on. The export therefore
swaps SpeechBrain's STFT for :class:`DftConvSTFT`, the same transform
written as a strided convolution with windowed cosine and sine kernels
(mathematically equal; the example below checks float32 agreement to
1e-4).
Filterbank, log compression, mean normalisation and the network are
SpeechBrain's own modules, traced as they are, with two equivalent
rewrites that remove work: ECAPA's attentive pooling becomes
:class:`ContextSplitPooling` (no utterance statistics repeated over time
and concatenated to 3 C channels), and the reflect ``Pad`` nodes of zero
width that SpeechBrain's ``Conv1d`` puts before every 1x1 convolution are
dropped from the graph. No timing of these rewrites on their own is
committed: ``bench/extract.py`` (``bench/results/extract.json``) times the
exported graph as a whole. The non-strict
``torch.export`` mode specialises the batch size (SpeechBrain's
``length_to_mask`` calls ``len()`` on a tensor), so the strict mode is used
first.

Every export is checked before it replaces an older file: ONNX Runtime
runs a padded batch of another size and length than the traced example, and
each embedding must keep a cosine similarity of at least 0.9999 with
torch's. A model that cannot be traced or fails the check raises
:class:`OnnxExportError` naming the folder and the model class.

Command line (after ``pip install speechbrain_ext[onnx]``)::

    python -m speechbrain_ext.inference.onnx_export \
        results/aam_softmax/1986/export

Example
-------
>>> from speechbrain.processing.features import STFT
>>> stft = STFT(sample_rate=16000)
>>> wav = torch.randn(2, 4000)
>>> torch.allclose(DftConvSTFT(stft)(wav), stft(wav), atol=1e-4)
True
"""

import argparse
import contextlib
import copy
import logging
import math
import os
import shutil
import tempfile
import warnings

import numpy as np
import torch

# The runtime side owns the file name; export depends on it, not back.
from speechbrain_ext.inference.onnx_backend import (
    ONNX_FILE,
    make_session,
    onnx_path,
    require_onnxruntime,
)

__all__ = [
    "ONNX_FILE",
    "ContextSplitPooling",
    "DftConvSTFT",
    "OnnxExportError",
    "export_encoder_onnx",
    "export_onnx",
    "onnx_path",
]

# Written in the SpeechBrain export folder, beside embedding_model.ckpt.
OPSET = 18
INSTALL_HINT = "pip install speechbrain_ext[onnx]"
# Each ONNX embedding must agree this well with torch's for an export.
MIN_COSINE = 0.9999


class OnnxExportError(RuntimeError):
    """A model that cannot be exported to ONNX, or exports wrongly."""


def _require_exporter():
    """Imports the packages ``torch.onnx.export(dynamo=True)`` needs."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (used by torch.onnx)
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs the onnx and onnxscript packages ({err}): "
            f"{INSTALL_HINT}"
        ) from err
    return onnx


class DftConvSTFT(torch.nn.Module):
    """SpeechBrain's STFT as a strided convolution with DFT kernels.

    Gives what ``speechbrain.processing.features.STFT`` gives for
    single-channel audio ([batch, time] in, [batch, frames, n_fft // 2 + 1,
    2] out), with the same window, hop, centring and padding mode, as a
    ``Conv1d`` whose 2 (n_fft // 2 + 1) kernels are the windowed cosines and
    (negated) sines of the one-sided DFT. ONNX Runtime runs that as one
    matrix product, where its ``STFT`` kernel is a direct DFT.

    Arguments
    ---------
    stft : speechbrain.processing.features.STFT
        The transform to copy (one-sided).
    """

    def __init__(self, stft):
        super().__init__()
        if not stft.onesided:
            raise ValueError("DftConvSTFT computes one-sided STFTs only")
        n_fft, win = stft.n_fft, stft.win_length
        window = torch.zeros(n_fft, dtype=torch.float64)
        left = (n_fft - win) // 2  # torch.stft centres a shorter window
        window[left : left + win] = stft.window.double()
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        # k n mod n_fft keeps the angles small, so float64 stays exact.
        angle = 2 * math.pi * torch.remainder(k[:, None] * n, n_fft) / n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
        if stft.normalized_stft:
            basis = basis / math.sqrt(n_fft)
        self.register_buffer("basis", basis.float().unsqueeze(1))
        self.n_fft = n_fft
        self.hop_length = stft.hop_length
        self.center = stft.center
        self.pad_mode = stft.pad_mode

    def forward(self, x):
        """STFT of ``x`` [batch, time] as [batch, frames, freqs, 2]."""
        x = x.unsqueeze(1)
        if self.center:
            half = self.n_fft // 2
            x = torch.nn.functional.pad(x, (half, half), mode=self.pad_mode)
        spec = torch.nn.functional.conv1d(x, self.basis, stride=self.hop_length)
        spec = spec.reshape(spec.shape[0], 2, -1, spec.shape[-1])
        return spec.permute(0, 3, 2, 1)


class ContextSplitPooling(torch.nn.Module):
    """ECAPA's attentive statistics pooling without the repeated context.

    SpeechBrain's ``AttentiveStatisticsPooling`` (global context) repeats
    the utterance mean and std over every frame, concatenates them to the
    frames ([batch, 3 C, frames]) and applies a 1x1 convolution. The
    convolution is linear, so this module applies its frame part to the
    frames and adds its context part, computed once per utterance: the same
    function without the repeat (``Tile``) and the 3 C-channel concatenation,
    and with a third of that convolution's multiplications. The other
    layers are the original module's own.

    Arguments
    ---------
    asp : speechbrain.lobes.models.ECAPA_TDNN.AttentiveStatisticsPooling
        The pooling to copy (with ``global_context``).

    Example
    -------
    >>> from speechbrain.lobes.models.ECAPA_TDNN import (
    ...     AttentiveStatisticsPooling,
    ... )
    >>> asp = AttentiveStatisticsPooling(16, attention_channels=8).eval()
    >>> x, lengths = torch.randn(3, 16, 20), torch.tensor([1.0, 0.6, 0.85])
    >>> torch.allclose(
    ...     ContextSplitPooling(asp)(x, lengths), asp(x, lengths), atol=1e-5
    ... )
    True
    """

    def __init__(self, asp):
        super().__init__()
        conv = asp.tdnn.conv.conv
        channels = conv.in_channels // 3
        weight = conv.weight.detach()[:, :, 0]
        self.frame = torch.nn.Conv1d(channels, conv.out_channels, 1)
        self.frame.weight.data.copy_(weight[:, :channels, None])
        if conv.bias is None:
            self.frame.bias.data.zero_()
        else:
            self.frame.bias.data.copy_(conv.bias.detach())
        self.register_buffer("context_weight", weight[:, channels:].clone())
        self.activation = asp.tdnn.activation
        self.norm = asp.tdnn.norm
        self.dropout = asp.tdnn.dropout
        self.tanh = asp.tanh
        self.conv = asp.conv
        self.eps = asp.eps

    @staticmethod
    def supports(module):
        """Whether ``module`` is an ASP this class reproduces."""
        from speechbrain.lobes.models.ECAPA_TDNN import (
            AttentiveStatisticsPooling,
        )

        if type(module) is not AttentiveStatisticsPooling:
            return False
        conv = getattr(getattr(module.tdnn, "conv", None), "conv", None)
        return (
            module.global_context
            and isinstance(conv, torch.nn.Conv1d)
            and conv.kernel_size == (1,)
            and conv.stride == (1,)
            and conv.groups == 1
            and conv.in_channels % 3 == 0
        )

    def _statistics(self, x, weights):
        """Weighted mean and std over time, as SpeechBrain computes them."""
        mean = (weights * x).sum(2)
        variance = (weights * (x - mean.unsqueeze(2)).pow(2)).sum(2)
        return mean, torch.sqrt(variance.clamp(self.eps))

    def forward(self, x, lengths=None):
        """Pooled [batch, 2 C, 1] mean and std of x [batch, C, frames]."""
        frames = x.shape[-1]
        if lengths is None:
            lengths = torch.ones(x.shape[0], device=x.device)
        steps = torch.arange(frames, device=x.device, dtype=lengths.dtype)
        mask = (steps < (lengths * frames).unsqueeze(1)).to(x.dtype)
        mask = mask.unsqueeze(1)
        total = mask.sum(dim=2, keepdim=True)
        context = torch.cat(self._statistics(x, mask / total), dim=1)
        attn = self.frame(x) + (context @ self.context_weight.t()).unsqueeze(2)
        attn = self.dropout(self.norm(self.activation(attn)))
        attn = self.conv(self.tanh(attn))
        attn = attn.masked_fill(mask == 0, float("-inf"))
        attn = torch.nn.functional.softmax(attn, dim=2)
        mean, std = self._statistics(x, attn)
        return torch.cat((mean, std), dim=1).unsqueeze(2)


def _onnx_friendly_network(embedding_model):
    """A copy of the network with its ASP layers as ContextSplitPooling."""
    model = copy.deepcopy(embedding_model)
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if ContextSplitPooling.supports(child):
                setattr(parent, name, ContextSplitPooling(child))
                swapped += 1
    return model, swapped


class _Embedder(torch.nn.Module):
    """``EncoderClassifier.encode_batch`` as one module with two inputs."""

    def __init__(self, compute_features, mean_var_norm, embedding_model):
        super().__init__()
        self.compute_features = compute_features
        self.mean_var_norm = mean_var_norm
        self.embedding_model = embedding_model

    def forward(self, wavs, wav_lens):
        """Embeddings [batch, dim] of padded waveforms."""
        feats = self.compute_features(wavs)
        feats = self.mean_var_norm(feats, wav_lens)
        embeddings = self.embedding_model(feats, wav_lens)
        return embeddings.reshape(embeddings.shape[0], -1)


def _onnx_friendly_features(compute_features):
    """A copy of the front end with its STFT as a convolution, if it has one.

    Returns the copy and a description of the front end for the metadata.
    """
    from speechbrain.processing.features import STFT

    features = copy.deepcopy(compute_features)
    stft = getattr(features, "compute_STFT", None)
    if isinstance(stft, STFT) and stft.onesided:
        features.compute_STFT = DftConvSTFT(stft)
        how = "STFT as DFT convolution"
    else:
        how = "stock modules"
    return features, f"{type(compute_features).__name__} ({how})"


def _example_batch(sample_rate, sizes, seed=0):
    """Noise waveforms of the given lengths, mirrored to a padded batch."""
    from speechbrain_ext.inference.extraction import _pad_batch

    generator = torch.Generator().manual_seed(seed)
    batch = [
        (
            str(i),
            0.1 * torch.randn(int(seconds * sample_rate), generator=generator),
        )
        for i, seconds in enumerate(sizes)
    ]
    _, wavs, lens = _pad_batch(batch)
    return wavs, lens


@contextlib.contextmanager
def _quiet_exporter_logs():
    """Keeps the exporter's chatter out of the logs: an INFO line per graph
    pass, and a warning per torchvision operator it cannot register."""
    quiet = {
        "onnx_ir": logging.WARNING,
        "onnxscript": logging.WARNING,
        "torch.onnx._internal.exporter._registration": logging.ERROR,
    }
    loggers = [logging.getLogger(name) for name in quiet]
    levels = [logger.level for logger in loggers]
    for logger, level in zip(loggers, quiet.values()):
        logger.setLevel(max(logger.getEffectiveLevel(), level))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _trace(module, wavs, lens):
    """``torch.export`` program with dynamic batch and time axes."""
    dynamic = torch.export.Dim.DYNAMIC
    shapes = {"wavs": {0: dynamic, 1: dynamic}, "wav_lens": {0: dynamic}}
    errors = []
    for strict in (True, False):
        try:
            with warnings.catch_warnings():
                # SpeechBrain's autocast wrapper caches itself on first use.
                warnings.filterwarnings(
                    "ignore", message=".*side effects happened.*"
                )
                return torch.export.export(
                    module,
                    (wavs, lens),
                    dynamic_shapes=shapes,
                    strict=strict,
                )
        except Exception as err:  # noqa: BLE001 - reported below
            mode = "strict" if strict else "non-strict"
            errors.append(f"{mode} torch.export: {_first_line(err)}")
    raise OnnxExportError("; ".join(errors))


def _first_line(err):
    """``Type: first line`` of an exception's message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:500]


def _name_dynamic_axes(model):
    """Names the exporter's symbolic dimensions ``batch`` and ``samples``."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    names = {dims[0].dim_param: "batch", dims[1].dim_param: "samples"}
    values = [
        *model.graph.input,
        *model.graph.output,
        *model.graph.value_info,
    ]
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def _drop_noop_pads(model):
    """Removes ``Pad`` nodes that pad nothing; returns how many.

    SpeechBrain's ``Conv1d`` reflect-pads before every convolution, by
    zero samples for a 1x1 one; ONNX Runtime copies the tensor for each
    such ``Pad`` (a tenth of an ECAPA C=512 run). Their consumers read the
    input instead, and constants left unused go too.
    """
    from onnx import numpy_helper

    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            if node.attribute[0].name == "value":
                constants[node.output[0]] = node.attribute[0].t
    outputs = {value.name for value in graph.output}
    rename, kept = {}, []
    for node in graph.node:
        pads = None
        if node.op_type == "Pad" and len(node.input) > 1:
            pads = constants.get(node.input[1])
        noop = pads is not None and not numpy_helper.to_array(pads).any()
        if noop and node.output[0] not in outputs:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
        else:
            kept.append(node)
    for node in kept:
        for index, name in enumerate(node.input):
            if name in rename:
                node.input[index] = rename[name]
    used = {name for node in kept for name in node.input}
    used |= outputs
    kept = [
        node
        for node in kept
        if node.op_type != "Constant" or node.output[0] in used
    ]
    unused = [i for i in graph.initializer if i.name not in used]
    for initializer in unused:
        graph.initializer.remove(initializer)
    del graph.node[:]
    graph.node.extend(kept)
    return len(rename)


def _check_against_torch(module, path, sample_rate, label):
    """Runs ONNX Runtime on a fresh padded batch and compares with torch.

    ``module`` holds the original (not rewritten) modules, so the check
    also covers :class:`DftConvSTFT` and :class:`ContextSplitPooling`.
    """

    # Another batch size and length than the traced example: a dimension
    # the exporter had fixed would fail here, not in a user's run.
    wavs, lens = _example_batch(sample_rate, [1.37, 0.6, 1.1], seed=1)
    with torch.no_grad():
        expected = module(wavs, lens).numpy()
    session = make_session(path, threads=1)
    got = session.run(None, {"wavs": wavs.numpy(), "wav_lens": lens.numpy()})
    got = got[0]
    cosine = (expected * got).sum(1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1)
    )
    if got.shape != expected.shape or not cosine.min() >= MIN_COSINE:
        raise OnnxExportError(
            f"the ONNX graph of {label} disagrees with torch on a padded "
            f"batch: shapes {got.shape} / {expected.shape}, cosine "
            f"{np.round(cosine, 6).tolist()} (need >= {MIN_COSINE})"
        )
    return float(cosine.min())


def export_encoder_onnx(
    compute_features,
    mean_var_norm,
    embedding_model,
    path,
    sample_rate=16000,
    label=None,
    opset=OPSET,
):
    """Exports a front end and an embedding network as one ONNX graph.

    Arguments
    ---------
    compute_features : torch.nn.Module
        Waveforms [batch, samples] -> features [batch, frames, n_mels],
        e.g. ``speechbrain.lobes.features.Fbank`` (its STFT is exported as
        a :class:`DftConvSTFT`; the module itself is not changed).
    mean_var_norm : torch.nn.Module
        ``(features, wav_lens) -> features``, e.g. SpeechBrain's sentence
        ``InputNormalization``.
    embedding_model : torch.nn.Module
        ``(features, wav_lens) -> embeddings``, e.g. ECAPA-TDNN.
    path : str
        ONNX file to write (replaced only by a checked export).
    sample_rate : int
        Rate of the waveforms, stored in the graph's metadata.
    label : str, optional
        What to call the model in errors (default: its class name).
    opset : int
        ONNX opset (at least 17, where ONNX got ``STFT``).

    Returns
    -------
    str
        ``path``.
    """
    onnx = _require_exporter()

    require_onnxruntime()
    label = label or type(embedding_model).__name__
    features, front_end = _onnx_friendly_features(compute_features)
    network, pools = _onnx_friendly_network(embedding_model)
    module = _Embedder(features, copy.deepcopy(mean_var_norm), network)
    module.eval()
    reference = _Embedder(
        *copy.deepcopy((compute_features, mean_var_norm, embedding_model))
    ).eval()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".onnx-", dir=folder)
    try:
        wavs, lens = _example_batch(sample_rate, [1.0, 0.75])
        try:
            with torch.no_grad(), _quiet_exporter_logs():
                module(wavs, lens)  # also fills SpeechBrain's lazy caches
                program = _trace(module, wavs, lens)
                onnx_program = torch.onnx.export(
                    program,
                    (wavs, lens),
                    dynamo=True,
                    opset_version=opset,
                    input_names=["wavs", "wav_lens"],
                    output_names=["embeddings"],
                    verbose=False,
                )
            raw = os.path.join(staging, "raw.onnx")
            onnx_program.save(raw)
        except OnnxExportError as err:
            raise OnnxExportError(
                f"cannot export {label} to ONNX: {err}"
            ) from err
        except Exception as err:  # noqa: BLE001 - any exporter failure
            raise OnnxExportError(
                f"cannot export {label} to ONNX: {_first_line(err)}"
            ) from err
        model = onnx.load(raw)
        _name_dynamic_axes(model)
        dropped = _drop_noop_pads(model)
        with torch.no_grad():
            dim = int(module(wavs, lens).shape[1])
        metadata = {
            "producer": "speechbrain_ext.inference.onnx_export",
            "model": label,
            "front_end": f"{front_end} + {type(mean_var_norm).__name__}",
            "rewrites": f"{pools} ContextSplitPooling, {dropped} no-op Pads "
            "dropped",
            "sample_rate": str(sample_rate),
            "embedding_dim": str(dim),
        }
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        checked = os.path.join(staging, ONNX_FILE)
        onnx.save(model, checked)
        _check_against_torch(reference, checked, sample_rate, label)
        os.replace(checked, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def export_onnx(model_folder, path=None, opset=OPSET):
    """Writes ``embedding_model.onnx`` into a SpeechBrain export folder.

    Arguments
    ---------
    model_folder : str
        Folder that ``EncoderClassifier.from_hparams`` loads (e.g. one
        written by ``export.py`` or ``train.py``).
    path : str, optional
        ONNX file (default: ``<model_folder>/embedding_model.onnx``).
    opset : int
        ONNX opset.

    Returns
    -------
    str
        The ONNX file.
    """
    _require_exporter()
    from speechbrain.inference.speaker import EncoderClassifier

    if not os.path.isfile(os.path.join(model_folder, "hyperparams.yaml")):
        raise FileNotFoundError(f"no hyperparams.yaml in {model_folder}")
    path = path or onnx_path(model_folder)
    with tempfile.TemporaryDirectory(prefix="onnx_export_") as savedir:
        encoder = EncoderClassifier.from_hparams(
            source=os.path.abspath(model_folder),
            savedir=savedir,
            run_opts={"device": "cpu"},
        )
        mods = encoder.mods
        sample_rate = int(getattr(encoder.hparams, "sample_rate", 16000))
        label = f"{type(mods.embedding_model).__name__} of {model_folder}"
        return export_encoder_onnx(
            mods.compute_features,
            mods.mean_var_norm,
            mods.embedding_model,
            path,
            sample_rate=sample_rate,
            label=label,
            opset=opset,
        )


def main(argv=None):
    """Command line: exports the given folders."""
    parser = argparse.ArgumentParser(
        description="Writes embedding_model.onnx into SpeechBrain export "
        "folders (Fbank + normalisation + embedding network)."
    )
    parser.add_argument("folders", nargs="+", help="export folders")
    parser.add_argument("--opset", type=int, default=OPSET)
    args = parser.parse_args(argv)
    for folder in args.folders:
        print(f"Exported ONNX model: {export_onnx(folder, opset=args.opset)}")


if __name__ == "__main__":
    main()
