"""Tests of EOI (exact orthogonal initialization, Nowak et al. 2024): eoi_, eoi_with_mask_, eoi_delta_*.

The batched sampler is pinned bit for bit to a one-rotation-at-a-time reference that follows
the paper's procedure, so the layering, the compressed form and the support bookkeeping are
all checked against the plain definition.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sao.init.eoi as eoi_module
from helpers import assert_semi_orthogonal, gen
from sao.init import eoi_, eoi_delta_, eoi_delta_with_mask_, eoi_with_mask_
from sao.init.eoi import eoi_target_nonzeros

F64 = torch.float64
PROPERTY = settings(max_examples=30, deadline=None, derandomize=True)


def draw(m: int, n: int, seed: int = 0, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    return eoi_with_mask_(torch.empty(m, n, dtype=F64), generator=gen(seed), **kw)


# ---------------------------------------------------------------- a one-rotation-at-a-time reference

def reference_eoi(m: int, n: int, target: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's loop, one Givens rotation at a time on a dense float64 matrix.

    It consumes the generator exactly as the batched sampler does (same chunks, same rejection
    batches) and applies the same stopping rules, but in plain sequential order.
    """
    g, big, small = gen(seed), max(m, n), min(m, n)
    lines = torch.zeros(big, small, dtype=F64)
    support = torch.zeros(big, small, dtype=torch.bool)
    lines[range(small), range(small)] = 1.0
    support[range(small), range(small)] = True

    def increase(i: int, j: int) -> int:
        return int((support[i] ^ support[j]).sum())

    def rotate(i: int, j: int, c: torch.Tensor, s: torch.Tensor) -> None:
        xi, xj = lines[i].clone(), lines[j].clone()
        lines[i], lines[j] = c * xi + s * xj, c * xj - s * xi
        support[i] = support[j] = support[i] | support[j]

    left, chunk = target - small, big
    while left > 0:
        a, b, cos, sin = eoi_module._draw(big, chunk, g)
        total, crossed = 0, False
        for t in range(chunk):
            up = increase(int(a[t]), int(b[t]))
            if total + up > left:
                crossed = True
                break
            rotate(int(a[t]), int(b[t]), cos[t], sin[t])
            total += up
            if total == left:
                break
        left -= total
        if crossed or left == 0:
            break
        chunk = max(1, min(big, math.ceil(left * chunk / max(1, total))))
    misses, best = 0, None
    while left > 0:
        a, b, cos, sin = eoi_module._draw(big, big, g)
        sizes = support.sum(1)
        exhaustive = misses >= eoi_module._PATIENCE and best is None
        ups = [increase(int(i), int(j)) if exhaustive or abs(int(sizes[i] - sizes[j])) <= 2 * left else small + 1
               for i, j in zip(a, b, strict=True)]
        fitted = False
        for t, up in enumerate(ups):  # zero increases are applied, the first that fits ends the batch
            if up <= left:
                rotate(int(a[t]), int(b[t]), cos[t], sin[t])
                left -= up
                if up > 0:
                    fitted = True
                    break
        if not fitted:
            misses += 1
            positive = [(up, t) for t, up in enumerate(ups) if 0 < up <= small]
            if positive and (best is None or min(positive)[0] < best[0]):
                up, t = min(positive)
                best = (up, int(a[t]), int(b[t]), cos[t], sin[t])
        if left > 0 and misses >= eoi_module._PATIENCE and best is not None:
            rotate(*best[1:])
            left -= best[0]
    if m <= n:
        return lines.T.contiguous(), support.T.contiguous()
    return lines, support


CASES = [(6, 6, 0.5), (5, 13, 0.3), (13, 5, 0.3), (24, 24, 1.0), (30, 17, 0.2), (40, 40, 0.05), (64, 64, 1 / 16),
         (16, 16, 17 / 256), (3, 1, 1.0), (1, 7, 0.5), (2, 2, 1.0)]


@pytest.mark.parametrize(("m", "n", "density"), CASES, ids=str)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_sequential_reference_bit_for_bit(m: int, n: int, density: float, seed: int) -> None:
    w, mask = draw(m, n, seed, density=density)
    ref_w, ref_mask = reference_eoi(m, n, eoi_target_nonzeros(m, n, density), seed)
    assert torch.equal(mask, ref_mask)
    assert torch.equal(w, ref_w)


