r"""SGD and the per-epoch learning-rate schedules (constant, multistep, cosine) with optional linear warm-up.

The learning rate of 0-based epoch ``e`` is ``config.lr * lr_factor(e, config)`` with

.. math::

    \text{factor}(e) = w(e)\, s(e), \qquad
    w(e) = \min\bigl(1, \tfrac{e + 1}{W + 1}\bigr)

for ``W = warmup_epochs`` and ``s`` the named schedule of :data:`SCHEDULES`:
``constant`` 1; ``multistep`` ``gamma ** #{milestones <= e}`` (milestones are absolute epochs);
``cosine`` ``½ (1 + cos(π (e − W) / (E − W)))`` after the warm-up (1 during it), ``E = epochs``.
Add a schedule with ``@SCHEDULES.register("name")`` on a function ``(epoch, config) -> float``.

``config`` is anything with the attributes of :class:`ScheduleConfig` (a
:class:`~sao.training.TrainConfig` in practice); this module does not import the config module,
which imports :data:`SCHEDULES` to validate its ``schedule`` field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from sao._registry import Registry
from sao._validation import as_int

__all__ = ["SCHEDULES", "ScheduleConfig", "build_optimizer", "build_scheduler", "lr_factor"]


class ScheduleConfig(Protocol):
    """The attributes of a run config that the optimizer and the schedules read (read-only)."""

    @property
    def epochs(self) -> int: ...
    @property
    def warmup_epochs(self) -> int: ...
    @property
    def schedule(self) -> str: ...
    @property
    def milestones(self) -> Sequence[int]: ...
    @property
    def gamma(self) -> float: ...
    @property
    def lr(self) -> float: ...
    @property
    def momentum(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def nesterov(self) -> bool: ...


Schedule = Callable[[int, ScheduleConfig], float]
SCHEDULES: Registry[Schedule] = Registry("lr schedule", "sao.training.SCHEDULES")


@SCHEDULES.register("constant")
def _constant(epoch: int, config: ScheduleConfig) -> float:
    return 1.0


@SCHEDULES.register("multistep")
def _multistep(epoch: int, config: ScheduleConfig) -> float:
    return config.gamma ** sum(1 for m in config.milestones if m <= epoch)


@SCHEDULES.register("cosine")
def _cosine(epoch: int, config: ScheduleConfig) -> float:
    span = max(config.epochs - config.warmup_epochs, 1)
    progress = min(max(epoch - config.warmup_epochs, 0), span) / span
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(epoch: int, config: ScheduleConfig) -> float:
    """The multiplier of ``config.lr`` in 0-based epoch ``epoch``: linear warm-up times the schedule.

    Example:
        >>> from sao.training import TrainConfig
        >>> cfg = TrainConfig(epochs=10, schedule="multistep", milestones=(5,), warmup_epochs=1)
        >>> [lr_factor(e, cfg) for e in (0, 1, 4, 5)]
        [0.5, 1.0, 1.0, 0.1]
    """
    epoch = as_int(epoch, "epoch", minimum=0)
    warmup = min(1.0, (epoch + 1) / (config.warmup_epochs + 1))
    return warmup * SCHEDULES.get(config.schedule)(epoch, config)


def build_optimizer(model: nn.Module, config: ScheduleConfig) -> torch.optim.SGD:
    """SGD over the trainable parameters of ``model`` with the config's lr, momentum, weight decay, Nesterov."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.nesterov)


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A :class:`~torch.optim.lr_scheduler.LambdaLR` stepped once per epoch with :func:`lr_factor`."""
    SCHEDULES.get(config.schedule)  # fail before building anything

    def factor(epoch: int) -> float:
        return lr_factor(epoch, config)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
