"""The ``nn.Linear``/``nn.Conv2d`` module contract for every sao layer, backend and the fused chain.

1. Shapes: each layer accepts exactly the input shapes its dense twin accepts (unbatched, empty
   batches, extra leading dims) with the same output, and raises ``InputShapeError`` (a
   ``ValueError`` and a ``RuntimeError``) naming expected and given shapes where the twin raises.
2. State: pickle, deepcopy, ``torch.save`` of the whole module; ``state_dict`` round trips that
   adopt the checkpoint's topology; a checkpoint of another topology kind fails loudly; format-1
   checkpoints (no ``topology_spec``) are refused as incomplete; deferred initialisation from the meta
   device; ``channels_last``; flat-parameter utilities and LBFGS.
3. The blocked linear's autograd function: ``gradcheck``/``gradgradcheck`` and ``torch.func``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from helpers import copied, deterministic, gen
from sao.nn import (
    BACKENDS,
    ECOConv2d,
    FusedSparseChain,
    InputShapeError,
    SOCConv2d,
    SparseConv2d,
    SparseLinear,
    blocked_linear,
)
from sao.nn._sparse import SparseLayerBase
from sao.topology import valid_degrees

F64 = {"dtype": torch.float64}


def _chain(backend: str, seed: int = 0) -> FusedSparseChain:
    assert backend == "blocked"
    layers = [SparseLinear(16, 16, degree=4, generator=gen(seed + i), **F64) for i in range(3)]
    return FusedSparseChain(layers, [nn.Tanh(), nn.ReLU(), nn.Identity()])


# name -> (factory(backend, seed), kind, backends); kind says which twin and which inputs apply.
LAYERS: dict[str, tuple[Callable[[str], nn.Module], str, tuple[str, ...]]] = {
    "linear": (lambda b, s=0: SparseLinear(16, 8, degree=4, backend=b, generator=gen(s), **F64), "linear", BACKENDS),
    "linear-relu": (lambda b, s=0: SparseLinear(16, 8, degree=4, activation="relu", backend=b, generator=gen(s), **F64),
                    "linear", BACKENDS),
    "linear-nobias-rg": (lambda b, s=0: SparseLinear(16, 8, degree=8, bias=False, init="rg-normal", backend=b,
                                                generator=gen(s), **F64), "linear", BACKENDS),
    "conv": (lambda b, s=0: SparseConv2d(8, 16, 3, padding=1, degree=4, backend=b, generator=gen(s), **F64), "conv",
             BACKENDS),
    "conv-stride-circular": (lambda b, s=0: SparseConv2d(8, 8, 3, stride=2, padding=1, padding_mode="circular",
                                                         degree=2, activation="relu", backend=b, generator=gen(s),
                                                         **F64), "conv", BACKENDS),
    "eco": (lambda b, s=0: ECOConv2d(8, 8, 3, input_size=6, sparsity=0.5, backend=b, generator=gen(s), **F64), "eco",
            BACKENDS),
    "eco-stride": (lambda b, s=0: ECOConv2d(8, 8, 3, input_size=6, stride=2, sparsity=0.5, backend=b,
                                            generator=gen(s), **F64), "eco", BACKENDS),
    "soc": (lambda b, s=0: SOCConv2d(8, 8, stride=2, generator=gen(s), **F64).eval(), "soc", ("blocked",)),
    "chain": (_chain, "linear", ("blocked",)),
}
CASES = [pytest.param(name, backend, id=f"{name}-{backend}") for name, (_, _, backends) in LAYERS.items()
         for backend in backends]
LINEAR_INPUTS = [(16,), (2, 16), (0, 16), (1, 16), (3, 2, 16), (2, 0, 16), (2, 17), (2, 32), (2, 8), (16, 2), (),
                 (2, 4, 4)]
CONV_INPUTS = [(8, 6, 6), (2, 8, 6, 6), (0, 8, 6, 6), (1, 8, 6, 6), (2, 8, 8, 8), (2, 9, 6, 6), (2, 16, 6, 6),
               (2, 4, 6, 6), (9, 6, 6), (8, 6), (1, 2, 8, 6, 6), (2, 8, 5, 6), (8,)]


def build(name: str, backend: str, seed: int = 0) -> nn.Module:
    return LAYERS[name][0](backend, seed)


def twin(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    """The dense torch twin whose accepted shapes the layer must match."""
    if isinstance(layer, FusedSparseChain):
        mods = []
        for lin, act in zip(layer.layers, layer.activations, strict=True):
            mods += [lin.to_dense(), act]
        return nn.Sequential(*mods)
    if isinstance(layer, SparseLinear | SparseConv2d):
        return layer.to_dense()
    # ECO and SOC: nn.Conv2d's rank/channel rules plus the layer's own size rule; values from the batched call.
    probe = nn.Conv2d(layer.in_channels, layer.out_channels, 1, **F64)

    def reference(x: Tensor) -> Tensor:
        probe(x)  # raises where nn.Conv2d raises
        if isinstance(layer, ECOConv2d) and tuple(x.shape[-2:]) != (layer.input_size,) * 2:
            raise RuntimeError("ECO takes only its input size")
        if isinstance(layer, SOCConv2d) and (x.shape[-1] % layer.stride or x.shape[-2] % layer.stride):
            raise RuntimeError("SOC needs sides divisible by the stride")
        if x.dim() == 3:
            return layer(x.unsqueeze(0))[0]
        if x.shape[0] == 0:  # the shape of a one-sample batch, emptied
            return layer(torch.ones(1, *x.shape[1:], **F64))[:0]
        return layer(x)

    return reference


def inputs_for(name: str) -> list[tuple[int, ...]]:
    return LINEAR_INPUTS if LAYERS[name][1] == "linear" else CONV_INPUTS


SHAPE_CASES = [pytest.param(name, backend, shape, id=f"{name}-{backend}-{'x'.join(map(str, shape)) or 'scalar'}")
               for name, (_, _, backends) in LAYERS.items() for backend in backends for shape in inputs_for(name)]


# --------------------------------------------------------------------------- 1. shapes

@pytest.mark.parametrize("name, backend, shape", SHAPE_CASES)
def test_shape_contract_matches_twin(name: str, backend: str, shape: tuple[int, ...]) -> None:
    layer = build(name, backend)
    reference = twin(layer)
    x = torch.randn(shape, generator=gen(1), **F64)
    try:
        expected = reference(x)
    except RuntimeError:
        with pytest.raises(InputShapeError) as info:
            layer(x)
        assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeError)
        assert str(tuple(shape)) in str(info.value), "the message names the given shape"
        return
    got = layer(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    if x.numel() and name != "soc":  # gradients w.r.t. the input agree too
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        layer(xa).sum().backward()
        reference(xb).sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, atol=1e-10, rtol=0)


def test_blocked_linear_no_longer_reads_a_prefix_of_wider_inputs() -> None:
    """The fault in the issue: a (2, 17) or (2, 32) input gave a (2, 8) result from the first 16 features."""
    layer = SparseLinear(16, 8, degree=4)
    for width in (17, 32):
        with pytest.raises(RuntimeError, match=re.escape("(*, 16)")):
            layer(torch.randn(2, width))
    conv = SparseConv2d(8, 8, 3, degree=2)
    with pytest.raises(ValueError, match="expects input of shape"):
        conv(torch.randn(1, 16, 5, 5))


# --------------------------------------------------------------------------- 2. state

def _same_outputs(a: nn.Module, b: nn.Module, name: str) -> None:
    shape = (3, 16) if LAYERS[name][1] == "linear" else (2, 8, 6, 6)
    x = torch.randn(shape, generator=gen(2), **F64)
    with deterministic():  # bit for bit: both copies on the same route
        torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "torch.save"])
@pytest.mark.parametrize("name, backend", CASES)
def test_whole_module_round_trips(name: str, backend: str, how: str) -> None:
    layer = build(name, backend)
    other = copied(layer, how)
    _same_outputs(layer, other, name)
    for (k, v), w in zip(layer.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
        assert v.data_ptr() != w.data_ptr() or v.numel() == 0, f"{k} shares memory"


def sparse_layers(module: nn.Module) -> list[SparseLayerBase]:
    return [m for m in module.modules() if isinstance(m, SparseLayerBase)]


@pytest.mark.parametrize("name, backend", CASES)
def test_state_dict_adopts_the_checkpoint_topology(name: str, backend: str) -> None:
    source, target = build(name, backend), build(name, backend, seed=5)  # two draws of one configuration
    pairs = list(zip(sparse_layers(source), sparse_layers(target), strict=True))
    assert not pairs or any(not torch.equal(a.row_perm, b.row_perm) for a, b in pairs)
    result = target.load_state_dict(source.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    _same_outputs(source, target, name)
    for a, b in zip(sparse_layers(source), sparse_layers(target), strict=True):
        assert torch.equal(a.mask, b.mask) and a.topology.degree == b.topology.degree
        assert torch.equal(b.row_inverse, torch.argsort(b.row_perm))


LINEAR_MISMATCH = [
    pytest.param({"degree": 8}, {"degree": 4}, "degree=8", id="degree8-into-degree4"),
    pytest.param({"degree": 4}, {"degree": 4, "activation": "relu"}, "mirrored", id="plain-into-mirrored"),
    pytest.param({"degree": 4, "activation": "relu"}, {"degree": 4}, "mirrored", id="mirrored-into-plain"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("saved, built, named", LINEAR_MISMATCH)
def test_state_dict_of_another_topology_fails_loudly(saved: dict, built: dict, named: str, backend: str) -> None:
    """The fault in the issue: a masked degree-8 state loaded into a degree-4 layer with "All keys matched"."""
    source = SparseLinear(16, 16, backend=backend, generator=gen(1), **saved)
    target = SparseLinear(16, 16, backend=backend, generator=gen(2), **built)
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(RuntimeError, match="topology mismatch") as info:
        target.load_state_dict(source.state_dict())
    assert named in str(info.value)
    assert target.degree == built["degree"]
    for k, v in target.state_dict().items():  # the layer is left as it was
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_state_dict_of_another_degree_fails_loudly(backend: str) -> None:
    source = SparseConv2d(8, 8, 3, degree=4, backend=backend, generator=gen(1))
    target = SparseConv2d(8, 8, 3, degree=2, backend=backend, generator=gen(2))
    with pytest.raises(RuntimeError, match=r"topology mismatch.*degree=4"):
        target.load_state_dict(source.state_dict())


def test_state_dict_with_a_broken_permutation_fails() -> None:
    source, target = SparseLinear(16, 16, degree=4, generator=gen(1)), SparseLinear(16, 16, degree=4)
    state = source.state_dict()
    state["row_perm"] = torch.zeros(16, dtype=torch.long)
    with pytest.raises(RuntimeError, match="row_perm must be a permutation"):
        target.load_state_dict(state)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dropped", [("row_perm",), ("col_perm",), ("row_perm", "col_perm")])
def test_a_partial_topology_in_a_checkpoint_fails_and_changes_nothing(backend: str, dropped: tuple[str, ...]) -> None:
    """Loading some of the topology's entries would leave a layer reporting one topology and computing another."""
    source, target = (SparseLinear(16, 16, degree=4, backend=backend, generator=gen(s)) for s in (1, 2))
    state = {k: v for k, v in source.state_dict().items() if k not in dropped}
    before = copy.deepcopy(target.state_dict())
    for strict in (True, False):
        with pytest.raises(RuntimeError, match="incomplete topology"):
            target.load_state_dict(state, strict=strict)
        for k, v in target.state_dict().items():
            assert torch.equal(v, before[k]), k


