"""Network building blocks (SpeechBrain lobes) for the CSC objective.

* :class:`SeparativeEncoder` - ECAPA-TDNN whose frame-level trunk also
  feeds a time-frequency mask head; its plain ``forward`` is ECAPA's.
* :class:`CrossViewAttention` - multi-head attention from each view's
  embedding to the other views of the same target: the global speaker
  vector.
* :func:`unstack_views` / :func:`stack_views` - SpeechBrain's stacked
  views ``[V * B, ...]`` to ``[B, V, ...]`` and back.
"""

from speechbrain_ext.lobes.cross_attention import (
    CrossViewAttention,
    stack_views,
    unstack_views,
)
from speechbrain_ext.lobes.separative_encoder import SeparativeEncoder

__all__ = [
    "CrossViewAttention",
    "SeparativeEncoder",
    "stack_views",
    "unstack_views",
]
