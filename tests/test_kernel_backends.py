"""Kernel backends (:mod:`sao.nn.kernels`): the compiled routes call the backend registered for the device type.

A backend computed in PyTorch ops stands in for a new device's kernel: the routes must call it (and only it)
on ``"compiled"``, give the plain route's values and gradients, refuse loudly when it is unavailable and the
route is forced, and never offer the route for a device type without a backend.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sao
from sao.nn import CHAIN_KERNELS, CONV_KERNELS, ChainKernel, ConvKernel, FusedSparseChain, SparseConv2d, SparseLinear
from sao.nn.dispatch import kernel_blocker
from sao.nn.kernels import sparse_conv_reference


@contextlib.contextmanager
def registered(registry: Any, device_type: str, backend: Any) -> Iterator[Any]:
    """``backend`` in ``registry`` under ``device_type`` for the block; the previous entry restored after."""
    before = registry.unregister(device_type) if device_type in registry else None
    registry.register(device_type, backend)
    try:
        yield backend
    finally:
        registry.unregister(device_type)
        if before is not None:
            registry.register(device_type, before)


class ReferenceConv(ConvKernel):
    """The convolution in PyTorch ops, counting its calls; ``why`` makes it unavailable."""

    def __init__(self, why: str | None = None) -> None:
        self.why, self.forwards, self.backwards = why, 0, 0

    def unavailable(self, device: torch.device) -> str | None:
        return self.why

    def forward(self, x, blocks, bias, perms, geometry, num_blocks):
        self.forwards += 1
        return sparse_conv_reference(x, blocks, bias, *perms, geometry, num_blocks)

    def backward(self, grad_y, x, blocks, perms, geometry, num_blocks, needs):
        self.backwards += 1
        with torch.enable_grad():
            x, blocks = x.detach().requires_grad_(needs[0]), blocks.detach().requires_grad_(needs[1])
            y = sparse_conv_reference(x, blocks, None, *perms, geometry, num_blocks)
            grads = iter(torch.autograd.grad(y, [t for t, n in zip((x, blocks), needs, strict=True) if n], grad_y))
        return [next(grads) if n else None for n in needs]


class ReferenceChain(ChainKernel):
    """The chain run module by module, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, x, layers, activations, indices=None):
        self.calls += 1
        acts = {"identity": lambda t: t, "tanh": torch.tanh, "relu": torch.relu}
        for layer, act in zip(layers, activations, strict=True):
            with sao.nn.fusion("off"):
                x = acts[act](layer(x))
        return x


def test_the_built_in_backends_cover_cpu_and_cuda() -> None:
    assert CONV_KERNELS.names() == ["cpu", "cuda"] and CHAIN_KERNELS.names() == ["cpu", "cuda"]
    assert all(isinstance(CONV_KERNELS.get(n), ConvKernel) for n in CONV_KERNELS.names())
    assert all(isinstance(CHAIN_KERNELS.get(n), ChainKernel) for n in CHAIN_KERNELS.names())


@settings(max_examples=15, deadline=None)
@given(c=st.sampled_from([4, 8, 16]), g=st.sampled_from([1, 2, 4]), k=st.sampled_from([1, 3]),
       stride=st.integers(1, 2), padding=st.integers(0, 1), batch=st.integers(1, 3), bias=st.booleans())
