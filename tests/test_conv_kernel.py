"""The compiled SAO convolution equals the blocked layer's PyTorch route, forward and both gradients.

Properties over random shapes, strides, paddings, dilations, group widths, batch sizes (0, 1, unbatched),
layouts (channels-first, channels-last, strided) and dtypes: the ``"compiled"`` route of a blocked
:class:`~sao.nn.SparseConv2d` must give the ``"plain"`` route's output and the gradients of the input,
the blocks and the bias (float64 to 1e-10), pass ``gradcheck`` and ``gradgradcheck``, and the ``"auto"``
route decision must follow the measured rule without touching the layer's parameters or gradients.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from helpers import assert_trains_like, gen
from sao.nn import SparseConv2d, fusion
from sao.nn import _conv_kernel as ck
from sao.nn.dispatch import CONV_ROUTES, RouteTimer

KERNEL = ck.load_conv_kernel() is not None
needs_kernel = pytest.mark.skipif(not KERNEL, reason="the compiled conv kernel could not be built here")
TOL64 = {"atol": 1e-10, "rtol": 1e-10}
TOL32 = {"atol": 2e-5, "rtol": 2e-4}


def _layer(c_in: int, c_out: int, kernel: tuple[int, int], *, degree: int, dtype: torch.dtype = torch.float64,
           bias: bool = True, seed: int = 0, **kwargs: object) -> SparseConv2d:
    if any(side % 2 == 0 for side in kernel):
        kwargs.setdefault("init", "sao-eco")  # sao-delta needs a centre tap
    layer = SparseConv2d(c_in, c_out, kernel, degree=degree, bias=bias, generator=gen(seed), dtype=dtype, **kwargs)
    with torch.no_grad():  # every tap non-zero (an init may leave most of them zero, training does not)
        layer.blocks.normal_(generator=gen(seed + 1))
        if bias:
            layer.bias.normal_(generator=gen(seed + 2))
    return layer


def _routes_agree(layer: SparseConv2d, x: torch.Tensor, tol: dict) -> None:
    """Forward and the gradients of x, blocks and bias agree between "compiled" and "plain" (and "dense")."""
    results = {}
    for route in CONV_ROUTES:
        xr = x.detach().clone().requires_grad_()
        layer.zero_grad()
        y = layer.run(xr, route, layer.blocks, layer.bias)
        grad_y = torch.randn(y.shape, dtype=y.dtype, generator=gen(7))
        y.backward(grad_y)
        grads = [xr.grad] + [p.grad for p in (layer.blocks, layer.bias) if p is not None]
        results[route] = (y.detach(), [torch.zeros(()) if g is None else g.clone() for g in grads])
    ref_y, ref_grads = results["plain"]
    for route in ("compiled", "dense"):
        y, grads = results[route]
        assert y.shape == ref_y.shape
        torch.testing.assert_close(y, ref_y, **tol)
        for got, want in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want, **tol)


@st.composite
def conv_cases(draw: st.DrawFn) -> tuple:
    g = draw(st.sampled_from([1, 2, 3, 4, 8]))
    bm, bn = draw(st.sampled_from([1, 2, 3, 4, 8, 16])), draw(st.sampled_from([1, 2, 3, 4, 8, 16]))
    kernel = (draw(st.sampled_from([1, 3, 5])), draw(st.sampled_from([1, 3, 5])))  # sao-delta: odd sides
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    span = [dilation[i] * (kernel[i] - 1) + 1 - 2 * padding[i] for i in range(2)]
    size = [draw(st.integers(max(1, span[i]), max(1, span[i]) + 9)) for i in range(2)]
    batch = draw(st.sampled_from([None, 0, 1, 2, 5]))
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    bias = draw(st.booleans())
    return g, bm, bn, kernel, stride, dilation, padding, size, batch, layout, bias


def _input(c_in: int, size: list[int], batch: int | None, layout: str, dtype: torch.dtype) -> torch.Tensor:
    shape = ([] if batch is None else [batch]) + [c_in, *size]
    x = torch.randn(shape, dtype=dtype, generator=gen(3))
    if layout == "channels_last" and batch is not None:
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn([*shape[:-1], 2 * shape[-1]], dtype=dtype, generator=gen(3))[..., ::2]
    return x


@needs_kernel
@settings(max_examples=120)
@given(conv_cases())
def test_compiled_equals_plain_float64(case: tuple) -> None:
    g, bm, bn, kernel, stride, dilation, padding, size, batch, layout, bias = case
    c_in, c_out = g * bn, g * bm
    layer = _layer(c_in, c_out, kernel, degree=max(c_in, c_out) // g, bias=bias, stride=stride,
                   dilation=dilation, padding=padding)
    assert layer.num_blocks == g
    _routes_agree(layer, _input(c_in, size, batch, layout, torch.float64), TOL64)


@needs_kernel
@settings(max_examples=30)
@given(conv_cases())
def test_compiled_equals_plain_float32(case: tuple) -> None:
    g, bm, bn, kernel, stride, dilation, padding, size, batch, layout, bias = case
    c_in, c_out = g * bn, g * bm
    layer = _layer(c_in, c_out, kernel, degree=max(c_in, c_out) // g, dtype=torch.float32, bias=bias,
                   stride=stride, dilation=dilation, padding=padding)
    _routes_agree(layer, _input(c_in, size, batch, layout, torch.float32), TOL32)


@needs_kernel
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", ["same", "valid", (2, 1)])
def test_padding_modes_and_string_padding(padding_mode: str, padding: object) -> None:
    if padding == "same":
        kernel, stride = (4, 4), 1  # even kernel: "same" pads asymmetrically
    else:
        kernel, stride = (3, 3), 2
    layer = _layer(8, 8, kernel, degree=2, padding=padding, padding_mode=padding_mode, stride=stride)
    _routes_agree(layer, torch.randn(2, 8, 9, 7, dtype=torch.float64, generator=gen(4)), TOL64)
    _routes_agree(layer, torch.randn(8, 9, 7, dtype=torch.float64, generator=gen(4)), TOL64)  # unbatched


@needs_kernel
def test_gradcheck_and_gradgradcheck() -> None:
    layer = _layer(6, 4, (3, 1), degree=3, stride=(2, 1), padding=(1, 1), dilation=(1, 2))
    x = torch.randn(2, 6, 6, 5, dtype=torch.float64, generator=gen(5), requires_grad=True)
    blocks, bias = layer.blocks.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()

    def f(x: torch.Tensor, blocks: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return layer.run(x, "compiled", blocks, bias)

    assert torch.autograd.gradcheck(f, (x, blocks, bias))
    assert torch.autograd.gradgradcheck(f, (x, blocks, bias))


@needs_kernel
def test_vmap_batched_gradients_through_the_kernels() -> None:
    """Vectorized Jacobians pass vmap-batched gradients into a kernel's backward (which then runs PyTorch
    ops): the compiled conv and the compiled chain give the plain Jacobian."""
    from sao.nn import SparseLinear, fuse_sparse_chains
    from sao.nn._chain_kernel import load_chain_kernel

    conv = _layer(8, 8, (3, 3), degree=2, padding=1, stride=2, fusion="compiled")
    models = [(conv, torch.randn(1, 8, 5, 5, dtype=torch.float64, generator=gen(11)))]
    if load_chain_kernel() is not None:
        chain = fuse_sparse_chains(nn.Sequential(
            SparseLinear(8, 8, degree=2, dtype=torch.float64, generator=gen(12)), nn.Tanh(),
            SparseLinear(8, 8, degree=2, dtype=torch.float64, generator=gen(13)), nn.Tanh()), fusion="compiled")
        models.append((chain, torch.randn(3, 8, dtype=torch.float64, generator=gen(14))))
    for model, x in models:
        jac = torch.autograd.functional.jacobian(model, x, vectorize=True)
        with fusion("off"):
            torch.testing.assert_close(jac, torch.autograd.functional.jacobian(model, x), **TOL64)


@needs_kernel
def test_layer_compiled_mode_matches_off_and_trains_the_same() -> None:
    """Through the module: fusion="compiled" vs "off", forward, backward and two SGD steps."""
    torch.manual_seed(0)
    model = nn.Sequential(_layer(8, 16, (3, 3), degree=4, padding=1), nn.ReLU(),
                          _layer(16, 16, (3, 3), degree=4, stride=2, padding=1, seed=2), nn.Tanh())
    twin = assert_trains_like(model, torch.randn(3, 8, 10, 10, dtype=torch.float64, generator=gen(6)), "compiled",
                              **TOL64)
    assert model[0].last_decision.route == "compiled" and twin[0].last_decision.route == "plain"


@needs_kernel
def test_threads_do_not_change_the_result() -> None:
    """The weight gradient is summed over per-thread partials: 1 and 2 threads agree."""
    layer = _layer(16, 16, (3, 3), degree=4, padding=1, dtype=torch.float64)
    x = torch.randn(7, 16, 9, 9, dtype=torch.float64, generator=gen(8))
    out = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            layer.zero_grad()
            layer.run(x, "compiled", layer.blocks, layer.bias).square().sum().backward()
            out.append(layer.blocks.grad.clone())
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(out[0], out[1], **TOL64)


class FakeTimer(RouteTimer):
    """A timer whose routes cost what the test says (the probe still runs every route once per round)."""

    def __init__(self, costs: dict[str, float]) -> None:
        self.now = 0.0
        super().__init__(clock=lambda: self.now)
        self.costs = costs

    def choose(self, key: tuple, runs: dict, device: torch.device, margin: float = 0.9) -> object:
        runs = {r: (lambda r=r, run=run: (run(), setattr(self, "now", self.now + self.costs[r]))) for r, run in
                runs.items()}
        return super().choose(key, runs, device, margin)


@needs_kernel
@pytest.mark.parametrize(("costs", "expected"), [
    ({"plain": 1.0, "dense": 2.0, "compiled": 0.2}, "compiled"),
    ({"plain": 1.0, "dense": 0.5, "compiled": 0.8}, "dense"),
    ({"plain": 1.0, "dense": 0.97, "compiled": 0.95}, "compiled"),  # a layer takes the fastest, no margin
    ({"plain": 1.0, "dense": 1.2, "compiled": 1.1}, "plain"),
])
def test_auto_takes_the_measured_route_and_leaves_the_layer_alone(costs: dict, expected: str) -> None:
    layer = _layer(8, 8, (3, 3), degree=2, padding=1)
    layer.timer = FakeTimer(costs)
    reference = copy.deepcopy(layer)
    x = torch.randn(4, 8, 6, 6, dtype=torch.float64, generator=gen(9), requires_grad=True)
    y = layer(x)
    assert layer.last_decision.route == expected and set(layer.last_decision.seconds) == set(CONV_ROUTES)
    assert layer.blocks.grad is None and x.grad is None  # the probe touched nothing
    y.sum().backward()
    with fusion("off"):
        reference(x.detach()).sum().backward()
    torch.testing.assert_close(layer.blocks.grad, reference.blocks.grad, **TOL64)
    # a new case (no grad) is measured again; the cached one is not
    with torch.no_grad():
        layer(x)
    assert len(layer.timer.decisions) == 2
    layer(x)
    assert len(layer.timer.decisions) == 2


@needs_kernel
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_decisions_for_call_kinds_and_forced_modes() -> None:
    layer = _layer(8, 8, (3, 3), degree=2, padding=1, dtype=torch.float32)
    layer.timer = FakeTimer({"plain": 1.0, "dense": 2.0, "compiled": 0.1})
    x = torch.randn(2, 8, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    assert layer.last_decision.route == "plain" and "autocast" in layer.last_decision.reason
    torch.func.vmap(layer)(x.unsqueeze(0))
    assert layer.last_decision.route == "plain" and "torch.func" in layer.last_decision.reason
    torch.jit.trace(layer, x, check_trace=False)
    assert layer.last_decision.route == "plain" and "tracing" in layer.last_decision.reason
    with pytest.raises(RuntimeError):  # PyTorch's own error, from the plain route
        layer(x.double())
    assert layer.last_decision.route == "plain"
    layer.fusion = "compiled"
    with pytest.raises(ValueError, match=r"fusion='compiled' cannot run this call exactly.*autocast"), \
            torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    with pytest.raises(ValueError, match="give an input like the parameters"):
        layer(x.double())
    layer(x)
    assert layer.last_decision.route == "compiled"
    with fusion("off"):
        layer(x)
    assert layer.last_decision.route == "plain"
    with pytest.raises(ValueError, match="choose from auto, off, fused, compiled"):
        SparseConv2d(8, 8, 3, degree=2, fusion="fast")


@needs_kernel
def test_hooks_and_parametrizations_are_honoured() -> None:
    """The routes run inside the layer's forward: its hooks run around them, a parametrized blocks is used."""
    from torch.nn.utils import parametrize

    class Half(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * 0.5

    layer = _layer(8, 8, (3, 3), degree=2, padding=1, fusion="compiled")
    twin = copy.deepcopy(layer)
    twin.fusion = "off"
    for m in (layer, twin):
        parametrize.register_parametrization(m, "blocks", Half())
        m.register_forward_hook(lambda mod, args, out: out + 1)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64, generator=gen(10))
    torch.testing.assert_close(layer(x), twin(x), **TOL64)


