"""Build-on-first-use of the compiled CPU kernels (``csrc/*.cpp``), shared by the chain and conv kernels.

Each kernel is compiled on first use with :func:`torch.utils.cpp_extension.load` (``-O3 -march=native
-fopenmp``) and cached in torch's extension directory (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``) under a name that hashes the sources, the flags, the CPU and torch's
version, so a shared cache never serves a binary built for another CPU. Nothing is compiled when ``sao``
is imported. If the build fails (no compiler, no ``ninja``) or the kernel's disabling environment variable
is set, :meth:`CompiledExtension.load` returns ``None`` and warns once per process; callers then use
PyTorch ops.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

__all__ = ["CSRC", "CompiledExtension", "kernel_readable"]

#: The directory of the C++ sources.
CSRC = Path(__file__).with_name("csrc")
_CFLAGS = ("-O3", "-march=native", "-fopenmp")
_LDFLAGS = ("-fopenmp",)


def _cpu_fingerprint() -> str:
    """The CPU's model name and feature flags (``-march=native`` binaries are only valid on that CPU)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(keep)
    except OSError:
        return platform.processor() + platform.machine()


def _import_cpp_extension() -> ModuleType:
    """``torch.utils.cpp_extension``, without its import-time "No CUDA runtime is found" log line on CPU machines."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        log.setLevel(level)
    return cpp_extension


class CompiledExtension:
    """One compiled kernel: its sources, how to disable it, and its build state (per process).

    Args:
        stem: the extension's name before the hash (``"sao_chain_cpu"``).
        source: the ``.cpp`` file in :data:`CSRC`; ``headers`` are hashed with it.
        disable_env: the environment variable that turns the kernel off (``=1``).
        what: the kernel in words, for the warning (``"chain kernel"``).
    """

    def __init__(self, stem: str, source: str, headers: Sequence[str], disable_env: str, what: str) -> None:
        self.stem, self.source, self.headers = stem, CSRC / source, [CSRC / h for h in headers]
        self.disable_env, self.what = disable_env, what
        self.state: dict[str, Any] = {"tried": False, "module": None, "warned": False, "error": None}
        self._lock = threading.Lock()

    def name(self) -> str:
        """The extension's cache name: the stem and a hash of sources, flags, CPU and torch version."""
        digest = hashlib.sha256()
        for part in (self.source.read_bytes(), *(h.read_bytes() for h in self.headers), " ".join(_CFLAGS).encode(),
                     _cpu_fingerprint().encode(), torch.__version__.encode()):
            digest.update(part)
        return f"{self.stem}_{digest.hexdigest()[:12]}"

    def _warn_once(self) -> None:
        if not self.state["warned"]:
            self.state["warned"] = True
            warnings.warn(self.state["error"], RuntimeWarning, stacklevel=4)

    def load(self, verbose: bool = False) -> ModuleType | None:
        """The extension module, building it on the first call; ``None`` (one warning) if unavailable.

        Args:
            verbose: show the compiler's output.

        Returns:
            The module, or ``None`` when it cannot be built or the disabling variable is set; later
            calls return the same without retrying.
        """
        state = self.state
        if not state["tried"]:
            with self._lock:
                if not state["tried"]:
                    self._build(verbose)
                    state["tried"] = True
        if state["module"] is None:
            self._warn_once()
        return state["module"]

    def _build(self, verbose: bool) -> None:
        state = self.state
        if os.environ.get(self.disable_env, "") not in ("", "0"):
            state["error"] = f"sao: the compiled {self.what} is disabled ({self.disable_env}); using PyTorch ops"
            return
        try:
            state["module"] = _import_cpp_extension().load(
                name=self.name(), sources=[str(self.source)], extra_cflags=list(_CFLAGS),
                extra_ldflags=list(_LDFLAGS), verbose=verbose)
        except Exception as exc:  # any build failure means "fall back"
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
            state["error"] = (f"sao: could not build the compiled {self.what} ({type(exc).__name__}: {last}); "
                              "using the slower PyTorch path")

    def require(self) -> ModuleType:
        """The module, or ``RuntimeError`` saying why it is unavailable."""
        module = self.load()
        if module is None:
            raise RuntimeError(self.state["error"])
        return module


def kernel_readable(t: torch.Tensor) -> bool:
    """Whether a compiled kernel can read ``t``'s memory: a strided tensor with storage, not one batched by
    ``vmap`` (as ``autograd.grad(..., is_grads_batched=True)`` and vectorized Jacobians pass gradients) or
    wrapped by ``torch.func``. Kernels' backwards fall back to PyTorch ops for the others."""
    functorch = torch._C._functorch
    return not (functorch.is_legacy_batchedtensor(t) or functorch.is_batchedtensor(t)
                or functorch.is_functorch_wrapped_tensor(t) or t.layout != torch.strided)
