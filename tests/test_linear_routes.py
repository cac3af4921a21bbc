"""SparseLinear's ``"compiled"`` route (the layer as a chain of one through the chain kernel) equals ``"plain"``:
forward, backward, double backward, vmap-batched Jacobians, hooks and parametrizations, and the route choice."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from helpers import assert_trains_like, gen
from sao.nn import SparseLinear, fusion
from sao.nn._chain_kernel import load_chain_kernel
from sao.topology import valid_degrees
from test_conv_kernel import FakeTimer

needs_kernel = pytest.mark.skipif(load_chain_kernel() is None, reason="the compiled chain kernel could not be built")
TOL64 = {"atol": 1e-10, "rtol": 1e-10}


def layer(n: int, m: int, degree: int, *, bias: bool = True, seed: int = 0) -> SparseLinear:
    out = SparseLinear(n, m, degree=degree, bias=bias, dtype=torch.float64, generator=gen(seed), fusion="compiled")
    if bias:
        with torch.no_grad():
            out.bias.normal_(generator=gen(seed + 1))
    return out


@st.composite
def cases(draw: st.DrawFn) -> tuple[SparseLinear, torch.Tensor]:
    n, m = draw(st.sampled_from([(8, 8), (8, 16), (24, 12), (32, 32)]))
    degree = draw(st.sampled_from(valid_degrees(m, n)))
    lead = draw(st.sampled_from([(), (1,), (5,), (2, 3), (0,)]))
    seed = draw(st.integers(0, 1000))
    x = torch.randn(*lead, n, dtype=torch.float64, generator=gen(seed + 2), requires_grad=True)
    return layer(n, m, degree, bias=draw(st.booleans()), seed=seed), x


@needs_kernel
@settings(max_examples=40, deadline=None)
@given(case=cases())
def test_compiled_equals_plain_forward_and_backward(case: tuple[SparseLinear, torch.Tensor]) -> None:
    sparse, x = case
    twin = copy.deepcopy(sparse)
    twin.fusion = "off"
    y, expected = sparse(x), twin(x)
    assert sparse.last_decision.route == "compiled"
    torch.testing.assert_close(y, expected, **TOL64)
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *sparse.parameters()], grad, allow_unused=True)
    want = torch.autograd.grad(expected, [x, *twin.parameters()], grad, allow_unused=True)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL64)


@needs_kernel
def test_compiled_route_passes_gradcheck_and_gradgradcheck() -> None:
    sparse = layer(8, 16, 4)
    x = torch.randn(3, 8, dtype=torch.float64, generator=gen(3), requires_grad=True)

    def f(x: torch.Tensor, blocks: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return sparse.run(x, "compiled", blocks, bias)

    inputs = (x, sparse.blocks.detach().clone().requires_grad_(), sparse.bias.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


@needs_kernel
def test_vmap_batched_jacobian_equals_plain() -> None:
    sparse = layer(8, 8, 2)
    x = torch.randn(3, 8, dtype=torch.float64, generator=gen(4))
    jac = torch.autograd.functional.jacobian(sparse, x, vectorize=True)
    with fusion("off"):
        torch.testing.assert_close(jac, torch.autograd.functional.jacobian(sparse, x), **TOL64)


@needs_kernel
def test_hooks_and_parametrizations_are_honoured() -> None:
    from torch.nn.utils import parametrize

    class Half(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * 0.5

    sparse = layer(16, 16, 4)
    twin = copy.deepcopy(sparse)
    twin.fusion = "off"
    for m in (sparse, twin):
        parametrize.register_parametrization(m, "blocks", Half())
        m.register_forward_hook(lambda mod, args, out: out + 1)
    x = torch.randn(4, 16, dtype=torch.float64, generator=gen(5))
    torch.testing.assert_close(sparse(x), twin(x), **TOL64)
    assert sparse.last_decision.route == "compiled"


@needs_kernel
def test_training_with_the_compiled_route_equals_plain() -> None:
    model = nn.Sequential(layer(8, 16, 4), nn.Tanh(), layer(16, 16, 4, seed=7))
    twin = assert_trains_like(model, torch.randn(6, 8, dtype=torch.float64, generator=gen(6)), "compiled", **TOL64)
    assert model[0].last_decision.route == "compiled" and twin[0].last_decision.route == "plain"


def test_forced_compiled_refuses_a_call_the_kernel_cannot_run() -> None:
    sparse = SparseLinear(8, 8, degree=2, fusion="compiled").half()
    with pytest.raises(ValueError, match="fusion='compiled' cannot run this call exactly"):
        sparse(torch.randn(2, 8).half())


@needs_kernel
@pytest.mark.parametrize(("costs", "expected"), [
    ({"plain": 1.0, "dense": 2.0, "compiled": 0.2}, "compiled"),
    ({"plain": 1.0, "dense": 0.5, "compiled": 0.8}, "dense"),
    ({"plain": 1.0, "dense": 1.2, "compiled": 1.1}, "plain"),
])
def test_auto_takes_the_fastest_of_three_routes(costs: dict[str, float], expected: str) -> None:
    sparse = SparseLinear(16, 16, degree=4, generator=gen())
    sparse.timer = FakeTimer(costs)
    x = torch.randn(4, 16)
    y = sparse(x)
    assert sparse.last_decision.route == expected
    with fusion("off"):
        torch.testing.assert_close(y, sparse(x), atol=1e-6, rtol=1e-6)
