"""Tests of the fully-connected initializers: orthogonal_, sao_, ramanujan_normal_, ramanujan_uniform_."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from helpers import assert_semi_orthogonal, gen
from sao.init import orthogonal_, ramanujan_normal_, ramanujan_uniform_, sao_
from sao.topology import ramanujan

FAST = settings(max_examples=60, deadline=None, derandomize=True)
F64 = torch.float64


@st.composite
def sao_shapes(draw: st.DrawFn) -> tuple[int, int, int]:
    g = draw(st.integers(1, 12))
    bm, bn = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    return g * bm, g * bn, max(bm, bn)


# ---------------------------------------------------------------- orthogonal_

@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (7, 3), (4, 2, 3, 3)], ids=str)
def test_orthogonal_is_orthogonal(shape: tuple[int, ...]) -> None:
    w = orthogonal_(torch.empty(shape, dtype=F64), gain=1.5, generator=gen())
    assert_semi_orthogonal(w.reshape(shape[0], -1), gain=1.5)


def test_orthogonal_is_haar_distributed() -> None:
    """Without the sign fix LAPACK's QR makes Q[0, 0] almost always negative; Haar makes it symmetric."""
    g = gen(1)
    firsts = torch.stack([orthogonal_(torch.empty(4, 4, dtype=F64), generator=g)[0, 0] for _ in range(2000)])
    # for Haar 4x4, Q[0, 0] = x0 / |x|: sqrt(4)·Q00 has the symmetric Beta-like law; test symmetry and mean
    assert abs(float((firsts > 0).double().mean()) - 0.5) < 0.05
    assert stats.ks_2samp(firsts.numpy(), -firsts.numpy()).pvalue > 1e-4


# ---------------------------------------------------------------- sao_

@FAST
@given(sao_shapes(), st.floats(0.5, 2.0), st.integers(0, 2**31 - 1))
def test_sao_is_sparse_orthogonal(shape: tuple[int, int, int], gain: float, seed: int) -> None:
    m, n, d = shape
    topo = ramanujan(m, n, degree=d, generator=gen(seed))
    w = sao_(torch.empty(m, n, dtype=F64), gain=gain, topology=topo, generator=gen(seed))
    assert_semi_orthogonal(w, gain)
    assert torch.equal(w != 0, topo.mask())  # every allowed weight is non-zero, every other exactly zero
    small_side = (w != 0).sum(1) if m <= n else (w != 0).sum(0)
    assert small_side.unique().tolist() == [d]


@pytest.mark.parametrize(("m", "n", "kw"), [(256, 256, {"degree": 4}), (256, 1024, {"sparsity": 0.984375}),
                                            (1024, 256, {"degree": 16}), (64, 64, {"degree": 64})], ids=str)
def test_sao_by_degree_or_sparsity(m: int, n: int, kw: dict) -> None:
    w = sao_(torch.empty(m, n, dtype=F64), generator=gen(), **kw)
    assert_semi_orthogonal(w)


def relu_chain(ws: list[torch.Tensor], u: torch.Tensor) -> torch.Tensor:
    x = torch.cat([torch.relu(u), torch.relu(-u)])
    for w in ws:
        x = torch.relu(w @ x)
    return x


@pytest.mark.parametrize(("width", "d"), [(16, 4), (64, 8), (32, 32)])
def test_relu_variant_acts_as_orthogonal_linear_chain(width: int, d: int) -> None:
    g = gen(5)
    ws = [sao_(torch.empty(width, width, dtype=F64), degree=d, activation="relu", generator=g) for _ in range(6)]
    half = width // 2
    for w in ws:  # the mirrored structure and an orthogonal S0
        s0 = w[:half, :half]
        torch.testing.assert_close(w, torch.cat([torch.cat([s0, -s0], 1), torch.cat([-s0, s0], 1)]), atol=0, rtol=0)
        assert_semi_orthogonal(s0)
    u = torch.randn(half, generator=g, dtype=F64)
    out = relu_chain(ws, u)
    linear = u
    for w in ws:
        linear = w[:half, :half] @ linear
    torch.testing.assert_close(out[:half] - out[half:], linear, atol=1e-12, rtol=0)
    torch.testing.assert_close(linear.norm(), u.norm(), atol=1e-12, rtol=0)  # the chain is an isometry


