"""The plain modules a deployable model is built from: gathers, layout changes and the block products.

Each is a few export-friendly PyTorch ops (``index_select``, ``reshape``, ``transpose``, ``matmul``): no custom
autograd Function, no compiled kernel, no per-call decision. The feature-major layout of a chain of linear
layers is ``(1, F, N)``: ``N`` the rows (batch and any other leading dims) on the last axis, so a gather of
features copies contiguous rows and a grouped ``Conv1d`` with kernel 1 is the block product.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["BlockMatmul", "BlockMatmulConv1x1", "FromFeatureMajor", "Gather", "Standalone", "ToFeatureMajor"]


class Gather(nn.Module):
    """``x.index_select(axis, index)``: position ``k`` of ``axis`` takes position ``index[k]`` of the input.

    Shapes: any input with ``x.shape[axis] == len(index)`` → the same shape.
    """

    def __init__(self, axis: int, index: Tensor) -> None:
        super().__init__()
        self.axis = axis
        self.register_buffer("index", index.detach().to(torch.long).clone())

    def forward(self, x: Tensor) -> Tensor:
        return x.index_select(self.axis, self.index)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, size={self.index.numel()}"


class ToFeatureMajor(nn.Module):
    """``(..., F)`` → feature-major ``(1, F, N)`` with ``N`` the product of the leading dims (a transpose)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(1, -1, x.shape[-1]).transpose(1, 2)


class FromFeatureMajor(nn.Module):
    """Feature-major ``(1, F, N)`` → ``(..., F)`` with the leading dims of ``ref`` (a tensor of the canonical
    layout, ``(..., F')``, of any rank ≥ 1: an unbatched ``(F',)`` gives ``(F,)``); for a 2-d ``ref`` the
    leading dim is ``N`` itself (no shape arithmetic). ``rank`` is the rank seen when traced (informative only:
    the rank of ``ref`` at run time decides)."""

    def __init__(self, rank: int | None = None) -> None:
        super().__init__()
        self.rank = rank

    def forward(self, z: Tensor, ref: Tensor) -> Tensor:
        y = z.transpose(1, 2)
        if ref.dim() == 2:
            return y.squeeze(0)
        return y.reshape(*ref.shape[:-1], z.shape[1])

    def extra_repr(self) -> str:
        return f"rank={self.rank}"


class BlockMatmul(nn.Module):
    """The block product of a linear layer on feature-major inputs: ``(1, g·bn, N)`` → ``(1, g·bm, N)``.

    One batched ``matmul`` ``(g, bm, bn) @ (g, bn, N)`` plus the bias ``(g, bm, 1)`` (in block order); the input
    must already hold the features in block order (the gather before it is separate, so it can be folded).
    """

    def __init__(self, blocks: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        g, bm, _ = blocks.shape
        self.blocks = nn.Parameter(blocks.detach().clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().reshape(g, bm, 1).clone(),
                                                           requires_grad=False)

    def forward(self, z: Tensor) -> Tensor:
        g, bm, bn = self.blocks.shape
        y = torch.matmul(self.blocks, z.reshape(g, bn, -1))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(1, g * bm, -1)

    def extra_repr(self) -> str:
        g, bm, bn = self.blocks.shape
        return f"blocks={g}x({bm}x{bn}), bias={self.bias is not None}"


class BlockMatmulConv1x1(nn.Module):
    """The block product of a 1x1 convolution: ``(B, g·bn, H, W)`` → ``(B, g·bm, H', W')`` by one broadcast
    ``matmul`` ``(g, bm, bn) @ (B, g, bn, H'·W')`` (after the stride's subsampling), bias ``(g, bm, 1)``."""

    def __init__(self, blocks: Tensor, bias: Tensor | None, stride: tuple[int, int]) -> None:
        super().__init__()
        g, bm, bn = blocks.shape[:3]
        self.stride = tuple(stride)
        self.blocks = nn.Parameter(blocks.detach().reshape(g, bm, bn).clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().reshape(g, bm, 1).clone(),
                                                           requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        g, bm, bn = self.blocks.shape
        if self.stride != (1, 1):
            x = x[:, :, ::self.stride[0], ::self.stride[1]]
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        y = torch.matmul(self.blocks, x.reshape(b, g, bn, h * w))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(b, g * bm, h, w)

    def extra_repr(self) -> str:
        g, bm, bn = self.blocks.shape
        return f"blocks={g}x({bm}x{bn}), stride={self.stride}, bias={self.bias is not None}"


class Standalone(nn.Module):
    """One sparse layer in an operator form, with its own gathers and layout changes (canonical in and out).

    Used where permutations cannot be folded into neighbours: inside modules whose ``forward`` cannot be traced
    symbolically. Keeps the sizes a caller may read (``in_features``/``out_features`` or ``in_channels``/
    ``out_channels``) and the dense ``weight`` and ``bias``.

    Args:
        core: the block product (or the dense layer).
        in_index: gather of the inputs into the core's order (``None``: none).
        out_index: gather of the core's outputs back to the canonical order (``None``: none).
        feature_major: the core works on ``(1, F, N)`` (linear block forms).
        weight, bias: the dense weight and bias, for callers that read them.
        kind: ``"linear"`` or ``"conv"``.
    """

    def __init__(self, core: nn.Module, in_index: Tensor | None, out_index: Tensor | None, feature_major: bool,
                 weight: Tensor, bias: Tensor | None, kind: str) -> None:
        super().__init__()
        self.core, self.feature_major, self.kind = core, feature_major, kind
        axis = 1 if (feature_major or kind == "conv") else -1
        self.gather_in = None if in_index is None else Gather(axis, in_index)
        self.gather_out = None if out_index is None else Gather(axis, out_index)
        # for callers that read them (not in the state_dict; the export leaves them out, unused)
        self.register_buffer("weight", weight.detach().clone(), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone(), persistent=False)
        out, inp = weight.shape[:2]
        names = ("in_channels", "out_channels") if kind == "conv" else ("in_features", "out_features")
        setattr(self, names[0], inp)
        setattr(self, names[1], out)

    def forward(self, x: Tensor) -> Tensor:
        ref = x
        if self.feature_major:
            x = ToFeatureMajor()(x)
        if self.gather_in is not None:
            x = self.gather_in(x)
        y = self.core(x)
        if self.gather_out is not None:
            y = self.gather_out(y)
        if self.feature_major:
            y = FromFeatureMajor(ref.dim())(y, ref)
        return y
