"""EOI: exact sparse orthogonal initialization from random Givens rotations (Nowak et al., ICML 2024).

Nowak, Gniecki, Szatkowski & Tabor, "Sparser, Better, Deeper, Stronger: Improving Sparse
Training with Exact Orthogonal Initialization" (arXiv 2406.01755): compose random Givens
rotations on the (padded) identity until the wanted number of non-zeros is reached, which gives
an exactly (semi-)orthogonal weight at any density, with a random support. Nowak et al. compare
EOI with SAO; here it is the strongest later baseline.

Offers :func:`eoi_` / :func:`eoi_with_mask_` (fully-connected), :func:`eoi_delta_` /
:func:`eoi_delta_with_mask_` (the same matrix at the centre tap of a conv kernel) and
:func:`eoi_target_nonzeros`. The rotation sequence we keep and how it is applied fast without
changing a bit of the result: ``docs/eoi.md``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sao._random import check_generator, draw_device
from sao._validation import as_int, as_real
from sao.init._random import check_weight
from sao.init.conv import centre_tap, check_conv_weight

__all__ = ["eoi_", "eoi_delta_", "eoi_delta_with_mask_", "eoi_target_nonzeros", "eoi_with_mask_"]

_DENSE_FROM = 0.25  # move to the dense form once the longest line fills this fraction of its length
_PATIENCE = 32  # batches without a fitting rotation before the smallest overshoot is accepted


# ------------------------------------------------------------------------------------------- arguments

def eoi_target_nonzeros(m: int, n: int, density: float | None = None, sparsity: float | None = None) -> int:
    """The number of non-zeros EOI aims for in an ``(m, n)`` weight: ``ceil(density · m · n)``.

    ``density · m · n`` within ``1e-9`` (relative) of a whole number counts as that number, so
    float noise such as ``0.07 * 100 = 7.000000000000001`` does not add a non-zero.

    Raises:
        ValueError: unless exactly one of ``density`` in ``(0, 1]`` and ``sparsity`` in
            ``[0, 1)`` is given, if ``m`` or ``n`` is below 1, or if the density is below the
            minimum ``min(m, n) / (m n)`` (that of the padded identity, the sparsest orthogonal
            matrix EOI can make).
        TypeError: if the given one is not a real number (``"0.5"``, ``True``), or ``m``/``n``
            not an integer.

    Example:
        >>> eoi_target_nonzeros(100, 100, density=0.07), eoi_target_nonzeros(64, 256, sparsity=0.75)
        (700, 4096)
    """
    m, n = as_int(m, "m", minimum=1), as_int(n, "n", minimum=1)
    if (density is None) == (sparsity is None):
        raise ValueError(f"give exactly one of density and sparsity, got density={density!r}, sparsity={sparsity!r}")
    if sparsity is None:
        name = "density"
        value = density = as_real(density, name, low=0.0, high=1.0, low_open=True)
    else:
        name = "sparsity"
        value = as_real(sparsity, name, low=0.0, high=1.0, high_open=True)
        density = 1 - value
    exact = density * m * n
    nearest = round(exact)
    count = nearest if abs(exact - nearest) <= 1e-9 * max(1.0, exact) else math.ceil(exact)
    low = min(m, n)
    if count < low:
        raise ValueError(f"{name}={value!r} gives density {density:.6g}, below the minimum "
                         f"{low}/({m}*{n}) = {low / (m * n):.6g} that an orthogonal {m}x{n} matrix can have "
                         f"(the padded identity); use density >= {low / (m * n):.6g}")
    return min(count, m * n)


# ------------------------------------------------------------------------------------------- the lines

class _Lines:
    """The lines (along the larger side) of the matrix being rotated, with their exact supports.

    Compressed form while lines are short: ``cols`` (``(L, K)`` sorted column indices, padded
    with ``s``) and ``vals``; the support is ``cols``. Dense form once the longest line fills
    ``_DENSE_FROM`` of its length (checked between chunks, :meth:`settle`): ``dense``
    (``(L, s)`` float64) and ``mask`` (``(L, s + 1)`` bool, last column always False).
    ``sizes`` holds each line's support size in both forms; ``mask`` is built on demand in the
    compressed form and kept up to date from then on.
    """

    def __init__(self, big: int, small: int, device: torch.device) -> None:
        self.big, self.small = big, small
        diag = torch.arange(small, device=device)
        self.sizes = (torch.arange(big, device=device) < small).long()
        self.cols = torch.full((big, 1), small, dtype=torch.long, device=device)
        self.cols[diag, 0] = diag
        self.vals = self.sizes.double().unsqueeze(1)
        self.width = 1  # columns of ``cols``/``vals`` in use; the rest is spare room, padded
        self.dense: Tensor | None = None
        self.mask: Tensor | None = None
        if _DENSE_FROM * small < 1:
            self._to_dense()

    def _build_mask(self) -> Tensor:
        if self.mask is None:
            self.mask = self.cols.new_zeros(self.big, self.small + 1, dtype=torch.bool)
            self.mask.scatter_(1, self.cols, True)
            self.mask[:, self.small] = False
        return self.mask

    def _to_dense(self) -> None:
        self._build_mask()
        full = self.vals.new_zeros(self.big, self.small + 1).scatter_(1, self.cols, self.vals)
        self.dense = full[:, : self.small]
        self.cols = self.vals = None

    def settle(self) -> None:
        """Move to the dense form if the longest line has outgrown the compressed one."""
        if self.dense is None and self.width > _DENSE_FROM * self.small:
            self._to_dense()

    def state(self) -> tuple:
        used = None if self.dense is not None else (self.cols[:, : self.width], self.vals[:, : self.width])
        fields = (*(used or (None, None)), self.dense, self.mask, self.sizes)
        return (self.width, *(None if f is None else f.clone() for f in fields))

    def restore(self, state: tuple) -> None:
        self.width, self.cols, self.vals, self.dense, self.mask, self.sizes = state

    def increases(self, a: Tensor, b: Tensor) -> Tensor:
        """Non-zeros that rotating lines ``a[k]`` and ``b[k]`` would add: ``|S_a Δ S_b|``."""
        mask = self._build_mask()
        if self.dense is not None:
            return (mask[a] ^ mask[b]).sum(1)
        common = mask.view(-1)[b.unsqueeze(1) * (self.small + 1) + self.cols[a, : self.width]].sum(1)
        return self.sizes[a] + self.sizes[b] - 2 * common

    def rotate(self, a: Tensor, b: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate disjoint pairs ``x_a ← c x_a + s x_b``, ``x_b ← c x_b - s x_a``; return the non-zeros added.

        Both lines of a pair get the union of their supports, which adds ``|S_a Δ S_b|``.
        """
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        before = self.sizes[a] + self.sizes[b]
        if self.dense is not None:
            union = self.mask[a] | self.mask[b]
            self.mask[a] = self.mask[b] = union
            self.sizes[a] = self.sizes[b] = union.sum(1)
            xa, xb = self.dense[a], self.dense[b]
            self.dense[a] = cos * xa + sin * xb
            self.dense[b] = cos * xb - sin * xa
            return 2 * self.sizes[a] - before
        # pairs in buckets of similar length (4x apart), so a few long lines do not pad all the others
        need = torch.maximum(self.sizes[a], self.sizes[b]).clamp(min=1)
        bucket = torch.ceil(torch.log2(need.double()) / 2).long().clamp(min=4)  # 4**4: short ones are cheap
        for level in bucket.unique().tolist():
            pick = (bucket == level).nonzero().squeeze(1)
            self._merge(a[pick], b[pick], cos[pick], sin[pick], int(need[pick].max()))
        if self.mask is not None:
            self.mask[a] = self.mask[b] = self.mask[a] | self.mask[b]
        return 2 * self.sizes[a] - before

    def _merge(self, a: Tensor, b: Tensor, cos: Tensor, sin: Tensor, width: int) -> None:
        """The compressed rotation of pairs whose lines hold at most ``width`` entries."""
        # merge the two sorted index lists; the stable sort puts a's copy of a shared column first
        cols, vals = self.cols[:, :width], self.vals[:, :width]
        keys, order = torch.cat([cols[a], cols[b]], 1).sort(dim=1, stable=True)
        va, vb = vals[a], vals[b]
        new_a = torch.cat([cos * va, sin * vb], 1).gather(1, order)
        new_b = torch.cat([-sin * va, cos * vb], 1).gather(1, order)
        shared = (keys[:, 1:] == keys[:, :-1]) & (keys[:, 1:] < self.small)
        for new in (new_a, new_b):  # the dense form's sums: (c x_a) + (s x_b) and (-s x_a) + (c x_b)
            new[:, :-1] = torch.where(shared, new[:, :-1] + new[:, 1:], new[:, :-1])
            new[:, 1:][shared] = 0.0
        keys[:, 1:][shared] = self.small
        kept = keys < self.small  # move the kept entries to the front, in order
        size = kept.sum(1)
        order = torch.where(kept, kept.cumsum(1), size.unsqueeze(1) + (~kept).cumsum(1)) - 1
        keys = torch.empty_like(keys).scatter_(1, order, keys)
        new_a = torch.empty_like(new_a).scatter_(1, order, new_a)
        new_b = torch.empty_like(new_b).scatter_(1, order, new_b)
        width = int(size.max())  # >= the old lengths: rows keep only padding past it
        self.width = max(self.width, width)
        if width > self.cols.shape[1]:  # grow the room geometrically: re-padding is a full copy
            pad = min(max(width, 2 * self.cols.shape[1]), self.small) - self.cols.shape[1]
            self.cols = torch.nn.functional.pad(self.cols, (0, pad), value=self.small)
            self.vals = torch.nn.functional.pad(self.vals, (0, pad))
        self.cols[a, :width] = self.cols[b, :width] = keys[:, :width]
        self.vals[a, :width] = new_a[:, :width]
        self.vals[b, :width] = new_b[:, :width]
        self.sizes[a] = self.sizes[b] = size

    def nonzeros(self) -> tuple[Tensor, Tensor, Tensor]:
        """The entries of the support as ``(line, column, value)``; the values exactly as rotated."""
        if self.dense is not None:
            line, col = self.mask[:, : self.small].nonzero(as_tuple=True)
            return line, col, self.dense[line, col]
        kept = self.cols < self.small
        line = torch.arange(self.big, device=kept.device).unsqueeze(1).expand_as(kept)[kept]
        return line, self.cols[kept], self.vals[kept]


