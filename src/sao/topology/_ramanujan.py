"""The block-regular ("Ramanujan") sparse topology of an SAO layer (paper §IV-A, Fig. 4).

A layer with weight shape ``(m, n) = (out, in)`` and degree ``d`` is built from
``g = max(m, n) / d`` groups. Up to a row and a column permutation its mask is
block-diagonal with ``g`` dense blocks of shape ``(m / g, n / g)``:

.. math::

    M[P_r, :][:, P_c] = \\operatorname{blockdiag}(\\mathbf{1}_{m/g \\times n/g}, \\ldots)

so every node of the smaller side has degree ``d = max(m, n) / g`` and every node of the
larger side has degree ``r = min(m, n) / g``. The sparsity is ``1 - 1/g = 1 - d / max(m, n)``.
A degree is valid exactly when ``g`` divides both ``m`` and ``n``. Why "Ramanujan" is in quotes
(one such layer is ``g`` disconnected complete bipartite graphs): ``docs/analysis.md`` §1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sao._validation import as_int, as_real

__all__ = ["Topology", "degree_for_sparsity", "nearest_degree", "ramanujan", "resolve_degree", "resolve_topology",
           "scatter_blocks",
           "valid_degrees"]


@dataclass(frozen=True, eq=False)
class Topology:
    """A fixed block-regular sparse connectivity of a ``(out_features, in_features)`` layer.

    Block ``b`` connects the outputs ``row_perm[b*bm:(b+1)*bm]`` densely to the inputs
    ``col_perm[b*bn:(b+1)*bn]``, where ``(bm, bn) = block_shape``; nothing else is connected.

    Args:
        out_features: ``m``, rows of the weight.
        in_features: ``n``, columns of the weight.
        num_blocks: ``g``; must divide both ``m`` and ``n``.
        row_perm: ``(m,)`` long tensor, a permutation of ``range(m)``.
        col_perm: ``(n,)`` long tensor, a permutation of ``range(n)``.
        mirrored: the topology of the ReLU variant (Burkholz & Dubatovka 2019; paper Eq. (5)):
            within each block the second half of the rows (columns) are the first half shifted by
            ``m/2`` (``n/2``), so a block can hold ``[[B0, -B0], [-B0, B0]]``.
    """

    out_features: int
    in_features: int
    num_blocks: int
    row_perm: Tensor
    col_perm: Tensor
    mirrored: bool = False

    def __post_init__(self) -> None:
        for name in ("out_features", "in_features", "num_blocks"):
            object.__setattr__(self, name, as_int(getattr(self, name), name, minimum=1))
        m, n, g = self.out_features, self.in_features, self.num_blocks
        if m % g or n % g:
            raise ValueError(f"num_blocks={g} must divide out_features={m} and in_features={n}")
        for name, perm, size in (("row_perm", self.row_perm, m), ("col_perm", self.col_perm, n)):
            expected = torch.arange(size, device=perm.device)
            if perm.shape != (size,) or not torch.equal(torch.sort(perm).values, expected):
                raise ValueError(f"{name} must be a permutation of range({size})")
        if self.mirrored:
            self._check_mirrored()

    def _check_mirrored(self) -> None:
        bm, bn = self.block_shape
        if bm % 2 or bn % 2:
            raise ValueError(f"a mirrored topology needs even block sides, got {self.block_shape}")
        for idx, half in ((self.block_rows(), self.out_features // 2), (self.block_cols(), self.in_features // 2)):
            first, second = idx.chunk(2, dim=1)
            if not torch.equal(second, first + half):
                raise ValueError("mirrored=True but the permutations do not pair i with i + size/2")

    @property
    def block_shape(self) -> tuple[int, int]:
        """``(bm, bn) = (m / g, n / g)``: the shape of each dense block."""
        return self.out_features // self.num_blocks, self.in_features // self.num_blocks

    @property
    def degree(self) -> int:
        """``d``: the degree of every node on the smaller side, ``max(m, n) / g``."""
        return max(self.block_shape)

    @property
    def density(self) -> float:
        """Fraction of non-zero weights, exactly ``1 / g``."""
        return 1.0 / self.num_blocks

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights, exactly ``1 - 1 / g``."""
        return 1.0 - self.density

    @property
    def row_degree(self) -> int:
        """Non-zeros in every row (inputs seen by each output): ``n / g``."""
        return self.block_shape[1]

    @property
    def col_degree(self) -> int:
        """Non-zeros in every column (outputs fed by each input): ``m / g``."""
        return self.block_shape[0]

    def block_rows(self) -> Tensor:
        """``(g, bm)`` long tensor: the output indices of each block."""
        return self.row_perm.view(self.num_blocks, -1)

    def block_cols(self) -> Tensor:
        """``(g, bn)`` long tensor: the input indices of each block."""
        return self.col_perm.view(self.num_blocks, -1)

    def mask(self, device: torch.device | str | None = None) -> Tensor:
        """The bool ``(m, n)`` mask: ``True`` where a weight may be non-zero (on ``device``, else the CPU)."""
        device = self.row_perm.device if device is None else device
        return self.blocks_to_dense(torch.ones(self.num_blocks, *self.block_shape, dtype=torch.bool, device=device))

    def blocks_to_dense(self, blocks: Tensor) -> Tensor:
        """Scatter ``(g, bm, bn, *k)`` blocks into a new zero ``(m, n, *k)`` tensor (differentiable)."""
        self._check_blocks(blocks)
        return scatter_blocks(blocks, self.row_perm.to(blocks.device), self.col_perm.to(blocks.device))

    def dense_to_blocks(self, dense: Tensor) -> Tensor:
        """Gather the ``(g, bm, bn, *k)`` blocks out of a ``(m, n, *k)`` tensor (differentiable)."""
        if tuple(dense.shape[:2]) != (self.out_features, self.in_features):
            raise ValueError(f"expected a tensor of shape ({self.out_features}, {self.in_features}, ...), "
                             f"got {tuple(dense.shape)}")
        rows, cols = self.block_rows().to(dense.device), self.block_cols().to(dense.device)
        return dense[rows[:, :, None], cols[:, None, :]]

    def _check_blocks(self, blocks: Tensor) -> None:
        if tuple(blocks.shape[:3]) != (self.num_blocks, *self.block_shape):
            bm, bn = self.block_shape
            raise ValueError(f"expected blocks of shape ({self.num_blocks}, {bm}, {bn}, ...), "
                             f"got {tuple(blocks.shape)}")

    def __repr__(self) -> str:
        bm, bn = self.block_shape
        mirrored = ", mirrored" if self.mirrored else ""
        return (f"Topology({self.out_features}x{self.in_features}, degree={self.degree}, "
                f"blocks={self.num_blocks}x({bm}x{bn}), sparsity={self.sparsity:.4%}{mirrored})")


