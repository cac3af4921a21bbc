"""``SparseLinear``: a fully-connected layer with a fixed SAO topology (paper §IV-C)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sao._validation import as_int
from sao.nn._shape import check_features
from sao.nn._sparse import SparseLayerBase
from sao.nn.dispatch import RoutedLayer, RouteTimer
from sao.nn.kernels import CHAIN_KERNELS, checked_output
from sao.topology import Topology

__all__ = ["SparseLinear", "blocked_linear"]


OWN_BACKWARD_MIN_NUMEL = 1 << 19
"""Blocks with at least this many entries use :class:`_BlockMatmul`'s own backward.

Below it autograd's ``bmm`` backward is used: its transposed weight gradient costs one copy
into the parameter's layout, which for small blocks is cheaper than the ~60 µs a custom
autograd function adds per call; above it the copy dominates (1.35x slower at 4096/d=1024,
1.7x at 4096/d=2048, measured with ``benchmarks/probe_blocked_linear.py``).
"""


class _BlockMatmul(torch.autograd.Function):
    """``z = xs @ blocksᵀ (+ bias)`` per block, with the blocks' gradient written in their own layout.

    Shapes: ``xs`` ``(g, B, bn)``, ``blocks`` ``(g, bm, bn)`` (contiguous), ``bias`` ``(g, 1, bm)``
    or ``None`` → ``(g, B, bm)``. Autograd's own ``bmm`` backward would produce the blocks'
    gradient as a transposed ``(g, bn, bm)`` product, which ``AccumulateGrad`` then copies into the
    parameter's layout (up to 40 % of a step for large blocks). Here it is ``gradᵀ @ xs`` straight
    away. The backward is built from differentiable ops, so double backward and ``torch.func``
    transforms (``jacrev``, ``vmap``, via the generated vmap rule) work.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(xs: Tensor, blocks: Tensor, bias: Tensor | None) -> Tensor:
        transposed = blocks.transpose(1, 2)
        return torch.bmm(xs, transposed) if bias is None else torch.baddbmm(bias, xs, transposed)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor | None], output: Tensor) -> None:
        xs, blocks, bias = inputs
        ctx.save_for_backward(xs, blocks)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        xs, blocks = ctx.saved_tensors
        grad_xs = torch.bmm(grad, blocks) if ctx.needs_input_grad[0] else None
        grad_blocks = torch.bmm(grad.transpose(1, 2), xs) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(1, keepdim=True) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_xs, grad_blocks, grad_bias


def blocked_linear(x: Tensor, blocks: Tensor, col_perm: Tensor, row_perm: Tensor, row_inverse: Tensor,
                   bias: Tensor | None = None) -> Tensor:
    """``y = x Wᵀ + b`` for a block-sparse ``W`` stored as its ``(g, bm, bn)`` blocks.

    Gathers the inputs into block order, multiplies each group with one batched matmul
    (``g · B · bm · bn`` multiply-adds instead of ``B · m · n``) and scatters the outputs
    back; ``bias`` (in output order) is folded into the matmul. Shapes: ``x`` ``(..., n)``,
    result ``(..., m)`` (no shape check: :class:`SparseLinear` checks its input).
    """
    g, bm, bn = blocks.shape
    lead, n = x.shape[:-1], x.shape[-1]
    xs = x.reshape(-1, n).index_select(1, col_perm).view(-1, g, bn).transpose(0, 1)
    folded = None if bias is None else bias.index_select(0, row_perm).view(g, 1, bm)
    if blocks.numel() >= OWN_BACKWARD_MIN_NUMEL:
        z = _BlockMatmul.apply(xs, blocks, folded)
    else:  # autograd's bmm backward; its gradient copy is cheaper than a custom Function's overhead here
        transposed = blocks.transpose(1, 2)
        z = torch.bmm(xs, transposed) if folded is None else torch.baddbmm(folded, xs, transposed)
    return z.transpose(0, 1).reshape(-1, g * bm).index_select(1, row_inverse).view(*lead, g * bm)


class _Blocked(NamedTuple):
    """Given ``blocks`` and ``bias`` with a layer's permutations: what a chain kernel backend reads of a layer."""

    blocks: Tensor
    bias: Tensor | None
    col_perm: Tensor
    row_perm: Tensor
    row_inverse: Tensor


