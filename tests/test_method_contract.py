"""The contract every registered sparsify method keeps, on a small MLP and a small CNN.

Exact reported sparsity (the summary's row equals what the weights show), masked weights with
zero gradient that stay exactly zero under SGD with momentum and weight decay, same seed → same
weights, and deep copy / pickle round trips computing the same function.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import sao
from helpers import deterministic, gen, method_settings, mlp, small_cnn, target_for
from sao.methods import METHODS, PruneMethod, SparsifySummary
from sao.methods.pruning import kept_count

SPARSITY = 0.75  # exact for every layer below: 32/64 wide, 16-channel convs (degrees divide)


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], str]] = {
    "mlp": (mlp, (16,), "tanh"),
    "cnn": (small_cnn, (3, 8, 8), "relu"),
}


def build(model: str, method: str, seed: int = 0) -> tuple[nn.Module, SparsifySummary]:
    make, _, activation = MODELS[model]
    torch.manual_seed(seed)  # the dense starting weights (what -t methods prune)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rg-n/rg-u have no conv form: the CNN's convs are skipped, with a warning
        return sao.sparsify(make(), method, **target_for(method, sparsity=SPARSITY),
                            **method_settings(method, activation=activation), generator=gen(seed),
                            return_summary=True)


def sparsified(net: nn.Module, summary: SparsifySummary) -> list[tuple[str, nn.Module]]:
    return [(r.name, net.get_submodule(r.name)) for r in summary.sparsified]


def weight_connections(layer: nn.Module) -> torch.Tensor:
    """Connections with a non-zero weight (any tap of a kernel), read off the dense weight."""
    w = layer.weight.detach()
    return w.ne(0) if w.dim() == 2 else w.ne(0).flatten(2).any(-1)


def full_mask(layer: nn.Module) -> torch.Tensor:
    """The bool mask over every weight entry (kernel masks broadcast over taps)."""
    mask = sao.methods.connection_mask(layer)
    return mask if layer.weight.dim() == 2 else mask[:, :, None, None].expand_as(layer.weight)


def inputs(model: str, batch: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, *MODELS[model][1], generator=gen(seed))


CASES = [(model, method) for model in MODELS for method in METHODS.names()]


def pooled(method: str) -> bool:
    """Whether ``method`` prunes the layers together (GMP's one threshold): only their total is at the target."""
    chosen = METHODS.get(method)
    return isinstance(chosen, PruneMethod) and chosen.rule is not None and chosen.rule.pooled


def prunes_in_place(method: str) -> bool:
    """Whether ``method`` prunes the layers as they are (the ``-t`` flavour: masked layers keep their masks)."""
    chosen = METHODS.get(method)
    return isinstance(chosen, PruneMethod) and chosen.rule is not None and not chosen.reinit


@pytest.mark.parametrize(("model", "method"), CASES)
def test_reported_sparsity_is_measured_and_exact(model: str, method: str) -> None:
    net, summary = build(model, method)
    total = kept = 0
    for row in summary.sparsified:
        layer = net.get_submodule(row.name)
        present = weight_connections(layer)
        assert row.sparsity == pytest.approx(1 - float(present.double().mean()), abs=1e-12), row
        assert row.status == "applied" and row.target == (0.0 if method == "dense" else SPARSITY)
        m, n = present.shape
        if method == "eoi":  # EOI's guarantee: t <= nnz <= t + min(m, n) - 1
            assert kept_count(m * n, SPARSITY) <= int(present.sum()) <= kept_count(m * n, SPARSITY) + min(m, n) - 1
        elif not pooled(method):  # GMP: one threshold, layers vary, the total is exact (below)
            assert row.sparsity == row.target
        total, kept = total + m * n, kept + int(present.sum())
    if pooled(method):
        assert kept == kept_count(total, SPARSITY)
    if summary.sparsified and method != "eoi":
        assert summary.sparsity == pytest.approx(summary.target, abs=1 / total)


@pytest.mark.parametrize(("model", "method"), CASES)
def test_masked_weights_get_no_gradient_and_stay_zero(model: str, method: str) -> None:
    net, summary = build(model, method)
    layers = sparsified(net, summary)
    masks = {name: full_mask(layer) for name, layer in layers}
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1)
    x, target = inputs(model), torch.randint(0, 10, (4,), generator=gen(2))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), target).backward()
        for name, layer in layers:
            if hasattr(layer, "weight_orig"):  # masked storage: the masked entries get exactly zero gradient
                off = layer.weight_mask == 0
                assert bool((layer.weight_orig.grad[off] == 0).all()), name
        opt.step()
    for name, layer in layers:
        assert bool((layer.weight.detach()[~masks[name]] == 0).all()), name
        assert torch.equal(sao.methods.connection_mask(layer), masks[name][(...,) + (0,) * (masks[name].dim() - 2)])


