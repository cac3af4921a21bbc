"""Sparse layers: ``SparseLinear``, ``SparseConv2d`` and ``ECOConv2d`` (paper §IV-A, §IV-C).

The two storage backends (``"blocked"``: only the dense blocks of the topology, batched matmul
or grouped convolution; ``"masked"``: dense ``weight_orig`` times a fixed ``weight_mask``) must
hold the same values after the same seeded construction, compute the same function with the
same gradients, and keep the topology fixed while training.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from helpers import deterministic, gen
from sao.nn import BACKENDS, ECOConv2d, SparseConv2d, SparseLinear
from sao.nn._sparse import SparseLayerBase
from sao.spectral import operator_singular_values
from sao.topology import ramanujan

F32_ATOL = 1e-5
F64_ATOL = 1e-12
DTYPES = [pytest.param(torch.float32, F32_ATOL, id="float32"), pytest.param(torch.float64, F64_ATOL, id="float64")]
LINEAR_INITS = ["sao", "rg-normal", "rg-uniform"]
# (out_features, in_features, degree): square, wider, taller, dense.
LINEAR_SHAPES = [
    pytest.param(256, 256, 4, id="256x256-d4"),
    pytest.param(128, 512, 16, id="128x512-d16"),
    pytest.param(512, 128, 16, id="512x128-d16"),
    pytest.param(64, 64, 64, id="64x64-dense"),
]
# (out_channels, in_channels, degree)
CONV_CHANNELS = [
    pytest.param(16, 16, 4, id="16to16-d4"),
    pytest.param(32, 16, 8, id="16to32-d8"),
    pytest.param(16, 32, 8, id="32to16-d8"),
]

Layer = SparseLinear | SparseConv2d
Factory = Callable[..., Layer]


def backend_pair(factory: Factory, seed: int = 0) -> tuple[Layer, Layer]:
    """The blocked and the masked layer built by ``factory(backend=, generator=)`` from one seed."""
    return factory(backend="blocked", generator=gen(seed)), factory(backend="masked", generator=gen(seed))


def dense_weight_grad(layer: Layer) -> Tensor:
    """The gradient of the layer's stored weight as a dense ``(out, in, *k)`` tensor."""
    if layer.backend == "blocked":
        return layer.topology.blocks_to_dense(layer.blocks.grad.view_as(layer.block_view()))
    return layer.weight_orig.grad


def stored_weight(layer: Layer) -> Tensor:
    """The stored weight parameter as a dense tensor (``blocks`` scattered, or ``weight_orig``)."""
    return layer.weight if layer.backend == "blocked" else layer.weight_orig


