"""ECAPA-TDNN with a separation head: the separative encoder of CSC.

Contrastive separative coding (Wang et al., ICASSP 2021, arXiv 2103.00816)
trains one encoder for two tasks: a speaker embedding and a time-frequency
mask that recovers the target talker's spectrum from an interfered mixture.
The mask head reads the frame-level output of the ECAPA-TDNN trunk (after
multi-layer feature aggregation), so the separation task shapes the same
representation that attentive statistics pooling turns into the embedding.

The encoder is a stock SpeechBrain ``ECAPA_TDNN`` plus a ``mask_head``:
``forward`` is ECAPA's own forward, and ``embedding_state_dict()`` (the state
dict without the mask head) loads strictly into an ``ECAPA_TDNN`` of the same
configuration, which is what the inference template exports.

Authors
 * speechbrain_ext contributors
"""

import math

import torch

from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Conv1d, TDNNBlock

__all__ = ["SeparativeEncoder"]

MASK_HEAD_PREFIX = "mask_head."


class SeparativeEncoder(ECAPA_TDNN):
    """ECAPA-TDNN speaker encoder with a mask head on its frame-level trunk.

    The mask head is ``TDNNBlock`` (conv, activation, batch norm) followed
    by a 1x1 ``Conv1d`` to ``input_size`` channels and a sigmoid, giving a
    mask ``m`` in (0, 1) for every frame and mel band of the input.

    Domain of the estimate. SpeechBrain's ``Fbank`` returns log-mel
    features in dB, ``10 * log10(mel power)`` (``feature_db_multiplier``
    is 10 for its default power spectrogram, 20 for a magnitude one). The
    mask is a gain on the linear mel power of the mixture, which in the
    feature domain is an additive term:

        estimate = features + feature_db_multiplier * log10(m)

    with ``log10(m)`` computed from the mask logits by ``logsigmoid`` (no
    ``log(0)``) and floored at ``mask_floor_db`` (Fbank's own ``top_db``
    range is 80 dB). Because the term is additive, any per-utterance mean
    subtraction (``InputNormalization``) commutes with it: the separation
    target is the clean utterance's features normalised with the *same*
    statistics as the mixture's (or both left un-normalised). A mask in
    (0, 1] can only attenuate, which suits additive interference, whose
    mixture power is, on average, at least the target's.

    Arguments
    ---------
    input_size : int
        Number of input features F (mel bands).
    mask_channels : int
        Hidden channels of the mask head.
    mask_kernel_size : int
        Kernel size (frames) of the mask head's hidden layer.
    feature_db_multiplier : float
        dB per decade of the input features: 10 for SpeechBrain's ``Fbank``
        on a power spectrogram (default), 20 for a magnitude one.
    mask_floor_db : float
        Lowest gain (dB, negative) the mask may apply to a feature.
    **ecapa_kwargs
        Every other argument of
        ``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN`` (``channels``,
        ``lin_neurons``, ``attention_channels``...), with its defaults.

    Example
    -------
    >>> encoder = SeparativeEncoder(
    ...     20,
    ...     channels=[16, 16, 16, 16, 48],
    ...     lin_neurons=8,
    ...     attention_channels=8,
    ...     se_channels=8,
    ...     mask_channels=12,
    ... )
    >>> features = torch.randn(3, 50, 20)
    >>> encoder(features).shape
    torch.Size([3, 1, 8])
    >>> outputs = encoder.separate(features, torch.tensor([1.0, 0.8, 0.5]))
    >>> for key, value in outputs.items():
    ...     print(key, tuple(value.shape))
    embedding (3, 1, 8)
    frames (3, 50, 48)
    mask (3, 50, 20)
    estimate (3, 50, 20)
    >>> bool((outputs["estimate"] <= features).all())
    True
    """

    def __init__(
        self,
        input_size,
        mask_channels=256,
        mask_kernel_size=3,
        feature_db_multiplier=10.0,
        mask_floor_db=-80.0,
        **ecapa_kwargs,
    ):
        super().__init__(input_size, **ecapa_kwargs)
        if mask_floor_db >= 0:
            raise ValueError(
                f"mask_floor_db must be negative, got {mask_floor_db}"
            )
        self.feature_db_multiplier = float(feature_db_multiplier)
        self.mask_floor_db = float(mask_floor_db)
        activation = ecapa_kwargs.get("activation", torch.nn.ReLU)
        self.mask_head = torch.nn.Sequential(
            TDNNBlock(
                self.channels[-1],
                mask_channels,
                kernel_size=mask_kernel_size,
                dilation=1,
                activation=activation,
            ),
            Conv1d(
                in_channels=mask_channels,
                out_channels=input_size,
                kernel_size=1,
            ),
        )

    def frame_representations(self, x, lengths=None):
        """Runs the trunk up to and including multi-layer aggregation.

        Arguments
        ---------
        x : torch.Tensor
            Features, ``[batch, time, input_size]``.
        lengths : torch.Tensor, optional
            Relative lengths ``[batch]`` (SpeechBrain's convention).

        Returns
        -------
        torch.Tensor
            Frame-level representations, channels first:
            ``[batch, channels[-1], time]``.
        """
        x = x.transpose(1, 2)
        block_outputs = []
        for layer in self.blocks:
            if isinstance(layer, TDNNBlock):
                x = layer(x)
            else:
                x = layer(x, lengths=lengths)
            block_outputs.append(x)
        return self.mfa(torch.cat(block_outputs[1:], dim=1))

    def pool(self, frames, lengths=None):
        """Turns trunk frames into the speaker embedding (ECAPA's tail).

        Arguments
        ---------
        frames : torch.Tensor
            Output of :meth:`frame_representations`,
            ``[batch, channels[-1], time]``.
        lengths : torch.Tensor, optional
            Relative lengths ``[batch]``.

        Returns
        -------
        torch.Tensor
            Embeddings ``[batch, 1, lin_neurons]``.
        """
        x = self.asp(frames, lengths=lengths)
        x = self.asp_bn(x)
        return self.fc(x).transpose(1, 2)

    def forward(self, x, lengths=None, separate=False):
        """Returns the speaker embedding, exactly as ``ECAPA_TDNN`` does.

        Arguments
        ---------
        x : torch.Tensor
            Features, ``[batch, time, input_size]``.
        lengths : torch.Tensor, optional
            Relative lengths ``[batch]``.
        separate : bool
            Whether to return both heads, as :meth:`separate` does. Training
            passes it here rather than calling :meth:`separate`, because a
            ``DistributedDataParallel`` wrapper only synchronises gradients
            of computations that go through ``forward``.

        Returns
        -------
        torch.Tensor or dict
            Embeddings ``[batch, 1, lin_neurons]``, or the dict of
            :meth:`separate` if ``separate`` is True.
        """
        if separate:
            return self.separate(x, lengths)
        return self.pool(self.frame_representations(x, lengths), lengths)

    def separate(self, x, lengths=None):
        """Computes both heads from a single pass through the trunk.

        Arguments
        ---------
        x : torch.Tensor
            Features of the mixtures, ``[batch, time, input_size]``, in the
            log-mel dB domain described in the class docstring.
        lengths : torch.Tensor, optional
            Relative lengths ``[batch]``.

        Returns
        -------
        dict
            ``"embedding"``: ``[batch, 1, lin_neurons]``, the pooled speaker
            embedding (equal to ``forward(x, lengths)``);
            ``"frames"``: ``[batch, time, channels[-1]]``, trunk frames for
            a frame-level aggregator;
            ``"mask"``: ``[batch, time, input_size]``, the mask in (0, 1);
            ``"estimate"``: ``[batch, time, input_size]``, the features of
            the target estimated from the mixture, to compare with the
            clean target's features over the valid frames.
        """
        frames = self.frame_representations(x, lengths)
        embedding = self.pool(frames, lengths)
        mask_logits = self.mask_head(frames).transpose(1, 2)
        log_mask = torch.nn.functional.logsigmoid(mask_logits)
        gain_db = (self.feature_db_multiplier / math.log(10.0)) * log_mask
        estimate = x + gain_db.clamp(min=self.mask_floor_db)
        return {
            "embedding": embedding,
            "frames": frames.transpose(1, 2),
            "mask": torch.sigmoid(mask_logits),
            "estimate": estimate,
        }

    def embedding_state_dict(self):
        """Returns the state dict without the mask head.

        It loads with ``strict=True`` into a ``ECAPA_TDNN`` built with the
        same arguments, so an export for inference needs no custom class.

        Returns
        -------
        dict
            Parameter and buffer name -> tensor, as ``state_dict()``.

        Example
        -------
        >>> kwargs = dict(
        ...     channels=[8, 8, 8, 8, 24],
        ...     lin_neurons=4,
        ...     attention_channels=4,
        ...     se_channels=4,
        ... )
        >>> encoder = SeparativeEncoder(10, mask_channels=6, **kwargs)
        >>> stock = ECAPA_TDNN(10, **kwargs)
        >>> stock.load_state_dict(encoder.embedding_state_dict())
        <All keys matched successfully>
        """
        return {
            name: tensor
            for name, tensor in self.state_dict().items()
            if not name.startswith(MASK_HEAD_PREFIX)
        }
