"""Data-parallel training with ``torch.distributed``: one run on several processes, GPUs or nodes.

Launch any ``sao train`` command with ``torchrun`` (``torchrun --nproc-per-node 4 -m sao.cli train ...``);
:func:`init_from_env` reads the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) and joins the process group: NCCL when the run uses CUDA, gloo
otherwise (2 CPU processes work too). Without those variables nothing happens and every helper
here answers as a world of one, so the same code serves both.

Guarantee (tested): with global batch ``B`` and seed ``s``, a world of ``W`` processes sees, at every
step, exactly the examples one process would see in its batch of ``B`` (each rank holds a ``B/W``
share, see :class:`sao.data.ShardedBatchSampler`) and DDP averages their gradients, so the weights
after training equal those of a single process up to float summation order.
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch
import torch.distributed as dist

from sao.training.config import resolve_device

__all__ = ["all_reduce_sum", "barrier", "broadcast_object", "device_for_rank", "init_from_env", "is_main_process",
           "shutdown", "world"]

T = TypeVar("T")


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    return world()[0] == 0


def device_for_rank(device: torch.device) -> torch.device:
    """A CUDA ``device`` without an index becomes this process's GPU (``LOCAL_RANK``) in a process group."""
    if device.type == "cuda" and device.index is None and world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_from_env(device: str = "auto") -> bool:
    """Join the process group torchrun describes in the environment; return whether one was joined.

    Does nothing (returns ``False``) when ``WORLD_SIZE`` is unset or 1, or a group already exists.
    The backend is NCCL when ``device`` resolves to CUDA, gloo otherwise.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    use_cuda = resolve_device(device).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def shutdown() -> None:
    """Leave the process group if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a world of one)."""
    if world()[1] > 1:
        dist.barrier()


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over all ranks, in place (no-op in a world of one)."""
    if world()[1] > 1:
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (pickled; the others' ``obj`` is ignored); ``obj`` in a world of one.

    A collective: every rank must call it, as with :func:`barrier`.
    """
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
