"""Deploying sparse models: plain, export-friendly PyTorch and ONNX files that ONNX Runtime runs fast.

``deployable(model, example)`` returns a copy of the model in plain PyTorch ops (no custom autograd Function,
no compiled kernel, no dispatch timer) computing the same function to float32 rounding, where every sparse
layer takes an *operator form* (:data:`FORMS`: ``"dense"``, ``"grouped"``, ``"matmul"``; ``"auto"`` measures
which one ONNX Runtime runs fastest for each layer shape) and the permutations between layers are folded away;
``to_onnx(model, example, path)`` writes it as an ONNX file; ``export_program(model, example)`` gives its
``torch.export.ExportedProgram``. ``import sao.export`` needs only torch; the ONNX side needs the ``deploy``
extra (``pip install 'sao[deploy]'``: onnx, onnxscript, onnxruntime).

Example:
    >>> import torch, sao
    >>> from torch import nn
    >>> net = sao.sparsify(nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
    ...                                  nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4)), sparsity=0.75)
    >>> deploy = deployable(net, torch.randn(8, 16), form="grouped")
    >>> deploy.deploy_report.forms(), deploy.deploy_report.gathers
    ({'grouped/4': 2}, 1)
    >>> x = torch.randn(3, 16)
    >>> torch.allclose(deploy(x), net.eval()(x), atol=1e-6)
    True
"""

from sao.export._deploy import DeployReport, LayerChoice, deployable, export_program, to_onnx
from sao.export._forms import FORMS, Form, Lowered, form_names
from sao.export._measure import Candidate, FormTimer
from sao.export._onnx import ort_session
from sao.export._spec import LAYER_KINDS, LayerKind, LayerSpec, block_structure, layer_spec

__all__ = [
    "FORMS",
    "LAYER_KINDS",
    "Candidate",
    "DeployReport",
    "Form",
    "FormTimer",
    "LayerChoice",
    "LayerKind",
    "LayerSpec",
    "Lowered",
    "block_structure",
    "deployable",
    "export_program",
    "form_names",
    "layer_spec",
    "ort_session",
    "to_onnx",
]
