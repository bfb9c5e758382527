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
* turns those outputs into the loss (``loss``);
* may update state after each optimizer step (``on_optimizer_step``), e.g.
  the moving-average teacher of CSC.

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
    "SupervisedSeparativeTask",
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
    >>> modules = torch.nn.ModuleDict(
    ...     {
    ...         "compute_features": Fbank(n_mels=20),
    ...         "mean_var_norm": InputNormalization(
    ...             norm_type="sentence", std_norm=False
    ...         ),
    ...         "embedding_model": ECAPA_TDNN(
    ...             20,
    ...             channels=[8, 8, 8, 8, 24],
    ...             lin_neurons=4,
    ...             attention_channels=4,
    ...             se_channels=4,
    ...         ),
    ...     }
    ... )
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

    def on_optimizer_step(self, modules):
        """Called after every optimizer step (e.g. to move a teacher)."""

    def unused_parameters(self, modules):
        """The parameters of ``modules`` that this task never trains.

        The Brain freezes them before wrapping the modules in
        ``DistributedDataParallel``, which otherwise expects a gradient for
        every trainable parameter of a module whose ``forward`` ran and
        fails at the next step (SpeechBrain builds DDP without
        ``find_unused_parameters``, whose search of the graph every step
        would cost time). Every task here uses all of its modules.

        Arguments
        ---------
        modules : torch.nn.ModuleDict
            The Brain's modules, not yet wrapped.

        Returns
        -------
        dict
            ``{name: [parameters]}``, empty by default.
        """
        return {}


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
    mixup : callable, optional
        :class:`~speechbrain_ext.augment.WaveformMixup`: mixes view rows
        with each other after ``views``; the objective (AAM-softmax) is
        then called with each row's partner label and weight
        (margin-mixup).

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

    def __init__(self, views=None, mixup=None):
        self.views = views
        self.mixup = mixup

    def forward(self, modules, wavs, lens):
        """Returns ``{"embeddings": [views * batch, 1, dim]}`` (and, with
        mixup, each row's ``partner`` index and weight ``lam``)."""
        if self.views is not None:
            wavs, lens = _views_of(self.views, wavs, lens)
        outputs = {}
        if self.mixup is not None:
            wavs, lens, outputs["partner"], outputs["lam"] = self.mixup(
                wavs, lens
            )
        outputs["embeddings"] = self.embed(modules, wavs, lens)
        return outputs

    def loss(self, modules, outputs, labels=None):
        """Applies the objective with each view's speaker label."""
        if labels is None:
            raise ValueError("a supervised task needs the speaker labels")
        if self.views is not None:
            labels = self.views.replicate_labels(labels)
        if "partner" not in outputs:
            return modules.objective(outputs["embeddings"], labels)
        labels = labels.view(-1)
        return modules.objective(
            outputs["embeddings"],
            labels,
            partner_labels=labels[outputs["partner"]],
            weights=outputs["lam"],
        )


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
       makes V interfered views of each crop (by default of different
       segments of it) and returns each view's clean audio;
    2. the views' features are normalised per sentence as at inference,
       and the clean features are shifted by the *same* per-view mean, so
       the separation target lives where the mask head's estimate does
       (see :class:`~speechbrain_ext.lobes.SeparativeEncoder`);
    3. the student encoder returns, for every view, the embedding z_v, the
       trunk frames and the estimate of the clean features;
    4. the aggregator (:class:`~speechbrain_ext.lobes.CrossViewAttention`)
       attends to the *other* views of the crop (their frames, or their
       embeddings) and returns the global speaker vector g_v;
    5. the objective maximises the information shared by z_v and g_v and
       adds the separation loss. Which information term runs is the
       hparams' choice, by the modules they give:

       - without a ``teacher`` module,
         :class:`~speechbrain_ext.losses.CSCInfoMaxLoss` is called as
         ``objective(z, g, estimate, target, lengths)`` (VICReg between z
         and g, the default);
       - with a ``teacher`` (:class:`~speechbrain_ext.lobes.EMATeacher`, a
         moving average of encoder, aggregator and ``csc_head``), the
         teacher computes the same z_v and g_v without gradient and
         :class:`~speechbrain_ext.losses.CSCLoss` makes the student's z_v
         predict the teacher's g_v and the student's g_v the teacher's
         z_v over the prototypes of ``csc_head`` (self-distillation).

    Neither side of a pair ever sees the other side's view, so the
    objective can only be met with what the views share: the speaker. No
    label is read and no negative is drawn.

    For the training log, :meth:`information_pairs` computes (z, g) of
    interfered views of validation crops, from which the Brain estimates
    I(z; g) and the same with shuffled partners
    (:func:`~speechbrain_ext.losses.information.gaussian_information`).

    Modules used: ``compute_features``, ``mean_var_norm``,
    ``embedding_model`` (a ``SeparativeEncoder``), ``aggregator``,
    ``csc_objective`` (the loss; ``objective`` when absent) and, for
    self-distillation, ``csc_head`` and ``teacher``.

    Arguments
    ---------
    views : InterferedViews
        Returns ``(views, view_lens, clean)`` with at least 2 views per
        target.
    memory : str
        What the aggregator attends to: ``"frames"`` (the other views'
        trunk frames, default) or ``"embeddings"`` (their z).
    monitor_samples : int, optional
        Crop length (samples) of the validation information monitor,
        normally the training crop; None: the shortest utterance of each
        validation batch.

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain_ext.augment import InterferedViews, InterferingTalker
    >>> from speechbrain_ext.lobes import (
    ...     CrossViewAttention,
    ...     EMATeacher,
    ...     PrototypeHead,
    ...     SeparativeEncoder,
    ... )
    >>> from speechbrain_ext.losses import CSCLoss
    >>> students = {
    ...     "embedding_model": SeparativeEncoder(
    ...         20,
    ...         channels=[8, 8, 8, 8, 24],
    ...         lin_neurons=4,
    ...         attention_channels=4,
    ...         se_channels=4,
    ...         mask_channels=8,
    ...     ),
    ...     "aggregator": CrossViewAttention(4, memory_size=24, num_heads=2),
    ...     "csc_head": PrototypeHead(
    ...         4, n_prototypes=16, hidden_size=8, bottleneck_size=4
    ...     ),
    ... }
    >>> modules = torch.nn.ModuleDict(
    ...     {
    ...         "compute_features": Fbank(n_mels=20),
    ...         "mean_var_norm": InputNormalization(
    ...             norm_type="sentence", std_norm=False
    ...         ),
    ...         **students,
    ...         "teacher": EMATeacher(students, momentum=0.9),
    ...         "objective": CSCLoss(n_prototypes=16, beta=0.1),
    ...     }
    ... )
    >>> views = InterferedViews([InterferingTalker()], n_views=1, segments=2)
    >>> task = SeparativeCodingTask(views)
    >>> outputs = task.forward(modules, torch.randn(6, 8000), torch.ones(6))
    >>> outputs["student_logits"].shape, outputs["estimate"].shape
    (torch.Size([24, 16]), torch.Size([12, 26, 20]))
    >>> task.loss(modules, outputs).shape
    torch.Size([])
    >>> z, g = task.information_pairs(
    ...     modules, torch.randn(6, 8000), torch.ones(6)
    ... )
    >>> z.shape, g.shape  # targets, views, dim
    (torch.Size([6, 2, 4]), torch.Size([6, 2, 4]))
    """

    MEMORIES = ("frames", "embeddings")
    TEACHER_STUDENTS = ("embedding_model", "aggregator", "csc_head")
    # Shortest validation crop (samples) the information monitor embeds.
    MIN_MONITOR_SAMPLES = 4000

    def __init__(self, views, memory="frames", monitor_samples=None):
        if memory not in self.MEMORIES:
            raise ValueError(
                f"memory must be one of {self.MEMORIES}, got {memory!r}"
            )
        n_views = getattr(views, "views_per_target", 0)
        if n_views < 2:
            raise ValueError(
                "CSC aggregates the *other* views of a crop: the views "
                f"must give at least 2 per target (segments * n_views), "
                f"got {n_views}"
            )
        self.views = views
        self.memory = memory
        self.monitor_samples = monitor_samples and int(monitor_samples)

    @property
    def n_views(self):
        """Views per target."""
        return self.views.views_per_target

    def interfered_features(self, modules, wavs, lens, separation_target=True):
        """Views, their normalised features and the separation target.

        Without ``separation_target`` the clean audio is not featurised
        and the target returned is None.
        """
        if getattr(modules.mean_var_norm, "std_norm", False):
            raise ValueError(
                "CSC needs mean_var_norm with std_norm: False: the clean "
                "target can take the mixture's mean shift, not its scaling"
            )
        mixed, view_lens, clean = _float32_views(self.views, wavs, lens)
        feats = modules.compute_features(mixed)
        normalised = modules.mean_var_norm(feats, view_lens)
        if not separation_target:
            return normalised, view_lens, None
        # A per-utterance shift commutes with the mask's additive dB gain,
        # so the clean target takes the mixture's shift, not its own.
        shift = feats - normalised
        target = modules.compute_features(clean) - shift
        return normalised, view_lens, target.detach()

    def global_vectors(self, aggregator, frames, z, view_lens):
        """g of every view row from the other views of its target."""
        n_views = self.n_views
        embeddings = unstack_views(z, n_views)
        if self.memory == "frames":
            memory = unstack_views(frames, n_views)
        else:
            memory = embeddings
        g = aggregator(
            memory, unstack_views(view_lens, n_views), embeddings=embeddings
        )
        return stack_views(g)

    def student_pairs(self, modules, normalised, view_lens):
        """The encoder's heads and every view's z and g, ``[rows, dim]``."""
        heads = modules.embedding_model(normalised, view_lens, separate=True)
        z = heads["embedding"].squeeze(1)
        g = self.global_vectors(
            modules.aggregator, heads["frames"], z, view_lens
        )
        return heads, z, g

    def forward(self, modules, wavs, lens):
        """z, g, separation estimate and target (and teacher logits)."""
        normalised, view_lens, target = self.interfered_features(
            modules, wavs, lens
        )
        heads, z, g = self.student_pairs(modules, normalised, view_lens)
        outputs = {
            "z": z,
            "g": g,
            "estimate": heads["estimate"],
            "target": target,
            "lengths": view_lens,
        }
        if "teacher" in modules:
            outputs.update(
                self.distillation_logits(modules, normalised, view_lens, z, g)
            )
        return outputs

    def distillation_logits(self, modules, normalised, view_lens, z, g):
        """Student logits of [z; g] and the teacher's of [g; z]."""
        with torch.no_grad():
            teacher = modules.teacher
            encoder = teacher["embedding_model"]
            frames = encoder.frame_representations(normalised, view_lens)
            teacher_z = encoder.pool(frames, view_lens).squeeze(1)
            teacher_g = self.global_vectors(
                teacher["aggregator"],
                frames.transpose(1, 2),
                teacher_z,
                view_lens,
            )
            # Student z_v predicts teacher g_v, student g_v teacher z_v.
            teacher_logits = teacher["csc_head"](
                torch.cat([teacher_g, teacher_z])
            )
        return {
            "student_logits": modules.csc_head(torch.cat([z, g])),
            "teacher_logits": teacher_logits,
        }

    @torch.no_grad()
    def information_pairs(self, modules, wavs, lens):
        """(z, g), each ``[targets, views, dim]``, of validation crops.

        Every utterance of the batch is cut to the same crop (the training
        crop ``monitor_samples``, or the batch's shortest utterance if
        shorter) and turned into interfered views as in training; the
        student embeds them and aggregates g from the other views. Returns
        None for a batch too small or too short to say anything.
        """
        n_samples = (lens * wavs.shape[1]).round().long()
        crop = int(n_samples.min())
        if self.monitor_samples:
            crop = min(crop, self.monitor_samples)
        if len(wavs) < 2 or crop < self.MIN_MONITOR_SAMPLES:
            return None
        wavs = wavs[:, :crop]
        lens = torch.ones(len(wavs), device=wavs.device)
        normalised, view_lens, _ = self.interfered_features(
            modules, wavs, lens, separation_target=False
        )
        _, z, g = self.student_pairs(modules, normalised, view_lens)
        return (
            unstack_views(z, self.n_views).float(),
            unstack_views(g, self.n_views).float(),
        )

    def csc_loss(self, modules, outputs):
        """Information term + beta * separation loss."""
        objective = getattr(modules, "csc_objective", None)
        if objective is None:
            objective = modules.objective
        separation = (outputs["estimate"], outputs["target"])
        if "teacher_logits" in outputs:
            return objective(
                outputs["student_logits"],
                outputs["teacher_logits"],
                *separation,
                outputs["lengths"],
                embeddings=outputs["z"],
            )
        return objective(
            outputs["z"],
            outputs["g"],
            *separation,
            outputs["lengths"],
            n_views=self.n_views,
        )

    def loss(self, modules, outputs, labels=None):
        """The CSC loss (see :class:`~speechbrain_ext.losses.CSCLoss`)."""
        return self.csc_loss(modules, outputs)

    def on_optimizer_step(self, modules):
        """Moves the teacher (if any) toward the student."""
        if "teacher" in modules:
            modules.teacher.update(modules)


