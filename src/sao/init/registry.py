"""Block initializers: how a sparse layer fills its ``(g, bm, bn, *kernel)`` blocks.

A sparse layer (:mod:`sao.nn`) stores only the dense blocks of its topology. Each entry of
:data:`LAYER_INITS` draws those blocks directly, without building the dense weight, so a
4096-wide layer initialises in milliseconds. The values equal what the matching dense
initializer (:func:`sao.init.sao_`, :func:`sao.init.sao_delta_`, ...) writes on the same
topology with the same generator state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from sao._registry import Registry
from sao.init.conv import centre_tap
from sao.init.eco import sao_eco_
from sao.init.linear import rg_normal_blocks, rg_uniform_blocks, sao_blocks
from sao.topology import Topology

__all__ = ["LAYER_INITS", "LayerInit", "get_layer_init"]

BlockDraw = Callable[[Topology, tuple[int, ...], float, torch.Generator | None], Tensor]


@dataclass(frozen=True)
class LayerInit:
    """How to fill a sparse layer's blocks.

    Attributes:
        draw: ``(topology, kernel_size, gain, generator) -> float64 (g, bm, bn, *kernel_size)``.
        kernel_dims: 0 for linear weights, 2 for conv kernels.
        mirrored: which topologies the init takes: ``"for-relu"`` (mirrored exactly when the
            activation is ReLU: the SAO constructions), ``"never"`` (plain only) or ``"any"``.
        kernel_rule: ``"odd"`` (needs a centre tap), ``"square"`` or ``"any"`` kernel sides.
    """

    draw: BlockDraw
    kernel_dims: int
    mirrored: str = "any"
    kernel_rule: str = "any"

    def topology_kind(self, relu: bool) -> bool | None:
        """The ``mirrored`` argument of :func:`sao.topology.resolve_topology` for this init."""
        return {"for-relu": relu, "never": False, "any": None}[self.mirrored]

    def check_kernel(self, kernel_size: tuple[int, ...]) -> None:
        """Raise ``ValueError`` at once if the init cannot fill kernels of this size."""
        if self.kernel_rule == "odd" and any(side % 2 == 0 for side in kernel_size):
            raise ValueError(f"this init needs odd kernel sides (a centre tap), got kernel_size={kernel_size}")
        if self.kernel_rule == "square" and len(set(kernel_size)) > 1:
            raise ValueError(f"this init needs a square kernel, got kernel_size={kernel_size}")


LAYER_INITS: Registry[LayerInit] = Registry("layer init", "sao.init.registry.LAYER_INITS")


def get_layer_init(name: str, kernel_dims: int) -> LayerInit:
    """The init called ``name`` for a layer with ``kernel_dims`` kernel axes (clear error otherwise)."""
    entry = LAYER_INITS.get(name)
    if entry.kernel_dims != kernel_dims:
        fitting = [n for n in LAYER_INITS.names() if LAYER_INITS.get(n).kernel_dims == kernel_dims]
        raise ValueError(f"init={name!r} does not fit a layer with {kernel_dims} kernel dims; "
                         f"choose from {', '.join(fitting)}")
    return entry


def _centre(blocks: Tensor, kernel_size: tuple[int, ...]) -> Tensor:
    """Put ``(g, bm, bn)`` blocks at the centre tap of zero ``(g, bm, bn, kh, kw)`` kernels."""
    out = blocks.new_zeros(*blocks.shape, *kernel_size)
    out[(..., *centre_tap(kernel_size))] = blocks
    return out


def _sao_draw(topology: Topology, kernel_size: tuple[int, ...], gain: float,
              generator: torch.Generator | None) -> Tensor:
    return gain * sao_blocks(topology, generator)


def _rg_normal_draw(topology: Topology, kernel_size: tuple[int, ...], gain: float,
                    generator: torch.Generator | None) -> Tensor:
    return gain * rg_normal_blocks(topology, generator=generator)


def _rg_uniform_draw(topology: Topology, kernel_size: tuple[int, ...], gain: float,
                     generator: torch.Generator | None) -> Tensor:
    return gain * rg_uniform_blocks(topology, generator=generator)


def _sao_delta_draw(topology: Topology, kernel_size: tuple[int, ...], gain: float,
                    generator: torch.Generator | None) -> Tensor:
    return _centre(gain * sao_blocks(topology, generator), kernel_size)


# Module-level functions, not lambdas: registry entries (and anything holding one) must pickle.
LAYER_INITS.register("sao", LayerInit(_sao_draw, 0, "for-relu"))
LAYER_INITS.register("rg-normal", LayerInit(_rg_normal_draw, 0))
LAYER_INITS.register("rg-uniform", LayerInit(_rg_uniform_draw, 0))
LAYER_INITS.register("sao-delta", LayerInit(_sao_delta_draw, 2, "for-relu", "odd"))

def _sao_eco_blocks(topology: Topology, kernel_size: tuple[int, ...], gain: float,
                    generator: torch.Generator | None) -> Tensor:
    # ECO mixes all taps through one inverse FFT, so build the (small) dense kernel and cut its blocks.
    # On the CPU also inside a `with torch.device("meta")` block (deferred initialisation).
    with torch.device("cpu"):
        dense = torch.empty(topology.out_features, topology.in_features, *kernel_size, dtype=torch.float64)
        return topology.dense_to_blocks(sao_eco_(dense, gain=gain, topology=topology, generator=generator))


LAYER_INITS.register("sao-eco", LayerInit(_sao_eco_blocks, 2, "never", "square"))