@pytest.mark.parametrize(("m", "n", "density"), [(48, 48, 0.3), (20, 70, 0.1), (70, 20, 0.6), (33, 33, 1.0)], ids=str)
def test_compressed_and_dense_forms_give_the_same_bits(m: int, n: int, density: float,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eoi_module, "_DENSE_FROM", 2.0)  # never dense
    compressed = draw(m, n, 3, density=density)
    monkeypatch.setattr(eoi_module, "_DENSE_FROM", 0.0)  # dense from the start
    dense = draw(m, n, 3, density=density)
    assert torch.equal(compressed[0], dense[0]) and torch.equal(compressed[1], dense[1])


# ---------------------------------------------------------------- the matrix

SHAPES = [(32, 32), (16, 48), (48, 16), (1, 9), (9, 1), (37, 23)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("density", [None, 0.1, 0.3, 0.7, 1.0])
def test_exactly_semi_orthogonal_with_the_promised_density(shape: tuple[int, int], density: float | None) -> None:
    m, n = shape
    density = min(m, n) / (m * n) if density is None else max(density, min(m, n) / (m * n))
    w, mask = draw(m, n, density=density, gain=1.5)
    assert_semi_orthogonal(w, gain=1.5)
    target = eoi_target_nonzeros(m, n, density)
    assert target <= int(mask.sum()) <= target + min(m, n) - 1
    assert torch.equal(w != 0, mask)


def test_density_is_exact_in_most_draws() -> None:
    shapes = [(64, 64, 0.1), (32, 96, 0.05), (96, 32, 0.2), (50, 50, 0.5), (128, 128, 1 / 32)]
    exact = [int(draw(m, n, seed, density=d)[1].sum()) == eoi_target_nonzeros(m, n, d)
             for m, n, d in shapes for seed in range(6)]
    assert sum(exact) >= 0.8 * len(exact)


def test_overshoots_when_no_rotation_fits() -> None:
    """Every rotation of the square identity adds two non-zeros: n + 1 is unreachable, n + 2 is next."""
    _, mask = draw(20, 20, density=21 / 400)
    assert int(mask.sum()) == 22


def test_minimum_density_is_the_padded_identity() -> None:
    for m, n in [(4, 6), (6, 4), (5, 5)]:
        w, mask = draw(m, n, density=min(m, n) / (m * n))
        assert torch.equal(w, torch.eye(m, n, dtype=F64))
        assert torch.equal(mask, torch.eye(m, n, dtype=torch.bool))


def test_below_the_minimum_density_is_an_error_giving_the_minimum() -> None:
    with pytest.raises(ValueError, match=r"below the minimum 16/\(16\*64\) = 0\.015625"):
        eoi_(torch.empty(16, 64), density=0.01)
    with pytest.raises(ValueError, match=r"sparsity=0\.999 gives density"):
        eoi_(torch.empty(32, 32), sparsity=0.999)


def test_full_density_is_dense_orthogonal() -> None:
    w, mask = draw(40, 40, density=1.0)
    assert bool(mask.all()) and bool((w != 0).all())
    assert_semi_orthogonal(w)


def test_supports_are_random_and_keep_the_diagonal() -> None:
    m0, m1 = draw(64, 64, 0, density=0.1)[1], draw(64, 64, 1, density=0.1)[1]
    assert not torch.equal(m0, m1)
    for mask in (m0, m1):
        assert bool(mask.diagonal().all())  # supports only grow, from the identity
        assert bool(mask.any(0).all()) and bool(mask.any(1).all())  # square: no zero row or column
        assert mask.sum(1).unique().numel() > 1  # ragged degrees, not a regular (SAO-like) pattern


@pytest.mark.parametrize("shape", [(16, 64), (64, 16)], ids=str)
def test_rectangular_orthonormal_side_never_zero(shape: tuple[int, int]) -> None:
    _, mask = draw(*shape, density=0.05)
    assert bool((mask.any(1) if shape[0] < shape[1] else mask.any(0)).all())


def test_same_seed_same_bits_on_every_dtype_and_layout() -> None:
    w64 = draw(30, 50, 7, density=0.2)[0]
    assert torch.equal(w64, draw(30, 50, 7, density=0.2)[0])
    w32 = eoi_(torch.empty(30, 50), density=0.2, generator=gen(7))
    assert torch.equal(w32, w64.float())
    strided = eoi_(torch.empty(50, 30, dtype=F64).T, density=0.2, generator=gen(7))
    assert torch.equal(strided, w64)
    assert torch.equal(eoi_(torch.empty(30, 50, dtype=F64), sparsity=0.8, generator=gen(7)), w64)


def test_fills_a_parameter_in_place() -> None:
    layer = torch.nn.Linear(24, 12)
    out = eoi_(layer.weight, density=0.25, generator=gen())
    assert out is layer.weight and layer.weight.requires_grad
    assert_semi_orthogonal(layer.weight.detach().double(), atol=1e-6)


# ---------------------------------------------------------------- arguments

@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({}, ValueError, "exactly one of density and sparsity"),
    ({"density": 0.5, "sparsity": 0.5}, ValueError, "exactly one of density and sparsity"),
    ({"density": 0.0}, ValueError, r"density must be a finite number in \(0, 1\], got 0.0"),
    ({"density": 1.5}, ValueError, r"density must be a finite number in \(0, 1\], got 1.5"),
    ({"density": float("nan")}, ValueError, r"density must be a finite number in \(0, 1\], got nan"),
    ({"sparsity": 1.0}, ValueError, r"sparsity must be a finite number in \[0, 1\), got 1.0"),
    ({"sparsity": -0.1}, ValueError, r"sparsity must be a finite number in \[0, 1\), got -0.1"),
    ({"density": "0.5"}, TypeError, "density must be a real number, got str"),
    ({"sparsity": True}, TypeError, "sparsity must be a real number, got bool"),
], ids=str)
def test_bad_density_or_sparsity(kwargs: dict, error: type, match: str) -> None:
    w = torch.full((8, 8), 3.0)
    with pytest.raises(error, match=match):
        eoi_(w, **kwargs)
    assert bool((w == 3.0).all())  # validated before anything is written