def test_a_torch_prune_checkpoint_does_not_load_into_a_masked_sparse_layer() -> None:
    """Its random mask would be computed with while the layer reports its own SAO topology."""
    from torch.nn.utils import prune

    pruned = nn.Linear(16, 16)
    prune.random_unstructured(pruned, "weight", amount=0.75)
    layer = SparseLinear(16, 16, degree=4, backend="masked", generator=gen())
    mask = layer.weight_mask.clone()
    with pytest.raises(RuntimeError, match="incomplete topology"):
        layer.load_state_dict(pruned.state_dict(), strict=False)
    assert torch.equal(layer.weight_mask, mask)
    assert torch.equal(layer.weight.detach() != 0, layer.mask & (layer.weight.detach() != 0))


def test_empty_space_to_depth_is_pixel_unshuffle() -> None:
    """``F.pixel_unshuffle`` returns empty batches unchanged (torch 2.14); our replacement keeps its layout."""
    from sao.nn._stride import _empty_space_to_depth

    x = torch.randn(2, 3, 4, 6)
    assert torch.equal(_empty_space_to_depth(x, 2), torch.nn.functional.pixel_unshuffle(x, 2))
    assert _empty_space_to_depth(x[:0], 2).shape == (0, 12, 2, 3)


def test_state_dict_with_a_mask_that_disagrees_fails() -> None:
    source, target = (SparseLinear(16, 16, degree=4, backend="masked", generator=gen(s)) for s in (1, 2))
    state = source.state_dict()
    state["weight_mask"] = target.weight_mask.clone()
    with pytest.raises(RuntimeError, match=r"weight_mask .* disagrees"):
        target.load_state_dict(state)


