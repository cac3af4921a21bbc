"""``SparseMultiheadAttention``: ``nn.MultiheadAttention``'s function with SAO-sparse projections.

1. The function: outputs, attention weights and every gradient equal the ``to_dense()`` twin (and
   ``from_dense(mha)`` equals ``mha``) over the arguments' space, in float64; gradcheck; the same errors.
2. The projections: orthogonal with exactly the requested sparsity, drawn in order from one generator.
3. The module contract: conversions, state, deferred initialisation, dtype changes.
4. In models: ``nn.TransformerEncoder`` (including its eval-mode fast paths) and torchvision's ViT.
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from helpers import assert_semi_orthogonal, copied, deterministic, gen
from sao.nn import MaskedLinear, SparseLinear, SparseMultiheadAttention

F64 = {"dtype": torch.float64}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
SHAPES = [(4, 1), (4, 2), (8, 2), (8, 4), (12, 3), (16, 4)]  # (embed_dim, num_heads)


# --------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
    """One call: the module's arguments and the inputs' layout, masks and flags."""

    embed_dim: int
    num_heads: int
    kdim: int
    vdim: int
    blocks: int  # the projections' number of SAO blocks: sparsity 1 - 1/blocks
    bias: bool
    add_bias_kv: bool
    add_zero_attn: bool
    batch_first: bool
    batched: bool
    self_attention: bool  # query is key is value
    batch: int
    target: int
    source: int
    attn_mask: str  # "none", "bool2", "float2", "bool3", "float3", "causal-bool", "causal-float"
    padding: str  # "none", "bool", "float"
    need_weights: bool
    average: bool
    backend: str
    seed: int

    def module_args(self) -> dict[str, Any]:
        return {"bias": self.bias, "add_bias_kv": self.add_bias_kv, "add_zero_attn": self.add_zero_attn,
                "kdim": self.kdim, "vdim": self.vdim, "batch_first": self.batch_first}


@st.composite
def cases(draw: st.DrawFn) -> Case:
    embed_dim, num_heads = draw(st.sampled_from(SHAPES))
    kdim, vdim = (draw(st.sampled_from([embed_dim, embed_dim // 2, 2 * embed_dim])) for _ in range(2))
    self_attention = kdim == vdim == embed_dim and draw(st.booleans())
    common = math.gcd(embed_dim, math.gcd(kdim, vdim))
    blocks = draw(st.sampled_from([g for g in range(1, common + 1) if common % g == 0]))
    batched = draw(st.booleans())
    target = draw(st.integers(1, 5))
    source = target if self_attention else draw(st.integers(1, 5))
    masks = ["none", "bool2", "float2", "bool3", "float3"] + (["causal-bool", "causal-float"] if target == source
                                                              else [])
    attn_mask = draw(st.sampled_from(masks))
    padding = draw(st.sampled_from(["none", "bool", "float"]))
    if attn_mask != "none" and padding != "none":  # one mask type for both (mixing them is deprecated)
        padding = "bool" if "bool" in attn_mask else "float"
    return Case(embed_dim, num_heads, kdim, vdim, blocks, draw(st.booleans()), draw(st.booleans()),
                draw(st.booleans()), draw(st.booleans()), batched, self_attention,
                draw(st.integers(1, 3)) if batched else 1, target, source, attn_mask, padding, draw(st.booleans()),
                draw(st.booleans()), draw(st.sampled_from(["blocked", "masked"])), draw(st.integers(0, 10_000)))


def inputs(case: Case) -> tuple[list[Tensor], dict[str, Any]]:
    """``[query, key, value]`` (one tensor three times for self-attention) and the call's keyword arguments.

    Bool masks leave the first key position unmasked in every row, so no row is fully masked.
    """
    g = gen(case.seed + 1)
    n, length, source, h = case.batch, case.target, case.source, case.num_heads

    def seq(steps: int, width: int) -> Tensor:
        shape = (n, steps, width) if case.batch_first else (steps, n, width)
        return torch.randn(shape if case.batched else (steps, width), generator=g, **F64)

    query = seq(length, case.embed_dim)
    tensors = [query] * 3 if case.self_attention else [query, seq(source, case.kdim), seq(source, case.vdim)]
    kwargs: dict[str, Any] = {"need_weights": case.need_weights, "average_attn_weights": case.average}
    mask_shape = (length, source) if case.attn_mask.endswith("2") else ((n if case.batched else 1) * h, length, source)
    if case.attn_mask.startswith("causal"):
        causal = torch.ones(length, source, dtype=torch.bool).triu(1)
        kwargs["attn_mask"] = causal if "bool" in case.attn_mask else nn.Transformer.generate_square_subsequent_mask(
            length, dtype=torch.float64)
        kwargs["is_causal"] = True
    elif case.attn_mask.startswith("bool"):
        mask = torch.rand(mask_shape, generator=g) < 0.4
        mask[..., 0] = False
        kwargs["attn_mask"] = mask
    elif case.attn_mask.startswith("float"):
        kwargs["attn_mask"] = torch.randn(mask_shape, generator=g, **F64)
    padding_shape = (n, source) if case.batched else (source,)
    if case.padding == "bool":
        mask = torch.rand(padding_shape, generator=g) < 0.4
        mask[..., 0] = False
        kwargs["key_padding_mask"] = mask
    elif case.padding == "float":
        kwargs["key_padding_mask"] = torch.randn(padding_shape, generator=g, **F64)
    return tensors, kwargs


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Random biases (SparseLinear zeroes them) and ``bias_k``/``bias_v``, so their gradients mean something."""
    g = gen(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or name in ("bias_k", "bias_v") or isinstance(module, nn.MultiheadAttention):
                p.copy_(torch.randn(p.shape, generator=g, **F64))
    return module


def sparse_module(case: Case) -> SparseMultiheadAttention:
    module = SparseMultiheadAttention(case.embed_dim, case.num_heads, **case.module_args(), **F64,
                                      sparsity=1 - 1 / case.blocks, backend=case.backend, generator=gen(case.seed))
    return randomize(module, case.seed + 2)


def run(module: nn.Module, case: Case) -> tuple[list[Tensor], list[Tensor]]:
    """The call's outputs and the gradients of a random projection of them w.r.t. the distinct inputs and every
    parameter (``(output, weights)``; gradients ``[inputs..., parameters in named_parameters() order]``)."""
    tensors, kwargs = inputs(case)
    distinct = list({id(t): t.clone().requires_grad_(True) for t in tensors}.values())
    call = distinct * 3 if len(distinct) == 1 else distinct
    out, weights = module(*call, **kwargs)
    outputs = [out] if weights is None else [out, weights]
    g = gen(case.seed + 3)
    loss = sum((y * torch.randn(y.shape, generator=g, **F64)).sum() for y in outputs)
    params = [p for _, p in module.named_parameters()]
    grads = torch.autograd.grad(loss, distinct + params, allow_unused=True)
    return [y.detach() for y in outputs], list(grads)


def dense_weight_grads(mha: nn.MultiheadAttention, grads: dict[str, Tensor | None]) -> dict[str, tuple]:
    """``nn.MultiheadAttention``'s weight and bias gradients per projection (sliced from the packed ones)."""
    e = mha.embed_dim
    if mha._qkv_same_embed_dim:
        weights = list(grads["in_proj_weight"].split(e))
    else:
        weights = [grads[f"{p}_weight"] for p in ("q_proj", "k_proj", "v_proj")]
    biases = [None] * 3 if mha.in_proj_bias is None else list(grads["in_proj_bias"].split(e))
    pieces = [*zip(weights, biases, strict=True), (grads["out_proj.weight"], grads.get("out_proj.bias"))]
    return dict(zip(PROJECTIONS, pieces, strict=True))


def projection_grads(module: SparseMultiheadAttention, grads: dict[str, Tensor | None]) -> dict[str, tuple]:
    """Each projection's dense ``(out, in)`` weight gradient (zero off its mask), its mask, and its bias gradient."""
    found = {}
    for name in PROJECTIONS:
        proj = getattr(module, name)
        if isinstance(proj, SparseLinear) and proj.backend == "blocked":
            weight = proj.topology.blocks_to_dense(grads[f"{name}.blocks"])
        else:
            weight = grads[f"{name}.weight_orig" if isinstance(proj, SparseLinear | MaskedLinear) else f"{name}.weight"]
        mask = proj.mask if hasattr(proj, "mask") else torch.ones(weight.shape, dtype=torch.bool)
        found[name] = (weight, mask, grads.get(f"{name}.bias"))
    return found


def assert_same_call(module: SparseMultiheadAttention, dense: nn.MultiheadAttention, case: Case) -> None:
    """Outputs and every gradient of ``module`` and its dense twin agree (1e-12, float64)."""
    (outs, grads), (douts, dgrads) = run(module, case), run(dense, case)
    assert len(outs) == len(douts) == 1 + case.need_weights
    for got, expected in zip(outs, douts, strict=True):
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    inputs_count = 1 if case.self_attention else 3
    for got, expected in zip(grads[:inputs_count], dgrads[:inputs_count], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    mine = dict(zip([n for n, _ in module.named_parameters()], grads[inputs_count:], strict=True))
    theirs = dict(zip([n for n, _ in dense.named_parameters()], dgrads[inputs_count:], strict=True))
    for name in ("bias_k", "bias_v"):
        assert (name in mine) == (name in theirs) == case.add_bias_kv
        if name in mine:
            torch.testing.assert_close(mine[name], theirs[name], atol=1e-12, rtol=0)
    dense_grads = dense_weight_grads(dense, theirs)
    for name, (weight, mask, bias) in projection_grads(module, mine).items():
        dense_weight, dense_bias = dense_grads[name]
        torch.testing.assert_close(weight, dense_weight * mask, atol=1e-12, rtol=0)
        assert (bias is None) == (dense_bias is None) == (not case.bias)
        if bias is not None:
            torch.testing.assert_close(bias, dense_bias, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- 1. the function

@settings(max_examples=300)
@given(cases())
def test_equals_its_dense_twin_property(case: Case) -> None:
    module = sparse_module(case)
    assert_same_call(module, module.to_dense(), case)


@settings(max_examples=150)
@given(cases())
def test_from_dense_equals_the_module_property(case: Case) -> None:
    mha = randomize(nn.MultiheadAttention(case.embed_dim, case.num_heads, **case.module_args(), **F64), case.seed)
    module = SparseMultiheadAttention.from_dense(mha)
    assert all(type(getattr(module, name)) is nn.Linear for name in PROJECTIONS)
    assert_same_call(module, mha, case)
    state, back = mha.state_dict(), module.to_dense().state_dict()
    assert list(back) == list(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("need_weights", [True, False])
def test_dropout_in_training_draws_as_torch_does(need_weights: bool) -> None:
    """With the same seed a training-mode call drops the same attention weights as the twin (same draws); the
    weights dropped are a fraction ``p`` scaled by ``1 / (1 - p)``; eval mode drops nothing."""
    module = SparseMultiheadAttention(8, 2, dropout=0.5, sparsity=0.5, generator=gen(), **F64)
    dense = module.to_dense()
    x = torch.randn(6, 4, 8, generator=gen(1), **F64)
    results = []
    for m in (module, dense):
        torch.manual_seed(7)
        results.append(m(x, x, x, need_weights=need_weights, average_attn_weights=False))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-12, rtol=0)
    if need_weights:
        weights = results[0][1]
        torch.testing.assert_close(weights, results[1][1], atol=1e-12, rtol=0)
        assert 0.35 < (weights == 0).double().mean() < 0.65
        clean = module.eval()(x, x, x, average_attn_weights=False)[1]
        kept = weights != 0
        torch.testing.assert_close(weights[kept], 2 * clean[kept], atol=1e-12, rtol=0)
        assert (clean != 0).all()


def test_gradcheck_and_double_backward() -> None:
    module = SparseMultiheadAttention(4, 2, add_bias_kv=True, add_zero_attn=True, kdim=2, sparsity=0.5,
                                      generator=gen(), fusion="off", **F64)
    randomize(module, 1)
    q = torch.randn(3, 2, 4, generator=gen(2), **F64, requires_grad=True)
    k = torch.randn(2, 2, 2, generator=gen(3), **F64, requires_grad=True)
    v = torch.randn(2, 2, 4, generator=gen(4), **F64, requires_grad=True)
    padding = torch.randn(2, 2, generator=gen(5), **F64)
    params = list(module.parameters())

    def fn(q: Tensor, k: Tensor, v: Tensor, *_: Tensor) -> tuple[Tensor, Tensor]:
        out, weights = module(q, k, v, key_padding_mask=padding, average_attn_weights=False)
        return out, weights

    assert torch.autograd.gradcheck(fn, (q, k, v, *params))
    assert torch.autograd.gradgradcheck(fn, (q, k, v, *params))


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("padding", [False, True])
def test_empty_batches(padding: bool, need_weights: bool) -> None:
    """Empty outputs of the right shapes (torch raises for an empty batch with a padding mask and need_weights=False;
    elsewhere the shapes are its)."""
    module = SparseMultiheadAttention(8, 2, sparsity=0.5)
    q, kv = torch.randn(3, 0, 8), torch.randn(4, 0, 8)
    kwargs = {"need_weights": need_weights,
              "key_padding_mask": torch.zeros(0, 4, dtype=torch.bool) if padding else None}
    out, weights = module(q, kv, kv, **kwargs)
    assert out.shape == (3, 0, 8) and (weights is None or weights.shape == (0, 3, 4))
    if not padding or need_weights:
        expected, expected_weights = module.to_dense()(q, kv, kv, **kwargs)
        assert out.shape == expected.shape and (weights is None) == (expected_weights is None)


ERROR_CALLS = {
    "query-width": lambda kd: ((3, 2, 9), (4, 2, kd), (4, 2, kd), {}),
    "key-width": lambda kd: ((3, 2, 8), (4, 2, kd + 1), (4, 2, kd + 1), {}),
    "key-value-length": lambda kd: ((3, 2, 8), (4, 2, kd), (5, 2, kd), {}),
    "batch-sizes": lambda kd: ((3, 2, 8), (4, 3, kd), (4, 3, kd), {}),
    "query-rank": lambda kd: ((8,), (kd,), (kd,), {}),
    "key-rank": lambda kd: ((3, 2, 8), (4, kd), (4, kd), {}),
    "mask-2d": lambda kd: ((3, 2, 8), (4, 2, kd), (4, 2, kd), {"attn_mask": torch.zeros(3, 5)}),
    "mask-3d": lambda kd: ((3, 2, 8), (4, 2, kd), (4, 2, kd), {"attn_mask": torch.zeros(2, 3, 4)}),
    "mask-1d": lambda kd: ((3, 2, 8), (4, 2, kd), (4, 2, kd), {"attn_mask": torch.zeros(4)}),
    "mask-int": lambda kd: ((3, 2, 8), (4, 2, kd), (4, 2, kd), {"attn_mask": torch.zeros(3, 4, dtype=torch.long)}),
    "padding-shape": lambda kd: ((3, 2, 8), (4, 2, kd), (4, 2, kd), {"key_padding_mask": torch.zeros(2, 5).bool()}),
    "padding-rank": lambda kd: ((3, 2, 8), (4, 2, kd), (4, 2, kd), {"key_padding_mask": torch.zeros(4).bool()}),
    "unbatched-mask-3d": lambda kd: ((3, 8), (4, kd), (4, kd), {"attn_mask": torch.zeros(4, 3, 4)}),
    "causal-without-mask": lambda kd: ((3, 2, 8), (4, 2, kd), (4, 2, kd), {"is_causal": True}),
}


@pytest.mark.parametrize("kdim", [8, 4], ids=["packed", "separate"])
@pytest.mark.parametrize("call", list(ERROR_CALLS))
def test_forward_errors_are_torchs(call: str, kdim: int) -> None:
    """Each bad call raises what nn.MultiheadAttention raises (an instance of its exception type)."""
    query, key, value, kwargs = ERROR_CALLS[call](kdim)
    dense = nn.MultiheadAttention(8, 2, kdim=kdim, vdim=kdim)
    module = SparseMultiheadAttention(8, 2, kdim=kdim, vdim=kdim, sparsity=0.5)
    tensors = [torch.randn(shape) for shape in (query, key, value)]
    with pytest.raises(Exception) as expected:
        dense(*tensors, **kwargs)
    with pytest.raises(Exception) as got:
        module(*tensors, **kwargs)
    assert isinstance(got.value, type(expected.value)), (got.value, expected.value)


@pytest.mark.parametrize("args", [(6, 4), (0, 2), (8, 0), (-4, 2)], ids=["indivisible", "dim-0", "heads-0", "dim<0"])
def test_constructor_errors_are_torchs(args: tuple[int, int]) -> None:
    with pytest.raises(Exception) as expected:
        nn.MultiheadAttention(*args)
    with pytest.raises(type(expected.value)):
        SparseMultiheadAttention(*args, sparsity=0.5)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_nested_tensors_are_refused_as_torch_does() -> None:
    nested = torch.nested.nested_tensor([torch.randn(3, 8), torch.randn(2, 8)])
    module = SparseMultiheadAttention(8, 2, sparsity=0.5)
    with pytest.raises(AssertionError, match="NestedTensor"):
        module(nested, nested, nested)


# --------------------------------------------------------------------------- 2. the projections

@pytest.mark.parametrize("sparsity, degree", [(0.75, 4), (0.875, 2), (0.0, 16)])
def test_projections_are_orthogonal_with_the_requested_sparsity(sparsity: float, degree: int) -> None:
    module = SparseMultiheadAttention(16, 4, sparsity=sparsity, generator=gen(), **F64)
    for name in PROJECTIONS:
        proj = getattr(module, name)
        assert isinstance(proj, SparseLinear) and proj.activation == "linear"
        w = proj.weight.detach()
        torch.testing.assert_close(w @ w.T, torch.eye(16, **F64), atol=1e-12, rtol=0)
        assert proj.sparsity == sparsity and proj.degree == degree
        assert int(proj.mask.sum()) == 16 * degree and (proj.mask.sum(0) == degree).all()
        assert ((w != 0) <= proj.mask).all()
    rectangular = SparseMultiheadAttention(16, 4, kdim=32, vdim=8, sparsity=0.75, generator=gen(), **F64)
    for name in PROJECTIONS:
        proj = getattr(rectangular, name)
        assert_semi_orthogonal(proj.weight.detach(), atol=1e-12)
        assert proj.sparsity == 0.75 and int(proj.mask.sum()) == proj.mask.numel() // 4


def test_projections_are_drawn_in_order_from_one_generator() -> None:
    module = SparseMultiheadAttention(16, 4, kdim=8, sparsity=0.5, add_bias_kv=True, generator=gen(3))
    g = gen(3)
    expected = [SparseLinear(n, 16, sparsity=0.5, activation="linear", generator=g) for n in (16, 8, 16, 16)]
    for name, layer in zip(PROJECTIONS, expected, strict=True):
        state, theirs = getattr(module, name).state_dict(), layer.state_dict()
        assert all(torch.equal(state[k], theirs[k]) for k in theirs), name
    again = SparseMultiheadAttention(16, 4, kdim=8, sparsity=0.5, add_bias_kv=True, generator=gen(3))
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), again.state_dict().values(),
                                                   strict=True))
    other = SparseMultiheadAttention(16, 4, kdim=8, sparsity=0.5, generator=gen(4))
    assert not torch.equal(other.q_proj.row_perm, module.q_proj.row_perm)


