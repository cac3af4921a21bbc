"""Initializers for convolution weights ``(c_out, c_in, kh, kw)``: Delta-orthogonal and SAO-Delta.

SAO sparsity in a convolution is kernel-level (paper §IV-C, Fig. 5): the ``(c_out, c_in)``
matrix of kernels has the SAO topology, and absent kernels are zero at every tap.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sao._random import check_activation, check_generator, draw_device
from sao._validation import as_real
from sao.init._random import check_weight, haar, mirror
from sao.init.linear import sao_
from sao.topology import Topology, resolve_topology

__all__ = ["check_conv_weight", "delta_orthogonal_", "sao_delta_"]


def check_conv_weight(tensor: Tensor, fn: str, odd: bool = False) -> bool:
    """Check a 4-D floating-point conv weight (with odd kernel sides if ``odd``); return whether it is empty.

    Errors as in :func:`sao.init._random.check_weight`, plus a ``ValueError`` for even kernel
    sides when ``odd``; an empty weight is not checked for those (the initializer returns it).
    """
    if check_weight(tensor, fn, 4, "a 4-D (c_out, c_in, kh, kw) weight"):
        return True
    if odd and (tensor.shape[2] % 2 == 0 or tensor.shape[3] % 2 == 0):
        raise ValueError(f"{fn} needs odd kernel sides so the kernel has a centre tap, got {tuple(tensor.shape[2:])}")
    return False


def centre_tap(kernel_size: tuple[int, ...]) -> tuple[int, ...]:
    """Index of the centre tap of a kernel with odd sides, ``((kh - 1) // 2, (kw - 1) // 2)``."""
    return tuple((side - 1) // 2 for side in kernel_size)


def _place_centre_(tensor: Tensor, matrix: Tensor) -> Tensor:
    tensor.zero_()
    tensor[(..., *centre_tap(tensor.shape[2:]))] = matrix.to(tensor.device, tensor.dtype)
    return tensor


@torch.no_grad()
def delta_orthogonal_(tensor: Tensor, gain: float = 1.0, activation: str = "tanh",
                      generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with a Delta-orthogonal kernel (Xiao et al., ICML 2018).

    A Haar (semi-)orthogonal ``H`` (``c_out x c_in``) times ``gain`` sits at the centre tap,
    every other tap is 0, so the convolution (any padding) maps ``x ↦ gain · H x`` per pixel
    and all its singular values equal ``gain``. With ``activation="relu"``,
    ``H = [[H0, -H0], [-H0, H0]]`` (channels must be even).

    Args:
        tensor: ``(c_out, c_in, kh, kw)`` weight with odd ``kh``, ``kw``.
        gain: multiplier.
        activation: ``"linear"``, ``"tanh"`` or ``"relu"``.
        generator: source of randomness.

    Returns:
        ``tensor``; an empty one (``numel() == 0``) unchanged, as in :mod:`torch.nn.init`.

    Raises:
        TypeError: if ``tensor`` is not floating point (integer, bool, complex) or ``gain`` is
            not a real number.
        ValueError: on a non-4-D weight, even kernel sides, or odd channel counts with
            ``activation="relu"``.

    Example:
        >>> w = delta_orthogonal_(torch.empty(8, 8, 3, 3), generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(w[:, :, 1, 1] @ w[:, :, 1, 1].T, torch.eye(8), atol=1e-6), float(w[:, :, 0, 0].abs().sum())
        (True, 0.0)
    """
    empty = check_conv_weight(tensor, "delta_orthogonal_", odd=True)
    check_generator(generator)
    mirrored = check_activation(activation)
    gain = as_real(gain, "gain")
    if empty:
        return tensor
    c_out, c_in = tensor.shape[:2]
    if mirrored:
        if c_out % 2 or c_in % 2:
            raise ValueError(f"activation='relu' needs even channel counts, got c_out={c_out}, c_in={c_in}")
        matrix = mirror(haar(1, c_out // 2, c_in // 2, generator)[0])
    else:
        matrix = haar(1, c_out, c_in, generator)[0]
    return _place_centre_(tensor, gain * matrix)


@torch.no_grad()
def sao_delta_(tensor: Tensor, degree: int | None = None, sparsity: float | None = None, gain: float = 1.0,
               activation: str = "tanh", topology: Topology | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with an SAO-Delta kernel (paper §IV-C, Fig. 5).

    The sparse orthogonal ``S`` of :func:`sao.init.sao_` (``c_out x c_in``, degree ``d``) sits
    at the centre tap, every other tap is 0. The kernel-level mask is ``topology.mask()``
    broadcast over ``kh x kw``: off-centre taps of kept kernels may learn, absent kernels stay
    zero. The dense limit (``degree = max(c_out, c_in)``) is Delta-orthogonal.

    Args:
        tensor: ``(c_out, c_in, kh, kw)`` weight with odd ``kh``, ``kw``.
        degree, sparsity, gain, activation, topology, generator: as in :func:`sao.init.sao_`.

    Returns:
        ``tensor``; an empty one (``numel() == 0``) unchanged, as in :mod:`torch.nn.init`.

    Raises:
        TypeError, ValueError: as in :func:`sao.init.sao_`, and on a non-4-D weight or even
            kernel sides.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> w = sao_delta_(torch.empty(16, 16, 3, 3), sparsity=0.75, generator=gen)
        >>> int((w.abs().sum((2, 3)) != 0).sum(1)[0])
        4
    """
    empty = check_conv_weight(tensor, "sao_delta_", odd=True)
    check_generator(generator)
    mirrored = check_activation(activation)
    gain = as_real(gain, "gain")
    if empty:
        return tensor
    topology = resolve_topology(tensor, degree, sparsity, topology, generator, mirrored)
    centre = torch.empty(tensor.shape[:2], dtype=torch.float64, device=draw_device(generator))
    sao_(centre, gain=gain, activation=activation, topology=topology, generator=generator)
    return _place_centre_(tensor, centre)
