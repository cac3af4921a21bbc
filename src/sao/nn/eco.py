"""``ECOConv2d``: an explicitly constructed orthogonal convolution (Yu et al., ICLR 2022), dense or SAO.

Paper §III-D4 and §IV-C; the maths in ``docs/orthogonal-conv.md`` §3. A ``k x k`` kernel
dilated by ``n/k`` with circular padding on an ``n x n`` input has, at every DFT frequency, one
of the ``k²`` matrices ``P(a, b)``; making them orthogonal makes the convolution orthogonal.
Stride ``s`` is an invertible space-to-depth ``(c, ns, ns) → (c s², n, n)`` followed by a
stride-1 ECO convolution; channel changes run the convolution on ``C = max(c_out, c_in s²)``
channels, zero-padding the input channels and keeping the first ``c_out`` outputs. Every step
is an isometry or a coordinate projection, so all singular values of the layer are 1 at
initialisation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sao._validation import as_int
from sao.nn._shape import check_image
from sao.nn._stride import inner_channels, to_inner
from sao.nn.conv import SparseConv2d

__all__ = ["ECOConv2d"]


class ECOConv2d(nn.Module):
    """An orthogonal convolution for a fixed input size, optionally SAO-sparse (SAO-ECO).

    Args:
        in_channels: ``c_in``.
        out_channels: ``c_out``.
        kernel_size: ``k`` (square), must divide ``input_size / stride``.
        input_size: side ``N`` of the (square) input feature map; fixed at construction
            because the dilation ``N / (s k)`` depends on it.
        stride: ``s``, must divide ``input_size``; done by space-to-depth.
        degree, sparsity: SAO degree or sparsity of the ``C x C`` channel graph; the default
            ``sparsity=0.0`` is a dense ECO convolution.
        bias: learn an additive bias (initialised to zero).
        backend, gain, generator, device, dtype: as in :class:`SparseConv2d`.

    Shapes:
        input ``(B, c_in, N, N)`` → output ``(B, c_out, N/s, N/s)``; unbatched ``(c_in, N, N)`` →
        ``(c_out, N/s, N/s)``. Other inputs raise :class:`~sao.nn.InputShapeError`.

    Example:
        >>> eco = ECOConv2d(16, 32, 3, input_size=18, stride=2, generator=torch.Generator().manual_seed(0))
        >>> eco(torch.randn(1, 16, 18, 18)).shape
        torch.Size([1, 32, 9, 9])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, input_size: int, stride: int = 1,
                 degree: int | None = None, sparsity: float | None = None, bias: bool = True,
                 backend: str = "blocked", gain: float = 1.0, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        in_channels, out_channels = as_int(in_channels, "in_channels", minimum=1), as_int(out_channels, "out_channels",
                                                                                          minimum=1)
        kernel_size, input_size = as_int(kernel_size, "kernel_size", minimum=1), as_int(input_size, "input_size",
                                                                                        minimum=1)
        stride = as_int(stride, "stride", minimum=1)
        if input_size % stride:
            raise ValueError(f"stride={stride} must divide input_size={input_size}")
        size = input_size // stride
        if size % kernel_size:
            raise ValueError(f"ECO needs kernel_size to divide the feature size after the stride: kernel_size="
                             f"{kernel_size} does not divide {size} (input_size={input_size}, stride={stride}); "
                             f"valid kernel sizes: {[k for k in range(1, size + 1) if size % k == 0]}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.input_size, self.stride = input_size, stride
        self.channels = inner_channels(in_channels, out_channels, stride)
        if degree is None and sparsity is None:
            sparsity = 0.0
        self.conv = SparseConv2d(self.channels, self.channels, kernel_size, padding="same",
                                 dilation=size // kernel_size, bias=bias, padding_mode="circular", degree=degree,
                                 sparsity=sparsity, init="sao-eco", backend=backend, activation="linear", gain=gain,
                                 generator=generator, device=device, dtype=dtype)

    def redrawn(self, *, degree: int | None = None, sparsity: float | None = None, backend: str = "blocked",
                gain: float = 1.0, generator: torch.Generator | None = None) -> ECOConv2d:
        """A new ECO layer of this one's configuration (channels, kernel, input size, stride, bias, device,
        dtype), drawn afresh: SAO-ECO at ``degree``/``sparsity``, dense when neither is given.

        Raises:
            ValueError: as the constructor (a degree the ``C x C`` channel graph cannot take).
        """
        weight = next(p for p in self.conv.parameters() if p.dim() == 4)
        return ECOConv2d(self.in_channels, self.out_channels, self.conv.kernel_size[0], self.input_size, self.stride,
                         degree=degree, sparsity=sparsity, bias=self.conv.bias is not None, backend=backend,
                         gain=gain, generator=generator, device=weight.device, dtype=weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, self.in_channels, "ECOConv2d", (self.input_size, self.input_size))
        if x.dim() == 3:  # unbatched, as nn.Conv2d takes it
            return self.forward(x.unsqueeze(0)).squeeze(0)
        return self.conv(to_inner(x, self.stride, self.channels))[:, : self.out_channels]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, stride={self.stride}, "
                f"inner_channels={self.channels}")
