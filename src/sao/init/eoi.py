"""EOI: exact sparse orthogonal initialization from random Givens rotations (Nowak et al., ICML 2024).

Nowak, Gniecki, Szatkowski & Tabor, "Sparser, Better, Deeper, Stronger: Improving Sparse
Training with Exact Orthogonal Initialization" (arXiv 2406.01755). Start from the (padded)
identity and compose random Givens rotations until the wanted number of non-zeros is reached.
Every rotation is orthogonal, so the result is exactly (semi-)orthogonal at any density, with a
random support. It is the strongest later method the SAO paper is compared against (SPEC §3).

How it is made fast (the paper's reference code applies one rotation at a time and recounts
``W != 0`` after each): rotations are applied in *rounds* of disjoint pairs, a random perfect
matching of the lines from one ``randperm``. Disjoint rotations commute, so a round is a batch
of index operations, and the non-zeros each pair adds are known beforehand from the supports
(``|S_i Δ S_j|``). The support is tracked as a boolean matrix, never read off ``W != 0``.
While lines are short the values are stored compressed (sorted column indices and values per
line, merged by a batched sort); once the longest line fills a quarter of its length they move
to a dense float64 matrix. Both forms do the same floating-point operations in the same order,
so the representation never changes a single bit of the result.

Random numbers are drawn in float64 on the generator's device and the matrix is built there
before being copied into the tensor, so a seed gives bit-identical weights on every dtype.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

from sao.init._random import check_generator, draw_device
from sao.init.conv import _place_centre_, check_conv_weight

__all__ = ["eoi_", "eoi_delta_", "eoi_delta_with_mask_", "eoi_target_nonzeros", "eoi_with_mask_"]

_DENSE_FROM = 0.25  # move to the dense form once the longest line fills this fraction of its length
_PATIENCE = 8  # batches without a fitting rotation before the smallest overshoot is accepted


# ------------------------------------------------------------------------------------------- arguments

def eoi_target_nonzeros(m: int, n: int, density: float | None = None, sparsity: float | None = None) -> int:
    """The number of non-zeros EOI aims for in an ``(m, n)`` weight: ``ceil(density · m · n)``.

    ``density · m · n`` within ``1e-9`` (relative) of a whole number counts as that number, so
    float noise such as ``0.07 * 100 = 7.000000000000001`` does not add a non-zero.

    Raises:
        ValueError: unless exactly one of ``density`` in ``(0, 1]`` and ``sparsity`` in
            ``[0, 1)`` is given, or if the density is below the minimum ``min(m, n) / (m n)``
            (that of the padded identity, the sparsest orthogonal matrix EOI can make).
        TypeError: if the given one is not a real number.

    Example:
        >>> eoi_target_nonzeros(100, 100, density=0.07), eoi_target_nonzeros(64, 256, sparsity=0.75)
        (700, 4096)
    """
    if (density is None) == (sparsity is None):
        raise ValueError(f"give exactly one of density and sparsity, got density={density!r}, sparsity={sparsity!r}")
    name, value = ("density", density) if sparsity is None else ("sparsity", sparsity)
    if not isinstance(value, Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if sparsity is None and not 0 < density <= 1:
        raise ValueError(f"density={density!r} is out of range; it must be in (0, 1]")
    if density is None:
        if not 0 <= sparsity < 1:
            raise ValueError(f"sparsity={sparsity!r} is out of range; it must be in [0, 1)")
        density = 1 - sparsity
    exact = float(density) * m * n
    nearest = round(exact)
    count = nearest if abs(exact - nearest) <= 1e-9 * max(1.0, exact) else math.ceil(exact)
    low = min(m, n)
    if count < low:
        raise ValueError(f"{name}={value!r} gives density {float(density):.6g}, below the minimum "
                         f"{low}/({m}*{n}) = {low / (m * n):.6g} that an orthogonal {m}x{n} matrix can have "
                         f"(the padded identity); use density >= {low / (m * n):.6g}")
    return min(count, m * n)


# ------------------------------------------------------------------------------------------- the lines

class _Lines:
    """The lines (along the larger side) of the matrix being rotated, with their exact supports.

    ``mask`` is ``(L, s + 1)`` bool whose last column is always False (the padding column of
    the compressed form) and ``sizes`` holds each line's support size. Values are compressed
    (``cols``, ``vals``: ``(L, K)`` sorted column indices padded with ``s``, and their values)
    until the longest line fills ``_DENSE_FROM`` of its length, then dense (``dense``: ``(L, s)``).
    """

    def __init__(self, big: int, small: int, device: torch.device, dense: bool) -> None:
        self.big, self.small = big, small
        diag = torch.arange(small, device=device)
        self.mask = torch.zeros(big, small + 1, dtype=torch.bool, device=device)
        self.mask[diag, diag] = True
        self.sizes = (torch.arange(big, device=device) < small).long()
        self.cols = torch.full((big, 1), small, dtype=torch.long, device=device)
        self.cols[diag, 0] = diag
        self.vals = self.sizes.double().unsqueeze(1)
        self.dense: Tensor | None = None
        if dense:
            self._to_dense()

    def _to_dense(self) -> None:
        full = self.vals.new_zeros(self.big, self.small + 1).scatter_(1, self.cols, self.vals)
        self.dense = full[:, : self.small]
        self.cols = self.vals = None

    def increases(self, a: Tensor, b: Tensor) -> Tensor:
        """Non-zeros that rotating lines ``a[k]`` and ``b[k]`` would add: ``|S_a Δ S_b|``."""
        return (self.mask[a] ^ self.mask[b]).sum(1)

    def unite(self, a: Tensor, b: Tensor) -> Tensor:
        """Give disjoint pairs of lines the union of their supports; return the non-zeros added."""
        union = self.mask[a] | self.mask[b]
        size = union.sum(1)
        added = 2 * size - self.sizes[a] - self.sizes[b]
        self.mask[a] = self.mask[b] = union
        self.sizes[a] = self.sizes[b] = size
        return added

    def rotate(self, a: Tensor, b: Tensor, angle: Tensor) -> None:
        """Rotate the values of disjoint pairs: ``x_a ← c x_a + s x_b``, ``x_b ← c x_b - s x_a``."""
        cos, sin = angle.cos().unsqueeze(1), angle.sin().unsqueeze(1)
        if self.dense is not None:
            xa, xb = self.dense[a], self.dense[b]
            self.dense[a] = cos * xa + sin * xb
            self.dense[b] = cos * xb - sin * xa
            return
        # merge the two sorted index lists; the stable sort puts a's copy of a shared column first
        keys, order = torch.cat([self.cols[a], self.cols[b]], 1).sort(dim=1, stable=True)
        va, vb = self.vals[a], self.vals[b]
        new_a = torch.cat([cos * va, sin * vb], 1).gather(1, order)
        new_b = torch.cat([-sin * va, cos * vb], 1).gather(1, order)
        shared = (keys[:, 1:] == keys[:, :-1]) & (keys[:, 1:] < self.small)
        for new in (new_a, new_b):  # the dense form's sums: (c x_a) + (s x_b) and (-s x_a) + (c x_b)
            new[:, :-1] = torch.where(shared, new[:, :-1] + new[:, 1:], new[:, :-1])
            new[:, 1:][shared] = 0.0
        keys[:, 1:][shared] = self.small
        keys, order = keys.sort(dim=1, stable=True)
        width = max(self.cols.shape[1], int((keys < self.small).sum(1).max()))
        if width > self.cols.shape[1]:
            pad = width - self.cols.shape[1]
            self.cols = torch.nn.functional.pad(self.cols, (0, pad), value=self.small)
            self.vals = torch.nn.functional.pad(self.vals, (0, pad))
        self.cols[a] = self.cols[b] = keys[:, :width]
        self.vals[a] = new_a.gather(1, order[:, :width])
        self.vals[b] = new_b.gather(1, order[:, :width])
        if width > _DENSE_FROM * self.small:
            self._to_dense()

    def values(self) -> Tensor:
        if self.dense is None:
            self._to_dense()
        return self.dense


# ------------------------------------------------------------------------------------------- the sampler

def _layers(a: Tensor, b: Tensor) -> list[Tensor]:
    """Split a sequence of rotations into layers of disjoint pairs that keep its order.

    Rotation ``t`` goes one layer after the last earlier rotation that shares a line with it,
    so applying the layers in turn gives exactly the sequential product (disjoint rotations
    commute). Returns the rotations' positions, layer by layer.
    """
    last: dict[int, int] = {}
    depth = []
    for x, y in zip(a.tolist(), b.tolist()):
        layer = max(last.get(x, -1), last.get(y, -1)) + 1
        last[x] = last[y] = layer
        depth.append(layer)
    depth_t = torch.tensor(depth, dtype=torch.long, device=a.device)
    order = depth_t.argsort(stable=True)
    return list(order.split(torch.bincount(depth_t).tolist())) if depth else []


def _apply(lines: _Lines, a: Tensor, b: Tensor, angle: Tensor, layers: list[Tensor], supports: bool = True,
           values: bool = True) -> Tensor:
    """Apply rotations layer by layer to the supports and/or values; return each one's added non-zeros."""
    added = torch.zeros(len(a), dtype=torch.long, device=a.device)
    for layer in layers:
        if layer.numel() == 0:
            continue
        if supports:
            added[layer] = lines.unite(a[layer], b[layer])
        if values:
            lines.rotate(a[layer], b[layer], angle[layer])
    return added