@pytest.mark.parametrize(("model", "method"), CASES)
def test_same_seed_same_weights(model: str, method: str) -> None:
    (a, _), (b, _) = build(model, method, seed=3), build(model, method, seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(("model", "method"), CASES)
def test_deepcopy_and_pickle_keep_the_function(model: str, method: str) -> None:
    net, _ = build(model, method)
    net.eval()
    x = inputs(model)
    with deterministic():  # bit for bit: the copies on the same routes (a measured choice may differ)
        expected = net(x)
        for other in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
            torch.testing.assert_close(other(x), expected, rtol=0, atol=0)
            assert all(p is not q for p, q in zip(other.parameters(), net.parameters(), strict=True))


@pytest.mark.parametrize(("model", "method"), CASES)
def test_a_second_sparsify_never_reports_a_missed_target_as_applied(model: str, method: str) -> None:
    """Sparsify at 0.75, then again at 0.25: every row built at the plan, or off-target with the reason and warned.

    The method's rounding: one connection per layer (SAO topologies are exact, kept counts
    round), EOI's ``min(out, in)`` extra non-zeros, GMP's over the layers together.
    """
    net, _ = build(model, method)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net, summary = sao.sparsify(net, method, **target_for(method, sparsity=0.25),
                                    **method_settings(method, activation=MODELS[model][2]), generator=gen(1),
                                    return_summary=True)
    caught = [w for w in caught if issubclass(w.category, UserWarning)]
    goal = 0.0 if method == "dense" else 0.25
    built = [r for r in summary.sparsified if r.status != "off-target"]
    for row in built:
        slack = min(row.shape[:2]) if method == "eoi" else 1
        planned = 1 - row.degree / max(row.shape[:2]) if row.status == "nearest" else goal  # SAO topology's nearest
        if not pooled(method):
            assert abs(row.sparsity - planned) * row.connections <= slack, row
    if pooled(method) and built:
        total = sum(r.connections for r in built)
        assert abs(sum(r.sparsity * r.connections for r in built) / total - goal) * total <= 1
    if prunes_in_place(method):  # masked layers keep their 0.75 masks: never "applied" at 0.25
        assert summary.sparsified and summary.off_target == summary.sparsified
        assert summary.sparsity == pytest.approx(0.75, abs=0.01)
        already = "already 0.7500 sparse" if not pooled(method) else "pooled layers are 0.7500 sparse"
        assert all("kept the layer's existing mask (ANDed with the new one)" in r.reason and already in r.reason
                   for r in summary.off_target)
        assert "off their target" in str(caught[0].message)
    else:  # -s, EOI, LRP, dense redraw the layers; SAO/RG-N/RG-U layers are sparse already and left as they are
        assert not summary.off_target
    if method in ("sao", "rg-n", "rg-u"):
        assert all(r.reason.startswith("already sparse") or "no convolution form" in r.reason for r in summary.skipped)
        assert not summary.sparsified and len(summary.skipped) == len(summary.layers) - 2
    assert len(caught) == (1 if summary.off_target or summary.skipped or summary.nearest else 0)


def test_the_t_methods_are_exactly_those_that_prune_in_place() -> None:
    assert sorted(m for m in METHODS.names() if prunes_in_place(m)) == ["gmp-t", "lmp-t", "rg-t"]