def test_settings_reach_every_projection() -> None:
    module = SparseMultiheadAttention(16, 2, bias=False, degree=8, backend="masked", activation="relu", gain=2.0,
                                      fusion="off")
    for name in PROJECTIONS:
        proj = getattr(module, name)
        assert (proj.degree, proj.init, proj.backend, proj.activation, proj.gain, proj.fusion) == (
            8, "sao", "masked", "relu", 2.0, "off")
        assert proj.bias is None and proj.mirrored
        assert proj.timer is module.q_proj.timer  # one route measurement for the four
    assert all(getattr(SparseMultiheadAttention(16, 2, degree=8, init="rg-normal"), name).init == "rg-normal"
               for name in PROJECTIONS)


def test_given_projections() -> None:
    dense = {name: nn.Linear(8, 8, **F64) for name in PROJECTIONS}
    dense["q_proj"] = MaskedLinear.from_dense(nn.Linear(8, 8, **F64), torch.rand(8, 8, generator=gen()) < 0.5)
    dense["k_proj"] = SparseLinear(8, 8, degree=2, generator=gen(), **F64)
    module = SparseMultiheadAttention(8, 2, projections=dense, **F64)
    assert all(getattr(module, name) is dense[name] for name in PROJECTIONS)
    with torch.no_grad():
        module.k_proj.bias.normal_(generator=gen(2))
    x = torch.randn(3, 2, 8, generator=gen(1), **F64)
    torch.testing.assert_close(module(x, x, x)[0], module.to_dense()(x, x, x)[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("change, error, match", [
    ({"q_proj": nn.Linear(8, 4)}, ValueError, r"projections\['q_proj'\] must map 8 to 8"),
    ({"k_proj": nn.Linear(8, 8)}, ValueError, r"projections\['k_proj'\] must map 4 to 8"),
    ({"extra": nn.Linear(8, 8)}, ValueError, "exactly the keys"),
    ({"v_proj": "linear"}, TypeError, "must be an nn.Module"),
], ids=["q-shape", "k-shape", "unknown-key", "not-a-module"])
def test_given_projections_are_checked(change: dict, error: type, match: str) -> None:
    projections = {"q_proj": nn.Linear(8, 8), "k_proj": nn.Linear(4, 8), "v_proj": nn.Linear(8, 8),
                   "out_proj": nn.Linear(8, 8), **change}
    with pytest.raises(error, match=match):
        SparseMultiheadAttention(8, 2, kdim=4, projections=projections)


def test_settings_and_projections_exclude_each_other() -> None:
    projections = {name: nn.Linear(8, 8) for name in PROJECTIONS}
    with pytest.raises(TypeError, match="the settings sparsity, backend apply to the SparseLinear projections"):
        SparseMultiheadAttention(8, 2, sparsity=0.5, backend="masked", projections=projections)
    with pytest.raises(ValueError, match="bias=False but projections"):
        SparseMultiheadAttention(8, 2, bias=False, projections=projections)
    with pytest.raises(ValueError, match="needs degree= or sparsity="):
        SparseMultiheadAttention(8, 2)
    with pytest.raises(ValueError, match=r"k_proj \(8x6\): degree=2 is not valid"):
        SparseMultiheadAttention(8, 2, kdim=6, degree=2)
    with pytest.raises(TypeError, match="must be an integer"):
        SparseMultiheadAttention(8.0, 2, sparsity=0.5)


# --------------------------------------------------------------------------- 3. the module contract

def _same_function(a: nn.Module, b: nn.Module, *, atol: float = 0.0) -> None:
    x = torch.randn(4, 3, 16, generator=gen(9), **F64)
    with deterministic():
        torch.testing.assert_close(a(x, x, x)[0], b(x, x, x)[0], atol=atol, rtol=0)


def _module(seed: int = 0, **kwargs: Any) -> SparseMultiheadAttention:
    return randomize(SparseMultiheadAttention(16, 4, add_bias_kv=True, sparsity=0.75, generator=gen(seed), **F64,
                                              **kwargs), seed + 1)


def test_attributes_are_torchs() -> None:
    module, dense = _module(kdim=8, vdim=4, dropout=0.25, batch_first=True), nn.MultiheadAttention(
        16, 4, 0.25, add_bias_kv=True, kdim=8, vdim=4, batch_first=True)
    for name in ("embed_dim", "kdim", "vdim", "num_heads", "head_dim", "dropout", "batch_first", "add_zero_attn",
                 "in_proj_weight", "_qkv_same_embed_dim"):
        assert getattr(module, name) == getattr(dense, name), name
    assert module.bias_k.shape == dense.bias_k.shape and module.bias_v.shape == dense.bias_v.shape
    assert "in_proj_bias" not in module.state_dict() and module.in_proj_bias.numel() == 0
    assert "embed_dim=16, num_heads=4, kdim=8, vdim=4, dropout=0.25, batch_first=True" in repr(module)


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "torch.save"])
def test_whole_module_round_trips(how: str) -> None:
    module = _module()
    other = copied(module, how)
    _same_function(module, other)
    for (k, v), w in zip(module.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(v, w) and v.data_ptr() != w.data_ptr(), k


def test_state_dict_round_trip_adopts_the_topologies() -> None:
    source, target = _module(0), _module(5)
    assert not torch.equal(source.q_proj.row_perm, target.q_proj.row_perm)
    result = target.load_state_dict(source.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    _same_function(source, target)


def test_to_dense_state_dict_loads_into_a_fresh_module() -> None:
    module = _module(kdim=8, vdim=8)
    dense = module.to_dense()
    fresh = nn.MultiheadAttention(16, 4, add_bias_kv=True, kdim=8, vdim=8, **F64)
    fresh.load_state_dict(dense.state_dict())
    x, kv = torch.randn(4, 3, 16, generator=gen(1), **F64), torch.randn(5, 3, 8, generator=gen(2), **F64)
    torch.testing.assert_close(fresh(x, kv, kv)[0], module(x, kv, kv)[0], atol=1e-12, rtol=0)


def test_to_dense_refuses_mixed_biases() -> None:
    module = SparseMultiheadAttention.from_dense(nn.MultiheadAttention(8, 2))
    module.v_proj = nn.Linear(8, 8, bias=False)
    with pytest.raises(ValueError, match="q_proj, k_proj, out_proj have a bias and v_proj do"):
        module.to_dense()


def test_from_dense_keeps_mode_device_dtype_and_copies() -> None:
    mha = nn.MultiheadAttention(8, 2, dropout=0.1, add_zero_attn=True, batch_first=True, **F64).eval()
    module = SparseMultiheadAttention.from_dense(mha)
    assert not module.training and module.dropout == 0.1 and module.add_zero_attn and module.batch_first
    assert all(p.dtype == torch.float64 for p in module.parameters())
    assert all(p.data_ptr() != q.data_ptr() for p in module.parameters() for q in mha.parameters())
    with pytest.raises(TypeError, match=r"takes an nn\.MultiheadAttention"):
        SparseMultiheadAttention.from_dense(nn.Linear(8, 8))


def test_deferred_initialisation_from_meta() -> None:
    eager = _module(3)
    lazy = SparseMultiheadAttention(16, 4, add_bias_kv=True, sparsity=0.75, generator=gen(3), device="meta", **F64)
    assert all(p.is_meta for p in lazy.parameters())
    lazy.to_empty(device="cpu")
    lazy.reset_parameters(gen(4))
    for name in PROJECTIONS:
        a, b = getattr(eager, name), getattr(lazy, name)
        assert torch.equal(a.row_perm, b.row_perm) and torch.equal(a.col_perm, b.col_perm)
        w = b.weight.detach()
        torch.testing.assert_close(w @ w.T, torch.eye(16, **F64), atol=1e-12, rtol=0)
    assert lazy.bias_k.abs().sum() > 0
    x = torch.randn(2, 3, 16, **F64)
    torch.testing.assert_close(lazy(x, x, x)[0], lazy.to_dense()(x, x, x)[0], atol=1e-12, rtol=0)


def test_reset_parameters_redraws_every_kind_of_projection() -> None:
    module = SparseMultiheadAttention.from_dense(nn.MultiheadAttention(8, 2, add_bias_kv=True))
    module.k_proj = SparseLinear(8, 8, degree=2)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    module.reset_parameters(gen(1))
    after = module.state_dict()
    for key in ("q_proj.weight", "k_proj.blocks", "out_proj.weight", "bias_k", "bias_v"):
        assert not torch.equal(before[key], after[key]), key
    assert torch.equal(before["k_proj.row_perm"], after["k_proj.row_perm"])


def test_double_and_float() -> None:
    module = SparseMultiheadAttention(16, 4, sparsity=0.75, add_bias_kv=True, generator=gen())
    module.double()
    assert all(p.dtype == torch.float64 for p in module.parameters())
    x = torch.randn(3, 2, 16, **F64)
    torch.testing.assert_close(module(x, x, x)[0], module.to_dense()(x, x, x)[0], atol=1e-12, rtol=0)
    module.float()
    assert module(x.float(), x.float(), x.float())[0].dtype == torch.float32


# --------------------------------------------------------------------------- 4. in models

def replace_attention(model: nn.Module, make: Any) -> int:
    """Replace every ``nn.MultiheadAttention`` in ``model`` by ``make(mha)``; how many."""
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, name, make(child))
                count += 1
    return count


def densify(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every SparseMultiheadAttention replaced by its ``to_dense()`` twin."""
    twin = copy.deepcopy(model)
    for module in list(twin.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, SparseMultiheadAttention):
                setattr(module, name, child.to_dense())
    return twin


def sparse_like(seed: int) -> Any:
    """``mha -> SparseMultiheadAttention`` with SparseLinear projections and ``mha``'s arguments."""
    g = gen(seed)

    def make(mha: nn.MultiheadAttention) -> SparseMultiheadAttention:
        weight = mha.out_proj.weight
        return SparseMultiheadAttention(mha.embed_dim, mha.num_heads, mha.dropout, batch_first=mha.batch_first,
                                        sparsity=0.75, generator=g, device=weight.device, dtype=weight.dtype)

    return make


def maker(kind: str, seed: int) -> Any:
    """How a model's attention modules are replaced: ``from_dense``, or new ones with SparseLinear projections."""
    return SparseMultiheadAttention.from_dense if kind == "from_dense" else sparse_like(seed)


def encoder() -> nn.TransformerEncoder:
    torch.manual_seed(0)
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, batch_first=True), 2).double()


def vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=4, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128,
                             num_classes=10).double()


def _sgd_lowers_the_loss(model: nn.Module, x: Tensor, target: Tensor, loss_fn: Any) -> None:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before = copy.deepcopy(model.state_dict())
    losses = []
    for _ in range(4):
        torch.manual_seed(1)  # the same dropout draws each step
        optimizer.zero_grad()
        loss = loss_fn(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(".q_proj." in k for k in changed) and any(".out_proj." in k for k in changed)


def _save_load_reproduces(model: nn.Module, fresh: nn.Module, call: Any) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    model.eval()
    fresh.eval()
    with deterministic():
        torch.testing.assert_close(call(fresh), call(model), atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["from_dense", "sparse"])
def test_transformer_encoder(kind: str) -> None:
    dense = encoder()
    model = copy.deepcopy(dense)
    assert replace_attention(model, maker(kind, 0)) == 2
    if kind == "sparse":
        dense = densify(model)
    x = torch.randn(3, 7, 64, generator=gen(1), **F64)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, 4:] = padding[2, 6:] = True
    results = []
    for m in (model.train(), dense.train()):  # training mode: the same dropout draws, the same outputs
        torch.manual_seed(3)
        results.append(m(x, src_key_padding_mask=padding))
    torch.testing.assert_close(results[0], results[1], atol=1e-12, rtol=0)
    model.eval()
    dense.eval()
    # eval with a padding mask and grad enabled: the encoder's nested-tensor check reads in_proj_weight.requires_grad
    torch.testing.assert_close(model(x, src_key_padding_mask=padding), dense(x, src_key_padding_mask=padding),
                               atol=1e-12, rtol=0)
    causal = nn.Transformer.generate_square_subsequent_mask(7, dtype=torch.float64)
    torch.testing.assert_close(model(x, mask=causal, is_causal=True), dense(x, mask=causal, is_causal=True),
                               atol=1e-12, rtol=0)
    with torch.no_grad(), warnings.catch_warnings():  # the dense twin on its fast paths: fused layers, nested tensors
        warnings.simplefilter("ignore", UserWarning)
        torch.testing.assert_close(model(x), dense(x), atol=1e-12, rtol=0)
        got, expected = model(x, src_key_padding_mask=padding), dense(x, src_key_padding_mask=padding)
    torch.testing.assert_close(got[~padding], expected[~padding], atol=1e-12, rtol=0)  # nested: zeros where padded
    target = torch.randn(3, 7, 64, generator=gen(2), **F64)
    _sgd_lowers_the_loss(model, x, target, nn.functional.mse_loss)
    fresh = encoder()
    replace_attention(fresh, maker(kind, 1))
    _save_load_reproduces(model, fresh, lambda m: m(x, src_key_padding_mask=padding))


