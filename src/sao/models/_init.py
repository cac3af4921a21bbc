"""Whole-model orthogonal initialisation, the starting point of every method in the paper."""

from __future__ import annotations

import torch
from torch import nn

from sao.init import delta_orthogonal_, orthogonal_

__all__ = ["orthogonal_init_"]


@torch.no_grad()
def orthogonal_init_(model: nn.Module, gain: float = 1.0, activation: str = "tanh",
                     generator: torch.Generator | None = None) -> nn.Module:
    """Give every plain ``nn.Linear`` an orthogonal and every ``nn.Conv2d`` a Delta-orthogonal weight.

    Biases are set to zero. Applied before :func:`sao.sparsify`, this makes the dense layers
    that stay dense (first and last) orthogonal too, as in the paper (§III-C, §III-D).
    Convolutions with even kernels get ``orthogonal_`` over the flattened kernel instead; with
    ``activation="relu"``, convolutions with an odd channel count (an image stem) get the plain,
    not the mirrored, Delta construction. Sparse
    layers (:mod:`sao.nn`) and pruned layers keep their weights.
    """
    for module in model.modules():
        # sao's pruned layers are MaskedLinear/MaskedConv2d (not nn.Linear/nn.Conv2d) and keep their weights; a
        # layer a user pruned with torch.nn.utils.prune exposes a computed ``weight``: writing it would do nothing
        if type(module) not in (nn.Linear, nn.Conv2d) or hasattr(module, "weight_orig"):
            continue
        w = module.weight
        if isinstance(module, nn.Conv2d) and all(k % 2 for k in module.kernel_size) and module.groups == 1:
            # the mirrored (ReLU) construction needs even channel counts; an image stem (3 or 1
            # channels in) takes the plain Delta construction instead
            odd = module.in_channels % 2 or module.out_channels % 2
            delta_orthogonal_(w, gain=gain, activation="tanh" if activation == "relu" and odd else activation,
                              generator=generator)
        else:
            orthogonal_(w, gain=gain, generator=generator)
        if module.bias is not None:
            module.bias.zero_()
    return model
