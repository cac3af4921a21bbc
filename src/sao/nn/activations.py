"""Activations of the orthogonal convolutional networks: ``MaxMin`` (Anil, Lucas & Grosse, ICML 2019).

LipConvNet (Singla & Feizi, ICML 2021, §6) uses MaxMin after every SOC/ECO convolution
(paper §III-D2): it sorts each pair of channels, so it is 1-Lipschitz and its
Jacobian is a permutation matrix almost everywhere (gradient-norm preserving).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MaxMin"]


class MaxMin(nn.Module):
    """Split the channels into halves ``a, b`` and return ``cat[max(a, b), min(a, b)]``.

    Args:
        dim: the channel axis (default 1: ``(B, C, ...)``).

    Shapes:
        any ``(..., C, ...)`` with ``C`` even on ``dim`` → the same shape.

    Guarantees:
        Per element pair ``(a_i, b_i)`` the output is ``(a_i, b_i)`` or ``(b_i, a_i)``: the map
        preserves the norm (``‖MaxMin(x)‖ = ‖x‖``) and the multiset of values, and its gradient
        is that permutation (at ties ``a_i = b_i`` the identity, never a split).

    Raises:
        ValueError: if the channel count is odd.

    Example:
        >>> MaxMin()(torch.tensor([[1.0, 4.0, 3.0, 2.0]]))
        tensor([[3., 4., 1., 2.]])
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[self.dim]
        if channels % 2:
            raise ValueError(f"MaxMin needs an even number of channels on dim {self.dim}, got {channels} "
                             f"(input shape {tuple(x.shape)})")
        a, b = x.chunk(2, dim=self.dim)
        keep = a >= b
        return torch.cat([torch.where(keep, a, b), torch.where(keep, b, a)], dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
