"""Cross-view attention: the global speaker vector of CSC.

In contrastive separative coding (Wang et al., ICASSP 2021) each target
utterance is seen through V interfered views. For view v, the query is its
own bottom-up embedding and the keys and values are the speaker
representations of the *other* views of the same target, utterance-level
(one vector per view) or frame-level (every valid frame of every view).
Multi-head scaled dot-product attention returns a "global speaker vector"
g_v that can down-weight the most corrupted views or frames.

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
    """Multi-head attention from each view to the other views of its target.

    Built on ``torch.nn.MultiheadAttention``: queries of size
    ``query_size`` and keys/values of size ``memory_size`` are projected to
    ``query_size``, split into ``num_heads`` heads, and the output is
    projected back to ``query_size``, so g_v lives in a space of the size
    of the query embedding.

    Masking. With ``exclude_self=True`` the query of view v gets a
    ``-inf`` score on every key of view v (its utterance vector, or all of
    its frames), so g_v is a mixture of the other views only; with V = 2
    each view attends to the other view alone. Frame-level memories are
    further masked by their relative lengths (padding frames get no
    weight). Every view keeps at least one valid frame, so no query is
    left without a key.

    Arguments
    ---------
    query_size : int
        Size D of the query embeddings (and of the output).
    memory_size : int, optional
        Size C of the key/value representations; ``query_size`` if None.
    num_heads : int
        Number of attention heads; must divide ``query_size``.
    exclude_self : bool
        Whether view v's own key/value entries are hidden from its query.
    dropout : float
        Dropout on the attention weights.

    Example
    -------
    >>> attention = CrossViewAttention(query_size=8, memory_size=6,
    ...                                num_heads=2)
    >>> queries = torch.randn(4, 3, 8)           # [B, V, D]
    >>> frames = torch.randn(4, 3, 20, 6)        # [B, V, T, C]
    >>> lengths = torch.ones(4, 3)
    >>> attention(queries, frames, lengths).shape
    torch.Size([4, 3, 8])
    >>> g, weights = attention(queries, queries.new_zeros(4, 3, 6),
    ...                        return_attention=True)
    >>> weights[0].detach()                      # equal weights, no self
    tensor([[0.0000, 0.5000, 0.5000],
            [0.5000, 0.0000, 0.5000],
            [0.5000, 0.5000, 0.0000]])
    """

    def __init__(
        self,
        query_size,
        memory_size=None,
        num_heads=4,
        exclude_self=True,
        dropout=0.0,
    ):
        super().__init__()
        if memory_size is None:
            memory_size = query_size
        if query_size % num_heads:
            raise ValueError(
                f"num_heads ({num_heads}) must divide query_size ({query_size})"
            )
        self.exclude_self = exclude_self
        self.attention = torch.nn.MultiheadAttention(
            embed_dim=query_size,
            num_heads=num_heads,
            dropout=dropout,
            kdim=memory_size,
            vdim=memory_size,
            batch_first=True,
        )

    def forward(self, queries, memory, lengths=None, return_attention=False):
        """Computes the global speaker vector of every view.

        Arguments
        ---------
        queries : torch.Tensor
            Bottom-up embeddings ``[B, V, D]`` (or ``[B, V, 1, D]``, the
            unstacked SpeechBrain embedding layout).
        memory : torch.Tensor
            Keys and values: utterance-level ``[B, V, C]`` or frame-level
            ``[B, V, T, C]``.
        lengths : torch.Tensor, optional
            Relative lengths ``[B, V]`` of frame-level memories (1.0 is
            ``T`` frames); ignored for utterance-level ones.
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
        if queries.dim() == 4 and queries.shape[2] == 1:
            queries = queries.squeeze(2)
        if queries.dim() != 3:
            raise ValueError(
                "queries must be [B, V, D] or [B, V, 1, D], got shape "
                f"{tuple(queries.shape)}"
            )
        if memory.dim() not in (3, 4) or memory.shape[:2] != queries.shape[:2]:
            raise ValueError(
                "memory must be [B, V, C] or [B, V, T, C] with the queries' "
                f"B and V {tuple(queries.shape[:2])}, got shape "
                f"{tuple(memory.shape)}"
            )
        batch, n_views = queries.shape[:2]
        if self.exclude_self and n_views < 2:
            raise ValueError(
                f"exclude_self needs at least 2 views per target, got {n_views}"
            )
        frame_level = memory.dim() == 4
        n_frames = memory.shape[2] if frame_level else 1
        keys = memory.reshape(batch, n_views * n_frames, memory.shape[-1])

        # Key j belongs to view j // n_frames.
        key_view = torch.arange(
            n_views, device=memory.device
        ).repeat_interleave(n_frames)
        query_view = torch.arange(n_views, device=memory.device)
        attn_mask = None
        if self.exclude_self:
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