@needs_kernel
def test_deterministic_algorithms_fix_the_route() -> None:
    """A measured route depends on timing noise; deterministic mode takes a fixed one and measures nothing."""
    from helpers import deterministic

    layer = _layer(8, 8, (3, 3), degree=2, padding=1)
    layer.timer = FakeTimer({"plain": 0.1, "dense": 0.1, "compiled": 1.0})  # measuring would pick plain
    with deterministic():
        layer(torch.randn(2, 8, 5, 5, dtype=torch.float64))
    assert layer.last_decision.route == "compiled" and not layer.timer.decisions
    assert "deterministic" in layer.last_decision.reason
    layer(torch.randn(2, 8, 5, 5, dtype=torch.float64))
    assert layer.last_decision.route == "plain" and layer.timer.decisions


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_dense_route_sees_every_change_of_the_weights(kind: str) -> None:
    """The "dense" route's weight follows the blocks and the topology: an optimizer step, load_state_dict, an
    in-place edit, a write through ``.data`` (no version bump, same storage) and a dtype change."""
    from sao.nn import SparseLinear

    def make(seed: int) -> nn.Module:
        if kind == "conv":
            return _layer(8, 8, (3, 3), degree=2, padding=1, seed=seed, fusion="off")
        return SparseLinear(8, 8, degree=2, dtype=torch.float64, generator=gen(seed), fusion="off")

    layer, other = make(0), make(5)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64) if kind == "conv" else torch.randn(3, 8, dtype=torch.float64)

    def dense() -> torch.Tensor:
        return layer.run(x, "dense", layer.blocks, layer.bias)

    def expected() -> torch.Tensor:
        with fusion("off"):
            return layer(x)

    with torch.no_grad():
        dense()
        layer.blocks.mul_(2)
        torch.testing.assert_close(dense(), expected(), **TOL64)
        layer.blocks.data.mul_(-0.5)  # through .data: the version counter does not move
        torch.testing.assert_close(dense(), expected(), **TOL64)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer.run(x, "dense", layer.blocks, layer.bias).square().sum().backward()
    opt.step()
    with torch.no_grad():
        torch.testing.assert_close(dense(), expected(), **TOL64)
        layer.load_state_dict(other.state_dict())  # another topology and values
        torch.testing.assert_close(dense(), expected(), **TOL64)
        layer.blocks.data = layer.blocks.data * 3  # a new storage
        torch.testing.assert_close(dense(), expected(), **TOL64)
        layer.float()
        x = x.float()
        torch.testing.assert_close(dense(), expected(), **TOL32)