class SparseLinear(RoutedLayer, SparseLayerBase):
    """A linear layer ``y = x Wᵀ + b`` whose ``W`` has a fixed sparse SAO topology.

    ``W`` is ``(out_features, in_features)``; every node on the smaller side has exactly
    ``degree`` connections and the sparsity is ``1 - degree / max(in, out)`` (paper §IV-A, §IV-C).

    Args:
        in_features: ``n``.
        out_features: ``m``.
        degree: degree of the smaller side's nodes (see :func:`sao.topology.valid_degrees`).
        sparsity: alternatively the fraction of zero weights.
        bias: learn an additive bias (initialised to zero).
        init: ``"sao"`` (sparse orthogonal), ``"rg-normal"`` or ``"rg-uniform"``
            (see :data:`sao.init.registry.LAYER_INITS`).
        backend: ``"blocked"`` (stores and multiplies only the blocks: memory and FLOPs
            scale with the density) or ``"masked"`` (dense ``weight_orig`` times a fixed
            ``weight_mask``, the paper's way).
        activation: ``"linear"``, ``"tanh"`` or ``"relu"``; ``"relu"`` with ``init="sao"``
            uses the mirrored construction (even sizes and degree).
        gain: multiplier of the initial weights.
        topology: use this topology instead of drawing one.
        generator: source of randomness for the topology and the values.
        device, dtype: where and how to allocate the parameters.
        fusion: how the blocked backend runs (keyword only; one of :data:`sao.nn.FUSION_MODES`, also the
            ``fusion`` attribute): ``"auto"`` (default) takes, per call, the fastest of ``"plain"`` (the
            batched block matmul, :func:`blocked_linear`), ``"dense"`` (one ``F.linear`` with the
            scattered weight: faster at low sparsity) and ``"compiled"`` (the layer as a chain of one through
            the compiled chain kernel, :data:`sao.nn.CHAIN_KERNELS`, where it can run the call), measured on
            this machine per input shape, dtype, device, batch size, grad mode and thread count
            (:mod:`sao.nn.dispatch`); all compute the same function (to float rounding). ``"compiled"`` runs
            that route (``ValueError`` where it cannot run the call exactly); ``"off"`` and ``"fused"`` run
            ``"plain"``. Chains of these layers are
            fused by :class:`~sao.nn.FusedSequential`.

    Attributes:
        weight: the dense ``(out, in)`` weight (a differentiable view; zero off the mask).
        mask: bool ``(out, in)`` mask; ``topology``: the :class:`~sao.topology.Topology`.
        blocks: (``"blocked"``) the parameter, contiguous ``(g, bm, bn)``: block ``b`` maps the
            inputs ``col_perm[b·bn:(b+1)·bn]`` to the outputs ``row_perm[b·bm:(b+1)·bm]``.
        weight_orig, weight_mask: (``"masked"``) the dense parameter and the fixed mask.

    Shapes:
        input ``(*, in_features)`` → output ``(*, out_features)``, as :class:`torch.nn.Linear`
        (unbatched inputs, empty batches and extra leading dims included).

    Raises:
        TypeError: for a non-integer size or a non-real ``gain``.
        ValueError: for an invalid degree/sparsity (naming the nearest valid ones), init,
            backend or activation.
        sao.nn.InputShapeError: (``forward``) for an input whose last dim is not
            ``in_features`` — a ``ValueError`` and a ``RuntimeError`` like ``nn.Linear``'s.

    Example:
        >>> layer = SparseLinear(256, 256, degree=4, generator=torch.Generator().manual_seed(0))
        >>> w = layer.weight.detach()
        >>> torch.allclose(w @ w.T, torch.eye(256), atol=1e-5), int(layer.mask.sum(1).max())
        (True, 4)
    """

    def __init__(self, in_features: int, out_features: int, degree: int | None = None,
                 sparsity: float | None = None, bias: bool = True, init: str = "sao", backend: str = "blocked",
                 activation: str = "tanh", gain: float = 1.0, topology: Topology | None = None,
                 generator: torch.Generator | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, *, fusion: str = "auto") -> None:
        super().__init__()
        self.fusion = fusion
        self.timer = RouteTimer()
        in_features, out_features = as_int(in_features, "in_features", minimum=1), as_int(out_features, "out_features",
                                                                                          minimum=1)
        self.in_features, self.out_features = in_features, out_features
        self._setup_sparse(out_features, in_features, (), bias, degree, sparsity, init, backend, activation, gain,
                           topology, generator, {"device": device, "dtype": dtype})

    def _block_storage(self, topology: Topology) -> tuple[int, ...]:
        return (topology.num_blocks, *topology.block_shape)

    def forward(self, x: Tensor) -> Tensor:
        check_features(x, self.in_features, "SparseLinear")
        if self.backend == "masked":
            return F.linear(x, self.weight, self.bias)
        return self._routed_forward(x)

    ROUTE_NAMES = ("plain", "dense", "compiled")
    KERNEL = "chain"
    DETERMINISTIC = ("plain",)

    def route_signature(self) -> tuple:
        return (self.in_features, self.out_features, self.num_blocks, self.bias is not None)

    def run(self, x: Tensor, route: str, blocks: Tensor, bias: Tensor | None) -> Tensor:
        """The blocked layer on ``route`` (``"plain"``, ``"dense"`` or ``"compiled"``) with these ``blocks`` and
        ``bias``, without deciding or checking."""
        if route == "dense":
            return F.linear(x, self.dense_weight(blocks), bias)
        if route == "compiled":
            return self._compiled(x, blocks, bias)
        return blocked_linear(x, blocks, self.col_perm, self.row_perm, self.row_inverse, bias)

    def _compiled(self, x: Tensor, blocks: Tensor, bias: Tensor | None) -> Tensor:
        """The layer as a chain of one (identity activation) through the chain kernel backend of ``x``'s device:
        the gathers are folded into the kernel's loads and stores."""
        backend = CHAIN_KERNELS.get(x.device.type)
        layer = _Blocked(blocks, bias, self.col_perm, self.row_perm, self.row_inverse)
        y = backend.run(x, [layer], ("identity",))
        wanted = lambda: torch.is_grad_enabled() and any(  # noqa: E731
            t is not None and t.requires_grad for t in (x, blocks, bias))
        return checked_output(y, (*x.shape[:-1], self.out_features), x, backend, gradients_wanted=wanted)

    def to_dense(self) -> nn.Linear:
        """A plain :class:`torch.nn.Linear` computing the same function (a copy)."""
        device, dtype = self._factory()
        return self._copy_into(nn.Linear(self.in_features, self.out_features, self.bias is not None,
                                         device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._sparse_repr()}"