def test_relu_variant_has_exact_degree() -> None:
    w = sao_(torch.empty(64, 128, dtype=F64), degree=16, activation="relu", generator=gen())
    assert (w != 0).sum(1).unique().tolist() == [16] and (w != 0).sum(0).unique().tolist() == [8]


def test_sao_same_seed_bit_identical_across_dtypes() -> None:
    a = sao_(torch.empty(128, 128), degree=8, generator=gen(7))
    b = sao_(torch.empty(128, 128), degree=8, generator=gen(7))
    c = sao_(torch.empty(128, 128, dtype=F64), degree=8, generator=gen(7))
    assert torch.equal(a, b) and torch.equal(a, c.float())
    assert not torch.equal(a, sao_(torch.empty(128, 128), degree=8, generator=gen(8)))


def test_sao_4096_has_exact_degree() -> None:
    # the construction time is measured by benchmarks/bench_guards.py and bench_construction.py
    nonzero = sao_(torch.empty(4096, 4096), degree=64, generator=gen()) != 0
    assert nonzero.sum(0).unique().tolist() == [64] and nonzero.sum(1).unique().tolist() == [64]


@pytest.mark.parametrize(("call", "match"), [
    (lambda: sao_(torch.empty(4, 4, 4), degree=2), "2-D"),
    (lambda: sao_(torch.empty(256, 256), degree=5), "nearest valid"),
    (lambda: sao_(torch.empty(256, 256)), "exactly one of"),
    (lambda: sao_(torch.empty(8, 8), degree=2, activation="gelu"), "choose from linear, tanh, relu"),
    (lambda: sao_(torch.empty(7, 8), degree=8, activation="relu"), "even"),
    (lambda: sao_(torch.empty(8, 8), topology=ramanujan(8, 16, degree=8)), "8x16"),
    (lambda: sao_(torch.empty(8, 8), degree=4, topology=ramanujan(8, 8, degree=2)), "disagree"),
    (lambda: sao_(torch.empty(8, 8), activation="relu", topology=ramanujan(8, 8, degree=2)), "mirrored"),
    (lambda: sao_(torch.empty(8, 8), topology=ramanujan(8, 8, degree=2, mirrored=True)), "not orthogonal"),
    (lambda: orthogonal_(torch.empty(3)), "at least 2"),
])
def test_errors_are_clear(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_wrong_generator_type() -> None:
    with pytest.raises(TypeError, match="generator"):
        sao_(torch.empty(8, 8), degree=2, generator=0)  # type: ignore[arg-type]


# ---------------------------------------------------------------- RG-N / RG-U

@pytest.mark.parametrize("unit_variance", [True, False])
def test_ramanujan_normal_values_and_support(unit_variance: bool) -> None:
    topo = ramanujan(512, 512, degree=16, generator=gen())
    w = ramanujan_normal_(torch.empty(512, 512, dtype=F64), unit_variance=unit_variance, topology=topo,
                          generator=gen(1))
    assert torch.equal(w != 0, topo.mask())
    scale = 1 / math.sqrt(16) if unit_variance else 1.0
    assert stats.kstest(w[topo.mask()].numpy() / scale, "norm").pvalue > 1e-4


@pytest.mark.parametrize("unit_variance", [True, False])
def test_ramanujan_uniform_values_and_support(unit_variance: bool) -> None:
    topo = ramanujan(512, 256, degree=32, generator=gen())
    w = ramanujan_uniform_(torch.empty(512, 256, dtype=F64), gain=2.0, unit_variance=unit_variance, topology=topo,
                           generator=gen(1))
    assert torch.equal(w != 0, topo.mask())
    values = w[topo.mask()].numpy() / 2.0
    if unit_variance:
        bound = math.sqrt(3 / 32)
        assert stats.kstest(values, "uniform", args=(-bound, 2 * bound)).pvalue > 1e-4
    else:
        assert stats.kstest(values, "uniform", args=(0, 1)).pvalue > 1e-4


def test_rg_has_unit_norm_smaller_side_on_average() -> None:
    w = ramanujan_normal_(torch.empty(256, 1024, dtype=F64), degree=64, generator=gen())
    assert float(w.square().sum(1).mean()) == pytest.approx(1.0, abs=0.05)


def test_rg_accepts_a_mirrored_topology() -> None:
    topo = ramanujan(16, 16, degree=4, mirrored=True, generator=gen())
    w = ramanujan_uniform_(torch.empty(16, 16), topology=topo, generator=gen())
    assert torch.equal(w != 0, topo.mask())