def forward_backward(layer: Layer, x: Tensor, probe: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Output, dense weight grad, bias grad and input grad of ``sum(layer(x) * probe)``."""
    x = x.detach().clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    out = layer(x)
    (out * probe).sum().backward()
    bias_grad = None if layer.bias is None else layer.bias.grad
    return out.detach(), dense_weight_grad(layer), bias_grad, x.grad


def assert_same_topology(a: Layer, b: Layer) -> None:
    assert torch.equal(a.row_perm, b.row_perm)
    assert torch.equal(a.col_perm, b.col_perm)
    assert (a.num_blocks, a.mirrored, a.degree) == (b.num_blocks, b.mirrored, b.degree)
    assert torch.equal(a.mask, b.mask)


def assert_backends_agree(blocked: Layer, masked: Layer, x: Tensor, atol: float) -> None:
    """Same output, weight/bias/input gradients; masked ``weight_orig.grad`` exactly zero off the mask.

    The loss is ``sum(out * probe)`` with a random probe scaled by ``1/sqrt(positions)`` (batch and
    spatial positions summed into each weight gradient), so gradients are O(1) and ``atol`` means
    the same for a linear layer and a convolution.
    """
    with torch.no_grad():
        shape = blocked(x).shape
        positions = math.prod(shape) // (shape[1] if len(shape) == 4 else shape[-1])
        probe = torch.randn(shape, generator=gen(99), dtype=torch.float64) / math.sqrt(positions)
        probe = probe.to(x.device, x.dtype)
    out_b, wg_b, bg_b, xg_b = forward_backward(blocked, x, probe)
    out_m, wg_m, bg_m, xg_m = forward_backward(masked, x, probe)
    torch.testing.assert_close(out_b, out_m, atol=atol, rtol=0)
    torch.testing.assert_close(wg_b, wg_m, atol=atol, rtol=0)
    torch.testing.assert_close(xg_b, xg_m, atol=atol, rtol=0)
    if blocked.bias is None:
        assert bg_b is None and bg_m is None
    else:
        torch.testing.assert_close(bg_b, bg_m, atol=atol, rtol=0)
    assert (wg_m[~masked.mask] == 0).all()
    assert wg_m[masked.mask].abs().sum() > 0


def kernel_support(w: Tensor) -> Tensor:
    """Bool ``(c_out, c_in)``: which kernels have any non-zero tap."""
    return (w != 0).flatten(2).any(dim=2)


# --------------------------------------------------------------------------- 1. SparseLinear backends

@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("init", LINEAR_INITS)
@pytest.mark.parametrize("m, n, degree", LINEAR_SHAPES)
@pytest.mark.parametrize("dtype, atol", DTYPES)
def test_linear_backends_agree(m: int, n: int, degree: int, init: str, activation: str, bias: bool,
                               dtype: torch.dtype, atol: float) -> None:
    blocked, masked = backend_pair(lambda **kw: SparseLinear(n, m, degree=degree, bias=bias, init=init,
                                                             activation=activation, gain=1.1, dtype=dtype, **kw))
    assert torch.equal(blocked.weight, masked.weight)
    assert blocked.weight.dtype == masked.weight.dtype == dtype
    assert_same_topology(blocked, masked)
    assert blocked.mirrored == (activation == "relu" and init == "sao")
    if bias:  # a non-zero bias, identical on both, so the bias path is exercised
        b = torch.randn(m, generator=gen(5), dtype=torch.float64).to(dtype)
        with torch.no_grad():
            blocked.bias.copy_(b)
            masked.bias.copy_(b)
    x = torch.randn(3, 5, n, generator=gen(1), dtype=torch.float64).to(dtype)
    assert blocked(x).shape == (3, 5, m)
    assert_backends_agree(blocked, masked, x, atol)


# --------------------------------------------------------------------------- 2. SparseConv2d backends

@pytest.mark.parametrize("c_out, c_in, degree", CONV_CHANNELS)
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, "same")], ids=["s1-p1", "s2-p1", "s1-same"])
@pytest.mark.parametrize("init, activation", [("sao-delta", "tanh"), ("sao-delta", "relu"), ("sao-eco", "tanh")],
                         ids=["sao-delta", "sao-delta-relu", "sao-eco"])
def test_conv_backends_agree(c_out: int, c_in: int, degree: int, init: str, activation: str, stride: int,
                             padding: int | str, padding_mode: str, dilation: int) -> None:
    blocked, masked = backend_pair(lambda **kw: SparseConv2d(
        c_in, c_out, 3, stride=stride, padding=padding, dilation=dilation, padding_mode=padding_mode,
        degree=degree, init=init, activation=activation, **kw))
    assert torch.equal(blocked.weight, masked.weight)
    assert_same_topology(blocked, masked)
    assert blocked.mirrored == (activation == "relu" and init == "sao-delta")
    with torch.no_grad():
        b = torch.randn(c_out, generator=gen(5))
        blocked.bias.copy_(b)
        masked.bias.copy_(b)
    x = torch.randn(2, c_in, 7, 7, generator=gen(1))
    ref = nn.Conv2d(c_in, c_out, 3, stride, padding, dilation, padding_mode=padding_mode)
    assert blocked(x).shape == masked(x).shape == ref(x).shape
    assert_backends_agree(blocked, masked, x, F32_ATOL)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("padding_mode", ["zeros", "circular", "reflect"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_conv_backends_agree_even_kernel_float64(padding_mode: str, bias: bool) -> None:
    # An even kernel with padding="same" pads asymmetrically; float64 to the tight tolerance.
    blocked, masked = backend_pair(lambda **kw: SparseConv2d(
        8, 12, 2, padding="same", padding_mode=padding_mode, bias=bias, degree=6, init="sao-eco",
        dtype=torch.float64, **kw))
    x = torch.randn(2, 8, 6, 6, generator=gen(1), dtype=torch.float64)
    assert blocked(x).shape == (2, 12, 6, 6)
    assert_backends_agree(blocked, masked, x, F64_ATOL)


# --------------------------------------------------------------------------- 3. training keeps the topology

TRAIN_LAYERS = {
    "linear-sao": lambda **kw: SparseLinear(64, 32, degree=8, init="sao", **kw),
    "linear-sao-relu": lambda **kw: SparseLinear(32, 32, degree=8, init="sao", activation="relu", **kw),
    "linear-rg-uniform": lambda **kw: SparseLinear(32, 64, degree=8, init="rg-uniform", **kw),
    "conv-sao-delta": lambda **kw: SparseConv2d(8, 16, 3, padding=1, degree=4, init="sao-delta", **kw),
    "conv-sao-eco": lambda **kw: SparseConv2d(16, 8, 3, padding=1, padding_mode="circular", degree=4,
                                              init="sao-eco", **kw),
}
OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
}


def train_input(layer: Layer, batch: int, seed: int) -> Tensor:
    if isinstance(layer, SparseLinear):
        return torch.randn(batch, layer.in_features, generator=gen(seed))
    return torch.randn(batch, layer.in_channels, 6, 6, generator=gen(seed))


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("name", list(TRAIN_LAYERS))
def test_training_keeps_topology(name: str, optimizer: str) -> None:
    layers = backend_pair(TRAIN_LAYERS[name])
    start = layers[0].weight.detach().clone()
    mask = layers[0].mask
    opts = [OPTIMIZERS[optimizer](layer.parameters()) for layer in layers]
    for step in range(5):
        x = train_input(layers[0], 8, seed=10 + step)
        with torch.no_grad():
            target = torch.randn(layers[0](x).shape, generator=gen(20 + step))
        for layer, opt in zip(layers, opts, strict=True):
            opt.zero_grad()
            F.mse_loss(torch.tanh(layer(x)), target).backward()
            opt.step()
    blocked, masked = layers
    torch.testing.assert_close(blocked.weight, masked.weight, atol=F32_ATOL, rtol=0)
    torch.testing.assert_close(blocked.bias, masked.bias, atol=F32_ATOL, rtol=0)
    assert (blocked.weight - start)[mask].abs().max() > 1e-3  # it did train
    for layer in layers:
        assert torch.equal(layer.mask, mask)
        assert (layer.weight[~mask] == 0).all()
        assert (stored_weight(layer)[~mask] == 0).all()
    if name == "conv-sao-delta":  # off-centre taps of kept kernels learn from zero
        off_centre = blocked.weight.detach().clone()
        off_centre[:, :, 1, 1] = 0
        assert torch.equal(kernel_support(off_centre), mask)


# --------------------------------------------------------------------------- 4. to_dense

DENSE_CASES = {
    "linear": lambda **kw: SparseLinear(48, 24, degree=6, **kw),
    "linear-nobias": lambda **kw: SparseLinear(24, 48, degree=6, bias=False, **kw),
    "conv-s2-zeros": lambda **kw: SparseConv2d(8, 16, 3, stride=2, padding=1, degree=4, **kw),
    "conv-same-circular-dil2": lambda **kw: SparseConv2d(16, 8, 3, padding="same", padding_mode="circular",
                                                         dilation=2, degree=4, init="sao-eco", **kw),
    "conv-nobias-reflect": lambda **kw: SparseConv2d(8, 8, 3, padding=1, padding_mode="reflect", degree=2,
                                                     bias=False, **kw),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(DENSE_CASES))
def test_to_dense_same_function_and_copy(name: str, backend: str) -> None:
    layer = DENSE_CASES[name](backend=backend, generator=gen())
    if layer.bias is not None:
        with torch.no_grad():
            layer.bias.normal_(generator=gen(4))
    dense = layer.to_dense()
    assert type(dense) is (nn.Linear if isinstance(layer, SparseLinear) else nn.Conv2d)
    assert (dense.bias is None) == (layer.bias is None)
    x = train_input(layer, 3, seed=1)
    torch.testing.assert_close(dense(x), layer(x), atol=1e-6, rtol=0)
    assert torch.equal(dense.weight, layer.weight)
    weight, out = layer.weight.detach().clone(), layer(x).detach()
    with torch.no_grad():
        dense.weight.add_(1.0)
        if dense.bias is not None:
            dense.bias.add_(1.0)
    assert torch.equal(layer.weight, weight)
    assert torch.equal(layer(x), out)


# --------------------------------------------------------------------------- 5. structure

STRUCTURE_CASES = [
    *[pytest.param(SparseLinear, m, n, d, init, act, id=f"linear-{m}x{n}-d{d}-{init}-{act}")
      for m, n, d in [(256, 256, 4), (128, 512, 16), (512, 128, 16), (64, 64, 64), (24, 36, 6)]
      for init, act in [("sao", "tanh"), ("sao", "relu"), ("rg-normal", "tanh"), ("rg-uniform", "relu")]],
    *[pytest.param(SparseConv2d, m, n, d, init, act, id=f"conv-{m}x{n}-d{d}-{init}-{act}")
      for m, n, d in [(16, 16, 4), (32, 16, 8), (16, 32, 8), (8, 8, 8)]
      for init, act in [("sao-delta", "tanh"), ("sao-delta", "relu"), ("sao-eco", "tanh")]],
]


def build(cls: type, m: int, n: int, degree: int, init: str, activation: str, **kw: object) -> Layer:
    if cls is SparseLinear:
        return SparseLinear(n, m, degree=degree, init=init, activation=activation, **kw)
    return SparseConv2d(n, m, 3, padding=1, degree=degree, init=init, activation=activation, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls, m, n, degree, init, activation", STRUCTURE_CASES)
def test_structure(cls: type, m: int, n: int, degree: int, init: str, activation: str, backend: str) -> None:
    layer = build(cls, m, n, degree, init, activation, backend=backend, generator=gen())
    mask = layer.mask
    g = max(m, n) // degree
    assert mask.dtype == torch.bool and mask.shape == (m, n)
    assert (layer.degree, layer.num_blocks) == (degree, g)
    rows, cols = mask.sum(1), mask.sum(0)
    if m <= n:  # the outputs are the smaller side
        assert (rows == degree).all() and (cols == m * degree // n).all()
    else:
        assert (cols == degree).all() and (rows == n * degree // m).all()
    assert (rows == layer.topology.row_degree).all() and (cols == layer.topology.col_degree).all()
    w = layer.weight.detach()
    support = kernel_support(w) if w.dim() == 4 else w != 0
    assert torch.equal(support, mask)
    assert layer.sparsity == pytest.approx(1 - degree / max(m, n), abs=1e-12)
    assert layer.sparsity == pytest.approx(float((~support).double().mean()), abs=1e-12)
    taps = w[0, 0].numel()
    weights = {name: p.numel() for name, p in layer.named_parameters() if name != "bias"}
    if backend == "blocked":
        assert weights == {"blocks": g * (m // g) * (n // g) * taps}
        assert weights["blocks"] == m * n * taps // g  # memory ∝ density
    else:
        assert weights == {"weight_orig": m * n * taps}
    if layer.mirrored:  # ReLU variant: W = [[S0, -S0], [-S0, S0]] (on the centre tap for convolutions)
        c = w if w.dim() == 2 else w[:, :, 1, 1]
        s0 = c[: m // 2, : n // 2]
        assert torch.equal(c, torch.cat([torch.cat([s0, -s0], 1), torch.cat([-s0, s0], 1)], 0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gain", [1.0, 1.1])
@pytest.mark.parametrize("m, n, degree", LINEAR_SHAPES)
def test_sao_linear_is_semi_orthogonal(m: int, n: int, degree: int, gain: float, backend: str) -> None:
    layer = SparseLinear(n, m, degree=degree, gain=gain, backend=backend, dtype=torch.float64, generator=gen())
    w = layer.weight.detach()
    gram = w @ w.T if m <= n else w.T @ w
    torch.testing.assert_close(gram, gain**2 * torch.eye(min(m, n), dtype=torch.float64), atol=1e-10, rtol=0)


def test_relu_sao_half_is_semi_orthogonal() -> None:
    layer = SparseLinear(64, 32, degree=8, activation="relu", gain=1.1, dtype=torch.float64, generator=gen())
    s0 = layer.weight.detach()[:16, :32]
    torch.testing.assert_close(s0 @ s0.T, 1.21 * torch.eye(16, dtype=torch.float64), atol=1e-10, rtol=0)


# --------------------------------------------------------------------------- 6. state_dict, deepcopy, .to

STATE_CASES = {
    "linear": lambda **kw: SparseLinear(32, 16, degree=8, **kw),
    "conv": lambda **kw: SparseConv2d(8, 16, 3, padding=1, degree=4, **kw),
}


def test_state_dict_holds_topology_not_row_inverse() -> None:
    for backend in BACKENDS:
        for factory in STATE_CASES.values():
            sd = factory(backend=backend, generator=gen()).state_dict()
            assert {"row_perm", "col_perm"} <= set(sd) and "row_inverse" not in sd
            assert ("blocks" in sd) == (backend == "blocked")
            assert ("weight_orig" in sd and "weight_mask" in sd) == (backend == "masked")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(STATE_CASES))
def test_state_dict_round_trip_topology(name: str, backend: str) -> None:
    a = STATE_CASES[name](backend=backend, generator=gen(0))
    b = STATE_CASES[name](backend=backend, generator=gen(1))
    assert not torch.equal(a.row_perm, b.row_perm)
    b.load_state_dict(a.state_dict())
    assert_same_topology(a, b)
    assert torch.equal(a.weight, b.weight)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(STATE_CASES))
def test_state_dict_round_trip_outputs(name: str, backend: str) -> None:
    a = STATE_CASES[name](backend=backend, generator=gen(0))
    b = STATE_CASES[name](backend=backend, generator=gen(1))
    b.load_state_dict(a.state_dict())
    x = train_input(a, 3, seed=2)
    with deterministic():  # bit for bit: both on the same route
        torch.testing.assert_close(b(x), a(x), atol=0, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(STATE_CASES))
def test_deepcopy_is_independent(name: str, backend: str) -> None:
    a = STATE_CASES[name](backend=backend, generator=gen())
    b = copy.deepcopy(a)
    x = train_input(a, 3, seed=2)
    assert_same_topology(a, b)
    with deterministic():
        torch.testing.assert_close(b(x), a(x), atol=0, rtol=0)
    out = a(x).detach()
    with torch.no_grad():
        next(b.parameters()).add_(1.0)
    assert torch.equal(a(x), out)


@pytest.mark.parametrize("name", list(STATE_CASES))
def test_to_float64(name: str) -> None:
    layers = backend_pair(STATE_CASES[name])
    x = train_input(layers[0], 3, seed=2)
    before = [layer(x).detach() for layer in layers]
    for layer, out in zip(layers, before, strict=True):
        layer.to(torch.float64)
        assert all(p.dtype == torch.float64 for p in layer.parameters())
        assert layer.weight.dtype == torch.float64
        assert layer.row_perm.dtype == layer.col_perm.dtype == layer.row_inverse.dtype == torch.long
        torch.testing.assert_close(layer(x.double()), out.double(), atol=F32_ATOL, rtol=0)
    assert_backends_agree(*layers, x.double(), F64_ATOL)


# --------------------------------------------------------------------------- 7. ECOConv2d

# (c_in, c_out, kernel, input_size, stride); inner channels C = max(c_out, c_in * stride²).
ECO_CASES = [
    pytest.param(4, 8, 3, 6, 1, id="4to8-k3-n6-s1"),
    pytest.param(8, 4, 2, 4, 1, id="8to4-k2-n4-s1"),
    pytest.param(4, 4, 1, 4, 1, id="4to4-k1-n4-s1"),
    pytest.param(2, 4, 3, 6, 2, id="2to4-k3-n6-s2"),
    pytest.param(4, 2, 2, 8, 2, id="4to2-k2-n8-s2"),
    pytest.param(4, 2, 3, 6, 2, id="4to2-k3-n6-s2"),
    pytest.param(4, 8, 1, 6, 3, id="4to8-k1-n6-s3"),
    pytest.param(1, 12, 2, 6, 3, id="1to12-k2-n6-s3"),
]


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.75], ids=["dense", "sp0.5", "sp0.75"])
@pytest.mark.parametrize("c_in, c_out, k, size, stride", ECO_CASES)
def test_eco_layer_is_orthogonal(c_in: int, c_out: int, k: int, size: int, stride: int, sparsity: float) -> None:
    layer = ECOConv2d(c_in, c_out, k, input_size=size, stride=stride, sparsity=sparsity, dtype=torch.float64,
                      generator=gen())
    assert layer.channels == max(c_out, c_in * stride**2)
    assert layer.conv.sparsity == pytest.approx(sparsity, abs=1e-12)
    out = size // stride
    assert layer(torch.zeros(2, c_in, size, size, dtype=torch.float64)).shape == (2, c_out, out, out)
    s = operator_singular_values(layer, (c_in, size, size))
    assert s.numel() == min(c_out * out * out, c_in * size * size)
    torch.testing.assert_close(s, torch.ones_like(s), atol=1e-8, rtol=0)


def test_eco_layer_default_is_dense_and_degree_works() -> None:
    assert ECOConv2d(4, 4, 3, input_size=6).conv.sparsity == 0.0
    layer = ECOConv2d(4, 4, 3, input_size=6, degree=2, dtype=torch.float64, generator=gen())
    assert layer.conv.degree == 2 and layer.conv.num_blocks == 2
    s = operator_singular_values(layer, (4, 6, 6))
    torch.testing.assert_close(s, torch.ones_like(s), atol=1e-8, rtol=0)


@pytest.mark.parametrize("c_in, c_out, k, size, stride", [ECO_CASES[0], ECO_CASES[3], ECO_CASES[6]])
def test_eco_redrawn_keeps_the_configuration_and_draws_afresh(c_in: int, c_out: int, k: int, size: int,
                                                             stride: int) -> None:
    """``redrawn``: a new ECO layer of the same configuration (what ``sparsify(..., "sao")`` puts in an ECO layer's
    place), SAO-ECO at the target or dense without one, the same as building it with those arguments."""
    old = ECOConv2d(c_in, c_out, k, input_size=size, stride=stride, bias=False, dtype=torch.float64, generator=gen())
    for target in ({}, {"sparsity": 0.5}, {"degree": 1}):
        new = old.redrawn(**target, backend="masked", gain=2.0, generator=gen(4))
        assert new is not old and type(new) is ECOConv2d
        assert (new.in_channels, new.out_channels, new.input_size, new.stride, new.channels) == (
            old.in_channels, old.out_channels, old.input_size, old.stride, old.channels)
        assert new.conv.kernel_size == old.conv.kernel_size and new.conv.dilation == old.conv.dilation
        assert new.conv.bias is None and new.conv.backend == "masked" and new.conv.weight.dtype == torch.float64
        built = ECOConv2d(c_in, c_out, k, input_size=size, stride=stride, bias=False, backend="masked", gain=2.0,
                          dtype=torch.float64, generator=gen(4), **target)
        assert torch.equal(new.conv.weight, built.conv.weight)
        assert new.conv.sparsity == built.conv.sparsity == (0.0 if not target else 1 - new.conv.degree / new.channels)
        s = operator_singular_values(new, (c_in, size, size))
        torch.testing.assert_close(s, torch.full_like(s, 2.0), atol=1e-8, rtol=0)
    assert old.conv.sparsity == 0.0  # the original is untouched
    with pytest.raises(ValueError, match="degree"):
        old.redrawn(degree=3 * old.channels)


@pytest.mark.parametrize("shape", [(2, 4, 6, 7), (2, 5, 6, 6), (4, 6), (2, 4, 12, 12), (1, 2, 4, 6, 6)])
def test_eco_rejects_wrong_input(shape: tuple[int, ...]) -> None:
    layer = ECOConv2d(4, 8, 3, input_size=6)
    with pytest.raises(ValueError, match=re.escape("(B, 4, 6, 6)")):
        layer(torch.zeros(shape))


@pytest.mark.parametrize("k, size, stride, valid", [(4, 6, 1, "[1, 2, 3, 6]"), (2, 6, 2, "[1, 3]"),
                                                    (5, 12, 1, "[1, 2, 3, 4, 6, 12]")])
def test_eco_rejects_kernel_not_dividing(k: int, size: int, stride: int, valid: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"valid kernel sizes: {valid}")):
        ECOConv2d(4, 4, k, input_size=size, stride=stride)


@pytest.mark.parametrize("kwargs, match", [
    ({"kernel_size": 3, "input_size": 7, "stride": 2}, "stride=2 must divide input_size=7"),
    ({"kernel_size": 0, "input_size": 6}, "kernel_size must be an integer >= 1"),
    ({"kernel_size": 3, "input_size": 6, "sparsity": 0.6}, "sparsity=0.6 is not achievable"),
])
def test_eco_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ECOConv2d(4, 4, **kwargs)


def test_eco_rejects_non_integer_sizes() -> None:
    with pytest.raises(TypeError, match="input_size must be an integer"):
        ECOConv2d(4, 4, 3, input_size=6.0)


@pytest.mark.parametrize("sparsity", [0.0, 0.75], ids=["dense", "sp0.75"])
@pytest.mark.parametrize("c_in, c_out, k, size, stride", [ECO_CASES[0], ECO_CASES[4], ECO_CASES[7]])
def test_eco_backends_agree(c_in: int, c_out: int, k: int, size: int, stride: int, sparsity: float) -> None:
    blocked, masked = (ECOConv2d(c_in, c_out, k, input_size=size, stride=stride, sparsity=sparsity,
                                 backend=backend, generator=gen()) for backend in BACKENDS)
    assert torch.equal(blocked.conv.weight, masked.conv.weight)
    assert_same_topology(blocked.conv, masked.conv)
    x = torch.randn(2, c_in, size, size, generator=gen(1))
    torch.testing.assert_close(blocked(x), masked(x), atol=F32_ATOL, rtol=0)
    xb, xm = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    blocked(xb).square().sum().backward()
    masked(xm).square().sum().backward()
    torch.testing.assert_close(xb.grad, xm.grad, atol=F32_ATOL, rtol=0)
    # weight gradients sum N·H·W products (magnitude ~50 here): the routes' summation orders differ by ulps
    torch.testing.assert_close(dense_weight_grad(blocked.conv), dense_weight_grad(masked.conv), atol=F32_ATOL,
                               rtol=1e-6)


# --------------------------------------------------------------------------- 8. reproducibility

SEED_CASES = {
    "linear-sao": lambda **kw: SparseLinear(32, 16, degree=8, **kw),
    "linear-sao-relu": lambda **kw: SparseLinear(32, 16, degree=8, activation="relu", **kw),
    "linear-rg-normal": lambda **kw: SparseLinear(16, 32, degree=8, init="rg-normal", **kw),
    "linear-rg-uniform": lambda **kw: SparseLinear(16, 32, degree=8, init="rg-uniform", **kw),
    "conv-sao-delta": lambda **kw: SparseConv2d(8, 16, 3, degree=4, **kw),
    "conv-sao-eco": lambda **kw: SparseConv2d(8, 16, 3, degree=4, init="sao-eco", **kw),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(SEED_CASES))
def test_seed_reproducibility(name: str, backend: str) -> None:
    a, b, c = (SEED_CASES[name](backend=backend, generator=gen(seed)) for seed in (7, 7, 8))
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), key
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.row_perm, c.row_perm) or not torch.equal(a.col_perm, c.col_perm)
    assert not torch.equal(a.weight, c.weight)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_parameters_keeps_topology(backend: str) -> None:
    layer = SparseLinear(32, 16, degree=8, backend=backend, generator=gen())
    perms, weight = (layer.row_perm.clone(), layer.col_perm.clone()), layer.weight.detach().clone()
    layer.reset_parameters(gen(3))
    assert torch.equal(layer.row_perm, perms[0]) and torch.equal(layer.col_perm, perms[1])
    assert not torch.equal(layer.weight, weight)
    assert torch.equal(layer.weight != 0, layer.mask)


# --------------------------------------------------------------------------- 9. errors

ERROR_CASES = [
    pytest.param(lambda: SparseLinear(8, 8, degree=2, backend="dense"), ValueError, r"blocked, masked",
                 id="unknown-backend"),
    pytest.param(lambda: SparseLinear(8, 8, degree=2, init="orthogonal"), ValueError,
                 r"unknown layer init 'orthogonal'; choose from: .*rg-normal, rg-uniform, sao", id="unknown-init"),
    pytest.param(lambda: SparseConv2d(8, 8, 3, degree=2, init="sao"), ValueError,
                 r"init='sao' does not fit .*choose from sao-delta, sao-eco", id="linear-init-on-conv"),
    pytest.param(lambda: SparseLinear(8, 8, degree=2, init="sao-delta"), ValueError,
                 r"init='sao-delta' does not fit .*choose from rg-normal, rg-uniform, sao", id="conv-init-on-linear"),
    pytest.param(lambda: SparseLinear(8, 8, degree=3), ValueError,
                 r"degree=3 is not valid for a 8x8 layer.*all valid: \[1, 2, 4, 8\]", id="invalid-degree"),
    pytest.param(lambda: SparseConv2d(12, 8, 3, degree=5), ValueError,
                 r"degree=5 is not valid for a 8x12 layer.*all valid: \[3, 6, 12\]", id="invalid-degree-conv"),
    pytest.param(lambda: SparseLinear(8, 8, sparsity=0.6), ValueError,
                 r"sparsity=0.6 is not achievable.*nearest valid: degree=2 .*degree=4", id="invalid-sparsity"),
    pytest.param(lambda: SparseLinear(8, 8, degree=2, sparsity=0.75), ValueError,
                 r"exactly one of degree= or sparsity=", id="both-degree-and-sparsity"),
    pytest.param(lambda: SparseLinear(8, 8), ValueError, r"exactly one of degree= or sparsity=",
                 id="neither-degree-nor-sparsity"),
    pytest.param(lambda: SparseLinear(8, 16, topology=ramanujan(8, 8, degree=2)), ValueError,
                 r"topology is 8x8 but the weight is 16x8", id="topology-wrong-shape"),
    pytest.param(lambda: SparseConv2d(8, 8, 3, topology=ramanujan(8, 4, degree=4)), ValueError,
                 r"topology is 8x4 but the weight is 8x8", id="topology-wrong-shape-conv"),
    pytest.param(lambda: SparseLinear(8, 8, topology=torch.ones(8, 8)), TypeError,
                 r"topology must be a sao.topology.Topology", id="topology-not-a-topology"),
    pytest.param(lambda: SparseLinear(8, 8, topology=ramanujan(8, 8, degree=4, mirrored=True)), ValueError,
                 r"mirrored topology", id="mirrored-topology-without-relu"),
    pytest.param(lambda: SparseLinear(8, 8, activation="relu", topology=ramanujan(8, 8, degree=4)), ValueError,
                 r"activation='relu' needs a mirrored topology", id="plain-topology-with-relu"),
    pytest.param(lambda: SparseLinear(5, 5, degree=5, activation="relu"), ValueError, r"even sizes",
                 id="relu-sao-odd-size"),
    pytest.param(lambda: SparseLinear(6, 6, degree=3, activation="relu"), ValueError,
                 r"degree=3 is not valid .*ReLU/mirrored.*all valid: \[2, 6\]", id="relu-sao-odd-degree"),
    pytest.param(lambda: SparseConv2d(5, 6, 3, degree=6, activation="relu"), ValueError, r"even sizes",
                 id="relu-sao-delta-odd-channels"),
    pytest.param(lambda: SparseLinear(8, 8, degree=2, activation="gelu"), ValueError,
                 r"activation='gelu' is not supported; choose from linear, tanh, relu", id="bad-activation"),
    pytest.param(lambda: SparseLinear(8, 8, degree=2, generator=0), TypeError, r"generator must be a torch.Generator",
                 id="bad-generator"),
    pytest.param(lambda: SparseConv2d(8, 8, 3, degree=2, padding_mode="mirror"), ValueError,
                 r"padding_mode='mirror' is not supported; choose from zeros, reflect, replicate, circular",
                 id="bad-padding-mode"),
    pytest.param(lambda: SparseConv2d(8, 8, 2, degree=2, init="sao-delta"), ValueError, r"odd kernel sides",
                 id="sao-delta-even-kernel"),
]


@pytest.mark.parametrize("make, error, match", ERROR_CASES)
def test_errors(make: Callable[[], object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()


FAST_ERROR_CASES = [
    pytest.param(lambda: SparseLinear(4096, 4096, degree=5), r"all valid: \[1, 2, 4, .*4096\]", id="degree"),
    pytest.param(lambda: SparseLinear(4096, 4096, sparsity=0.3), "not achievable", id="sparsity"),
    pytest.param(lambda: SparseLinear(4096, 4096, degree=4, sparsity=0.999), "exactly one", id="both"),
    pytest.param(lambda: SparseLinear(4096, 4096), "exactly one", id="neither"),
    pytest.param(lambda: SparseLinear(4096, 4096, degree=4096, backend="dense"), "blocked, masked", id="backend"),
    pytest.param(lambda: SparseLinear(4096, 4096, degree=4096, init="nope"), "choose from", id="init"),
    pytest.param(lambda: SparseLinear(4096, 4096, degree=4096, init="sao-eco"), "choose from", id="conv-init"),
    pytest.param(lambda: SparseConv2d(4096, 4096, 3, degree=4096, init="sao"), "choose from", id="linear-init"),
    pytest.param(lambda: SparseLinear(4095, 4095, degree=4095, activation="relu"), "even sizes", id="relu-odd"),
    pytest.param(lambda: SparseConv2d(4096, 4096, 3, degree=5, padding_mode="bad"), "padding_mode", id="padding"),
    pytest.param(lambda: SparseLinear(4096, 4096, topology=ramanujan(8, 8, degree=2)), "topology is", id="topology"),
    pytest.param(lambda: ECOConv2d(4096, 4096, 5, input_size=12), "valid kernel sizes", id="eco-kernel"),
]


@pytest.mark.parametrize("make, match", FAST_ERROR_CASES)
def test_errors_on_large_layers_come_before_drawing(make: Callable[[], object], match: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # how long raising takes is measured by benchmarks/bench_guards.py, not asserted here
    drawn = []
    monkeypatch.setattr(SparseLayerBase, "reset_parameters", lambda self, generator=None: drawn.append(self))
    with pytest.raises(ValueError, match=match):
        make()
    assert drawn == [], "validation must happen before the layer allocates and draws its weights"


@pytest.mark.parametrize("backend", BACKENDS)
def test_even_kernel_error_raised_before_drawing(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    original = SparseLayerBase.reset_parameters

    def spy(self: SparseLayerBase, generator: torch.Generator | None = None) -> None:
        drawn.append(type(self).__name__)
        original(self, generator)

    monkeypatch.setattr(SparseLayerBase, "reset_parameters", spy)
    with pytest.raises(ValueError, match="odd kernel sides"):
        SparseConv2d(8, 8, 2, degree=2, init="sao-delta", backend=backend)
    assert drawn == [], "validation must happen before the layer allocates and draws its weights"


# --------------------------------------------------------------------------- 10. devices

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["linear", "conv"])
def test_device(name: str, device: str) -> None:
    layers = backend_pair(lambda **kw: STATE_CASES[name](device=device, **kw))
    for layer in layers:
        assert all(t.device.type == device for t in [*layer.parameters(), *layer.buffers()])
        assert layer.mask.device.type == device and layer.weight.device.type == device
    cpu = STATE_CASES[name](backend="blocked", generator=gen())
    assert torch.equal(layers[0].weight.cpu(), cpu.weight)  # the seed gives the same values on every device
    x = train_input(cpu, 3, seed=1).to(device)
    assert_backends_agree(*layers, x, F32_ATOL)


# --------------------------------------------------------------------------- 11. property test

@st.composite
def block_shapes(draw: st.DrawFn) -> tuple[int, int, int]:
    g, bm, bn = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    return g * bm, g * bn, max(bm, bn)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(block_shapes(), st.booleans(), st.integers(0, 2**31 - 1))
def test_backends_agree_property(shape: tuple[int, int, int], bias: bool, seed: int) -> None:
    m, n, degree = shape
    blocked, masked = backend_pair(lambda **kw: SparseLinear(n, m, degree=degree, bias=bias, gain=1.1,
                                                             dtype=torch.float64, **kw), seed=seed)
    assert blocked.num_blocks == masked.num_blocks == max(m, n) // degree
    assert torch.equal(blocked.weight, masked.weight)
    w = blocked.weight.detach()
    gram = w @ w.T if m <= n else w.T @ w
    torch.testing.assert_close(gram, 1.21 * torch.eye(min(m, n), dtype=torch.float64), atol=1e-10, rtol=0)
    x = torch.randn(2, 3, n, generator=gen(seed), dtype=torch.float64)
    assert_backends_agree(blocked, masked, x, 1e-10)


# --------------------------------------------------------------------------- 12. repr

@pytest.mark.parametrize("backend", BACKENDS)
def test_extra_repr(backend: str) -> None:
    linear = SparseLinear(16, 8, degree=4, backend=backend)
    conv = SparseConv2d(8, 8, 3, degree=2, padding_mode="circular", backend=backend)
    for layer, sparsity in ((linear, "75.0000%"), (conv, "75.0000%")):
        text = repr(layer)
        assert f"degree={layer.degree}" in text
        assert f"sparsity={sparsity}" in text
        assert f"backend={backend!r}" in text
    assert "in_features=16, out_features=8" in repr(linear)
    assert "padding_mode='circular'" in repr(conv)
