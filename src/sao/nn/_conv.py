"""The convolution call shared by the sparse and masked conv layers (``nn.Conv2d._conv_forward``'s maths)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["conv2d_as"]


def conv2d_as(module: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None, groups: int = 1) -> Tensor:
    """``F.conv2d`` with the ``stride``, ``padding``, ``dilation`` and ``padding_mode`` of ``module``.

    ``module`` carries the attributes of an :class:`torch.nn.Conv2d` (including
    ``_reversed_padding_repeated_twice`` for the non-zero padding modes); ``groups`` is given
    separately because the blocked backend runs a grouped convolution on a plain layer.
    """
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        return F.conv2d(x, weight, bias, module.stride, 0, module.dilation, groups)
    return F.conv2d(x, weight, bias, module.stride, module.padding, module.dilation, groups)
