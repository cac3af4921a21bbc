"""The compiled CPU kernel for chains of blocked ``SparseLinear`` layers: build/load and autograd wrapper.

A chain ``act_{L-1}(W_{L-1} … act_0(W_0 x + b_0) …)`` of blocked layers runs forward and backward in one
C++ call each (``csrc/chain_cpu.cpp``): the batch is split across OpenMP threads, one parallel region per
pass, and each thread runs every layer on its samples with the small dense blocks as SIMD loops over the
samples. PyTorch's per-op dispatch and autograd bookkeeping (~10 ops per layer), which dominate a chain of
1000 small layers, are paid once per chain instead.

The extension is built on first use (:mod:`sao.nn._extension`); if it cannot be built or
``SAO_DISABLE_CHAIN_KERNEL=1`` is set, :func:`load_chain_kernel` returns ``None`` and warns once per
process; callers then use the PyTorch path (:class:`sao.nn.FusedSparseChain`).

Saved for backward: every layer's post-activation output, ``Σ_l m_l · B · itemsize`` bytes (for 1000 ×
256 features, batch 128, float32: 131 MB); nothing is recomputed. Without grad, only two tiles per
thread are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from sao.nn._extension import CompiledExtension, kernel_readable
from sao.nn.kernels import CHAIN_KERNELS, ChainKernel

__all__ = ["ACTIVATION_CODES", "SparseChainFunction", "chain_backward_differentiable", "chain_indices", "chain_params",
           "chain_reference", "load_chain_kernel", "release_chain_workspace", "sparse_chain"]

#: Activations the kernel implements, by name (the codes are the C++ side's ``Act`` enum).
ACTIVATION_CODES: dict[str, int] = {"identity": 0, "tanh": 1, "relu": 2}

_EXTENSION = CompiledExtension("sao_chain_cpu", "chain_cpu.cpp", ["simd.h"], "SAO_DISABLE_CHAIN_KERNEL",
                               "chain kernel")


def load_chain_kernel(verbose: bool = False) -> ModuleType | None:
    """The compiled chain kernel (``forward``, ``backward``), built on the first call; ``None`` (one
    warning) when it cannot be built or ``SAO_DISABLE_CHAIN_KERNEL=1`` is set."""
    return _EXTENSION.load(verbose)


def _require_kernel() -> ModuleType:
    return _EXTENSION.require()


def release_chain_workspace() -> None:
    """Free the pooled buffers that hold saved outputs between steps (kept for reuse, at most two)."""
    if _EXTENSION.state["module"] is not None:
        _EXTENSION.state["module"].clear_workspace()


def _codes(activations: Sequence[str]) -> list[int]:
    try:
        return [ACTIVATION_CODES[a] for a in activations]
    except KeyError as exc:
        raise ValueError(f"activations: {exc.args[0]!r} is not supported by the chain kernel; "
                         f"allowed: {', '.join(ACTIVATION_CODES)}") from None


class SparseChainFunction(torch.autograd.Function):
    """``y = chain(x)`` for blocked layers, forward and backward each in one compiled call.

    ``apply(x, activations, gathers, row_perms, final_inverse, blocks_0, bias_0, blocks_1, bias_1, …)``:

    - ``x``: contiguous ``(B, n_0)``, float32 or float64, CPU;
    - ``activations``: tuple of names in :data:`ACTIVATION_CODES`, one per layer;
    - ``gathers``: long tensors, layer 0: ``col_perm_0``; layer ``l > 0``: ``row_inverse_{l-1}[col_perm_l]``
      (permutations; see :func:`chain_indices`);
    - ``row_perms``: each layer's ``row_perm`` (to read/write the biases in output order);
    - ``final_inverse``: ``row_inverse_{L-1}``;
    - ``blocks_l``: contiguous ``(g, bm, bn)``; ``bias_l``: ``(m_l,)`` in output order, or ``None``.

    Returns ``(B, m_{L-1})``. Gradients: ``x``, every ``blocks_l`` and ``bias_l`` (output order). Twice
    differentiable: a backward that must itself be differentiated (``create_graph=True``: gradient penalties,
    ``torch.autograd.functional.hessian``/``hvp``) is computed by :func:`chain_backward_differentiable`
    instead of the kernel.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, activations: tuple[str, ...], gathers: Sequence[Tensor],
                row_perms: Sequence[Tensor], final_inverse: Tensor, *params: Tensor | None) -> Tensor:
        kernel = _require_kernel()
        blocks, biases = list(params[0::2]), [x.new_empty(0) if b is None else b for b in params[1::2]]
        codes = _codes(activations)
        y, saved, tile = kernel.forward(x, blocks, biases, list(gathers), list(row_perms), final_inverse, codes, True)
        ctx.save_for_backward(x, saved, *blocks, *biases)
        ctx.indices = (list(gathers), list(row_perms), final_inverse, codes, int(tile))
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        x, saved, *tensors = ctx.saved_tensors
        depth = len(tensors) // 2
        blocks, biases = tensors[:depth], tensors[depth:]
        gathers, row_perms, final_inverse, codes, tile = ctx.indices
        # create_graph=True (the backward itself must be differentiable), or vmap-batched gradients
        if torch.is_grad_enabled() or not kernel_readable(grad_y):
            params = [p for b, bias in zip(blocks, biases, strict=True) for p in (b, bias if bias.numel() else None)]
            grads = chain_backward_differentiable(grad_y, x, params, (gathers, row_perms, final_inverse),
                                                  _names(codes), ctx.needs_input_grad)
            return (grads[0], None, None, None, None, *grads[1:])
        out = _require_kernel().backward(grad_y.contiguous(), x, saved, tile, blocks, biases, gathers, row_perms,
                                         final_inverse, codes, ctx.needs_input_grad[0])
        grads: list[Tensor | None] = [out[0], None, None, None, None]
        for layer in range(depth):
            grads += [out[1 + layer] if ctx.needs_input_grad[5 + 2 * layer] else None,
                      out[1 + depth + layer] if ctx.needs_input_grad[6 + 2 * layer] else None]
        return tuple(grads)