def _eoi_lines(big: int, small: int, target: int, generator: torch.Generator | None,
               dense_from_start: bool = False) -> tuple[Tensor, Tensor]:
    """Float64 ``(big, small)`` lines with orthonormal columns and their exact bool support.

    The paper's sequence: i.i.d. uniform pairs of distinct lines with angles ``U[0, 2π)``, applied
    until the support holds ``target`` entries. It is drawn in chunks of ``big`` rotations; each
    chunk's supports are grown first (layer by layer, giving every rotation's increase), the
    prefix that stays within the target is found, and only that prefix is applied to the
    values. If the next rotation would overshoot, the sequence continues by rejection: rotations
    that would overshoot are skipped, until one lands on the target. Should ``_PATIENCE``
    batches of ``big`` candidates hold none that fits (e.g. the square identity plus one entry:
    every rotation of it adds two), the candidate that overshoots least in the last batch is
    applied: ``target <= nnz <= target + small - 1``.
    """
    device = draw_device(generator)
    lines = _Lines(big, small, device, dense=dense_from_start)
    left = target - small

    def draw(count: int) -> tuple[Tensor, Tensor, Tensor]:
        a = torch.randint(big, (count,), generator=generator, device=device)
        b = torch.randint(big - 1, (count,), generator=generator, device=device)
        angle = 2 * math.pi * torch.rand(count, generator=generator, dtype=torch.float64, device=device)
        return a, b + (b >= a), angle

    while left > 0:  # the paper's sequence, one chunk at a time
        a, b, angle = draw(big)
        layers = _layers(a, b)
        mask, sizes = lines.mask.clone(), lines.sizes.clone()
        total = _apply(lines, a, b, angle, layers, values=False).cumsum(0)
        if int(total[-1]) < left:
            _apply(lines, a, b, angle, layers, supports=False)
            left -= int(total[-1])
            continue
        keep = int((total < left).sum())
        keep += int(total[keep]) == left  # the rotation that lands on the target exactly is kept
        lines.mask, lines.sizes = mask, sizes
        prefix = [layer[layer < keep] for layer in layers]
        left -= int(_apply(lines, a, b, angle, prefix).sum())
        break
    misses = 0
    while left > 0:  # rejection: skip rotations that would overshoot
        a, b, angle = draw(big)
        added = lines.increases(a, b)
        fits = ((added > 0) & (added <= left)).nonzero()
        if len(fits):
            stop = int(fits[0])
        else:
            misses += 1
            if misses < _PATIENCE:
                stop = len(a)
            else:  # accept the smallest overshoot, after the zero-increase rotations before it
                stop = int(torch.where(added > 0, added, added.max() + 1).argmin())
        take = torch.cat([(added[:stop] == 0).nonzero().squeeze(1), torch.tensor([stop], device=device)])
        take = take[take < len(a)]
        a, b, angle = a[take], b[take], angle[take]
        left -= int(_apply(lines, a, b, angle, _layers(a, b)).sum())
    return lines.values(), lines.mask[:, :small]


