"""Margin warm-up: hold a loss's margin at 0, then ramp it up linearly.

Margin-based objectives learn slowly from a random start when the margin is
at full strength from the first step; WeSpeaker therefore trains with margin
0 for the first epochs and ramps it up linearly to the full value
(``MarginScheduler``). :class:`MarginWarmup` does the same in steps, inside
the loss: the loss counts its own training calls, so the schedule needs no
hook in the training loop and is checkpointed with the loss.

Authors
 * speechbrain_ext contributors
"""

import torch

__all__ = ["MarginWarmup", "warmup_fraction"]


def warmup_fraction(step, start=0, ramp=0):
    """Share of the full margin used at a step of the warm-up.

    The margin is 0 for the first ``start`` steps, then rises linearly to
    the full margin over ``ramp`` steps and stays there. Without a ramp it
    jumps from 0 to the full margin at step ``start``; with ``start`` and
    ``ramp`` both 0 there is no warm-up.

    Arguments
    ---------
    step : int
        Training steps made before this one (0 for the first step).
    start : int
        Steps held at margin 0.
    ramp : int
        Steps of the linear ramp that follows.

    Returns
    -------
    float
        The factor in [0, 1] applied to the full margin.

    Example
    -------
    >>> [warmup_fraction(t, start=2, ramp=4) for t in range(8)]
    [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    >>> warmup_fraction(0), warmup_fraction(3, start=3)
    (1.0, 1.0)
    """
    if step < start:
        return 0.0
    if ramp <= 0:
        return 1.0
    return min(1.0, (step - start) / ramp)


class MarginWarmup(torch.nn.Module):
    """Counts a loss's training calls and scales its margin by the schedule.

    The count lives in the registered buffer ``step`` (int64), so it is
    saved and restored with the loss's ``state_dict``: a resumed run
    continues the schedule where it stopped. The loss calls :meth:`margin`
    for the margin of the current call and then :meth:`advance`, which
    counts only calls made in training mode (``loss.train()``), never
    validation or inference calls. A Python copy of the count is kept so
    that reading the margin never waits for the device; it is refreshed
    whenever a state dict is loaded.

    A state dict without ``step`` (a checkpoint from before this buffer
    existed) loads as step 0.

    Arguments
    ---------
    start : int
        Training calls held at margin 0.
    ramp : int
        Training calls of the linear ramp to the full margin that follows.

    Example
    -------
    >>> warmup = MarginWarmup(start=1, ramp=2)
    >>> margins = []
    >>> for _ in range(5):
    ...     margins.append(warmup.margin(0.2))
    ...     warmup.advance()
    >>> [round(m, 2) for m in margins]
    [0.0, 0.0, 0.1, 0.2, 0.2]
    >>> warmup.eval().advance()  # evaluation calls are not counted
    >>> int(warmup.step)
    5
    >>> resumed = MarginWarmup(start=1, ramp=2)
    >>> _ = resumed.load_state_dict(warmup.state_dict())
    >>> resumed.margin(0.2)
    0.2
    """

    def __init__(self, start=0, ramp=0):
        super().__init__()
        if int(start) != start or start < 0:
            raise ValueError(f"start must be an int >= 0, got {start!r}")
        if int(ramp) != ramp or ramp < 0:
            raise ValueError(f"ramp must be an int >= 0, got {ramp!r}")
        self.start = int(start)
        self.ramp = int(ramp)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._step = 0

    @property
    def enabled(self):
        """Whether the margin is ever below its full value."""
        return self.start > 0 or self.ramp > 0

    @property
    def steps(self):
        """The training calls counted so far, as an int."""
        return self._step

    def fraction(self):
        """The share of the full margin at the current step."""
        return warmup_fraction(self._step, self.start, self.ramp)

    def margin(self, full_margin):
        """The margin of the current call, given the full margin.

        Arguments
        ---------
        full_margin : float
            The margin after the warm-up.

        Returns
        -------
        float
            ``full_margin`` times :meth:`fraction`.
        """
        return float(full_margin) * self.fraction()

    def advance(self):
        """Counts one call, if in training mode."""
        if not self.training:
            return
        self._step += 1
        # In place, from a Python int: no device synchronisation.
        self.step.fill_(self._step)

    def _load_from_state_dict(
        self,
        state_dict,
        prefix,
        local_metadata,
        strict,
        missing_keys,
        unexpected_keys,
        error_msgs,
    ):
        """Loads ``step`` (0 if absent) and refreshes the Python count."""
        key = prefix + "step"
        if key not in state_dict:
            self.step.zero_()
        super()._load_from_state_dict(
            state_dict,
            prefix,
            local_metadata,
            strict,
            missing_keys,
            unexpected_keys,
            error_msgs,
        )
        if key in missing_keys:
            missing_keys.remove(key)
        self._step = int(self.step)

    def extra_repr(self):
        """Shows the schedule in the module's repr."""
        return f"start={self.start}, ramp={self.ramp}"
