"""``SOCConv2d``: the skew orthogonal convolution of Singla & Feizi (ICML 2021), used by LipConvNet (paper §III-D2).

Convolution with a skew kernel ``A = (M − M*)/2`` (:func:`skew_kernel`) is a skew-symmetric
operator, so ``exp(A)`` is orthogonal (Singla & Feizi 2021, Thm. 1). :class:`SOCConv2d` keeps an
unconstrained ``M``, scales ``A`` to ``A_n = correction · A / σ`` with ``σ`` a power-iteration
estimate of a spectral-norm bound, and evaluates the truncated series ``Σ_{i≤T} A_nⁱ x / i!``;
stride and channel changes are those of :class:`~sao.nn.ECOConv2d`. :data:`SOC_BOUNDS` names the
two choices of ``σ``: ``"certified"`` (default, ``‖A_n‖₂ ≤ correction``) and ``"upstream"`` (the
upstream code's, not a bound; reproduces the paper's numbers). The maths, the truncation error
bound and the measured norms: ``docs/orthogonal-conv.md`` (SOC).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sao._random import check_generator, draw_device
from sao._validation import as_int, as_real
from sao.nn._shape import InputShapeError, check_image
from sao.nn._stride import inner_channels, to_inner

__all__ = ["SOC_BOUNDS", "SOCConv2d", "skew_kernel"]

SOC_BOUNDS = ("certified", "upstream")


def skew_kernel(weight: Tensor) -> Tensor:
    """``A = (M − M*) / 2`` with ``M*`` the adjoint kernel (channel axes swapped, both spatial axes flipped).

    For a square odd kernel, cross-correlation with ``A`` and zero padding ``k // 2`` satisfies
    ``⟨A ⋆ x, y⟩ = −⟨x, A ⋆ y⟩`` for all ``x, y`` (a skew-symmetric operator).
    """
    return 0.5 * (weight - weight.transpose(0, 1).flip(2, 3))


def _reshapes(kernel: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four matrices of the Fantastic-Four bound (Singla & Feizi, ICLR 2021, Thm. 1)."""
    c_out, c_in, h, w = kernel.shape
    return (kernel.permute(0, 2, 1, 3).reshape(c_out * h, c_in * w),
            kernel.permute(0, 3, 1, 2).reshape(c_out * w, c_in * h),
            kernel.reshape(c_out, c_in * h * w),
            kernel.permute(0, 2, 3, 1).reshape(c_out * h * w, c_in))


def _normalise(v: Tensor) -> Tensor:
    return v / v.norm().clamp_min(torch.finfo(v.dtype).tiny)


