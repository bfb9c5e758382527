"""Training tasks: how a batch of waveforms becomes a training loss.

A recipe's ``train.py`` stays the same for every objective: its hparams
file builds one task, and the Brain hands the task its modules
(``compute_features``, ``mean_var_norm``, ``embedding_model``,
``objective`` and, for CSC, ``aggregator``) and each training batch. A task

* says whether it needs speaker labels (``needs_speaker_labels``): a
  self-supervised task does not, and the recipe then never reads them for
  the training data;
* turns clean waveforms into training outputs (``forward``), e.g. views,
  features and embeddings;
* turns those outputs into the loss (``loss``).

Validation and inference embed every task's model the same way
(:meth:`EmbeddingTask.embed`), so checkpoints of all objectives are
selected, exported and scored alike.

Modules are passed in rather than stored, because the Brain may have
wrapped them in ``DistributedDataParallel`` and only the wrapped modules
synchronise gradients.

Authors
 * speechbrain_ext contributors
"""

import torch

from speechbrain_ext.lobes.cross_attention import stack_views, unstack_views

__all__ = [
    "EmbeddingTask",
    "SupervisedEmbeddingTask",
    "ViewContrastTask",
    "SeparativeCodingTask",
]


def _views_of(view_maker, wavs, lens):
    """Calls an augmenter and returns its views and their lengths.

    SpeechBrain's ``Augmenter`` returns ``(wavs, lens)`` and
    :class:`~speechbrain_ext.augment.InterferedViews` ``(wavs, lens,
    clean)``; both put the views in view-major order.
    """
    outputs = _float32_views(view_maker, wavs, lens)
    return outputs[0], outputs[1]


def _float32_views(view_maker, wavs, lens):
    """Runs an augmenter in float32, even inside mixed-precision autocast.

    Under autocast SpeechBrain's ``DropFreq`` filters in half precision,
    which adds quantisation noise about 48 dB below the signal to every
    view; augmentation is cheap next to the encoder, so it stays exact.
    """
    with torch.autocast(device_type=wavs.device.type, enabled=False):
        return view_maker(wavs.float(), lens)


class EmbeddingTask:
    """Shared part of every task: waveforms to features to embeddings.

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> from speechbrain.processing.features import InputNormalization
    >>> modules = torch.nn.ModuleDict({
    ...     "compute_features": Fbank(n_mels=20),
    ...     "mean_var_norm": InputNormalization(norm_type="sentence",
    ...                                         std_norm=False),
    ...     "embedding_model": ECAPA_TDNN(20, channels=[8, 8, 8, 8, 24],
    ...                                   lin_neurons=4, attention_channels=4,
    ...                                   se_channels=4),
    ... })
    >>> wavs = torch.randn(3, 4000)
    >>> EmbeddingTask().embed(modules, wavs, torch.ones(3)).shape
    torch.Size([3, 1, 4])
    """

    needs_speaker_labels = False

    def features(self, modules, wavs, lens):
        """Returns sentence-normalised features ``[batch, frames, n_mels]``."""
        feats = modules.compute_features(wavs)
        return modules.mean_var_norm(feats, lens)

    def embed(self, modules, wavs, lens):
        """Returns the embeddings ``[batch, 1, dim]`` used for scoring."""
        return modules.embedding_model(self.features(modules, wavs, lens), lens)

    def forward(self, modules, wavs, lens):
        """Training outputs of a clean batch (overridden by each task)."""
        raise NotImplementedError

    def loss(self, modules, outputs, labels=None):
        """The training loss of ``forward``'s outputs (overridden)."""
        raise NotImplementedError


