"""Kernel backends: the implementations behind the ``"compiled"`` routes, one per device type.

A blocked :class:`~sao.nn.SparseConv2d` on its ``"compiled"`` route calls the :class:`ConvKernel`
registered in :data:`CONV_KERNELS` under its input's device type (``"cpu"``: the C++ kernel of
``csrc/conv_cpu.cpp``; ``"cuda"``: the Triton kernels); a fused chain of blocked
:class:`~sao.nn.SparseLinear` layers (:class:`~sao.nn.FusedSparseChain`) calls the
:class:`ChainKernel` of :data:`CHAIN_KERNELS`. Registering a backend under another device type
(``"xpu"``, ``"mps"``) gives layers on that device a compiled route; registering one under
``"cpu"`` or ``"cuda"`` replaces the built-in one. :mod:`sao.nn.dispatch` asks the backend's
:meth:`~KernelBackend.unavailable` before it offers the route, still measures it against the
other routes under ``fusion="auto"``, and keeps every exactness rule (autocast, ``torch.func``,
forward AD, export and dtype mismatches run the plain route). Autograd is the layers' own: a
conv backend gives the forward and the two gradients; twice-differentiable calls recompute
through PyTorch ops. How to write one: ``docs/extending.md``, "A kernel backend".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sao._registry import Registry

__all__ = ["CHAIN_KERNELS", "CONV_KERNELS", "ChainKernel", "ConvKernel", "KernelBackend", "checked_output",
           "sparse_conv_reference"]

Pair = tuple[int, int]
Geometry = tuple[Pair, Pair, Pair]


def sparse_conv_reference(x: Tensor, blocks: Tensor, bias: Tensor | None, row_perm: Tensor, col_perm: Tensor,
                          geometry: Geometry, num_blocks: int) -> Tensor:
    """What the kernel computes, in PyTorch ops (differentiable to any order).

    Args:
        x: ``(N, C_in, H, W)``, already padded for a non-``"zeros"`` padding mode.
        blocks: ``(g·bm, bn, kh, kw)``; ``bias``: ``(C_out,)`` in output order, or ``None``.
        row_perm, col_perm: the layer's permutations (``(C_out,)``, ``(C_in,)``).
        geometry: ``(stride, padding, dilation)`` pairs (zero padding).
        num_blocks: ``g``.

    Returns:
        ``(N, C_out, OH, OW)``.
    """
    stride, padding, dilation = geometry
    z = F.conv2d(x.index_select(1, col_perm), blocks, None if bias is None else bias.index_select(0, row_perm),
                 stride, padding, dilation, num_blocks)
    return z.index_select(1, torch.argsort(row_perm))


class KernelBackend:
    """A compiled implementation for one device type; subclass :class:`ConvKernel` or :class:`ChainKernel`."""

    def unavailable(self, device: torch.device) -> str | None:
        """Why the backend cannot run on ``device`` now (e.g. it failed to build), or ``None`` when it can.

        May build the kernel (once per process). The default: always available.
        """
        return None


class ConvKernel(KernelBackend):
    """The blocked SAO convolution: ``y = P_rowᵀ · conv_groups(P_col · x)``, with its two gradients.

    Arguments shared by both methods: ``x`` ``(N, C_in, H, W)`` (padded already for a padding mode
    other than zeros), ``blocks`` ``(g·bm, bn, kh, kw)``, ``perms = (row_perm, col_perm)`` (``int64``,
    contiguous), ``geometry = (stride, padding, dilation)`` pairs (zero padding), ``num_blocks = g``.
    The reference semantics are :func:`sparse_conv_reference`.
    """

    def forward(self, x: Tensor, blocks: Tensor, bias: Tensor | None, perms: tuple[Tensor, Tensor],
                geometry: Geometry, num_blocks: int) -> Tensor:
        """``(N, C_out, OH, OW)``; ``bias`` ``(C_out,)`` in output order or ``None``."""
        raise NotImplementedError

    def backward(self, grad_y: Tensor, x: Tensor, blocks: Tensor, perms: tuple[Tensor, Tensor], geometry: Geometry,
                 num_blocks: int, needs: tuple[bool, bool]) -> Sequence[Tensor | None]:
        """``[grad_x, grad_blocks]``, each ``None`` where ``needs`` says it is not wanted (the bias's is summed
        by the caller)."""
        raise NotImplementedError


class ChainKernel(KernelBackend):
    """A chain of blocked ``SparseLinear`` layers and activations, in one call (differentiable)."""

    def run(self, x: Tensor, layers: Sequence[Any], activations: Sequence[str],
            indices: tuple[list[Tensor], list[Tensor], Tensor] | None = None) -> Tensor:
        """``act_{L-1}(layers[L-1](… act_0(layers[0](x)) …))`` for ``x`` ``(*, layers[0].in_features)``.

        ``layers``: blocked :class:`~sao.nn.SparseLinear` layers; ``activations``: one name per layer
        (``"identity"``, ``"tanh"``, ``"relu"``); ``indices``: their gathers, row permutations and final
        inverse (computed from ``layers`` when ``None``); differentiable in ``x`` and the parameters.
        """
        raise NotImplementedError


#: Convolution kernel backends by device type (``"cpu"``, ``"cuda"`` built in).
CONV_KERNELS: Registry[ConvKernel] = Registry("convolution kernel backend", "sao.nn.CONV_KERNELS", of=ConvKernel)
#: Chain kernel backends by device type (``"cpu"``, ``"cuda"`` built in).
CHAIN_KERNELS: Registry[ChainKernel] = Registry("chain kernel backend", "sao.nn.CHAIN_KERNELS", of=ChainKernel)


def checked_output(y: object, like: tuple[int, ...], reference: Tensor, backend: KernelBackend, *,
                   gradients_wanted: Callable[[], bool] | None = None) -> Tensor:
    """``y``, a backend's output, if it is a tensor of shape ``like`` with ``reference``'s dtype and device,
    and part of the autograd graph where ``gradients_wanted()`` (asked only of an output that is not: the
    common case costs nothing) — a detached output would drop the gradients silently.

    Raises:
        RuntimeError: naming the backend and what it returned instead (a backend that computes something
            else must fail loudly, never pass it on).
    """
    if not isinstance(y, Tensor) or tuple(y.shape) != tuple(like) or y.dtype != reference.dtype \
            or y.device != reference.device:
        got = (f"{tuple(y.shape)} {y.dtype} on {y.device}" if isinstance(y, Tensor) else type(y).__name__)
        raise RuntimeError(f"kernel backend {type(backend).__name__} returned {got}; expected {tuple(like)} "
                           f"{reference.dtype} on {reference.device}")
    if not y.requires_grad and gradients_wanted is not None and gradients_wanted():
        raise RuntimeError(f"kernel backend {type(backend).__name__} returned an output detached from autograd "
                           "where gradients are wanted")
    return y
