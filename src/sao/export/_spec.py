"""What a sparse layer computes, in the terms every operator form uses (:class:`LayerSpec`), and the registry
of layer kinds that produce it (:data:`LAYER_KINDS`).

A sparse layer of sao is a dense layer (:class:`torch.nn.Linear` or :class:`torch.nn.Conv2d`) whose weight is
zero outside a mask. Where the mask is an SAO topology (``g`` dense blocks: block ``b`` connects the outputs
``row_perm[b·bm:(b+1)·bm]`` to the inputs ``col_perm[b·bn:(b+1)·bn]``, :class:`sao.topology.Topology`) the layer
also has a block form: its ``(g, bm, bn, *kernel)`` blocks. Masked layers of the pruning methods
(:class:`sao.nn.MaskedLinear`, :class:`sao.nn.MaskedConv2d`) get one when their mask happens to be block
structured (:func:`block_structure`), e.g. the masks of ``sao``'s own topologies.

**Coarsening.** Merging ``f`` consecutive blocks into one block-diagonal block of ``(f·bm, f·bn)`` (zeros off
the diagonal) gives the same function with ``g / f`` blocks (:meth:`LayerSpec.coarsened`): a sparser layer can
always run the way a less sparse one runs, which is how :func:`sao.export.deployable` keeps sparser models from
being slower (an operator runtime's per-block overhead can exceed the work saved by small blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from sao._registry import Registry
from sao.nn import MaskedConv2d, MaskedLinear, SparseConv2d, SparseLinear
from sao.nn.masked import kernel_connections
from sao.topology import components

__all__ = ["LAYER_KINDS", "LayerKind", "LayerSpec", "block_structure", "layer_kind", "layer_spec"]


@dataclass(frozen=True, eq=False)
class LayerSpec:
    """One sparse layer as plain tensors: its dense twin and, where it has one, its block form.

    Attributes:
        kind: ``"linear"`` or ``"conv"`` (the feature axis is the last one, or axis 1 of ``NCHW``).
        dense: a plain :class:`torch.nn.Linear` / :class:`torch.nn.Conv2d` computing the same function (its own
            copy of the weights: zero off the mask).
        blocks: ``(g, bm, bn)`` (linear) or ``(g, bm, bn, kh, kw)`` (conv), or ``None`` without a block form.
        row_perm, col_perm: the block order of the outputs and inputs (``None`` without a block form).
        no_blocks: why there is no block form (``None`` if there is one).
    """

    kind: str
    dense: nn.Module
    blocks: Tensor | None = None
    row_perm: Tensor | None = None
    col_perm: Tensor | None = None
    no_blocks: str | None = None

    @property
    def num_blocks(self) -> int:
        """``g`` (1 without a block form: the dense layer is one block)."""
        return 1 if self.blocks is None else self.blocks.shape[0]

    @property
    def in_features(self) -> int:
        """Input features (channels)."""
        return self.dense.weight.shape[1] * getattr(self.dense, "groups", 1)

    @property
    def out_features(self) -> int:
        """Output features (channels)."""
        return self.dense.weight.shape[0]

    @property
    def bias(self) -> Tensor | None:
        """The bias (in output order) or ``None``."""
        return self.dense.bias

    def coarsenings(self) -> list[int]:
        """Block counts this layer can run with: ``g``, ``g/2``, ``g/4``, … while an integer above 1."""
        counts, g = [], self.num_blocks
        while g > 1:
            counts.append(g)
            if g % 2:
                break
            g //= 2
        return counts

    def coarsened(self, groups: int) -> LayerSpec:
        """The same function with ``groups`` blocks (``groups`` divides ``g``): ``f = g / groups`` consecutive
        blocks merged into one block-diagonal ``(f·bm, f·bn)`` block, zeros elsewhere.

        Raises:
            ValueError: without a block form, or if ``groups`` does not divide ``g``.
        """
        if self.blocks is None:
            raise ValueError(f"this layer has no block form: {self.no_blocks}")
        g = self.num_blocks
        if groups < 1 or g % groups:
            raise ValueError(f"groups={groups} must divide the layer's {g} blocks")
        if groups == g:
            return self
        f = g // groups
        bm, bn, kernel = self.blocks.shape[1], self.blocks.shape[2], self.blocks.shape[3:]
        parts = self.blocks.reshape(groups, f, bm, bn, *kernel)
        merged = self.blocks.new_zeros(groups, f * bm, f * bn, *kernel)
        for i in range(f):
            merged[:, i * bm:(i + 1) * bm, i * bn:(i + 1) * bn] = parts[:, i]
        return replace(self, blocks=merged)


def block_structure(mask: Tensor) -> tuple[Tensor, Tensor, int] | None:
    """``(row_perm, col_perm, g)`` if the bool ``(out, in)`` connection ``mask`` is ``g`` equal dense blocks under
    row and column permutations (what an SAO topology is), else ``None``.

    Found from the connected components of the mask's bipartite graph (:func:`sao.topology.components`): each must
    be a complete ``bm x bn`` block, all of one shape.

    Example:
        >>> mask = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
        >>> rows, cols, g = block_structure(mask)
        >>> g, rows.tolist(), cols.tolist()
        (2, [0, 2, 1, 3], [0, 2, 1, 3])
    """
    mask = mask.detach().cpu().bool()
    found = components(mask)
    rows, cols = found.row_labels, found.col_labels
    g = found.count
    m, n = mask.shape
    if m % g or n % g or torch.bincount(rows, minlength=g).ne(m // g).any() or \
            torch.bincount(cols, minlength=g).ne(n // g).any():
        return None
    row_perm, col_perm = torch.sort(rows, stable=True).indices, torch.sort(cols, stable=True).indices
    blocks = mask[row_perm][:, col_perm].view(g, m // g, g, n // g)
    if not bool(blocks[torch.arange(g), :, torch.arange(g)].all()) or int(mask.sum()) != m * n // g:
        return None
    return row_perm, col_perm, g


@dataclass(frozen=True)
class LayerKind:
    """How to read one type of sparse layer: ``types`` it covers, ``kind`` (``"linear"``/``"conv"``) and ``spec``,
    which returns the :class:`LayerSpec` of a layer (a copy: later changes to the layer do not reach it)."""

    types: tuple[type[nn.Module], ...]
    kind: str
    spec: Callable[[nn.Module], LayerSpec]


def _topology_spec(layer: SparseLinear | SparseConv2d, kind: str) -> LayerSpec:
    """A :class:`SparseLinear`/:class:`SparseConv2d` (either backend): its topology gives the blocks."""
    with torch.no_grad():
        dense = layer.to_dense()
        blocks = layer.topology.dense_to_blocks(dense.weight.detach()).clone()
    return LayerSpec(kind, dense, blocks, layer.row_perm.detach().cpu().clone(),
                     layer.col_perm.detach().cpu().clone())


def _masked_spec(layer: MaskedLinear | MaskedConv2d, kind: str) -> LayerSpec:
    """A :class:`MaskedLinear`/:class:`MaskedConv2d`: a block form only if its mask is block structured."""
    with torch.no_grad():
        dense = layer.to_dense()
    if getattr(layer, "groups", 1) != 1:
        return LayerSpec(kind, dense, no_blocks=f"a grouped convolution (groups={layer.groups})")
    found = block_structure(kernel_connections(layer.weight_mask))
    if found is None:
        return LayerSpec(kind, dense, no_blocks="its mask is not an SAO block topology (equal dense blocks under "
                                                "row and column permutations)")
    row_perm, col_perm, g = found
    weight = dense.weight.detach()
    m, n = weight.shape[:2]
    blocks = weight[row_perm][:, col_perm].reshape(g, m // g, g, n // g, *weight.shape[2:])
    blocks = blocks[torch.arange(g), :, torch.arange(g)].clone()
    return LayerSpec(kind, dense, blocks, row_perm, col_perm)


LAYER_KINDS: Registry[LayerKind] = Registry("sparse layer kind", "sao.export.LAYER_KINDS", of=LayerKind)
LAYER_KINDS.register("sparse-linear", LayerKind((SparseLinear,), "linear", lambda m: _topology_spec(m, "linear")))
LAYER_KINDS.register("sparse-conv2d", LayerKind((SparseConv2d,), "conv", lambda m: _topology_spec(m, "conv")))
LAYER_KINDS.register("masked-linear", LayerKind((MaskedLinear,), "linear", lambda m: _masked_spec(m, "linear")))
LAYER_KINDS.register("masked-conv2d", LayerKind((MaskedConv2d,), "conv", lambda m: _masked_spec(m, "conv")))


def layer_kind(module: nn.Module) -> LayerKind | None:
    """The registered :class:`LayerKind` covering ``module``'s type, or ``None`` (not a sparse layer)."""
    for name in LAYER_KINDS:
        kind = LAYER_KINDS.get(name)
        if isinstance(module, kind.types):
            return kind
    return None


def layer_spec(module: nn.Module) -> LayerSpec:
    """The :class:`LayerSpec` of a sparse layer.

    Raises:
        TypeError: if no :data:`LAYER_KINDS` entry covers ``module``'s type.
    """
    kind = layer_kind(module)
    if kind is None:
        raise TypeError(f"{type(module).__name__} is not a sparse layer kind sao.export knows "
                        f"({', '.join(LAYER_KINDS.names())})")
    return kind.spec(module)