@pytest.mark.parametrize("name, backend", [c for c in CASES if c.values[0] in ("linear", "conv", "eco")])
def test_format_1_checkpoints_are_refused_as_incomplete(name: str, backend: str) -> None:
    """A checkpoint written before ``topology_spec`` existed (row_perm/col_perm, no spec) is not guessed at: loading
    it fails naming the missing entry, and the layer keeps its own topology and weights."""
    source = build(name, backend)
    old = source.state_dict()
    specs = [k for k in old if k.endswith("topology_spec")]
    assert specs
    for key in specs:
        del old[key]
    for layer_name, layer in source.named_modules():
        prefix = f"{layer_name}." if layer_name else ""
        if isinstance(layer, SparseConv2d) and layer.backend == "blocked":
            old[prefix + "blocks"] = layer.block_view().detach().clone()  # format 1's (g, bm, bn, kh, kw)
        old._metadata[layer_name]["version"] = 1
    target = build(name, backend, seed=9)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(RuntimeError, match=r"(?s)incomplete topology for .* it has row_perm, col_perm(, weight_mask)? "
                                           r"but not topology_spec"):
        target.load_state_dict(old)
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(RuntimeError, match="incomplete topology"):  # strict=False too: a topology loads whole
        build(name, backend, seed=9).load_state_dict(old, strict=False)


