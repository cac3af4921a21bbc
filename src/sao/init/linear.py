"""Initializers for fully-connected weights ``(out, in)``: orthogonal, SAO, RG-N, RG-U.

All follow ``torch.nn.init``: they fill the tensor in place under ``no_grad``, return it, and
take ``generator`` last. Random numbers are drawn in float64 on the generator's device (the
CPU by default) and copied into the tensor, so the same seed gives bit-identical weights on
every device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from sao._random import check_activation, check_generator, draw_device
from sao._validation import as_real
from sao.init._random import check_weight, haar, mirror
from sao.topology import Topology, resolve_topology

__all__ = [
    "fill_blocks_",
    "orthogonal_",
    "ramanujan_normal_",
    "ramanujan_uniform_",
    "rg_normal_blocks",
    "rg_uniform_blocks",
    "sao_",
    "sao_blocks",
]


def _check_matrix(tensor: Tensor, fn: str) -> bool:
    """Check a 2-D ``(out, in)`` floating-point weight; return whether it is empty (see :func:`check_weight`)."""
    return check_weight(tensor, fn, 2, "a 2-D (out, in) weight")


@torch.no_grad()
def orthogonal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with a Haar-random (semi-)orthogonal matrix (Saxe et al. 2014).

    Dimensions after the first are flattened, as in :func:`torch.nn.init.orthogonal_`:

    .. math::

        W W^\\top = g^2 I \\;(m \\le n), \\qquad W^\\top W = g^2 I \\;(m > n).

    Args:
        tensor: weight of at least 2 dimensions, ``(out, in, ...)``.
        gain: multiplier ``g``.
        generator: source of randomness.

    Returns:
        ``tensor``; an empty one (``numel() == 0``) unchanged, as in :mod:`torch.nn.init`.

    Raises:
        TypeError: if ``tensor`` is not a floating-point tensor (integer, bool and complex ones
            are refused) or ``gain`` is not a real number.
        ValueError: if ``tensor`` has fewer than 2 dimensions or ``gain`` is NaN or infinite.

    Example:
        >>> w = orthogonal_(torch.empty(3, 5), generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(w @ w.T, torch.eye(3), atol=1e-6)
        True
    """
    empty = check_weight(tensor, "orthogonal_", 2, "a tensor with at least 2 dimensions", at_least=True)
    check_generator(generator)
    gain = as_real(gain, "gain")
    if empty:
        return tensor
    rows, cols = tensor.shape[0], tensor[0].numel()
    return tensor.copy_((gain * haar(1, rows, cols, generator)[0]).view_as(tensor))


def fill_blocks_(tensor: Tensor, topology: Topology, blocks: Tensor) -> Tensor:
    """Write ``(g, bm, bn, *k)`` blocks into ``tensor`` (zero elsewhere) and return it.

    Scatters straight into the tensor through flat indices, so a 4096-wide layer is filled
    in milliseconds without a dense float64 intermediate.
    """
    if not tensor.is_contiguous():
        return tensor.copy_(topology.blocks_to_dense(blocks.to(tensor.device)))
    m, n = tensor.shape[:2]
    flat = tensor.view(m * n, -1)
    index = (topology.block_rows()[:, :, None] * n + topology.block_cols()[:, None, :]).flatten()
    flat.zero_()
    flat[index.to(tensor.device)] = blocks.reshape(index.numel(), -1).to(tensor.device, tensor.dtype)
    return tensor