def test_fusion_attribute_is_checked() -> None:
    from sao.nn import SparseLinear

    for layer in (SparseConv2d(8, 8, 3, degree=2), SparseLinear(8, 8, degree=2)):
        layer.fusion = "off"
        assert layer.fusion == "off" and "fusion='off'" in repr(layer)
        with pytest.raises(ValueError, match="choose from auto, off, fused, compiled"):
            layer.fusion = "fast"


def test_state_round_trips_keep_the_mode_and_measure_again() -> None:
    layer = _layer(8, 8, (3, 3), degree=2, padding=1, fusion="off")
    layer(torch.randn(1, 8, 4, 4, dtype=torch.float64))
    for copied in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert copied.fusion == "off" and copied.timer is not layer.timer and not copied.timer.decisions
    assert "fusion" not in "".join(layer.state_dict())
    assert "fusion='off'" in repr(layer)
    meta = SparseConv2d(8, 8, 3, degree=2, padding=1, device="meta")
    assert meta(torch.empty(2, 8, 5, 5, device="meta")).shape == (2, 8, 5, 5)
    assert meta.last_decision.route == "plain"


def test_kernel_disabled_runs_the_other_routes() -> None:
    code = ("import warnings, torch; from sao.nn import SparseConv2d\n"
            "layer = SparseConv2d(8, 8, 3, degree=2, padding=1)\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always'); layer(torch.randn(2, 8, 5, 5)); layer(torch.randn(3, 8, 5, 5))\n"
            "assert set(layer.last_decision.seconds) == {'plain', 'dense'}, layer.last_decision\n"
            "assert sum('disabled' in str(x.message) for x in w) == 1, [str(x.message) for x in w]\n")
    env = {**os.environ, "SAO_DISABLE_CONV_KERNEL": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)


def test_import_builds_nothing() -> None:
    code = "import sao, sao.nn._conv_kernel as ck; assert not ck._EXTENSION.state['tried']"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
