"""The compiled chain kernel computes exactly what its blocked SparseLinear layers compute, forward and backward.

Skipped as a whole when the kernel cannot be built here (no compiler): the fallback path is
:class:`sao.nn.FusedSparseChain`, tested in ``test_chain.py``.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from helpers import CHAIN_MODULES, gen, make_chain
from sao.nn import SparseLinear
from sao.nn import _chain_kernel as ck
from sao.topology import valid_degrees

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _KERNEL = ck.load_chain_kernel()
pytestmark = pytest.mark.skipif(_KERNEL is None, reason="the compiled chain kernel cannot be built here")

MODULES = CHAIN_MODULES
F32_TOL = {"atol": 1e-5, "rtol": 1e-5}  # float32: tanh is a few-ulp rational approximation, sums reordered




def assert_same(layers: list[SparseLinear], ref: nn.Sequential, acts: list[str], batch: int,
                dtype: torch.dtype) -> None:
    """Output and the gradients of x, every blocks and every bias agree with the unfused layers."""
    tol = {"atol": 1e-12, "rtol": 0} if dtype == torch.float64 else F32_TOL
    x = torch.randn(batch, layers[0].in_features, dtype=dtype, generator=gen(1), requires_grad=True)
    y_ref, y = ref(x), ck.sparse_chain(x, layers, acts)
    torch.testing.assert_close(y, y_ref, **tol)
    gy = torch.randn(y.shape, dtype=dtype, generator=gen(2))
    params = [x, *ref.parameters()]
    for a, b in zip(torch.autograd.grad(y, params, gy), torch.autograd.grad(y_ref, params, gy), strict=True):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("acts", [["tanh"] * 3, ["relu"] * 3, ["identity"] * 3, ["tanh", "relu", "identity"]])
def test_equals_unfused_layers(acts: list[str], bias: bool, dtype: torch.dtype) -> None:
    layers, ref = make_chain([16, 8, 16, 16], [4, 4, 4], acts, bias, dtype)
    assert_same(layers, ref, acts, 37, dtype)


@pytest.mark.parametrize("batch", [0, 1, 2, 17, 70])
def test_batch_sizes(batch: int) -> None:
    layers, ref = make_chain([16, 16, 8], [4, 4], ["tanh", "relu"], True, torch.float64)
    assert_same(layers, ref, ["tanh", "relu"], batch, torch.float64)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("acts", [["tanh", "tanh"], ["relu", "relu"], ["identity", "tanh", "relu"]])
def test_gradcheck(acts: list[str], bias: bool) -> None:
    sizes = [16, 8, 16, 8][: len(acts) + 1]
    layers, _ = make_chain(sizes, [4] * len(acts), acts, bias, torch.float64)
    gathers, row_perms, final = ck.chain_indices(layers)
    params = [p.detach().clone().requires_grad_() for layer in layers for p in (layer.blocks, layer.bias)
              if p is not None]
    x = torch.randn(3, 16, dtype=torch.float64, generator=gen(1), requires_grad=True)

    def fn(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        it = iter(ps)
        flat = [t for _ in layers for t in (next(it), next(it) if bias else None)]
        return ck.SparseChainFunction.apply(x, tuple(acts), gathers, row_perms, final, *flat)

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-8)


def test_wide_blocks_and_threads() -> None:
    """d = 64 blocks, several tiles per thread, two threads: the per-thread gradient sums are reduced."""
    layers, ref = make_chain([128, 128, 128], [64, 32], ["tanh", "relu"], True, torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert_same(layers, ref, ["tanh", "relu"], 150, torch.float64)
    finally:
        torch.set_num_threads(threads)


def test_no_grad_and_leading_dims() -> None:
    layers, ref = make_chain([16, 16, 16], [4, 4], ["tanh", "tanh"], True, torch.float32)
    x = torch.randn(2, 5, 16, generator=gen(3))
    with torch.no_grad():
        y = ck.sparse_chain(x, layers, ["tanh", "tanh"])
        torch.testing.assert_close(y, ref(x), **F32_TOL)
    assert y.shape == (2, 5, 16) and y.grad_fn is None


def test_tanh_approximation_accuracy() -> None:
    """float32 tanh: within 4 ulp of torch.tanh over the whole range (including saturation, ±0, ±inf, NaN)."""
    layer = SparseLinear(16, 16, degree=1, bias=False, generator=gen())
    with torch.no_grad():  # degree 1 = 16 blocks of 1x1: make them the identity, so the chain is tanh itself
        layer.blocks.fill_(1.0)
    z = torch.cat([torch.linspace(-12, 12, 100_000), torch.tensor([0.0, -0.0, 1e-30, 4e-4, float("inf"),
                                                                    -float("inf")])])
    z = torch.cat([z, z.new_zeros((-z.numel()) % 16)]).view(-1, 16)
    with torch.no_grad():  # layer(z) is an exact permutation of z
        y = ck.sparse_chain(z, [layer], ["tanh"])
        expected = torch.tanh(layer.run(z, "plain", layer.blocks, None))  # blocked: inf stays inf
    ulp = torch.finfo(torch.float32).eps * expected.abs().clamp_min(torch.finfo(torch.float32).tiny)
    assert ((y - expected).abs() <= 4 * ulp).all()
    assert torch.isnan(ck.sparse_chain(torch.full((1, 16), float("nan")), [layer], ["tanh"])).all()


def test_unknown_activation() -> None:
    layers, _ = make_chain([8, 8], [2], ["tanh"], False, torch.float32)
    with pytest.raises(ValueError, match=r"'gelu'.*allowed: identity, tanh, relu"):
        ck.sparse_chain(torch.randn(2, 8), layers, ["gelu"])


def test_fallback_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ck._EXTENSION, "state",
                        {"tried": True, "module": None, "warned": False, "error": "sao: no kernel"})
    with pytest.warns(RuntimeWarning, match="no kernel"):
        assert ck.load_chain_kernel() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ck.load_chain_kernel() is None  # no second warning


def test_import_is_lazy() -> None:
    code = "import sao, sao.nn._chain_kernel as ck; assert not ck._EXTENSION.state['tried']"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def _chains() -> st.SearchStrategy:
    @st.composite
    def build(draw: st.DrawFn) -> tuple:
        depth = draw(st.integers(1, 4))
        sizes = [draw(st.sampled_from([4, 6, 8, 12, 16, 24])) for _ in range(depth + 1)]
        acts = [draw(st.sampled_from(list(MODULES))) for _ in range(depth)]
        degrees = [draw(st.sampled_from(valid_degrees(m, n, mirrored=a == "relu")))  # even sizes: mirrored exists
                   for n, m, a in zip(sizes, sizes[1:], acts, strict=False)]
        return sizes, degrees, acts, draw(st.booleans()), draw(st.sampled_from([0, 1, 3, 20, 40]))
    return build()


@settings(max_examples=40)
@given(_chains())
def test_property_equals_unfused(case: tuple) -> None:
    sizes, degrees, acts, bias, batch = case
    layers, ref = make_chain(sizes, degrees, acts, bias, torch.float64)
    assert_same(layers, ref, acts, batch, torch.float64)
