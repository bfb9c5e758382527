"""Cross-view attention: the global speaker vector of CSC.

In contrastive separative coding (Wang et al., ICASSP 2021) each target
utterance is seen through V interfered views. For view v, the keys and
values are the speaker representations of the *other* views of the same
target, utterance-level (one vector per view) or frame-level (every valid
frame of every view), and multi-head scaled dot-product attention returns
a "global speaker vector" g_v that can down-weight the most corrupted
views or frames.

The query is not view v's own embedding: the objective asks g_v to carry
what view v carries, and a query made from z_v would let the attention
weights (and so g_v) encode z_v even when the other views hold nothing
about it. The query is the mean embedding of the other views, or one
learned vector; either way g_v is a function of the other views alone.

SpeechBrain stacks the views of a batch along the batch axis, rows
``[view 0 of every target; view 1 of every target; ...]``;
:func:`unstack_views` and :func:`stack_views` convert between that layout
and the ``[batch, views, ...]`` layout the attention works in.

Authors
 * speechbrain_ext contributors
"""

import torch

from speechbrain.dataio.dataio import length_to_mask

__all__ = ["CrossViewAttention", "stack_views", "unstack_views"]


def unstack_views(stacked, n_views):
    """Reshapes SpeechBrain's stacked views ``[V * B, ...]`` to ``[B, V, ...]``.

    Arguments
    ---------
    stacked : torch.Tensor
        Rows ``[view 0 of targets 0..B-1; view 1 of targets 0..B-1; ...]``.
    n_views : int
        Number of views V.

    Returns
    -------
    torch.Tensor
        ``[B, V, ...]``: entry ``[b, v]`` is row ``v * B + b``.

    Example
    -------
    >>> stacked = torch.tensor([10, 11, 12, 20, 21, 22])  # 2 views, B = 3
    >>> unstack_views(stacked, n_views=2)
    tensor([[10, 20],
            [11, 21],
            [12, 22]])
    """
    if n_views < 1 or stacked.shape[0] % n_views:
        raise ValueError(
            f"cannot split {stacked.shape[0]} rows into {n_views} views"
        )
    batch = stacked.shape[0] // n_views
    per_view = stacked.reshape(n_views, batch, *stacked.shape[1:])
    return per_view.transpose(0, 1)


def stack_views(per_target):
    """Inverse of :func:`unstack_views`: ``[B, V, ...]`` to ``[V * B, ...]``.

    Arguments
    ---------
    per_target : torch.Tensor
        ``[B, V, ...]``.

    Returns
    -------
    torch.Tensor
        ``[V * B, ...]`` in SpeechBrain's stacked-views row order.

    Example
    -------
    >>> per_target = torch.tensor([[10, 20], [11, 21], [12, 22]])
    >>> stack_views(per_target)
    tensor([10, 11, 12, 20, 21, 22])
    """
    return per_target.transpose(0, 1).reshape(-1, *per_target.shape[2:])


