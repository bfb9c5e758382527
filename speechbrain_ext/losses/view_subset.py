"""An objective applied to the rows of one view of a multi-view batch.

With several augmented views per utterance (SpeechBrain's ``Augmenter``
with ``concat_original``), a supervised batch holds the embeddings in
view-major order: the B clean crops first, then the B rows of each
augmented view. The AAM-SupCon authors' released code adds an AAM-softmax
computed on a single view to a SupCon loss computed on all of them;
:class:`SingleViewLoss` selects that view's rows for any objective, so the
mixture is still built with
:class:`~speechbrain_ext.losses.WeightedLossSum`.

Authors
 * speechbrain_ext contributors
"""

import torch

from speechbrain_ext.losses.shapes import flatten_batch

__all__ = ["SingleViewLoss"]


class SingleViewLoss(torch.nn.Module):
    """Applies ``loss`` to the rows of view ``view`` only.

    The N = V * B rows are taken as V blocks of B rows (view-major, as
    SpeechBrain's ``Augmenter`` lays them out); block ``view`` is passed to
    the wrapped loss with its labels. View 0 is the clean crop when the
    augmenter concatenates the original first.

    Arguments
    ---------
    loss : torch.nn.Module
        Objective called as ``loss(embeddings, labels)``; its parameters
        (e.g. an AAM-softmax classifier) are trained and checkpointed with
        this module, and the recipe's export still finds its classifier.
    n_views : int
        V, the number of views in every batch.
    view : int
        Which view's rows the loss sees, in ``[0, n_views)``.

    Example
    -------
    >>> from speechbrain_ext.losses import AAMSoftmaxLoss
    >>> first = SingleViewLoss(
    ...     AAMSoftmaxLoss(input_size=4, n_classes=3), n_views=2
    ... )
    >>> clean, augmented = torch.randn(3, 4), torch.randn(3, 4)
    >>> labels = torch.tensor([0, 1, 2])
    >>> embeddings = torch.cat([clean, augmented])
    >>> expected = first.loss(clean, labels)
    >>> torch.equal(first(embeddings, labels.repeat(2)), expected)
    True
    """

    def __init__(self, loss, n_views, view=0):
        super().__init__()
        if int(n_views) != n_views or n_views < 1:
            raise ValueError(f"n_views must be an int >= 1, got {n_views!r}")
        if int(view) != view or not 0 <= view < n_views:
            raise ValueError(
                f"view must be an int in [0, {n_views}), got {view!r}"
            )
        self.loss = loss
        self.n_views = int(n_views)
        self.view = int(view)

    def forward(self, embeddings, labels):
        """Applies the wrapped loss to the selected view's rows.

        Arguments
        ---------
        embeddings : torch.Tensor
            Embeddings of all views, ``[N, D]`` or ``[N, 1, D]``, view-major.
        labels : torch.Tensor
            Integer labels, ``[N]`` or ``[N, 1]``.

        Returns
        -------
        torch.Tensor
            The wrapped loss on rows ``[view * B, (view + 1) * B)``,
            B = N / n_views.

        Raises
        ------
        ValueError
            If N is not a multiple of ``n_views``.
        """
        embeddings, labels = flatten_batch(embeddings, labels)
        n_rows = embeddings.shape[0]
        if n_rows % self.n_views:
            raise ValueError(
                f"{n_rows} rows do not split into n_views={self.n_views} "
                "views: does the augmenter make that many views?"
            )
        batch = n_rows // self.n_views
        rows = slice(self.view * batch, (self.view + 1) * batch)
        return self.loss(embeddings[rows], labels[rows])

    def extra_repr(self):
        """Shows the view selected."""
        return f"n_views={self.n_views}, view={self.view}"
