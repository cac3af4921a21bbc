"""Layer adapters: sparsify reaches nn.MultiheadAttention's projections and GPT-2's Conv1D (issue 21)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sao
from helpers import assert_round_trips, deterministic
from sao.methods import ADAPTERS, METHODS, LayerAdapter, class_path, linear_from_transposed
from sao.methods.adapters import adapt_layers, restore_unchanged
from sao.nn import MaskedLinear, SparseLinear, SparseMultiheadAttention

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Block(nn.Module):
    """Linear → self-attention → linear → linear (the attention in the middle, so not first or last)."""

    def __init__(self, width: int = 32, heads: int = 4, **attention: object) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True, **attention)
        self.mid = nn.Linear(width, width)
        self.out = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.out(torch.tanh(self.mid(h)))


def block(seed: int = 0, **attention: object) -> Block:
    torch.manual_seed(seed)
    return Block(**attention)


def tokens(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 5, 8, generator=gen(seed))


def quiet_sparsify(model: nn.Module, *args: object, **kwargs: object):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sao.sparsify(model, *args, **kwargs)


def test_attention_projections_become_orthogonal_sao_layers_one_row_each() -> None:
    net, summary = sao.sparsify(block(), sparsity=0.75, generator=gen(), return_summary=True)
    assert isinstance(net.attn, SparseMultiheadAttention)
    names = [r.name for r in summary.layers]
    assert names == ["inp", *(f"attn.{p}" for p in PROJECTIONS), "mid", "out"]
    assert [r.status for r in summary.layers] == ["excluded", *["applied"] * 5, "excluded"]
    for p in PROJECTIONS:
        layer = getattr(net.attn, p)
        assert isinstance(layer, SparseLinear) and layer.sparsity == 0.75
        w = layer.weight.detach().double()
        torch.testing.assert_close(w @ w.T, torch.eye(32, dtype=torch.float64), atol=1e-5, rtol=0)
    out = net(tokens())
    out.square().mean().backward()
    assert all(getattr(net.attn, p).blocks.grad is not None for p in PROJECTIONS)


def test_projections_draw_independent_topologies_and_reproduce_by_seed() -> None:
    a = sao.sparsify(block(), sparsity=0.75, generator=gen(3))
    b = sao.sparsify(block(), sparsity=0.75, generator=gen(3))
    masks = [getattr(a.attn, p).mask for p in PROJECTIONS]
    assert not all(torch.equal(masks[0], m) for m in masks[1:])
    for p in PROJECTIONS:
        torch.testing.assert_close(getattr(a.attn, p).weight, getattr(b.attn, p).weight, rtol=0, atol=0)


def test_an_attention_module_none_of_whose_parts_changed_is_put_back() -> None:
    net = block()
    original = net.attn
    sao.sparsify(net, sparsity=0.75, exclude=["inp", "attn", "out"])
    assert net.attn is original and type(net.attn) is nn.MultiheadAttention


def test_the_dense_baseline_redraws_each_projection_orthogonal() -> None:
    net = quiet_sparsify(block(), "dense")
    assert isinstance(net.attn, SparseMultiheadAttention)
    for p in PROJECTIONS:
        w = getattr(net.attn, p).weight.detach().double()
        assert type(getattr(net.attn, p)) is nn.Linear
        torch.testing.assert_close(w @ w.T, torch.eye(32, dtype=torch.float64), atol=1e-5, rtol=0)


def test_the_attention_module_name_excludes_all_its_projections_and_a_projection_name_one() -> None:
    _, summary = sao.sparsify(block(), sparsity=0.75, exclude=["inp", "attn", "out"], return_summary=True)
    assert [r.status for r in summary.layers] == ["excluded"] * 5 + ["applied", "excluded"]
    net, summary = sao.sparsify(block(), sparsity=0.75, exclude=["inp", "attn.v_proj", "out"], return_summary=True)
    assert [r.status for r in summary.layers][1:5] == ["applied", "applied", "excluded", "applied"]
    assert type(net.attn.v_proj) is nn.Linear and isinstance(net.attn.q_proj, SparseLinear)
    with pytest.raises(ValueError, match="neither weight layers"):
        sao.sparsify(block(), sparsity=0.75, exclude=["attn.nothing"])


def test_a_dense_attention_in_standard_form_computes_what_the_original_does() -> None:
    for options in ({}, {"add_bias_kv": True}, {"kdim": 16, "vdim": 24}, {"bias": False}):
        torch.manual_seed(0)
        mha = nn.MultiheadAttention(32, 4, batch_first=True, **options).double()
        model = nn.Sequential(nn.Identity(), mha)
        adapted = adapt_layers(model)
        assert len(adapted.adapted) == 1 and isinstance(model[1], SparseMultiheadAttention)
        q = torch.randn(2, 5, 32, dtype=torch.float64)
        k = torch.randn(2, 7, options.get("kdim", 32), dtype=torch.float64)
        v = torch.randn(2, 7, options.get("vdim", 32), dtype=torch.float64)
        expected, weights = mha(q, k, v)
        got, got_weights = model[1](q, k, v)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got_weights, weights, rtol=1e-12, atol=1e-12)
        restore_unchanged(model, adapted)
        assert model[1] is mha


def test_pruning_methods_prune_each_projection_keeping_trained_values_and_warn_they_are_copies() -> None:
    net = block()
    in_proj = net.attn.in_proj_weight.detach().clone()
    net.attn.out_proj.weight.requires_grad_(False)  # frozen stays frozen
    with pytest.warns(UserWarning, match=r"adapted module\(s\) 'attn' .*build the optimizer after sparsify"):
        net, summary = sao.sparsify(net, "lmp-t", sparsity=0.75, return_summary=True)
    q = net.attn.q_proj
    assert isinstance(q, MaskedLinear) and summary.layers[1].status == "applied"
    kept = q.weight_mask.bool()
    torch.testing.assert_close(q.weight_orig[kept], in_proj[:32][kept], rtol=0, atol=0)
    assert not net.attn.out_proj.weight_orig.requires_grad and q.weight_orig.requires_grad


@settings(max_examples=12, deadline=None)
@given(method=st.sampled_from([m for m in METHODS.names() if METHODS.get(m).needs_target]),
       seed=st.integers(0, 2**16))
def test_every_method_runs_on_a_model_with_attention(method: str, seed: int) -> None:
    net, summary = quiet_sparsify(block(seed), method, sparsity=0.75, generator=gen(seed), return_summary=True)
    rows = {r.name: r for r in summary.layers}
    for p in PROJECTIONS:
        assert rows[f"attn.{p}"].status in ("applied", "nearest", "off-target", "skipped")
    out = net(tokens(seed))
    assert out.shape == (2, 5, 3) and bool(torch.isfinite(out).all())


def test_a_tied_attention_module_gets_one_replacement_in_every_place() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    net = nn.ModuleDict({"first": nn.Linear(4, 4), "a": mha, "b": mha, "last": nn.Linear(4, 4)})
    net, summary = sao.sparsify(net, sparsity=0.75, return_summary=True)
    assert net["a"] is net["b"] and isinstance(net["a"], SparseMultiheadAttention)
    assert summary.layers[1].aliases == ("b.q_proj",)


def test_an_attention_module_with_hooks_is_left_as_it_is_and_reported() -> None:
    net = block()
    net.attn.register_forward_hook(lambda *_: None)
    with pytest.warns(UserWarning, match="skipped"):
        net, summary = sao.sparsify(net, sparsity=0.75, return_summary=True)
    row = summary.layers[1]
    assert row.name == "attn" and row.status == "skipped" and "forward_hooks" in row.reason
    assert type(net.attn) is nn.MultiheadAttention
    hooked = block()
    hooked.attn.out_proj.register_forward_pre_hook(lambda *_: None)
    with pytest.raises(ValueError, match=r"layer 'attn'.*child 'out_proj' has forward_pre_hooks"):
        sao.sparsify(hooked, sparsity=0.75, strict=True)


def test_a_failing_sparsify_leaves_the_model_as_it_was() -> None:
    net = block()
    before = dict(net.named_modules())
    with pytest.raises(ValueError, match="not achievable"):
        sao.sparsify(net, sparsity=0.9, strict=True)  # 32x32 cannot be 0.9 sparse: raised after adapting
    assert dict(net.named_modules()) == before and type(net.attn) is nn.MultiheadAttention


def test_sparse_attention_state_round_trips_and_goes_back_to_dense() -> None:
    net = sao.sparsify(block(), sparsity=0.75, generator=gen())
    x = tokens()
    with torch.no_grad(), deterministic():  # bit for bit: every copy on the same route
        expected = net(x)
        assert_round_trips(net, sao.sparsify(block(5), sparsity=0.75, generator=gen(9)), x, expected)
        dense = copy.deepcopy(net)
        dense.attn = net.attn.to_dense()
        assert type(dense.attn) is nn.MultiheadAttention
        torch.testing.assert_close(dense(x), expected, rtol=1e-5, atol=1e-5)


class TLinear(nn.Module):
    """Another library's linear layer: ``y = x @ weight + bias`` with ``weight`` stored ``(in, out)``."""

    def __init__(self, n: int, m: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, m))
        self.bias = nn.Parameter(torch.randn(m))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


