"""An exponential-moving-average teacher of a set of student modules.

Authors
 * speechbrain_ext contributors
"""

import copy

import torch

__all__ = ["EMATeacher"]


class EMATeacher(torch.nn.Module):
    """Frozen copies of student modules that follow them by EMA.

    Self-distillation (DINO, BYOL) predicts a teacher that is a slowly
    moving average of the student: after every optimizer step,
    ``teacher <- m * teacher + (1 - m) * student`` for each parameter, and
    buffers (batch-norm statistics) are copied. The teacher starts as an
    exact copy, gets no gradient, and is saved and restored with the
    checkpoint like any module.

    Arguments
    ---------
    students : dict
        Name -> student module; each is deep-copied once, at construction.
    momentum : float
        m in [0, 1): 0 makes the teacher the student (stop-gradient only);
        0.99 averages about the last 100 steps.

    Example
    -------
    >>> student = torch.nn.Linear(2, 1)
    >>> teacher = EMATeacher({"net": student}, momentum=0.5)
    >>> with torch.no_grad():
    ...     _ = student.bias.fill_(1.0)
    ...     _ = teacher["net"].bias.fill_(0.0)
    >>> teacher.update({"net": student})
    >>> teacher["net"].bias
    Parameter containing:
    tensor([0.5000])
    """

    def __init__(self, students, momentum=0.996):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.copies = torch.nn.ModuleDict(
            {name: copy.deepcopy(module) for name, module in students.items()}
        )
        self.copies.requires_grad_(False)

    def __getitem__(self, name):
        """The teacher copy of the student called ``name``."""
        return self.copies[name]

    @torch.no_grad()
    def update(self, students):
        """One EMA step toward the students (after an optimizer step).

        Arguments
        ---------
        students : dict
            Name -> student module (e.g. a Brain's ``modules``), holding
            at least the names given at construction; wrappers such as
            ``DistributedDataParallel`` are unwrapped.
        """
        missing = sorted(set(self.copies) - set(students))
        if missing:
            raise ValueError(
                f"EMATeacher follows {sorted(self.copies)}, but {missing} "
                "are not among the students given"
            )
        for name in self.copies:
            student = getattr(students[name], "module", students[name])
            teacher = self.copies[name]
            mine = list(teacher.parameters())
            theirs = [p.detach() for p in student.parameters()]
            if len(mine) != len(theirs):
                raise ValueError(
                    f"teacher {name!r} has {len(mine)} parameters, its "
                    f"student {len(theirs)}"
                )
            # One fused kernel per tensor list, not two launches per
            # parameter: the update runs every step.
            torch._foreach_mul_(mine, self.momentum)
            torch._foreach_add_(mine, theirs, alpha=1.0 - self.momentum)
            buffers = list(teacher.buffers())
            if buffers:
                torch._foreach_copy_(
                    buffers, [b.detach() for b in student.buffers()]
                )