class CrossViewAttention(torch.nn.Module):
    """Multi-head attention over the other views of each target.

    Built on ``torch.nn.MultiheadAttention``: queries of size
    ``query_size`` and keys/values of size ``memory_size`` are projected to
    ``query_size``, split into ``num_heads`` heads, and the output is
    projected back to ``query_size``, so g_v lives in the space of the
    embeddings.

    Queries (``query``):

    * ``"others"``: the mean of the embeddings of the views other than v,
      so the weights favour the frames that agree with the other views'
      consensus;
    * ``"learned"``: one trained vector shared by every view, so the
      weights favour frames whose content is reliable in general.

    Masking: view v's own keys (its utterance vector, or all of its
    frames) always get a ``-inf`` score, so g_v is a mixture of the other
    views only; frame-level memories are further masked by their relative
    lengths (padding frames get no weight). Every view keeps at least one
    valid frame, so no query is left without a key.

    Arguments
    ---------
    query_size : int
        Size D of the embeddings (and of the output).
    memory_size : int, optional
        Size C of the key/value representations; ``query_size`` if None.
    num_heads : int
        Number of attention heads; must divide ``query_size``.
    query : str
        ``"others"`` or ``"learned"``.
    dropout : float
        Dropout on the attention weights.

    Example
    -------
    >>> attention = CrossViewAttention(query_size=8, memory_size=6, num_heads=2)
    >>> embeddings = torch.randn(4, 3, 8)  # [B, V, D]
    >>> frames = torch.randn(4, 3, 20, 6)  # [B, V, T, C]
    >>> attention(frames, torch.ones(4, 3), embeddings).shape
    torch.Size([4, 3, 8])
    >>> g, weights = attention(
    ...     embeddings.new_zeros(4, 3, 6),
    ...     embeddings=embeddings,
    ...     return_attention=True,
    ... )
    >>> weights[0].detach()  # equal weights, no self
    tensor([[0.0000, 0.5000, 0.5000],
            [0.5000, 0.0000, 0.5000],
            [0.5000, 0.5000, 0.0000]])
    """

    QUERIES = ("others", "learned")

    def __init__(
        self,
        query_size,
        memory_size=None,
        num_heads=4,
        query="others",
        dropout=0.0,
    ):
        super().__init__()
        if memory_size is None:
            memory_size = query_size
        if query_size % num_heads:
            raise ValueError(
                f"num_heads ({num_heads}) must divide query_size ({query_size})"
            )
        if query not in self.QUERIES:
            raise ValueError(
                f"query must be one of {self.QUERIES}, got {query!r}"
            )
        self.query = query
        if query == "learned":
            self.learned_query = torch.nn.Parameter(
                torch.randn(query_size) / query_size**0.5
            )
        self.attention = torch.nn.MultiheadAttention(
            embed_dim=query_size,
            num_heads=num_heads,
            dropout=dropout,
            kdim=memory_size,
            vdim=memory_size,
            batch_first=True,
        )

    def queries(self, embeddings, batch, n_views):
        """The query of every view, built without that view's embedding.

        Arguments
        ---------
        embeddings : torch.Tensor or None
            ``[B, V, D]`` (or ``[B, V, 1, D]``); needed for ``"others"``.
        batch : int
            B.
        n_views : int
            V.

        Returns
        -------
        torch.Tensor
            ``[B, V, D]``.
        """
        if self.query == "learned":
            return self.learned_query.expand(batch, n_views, -1)
        if embeddings is None:
            raise ValueError('query="others" needs the views\' embeddings')
        if embeddings.dim() == 4 and embeddings.shape[2] == 1:
            embeddings = embeddings.squeeze(2)
        if embeddings.shape[:2] != (batch, n_views):
            raise ValueError(
                f"embeddings must be [B, V, D] with (B, V) = "
                f"{(batch, n_views)}, got {tuple(embeddings.shape)}"
            )
        total = embeddings.sum(dim=1, keepdim=True)
        return (total - embeddings) / (n_views - 1)

    def forward(
        self, memory, lengths=None, embeddings=None, return_attention=False
    ):
        """Computes the global speaker vector of every view.

        Arguments
        ---------
        memory : torch.Tensor
            Keys and values: utterance-level ``[B, V, C]`` or frame-level
            ``[B, V, T, C]``.
        lengths : torch.Tensor, optional
            Relative lengths ``[B, V]`` of frame-level memories (1.0 is
            ``T`` frames); ignored for utterance-level ones.
        embeddings : torch.Tensor, optional
            The views' embeddings ``[B, V, D]``, from which the
            ``"others"`` queries are made.
        return_attention : bool
            Whether to also return the attention weights.

        Returns
        -------
        torch.Tensor
            Global speaker vectors ``[B, V, D]``.
        torch.Tensor
            Only if ``return_attention``: weights averaged over heads,
            ``[B, V, V]`` (query view, key view) for utterance-level
            memories, ``[B, V, V, T]`` (query view, key view, frame) for
            frame-level ones. Each query's weights sum to 1.
        """
        if memory.dim() not in (3, 4):
            raise ValueError(
                "memory must be [B, V, C] or [B, V, T, C], got shape "
                f"{tuple(memory.shape)}"
            )
        batch, n_views = memory.shape[:2]
        if n_views < 2:
            raise ValueError(
                "each view attends to the *other* views of its target: "
                f"need at least 2 views, got {n_views}"
            )
        queries = self.queries(embeddings, batch, n_views)
        frame_level = memory.dim() == 4
        n_frames = memory.shape[2] if frame_level else 1
        keys = memory.reshape(batch, n_views * n_frames, memory.shape[-1])

        # Key j belongs to view j // n_frames; no query sees its own view.
        key_view = torch.arange(
            n_views, device=memory.device
        ).repeat_interleave(n_frames)
        query_view = torch.arange(n_views, device=memory.device)
        attn_mask = query_view[:, None] == key_view[None, :]
        padding_mask = None
        if frame_level and lengths is not None:
            if lengths.shape != (batch, n_views):
                raise ValueError(
                    f"lengths must be [B, V] = {(batch, n_views)}, got "
                    f"{tuple(lengths.shape)}"
                )
            valid = length_to_mask(
                (lengths.reshape(-1) * n_frames).clamp(min=1),
                max_len=n_frames,
                device=memory.device,
            ).bool()
            padding_mask = ~valid.reshape(batch, n_views * n_frames)

        global_vectors, weights = self.attention(
            queries,
            keys,
            keys,
            key_padding_mask=padding_mask,
            attn_mask=attn_mask,
            need_weights=return_attention,
        )
        if not return_attention:
            return global_vectors
        if frame_level:
            weights = weights.reshape(batch, n_views, n_views, n_frames)
        return global_vectors, weights