def sao_blocks(topology: Topology, generator: torch.Generator | None = None) -> Tensor:
    """The float64 ``(g, bm, bn)`` blocks of an SAO weight on ``topology`` (paper §IV-C, Fig. 4).

    Each block is Haar (semi-)orthogonal with orthonormal rows (``bm <= bn``) or columns; for a
    mirrored topology it is ``[[B0, -B0], [-B0, B0]]`` with ``B0`` Haar of half the size
    (Burkholz & Dubatovka 2019; paper Eq. (5)).
    Disjoint supports make the whole matrix (semi-)orthogonal.
    """
    g, (bm, bn) = topology.num_blocks, topology.block_shape
    if topology.mirrored:
        return mirror(haar(g, bm // 2, bn // 2, generator))
    return haar(g, bm, bn, generator)


@torch.no_grad()
def sao_(tensor: Tensor, degree: int | None = None, sparsity: float | None = None, gain: float = 1.0,
         activation: str = "tanh", topology: Topology | None = None,
         generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with a sparse orthogonal SAO matrix (Esguerra et al. 2023, §IV-C).

    The support is a block-regular topology (:func:`sao.topology.ramanujan`); each block holds a
    Haar-random orthogonal slice, so disjoint supports give

    .. math::

        W W^\\top = g^2 I_m \\;(m \\le n), \\qquad W^\\top W = g^2 I_n \\;(m > n),

    with exactly ``degree`` non-zeros per smaller-side node. With ``activation="relu"`` the
    mirrored construction ``W = [[S0, -S0], [-S0, S0]]`` is used instead (Burkholz & Dubatovka 2019; paper Eq. (5)): not
    orthogonal itself, but a ReLU network fed ``[relu(u); relu(-u)]`` acts as the orthogonal
    chain ``S0`` on ``u``. ``degree = max(m, n)`` gives a dense orthogonal (or mirrored) matrix.

    Args:
        tensor: 2-D weight ``(out, in)``.
        degree: degree ``d`` of the smaller side's nodes (see :func:`sao.topology.valid_degrees`).
        sparsity: alternatively the fraction of zeros ``1 - d / max(m, n)``.
        gain: multiplier ``g`` (the paper uses 1.1 for tanh FNNs).
        activation: ``"linear"``, ``"tanh"`` or ``"relu"`` (mirrored construction).
        topology: use this support instead of drawing one; keep it to keep the mask fixed
            while training (``topology.mask()``).
        generator: source of randomness for the topology and the values.

    Returns:
        ``tensor``; an empty one (``numel() == 0``) unchanged, as in :mod:`torch.nn.init`
        (``degree``/``sparsity``/``topology`` are checked against the sizes, so not then).

    Raises:
        TypeError: on a non-floating-point tensor (integer, bool, complex), a ``degree`` that is
            not an integer, or a ``sparsity``/``gain`` that is not a real number.
        ValueError: on a non-2-D tensor, an invalid degree/sparsity (listing the nearest valid
            ones), an unknown activation, or a topology that does not fit.

    Example:
        >>> from sao.topology import ramanujan
        >>> gen = torch.Generator().manual_seed(0)
        >>> topo = ramanujan(256, 256, degree=4, generator=gen)
        >>> w = sao_(torch.empty(256, 256), topology=topo, generator=gen)
        >>> bool((w != 0).eq(topo.mask()).all()), torch.allclose(w @ w.T, torch.eye(256), atol=1e-6)
        (True, True)
    """
    empty = _check_matrix(tensor, "sao_")
    check_generator(generator)
    mirrored = check_activation(activation)
    gain = as_real(gain, "gain")
    if empty:
        return tensor
    topology = resolve_topology(tensor, degree, sparsity, topology, generator, mirrored)
    return fill_blocks_(tensor, topology, gain * sao_blocks(topology, generator))


def rg_normal_blocks(topology: Topology, unit_variance: bool = True,
                     generator: torch.Generator | None = None) -> Tensor:
    """Float64 ``(g, bm, bn)`` Gaussian blocks: ``N(0, 1/d)`` (or ``N(0, 1)`` if not ``unit_variance``)."""
    shape = (topology.num_blocks, *topology.block_shape)
    scale = 1 / math.sqrt(topology.degree) if unit_variance else 1.0
    return scale * torch.randn(shape, generator=generator, dtype=torch.float64, device=draw_device(generator))


def rg_uniform_blocks(topology: Topology, unit_variance: bool = True,
                      generator: torch.Generator | None = None) -> Tensor:
    """Float64 ``(g, bm, bn)`` uniform blocks: ``U(±sqrt(3/d))`` (or ``U(0, 1)`` if not ``unit_variance``)."""
    shape = (topology.num_blocks, *topology.block_shape)
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=draw_device(generator))
    return (2 * u - 1) * math.sqrt(3 / topology.degree) if unit_variance else u


def _fill_random_(tensor: Tensor, degree: int | None, sparsity: float | None, gain: float, unit_variance: bool,
                  topology: Topology | None, generator: torch.Generator | None, fn: str,
                  draw: Callable[..., Tensor]) -> Tensor:
    empty = _check_matrix(tensor, fn)
    check_generator(generator)
    gain = as_real(gain, "gain")
    if empty:
        return tensor
    topology = resolve_topology(tensor, degree, sparsity, topology, generator, mirrored=None)
    return fill_blocks_(tensor, topology, gain * draw(topology, unit_variance, generator))


@torch.no_grad()
def ramanujan_normal_(tensor: Tensor, degree: int | None = None, sparsity: float | None = None,
                      gain: float = 1.0, unit_variance: bool = True, topology: Topology | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
    """RG-N: Gaussian values on an SAO topology (paper §IV, the "topology only" control).

    Non-zeros are ``g · N(0, 1/d)`` so every smaller-side node has unit expected squared norm,
    like SAO; ``unit_variance=False`` gives the reference code's unscaled ``g · N(0, 1)``.
    Arguments as in :func:`sao_`.

    Example:
        >>> w = ramanujan_normal_(torch.empty(64, 64), degree=8, generator=torch.Generator().manual_seed(0))
        >>> int((w != 0).sum())
        512
    """
    return _fill_random_(tensor, degree, sparsity, gain, unit_variance, topology, generator, "ramanujan_normal_",
                         rg_normal_blocks)


@torch.no_grad()
def ramanujan_uniform_(tensor: Tensor, degree: int | None = None, sparsity: float | None = None,
                       gain: float = 1.0, unit_variance: bool = True, topology: Topology | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
    """RG-U: uniform values on an SAO topology.

    Non-zeros are ``g · U(-sqrt(3/d), sqrt(3/d))`` (variance ``1/d``, unit expected norm per
    smaller-side node); ``unit_variance=False`` gives the reference code's ``g · U(0, 1)``.
    Arguments as in :func:`sao_`.

    Example:
        >>> w = ramanujan_uniform_(torch.empty(64, 64), degree=8, generator=torch.Generator().manual_seed(0))
        >>> bool(w.abs().max() <= (3 / 8) ** 0.5)
        True
    """
    return _fill_random_(tensor, degree, sparsity, gain, unit_variance, topology, generator, "ramanujan_uniform_",
                         rg_uniform_blocks)