class SupervisedEmbeddingTask(EmbeddingTask):
    """Speaker-supervised objectives on (optionally) augmented views.

    The views come from SpeechBrain's ``Augmenter`` (``[clean; augmented]``
    rows with ``concat_original``), every view keeps its utterance's
    speaker label, and the objective is called as
    ``objective(embeddings, labels)``: AAM-softmax, SupCon, AAM-SupCon or
    their hybrid alike.

    Arguments
    ---------
    views : callable, optional
        Augmenter ``(wavs, lens) -> (views, view_lens)`` with a
        ``replicate_labels`` method (SpeechBrain's ``Augmenter``). None
        trains on the clean batch alone.

    Example
    -------
    >>> from speechbrain_ext.losses import AAMSupConLoss
    >>> task = SupervisedEmbeddingTask()
    >>> modules = torch.nn.ModuleDict({"objective": AAMSupConLoss()})
    >>> outputs = {"embeddings": torch.randn(4, 1, 8)}
    >>> task.loss(modules, outputs, torch.tensor([0, 0, 1, 1])).shape
    torch.Size([])
    """

    needs_speaker_labels = True

    def __init__(self, views=None):
        self.views = views

    def forward(self, modules, wavs, lens):
        """Returns ``{"embeddings": [views * batch, 1, dim]}``."""
        if self.views is not None:
            wavs, lens = _views_of(self.views, wavs, lens)
        return {"embeddings": self.embed(modules, wavs, lens)}

    def loss(self, modules, outputs, labels=None):
        """Applies the objective with each view's speaker label."""
        if labels is None:
            raise ValueError("a supervised task needs the speaker labels")
        if self.views is not None:
            labels = self.views.replicate_labels(labels)
        return modules.objective(outputs["embeddings"], labels)


class ViewContrastTask(EmbeddingTask):
    """Self-supervised instance contrast: the views of a crop are positives.

    With :class:`~speechbrain_ext.losses.NTXentLoss` this is SimCLR on
    speech: every utterance of the batch is turned into ``n_views`` views
    (e.g. by :class:`~speechbrain_ext.augment.InterferedViews`), the views
    of one utterance share a group id, and every other row is a negative.
    No speaker label is read; two utterances of one speaker in a batch are
    (wrongly) negatives, which is the price of negative sampling that CSC
    avoids.

    Arguments
    ---------
    views : callable
        ``(wavs, lens) -> (views, view_lens, ...)`` in view-major order,
        with a ``group_ids(batch_size, device)`` method, e.g.
        :class:`~speechbrain_ext.augment.InterferedViews`.

    Example
    -------
    >>> from speechbrain_ext.augment import InterferedViews, InterferingTalker
    >>> task = ViewContrastTask(InterferedViews([InterferingTalker()]))
    >>> task.group_ids(3)
    tensor([0, 1, 2, 0, 1, 2])
    """

    def __init__(self, views):
        self.views = views

    def group_ids(self, batch_size, device=None):
        """Group id of every view row: the index of its source utterance."""
        return self.views.group_ids(batch_size, device)

    def forward(self, modules, wavs, lens):
        """Returns the views' embeddings and their group ids."""
        views, view_lens = _views_of(self.views, wavs, lens)
        return {
            "embeddings": self.embed(modules, views, view_lens),
            "groups": self.group_ids(len(wavs), wavs.device),
        }

    def loss(self, modules, outputs, labels=None):
        """Applies the objective with group ids as labels (no speakers)."""
        return modules.objective(outputs["embeddings"], outputs["groups"])


