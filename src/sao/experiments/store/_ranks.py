"""A run in a ``torch.distributed`` process group: rank 0 claims and decides, every rank does the same.

Only rank 0 holds the lease and writes the store's files (``config.json``, ``result.json``; and
:func:`sao.training.train` writes only on rank 0). Its decisions reach the other ranks by
broadcast: whether to train the run (:func:`on_rank_0`), and, before every write, whether the
lease still holds (:func:`shared_guard`), so that a lease lost on rank 0 stops every rank at the
same point instead of leaving the others waiting in a collective. Outside a process group both
are plain calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sao.experiments.store._lease import Guard, LeaseLost
from sao.training.distributed import broadcast_object, is_main_process, world

T = TypeVar("T")


def on_rank_0(decide: Callable[[], T], failed: T) -> T:
    """``decide()`` run on rank 0 only, its value on every rank; ``failed`` on the other ranks when it raised
    (rank 0 raises its error).

    A collective: every rank must call it.
    """
    decision = failed
    try:
        if is_main_process():
            decision = decide()
    finally:  # every rank takes rank 0's decision, also when rank 0 failed
        decision = broadcast_object(decision)
    return decision


def _unguarded() -> None:
    return None


def shared_guard(check: Guard | None) -> Guard:
    """The guard of every rank: ``check`` (rank 0's lease check; ``None`` where none is held) run on rank 0,
    its verdict on every rank.

    In a process group the guard is a collective: every rank must call it at the same points (as
    :func:`sao.training.train` does); then every rank raises the same :class:`LeaseLost`.
    """
    if world()[1] == 1:
        return check or _unguarded

    def guard() -> None:
        lost: LeaseLost | None = None
        try:
            if check is not None:
                check()
        except LeaseLost as err:
            lost = err
        finally:
            lost = broadcast_object(lost)
        if lost is not None:
            raise lost

    return guard