# ------------------------------------------------------------------------------------------- the sampler

def _layers(a: Tensor, b: Tensor) -> list[Tensor]:
    """Split a sequence of rotations into layers of disjoint pairs that keep its order.

    Rotation ``t`` goes one layer after the last earlier rotation that shares a line with it,
    so applying the layers in turn gives exactly the sequential product (rotations of
    disjoint pairs commute). Returns the rotations' positions, layer by layer.
    """
    last: dict[int, int] = {}
    depth = []
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        layer = max(last.get(x, -1), last.get(y, -1)) + 1
        last[x] = last[y] = layer
        depth.append(layer)
    if not depth:
        return []
    depth_t = torch.tensor(depth, dtype=torch.long, device=a.device)
    return list(depth_t.argsort(stable=True).split(torch.bincount(depth_t).tolist()))


def _apply(lines: _Lines, rotations: tuple[Tensor, ...], layers: list[Tensor]) -> Tensor:
    """Apply a sequence of rotations ``(a, b, cos, sin)`` layer by layer; return the non-zeros each one added."""
    added = torch.zeros(len(rotations[0]), dtype=torch.long, device=rotations[0].device)
    for layer in layers:
        if layer.numel():
            added[layer] = lines.rotate(*(part[layer] for part in rotations))
    return added


