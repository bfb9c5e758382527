"""Network building blocks (SpeechBrain lobes) for the CSC objective.

* :class:`SeparativeEncoder` - ECAPA-TDNN whose frame-level trunk also
  feeds a time-frequency mask head; its plain ``forward`` is ECAPA's.
* :class:`CrossViewAttention` - multi-head attention over the other views
  of the same target (never the view's own embedding): the global speaker
  vector.
* :class:`PrototypeHead` - MLP and cosine logits over K prototypes (the
  self-distillation head of CSC).
* :class:`EMATeacher` - frozen copies of student modules that follow them
  by exponential moving average.
* :func:`unstack_views` / :func:`stack_views` - SpeechBrain's stacked
  views ``[V * B, ...]`` to ``[B, V, ...]`` and back.
"""

from speechbrain_ext.lobes.cross_attention import (
    CrossViewAttention,
    stack_views,
    unstack_views,
)
from speechbrain_ext.lobes.ema_teacher import EMATeacher
from speechbrain_ext.lobes.prototype_head import PrototypeHead
from speechbrain_ext.lobes.separative_encoder import SeparativeEncoder

__all__ = [
    "CrossViewAttention",
    "EMATeacher",
    "PrototypeHead",
    "SeparativeEncoder",
    "stack_views",
    "unstack_views",
]