def test_a_registered_adapter_reaches_another_librarys_layer_and_only_that_exact_class() -> None:
    class Sub(TLinear):
        pass

    adapter = ADAPTERS.register(class_path(TLinear), LayerAdapter(linear_from_transposed, "transposed"))
    try:
        net = nn.Sequential(nn.Linear(4, 16), TLinear(16, 16), Sub(16, 16), nn.Linear(16, 2))
        x = torch.randn(3, 4)
        linear = linear_from_transposed(net[1])
        torch.testing.assert_close(linear(x @ net[0].weight.T), net[1](x @ net[0].weight.T))
        net, summary = quiet_sparsify(net, degree=4, return_summary=True)
        assert isinstance(net[1], SparseLinear) and type(net[2]) is Sub
        assert [r.name for r in summary.layers] == ["0", "1", "3"]  # Sub has no adapter: not a weight layer
    finally:
        assert ADAPTERS.unregister(class_path(TLinear)) is adapter


def test_adapter_registry_takes_only_adapters() -> None:
    with pytest.raises(TypeError, match="LayerAdapter"):
        ADAPTERS.register("x.Y", linear_from_transposed)


# --------------------------------------------------------------------------- GPT-2 (transformers, a test extra)


def gpt2(seed: int = 0) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=32, vocab_size=97)
    return transformers.GPT2LMHeadModel(config).eval()


