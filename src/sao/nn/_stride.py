"""Stride and channel changes of the orthogonal convolutions (ECO, SOC), shared private helpers.

Both layers run a square ``C x C`` orthogonal convolution on ``C = max(c_out, c_in s²)``
channels (Yu et al., ICLR 2022; paper §IV-C; ``docs/orthogonal-conv.md`` §3): the input goes
through an invertible space-to-depth ``(c_in, H, W) → (c_in s², H/s, W/s)`` (a permutation of
the entries), its channels are zero-padded up to ``C`` (an isometric embedding), and the first
``c_out`` output channels are kept (a coordinate projection). With an orthogonal ``C x C``
operator in the middle, every singular value of the composite is 1
(``min(numel(in), numel(out))`` of them).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["inner_channels", "to_inner"]


def inner_channels(in_channels: int, out_channels: int, stride: int) -> int:
    """``C = max(c_out, c_in · s²)``: the channel count the square orthogonal convolution runs on."""
    return max(out_channels, in_channels * stride * stride)


def _empty_space_to_depth(x: Tensor, stride: int) -> Tensor:
    """``F.pixel_unshuffle``'s result for an empty batch (it returns such inputs unchanged, torch 2.14)."""
    *lead, c, h, w = x.shape
    return x.reshape(*lead, c, h // stride, stride, w // stride, stride).movedim((-3, -1), (-4, -3)).reshape(
        *lead, c * stride * stride, h // stride, w // stride)


def to_inner(x: Tensor, stride: int, channels: int) -> Tensor:
    """Space-to-depth by ``stride`` (``F.pixel_unshuffle``; no-op for 1), then zero-pad the channels to ``channels``.

    Both steps are isometries: ``‖to_inner(x)‖ = ‖x‖`` for every ``x``.
    """
    if stride > 1:
        x = F.pixel_unshuffle(x, stride) if x.numel() else _empty_space_to_depth(x, stride)
    if x.shape[1] < channels:
        x = F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1]))
    return x
