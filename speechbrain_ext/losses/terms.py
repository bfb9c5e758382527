"""Logging the separate terms of a composite loss without a GPU sync.

Authors
 * speechbrain_ext contributors
"""

__all__ = ["LoggedTerms"]


class LoggedTerms:
    """Mixin for losses that report their terms of the last call.

    ``last_term_tensors`` holds detached scalar tensors, so a training loop
    can sum them over a stage on the device and read them once at its end;
    ``last_terms`` turns them into floats (one device sync per term) for
    interactive use and tests.

    Example
    -------
    >>> import torch
    >>> class Pair(LoggedTerms):
    ...     def __call__(self, a, b):
    ...         self.last_term_tensors = {"a": a.detach(), "b": b.detach()}
    ...         return a + b
    >>> pair = Pair()
    >>> _ = pair(torch.tensor(1.5), torch.tensor(2.0))
    >>> pair.last_terms
    {'a': 1.5, 'b': 2.0}
    """

    last_term_tensors = {}

    @property
    def last_terms(self):
        """Name -> float value of each term in the last call."""
        return {
            name: float(value) for name, value in self.last_term_tensors.items()
        }