def test_encoder_fast_paths_are_opted_out_of() -> None:
    """A fresh encoder around a sparse layer is told the nested-tensor path is off (as for any MHA with separate
    projection weights); in eval mode, with and without grad and padding, layers and encoders run their regular
    path, which calls the module (the dense twin of the layer runs its fused kernel: same result)."""
    layer = nn.TransformerEncoderLayer(16, 2, batch_first=True)
    layer.self_attn = SparseMultiheadAttention(16, 2, batch_first=True, dropout=0.1, sparsity=0.5)
    layer.eval()
    twin = copy.deepcopy(layer)
    twin.self_attn = layer.self_attn.to_dense()
    with pytest.warns(UserWarning, match="_qkv_same_embed_dim was not True"):
        stack = nn.TransformerEncoder(layer, 2).eval()
    assert not stack.use_nested_tensor
    x = torch.randn(2, 5, 16)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    forward = SparseMultiheadAttention.forward
    with mock.patch.object(SparseMultiheadAttention, "forward", autospec=True, side_effect=forward) as calls:
        with torch.no_grad():
            torch.testing.assert_close(layer(x), twin(x), atol=1e-5, rtol=0)
            stack(x, src_key_padding_mask=padding)
        stack(x, src_key_padding_mask=padding)
        layer(x, src_key_padding_mask=padding)
    assert calls.call_count == 6


@pytest.mark.parametrize("kind", ["from_dense", "sparse"])
def test_vision_transformer(kind: str) -> None:
    pytest.importorskip("torchvision")
    dense = vit()
    model = copy.deepcopy(dense)
    assert replace_attention(model, maker(kind, 0)) == 2
    if kind == "sparse":
        dense = densify(model)
    images = torch.randn(4, 3, 32, 32, generator=gen(1), **F64)
    for mode in (True, False):
        model.train(mode)
        dense.train(mode)
        torch.testing.assert_close(model(images), dense(images), atol=1e-12, rtol=0)
    _sgd_lowers_the_loss(model, images, torch.tensor([0, 1, 2, 3]), nn.functional.cross_entropy)
    fresh = vit()
    replace_attention(fresh, maker(kind, 1))
    _save_load_reproduces(model, fresh, lambda m: m(images))
