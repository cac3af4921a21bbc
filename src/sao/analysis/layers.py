"""Single layers and stacks drawn with any registered sparsify method, as float64 matrices."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sao.methods import METHODS, connection_mask, sparsify

__all__ = ["check_methods", "method_stack", "method_weight"]


def method_stack(method: str, width: int, depth: int, degree: int | None = None, sparsity: float | None = None,
                 activation: str = "tanh", generator: torch.Generator | None = None) -> list[tuple[Tensor, Tensor]]:
    """``depth`` square ``width`` layers made sparse together by ``method`` (global methods see all).

    Returns a list of ``(weight, mask)``: float64 ``(width, width)`` weights and bool masks.
    """
    net = nn.Sequential(*[nn.Linear(width, width, bias=False, dtype=torch.float64) for _ in range(depth)])
    sparsify(net, method, degree=degree, sparsity=sparsity, backend="masked", exclude="none",
             activation=activation, generator=generator, strict=True)
    return [(layer.weight.detach(), connection_mask(layer)) for layer in net]


def method_weight(method: str, out_features: int, in_features: int, degree: int | None = None,
                  sparsity: float | None = None, activation: str = "tanh",
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One ``(out, in)`` float64 weight and its bool mask drawn by ``method``."""
    net = nn.Sequential(nn.Linear(in_features, out_features, bias=False, dtype=torch.float64))
    sparsify(net, method, degree=degree, sparsity=sparsity, backend="masked", exclude="none",
             activation=activation, generator=generator, strict=True)
    return net[0].weight.detach(), connection_mask(net[0])


def check_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    """Fail at once, listing the choices, if any name is not a registered sparsify method."""
    for method in methods:
        METHODS.get(method)
    return methods