def _eoi(m: int, n: int, density: float | None, sparsity: float | None, gain: float,
         generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Float64 ``(m, n)`` EOI matrix times ``gain`` and its bool support, on the draw device."""
    target = eoi_target_nonzeros(m, n, density, sparsity)
    values, mask = _eoi_lines(max(m, n), min(m, n), target, generator)
    if m <= n:  # the lines are the columns
        values, mask = values.T, mask.T
    return gain * values, mask.contiguous()


# ------------------------------------------------------------------------------------------- initializers

@torch.no_grad()
def eoi_with_mask_(tensor: Tensor, density: float | None = None, sparsity: float | None = None,
                   gain: float = 1.0, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Fill ``tensor`` with an EOI sparse orthogonal matrix and return it with its exact support.

    EOI (Nowak et al., ICML 2024, arXiv 2406.01755): start from the padded identity
    ``W_0 = [I_m | 0]`` (``m <= n``) or ``[I_n ; 0]`` (``m > n``) and compose random Givens
    rotations ``G(i, j, θ)`` along the larger side, ``θ ~ U[0, 2π)``:

    .. math::

        W = g \\, W_0 \\, G_1 G_2 \\cdots G_T \\;(m \\le n), \\qquad
        W = g \\, G_T \\cdots G_1 W_0 \\;(m > n), \\qquad
        W W^\\top = g^2 I_m \\;\\text{or}\\; W^\\top W = g^2 I_n.

    A rotation of lines ``i, j`` makes both supports ``S_i ∪ S_j``; rotations are added until
    the support has ``t = ceil(density · m · n)`` entries (:func:`eoi_target_nonzeros`).
    **Guarantee:** ``t <= nnz <= t + min(m, n) - 1``. The sampler aims at ``t`` exactly (first
    fit in the last round, then a search for a rotation that fits); it overshoots only when no
    rotation it examines adds at most the missing count (e.g. the square identity plus one
    entry: every rotation of it adds two), and then by the smallest increase it found.

    The rotations come in rounds of disjoint pairs (a random perfect matching per round)
    instead of the paper's independent pairs; only the last round is cut short. Like the
    paper's construction, the support always contains the diagonal of the padded identity
    (supports only grow). The returned mask is the exact support; ``tensor != 0`` equals it up
    to exact cancellations, which have probability zero.

    Args:
        tensor: 2-D weight ``(out, in)``.
        density: fraction of non-zeros, in ``(0, 1]``, at least ``min(m, n) / (m n)``.
        sparsity: alternatively the fraction of zeros, ``1 - density``.
        gain: multiplier ``g``.
        generator: source of randomness (matchings, angles, endgame searches).

    Returns:
        ``(tensor, mask)``: the filled tensor and a bool ``(out, in)`` mask on its device.

    Raises:
        ValueError: on a non-2-D or empty tensor, on both or neither of density/sparsity, on a
            value out of range or below the minimum density.

    Note:
        Layout ``(out, in)``, as ``nn.Linear.weight``. :func:`eoi_` is the same draw without
        the mask.

    Example:
        >>> w, mask = eoi_with_mask_(torch.empty(256, 256, dtype=torch.float64), density=1 / 16,
        ...                          generator=torch.Generator().manual_seed(0))
        >>> int(mask.sum()) >= 4096, torch.equal(w != 0, mask)
        (True, True)
        >>> torch.allclose(w @ w.T, torch.eye(256, dtype=torch.float64), atol=1e-12)
        True
    """
    if not isinstance(tensor, Tensor) or tensor.dim() != 2 or tensor.numel() == 0:
        shape = tuple(getattr(tensor, "shape", ()))
        raise ValueError(f"eoi_ expects a non-empty 2-D (out, in) weight, got shape {shape}")
    check_generator(generator)
    values, mask = _eoi(*tensor.shape, density, sparsity, gain, generator)
    tensor.copy_(values.to(tensor.device))
    return tensor, mask.to(tensor.device)


@torch.no_grad()
def eoi_(tensor: Tensor, density: float | None = None, sparsity: float | None = None, gain: float = 1.0,
         generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with an EOI sparse orthogonal matrix (Nowak et al., ICML 2024).

    The :func:`torch.nn.init` form of :func:`eoi_with_mask_` (same draws, same tensor); use
    that one when training needs the exact support as a mask.

    .. math::

        W = g \\, W_0 \\, G_1 \\cdots G_T, \\qquad W W^\\top = g^2 I \\;(m \\le n;\\ \\text{transposed for } m > n).

    Args:
        tensor: 2-D weight ``(out, in)``.
        density, sparsity, gain, generator: as in :func:`eoi_with_mask_`.

    Returns:
        ``tensor``.

    Raises:
        ValueError: as in :func:`eoi_with_mask_`.

    Example:
        >>> w = eoi_(torch.empty(64, 128), sparsity=0.9, generator=torch.Generator().manual_seed(0))
        >>> int((w != 0).sum()) >= 820, torch.allclose(w @ w.T, torch.eye(64), atol=1e-5)
        (True, True)
    """
    return eoi_with_mask_(tensor, density, sparsity, gain, generator)[0]


@torch.no_grad()
def eoi_delta_with_mask_(tensor: Tensor, density: float | None = None, sparsity: float | None = None,
                         gain: float = 1.0, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Fill a conv weight with an EOI matrix at the centre tap and return it with its kernel mask.

    EOI-Delta (Nowak et al., ICML 2024, after Xiao et al.'s Delta-orthogonal init): the
    ``c_out x c_in`` EOI matrix ``E`` of :func:`eoi_with_mask_` (density counted over the
    kernel matrix, i.e. kernel-level) sits at the centre tap, every other tap is 0, so the
    convolution maps ``x ↦ g E x`` per pixel:

    .. math::

        W[:, :, (k_h - 1)/2, (k_w - 1)/2] = g E, \\qquad W[:, :, p, q] = 0 \\text{ elsewhere}.

    The mask is the support of ``E`` broadcast over ``kh x kw``: off-centre taps of kept kernels
    may learn from zero, absent kernels stay zero (as in :func:`sao.init.sao_delta_`).

    Args:
        tensor: ``(c_out, c_in, kh, kw)`` weight with odd ``kh``, ``kw``.
        density, sparsity, gain, generator: as in :func:`eoi_with_mask_`.

    Returns:
        ``(tensor, mask)``: the filled tensor and a bool ``(c_out, c_in, kh, kw)`` mask.

    Raises:
        ValueError: on a non-4-D weight, even kernel sides, or bad density/sparsity.

    Example:
        >>> w, mask = eoi_delta_with_mask_(torch.empty(16, 32, 3, 3), density=0.25,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> int(mask[:, :, 0, 0].sum()) >= 128, bool((w[:, :, 0, 0] == 0).all()), tuple(mask.shape)
        (True, True, (16, 32, 3, 3))
    """
    check_conv_weight(tensor, "eoi_delta_", odd=True)
    check_generator(generator)
    values, mask = _eoi(*tensor.shape[:2], density, sparsity, gain, generator)
    _place_centre_(tensor, values)
    kernel_mask = mask.to(tensor.device)[:, :, None, None].expand(tensor.shape).contiguous()
    return tensor, kernel_mask


@torch.no_grad()
def eoi_delta_(tensor: Tensor, density: float | None = None, sparsity: float | None = None, gain: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
    """Fill a conv weight ``(c_out, c_in, kh, kw)`` with EOI-Delta: an EOI matrix at the centre tap.

    The :func:`torch.nn.init` form of :func:`eoi_delta_with_mask_` (same draws, same tensor).

    .. math::

        W[:, :, (k_h - 1)/2, (k_w - 1)/2] = g E, \\qquad E E^\\top = I \\;(c_{out} \\le c_{in}).

    Args:
        tensor: ``(c_out, c_in, kh, kw)`` weight with odd ``kh``, ``kw``.
        density, sparsity, gain, generator: as in :func:`eoi_with_mask_`.

    Returns:
        ``tensor``.

    Raises:
        ValueError: as in :func:`eoi_delta_with_mask_`.

    Example:
        >>> w = eoi_delta_(torch.empty(8, 8, 3, 3), density=0.5, generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(w[:, :, 1, 1] @ w[:, :, 1, 1].T, torch.eye(8), atol=1e-6)
        True
    """
    return eoi_delta_with_mask_(tensor, density, sparsity, gain, generator)[0]
