"""Import-on-first-use of the Triton kernels (``_chain_triton``, ``_conv_triton``): one loader for both.

Triton is imported when a kernel is first needed, never by ``import sao``, so ``TRITON_INTERPRET=1`` set
before that runs the kernels on the CPU through Triton's interpreter (how the CPU test run checks them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from types import SimpleNamespace

import torch

__all__ = ["TritonKernels", "interpreting"]


def interpreting() -> bool:
    """Whether Triton's interpreter is on (``TRITON_INTERPRET`` set and not ``0``)."""
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


class TritonKernels:
    """One module's Triton kernels, defined by ``define`` on first use (once per process, thread-safe).

    Args:
        define: imports triton, binds ``triton.language`` in its module's globals (the jit functions look
            it up there) and returns the kernels; an ``ImportError`` means "no triton".
    """

    def __init__(self, define: Callable[[], SimpleNamespace]) -> None:
        self.define = define
        self.kernels: SimpleNamespace | None = None
        self.error: str | None = None
        self.tried = False
        self._lock = threading.Lock()

    def load(self) -> SimpleNamespace | None:
        """The kernels, or ``None`` if triton cannot be imported (the reason is in :attr:`error`)."""
        if not self.tried:
            with self._lock:
                if not self.tried:
                    try:
                        self.kernels = self.define()
                    except ImportError as exc:
                        self.error = f"sao: triton is not importable ({exc})"
                    self.tried = True
        return self.kernels

    @staticmethod
    def runs_on(device: torch.device) -> bool:
        """Whether a Triton kernel can take tensors on ``device``: CUDA (when present), or the CPU under the
        interpreter."""
        if device.type == "cuda":
            return torch.cuda.is_available()
        return device.type == "cpu" and interpreting()

    def available(self, device: torch.device | str) -> bool:
        """Whether the kernels can run on ``device``: it can take them (:meth:`runs_on`) and triton imports."""
        return self.runs_on(torch.device(device)) and self.load() is not None

    def require(self) -> SimpleNamespace:
        """The kernels, or ``RuntimeError`` saying why triton is unavailable."""
        kernels = self.load()
        if kernels is None:
            raise RuntimeError(self.error)
        return kernels
