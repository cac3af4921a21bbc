"""Kernel-level pruning baselines on ECO layers (paper Tables 11 and 12): LMP/GMP/LRP/RG on CNN-ECO and LipConvNet."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import sao
from helpers import gen
from sao.experiments import EXPERIMENTS, MethodConfig, Run, method_phase, run_experiment, run_one
from sao.experiments.protocol import AFTER_TRAINING, measured_sparsity, sparsify_exclude
from sao.methods import connection_mask, target_layers
from sao.methods._layers import find_layers
from sao.methods.pruning import kept_count
from sao.models import cnn_eco, lipconvnet
from sao.nn import ECOConv2d, MaskedConv2d, SOCConv2d, SparseConv2d
from sao.spectral import operator_singular_values
from sao.topology import ramanujan

PRUNE = ["lmp-s", "lmp-t", "lrp", "rg-s", "rg-t"]
MODELS: dict[str, Callable[[], nn.Module]] = {
    "cnn_eco": lambda: cnn_eco(4, width=8, generator=gen(0)),  # ECO C = 8 (stride 1) and 72 (stride 3)
    "lipconvnet": lambda: lipconvnet(5, init_channels=4, generator=gen(0)),  # SOC stages 1-2, ECO C = 64, 128, 256
}
INPUT = {"cnn_eco": 36, "lipconvnet": 32}


def eco_only(name: str, module: nn.Module) -> bool:
    """``exclude=`` that keeps every layer but the ECO layers dense (what the protocol does on ECO models)."""
    return not isinstance(module, ECOConv2d)


def eco_layers(net: nn.Module) -> list[ECOConv2d]:
    return [m for m in net.modules() if isinstance(m, ECOConv2d)]


def other_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer outside the ECO layers (stem, SOC, classifier)."""
    eco = [n for n, m in net.named_modules() if isinstance(m, ECOConv2d)]
    return {k: v.detach().clone() for k, v in net.state_dict().items() if not any(k.startswith(f"{e}.") for e in eco)}


def assert_pruned(layer: ECOConv2d, sparsity: float) -> torch.Tensor:
    """Exact kernel sparsity over the inner ``C x C`` kernels; masked kernels exactly zero. Returns the mask."""
    c = layer.channels
    mask = connection_mask(layer)
    assert mask.shape == (c, c) and torch.equal(mask, connection_mask(layer.conv))
    assert int(mask.sum()) == kept_count(c * c, sparsity)
    conv = layer.conv
    assert type(conv) is MaskedConv2d
    assert bool((conv.weight[~mask] == 0).all())
    assert bool((conv.weight_mask.flatten(2).all(-1) == mask).all())  # whole kernels, every tap
    return mask


# --------------------------------------------------------------------------- targets and sparsity


def test_eco_layers_are_weight_layers_like_any_other() -> None:
    net = MODELS["cnn_eco"]()
    eco = ["body.0", "body.2", "body.4", "body.6"]
    assert [n for n, _ in target_layers(net)] == ["stem.2", "stem.4", *eco]  # first (stem.0) and last excluded
    assert [n for n, _ in target_layers(net, eco_only)] == eco
    assert all(s.role == "target" for s in find_layers(net, "none") if isinstance(s.module, ECOConv2d))
    lip = MODELS["lipconvnet"]()
    assert [n for n, _ in target_layers(lip)] == ["stage3.0", "stage4.0", "stage5.0"]  # SOC layers: not supported
    soc = [s for s in find_layers(lip, "none") if isinstance(s.module, SOCConv2d)]
    assert soc and all(s.role == "skipped" and "not supported: SOCConv2d" in s.reason for s in soc)
    assert [n for n, _ in target_layers(lip, ["stage4.0"])] == ["stage3.0", "stage5.0"]
    assert [n for n, _ in target_layers(lip, lambda n, m: n.startswith("stage5") or eco_only(n, m))] == [
        "stage3.0", "stage4.0"]
    # exclude counts first/last over all weight layers; on a pure ECO stack that drops its ends
    stack = nn.Sequential(*[ECOConv2d(4, 4, 3, input_size=9, generator=gen(i)) for i in range(3)])
    assert [n for n, _ in target_layers(stack)] == ["1"]
    assert [n for n, _ in target_layers(stack, "none")] == ["0", "1", "2"]
    with pytest.raises(ValueError, match="neither weight layers"):
        target_layers(lip, ["stage3.0.conv"])  # the inner conv is part of its ECO layer, not a weight layer