class SeparativeCodingTask(EmbeddingTask):
    """Contrastive separative coding (CSC, Wang et al., ICASSP 2021).

    For a batch of B clean crops:

    1. ``views`` (an :class:`~speechbrain_ext.augment.InterferedViews`)
       makes V interfered views of each crop and returns the clean crops;
    2. the views' features are normalised per sentence as at inference,
       and the clean crops' features are shifted by the *same* per-view
       mean, so the separation target lives where the mask head's estimate
       does (see :class:`~speechbrain_ext.lobes.SeparativeEncoder`);
    3. the separative encoder returns, for every view, the embedding z_v,
       the trunk frames and the estimate of the clean features;
    4. the aggregator (:class:`~speechbrain_ext.lobes.CrossViewAttention`)
       lets z_v attend to the other views of its crop (their frames, or
       their embeddings) and returns the global speaker vector g_v;
    5. the objective (:class:`~speechbrain_ext.losses.CSCLoss`) maximises
       I(z; g) and adds the separation loss of the estimates.

    No label is read and no negative is drawn.

    Arguments
    ---------
    views : InterferedViews
        Returns ``(views, view_lens, clean)`` with ``n_views`` >= 2.
    memory : str
        What the aggregator attends to: ``"frames"`` (the other views'
        trunk frames, default) or ``"embeddings"`` (their z).
    segments : int
        1 (default): the views are ``views.n_views`` interfered copies of
        the whole crop, as in the paper. S >= 2: the crop is cut into S
        consecutive segments, each interfered once (``views.n_views``
        must be 1), so the views share the speaker but not the words.

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain_ext.augment import InterferedViews, InterferingTalker
    >>> from speechbrain_ext.lobes import CrossViewAttention, SeparativeEncoder
    >>> from speechbrain_ext.losses import CSCLoss
    >>> modules = torch.nn.ModuleDict({
    ...     "compute_features": Fbank(n_mels=20),
    ...     "mean_var_norm": InputNormalization(norm_type="sentence",
    ...                                         std_norm=False),
    ...     "embedding_model": SeparativeEncoder(
    ...         20, channels=[8, 8, 8, 8, 24], lin_neurons=4,
    ...         attention_channels=4, se_channels=4, mask_channels=8),
    ...     "aggregator": CrossViewAttention(4, memory_size=24, num_heads=2),
    ...     "objective": CSCLoss(beta=0.1),
    ... })
    >>> task = SeparativeCodingTask(InterferedViews([InterferingTalker()]))
    >>> outputs = task.forward(modules, torch.randn(6, 4000), torch.ones(6))
    >>> outputs["z"].shape, outputs["g"].shape, outputs["estimate"].shape
    (torch.Size([12, 4]), torch.Size([12, 4]), torch.Size([12, 26, 20]))
    >>> task.loss(modules, outputs).shape
    torch.Size([])
    """

    MEMORIES = ("frames", "embeddings")

    def __init__(self, views, memory="frames", segments=1):
        if memory not in self.MEMORIES:
            raise ValueError(
                f"memory must be one of {self.MEMORIES}, got {memory!r}"
            )
        n_copies = getattr(views, "n_views", 0)
        if segments > 1 and n_copies != 1:
            raise ValueError(
                f"with segments={segments} each segment is one view: the "
                f"views' n_views must be 1, got {n_copies}"
            )
        if max(segments, n_copies) < 2:
            raise ValueError(
                "CSC aggregates the *other* views of a crop: n_views (or "
                f"segments) must be at least 2, got {n_copies}"
            )
        self.views = views
        self.memory = memory
        self.segments = segments

    @property
    def n_views(self):
        """Views per target: the interfered copies, or the segments."""
        return max(self.segments, self.views.n_views)

    def _split(self, wavs, lens):
        """Cuts each crop into ``segments`` consecutive parts, view-major.

        The views of a target then share its speaker (and channel) but not
        its words, so the mutual information cannot be earned by encoding
        what is said.
        """
        batch, n_samples = wavs.shape
        length = n_samples // self.segments
        parts = wavs[:, : self.segments * length]
        parts = parts.reshape(batch, self.segments, length).transpose(0, 1)
        # Valid share of each segment (training crops are full: all 1).
        offsets = torch.arange(self.segments, device=wavs.device) * length
        valid = lens[None, :] * n_samples - offsets[:, None]
        part_lens = (valid / length).clamp(min=1.0 / length, max=1.0)
        return parts.reshape(-1, length), part_lens.reshape(-1)

    def forward(self, modules, wavs, lens):
        """Returns z, g, the separation estimate and target, and lengths."""
        if getattr(modules.mean_var_norm, "std_norm", False):
            raise ValueError(
                "CSC needs mean_var_norm with std_norm: False: the clean "
                "target can take the mixture's mean shift, not its scaling"
            )
        n_views = self.n_views
        if self.segments > 1:
            wavs, lens = self._split(wavs, lens)
        mixed, view_lens, clean = _float32_views(self.views, wavs, lens)
        # One clean target per view row (repeated for interfered copies).
        clean = clean.repeat(len(mixed) // len(clean), 1)
        feats = modules.compute_features(mixed)
        normalised = modules.mean_var_norm(feats, view_lens)
        # A per-utterance shift commutes with the mask's additive dB gain,
        # so the clean target takes the mixture's shift, not its own.
        shift = feats - normalised
        target = modules.compute_features(clean) - shift
        heads = modules.embedding_model(normalised, view_lens, separate=True)
        z = heads["embedding"].squeeze(1)
        queries = unstack_views(z, n_views)
        if self.memory == "frames":
            memory = unstack_views(heads["frames"], n_views)
        else:
            memory = queries
        g = modules.aggregator(
            queries, memory, unstack_views(view_lens, n_views)
        )
        return {
            "z": z,
            "g": stack_views(g),
            "estimate": heads["estimate"],
            "target": target.detach(),
            "lengths": view_lens,
        }

    def loss(self, modules, outputs, labels=None):
        """-I(z; g) + beta * separation loss (see ``CSCLoss``)."""
        return modules.objective(
            outputs["z"],
            outputs["g"],
            outputs["estimate"],
            outputs["target"],
            outputs["lengths"],
        )