@pytest.mark.parametrize("name, backend", CASES)
def test_deferred_initialisation_from_meta(name: str, backend: str) -> None:
    eager = build(name, backend)
    with torch.device("meta"):
        lazy = build(name, backend)
    assert all(p.is_meta for p in lazy.parameters())
    lazy.to_empty(device="cpu")
    for module in lazy.modules():
        if isinstance(module, SparseLayerBase | SOCConv2d):
            module.reset_parameters(gen(3))
    for a, b in zip(sparse_layers(eager), sparse_layers(lazy), strict=True):
        assert torch.equal(a.row_perm, b.row_perm) and torch.equal(a.col_perm, b.col_perm)
        assert torch.equal(b.row_inverse, torch.argsort(b.row_perm))
        assert torch.equal(b.weight.detach() != 0, b.mask.view(*b.mask.shape, *[1] * len(b.kernel_size))
                           .expand_as(b.weight) & (b.weight.detach() != 0))
        if b.init == "sao" and not b.mirrored:
            w = b.weight.detach()
            torch.testing.assert_close(w @ w.T, torch.eye(w.shape[0], **F64), atol=1e-12, rtol=0)
    # and the meta model takes a checkpoint by assignment
    with torch.device("meta"):
        assigned = build(name, backend)
    assigned.load_state_dict(eager.state_dict(), assign=True)
    _same_outputs(eager, assigned, name)


@pytest.mark.parametrize("name, backend", [c for c in CASES if LAYERS[c.values[0]][1] != "linear"])
def test_channels_last(name: str, backend: str) -> None:
    layer = build(name, backend)
    reference = copy.deepcopy(layer)
    layer.to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 6, 6, generator=gen(4), **F64)
    torch.testing.assert_close(layer(x.contiguous(memory_format=torch.channels_last)), reference(x), atol=1e-12,
                               rtol=0)
    layer(x).sum().backward()