def test_an_sao_eco_layer_is_skipped_as_already_sparse() -> None:
    net = nn.Sequential(*[ECOConv2d(4, 4, 3, input_size=9, sparsity=s, generator=gen(i)) for i, s in
                          enumerate((0.0, 0.5, 0.0))])
    assert [n for n, _ in target_layers(net, "none")] == ["0", "2"]
    (skipped,) = [s for s in find_layers(net, "none") if s.role == "skipped"]
    assert skipped.name == "1" and skipped.refused_when_strict
    assert skipped.reason.startswith("already sparse (ECOConv2d")


def test_the_protocol_sparsifies_the_eco_layers_of_an_eco_model_only() -> None:
    """``sparsify_exclude``: every layer but the ECO ones on an ECO model (SAO-ECO's setting), else first_last."""
    for model, eco in (("cnn_eco", ["body.0", "body.2", "body.4", "body.6"]),
                       ("lipconvnet", ["stage3.0", "stage4.0", "stage5.0"])):
        net = MODELS[model]()
        assert callable(sparsify_exclude(net))
        assert [n for n, _ in target_layers(net, sparsify_exclude(net))] == eco
    plain = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    assert sparsify_exclude(plain) == "first_last"


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("method", PRUNE)
def test_exact_kernel_sparsity_and_the_rest_untouched(model: str, method: str) -> None:
    net = MODELS[model]()
    before = other_weights(net)
    types = {n: type(m) for n, m in net.named_modules() if not isinstance(m, ECOConv2d) and ".conv" not in n}
    assert sao.sparsify(net, method, sparsity=0.875, exclude=eco_only, generator=gen(1)) is net
    for layer in eco_layers(net):
        assert_pruned(layer, 0.875)
    after = other_weights(net)
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert {n: type(m) for n, m in net.named_modules() if n in types} == types
    for m in net.modules():  # stem convs, SOC layers and the classifier: dense, not pruned
        if type(m) in (nn.Conv2d, nn.Linear, SOCConv2d):
            assert bool(connection_mask(m).all())
    result = measured_sparsity(net)
    assert result["connection_sparsity_min"] == result["connection_sparsity_max"] == 0.875
    side = INPUT[model]
    assert net(torch.randn(2, 3, side, side, generator=gen(2))).shape == (2, 10)


def test_degree_gives_the_sao_sparsity_of_each_layer() -> None:
    net = sao.sparsify(MODELS["cnn_eco"](), "lmp-s", degree=2, exclude=eco_only)
    for layer in eco_layers(net):
        assert_pruned(layer, 1 - 2 / layer.channels)


@pytest.mark.parametrize("method", ["gmp-s", "gmp-t"])
def test_global_magnitude_keeps_the_largest_kernels_over_all_eco_layers(method: str) -> None:
    net, ref = MODELS["cnn_eco"](), MODELS["cnn_eco"]()
    sao.sparsify(net, method, sparsity=0.875, exclude=eco_only)
    masks = [connection_mask(m) for m in eco_layers(net)]
    scores = [m.conv.weight.detach().abs().flatten(2).sum(-1) for m in eco_layers(ref)]
    total = sum(s.numel() for s in scores)
    assert sum(int(m.sum()) for m in masks) == kept_count(total, 0.875)
    kept = torch.cat([s[m] for s, m in zip(scores, masks, strict=True)])
    dropped = torch.cat([s[~m] for s, m in zip(scores, masks, strict=True)])
    assert kept.min() >= dropped.max()


def test_measured_sparsity_counts_each_eco_layer_once() -> None:
    net = sao.sparsify(MODELS["lipconvnet"](), "lmp-s", sparsity=0.75, exclude=eco_only)
    eco = eco_layers(net)
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear | SOCConv2d | MaskedConv2d)]
    assert len(weights) == 2 + 1 + 3  # SOC stages 1-2, the SOC head, the three ECO inner convs
    zeros = sum(int((m.conv.weight == 0).sum()) for m in eco)
    assert zeros == sum(0.75 * m.conv.weight.numel() for m in eco)  # ECO kernels have no exact zeros of their own
    result = measured_sparsity(net)
    assert result["sparsity_overall"] == pytest.approx(zeros / sum(w.numel() for w in weights))
    assert result["sparsity_sparse_layers"] == pytest.approx(0.75)
    assert result["sparsity_dense_layers"] == 0.0


