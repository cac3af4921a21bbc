"""Initializers for ECO convolutions (Yu et al., ICLR 2022) and their SAO-sparse form, SAO-ECO.

An ECO kernel is defined in the Fourier domain: a ``k x k`` kernel whose ``k``-point 2-D DFT is
an orthogonal ``(c_out, c_in)`` matrix ``P(a, b)`` at every frequency ``(a, b)``. Applied with
dilation ``m`` and circular padding to an ``n x n`` image with ``n = m k``, the convolution
has at DFT frequency ``(u, v)`` exactly the matrix ``P(u mod k, v mod k)``, so it is orthogonal
(Sedghi, Gupta & Long, ICLR 2019; paper §III-D4, Eq. (6); ``docs/orthogonal-conv.md``).

Like :mod:`sao.init.linear`, random numbers are drawn in float64 on the generator's device and
the kernels are built there before being copied into the tensor, so a seed gives bit-identical
weights on every dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sao._random import check_generator
from sao._validation import as_int, as_real
from sao.init._random import haar
from sao.init.conv import check_conv_weight
from sao.init.linear import sao_blocks
from sao.topology import Topology, resolve_topology

__all__ = ["eco_", "eco_frequency_index", "sao_eco_"]

_IMAG_TOL = 1e-9


def eco_frequency_index(k: int) -> Tensor:
    """Which unique Fourier matrix each frequency ``(a, b)`` of a real ``k x k`` ECO kernel uses.

    A real kernel needs ``P(-a, -b) = conj P(a, b)`` (indices mod ``k``); with real orthogonal
    ``P`` the pair ``(a, b) ↔ (-a mod k, -b mod k)`` shares one matrix, and a self-conjugate
    frequency (``2a ≡ 2b ≡ 0 mod k``) has its own. The number of unique matrices is

    .. math::

        L = \\frac{k^2 + 1}{2} \\;(k \\text{ odd}), \\qquad L = \\frac{k^2}{2} + 2 \\;(k \\text{ even}).

    Matrices are numbered ``0 .. L-1`` in the row-major order of the first frequency of each pair.

    Args:
        k: kernel side, ``k >= 1``.

    Returns:
        ``(k, k)`` long tensor ``index`` with ``index[a, b] == index[-a % k, -b % k]``.

    Raises:
        TypeError: if ``k`` is not an integer.
        ValueError: if ``k`` is below 1.

    Example:
        >>> eco_frequency_index(3).tolist()
        [[0, 1, 1], [2, 3, 4], [2, 4, 3]]
    """
    k = as_int(k, "k (kernel side)", minimum=1)
    a = torch.arange(k)
    neg = (-a) % k
    flat = a[:, None] * k + a[None, :]
    conj = neg[:, None] * k + neg[None, :]
    return torch.unique(torch.minimum(flat, conj), return_inverse=True)[1]


def _num_unique(k: int) -> int:
    return (k * k + 1) // 2 if k % 2 else k * k // 2 + 2


def _eco_kernels(unique: Tensor, k: int) -> Tensor:
    """The real float64 ``(c_out, c_in, k, k)`` kernels whose ``k``-point DFT at ``(a, b)`` is ``unique[index[a, b]]``.

    ``unique`` is ``(L, c_out, c_in)``. One vectorised inverse 2-D DFT over the two frequency
    axes of the ``(k, k, c_out, c_in)`` spectrum gives
    ``K[:, :, x, y] = (1/k²) Σ_{a,b} P(a, b) e^{2πi(ax + by)/k}`` (``torch.fft.ifft2``'s default
    ``"backward"`` normalisation is the ``1/k²``).
    """
    spectrum = unique[eco_frequency_index(k).to(unique.device)]  # (k, k, c_out, c_in), P(a, b) at [a, b]
    kernels = torch.fft.ifft2(spectrum.to(torch.complex128), dim=(0, 1))
    # Conjugate-symmetric spectrum ⇒ real kernel; anything else is a bug in the frequency index.
    imag = float(kernels.imag.abs().max()) if kernels.numel() else 0.0
    assert imag < _IMAG_TOL, f"ECO kernel has an imaginary part of {imag:.3g}: the spectrum is not conjugate-symmetric"
    return kernels.real.permute(2, 3, 0, 1).contiguous()


def _kernel_side(tensor: Tensor, fn: str) -> int:
    """The side ``k`` of a non-empty conv weight's square kernel."""
    kh, kw = tensor.shape[2:]
    if kh != kw:
        raise ValueError(f"{fn} needs a square kernel (kh == kw), got kernel shape ({kh}, {kw})")
    return kh


