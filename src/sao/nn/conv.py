"""``SparseConv2d``: a 2-D convolution with kernel-level SAO sparsity (paper §IV-C, Fig. 5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sao._validation import as_int, as_int_tuple
from sao.nn._conv import conv2d_as
from sao.nn._conv_kernel import sparse_conv
from sao.nn._shape import check_image
from sao.nn._sparse import SparseLayerBase
from sao.nn.dispatch import CONV_ROUTES, RoutedLayer, RouteTimer
from sao.topology import Topology

__all__ = ["SparseConv2d"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class SparseConv2d(RoutedLayer, SparseLayerBase):
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
        backend: ``"blocked"`` (only the blocks are stored: memory and FLOPs scale with the density) or
            ``"masked"`` (dense ``weight_orig`` times a fixed kernel mask).
        activation, gain, topology, generator, device, dtype: as in :class:`SparseLinear`.
        fusion: how the blocked backend runs (keyword only; one of :data:`sao.nn.FUSION_MODES`, also the
            ``fusion`` attribute): ``"auto"`` (default) takes, per call, the fastest of the routes in
            :data:`sao.nn.dispatch.CONV_ROUTES` measured on this machine for this input shape, dtype,
            device, batch size, grad mode and thread count — ``"plain"`` (channel gathers around a grouped
            convolution), ``"dense"`` (one dense convolution with the scattered weight) or ``"compiled"``
            (the compiled SAO convolution: permutations folded into its loads and stores); all compute the
            same function (to float rounding). ``"off"`` and ``"fused"`` run ``"plain"``; ``"compiled"``
            forces the kernel (``ValueError`` where it cannot run the call). See ``docs/sparse-convolutions.md``.

    Attributes:
        blocks: (``"blocked"``) the parameter ``(g·bm, bn, kh, kw)``, the weight of the grouped
            convolution (``groups = g``) on the channels permuted by ``col_perm``: block ``b``
            is rows ``b·bm … (b+1)·bm`` (``block_view()`` gives ``(g, bm, bn, kh, kw)``). 4-D, so
            ``model.to(memory_format=torch.channels_last)`` works as for ``nn.Conv2d``.
        weight_orig, weight_mask: (``"masked"``) the dense parameter and the fixed kernel mask.

    Shapes:
        input ``(B, C_in, H, W)`` or unbatched ``(C_in, H, W)`` → output ``(B, C_out, H', W')``
        (or unbatched), ``H'``/``W'`` as in :class:`torch.nn.Conv2d`.

    Raises:
        sao.nn.InputShapeError: (``forward``) for inputs ``nn.Conv2d`` refuses (other channel
            counts or ranks); a ``ValueError`` and a ``RuntimeError``.

    Example:
        >>> conv = SparseConv2d(16, 16, 3, padding=1, sparsity=0.75, generator=torch.Generator().manual_seed(0))
        >>> conv(torch.randn(2, 16, 8, 8)).shape, conv.mask.sum(1).unique().tolist()
        (torch.Size([2, 16, 8, 8]), [4])
    """

    ROUTE_NAMES = CONV_ROUTES
    KERNEL = "conv"
    FEATURE_DIMS = 3

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, bias: bool = True, padding_mode: str = "zeros",
                 degree: int | None = None, sparsity: float | None = None, init: str = "sao-delta",
                 backend: str = "blocked", activation: str = "tanh", gain: float = 1.0,
                 topology: Topology | None = None, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
                 fusion: str = "auto") -> None:
        super().__init__()
        self.fusion = fusion
        self.timer = RouteTimer()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode={padding_mode!r} is not supported; choose from {', '.join(PADDING_MODES)}")
        self.in_channels = as_int(in_channels, "in_channels", minimum=1)
        self.out_channels = as_int(out_channels, "out_channels", minimum=1)
        self.stride, self.dilation = as_int_tuple(stride, "stride", 2, minimum=1), as_int_tuple(dilation, "dilation", 2,
                                                                                               minimum=1)
        self.padding_mode = padding_mode
        kernel = as_int_tuple(kernel_size, "kernel_size", 2, minimum=1)
        if not isinstance(padding, str):
            padding = as_int_tuple(padding, "padding", 2, minimum=0)
        # A reference Conv2d (on the meta device: no memory) resolves and validates padding
        # exactly as PyTorch does, including "same" with even kernels.
        ref = nn.Conv2d(1, 1, kernel, self.stride, padding, self.dilation, padding_mode=padding_mode, device="meta")
        self.padding = ref.padding
        self._reversed_padding_repeated_twice = ref._reversed_padding_repeated_twice
        self._setup_sparse(self.out_channels, self.in_channels, kernel, bias, degree, sparsity, init, backend,
                           activation, gain, topology, generator, {"device": device, "dtype": dtype})

    def _block_storage(self, topology: Topology) -> tuple[int, ...]:
        return (topology.out_features, topology.block_shape[1], *self.kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, self.in_channels, "SparseConv2d")
        if self.backend == "masked":
            return conv2d_as(self, x, self.weight, self.bias)
        return self._routed_forward(x)

    # ------------------------------------------------------------------ the blocked backend's routes

    def route_signature(self) -> tuple:
        return (self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding, self.dilation,
                self.padding_mode, self.num_blocks, self.bias is not None)

    def run(self, x: Tensor, route: str, blocks: Tensor, bias: Tensor | None) -> Tensor:
        """The blocked convolution of ``x`` with ``blocks`` (``self.blocks``' shape) and ``bias`` on ``route``
        (one of :data:`~sao.nn.dispatch.CONV_ROUTES`), without deciding or checking."""
        if route == "dense":
            return conv2d_as(self, x, self.dense_weight(blocks), bias)
        if route == "compiled":
            return self._compiled(x, blocks, bias)
        z = conv2d_as(self, x.index_select(-3, self.col_perm), blocks,
                      None if bias is None else bias.index_select(0, self.row_perm), self.num_blocks)
        return z.index_select(-3, self.row_inverse)

    def _compiled(self, x: Tensor, blocks: Tensor, bias: Tensor | None) -> Tensor:
        batched = x.dim() == 4
        x = x if batched else x.unsqueeze(0)
        padding = self.padding
        if self.padding_mode != "zeros" or isinstance(padding, str):  # "same"/"valid" and the other modes
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x, padding = F.pad(x, self._reversed_padding_repeated_twice, mode=mode), (0, 0)
        y = sparse_conv(x, blocks, bias, self.row_perm, self.col_perm, (self.stride, padding, self.dilation),
                        self.num_blocks)
        return y if batched else y.squeeze(0)

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