def scatter_blocks(blocks: Tensor, row_perm: Tensor, col_perm: Tensor) -> Tensor:
    """Place ``(g, bm, bn, *k)`` blocks at rows ``row_perm.view(g, bm)`` and columns
    ``col_perm.view(g, bn)`` of a new zero ``(len(row_perm), len(col_perm), *k)`` tensor.

    Differentiable (an ``index_put``); the indices must be on the blocks' device.
    """
    g = blocks.shape[0]
    rows, cols = row_perm.view(g, -1), col_perm.view(g, -1)
    dense = blocks.new_zeros(row_perm.numel(), col_perm.numel(), *blocks.shape[3:])
    return dense.index_put((rows[:, :, None], cols[:, None, :]), blocks)


def valid_degrees(m: int, n: int, mirrored: bool = False) -> list[int]:
    """All degrees ``d`` for which an ``(m, n)`` SAO topology exists, ascending.

    ``d = max(m, n) / g`` for every ``g`` dividing ``gcd(m, n)``; with ``mirrored=True``
    (ReLU variant) ``g`` must divide ``gcd(m/2, n/2)`` instead.

    Raises:
        TypeError: if ``m`` or ``n`` is not an integer (``int``, numpy integer or 0-d integer tensor).
        ValueError: if ``m`` or ``n`` is below 1, or odd with ``mirrored=True``.

    Example:
        >>> import numpy as np
        >>> valid_degrees(6, 4), valid_degrees(np.int64(8), 8, mirrored=True)
        ([3, 6], [2, 4, 8])
    """
    m, n = _check_shape(m, n, mirrored)
    return sorted(max(m, n) // g for g in _divisors(_common(m, n, mirrored)))


def _common(m: int, n: int, mirrored: bool) -> int:
    """The number every group count ``g = max(m, n) / d`` must divide."""
    return math.gcd(m // 2, n // 2) if mirrored else math.gcd(m, n)


def _is_valid(m: int, n: int, degree: int, mirrored: bool) -> bool:
    """Whether ``degree`` is in :func:`valid_degrees` (without listing them: a huge layer has many)."""
    larger = max(m, n)
    return 1 <= degree <= larger and larger % degree == 0 and _common(m, n, mirrored) % (larger // degree) == 0


def _divisors(k: int) -> list[int]:
    """The divisors of ``k >= 1`` (trial division up to its square root)."""
    small = [g for g in range(1, math.isqrt(k) + 1) if k % g == 0]
    return sorted({*small, *(k // g for g in small)})


def degree_for_sparsity(m: int, n: int, sparsity: float, mirrored: bool = False) -> int:
    """The degree that gives exactly ``sparsity`` (``= 1 - d / max(m, n)``) for an ``(m, n)`` layer.

    Raises:
        TypeError: if ``sparsity`` is not a real number (e.g. the string ``"0.5"``) or a size is
            not an integer.
        ValueError: if ``sparsity`` is outside ``[0, 1)`` or no valid degree gives it; the
            message lists the nearest achievable sparsities.
    """
    m, n = _check_shape(m, n, mirrored)
    sparsity = as_real(sparsity, "sparsity", low=0.0, high=1.0, high_open=True)
    degree = max(m, n) * (1.0 - sparsity)
    if abs(degree - round(degree)) <= 1e-6 * max(m, n) and _is_valid(m, n, round(degree), mirrored):
        return round(degree)
    raise ValueError(f"sparsity={sparsity} is not achievable for a {m}x{n} layer{_kind(mirrored)}; "
                     f"nearest valid: {_nearest(valid_degrees(m, n, mirrored), degree, max(m, n))}")


def resolve_degree(m: int, n: int, degree: int | None = None, sparsity: float | None = None,
                   mirrored: bool = False) -> int:
    """Check that exactly one of ``degree``/``sparsity`` is given and return the valid degree (an ``int``).

    Raises:
        TypeError: if ``degree`` is not an integer (``int``, numpy integer or 0-d integer tensor;
            not ``bool``, ``4.0`` or ``"4"``) or ``sparsity`` not a real number.
        ValueError: if both or neither are given, or the value is not achievable; the message
            names the nearest valid degrees and lists all of them.

    Example:
        >>> import numpy as np
        >>> resolve_degree(8, 8, degree=np.int64(4)), resolve_degree(8, 8, sparsity=np.float32(0.75))
        (4, 2)
    """
    if (degree is None) == (sparsity is None):
        raise ValueError(f"give exactly one of degree= or sparsity= (got degree={degree}, sparsity={sparsity})")
    m, n = _check_shape(m, n, mirrored)
    if sparsity is not None:
        return degree_for_sparsity(m, n, sparsity, mirrored)
    degree = as_int(degree, "degree")
    if _is_valid(m, n, degree, mirrored):
        return degree
    valid = valid_degrees(m, n, mirrored)
    raise ValueError(f"degree={degree!r} is not valid for a {m}x{n} layer{_kind(mirrored)}; "
                     f"nearest valid: {_nearest(valid, degree, max(m, n))}; all valid: {valid}")


def nearest_degree(m: int, n: int, degree: int | None = None, sparsity: float | None = None,
                   mirrored: bool = False) -> int:
    """The valid degree of an ``(m, n)`` layer closest to the requested ``degree`` or ``sparsity``.

    Where :func:`resolve_degree` insists on an exact match, this takes the nearest achievable
    one: by sparsity distance ``|1 - d / max(m, n) - sparsity|`` when a sparsity is given, else
    by degree distance ``|d - degree|``; a tie goes to the larger degree (the denser layer).
    ``degree = max(m, n)`` (one dense block) is always valid for plain topologies, so there is
    always an answer unless the mirrored variant is impossible (odd sizes).

    Raises:
        TypeError: if ``degree`` is not an integer or ``sparsity`` not a real number.
        ValueError: if both or neither of ``degree``/``sparsity`` are given, the sparsity is
            outside ``[0, 1)``, the degree is below 1, or no valid degree exists.

    Example:
        >>> nearest_degree(64, 64, sparsity=0.9), nearest_degree(768, 3072, sparsity=0.9)
        (8, 256)
    """
    if (degree is None) == (sparsity is None):
        raise ValueError(f"give exactly one of degree= or sparsity= (got degree={degree}, sparsity={sparsity})")
    m, n = _check_shape(m, n, mirrored)
    valid, larger = valid_degrees(m, n, mirrored), max(m, n)
    if sparsity is not None:
        sparsity = as_real(sparsity, "sparsity", low=0.0, high=1.0, high_open=True)
        return min(valid, key=lambda d: (abs(1.0 - d / larger - sparsity), -d))
    degree = as_int(degree, "degree", minimum=1)
    return min(valid, key=lambda d: (abs(d - degree), -d))


def ramanujan(m: int, n: int, degree: int | None = None, sparsity: float | None = None,
              generator: torch.Generator | None = None, mirrored: bool = False) -> Topology:
    """Draw a random SAO topology for an ``(m, n) = (out, in)`` weight (paper §IV-A).

    The larger side is randomly partitioned into ``g = max(m, n) / d`` groups of ``d`` nodes; the
    smaller side, also randomly permuted, is spread evenly, ``r = min(m, n) / g`` nodes per
    group, and each of them connects to every node of its group.

    Args:
        m: output features (rows).
        n: input features (columns).
        degree: degree ``d`` of the smaller side's nodes; see :func:`valid_degrees`.
        sparsity: alternatively, the fraction of zeros ``1 - d / max(m, n)``.
        generator: source of randomness (both permutations are drawn from it).
        mirrored: build the topology of the ReLU variant: a random ``(m/2, n/2)`` topology of
            degree ``d/2``, doubled so each block can hold ``[[B0, -B0], [-B0, B0]]``.

    Returns:
        A :class:`Topology` whose mask has exactly ``d`` non-zeros per smaller-side node and
        ``r`` per larger-side node.

    Raises:
        TypeError: if a size or ``degree`` is not an integer, or ``sparsity`` not a real number.
        ValueError: if both or neither of ``degree``/``sparsity`` are given, or the value is not
            achievable; the message names the nearest valid degrees/sparsities.

    Example:
        >>> t = ramanujan(8, 8, degree=2, generator=torch.Generator().manual_seed(0))
        >>> t.mask().sum(dim=1).tolist()
        [2, 2, 2, 2, 2, 2, 2, 2]
    """
    m, n = _check_shape(m, n, mirrored)
    d = resolve_degree(m, n, degree, sparsity, mirrored)
    if mirrored:
        half = ramanujan(m // 2, n // 2, degree=d // 2, generator=generator)
        rows, cols = half.block_rows(), half.block_cols()
        return Topology(m, n, half.num_blocks, torch.cat([rows, rows + m // 2], 1).flatten(),
                        torch.cat([cols, cols + n // 2], 1).flatten(), mirrored=True)
    # drawn where the generator lives, kept on the CPU (also inside a `with torch.device(...)` block)
    where = generator.device if generator is not None else torch.device("cpu")
    return Topology(m, n, max(m, n) // d, torch.randperm(m, generator=generator, device=where).cpu(),
                    torch.randperm(n, generator=generator, device=where).cpu())


def _check_shape(m: int, n: int, mirrored: bool) -> tuple[int, int]:
    """``(m, n)`` as positive ``int`` (even ones if ``mirrored``)."""
    sizes = as_int(m, "m (out_features)", minimum=1), as_int(n, "n (in_features)", minimum=1)
    for name, v in zip(("m (out_features)", "n (in_features)"), sizes, strict=True):
        if mirrored and v % 2:
            raise ValueError(f"the ReLU (mirrored) variant needs even sizes, got {name}={v}")
    return sizes


def _kind(mirrored: bool) -> str:
    return " (ReLU/mirrored variant)" if mirrored else ""


def _nearest(valid: list[int], target: float, larger: int) -> str:
    closest = sorted(valid, key=lambda d: abs(d - target))[:2]
    return ", ".join(f"degree={d} (sparsity={1 - d / larger:.6g})" for d in sorted(closest))


def resolve_topology(target: Tensor | Sequence[int], degree: int | None, sparsity: float | None,
                     topology: Topology | None, generator: torch.Generator | None,
                     mirrored: bool | None = False) -> Topology:
    """The topology for a weight (or a shape) ``(m, n, ...)``: ``topology`` checked, or a new draw.

    ``mirrored`` is the kind a new draw gets and the kind a given topology must have
    (``None``: any kind is accepted, a new draw is plain).

    Raises:
        ValueError: if the given topology does not fit the shape, is of the wrong kind, or
            disagrees with a given degree/sparsity.
    """
    m, n = (target.shape if isinstance(target, Tensor) else target)[:2]
    if topology is None:
        return ramanujan(m, n, degree, sparsity, generator=generator, mirrored=bool(mirrored))
    if not isinstance(topology, Topology):
        raise TypeError(f"topology must be a sao.topology.Topology, got {type(topology).__name__}")
    if (topology.out_features, topology.in_features) != (m, n):
        raise ValueError(f"topology is {topology.out_features}x{topology.in_features} but the weight is {m}x{n}")
    if mirrored and not topology.mirrored:
        raise ValueError("activation='relu' needs a mirrored topology: ramanujan(..., mirrored=True)")
    if mirrored is False and topology.mirrored:
        raise ValueError("a mirrored topology holds the ReLU construction [[S0, -S0], [-S0, S0]], which is not "
                         "orthogonal; use activation='relu' with it, or a plain ramanujan(...) topology")
    asked = (degree, sparsity) != (None, None)
    if asked and resolve_degree(m, n, degree, sparsity, topology.mirrored) != topology.degree:
        raise ValueError(f"degree/sparsity ({degree}, {sparsity}) disagree with the given {topology}")
    return topology