def test_gpt2_conv1d_projections_become_sao_layers_and_the_model_trains() -> None:
    model = gpt2()
    ids = torch.randint(0, 97, (2, 12), generator=gen())
    net, summary = sao.sparsify(model, sparsity=0.75, generator=gen(), return_summary=True)
    rows = {r.name: r for r in summary.layers}
    assert rows["transformer.h.0.attn.c_attn"].status == "excluded"  # the first weight layer
    assert rows["transformer.h.0.attn.c_proj"].status == "applied"
    assert rows["transformer.h.1.mlp.c_fc"].shape == (256, 64)
    assert rows["lm_head"].status == "excluded"
    sparse = [n for n, m in net.named_modules() if isinstance(m, SparseLinear)]
    assert len(sparse) == 7 and all(net.get_submodule(n).sparsity == 0.75 for n in sparse)
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = net(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_gpt2_in_standard_form_computes_what_it_did() -> None:
    model = gpt2().double()
    ids = torch.randint(0, 97, (2, 12), generator=gen())
    with torch.no_grad():
        expected = model(ids).logits
        adapted = adapt_layers(model)
        assert len(adapted.adapted) == 8 and all(type(a.standard) is nn.Linear for a in adapted.adapted)
        torch.testing.assert_close(model(ids).logits, expected, rtol=1e-12, atol=1e-12)
    restore_unchanged(model, adapted)
    assert type(model.transformer.h[0].attn.c_attn).__name__ == "Conv1D"


def test_gpt2_layers_sparsify_leaves_unchanged_stay_conv1d_and_are_reported_as_such() -> None:
    model = gpt2()
    model.transformer.h[1].mlp.c_fc.register_forward_hook(lambda *_: None)
    net, summary = quiet_sparsify(model, "dense", return_summary=True)
    assert type(net.transformer.h[0].attn.c_attn).__name__ == "Conv1D"  # the first layer: excluded, put back
    assert type(net.transformer.h[0].attn.c_proj) is nn.Linear  # redrawn orthogonal: in standard form
    rows = {r.name: r for r in summary.layers}
    assert rows["transformer.h.0.attn.c_attn"].kind == "Conv1D" and rows["transformer.h.0.attn.c_attn"].shape == (
        192, 64)
    hooked = rows["transformer.h.1.mlp.c_fc"]
    assert hooked.status == "skipped" and hooked.kind == "Conv1D" and hooked.shape == (256, 64)


def test_an_attention_sharing_a_parameter_or_child_with_the_model_is_left_and_reported() -> None:
    net = nn.Sequential(nn.Linear(8, 32), nn.MultiheadAttention(32, 4), nn.MultiheadAttention(32, 4), nn.Linear(32, 2))
    net[2].in_proj_weight = net[1].in_proj_weight
    with pytest.warns(UserWarning, match="skipped"):
        net, summary = sao.sparsify(net, sparsity=0.75, return_summary=True)
    assert [r.status for r in summary.layers] == ["excluded", "skipped", "skipped", "excluded"]
    assert "shared with '2'" in summary.layers[1].reason and net[1].in_proj_weight is net[2].in_proj_weight
    other = block()
    other.extra = other.attn.out_proj  # a child reachable elsewhere
    with pytest.raises(ValueError, match=r"layer 'attn'.*child 'out_proj' is also 'extra'"):
        sao.sparsify(other, sparsity=0.75, strict=True)


@pytest.mark.parametrize("kind", ["load_state_dict_post", "state_dict_pre", "tensor"])
def test_an_attention_with_any_hook_is_left_as_it_is(kind: str) -> None:
    net = block()
    if kind == "load_state_dict_post":
        net.attn.register_load_state_dict_post_hook(lambda *_: None)
    elif kind == "state_dict_pre":
        net.attn.register_state_dict_pre_hook(lambda *_: None)
    else:
        net.attn.in_proj_weight.register_hook(lambda g: g)
    with pytest.warns(UserWarning, match="skipped"):
        net, summary = sao.sparsify(net, sparsity=0.75, return_summary=True)
    assert type(net.attn) is nn.MultiheadAttention and "hook" in summary.layers[1].reason


def test_an_adapter_that_fails_leaves_its_module_and_the_rest_is_sparsified() -> None:
    net = nn.Sequential(nn.Linear(8, 32), nn.MultiheadAttention(32, 4), nn.MultiheadAttention(32, 4, dropout=1.5),
                        nn.Linear(32, 2))
    with pytest.warns(UserWarning, match="skipped"):
        net, summary = sao.sparsify(net, sparsity=0.75, return_summary=True)
    assert isinstance(net[1], SparseMultiheadAttention) and type(net[2]) is nn.MultiheadAttention
    assert "standard form could not be built (ValueError: dropout" in summary.layers[-2].reason


def test_an_exclude_predicate_sees_the_adapted_module_as_it_was() -> None:
    net, summary = sao.sparsify(block(), sparsity=0.75, return_summary=True,
                                exclude=lambda name, m: isinstance(m, nn.MultiheadAttention) or name == "out")
    assert type(net.attn) is nn.MultiheadAttention and isinstance(net.inp, SparseLinear)
    assert [r.status for r in summary.layers] == ["applied", *["excluded"] * 4, "applied", "excluded"]


def test_a_model_that_is_itself_an_adaptable_layer_gets_a_way_out() -> None:
    with pytest.raises(ValueError, match=r"nn.ModuleList\(\[layer\]\)"):
        sao.sparsify(nn.MultiheadAttention(32, 4), sparsity=0.5)
    wrapped = sao.sparsify(nn.ModuleList([nn.MultiheadAttention(32, 4)]), sparsity=0.5, exclude="none")[0]
    assert isinstance(wrapped, SparseMultiheadAttention) and wrapped.q_proj.sparsity == 0.5


def test_an_attention_that_is_the_first_layer_is_excluded_whole() -> None:
    torch.manual_seed(0)
    net = nn.ModuleDict({"attn": nn.MultiheadAttention(32, 4), "mid": nn.Linear(32, 32), "head": nn.Linear(32, 2)})
    net, summary = sao.sparsify(net, sparsity=0.75, return_summary=True)
    assert [r.status for r in summary.layers] == ["excluded"] * 4 + ["applied", "excluded"]
    assert type(net["attn"]) is nn.MultiheadAttention  # nothing of it changed: put back