@torch.no_grad()
def eco_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with an ECO kernel (explicitly constructed orthogonal convolution; Yu et al., ICLR 2022).

    Draws ``L`` Haar-random real (semi-)orthogonal ``(c_out, c_in)`` matrices ``P``, one per
    conjugate pair of ``k``-point DFT frequencies (:func:`eco_frequency_index`), and sets

    .. math::

        K[:, :, x, y] = \\frac{g}{k^2} \\sum_{a, b = 0}^{k-1} P(a, b)\\, e^{2\\pi i (a x + b y) / k},

    which is real because ``P(-a, -b) = P(a, b)``. A circular convolution with ``K`` dilated by
    ``m`` on an ``n x n`` image, ``n = m k``, has the matrix ``g P(u mod k, v mod k)`` at DFT
    frequency ``(u, v)``: all its singular values equal ``g`` (``min(c_out, c_in)`` per frequency
    when the channel counts differ). Exact orthogonality needs ``k | n``, dilation ``n / k`` and
    circular padding; with other settings the kernel is just a well-conditioned init.

    Args:
        tensor: ``(c_out, c_in, k, k)`` weight, square kernel, any ``k >= 1``; ``c_out`` and
            ``c_in`` may differ.
        gain: multiplier ``g``.
        generator: source of randomness.

    Returns:
        ``tensor``; an empty one (``numel() == 0``) unchanged, as in :mod:`torch.nn.init`.

    Raises:
        TypeError: if ``tensor`` is not floating point (integer, bool, complex) or ``gain`` is
            not a real number.
        ValueError: if ``tensor`` is not a 4-D weight with a square kernel.

    Note:
        Layout is ``(out, in, kh, kw)`` as in :class:`torch.nn.Conv2d`; PyTorch's
        cross-correlation conjugates the spectrum, which leaves the singular values unchanged.

    Example:
        >>> from sao.spectral import conv_singular_values
        >>> w = eco_(torch.empty(4, 4, 3, 3, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
        >>> s = conv_singular_values(w, input_size=6, dilation=2)
        >>> s.numel(), torch.allclose(s, torch.ones_like(s), atol=1e-12)
        (144, True)
    """
    empty = check_conv_weight(tensor, "eco_")
    check_generator(generator)
    gain = as_real(gain, "gain")
    if empty:
        return tensor
    k = _kernel_side(tensor, "eco_")
    c_out, c_in = tensor.shape[:2]
    unique = haar(_num_unique(k), c_out, c_in, generator)
    return tensor.copy_(gain * _eco_kernels(unique, k))


@torch.no_grad()
def sao_eco_(tensor: Tensor, degree: int | None = None, sparsity: float | None = None, gain: float = 1.0,
             topology: Topology | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with an SAO-ECO kernel (paper §IV-C; Yu et al., ICLR 2022 for ECO).

    As :func:`eco_`, but every one of the ``L`` unique Fourier matrices is a sparse orthogonal
    SAO matrix (:func:`sao.init.sao_`) on **one shared** topology ``T``, each with its own
    Haar-random block values. The inverse DFT acts on each ``(i, j)`` kernel separately, so

    .. math::

        K[i, j, :, :] = 0 \\quad \\text{for every } (i, j) \\notin \\operatorname{supp}(T),

    i.e. the sparsity is kernel-level (whole ``k x k`` kernels absent), exactly
    ``topology.sparsity``, while the circular convolution dilated by ``n / k`` stays exactly
    orthogonal (all singular values ``g``). The dense limit ``degree = max(c_out, c_in)`` is ECO.

    There is no ``activation`` argument: the ReLU doubling ``[[P0, -P0], [-P0, P0]]`` of
    :func:`sao.init.sao_` has singular values ``2σ(P0)`` and ``0``, so applying it to the ``P``
    matrices breaks the orthogonality ECO exists for (one of the reference code's faults; ECO
    networks use MaxMin instead of ReLU).

    Args:
        tensor: ``(c_out, c_in, k, k)`` weight, square kernel, any ``k >= 1``.
        degree: degree ``d`` of the smaller channel side (see :func:`sao.topology.valid_degrees`).
        sparsity: alternatively the fraction of absent kernels ``1 - d / max(c_out, c_in)``.
        gain: multiplier ``g``.
        topology: use this (non-mirrored) kernel-level support instead of drawing one; keep it
            to keep the mask fixed while training (``topology.mask()`` broadcast over ``k x k``).
        generator: source of randomness for the topology and the values.

    Returns:
        ``tensor``; an empty one (``numel() == 0``) unchanged, as in :mod:`torch.nn.init`.

    Raises:
        TypeError: on a non-floating-point tensor, a non-integer ``degree`` or a ``sparsity``/``gain``
            that is not a real number.
        ValueError: on a bad weight shape, an invalid degree/sparsity (listing the valid ones),
            a topology that does not fit, or a mirrored (ReLU) topology.

    Example:
        >>> from sao.spectral import conv_singular_values
        >>> gen = torch.Generator().manual_seed(0)
        >>> w = sao_eco_(torch.empty(8, 8, 3, 3, dtype=torch.float64), degree=2, generator=gen)
        >>> s = conv_singular_values(w, input_size=9, dilation=3)
        >>> int((w.abs().sum((2, 3)) != 0).sum()), bool((s - 1).abs().max() < 1e-9)
        (16, True)
    """
    empty = check_conv_weight(tensor, "sao_eco_")
    check_generator(generator)
    gain = as_real(gain, "gain")
    if empty:
        return tensor
    k = _kernel_side(tensor, "sao_eco_")
    topology = resolve_topology(tensor, degree, sparsity, topology, generator)
    if topology.mirrored:
        raise ValueError(f"sao_eco_ needs a plain topology (mirrored=False), got {topology}: the ReLU doubling of "
                         "the Fourier matrices breaks their orthogonality")
    blocks = torch.stack([sao_blocks(topology, generator) for _ in range(_num_unique(k))], dim=-1)  # (g, bm, bn, L)
    unique = topology.blocks_to_dense(blocks).permute(2, 0, 1)  # (L, c_out, c_in), one shared support
    kernels = gain * _eco_kernels(unique, k)
    # Off-support kernels have all-zero spectra and come out of the FFT as exact zeros already; the
    # mask makes that a guarantee (and +0.0 rather than -0.0) whatever FFT backend is in use.
    mask = topology.mask(device=kernels.device)[:, :, None, None]
    return tensor.copy_(torch.where(mask, kernels, torch.zeros((), dtype=kernels.dtype, device=kernels.device)))