def _draw(big: int, count: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``count`` rotations ``(a, b, cos θ, sin θ)``: uniform pairs of distinct lines, ``θ ~ U[0, 2π)``."""
    device = draw_device(generator)
    a = torch.randint(big, (count,), generator=generator, device=device)
    b = torch.randint(big - 1, (count,), generator=generator, device=device)
    angle = 2 * math.pi * torch.rand(count, generator=generator, dtype=torch.float64, device=device)
    return a, b + (b >= a), angle.cos(), angle.sin()


def _eoi_lines(big: int, small: int, target: int, generator: torch.Generator | None) -> _Lines:
    """``big`` orthonormal-column lines of length ``small`` whose supports hold ``target`` entries.

    The paper's sequence: i.i.d. uniform pairs of distinct lines with angles ``U[0, 2π)``,
    applied until the support holds ``target`` entries. It is drawn in chunks of up to ``big``
    rotations (fewer near the end), each applied in layers (:func:`_layers`); a chunk that
    passes the target is undone and only its prefix that stays below the target (or lands on
    it) is applied again. If the next rotation would overshoot, the sequence goes on by
    rejection: rotations that would overshoot are skipped until one lands on the target.
    Should ``_PATIENCE`` batches of ``big`` candidates hold none that fits (e.g. the square
    identity plus one entry: every rotation of it adds two), the least overshooting candidate
    seen is applied: ``target <= nnz <= target + small - 1``, as an increase is at most
    ``|S_a ∪ S_b| <= small``.
    """
    device = draw_device(generator)
    lines = _Lines(big, small, device)
    left = target - small

    chunk = big
    while left > 0:  # the paper's sequence, one chunk at a time
        lines.settle()
        rotations = _draw(big, chunk, generator)
        layers = _layers(*rotations[:2])
        before = lines.state()
        total = _apply(lines, rotations, layers).cumsum(0)
        if int(total[-1]) < left:
            left -= int(total[-1])
            # near the end, draw about as many as the last chunk's rate says are missing (increases grow)
            chunk = max(1, min(big, math.ceil(left * chunk / max(1, int(total[-1])))))
            continue
        keep = int((total < left).sum())
        keep += int(total[keep]) == left  # the rotation that lands on the target is kept
        lines.restore(before)
        left -= int(_apply(lines, rotations, [layer[layer < keep] for layer in layers]).sum())
        break
    misses, best, huge = 0, None, small + 1
    lines.settle()
    while left > 0:  # rejection: skip the rotations that would overshoot
        rotations = _draw(big, big, generator)
        a, b = rotations[:2]
        # |S_a Δ S_b| >= ||S_a| - |S_b||: only pairs of similar sizes can fit, so only they are counted
        near = (lines.sizes[a] - lines.sizes[b]).abs() <= 2 * left
        if misses >= _PATIENCE and best is None:
            near[:] = True
        added = torch.full_like(a, huge)
        added[near] = lines.increases(a[near], b[near])
        fits = ((added > 0) & (added <= left)).nonzero()
        stop = int(fits[0]) if len(fits) else len(a)
        take = (added[:stop] == 0).nonzero().squeeze(1)  # these add nothing, so later counts stay valid
        if stop < len(a):
            take = torch.cat([take, take.new_tensor([stop])])
        else:  # none fits: remember the candidate that overshoots least
            misses += 1
            least = int(torch.where(added > 0, added, huge).argmin())
            if 0 < int(added[least]) < huge and (best is None or int(added[least]) < best[0]):
                best = (int(added[least]), tuple(part[least : least + 1] for part in rotations))
        left -= int(_apply(lines, tuple(part[take] for part in rotations), _layers(a[take], b[take])).sum())
        if left > 0 and misses >= _PATIENCE and best is not None:
            left -= int(lines.rotate(*best[1]).sum())  # its increase is unchanged: only zero ones came since
    return lines


def _eoi_into_(out: Tensor, target: int, gain: float, generator: torch.Generator | None) -> Tensor:
    """Write ``gain`` times an ``(m, n)`` EOI matrix with ``target`` non-zeros into the 2-D view ``out``.

    Returns the bool support, on ``out``'s device.
    """
    m, n = out.shape
    line, col, value = _eoi_lines(max(m, n), min(m, n), target, generator).nonzeros()
    rows, cols = (col, line) if m <= n else (line, col)  # the lines are the columns when m <= n
    rows, cols = rows.to(out.device), cols.to(out.device)
    out.zero_()
    out[rows, cols] = (gain * value).to(out.device, out.dtype)
    mask = torch.zeros(m, n, dtype=torch.bool, device=out.device)
    mask[rows, cols] = True
    return mask


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

    A rotation of lines ``i, j`` makes both supports ``S_i ∪ S_j``, adding ``|S_i Δ S_j|``
    non-zeros; the i.i.d. sequence of rotations stops when the support reaches
    ``t = ceil(density · m · n)`` entries (:func:`eoi_target_nonzeros`).

    **Density guarantee:** ``t <= nnz <= t + min(m, n) - 1``, and ``nnz == t`` in the great
    majority of draws (95 % of random shapes up to 80 x 80; the others overshoot by a few). When
    the next rotation would overshoot, the sequence goes on by rejection (rotations that would
    overshoot are skipped) until one lands on ``t``; after 32 batches of ``max(m, n)``
    candidates without one that fits, the least overshooting candidate seen is applied. That
    happens when no rotation can fit, e.g. ``t = n + 1`` for a square ``n x n``: every
    rotation of the identity adds two.

    Properties of EOI worth knowing (the paper's, not this implementation's): the support
    always contains the diagonal of the padded identity (supports only grow); degrees are
    ragged, not regular; and for ``m != n`` a line of the larger side that no rotation reached
    stays zero, so a wide weight can have dead inputs (a tall one dead outputs) at low density.
    The returned mask is the exact support: ``tensor != 0`` equals it up to exact
    cancellations, which have probability zero.

    Args:
        tensor: 2-D weight ``(out, in)``.
        density: fraction of non-zeros, in ``(0, 1]``, at least ``min(m, n) / (m n)``.
        sparsity: alternatively the fraction of zeros, ``1 - density``.
        gain: multiplier ``g``.
        generator: source of randomness (line pairs and angles).

    Returns:
        ``(tensor, mask)``: the filled tensor and a bool ``(out, in)`` mask on its device; an
        empty tensor (``numel() == 0``) unchanged with an empty mask, as in :mod:`torch.nn.init`
        (density/sparsity are checked against the sizes, so not then).

    Raises:
        TypeError: on a non-floating-point tensor (integer, bool, complex), or a density,
            sparsity or gain that is not a real number.
        ValueError: on a non-2-D tensor, on both or neither of density/sparsity, on a value
            out of range or below the minimum density.

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
    empty = check_weight(tensor, "eoi_", 2, "a 2-D (out, in) weight")
    check_generator(generator)
    gain = as_real(gain, "gain")
    if empty:
        return tensor, torch.zeros(tensor.shape, dtype=torch.bool, device=tensor.device)
    target = eoi_target_nonzeros(*tensor.shape, density, sparsity)
    return tensor, _eoi_into_(tensor, target, gain, generator)


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
        ``tensor``; an empty one unchanged.

    Raises:
        TypeError, ValueError: as in :func:`eoi_with_mask_`.

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
        ``(tensor, mask)``: the filled tensor and a bool ``(c_out, c_in, kh, kw)`` mask; an empty
        tensor unchanged with an empty mask, as in :mod:`torch.nn.init`.

    Raises:
        TypeError: as in :func:`eoi_with_mask_`.
        ValueError: on a non-4-D weight, even kernel sides, or bad density/sparsity.

    Example:
        >>> w, mask = eoi_delta_with_mask_(torch.empty(16, 32, 3, 3), density=0.25,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> int(mask[:, :, 0, 0].sum()) >= 128, bool((w[:, :, 0, 0] == 0).all()), tuple(mask.shape)
        (True, True, (16, 32, 3, 3))
    """
    empty = check_conv_weight(tensor, "eoi_delta_", odd=True)
    check_generator(generator)
    gain = as_real(gain, "gain")
    if empty:
        return tensor, torch.zeros(tensor.shape, dtype=torch.bool, device=tensor.device)
    target = eoi_target_nonzeros(*tensor.shape[:2], density, sparsity)
    tensor.zero_()
    mask = _eoi_into_(tensor[(..., *centre_tap(tensor.shape[2:]))], target, gain, generator)
    return tensor, mask[:, :, None, None].expand(tensor.shape).contiguous()


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
        ``tensor``; an empty one unchanged.

    Raises:
        TypeError, ValueError: as in :func:`eoi_delta_with_mask_`.

    Example:
        >>> w = eoi_delta_(torch.empty(8, 8, 3, 3), density=0.5, generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(w[:, :, 1, 1] @ w[:, :, 1, 1].T, torch.eye(8), atol=1e-6)
        True
    """
    return eoi_delta_with_mask_(tensor, density, sparsity, gain, generator)[0]
