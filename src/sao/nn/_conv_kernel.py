"""The compiled kernel of a blocked :class:`~sao.nn.SparseConv2d`: build/load, reference and autograd wrapper.

The layer's blocked forward is an ``index_select`` of the input channels, a grouped convolution with
``groups = num_blocks`` and an ``index_select`` of the output channels (:func:`sparse_conv_reference`).
The kernel (``csrc/conv_cpu.cpp`` on the CPU, :mod:`sao.nn._conv_triton` on CUDA) computes the same in one
pass: the permutations are folded into its loads and stores, each (sample, block) pair is a stride-1
correlation over phase planes of the padded input (any stride, padding and dilation), and the input and
weight gradients are its exact adjoints. It saves only the input for backward (as a convolution does).

The CPU kernel is built on first use (:mod:`sao.nn._extension`); ``SAO_DISABLE_CONV_KERNEL=1`` turns it
off (the layer then runs its PyTorch route).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from sao.nn._extension import CompiledExtension, kernel_readable
from sao.nn.kernels import CONV_KERNELS, ConvKernel, checked_output, sparse_conv_reference

__all__ = ["SparseConvFunction", "load_conv_kernel", "sparse_conv"]

_EXTENSION = CompiledExtension("sao_conv_cpu", "conv_cpu.cpp", ["simd.h"], "SAO_DISABLE_CONV_KERNEL",
                               "convolution kernel")

Pair = tuple[int, int]


def load_conv_kernel(verbose: bool = False) -> ModuleType | None:
    """The compiled CPU convolution kernel (``forward``, ``backward``), built on the first call; ``None``
    (one warning) when it cannot be built or ``SAO_DISABLE_CONV_KERNEL=1`` is set."""
    return _EXTENSION.load(verbose)


class _CpuConv(ConvKernel):
    """The compiled CPU kernel (``csrc/conv_cpu.cpp``), built on first use."""

    def unavailable(self, device: torch.device) -> str | None:
        return None if load_conv_kernel() is not None else "the compiled CPU kernel is unavailable (see warnings)"

    def forward(self, x: Tensor, blocks: Tensor, bias: Tensor | None, perms: tuple[Tensor, Tensor],
                geometry: tuple[Pair, Pair, Pair], num_blocks: int) -> Tensor:
        stride, padding, dilation = geometry
        return _EXTENSION.require().forward(x, blocks, x.new_empty(0) if bias is None else bias, *perms,
                                            list(stride), list(padding), list(dilation), num_blocks)

    def backward(self, grad_y: Tensor, x: Tensor, blocks: Tensor, perms: tuple[Tensor, Tensor],
                 geometry: tuple[Pair, Pair, Pair], num_blocks: int, needs: tuple[bool, bool]) -> list[Tensor]:
        stride, padding, dilation = geometry
        return _EXTENSION.require().backward(grad_y, x, blocks, *perms, list(stride), list(padding), list(dilation),
                                             num_blocks, *needs)


class _TritonConv(ConvKernel):
    """The Triton kernels (:mod:`sao.nn._conv_triton`), on CUDA."""

    def unavailable(self, device: torch.device) -> str | None:
        from sao.nn._conv_triton import triton_conv_available

        return None if triton_conv_available(device) else "triton is not available"

    def forward(self, x: Tensor, blocks: Tensor, bias: Tensor | None, perms: tuple[Tensor, Tensor],
                geometry: tuple[Pair, Pair, Pair], num_blocks: int) -> Tensor:
        from sao.nn._conv_triton import conv_forward_triton

        return conv_forward_triton(x, blocks, bias, *perms, *geometry, num_blocks)

    def backward(self, grad_y: Tensor, x: Tensor, blocks: Tensor, perms: tuple[Tensor, Tensor],
                 geometry: tuple[Pair, Pair, Pair], num_blocks: int, needs: tuple[bool, bool]) -> list[Tensor | None]:
        from sao.nn._conv_triton import conv_input_grad_triton, conv_weight_grad_triton

        gx = conv_input_grad_triton(grad_y, blocks, *perms, tuple(x.shape[2:]), *geometry, num_blocks) \
            if needs[0] else None
        gw = conv_weight_grad_triton(grad_y, x, *perms, tuple(blocks.shape[2:]), *geometry, num_blocks) \
            if needs[1] else None
        return [gx, gw]


CONV_KERNELS.register("cpu", _CpuConv())
CONV_KERNELS.register("cuda", _TritonConv())


def _ops(device: torch.device) -> ConvKernel:
    return CONV_KERNELS.get(device.type)


def _forward(x: Tensor, blocks: Tensor, bias: Tensor | None, perms: tuple[Tensor, Tensor],
             geometry: tuple[Pair, Pair, Pair], num_blocks: int) -> Tensor:
    """The backend's forward, its output checked (:func:`sao.nn.kernels.checked_output`)."""
    backend = _ops(x.device)
    (sh, sw), (ph, pw), (dh, dw) = geometry
    kh, kw = blocks.shape[2:]
    size = ((x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
    y = backend.forward(x, blocks, bias, perms, geometry, num_blocks)
    return checked_output(y, (x.shape[0], blocks.shape[0], *size), x, backend)


def _backward(grad_y: Tensor, x: Tensor, blocks: Tensor, perms: tuple[Tensor, Tensor],
              geometry: tuple[Pair, Pair, Pair], num_blocks: int, needs: tuple[bool, bool]) -> list[Tensor | None]:
    """The backend's ``[grad_x, grad_blocks]``, each checked where wanted."""
    backend = _ops(x.device)
    grads = list(backend.backward(grad_y, x, blocks, perms, geometry, num_blocks, needs))
    return [checked_output(g, t.shape, t, backend) if need else None
            for g, t, need in zip(grads, (x, blocks), needs, strict=True)]


class SparseConvFunction(torch.autograd.Function):
    """``y = sparse_conv(x)`` through the kernel backend of ``x``'s device (:data:`sao.nn.CONV_KERNELS`), both ways.

    ``apply(x, blocks, bias, row_perm, col_perm, geometry, num_blocks)`` with the arguments of
    :func:`sparse_conv_reference` (``blocks``, ``bias`` and the permutations contiguous). Gradients: ``x``,
    ``blocks``, ``bias``. Twice differentiable: a backward that must itself be differentiated
    (``create_graph=True``) recomputes the forward with :func:`sparse_conv_reference` and differentiates that.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, blocks: Tensor, bias: Tensor | None, row_perm: Tensor, col_perm: Tensor,
                geometry: tuple[Pair, Pair, Pair], num_blocks: int) -> Tensor:
        y = _forward(x, blocks, bias, (row_perm, col_perm), geometry, num_blocks)
        ctx.save_for_backward(x, blocks, bias, row_perm, col_perm)
        ctx.geometry, ctx.num_blocks = geometry, num_blocks
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        x, blocks, bias, row_perm, col_perm = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        # create_graph=True (the backward itself must be differentiable), or vmap-batched gradients
        if torch.is_grad_enabled() or not kernel_readable(grad_y):
            grads = _differentiable_backward(grad_y, (x, blocks, bias), (row_perm, col_perm), ctx)
            return (*grads, None, None, None, None)
        grad_x, grad_w = _backward(grad_y, x, blocks, (row_perm, col_perm), ctx.geometry,
                                                 ctx.num_blocks, (need_x, need_w))
        grad_b = grad_y.sum((0, 2, 3)) if need_b else None
        return (grad_x if need_x else None, grad_w if need_w else None, grad_b, None, None, None, None)


def _differentiable_backward(grad_y: Tensor, inputs: tuple[Tensor, Tensor, Tensor | None],
                             perms: tuple[Tensor, Tensor], ctx: Any) -> list[Tensor | None]:
    """``[grad_x, grad_blocks, grad_bias]`` as a differentiable graph (one extra forward)."""
    wanted = ctx.needs_input_grad[:3]
    with torch.enable_grad():
        y = sparse_conv_reference(*inputs, *perms, ctx.geometry, ctx.num_blocks)
        targets = [t for t, want in zip(inputs, wanted, strict=True) if want and t is not None]
        found = iter(torch.autograd.grad(y, targets, grad_y, create_graph=True, allow_unused=True))
    grads = [next(found) if want and t is not None else None for t, want in zip(inputs, wanted, strict=True)]
    return [torch.zeros_like(t) if g is None and want and t is not None else g
            for g, t, want in zip(grads, inputs, wanted, strict=True)]


def sparse_conv(x: Tensor, blocks: Tensor, bias: Tensor | None, row_perm: Tensor, col_perm: Tensor,
                geometry: tuple[Pair, Pair, Pair], num_blocks: int) -> Tensor:
    """:func:`sparse_conv_reference` through the kernel backend of ``x``'s device (:data:`sao.nn.CONV_KERNELS`).

    ``x`` is 4-D, float32/float64, on the parameters' device; ``blocks`` and the permutations are made
    contiguous here (differentiably). Raises ``RuntimeError`` if no kernel is available for the device.
    """
    blocks = blocks if blocks.is_contiguous() else blocks.contiguous()
    if bias is not None and not bias.is_contiguous():
        bias = bias.contiguous()
    perms = (row_perm if row_perm.is_contiguous() else row_perm.contiguous(),
             col_perm if col_perm.is_contiguous() else col_perm.contiguous())
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, blocks, bias)):
        return SparseConvFunction.apply(x, blocks, bias, *perms, geometry, num_blocks)
    return _forward(x, blocks, bias, perms, geometry, num_blocks)  # nothing to differentiate