def _names(codes: Sequence[int]) -> tuple[str, ...]:
    by_code = {code: name for name, code in ACTIVATION_CODES.items()}
    return tuple(by_code[c] for c in codes)


#: The PyTorch function of each kernel activation (for :func:`chain_reference`).
_TORCH_ACTIVATIONS = {"identity": lambda z: z, "tanh": torch.tanh, "relu": torch.relu}


ChainIndices = tuple[Sequence[Tensor], Sequence[Tensor], Tensor]


def chain_reference(x: Tensor, params: Sequence[Tensor | None], indices: ChainIndices,
                    activations: Sequence[Any]) -> Tensor:
    """The chain in PyTorch ops, feature-major: what the kernels compute, differentiable to any order.

    Args:
        x: ``(B, n_0)``.
        params: ``blocks_0, bias_0, blocks_1, bias_1, …`` as :class:`SparseChainFunction` takes them
            (biases in output order, or ``None``).
        indices: ``(gathers, row_perms, final_inverse)`` (:func:`chain_indices`).
        activations: one per layer: a name of :data:`ACTIVATION_CODES` or a callable (a module).

    Returns:
        ``(B, m_{L-1})``.
    """
    gathers, row_perms, final_inverse = indices
    h = x.t()  # (features, batch)
    batch = h.shape[1]
    for blocks, bias, gather, row_perm, act in zip(params[0::2], params[1::2], gathers, row_perms, activations,
                                                   strict=True):
        g, bm, bn = blocks.shape
        xs = h.index_select(0, gather).view(g, bn, batch)
        z = torch.bmm(blocks, xs) if bias is None else torch.baddbmm(bias.index_select(0, row_perm).view(g, bm, 1),
                                                                      blocks, xs)
        h = (_TORCH_ACTIVATIONS[act] if isinstance(act, str) else act)(z.view(g * bm, batch))
    return h.index_select(0, final_inverse).t()