# --------------------------------------------------------------------------- what is kept


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("method", ["lmp-s", "lrp", "rg-s"])
def test_s_keeps_the_eco_init_on_surviving_kernels(model: str, method: str) -> None:
    net, ref = MODELS[model](), MODELS[model]()  # the same generator: the same ECO kernels
    sao.sparsify(net, method, sparsity=0.5, exclude=eco_only, generator=gen(7))
    for layer, dense in zip(eco_layers(net), eco_layers(ref), strict=True):
        mask = connection_mask(layer)
        assert bool(connection_mask(dense).all())
        assert torch.equal(layer.conv.weight, dense.conv.weight * mask[:, :, None, None])
        assert torch.equal(layer.conv.weight_orig, dense.conv.weight)  # ECO init, not a Delta-orthogonal redraw


@pytest.mark.parametrize("model", list(MODELS))
def test_lmp_keeps_the_largest_l1_kernels_per_layer(model: str) -> None:
    net, ref = MODELS[model](), MODELS[model]()
    sao.sparsify(net, "lmp-t", sparsity=0.75, exclude=eco_only)
    for layer, dense in zip(eco_layers(net), eco_layers(ref), strict=True):
        mask = connection_mask(layer)
        l1 = dense.conv.weight.detach().abs().flatten(2).sum(-1)
        assert l1[mask].min() >= l1[~mask].max()