@pytest.mark.parametrize("name, backend", CASES)
def test_flat_parameter_utilities(name: str, backend: str) -> None:
    layer = build(name, backend)
    flat = parameters_to_vector(layer.parameters())
    assert flat.numel() == sum(p.numel() for p in layer.parameters())
    vector_to_parameters(flat * 2, layer.parameters())
    torch.testing.assert_close(parameters_to_vector(layer.parameters()), flat * 2)


@pytest.mark.parametrize("name, backend", [c for c in CASES if c.values[0] != "soc"])
def test_lbfgs_trains_and_keeps_the_topology(name: str, backend: str) -> None:
    layer = build(name, backend)
    shape = (8, 16) if LAYERS[name][1] == "linear" else (4, 8, 6, 6)
    x = torch.randn(shape, generator=gen(6), **F64)
    target = torch.randn_like(layer(x))
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=5)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = (layer(x) - target).square().mean()
        loss.backward()
        return loss

    first = closure().item()
    for _ in range(2):
        optimizer.step(closure)
    assert closure().item() < first
    for sparse in sparse_layers(layer):
        off = ~sparse.mask.view(*sparse.mask.shape, *[1] * len(sparse.kernel_size)).expand_as(sparse.weight)
        assert (sparse.weight.detach()[off] == 0).all()


@pytest.mark.parametrize("name, backend", [c for c in CASES if c.values[1] == "blocked" and c.values[0] != "soc"])
def test_blocked_parameters_are_contiguous(name: str, backend: str, backward_path: int) -> None:
    """Flat views (``p.view(-1)``, ``p.grad.view(-1)``) are what LBFGS and friends use."""
    layer = build(name, backend)
    shape = (3, 16) if LAYERS[name][1] == "linear" else (2, 8, 6, 6)
    layer(torch.randn(shape, **F64)).sum().backward()
    for p in layer.parameters():
        assert p.is_contiguous() and p.grad.is_contiguous()
        p.grad.view(-1)


# --------------------------------------------------------------------------- 3. the blocked linear function

BACKWARD_PATHS = [pytest.param(0, id="own-backward"), pytest.param(1 << 60, id="autograd-bmm")]


