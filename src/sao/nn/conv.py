"""``SparseConv2d``: a 2-D convolution with kernel-level SAO sparsity (paper §IV-C, Fig. 5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from sao.nn._sparse import SparseLayerBase
from sao.topology import Topology

__all__ = ["SparseConv2d"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class SparseConv2d(SparseLayerBase):
    """A convolution whose ``(out_channels, in_channels)`` matrix of kernels has an SAO topology.

    Whole ``kh x kw`` kernels are absent (kernel-level sparsity): out-channel ``o`` reads
    exactly ``topology.row_degree`` input channels. The arguments mirror
    :class:`torch.nn.Conv2d` (``groups`` is the topology's business and not an argument).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, padding_mode:
            as in :class:`torch.nn.Conv2d` (``padding`` may also be ``"same"``/``"valid"``).
        degree, sparsity: the SAO degree of the channel graph, or its sparsity.
        bias: learn an additive bias (initialised to zero).
        init: ``"sao-delta"`` (sparse orthogonal centre tap, others zero) or ``"sao-eco"``
            (sparse orthogonal in the Fourier domain; use with :class:`ECOConv2d`'s dilation
            and circular padding for an orthogonal convolution).
        backend: ``"blocked"`` (channel permutation + grouped convolution with
            ``groups = num_blocks``: memory and FLOPs scale with the density) or
            ``"masked"`` (dense ``weight_orig`` times a fixed kernel mask).
        activation, gain, topology, generator, device, dtype: as in :class:`SparseLinear`.

    Example:
        >>> conv = SparseConv2d(16, 16, 3, padding=1, sparsity=0.75, generator=torch.Generator().manual_seed(0))
        >>> conv(torch.randn(2, 16, 8, 8)).shape, conv.mask.sum(1).unique().tolist()
        (torch.Size([2, 16, 8, 8]), [4])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, bias: bool = True, padding_mode: str = "zeros",
                 degree: int | None = None, sparsity: float | None = None, init: str = "sao-delta",
                 backend: str = "blocked", activation: str = "tanh", gain: float = 1.0,
                 topology: Topology | None = None, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode={padding_mode!r} is not supported; choose from {', '.join(PADDING_MODES)}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.dilation, self.padding_mode = _pair(stride), _pair(dilation), padding_mode
        kernel = _pair(kernel_size)
        # A reference Conv2d (on the meta device: no memory) resolves and validates padding
        # exactly as PyTorch does, including "same" with even kernels.
        ref = nn.Conv2d(1, 1, kernel, self.stride, padding, self.dilation, padding_mode=padding_mode, device="meta")
        self.padding = ref.padding
        self._reversed_padding_repeated_twice = ref._reversed_padding_repeated_twice
        self._setup_sparse(out_channels, in_channels, kernel, bias, degree, sparsity, init, backend, activation,
                           gain, topology, generator, {"device": device, "dtype": dtype})

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None, groups: int) -> Tensor:
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def forward(self, x: Tensor) -> Tensor:
        if self.backend == "masked":
            return self._conv(x, self.weight, self.bias, 1)
        g, bm, bn = self.blocks.shape[:3]
        bias = None if self.bias is None else self.bias.index_select(0, self.row_perm)
        z = self._conv(x.index_select(1, self.col_perm), self.blocks.reshape(g * bm, bn, *self.kernel_size), bias, g)
        return z.index_select(1, self.row_inverse)

    def to_dense(self) -> nn.Conv2d:
        """A plain :class:`torch.nn.Conv2d` computing the same function (a copy)."""
        device, dtype = self._factory()
        return self._copy_into(nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                         self.padding, self.dilation, bias=self.bias is not None,
                                         padding_mode=self.padding_mode, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, padding_mode={self.padding_mode!r}, "
                f"{self._sparse_repr()}")