@pytest.mark.parametrize("shape", [(8,), (2, 3, 4)], ids=str)
def test_needs_a_matrix(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"eoi_ expects a 2-D \(out, in\) weight"):
        eoi_(torch.empty(shape), density=0.5)


def test_generator_must_be_a_generator() -> None:
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None, got int"):
        eoi_(torch.empty(4, 4), density=0.5, generator=0)


def test_target_count_rounding() -> None:
    assert eoi_target_nonzeros(100, 100, density=0.07) == 700  # 0.07 * 1e4 is 700.0000000000001
    assert eoi_target_nonzeros(10, 10, density=0.123) == 13
    assert eoi_target_nonzeros(64, 256, sparsity=0.75) == 4096


# ---------------------------------------------------------------- convolutions

@pytest.mark.parametrize("shape", [(8, 8, 3, 3), (6, 10, 5, 3), (10, 6, 1, 1)], ids=str)
def test_delta_puts_the_eoi_matrix_at_the_centre(shape: tuple[int, ...]) -> None:
    c_out, c_in, kh, kw = shape
    w, mask = eoi_delta_with_mask_(torch.full(shape, 7.0, dtype=F64), density=0.4, gain=2.0, generator=gen(3))
    centre, expected = w[:, :, kh // 2, kw // 2], draw(c_out, c_in, 3, density=0.4, gain=2.0)
    assert torch.equal(centre, expected[0])
    assert float(w.abs().sum()) == float(centre.abs().sum())  # every other tap is zero
    assert mask.shape == w.shape and torch.equal(mask, expected[1][:, :, None, None].expand(shape))
    assert torch.equal(eoi_delta_(torch.empty(shape, dtype=F64), density=0.4, gain=2.0, generator=gen(3)), w)


def test_delta_needs_odd_kernels_and_4d() -> None:
    with pytest.raises(ValueError, match="needs odd kernel sides"):
        eoi_delta_(torch.empty(4, 4, 2, 3), density=0.5)
    with pytest.raises(ValueError, match=r"expects a 4-D \(c_out, c_in, kh, kw\) weight"):
        eoi_delta_(torch.empty(4, 4), density=0.5)


# ---------------------------------------------------------------- invariants and speed

@st.composite
def shapes_and_densities(draw_: st.DrawFn) -> tuple[int, int, float]:
    m, n = draw_(st.integers(1, 40)), draw_(st.integers(1, 40))
    low = min(m, n) / (m * n)
    return m, n, min(1.0, low + (1 - low) * draw_(st.floats(0, 1)))


@PROPERTY
@given(shapes_and_densities(), st.integers(0, 2**31 - 1))
def test_property_orthogonal_exact_support_and_density(case: tuple[int, int, float], seed: int) -> None:
    m, n, density = case
    w, mask = draw(m, n, seed, density=density)
    assert_semi_orthogonal(w)
    assert torch.equal(w != 0, mask)
    target = eoi_target_nonzeros(m, n, density)
    assert target <= int(mask.sum()) <= target + min(m, n) - 1
    assert bool(mask.any(1).all()) if m <= n else bool(mask.any(0).all())


def test_4096_at_density_1_64_hits_its_density() -> None:
    # the construction time is measured by benchmarks/bench_guards.py
    _, mask = eoi_with_mask_(torch.empty(4096, 4096), density=1 / 64, generator=gen())
    assert 4096 * 64 <= int(mask.sum()) < 4096 * 65