class SOCConv2d(nn.Module):
    """A skew orthogonal convolution: ``y = crop(Σ_{i≤T} A_nⁱ/i! · pad(space_to_depth(x))) + b``.

    Args:
        in_channels: ``c_in``.
        out_channels: ``c_out``.
        kernel_size: odd ``k`` (square) of the skew kernel; "same" zero padding ``k // 2``.
        stride: ``s``; the input side must be a multiple of ``s`` (invertible space-to-depth).
        terms_train: ``T`` in training mode (paper: 5).
        terms_eval: ``T`` in evaluation mode (paper: 12).
        bias: learn an additive bias (initialised to zero).
        generator: source of all randomness (``M`` and the power-iteration start vectors).
        device, dtype: of the parameters and buffers.
        correction: the factor in ``A_n = correction · A / σ`` (upstream 0.7), in ``(0, 1]``.
        bound: ``"certified"`` (``σ`` includes ``√(hw)``: ``‖A_n‖₂ ≤ correction``) or
            ``"upstream"`` (the upstream code's ``σ``, no ``√(hw)``); see ``docs/orthogonal-conv.md``.

    Attributes:
        weight: the unconstrained parameter ``M`` of shape ``(C, C, k, k)``, drawn ``N(0, 1/C)``,
            ``C = max(c_out, c_in s²)``.
        sigma: buffer, the current scale ``σ`` (saved in the ``state_dict``).

    Shapes:
        input ``(B, c_in, H, W)`` with ``s | H, W`` → output ``(B, c_out, H/s, W/s)``; unbatched
        ``(c_in, H, W)`` → ``(c_out, H/s, W/s)``. Other inputs raise :class:`~sao.nn.InputShapeError`.

    Guarantees:
        The linear part is ``P_out · S_T · P_in`` with ``P_in`` an isometry, ``P_out`` a
        coordinate projection and ``S_T`` the ``T``-term Taylor polynomial of the orthogonal
        ``exp(A_n)``: every one of its ``min(numel(out), numel(in))`` singular values lies within
        ``Σ_{i>T} ‖A_n‖ⁱ/i!`` of 1 (see ``docs/orthogonal-conv.md``).

    Example:
        >>> soc = SOCConv2d(4, 8, stride=2, generator=torch.Generator().manual_seed(0))
        >>> soc(torch.randn(2, 4, 8, 8)).shape
        torch.Size([2, 8, 4, 4])
    """

    init_iters = 50
    """Power iterations at construction and in :meth:`reset_parameters`."""
    update_iters = 1
    """Warm-started power iterations per training-mode forward."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 terms_train: int = 5, terms_eval: int = 12, bias: bool = True,
                 generator: torch.Generator | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, correction: float = 0.7, bound: str = "certified") -> None:
        super().__init__()
        in_channels, out_channels = as_int(in_channels, "in_channels", minimum=1), as_int(out_channels, "out_channels",
                                                                                          minimum=1)
        kernel_size, stride = as_int(kernel_size, "kernel_size", minimum=1), as_int(stride, "stride", minimum=1)
        terms_train, terms_eval = as_int(terms_train, "terms_train", minimum=1), as_int(terms_eval, "terms_eval",
                                                                                        minimum=1)
        if kernel_size % 2 == 0:
            raise ValueError(f"SOC needs an odd kernel_size (a skew kernel with symmetric 'same' padding), "
                             f"got {kernel_size}")
        correction = as_real(correction, "correction", low=0, high=1, low_open=True)
        if bound not in SOC_BOUNDS:
            raise ValueError(f"bound={bound!r} is not supported; choose from {', '.join(SOC_BOUNDS)}")
        check_generator(generator)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.terms_train, self.terms_eval = terms_train, terms_eval
        self.correction, self.bound = float(correction), bound
        self.channels = inner_channels(in_channels, out_channels, stride)
        factory = {"device": device, "dtype": dtype}
        c, k = self.channels, kernel_size
        self.weight = nn.Parameter(torch.empty(c, c, k, k, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        for i, size in enumerate((c * k, c * k, c * k * k, c), start=1):
            self.register_buffer(f"power_u{i}", torch.empty(size, **factory))
        self.register_buffer("sigma", torch.ones((), **factory))
        self.reset_parameters(generator)

    @property
    def terms(self) -> int:
        """``T`` of the current mode: ``terms_train`` while training, else ``terms_eval``."""
        return self.terms_train if self.training else self.terms_eval

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Redraw ``M ~ N(0, 1/C)`` and the power-iteration vectors; recompute ``σ``; zero the bias."""
        check_generator(generator)
        where = draw_device(generator)
        c, k = self.channels, self.kernel_size
        draw = {"generator": generator, "device": where, "dtype": torch.float64}
        self.weight.copy_(torch.randn(c, c, k, k, **draw) / math.sqrt(c))
        for vector in self._power_vectors():
            vector.copy_(_normalise(torch.randn(vector.numel(), **draw)))
        self.update_sigma(self.init_iters)
        if self.bias is not None:
            self.bias.zero_()

    def _power_vectors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.power_u1, self.power_u2, self.power_u3, self.power_u4

    @torch.no_grad()
    def update_sigma(self, iters: int = 1) -> Tensor:
        """Run ``iters`` warm-started power iterations on the four reshapes of ``A``; store and return ``σ``.

        Each estimate ``σ_j = ‖R_jᵀ v‖`` (``v = R_j u / ‖R_j u‖``) increases towards ``‖R_j‖₂``
        from below.
        """
        iters = as_int(iters, "iters", minimum=1)
        kernel = skew_kernel(self.weight)
        estimates = []
        for matrix, vector in zip(_reshapes(kernel), self._power_vectors(), strict=True):
            u, w = vector, vector
            for _ in range(iters):
                w = matrix.T @ _normalise(matrix @ u)
                u = _normalise(w)
            vector.copy_(u)
            estimates.append(w.norm())
        sigma = torch.stack(estimates).min()
        if self.bound == "certified":
            sigma = sigma * math.sqrt(self.kernel_size * self.kernel_size)
        self.sigma.copy_(sigma.clamp_min(torch.finfo(sigma.dtype).tiny))
        return self.sigma

    def skew_weight(self) -> Tensor:
        """The scaled skew kernel ``A_n = correction · (M − M*) / (2σ)`` the layer exponentiates.

        Differentiable in ``M``; ``σ`` is the stored constant.
        """
        return skew_kernel(self.weight) * (self.correction / self.sigma)

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, self.in_channels, "SOCConv2d")
        if x.shape[-2] % self.stride or x.shape[-1] % self.stride:
            raise InputShapeError(f"SOCConv2d with stride={self.stride} needs H and W divisible by {self.stride}, "
                                  f"got input {tuple(x.shape)}")
        if x.dim() == 3:  # unbatched, as nn.Conv2d takes it
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if self.training:
            self.update_sigma(self.update_iters)
        kernel = self.skew_weight()
        z = to_inner(x, self.stride, self.channels)
        y = z
        for i in range(1, self.terms + 1):
            z = F.conv2d(z, kernel, padding=self.kernel_size // 2) / i
            y = y + z
        y = y[:, : self.out_channels]
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"terms_train={self.terms_train}, terms_eval={self.terms_eval}, inner_channels={self.channels}, "
                f"correction={self.correction}, bound={self.bound!r}, bias={self.bias is not None}")