def test_lrp_is_random_and_seeded() -> None:
    a, b, c = (sao.sparsify(MODELS["cnn_eco"](), "lrp", sparsity=0.5, exclude=eco_only, generator=gen(s))
               for s in (3, 3, 4))
    masks = [[connection_mask(m) for m in eco_layers(n)] for n in (a, b, c)]
    assert all(torch.equal(x, y) for x, y in zip(masks[0], masks[1], strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(masks[0], masks[2], strict=True))


@pytest.mark.parametrize(("c_in", "c_out", "k", "side", "stride"), [(8, 8, 3, 9, 1), (8, 8, 3, 9, 3), (8, 16, 2, 4, 2)])
@pytest.mark.parametrize("method", ["rg-s", "rg-t"])
def test_rg_uses_exactly_the_sao_eco_support(method: str, c_in: int, c_out: int, k: int, side: int,
                                             stride: int) -> None:
    net = nn.Sequential(ECOConv2d(c_in, c_out, k, input_size=side, stride=stride, generator=gen(0)))
    sao.sparsify(net, method, sparsity=0.75, exclude="none", generator=gen(5))
    sao_eco = ECOConv2d(c_in, c_out, k, input_size=side, stride=stride, sparsity=0.75, generator=gen(5))
    assert torch.equal(connection_mask(net[0]), sao_eco.conv.mask)


def test_rg_masks_are_the_sao_eco_channel_graphs_layer_by_layer() -> None:
    net = sao.sparsify(MODELS["lipconvnet"](), "rg-t", sparsity=0.875, exclude=eco_only, generator=gen(5))
    replay = gen(5)
    for layer in eco_layers(net):
        c = layer.channels
        assert torch.equal(connection_mask(layer), ramanujan(c, c, sparsity=0.875, generator=replay).mask())


# --------------------------------------------------------------------------- training keeps the masks


@pytest.mark.parametrize(("model", "method"), [("cnn_eco", "lmp-s"), ("lipconvnet", "rg-t")])
def test_masked_kernels_stay_zero_while_training(model: str, method: str) -> None:
    net = sao.sparsify(MODELS[model](), method, sparsity=0.75, exclude=eco_only, generator=gen(1))
    start = {id(m): m.conv.weight.detach().clone() for m in eco_layers(net)}
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    side = INPUT[model]
    x, y = torch.randn(8, 3, side, side, generator=gen(2)), torch.randint(0, 10, (8,), generator=gen(3))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        for layer in eco_layers(net):
            assert bool((layer.conv.weight_orig.grad[~connection_mask(layer)] == 0).all())
        opt.step()
    net(x)  # recompute the masked weights
    for layer in eco_layers(net):
        mask = assert_pruned(layer, 0.75)
        assert not torch.equal(layer.conv.weight[mask], start[id(layer)][mask])  # the kept kernels trained


# --------------------------------------------------------------------------- SAO-ECO through sparsify


def sao_eco(model: str, seed: int = 0, **target: object) -> nn.Module:
    """``model`` made SAO-ECO as the paper's Tables 11 and 12 do: ``"sao"`` on its ECO layers only."""
    return sao.sparsify(MODELS[model](), "sao", **target, exclude=eco_only, strict=True, generator=gen(seed))


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("target", [{"sparsity": 0.5}, {"sparsity": 0.75}, {"degree": 2}])
def test_sao_makes_dense_eco_layers_sao_eco(model: str, target: dict) -> None:
    net = MODELS[model]()
    before = other_weights(net)
    old = [m.conv for m in eco_layers(net)]
    sao.sparsify(net, "sao", **target, exclude=eco_only, strict=True, generator=gen(1))
    after = other_weights(net)
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    layers = eco_layers(net)
    assert len(layers) == len(old) and not any(m.conv is c for m, c in zip(layers, old, strict=True))
    for layer in layers:
        c, inner = layer.channels, layer.conv
        assert type(inner) is SparseConv2d and inner.init == "sao-eco" and inner.backend == "blocked"
        expected = target["sparsity"] if "sparsity" in target else 1 - target["degree"] / c
        assert inner.sparsity == pytest.approx(expected, abs=1e-12)
        mask = connection_mask(layer)  # exact kernel-level sparsity of the C x C channel graph, every row alike
        assert mask.shape == (c, c) and int(mask.sum()) == round((1 - expected) * c * c)
        assert bool((mask.sum(1) == mask.sum(1)[0]).all())
        assert bool((inner.weight.detach()[~mask] == 0).all())
    side = INPUT[model]
    assert net(torch.randn(2, 3, side, side, generator=gen(2))).shape == (2, 10)


@pytest.mark.parametrize(("c_in", "c_out", "k", "side", "stride"), [(4, 8, 3, 6, 1), (4, 4, 3, 9, 3), (2, 4, 3, 6, 2)])
def test_sparsified_eco_layers_are_orthogonal(c_in: int, c_out: int, k: int, side: int, stride: int) -> None:
    """SAO-ECO through sparsify is an orthogonal convolution at init (all singular values 1), at the sparsity
    asked, and is the layer ``ECOConv2d(..., sparsity=)`` draws from the same generator."""
    net = nn.Sequential(ECOConv2d(c_in, c_out, k, input_size=side, stride=stride, dtype=torch.float64,
                                  generator=gen(0)))
    sao.sparsify(net, "sao", sparsity=0.5, exclude="none", strict=True, generator=gen(3))
    layer = net[0]
    assert isinstance(layer, ECOConv2d) and layer.conv.sparsity == 0.5 and layer.conv.blocks.dtype == torch.float64
    s = operator_singular_values(layer, (c_in, side, side))
    torch.testing.assert_close(s, torch.ones_like(s), atol=1e-8, rtol=0)
    built = ECOConv2d(c_in, c_out, k, input_size=side, stride=stride, sparsity=0.5, dtype=torch.float64,
                      generator=gen(3))
    assert torch.equal(layer.conv.weight, built.conv.weight)


def test_sao_eco_keeps_the_layer_configuration_and_backend_and_gain() -> None:
    old = ECOConv2d(4, 8, 3, input_size=6, bias=False, dtype=torch.float64, generator=gen(0))
    net = nn.Sequential(old)
    sao.sparsify(net, "sao", degree=2, backend="masked", gain=2.0, exclude="none", generator=gen(1))
    new = net[0]
    assert (new.in_channels, new.out_channels, new.input_size, new.stride, new.channels) == (4, 8, 6, 1, 8)
    assert new.conv.kernel_size == old.conv.kernel_size and new.conv.dilation == old.conv.dilation
    assert new.conv.bias is None and new.conv.backend == "masked" and new.conv.degree == 2
    s = operator_singular_values(new, (4, 6, 6))
    torch.testing.assert_close(s, torch.full_like(s, 2.0), atol=1e-8, rtol=0)


def test_sao_eco_is_seeded() -> None:
    a, b, c = (sao_eco("cnn_eco", seed, sparsity=0.5) for seed in (3, 3, 4))
    masks = [[connection_mask(m) for m in eco_layers(n)] for n in (a, b, c)]
    assert all(torch.equal(x, y) for x, y in zip(masks[0], masks[1], strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(masks[0], masks[2], strict=True))


def test_sao_on_an_eco_model_with_the_default_exclude_sparsifies_the_stem_too() -> None:
    """ECO layers are not special: without ``exclude=`` the stem's middle convs become SAO-Delta as well."""
    net, summary = sao.sparsify(MODELS["cnn_eco"](), "sao", sparsity=0.5, generator=gen(0), return_summary=True)
    assert [r.name for r in summary.sparsified] == ["stem.2", "stem.4", "body.0", "body.2", "body.4", "body.6"]
    assert type(net.stem[2]) is SparseConv2d and net.stem[2].init == "sao-delta"
    assert all(type(m.conv) is SparseConv2d and m.conv.sparsity == 0.5 for m in eco_layers(net))


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("method", ["rg-n", "rg-u", "eoi"])
def test_methods_without_an_eco_form_skip_eco_layers_or_raise_when_strict(model: str, method: str) -> None:
    net = MODELS[model]()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=r"no ECO form \(SAO-ECO is method 'sao'\)"):
        sao.sparsify(net, method, sparsity=0.5, exclude=eco_only, strict=True)
    with pytest.warns(UserWarning, match="no ECO form"):
        _, summary = sao.sparsify(net, method, sparsity=0.5, exclude=eco_only, return_summary=True)
    rows = [r for r in summary.layers if r.kind == "ECOConv2d"]
    assert rows and all(r.status == "skipped" and "no ECO form" in r.reason for r in rows)
    assert not summary.sparsified
    assert all(type(m.conv) is SparseConv2d and m.conv.num_blocks == 1 for m in eco_layers(net))  # still dense ECO
    after = net.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(state[k], after[k]) for k in state)