@pytest.fixture(params=BACKWARD_PATHS)
def backward_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run the test with the blocked linear's own backward and with autograd's (chosen by block size)."""
    monkeypatch.setattr("sao.nn.linear.OWN_BACKWARD_MIN_NUMEL", request.param)
    return request.param


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_blocked_linear_gradcheck(bias: bool, backward_path: int) -> None:
    layer = SparseLinear(12, 8, degree=3, bias=bias, generator=gen(), **F64)
    x = torch.randn(5, 12, generator=gen(1), **F64, requires_grad=True)
    inputs = (x, layer.blocks) if not bias else (x, layer.blocks, layer.bias)

    def fn(x: Tensor, blocks: Tensor, b: Tensor | None = None) -> Tensor:
        return blocked_linear(x, blocks, layer.col_perm, layer.row_perm, layer.row_inverse, b)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_blocked_linear_under_torch_func(backward_path: int) -> None:
    layer = SparseLinear(8, 8, degree=2, generator=gen(), **F64)
    dense = layer.to_dense()
    x = torch.randn(8, **F64)
    torch.testing.assert_close(torch.func.jacrev(layer)(x), torch.func.jacrev(dense)(x), atol=1e-12, rtol=0)
    xs = torch.randn(4, 3, 8, **F64)
    torch.testing.assert_close(torch.func.vmap(layer)(xs), dense(xs), atol=1e-12, rtol=0)


@pytest.mark.parametrize("threshold", [0, 1 << 60], ids=["own-backward", "autograd-bmm"])
@settings(max_examples=30)
@given(st.sampled_from([(8, 8), (16, 8), (8, 24), (12, 12)]), st.integers(0, 3), st.booleans(), st.integers(0, 6),
       st.integers(0, 10_000))
def test_blocked_linear_matches_dense_property(threshold: int, shape: tuple[int, int], which: int, bias: bool,
                                               batch: int, seed: int) -> None:
    with mock.patch("sao.nn.linear.OWN_BACKWARD_MIN_NUMEL", threshold):
        _compare_with_dense(shape, which, bias, batch, seed)


def _compare_with_dense(shape: tuple[int, int], which: int, bias: bool, batch: int, seed: int) -> None:
    m, n = shape
    degrees = valid_degrees(m, n)
    layer = SparseLinear(n, m, degree=degrees[which % len(degrees)], bias=bias, generator=gen(seed), **F64)
    if bias:
        with torch.no_grad():
            layer.bias.normal_(generator=gen(seed + 1))
    dense = layer.to_dense()
    x = torch.randn(batch, n, generator=gen(seed + 2), **F64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = layer(xa), dense(xb)
    torch.testing.assert_close(ya, yb, atol=1e-12, rtol=0)
    probe = torch.randn(ya.shape, generator=gen(seed + 3), **F64)
    (ya * probe).sum().backward()
    (yb * probe).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-12, rtol=0)
    grad = layer.topology.blocks_to_dense(layer.blocks.grad)
    torch.testing.assert_close(grad, dense.weight.grad * layer.mask, atol=1e-12, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_device_meta_argument(backend: str) -> None:
    layer = SparseConv2d(8, 8, 3, degree=2, backend=backend, generator=gen(1), device="meta")
    assert layer.weight.is_meta and layer.topology.row_perm.device.type == "cpu"
    layer.to_empty(device="cpu").reset_parameters(gen(2))
    eager = SparseConv2d(8, 8, 3, degree=2, backend=backend, generator=gen(1))
    assert torch.equal(layer.mask, eager.mask)
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(layer(x), layer.to_dense()(x))


# --------------------------------------------------------------------------- 4. arguments like PyTorch's

CONSTRUCTORS: dict[str, Callable[[Callable[[int], object]], nn.Module]] = {
    "SparseLinear": lambda i: SparseLinear(i(16), i(8), degree=i(4), generator=gen()),
    "SparseConv2d": lambda i: SparseConv2d(i(8), i(8), i(3), stride=i(1), padding=i(1), dilation=i(1), degree=i(2),
                                           generator=gen()),
    "SparseConv2d-tuple": lambda i: SparseConv2d(8, 8, (i(3), i(3)), stride=(i(1), i(1)), degree=2, generator=gen()),
    "ECOConv2d": lambda i: ECOConv2d(i(4), i(8), i(3), input_size=i(6), stride=i(1), degree=i(4), generator=gen()),
    "SOCConv2d": lambda i: SOCConv2d(i(4), i(8), kernel_size=i(3), stride=i(2), terms_train=i(5), terms_eval=i(6),
                                     generator=gen()),
}
INTEGERS = [pytest.param(lambda v: v, id="int"), pytest.param(lambda v: __import__("numpy").int64(v), id="np.int64"),
            pytest.param(lambda v: __import__("numpy").int32(v), id="np.int32"),
            pytest.param(lambda v: torch.tensor(v), id="0d-tensor")]
NOT_INTEGERS = [pytest.param(str, id="str"), pytest.param(float, id="float"),
                pytest.param(lambda v: torch.tensor([v]), id="1d-tensor")]


@pytest.mark.parametrize("integer", INTEGERS)
@pytest.mark.parametrize("name", list(CONSTRUCTORS))
def test_integers_of_any_type_are_accepted(name: str, integer: Callable[[int], object]) -> None:
    made, plain = CONSTRUCTORS[name](integer), CONSTRUCTORS[name](lambda v: v)
    assert repr(made) == repr(plain)
    for (k, v), w in zip(made.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


@pytest.mark.parametrize("wrong", NOT_INTEGERS)
@pytest.mark.parametrize("name", list(CONSTRUCTORS))
def test_non_integers_are_a_type_error(name: str, wrong: Callable[[int], object]) -> None:
    with pytest.raises(TypeError, match="must be an integer"):
        CONSTRUCTORS[name](wrong)


@pytest.mark.parametrize("kwargs", [{"sparsity": "0.75"}, {"degree": 4, "gain": "1.1"}, {"degree": 4, "gain": True}])
def test_reals_given_as_strings_or_bools_are_a_type_error(kwargs: dict) -> None:
    with pytest.raises(TypeError, match="must be a real number"):
        SparseLinear(16, 16, **kwargs)