def chain_backward_differentiable(grad_y: Tensor, x: Tensor, params: Sequence[Tensor | None],
                                  indices: ChainIndices,
                                  activations: Sequence[str], needs_input_grad: Sequence[bool]) -> list[Tensor | None]:
    """The chain's backward as a differentiable graph (run under ``create_graph=True``).

    Recomputes the forward with :func:`chain_reference` from the saved inputs (which keep their own
    graph) and differentiates it with ``create_graph=True``, so second derivatives — double backward,
    Hessian-vector products — are those of the plain layers. Costs one extra forward.

    Returns:
        ``[grad_x, grad_blocks_0, grad_bias_0, …]``; ``None`` where ``needs_input_grad`` (the autograd
        Function's, whose inputs 1-4 are the index arguments) says no.
    """
    wanted = [needs_input_grad[0], *needs_input_grad[5:]]
    with torch.enable_grad():
        # one alias per slot: a layer used twice in the chain passes the same tensor in two slots, and each slot
        # must get the gradient of its own use only (autograd sums the slots back into the parameter)
        inputs = [None if t is None else t.view_as(t) for t in [x, *params]]
        y = chain_reference(inputs[0], inputs[1:], indices, activations)
        targets = [t for t, want in zip(inputs, wanted, strict=True) if want and t is not None]
        found = iter(torch.autograd.grad(y, targets, grad_y, create_graph=True, allow_unused=True))
    grads = [next(found) if want and t is not None else None for t, want in zip(inputs, wanted, strict=True)]
    return [torch.zeros_like(t) if g is None and want and t is not None else g
            for g, t, want in zip(grads, inputs, wanted, strict=True)]


def chain_indices(layers: Sequence[Any]) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """``(gathers, row_perms, final_inverse)`` for blocked ``SparseLinear`` layers (cache it: L index ops).

    Contiguous whatever the buffers' layout (a ``load_state_dict(..., assign=True)`` may leave them strided)."""
    gathers = [layers[0].col_perm.contiguous()] + [prev.row_inverse[layer.col_perm] for prev, layer in pairwise(layers)]
    return gathers, [layer.row_perm.contiguous() for layer in layers], layers[-1].row_inverse.contiguous()


def chain_params(layers: Sequence[Any]) -> list[Tensor | None]:
    """``[blocks_0, bias_0, blocks_1, bias_1, …]`` of blocked layers, contiguous (differentiably: a strided
    parameter, e.g. after ``load_state_dict(..., assign=True)``, is copied and its gradient flows back)."""
    params: list[Tensor | None] = []
    for layer in layers:
        params += [_contiguous(layer.blocks), None if layer.bias is None else _contiguous(layer.bias)]
    return params


def _contiguous(t: Tensor) -> Tensor:
    return t if t.is_contiguous() else t.contiguous()  # skips a dispatch per parameter (1000s per chain)


def sparse_chain(x: Tensor, layers: Sequence[Any], activations: Sequence[str],
                 indices: tuple[list[Tensor], list[Tensor], Tensor] | None = None) -> Tensor:
    """``act_{L-1}(layers[L-1](… act_0(layers[0](x)) …))`` through the compiled kernel.

    Args:
        x: ``(*, layers[0].in_features)``.
        layers: blocked :class:`~sao.nn.SparseLinear` layers, chained.
        activations: one name per layer from :data:`ACTIVATION_CODES`.
        indices: :func:`chain_indices` of ``layers`` (computed if not given).

    Raises:
        RuntimeError: if the kernel is unavailable (check :func:`load_chain_kernel` first).
    """
    if len(activations) != len(layers):
        raise ValueError(f"activations: give one per layer ({len(layers)}), got {len(activations)}")
    gathers, row_perms, final_inverse = indices if indices is not None else chain_indices(layers)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    params = chain_params(layers)
    if torch.is_grad_enabled() and any(p is not None and p.requires_grad for p in [x, *params]):
        y = SparseChainFunction.apply(x2, tuple(activations), gathers, row_perms, final_inverse, *params)
    else:  # nothing to differentiate: no saved outputs, two tiles per thread
        biases = [x2.new_empty(0) if b is None else b.detach() for b in params[1::2]]
        y = _require_kernel().forward(x2, [b.detach() for b in params[0::2]], biases, list(gathers),
                                      list(row_perms), final_inverse, _codes(activations), False)[0]
    return y.view(*lead, y.shape[-1])


class _CpuChain(ChainKernel):
    """The compiled CPU chain kernel (``csrc/chain_cpu.cpp``), built on first use."""

    def unavailable(self, device: torch.device) -> str | None:
        return None if load_chain_kernel() is not None else "the compiled CPU kernel is unavailable (see warnings)"

    def run(self, x: Tensor, layers: Sequence[Any], activations: Sequence[str],
            indices: tuple[list[Tensor], list[Tensor], Tensor] | None = None) -> Tensor:
        return sparse_chain(x, layers, activations, indices)


CHAIN_KERNELS.register("cpu", _CpuChain())
