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
    _sparsify_masked(net, method, degree, sparsity, activation, generator)
    return [(layer.weight.detach(), connection_mask(layer)) for layer in net]


def method_weight(method: str, out_features: int, in_features: int, degree: int | None = None,
                  sparsity: float | None = None, activation: str = "tanh",
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One ``(out, in)`` float64 weight and its bool mask drawn by ``method``."""
    net = nn.Sequential(nn.Linear(in_features, out_features, bias=False, dtype=torch.float64))
    _sparsify_masked(net, method, degree, sparsity, activation, generator)
    return net[0].weight.detach(), connection_mask(net[0])


def _sparsify_masked(net: nn.Sequential, method: str, degree: int | None, sparsity: float | None, activation: str,
                     generator: torch.Generator | None) -> None:
    """Every layer of ``net`` made sparse by ``method`` with a dense weight view (the masked backend where the
    method has a backend), strictly."""
    chosen = METHODS.get(method)
    target = {"degree": degree, "sparsity": sparsity} if chosen.needs_target else {}
    sparsify(net, method, **target, exclude="none", generator=generator, strict=True,
             **chosen.offered(backend="masked", activation=activation))


def check_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    """Fail at once, listing the choices, if any name is not a registered sparsify method."""
    for method in methods:
        METHODS.get(method)
    return methods