class SupervisedSeparativeTask(SeparativeCodingTask):
    """A speaker objective plus ``csc_weight`` times CSC as an auxiliary.

    What a user with labels runs. The speaker objective (``objective``,
    e.g. AAM-softmax) sees either

    - ``speaker_views`` (SpeechBrain's ``Augmenter``, e.g. the clean crop
      and an augmented copy of it, as ``aam_softmax.yaml`` trains): the
      standard recipe, untouched, with CSC added on the interfered views
      of the same crops. This is how CSC is meant to be used: the recipe
      keeps what it does and the encoder is also trained to agree across
      interfering conditions and to separate the target; or
    - when ``speaker_views`` is None, the interfered CSC views themselves,
      each with its utterance's label (an ablation: the speaker objective
      then never sees a clean view).

    With ``csc_weight`` 0 the CSC part is not computed at all, and its
    parameters (the encoder's mask head, the aggregator, any CSC head,
    teacher or loss parameters) are frozen (:meth:`unused_parameters`), so
    that DDP does not wait for their gradients.

    Arguments
    ---------
    views : InterferedViews
        As for :class:`SeparativeCodingTask`.
    memory : str
        As for :class:`SeparativeCodingTask`.
    csc_weight : float
        Weight alpha of the CSC loss.
    speaker_views : callable, optional
        Augmenter ``(wavs, lens) -> (views, view_lens)`` with a
        ``replicate_labels`` method, for the speaker objective.
    monitor_samples : int, optional
        As for :class:`SeparativeCodingTask`.

    Attributes
    ----------
    last_term_tensors : dict
        ``"speaker"``: the speaker objective's value of the last call.

    Example
    -------
    >>> from speechbrain_ext.augment import InterferedViews
    >>> from speechbrain_ext.losses import AAMSoftmaxLoss
    >>> views = InterferedViews([], n_views=1, segments=2)
    >>> task = SupervisedSeparativeTask(views, csc_weight=0.0)
    >>> modules = torch.nn.ModuleDict(
    ...     {"objective": AAMSoftmaxLoss(input_size=4, n_classes=3)}
    ... )
    >>> outputs = {"z": torch.randn(6, 4)}  # 2 views of 3 utterances
    >>> task.loss(modules, outputs, torch.tensor([0, 1, 2])).shape
    torch.Size([])
    """

    needs_speaker_labels = True

    def __init__(
        self,
        views,
        memory="frames",
        csc_weight=1.0,
        speaker_views=None,
        monitor_samples=None,
    ):
        super().__init__(views, memory, monitor_samples)
        if csc_weight < 0:
            raise ValueError(f"csc_weight must be >= 0, got {csc_weight}")
        self.csc_weight = float(csc_weight)
        self.speaker_views = speaker_views
        self.last_term_tensors = {}

    def forward(self, modules, wavs, lens):
        """CSC's outputs (unless off) and the speaker views' embeddings."""
        outputs = {}
        if self.csc_weight > 0:
            outputs = super().forward(modules, wavs, lens)
        if self.speaker_views is not None:
            views, view_lens = _views_of(self.speaker_views, wavs, lens)
            outputs["speaker_embeddings"] = self.embed(
                modules, views, view_lens
            )
        elif "z" not in outputs:
            normalised, view_lens, _ = self.interfered_features(
                modules, wavs, lens, separation_target=False
            )
            z = modules.embedding_model(normalised, view_lens).squeeze(1)
            outputs["z"] = z
        return outputs

    def loss(self, modules, outputs, labels=None):
        """objective(speaker views, labels) + csc_weight * CSC loss."""
        if labels is None:
            raise ValueError("a supervised task needs the speaker labels")
        if self.speaker_views is not None:
            embeddings = outputs["speaker_embeddings"]
            labels = self.speaker_views.replicate_labels(labels)
        else:
            embeddings = outputs["z"].unsqueeze(1)
            labels = self.views.replicate_labels(labels)
        speaker = modules.objective(embeddings, labels)
        self.last_term_tensors = {"speaker": speaker.detach()}
        if self.csc_weight == 0:
            return speaker
        return speaker + self.csc_weight * self.csc_loss(modules, outputs)

    def on_optimizer_step(self, modules):
        """Moves the teacher (if any), unless CSC is off."""
        if self.csc_weight > 0:
            super().on_optimizer_step(modules)

    # Modules that only CSC reads.
    CSC_MODULES = ("aggregator", "csc_objective", "csc_head", "teacher")

    def unused_parameters(self, modules):
        """With ``csc_weight`` 0, every parameter that only CSC trains.

        Example
        -------
        >>> from speechbrain_ext.augment import InterferedViews
        >>> from speechbrain_ext.lobes import SeparativeEncoder
        >>> views = InterferedViews([], n_views=1, segments=2)
        >>> task = SupervisedSeparativeTask(views, csc_weight=0.0)
        >>> modules = torch.nn.ModuleDict(
        ...     {
        ...         "embedding_model": SeparativeEncoder(
        ...             20, channels=[8, 8, 8, 8, 24], mask_channels=8
        ...         ),
        ...         "aggregator": torch.nn.Linear(2, 2),
        ...     }
        ... )
        >>> sorted(task.unused_parameters(modules))
        ['aggregator', 'embedding_model.mask_head']
        """
        if self.csc_weight > 0:
            return {}
        unused = {
            name: list(modules[name].parameters())
            for name in self.CSC_MODULES
            if name in modules
        }
        mask_head = getattr(modules["embedding_model"], "mask_head", None)
        if mask_head is not None:
            unused["embedding_model.mask_head"] = list(mask_head.parameters())
        return {name: params for name, params in unused.items() if params}
