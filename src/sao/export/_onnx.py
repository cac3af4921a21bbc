"""The ONNX side: the exporter, ONNX Runtime sessions, and the lazy imports of the ``deploy`` extra.

``onnx``, ``onnxscript`` (the exporter's IR) and ``onnxruntime`` are imported inside the functions that use
them, so ``import sao.export`` (and everything that runs in PyTorch only: :func:`~sao.export.deployable` with a
forced form, :func:`~sao.export.export_program`) works without them; a function that needs one of them raises
one :class:`~sao._extras.MissingExtra` (an :class:`ImportError`) naming ``pip install 'sao[deploy]'``.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based one, PyTorch's default since
2.9; the TorchScript-based one is deprecated), with its ONNX optimizer (constant folding, dead code) on.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sao._extras import require_extra

__all__ = ["export_proto", "ort_session", "require", "run_session"]

INPUT, OUTPUT = "input", "output"


def require(name: str) -> ModuleType:
    """Import ``name`` (``onnx``, ``onnxscript``, ``onnxruntime``).

    Raises:
        MissingExtra: (an ``ImportError``) when a package of the ``deploy`` extra is not installed, naming the
            extra and the missing packages.
    """
    require_extra("sao.export's ONNX side (ONNX export and ONNX Runtime)", "deploy")
    return importlib.import_module(name)


def batch_dim(example: Tensor) -> dict[int, Any]:
    """The dynamic batch dimension of ``example`` for ``torch.export``."""
    return {0: torch.export.Dim("batch")}


def exportable_example(example: Tensor) -> Tensor:
    """``example`` with a batch of at least 2 (``torch.export`` specialises a dynamic dimension seen as 1)."""
    return example if example.shape[0] >= 2 else example.expand(2, *example.shape[1:]).contiguous()


def export_proto(module: nn.Module, example: Tensor, *, dynamic_batch: bool = True, optimize: bool = True,
                 outputs: int = 1) -> Any:
    """``module`` as an ``onnx.ModelProto`` (input ``"input"``, output ``"output"``, or ``"output0"``,
    ``"output1"``, … for a module returning a tuple of ``outputs`` tensors; a dynamic batch dimension).

    Raises:
        MissingExtra: without the deploy extra (naming ``pip install 'sao[deploy]'``).
    """
    require("onnx")
    require("onnxscript")
    example = exportable_example(example) if dynamic_batch else example
    dynamic = (batch_dim(example),) if dynamic_batch else None
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=dynamic, optimize=optimize,
                                    input_names=[INPUT], verbose=False,
                                    output_names=[OUTPUT] if outputs == 1 else [f"{OUTPUT}{i}" for i in range(outputs)])
    return program.model_proto


def ort_session(model: Any, threads: int = 1, *, profile: str | None = None) -> Any:
    """An ONNX Runtime CPU session of ``model`` (a path or an ``onnx.ModelProto``) with ``threads`` intra-op
    threads, one inter-op thread, all graph optimizations, warnings silenced; with ``profile`` (a file prefix),
    ONNX Runtime's profiler on (``session.end_profiling()`` writes the JSON trace and returns its path).

    Raises:
        MissingExtra: without the deploy extra (naming ``pip install 'sao[deploy]'``).
    """
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_session(session: Any, x: Tensor) -> Tensor:
    """One run of ``session`` on ``x`` (its only input), the first output as a tensor."""
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x.detach().cpu().numpy())}
    return torch.from_numpy(session.run(None, feed)[0])
