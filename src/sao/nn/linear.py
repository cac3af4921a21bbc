"""``SparseLinear``: a fully-connected layer with a fixed SAO topology (paper §IV-C)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sao.nn._sparse import SparseLayerBase
from sao.topology import Topology

__all__ = ["SparseLinear", "blocked_linear"]


def blocked_linear(x: Tensor, blocks: Tensor, col_perm: Tensor, row_perm: Tensor, row_inverse: Tensor,
                   bias: Tensor | None = None) -> Tensor:
    """``y = x Wᵀ + b`` for a block-sparse ``W`` stored as its ``(g, bm, bn)`` blocks.

    Gathers the inputs into block order, multiplies each group with one batched matmul
    (``g · B · bm · bn`` multiply-adds instead of ``B · m · n``) and scatters the outputs
    back; ``bias`` (in output order) is folded into the matmul. Shapes: ``x`` ``(..., n)``,
    result ``(..., m)``.
    """
    g, bm, bn = blocks.shape
    lead, n = x.shape[:-1], x.shape[-1]
    xs = x.reshape(-1, n).index_select(1, col_perm).view(-1, g, bn).transpose(0, 1)
    if bias is None:
        z = torch.bmm(xs, blocks.transpose(1, 2))
    else:
        z = torch.baddbmm(bias.index_select(0, row_perm).view(g, 1, bm), xs, blocks.transpose(1, 2))
    return z.transpose(0, 1).reshape(-1, g * bm).index_select(1, row_inverse).view(*lead, g * bm)


class SparseLinear(SparseLayerBase):
    """A linear layer ``y = x Wᵀ + b`` whose ``W`` has a fixed sparse SAO topology.

    ``W`` is ``(out_features, in_features)``; every node on the smaller side has exactly
    ``degree`` connections and the sparsity is ``1 - degree / max(in, out)`` (SPEC §1).

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

    Attributes:
        weight: the dense ``(out, in)`` weight (a differentiable view; zero off the mask).
        mask: bool ``(out, in)`` mask; ``topology``: the :class:`~sao.topology.Topology`.

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
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._setup_sparse(out_features, in_features, (), bias, degree, sparsity, init, backend, activation, gain,
                           topology, generator, {"device": device, "dtype": dtype})

    def forward(self, x: Tensor) -> Tensor:
        if self.backend == "masked":
            return F.linear(x, self.weight, self.bias)
        return blocked_linear(x, self.blocks, self.col_perm, self.row_perm, self.row_inverse, self.bias)

    def to_dense(self) -> nn.Linear:
        """A plain :class:`torch.nn.Linear` computing the same function (a copy)."""
        device, dtype = self._factory()
        return self._copy_into(nn.Linear(self.in_features, self.out_features, self.bias is not None,
                                         device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._sparse_repr()}"