def test_a_registered_conv_backend_is_what_the_compiled_route_runs(c: int, g: int, k: int, stride: int, padding: int,
                                                                    batch: int, bias: bool) -> None:
    conv = SparseConv2d(c, 2 * c, k, stride, padding, degree=2 * c // g, bias=bias, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(c + g + k))
    x = torch.randn(batch, c, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with sao.nn.fusion("off"):
        xp = x.clone().requires_grad_()
        want = conv(xp)
        want_grads = torch.autograd.grad(want.square().sum(), [xp, *conv.parameters()])
    with registered(CONV_KERNELS, "cpu", ReferenceConv()) as backend, sao.nn.fusion("compiled"):
        xc = x.clone().requires_grad_()
        got = conv(xc)
        got_grads = torch.autograd.grad(got.square().sum(), [xc, *conv.parameters()])
    assert conv.last_decision.route == "compiled" and (backend.forwards, backend.backwards) == (1, 1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_an_unavailable_backend_is_never_taken_and_refuses_when_forced() -> None:
    conv = SparseConv2d(8, 8, 3, padding=1, degree=2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 8, 6, 6)
    with registered(CONV_KERNELS, "cpu", ReferenceConv(why="the driver is missing")) as backend:
        assert kernel_blocker(x, "conv") == "the cpu conv kernel backend is unavailable: the driver is missing"
        with sao.nn.fusion("compiled"), pytest.raises(ValueError, match="the driver is missing"):
            conv(x)
        conv(x)  # auto: measured between the other routes
        assert conv.last_decision.route != "compiled" and backend.forwards == 0


def test_a_device_type_without_a_backend_gets_no_compiled_route() -> None:
    x = torch.empty(2, 8, 6, 6, device="meta")
    assert kernel_blocker(x, "conv") == ("no conv kernel backend for device type 'meta' (registered: cpu, cuda; "
                                         "sao.nn.kernels)")
    with registered(CONV_KERNELS, "meta", ReferenceConv()):
        assert kernel_blocker(x, "conv") is None


def test_a_registered_chain_backend_is_what_the_compiled_chain_runs() -> None:
    gen = torch.Generator().manual_seed(0)
    layers = [SparseLinear(16, 16, degree=4, dtype=torch.float64, generator=gen) for _ in range(3)]
    chain = FusedSparseChain(layers, [nn.Tanh() for _ in layers], fusion="compiled")
    x = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)
    want = FusedSparseChain(layers, [nn.Tanh() for _ in layers], fusion="off")(x)
    with registered(CHAIN_KERNELS, "cpu", ReferenceChain()) as backend:
        got = chain(x)
    assert backend.calls == 1 and chain.last_decision.route == "compiled"
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(*(torch.autograd.grad(y.sum(), x, retain_graph=True)[0] for y in (got, want)))


def test_only_backends_register() -> None:
    with pytest.raises(TypeError, match="must be an instance of ConvKernel"):
        CONV_KERNELS.register("xpu", 42)
    with pytest.raises(TypeError, match="must be an instance of ChainKernel"):
        CHAIN_KERNELS.register("xpu", ReferenceChain)  # the class, not an instance
    assert "xpu" not in CONV_KERNELS and "xpu" not in CHAIN_KERNELS


class WrongShapeConv(ReferenceConv):
    def forward(self, x, blocks, bias, perms, geometry, num_blocks):
        return super().forward(x, blocks, bias, perms, geometry, num_blocks)[..., :-1]


class NoneChain(ReferenceChain):
    def run(self, x, layers, activations, indices=None):
        return None


@pytest.mark.parametrize("mode", ["compiled", "auto"])
def test_a_backend_returning_the_wrong_thing_fails_loudly(mode: str) -> None:
    conv = SparseConv2d(8, 8, 3, padding=1, degree=2, generator=torch.Generator().manual_seed(0))
    with registered(CONV_KERNELS, "cpu", WrongShapeConv()), sao.nn.fusion(mode), \
            pytest.raises(RuntimeError, match=r"WrongShapeConv returned \(2, 8, 6, 5\).*expected \(2, 8, 6, 6\)"):
        conv(torch.randn(2, 8, 6, 6))
    layers = [SparseLinear(16, 16, degree=4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    chain = FusedSparseChain(layers, [nn.Tanh() for _ in layers], fusion=mode)
    with registered(CHAIN_KERNELS, "cpu", NoneChain()), pytest.raises(RuntimeError, match="NoneChain returned"):
        chain(torch.randn(4, 16))


class DetachedChain(ReferenceChain):
    def run(self, x, layers, activations, indices=None):
        return super().run(x, layers, activations, indices).detach()


def test_a_chain_backend_that_drops_the_gradient_fails_loudly() -> None:
    layers = [SparseLinear(16, 16, degree=4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    chain = FusedSparseChain(layers, [nn.Tanh() for _ in layers], fusion="compiled")
    with registered(CHAIN_KERNELS, "cpu", DetachedChain()):
        with pytest.raises(RuntimeError, match="DetachedChain returned an output detached from autograd"):
            chain(torch.randn(4, 16))
        with torch.no_grad():
            assert chain(torch.randn(4, 16)).shape == (4, 16)  # no gradient wanted: a detached output is right