def test_pruning_an_sao_eco_model_raises_when_strict_and_skips_otherwise() -> None:
    with pytest.raises(ValueError, match=r"already sparse \(ECOConv2d, degree 4\)"):
        sao.sparsify(sao_eco("cnn_eco", sparsity=0.5), "lmp-t", sparsity=0.75, exclude=eco_only, strict=True)
    net = sao_eco("cnn_eco", sparsity=0.5)
    inner = [m.conv for m in eco_layers(net)]
    with pytest.warns(UserWarning, match="already sparse"):
        _, summary = sao.sparsify(net, "lmp-t", sparsity=0.75, exclude=eco_only, return_summary=True)
    assert [m.conv for m in eco_layers(net)] == inner  # left as they are
    assert [r.status for r in summary.layers if r.kind == "ECOConv2d"] == ["skipped"] * len(inner)
    with pytest.warns(UserWarning, match="already sparse"):
        sao.sparsify(net, "sao", degree=2, exclude=eco_only)  # a second SAO call does not change them either
    assert [m.conv for m in eco_layers(net)] == inner


def test_dense_leaves_eco_layers_as_they_are() -> None:
    net = MODELS["cnn_eco"]()
    inner = [m.conv for m in eco_layers(net)]
    sao.sparsify(net, "dense")
    assert [m.conv for m in eco_layers(net)] == inner


def test_connection_mask_of_eco_layers() -> None:
    assert bool(connection_mask(ECOConv2d(4, 4, 3, input_size=9)).all())
    sparse = ECOConv2d(4, 8, 3, input_size=9, sparsity=0.5, generator=gen(0))
    assert torch.equal(connection_mask(sparse), sparse.conv.mask) and sparse.conv.mask.shape == (8, 8)


# --------------------------------------------------------------------------- Tables 11 and 12, end to end


def tiny(table: str, method: str, sparsity: float | None, depth: int) -> Run:
    base = EXPERIMENTS.get(table).runs("quick", train={"device": "cpu"})[0]
    config = dataclasses.replace(base, model=dataclasses.replace(base.model, width=8, depth=depth),
                                 method=MethodConfig(method, sparsity=sparsity) if sparsity is not None
                                 else MethodConfig(method),
                                 data=dataclasses.replace(base.data, batch_size=500),
                                 train=dataclasses.replace(base.train, epochs=1))
    return Run(config.label, config.to_dict())


@pytest.mark.parametrize(("table", "method", "depth"), [("table11", "lmp-s", 5), ("table12", "rg-t", 2),
                                                     ("table12", "sao", 2)])
def test_run_cnn_prunes_eco_models(tmp_path: Path, table: str, method: str, depth: int) -> None:
    result = run_one(tiny(table, method, 0.5, depth), run_experiment, tmp_path)
    assert result["status"] == "completed" and result["test_acc"] is not None
    assert result["connection_sparsity_min"] == result["connection_sparsity_max"] == 0.5
    phases = {p.name for p in Path(result["run_dir"]).iterdir() if p.is_dir()}
    assert phases == ({"dense", "finetune"} if method_phase(method) == AFTER_TRAINING else {"train"})
