"""Operator forms of a sparse layer (:data:`FORMS`): ``"dense"``, ``"grouped"`` and ``"matmul"``.

A form turns a :class:`~sao.export._spec.LayerSpec` into a :class:`Lowered` layer: a core module of plain
PyTorch ops, the input order it needs and the output order it gives. The fold pass
(:mod:`sao.export._fold`) places the gathers between cores, composing and folding them away where it can.

- ``"dense"``: the scattered dense weight, :class:`torch.nn.Linear` / :class:`torch.nn.Conv2d` (ONNX ``Gemm`` /
  ``Conv``). Takes its inputs in any order (the order is folded into its columns) and gives its outputs in any
  order (folded into its rows): no gather ever.
- ``"grouped"``: the blocks as a grouped convolution over the features gathered into block order: a
  ``Conv1d`` with kernel 1 on the feature-major ``(1, F, N)`` layout for linear layers, a ``Conv2d`` with
  ``groups = g`` for convolutions (ONNX ``Conv`` with ``group``).
- ``"matmul"``: the blocks as one batched ``MatMul`` ``(g, bm, bn) @ (g, bn, N)`` (linear layers, feature-major)
  or ``(g, bm, bn) @ (B, g, bn, H·W)`` (1x1 convolutions, padding 0).

The block forms take ``groups`` (a divisor of the layer's block count, :meth:`LayerSpec.coarsenings`): the same
function with fewer, larger (block-diagonal) blocks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sao._registry import Registry
from sao.export._modules import BlockMatmul, BlockMatmulConv1x1
from sao.export._spec import LayerSpec

__all__ = ["FORMS", "Form", "Lowered", "check_form", "form_names", "ort_unavailable"]


@dataclass(frozen=True, eq=False)
class Lowered:
    """A sparse layer in one operator form.

    Attributes:
        core: the module that computes it (plain PyTorch ops).
        in_order: canonical input feature held by each core input position (``col_perm``); ``None``: the core is
            dense (``nn.Linear``/``nn.Conv2d``) and takes any order (the fold pass permutes its columns).
        out_order: canonical output feature at each core output position (``row_perm``); ``None`` for a dense
            core, which gives any order (the fold pass may permute its rows).
        feature_major: the core works on ``(1, F, N)`` (linear block forms).
        form, groups: the form's name and the number of blocks the core multiplies.
    """

    core: nn.Module
    in_order: Tensor | None
    out_order: Tensor | None
    feature_major: bool
    form: str
    groups: int


class Form:
    """An operator form: :meth:`unavailable` says why it cannot run a layer, :meth:`lower` builds it."""

    name: str = ""
    summary: str = ""
    blocked: bool = True  # takes ``groups`` (a block form)

    def unavailable(self, spec: LayerSpec) -> str | None:
        """Why this form cannot run ``spec`` (``None`` if it can)."""
        return spec.no_blocks if self.blocked else None

    def lower(self, spec: LayerSpec, groups: int | None = None) -> Lowered:
        """``spec`` in this form (with ``groups`` blocks; default: the layer's own)."""
        raise NotImplementedError


def _bias_in_block_order(spec: LayerSpec) -> Tensor | None:
    return None if spec.bias is None else spec.bias.detach()[spec.row_perm]


def _block_orders(spec: LayerSpec) -> tuple[Tensor, Tensor]:
    """``(col_perm, row_perm)``: the block order of the inputs and of the outputs."""
    return spec.col_perm, spec.row_perm


class DenseForm(Form):
    name, summary, blocked = "dense", "the scattered dense weight: Gemm / Conv, permutations folded into it", False

    def lower(self, spec: LayerSpec, groups: int | None = None) -> Lowered:
        return Lowered(copy.deepcopy(spec.dense), None, None, False, self.name, 1)


class GroupedForm(Form):
    name = "grouped"
    summary = "grouped Conv over the features gathered into block order (linear: Conv1d on (1, F, N))"

    def lower(self, spec: LayerSpec, groups: int | None = None) -> Lowered:
        spec = spec.coarsened(groups or spec.num_blocks)
        g, bm, bn = spec.blocks.shape[:3]
        dense = spec.dense
        factory = {"device": spec.blocks.device, "dtype": spec.blocks.dtype}
        if spec.kind == "linear":
            core = nn.Conv1d(g * bn, g * bm, 1, groups=g, bias=spec.bias is not None, **factory)
            weight = spec.blocks.reshape(g * bm, bn, 1)
        else:
            core = nn.Conv2d(g * bn, g * bm, dense.kernel_size, dense.stride, dense.padding, dense.dilation, groups=g,
                             bias=spec.bias is not None, padding_mode=dense.padding_mode, **factory)
            weight = spec.blocks.reshape(g * bm, bn, *spec.blocks.shape[3:])
        with torch.no_grad():
            core.weight.copy_(weight)
            if core.bias is not None:
                core.bias.copy_(_bias_in_block_order(spec))
        core.requires_grad_(False)
        return Lowered(core, *_block_orders(spec), spec.kind == "linear", self.name, g)


class MatmulForm(Form):
    name = "matmul"
    summary = "one batched MatMul over the blocks (linear layers; 1x1 convolutions without padding)"

    def unavailable(self, spec: LayerSpec) -> str | None:
        if spec.no_blocks:
            return spec.no_blocks
        if spec.kind == "conv":
            dense = spec.dense
            if tuple(dense.kernel_size) != (1, 1):
                return f"a {dense.kernel_size[0]}x{dense.kernel_size[1]} convolution (matmul runs 1x1 ones)"
            if dense.padding not in ((0, 0), "valid", "same"):
                return f"padding={dense.padding} (matmul runs 1x1 convolutions without padding)"
        return None

    def lower(self, spec: LayerSpec, groups: int | None = None) -> Lowered:
        spec = spec.coarsened(groups or spec.num_blocks)
        bias = _bias_in_block_order(spec)
        if spec.kind == "linear":
            core: nn.Module = BlockMatmul(spec.blocks, bias)
        else:
            core = BlockMatmulConv1x1(spec.blocks, bias, spec.dense.stride)
        return Lowered(core, *_block_orders(spec), spec.kind == "linear", self.name, spec.num_blocks)


FORMS: Registry[Form] = Registry("operator form", "sao.export.FORMS", of=Form)
for _form in (DenseForm(), GroupedForm(), MatmulForm()):
    FORMS.register(_form.name, _form)

AUTO = "auto"


def form_names() -> list[str]:
    """The valid values of ``form=``: ``"auto"`` and every registered form."""
    return [AUTO, *FORMS.names()]


def check_form(form: object) -> str:
    """``form`` if it is ``"auto"`` or a registered form.

    Raises:
        ValueError: naming the valid choices otherwise.
    """
    if not isinstance(form, str) or (form != AUTO and form not in FORMS):
        raise ValueError(f"form={form!r} is not an operator form; choose from {', '.join(form_names())}")
    return form


def ort_unavailable(form: str, spec: LayerSpec) -> str | None:
    """Why ONNX Runtime's CPU provider cannot run ``spec`` in ``form`` (``None`` if it can): it has no float64
    ``Conv`` (the ``"grouped"`` form, and the ``"dense"`` form of a convolution)."""
    dtype = spec.dense.weight.dtype
    if dtype == torch.float64 and (form == "grouped" or (form == "dense" and spec.kind == "conv")):
        return f"ONNX Runtime (CPU) has no {dtype} Conv kernel"
    return None
