"""The pruning rules behind the pruning baselines (paper §III-E) and the methods built on them.

Every registered pruning method is checked against masks and weights computed here directly
with :mod:`sao.methods.pruning`, :func:`sao.topology.ramanujan` and the orthogonal inits, from
the same generator, drawn in the same order (the redraws of ``-S``, then the masks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

import sao
from helpers import gen, method_settings, mlp, small_cnn, target_for
from sao.init import delta_orthogonal_, orthogonal_
from sao.methods import (
    METHODS,
    PRUNING_RULES,
    GlobalMagnitudeRule,
    LayerPlan,
    LocalMagnitudeRule,
    PruneMethod,
    PruningRule,
    RandomRule,
    RedrawSettings,
    SAOMaskRule,
    SparsifyRequest,
    connection_mask,
)
from sao.methods.pruning import global_magnitude_masks, kept_count, magnitude_mask, random_mask
from sao.topology import ramanujan

#: What each registered pruning method is: (its mask rule here, whether it redraws the layers first).
EXPECTED: dict[str, tuple[str | None, bool]] = {
    "dense": (None, True), "lmp-s": ("local", True), "gmp-s": ("global", True), "lrp": ("random", True),
    "rg-s": ("sao", True), "lmp-t": ("local", False), "gmp-t": ("global", False), "rg-t": ("sao", False),
}
RULE_CLASSES: dict[str, type[PruningRule]] = {
    "local-magnitude": LocalMagnitudeRule, "global-magnitude": GlobalMagnitudeRule, "random": RandomRule,
    "sao-mask": SAOMaskRule,
}
REQUESTS = [{"sparsity": 0.75}, {"degree": 4}]


MODELS: dict[str, tuple[Callable[[], nn.Sequential], str, list[int]]] = {  # builder, activation, target indices
    "mlp": (mlp, "tanh", [2, 4]),
    "cnn": (small_cnn, "relu", [2, 4]),
}


def dense_model(model: str) -> nn.Sequential:
    torch.manual_seed(11)  # the dense starting weights: what -T prunes
    return MODELS[model][0]()


def redrawn(weight: Tensor, activation: str, g: torch.Generator) -> Tensor:
    """A fresh (Delta-)orthogonal weight of ``weight``'s shape, as ``-S`` and dense draw it."""
    fresh = torch.empty_like(weight)
    return orthogonal_(fresh, generator=g) if fresh.dim() == 2 else delta_orthogonal_(fresh, activation=activation,
                                                                                    generator=g)


def layer_sparsity(shape: torch.Size, request: dict) -> float:
    return request["sparsity"] if "sparsity" in request else 1 - request["degree"] / max(shape[:2])


def layer_degree(shape: torch.Size, request: dict) -> int:
    return request["degree"] if "degree" in request else round((1 - request["sparsity"]) * max(shape[:2]))


def reference_masks(rule: str, weights: list[Tensor], request: dict, g: torch.Generator) -> list[Tensor]:
    """The bool ``(out, in)`` masks ``rule`` gives, computed with the mask functions themselves."""
    shapes = [w.shape for w in weights]
    if rule == "local":
        return [magnitude_mask(w, layer_sparsity(w.shape, request)) for w in weights]
    if rule == "global":
        sizes = [s[:2].numel() for s in shapes]
        kept = sum(n * (1 - layer_sparsity(s, request)) for n, s in zip(sizes, shapes, strict=True))
        return global_magnitude_masks(weights, 1 - kept / sum(sizes))
    if rule == "random":
        return [random_mask(s[:2], layer_sparsity(s, request), g) for s in shapes]
    return [ramanujan(*s[:2], degree=layer_degree(s, request), generator=g).mask() for s in shapes]


@pytest.mark.parametrize("request_", REQUESTS, ids=["sparsity", "degree"])
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("method", list(EXPECTED))
def test_methods_give_exactly_the_masks_of_the_mask_functions(method: str, model: str, request_: dict) -> None:
    _, activation, targets = MODELS[model]
    net = sao.sparsify(dense_model(model), method, **target_for(method, **request_),
                       **method_settings(method, activation=activation), generator=gen(5))
    rule, reinit = EXPECTED[method]
    g = gen(5)
    weights = [dense_model(model)[i].weight.detach() for i in targets]
    if reinit:
        weights = [redrawn(w, activation, g) for w in weights]
    layers = [net[i] for i in targets]
    if rule is None:
        assert all(type(layer) in (nn.Linear, nn.Conv2d) for layer in layers)
        assert all(torch.equal(layer.weight, w) for layer, w in zip(layers, weights, strict=True))
        return
    for layer, w, mask in zip(layers, weights, reference_masks(rule, weights, request_, g), strict=True):
        assert torch.equal(layer.weight_orig, w)
        assert torch.equal(connection_mask(layer), mask)
        full = mask.view(*mask.shape, *[1] * (w.dim() - 2)).expand_as(w)
        assert torch.equal(layer.weight_mask.bool(), full) and torch.equal(layer.weight, w * full)


def test_registered_methods_are_built_from_the_rule_classes() -> None:
    kinds = {"local": LocalMagnitudeRule, "global": GlobalMagnitudeRule, "random": RandomRule, "sao": SAOMaskRule}
    for name, (rule, reinit) in EXPECTED.items():
        method = METHODS.get(name)
        assert isinstance(method, PruneMethod) and method.reinit is reinit
        assert (method.rule is None) if rule is None else type(method.rule) is kinds[rule], name


def test_rule_metadata() -> None:
    assert {name: (rule.pooled, rule.needs_degree) for name, rule in RULE_CLASSES.items()} == {
        "local-magnitude": (False, False), "global-magnitude": (True, False), "random": (False, False),
        "sao-mask": (False, True)}
    assert PRUNING_RULES.names() == sorted(RULE_CLASSES)
    assert all(type(PRUNING_RULES.get(name)) is cls and cls.name == name for name, cls in RULE_CLASSES.items())


@pytest.mark.parametrize("name", list(RULE_CLASSES))
def test_plans_follow_the_rule_metadata(name: str) -> None:
    """At sparsity 0.6 (no SAO degree of a 32x32 layer gives it) only a rule that needs a degree takes the nearest."""
    rule = RULE_CLASSES[name]()
    request = SparsifyRequest(sparsity=0.6, settings=RedrawSettings())
    plan = PruneMethod(rule).plan_layer("x", nn.Linear(32, 32), request)
    assert plan.pooled is rule.pooled
    if rule.needs_degree:
        assert plan.nearest and plan.degree == 16 and plan.sparsity == 0.5  # 12.8 -> 16, the nearest divisor of 32
    else:
        assert not plan.nearest and plan.degree is None and plan.sparsity == 0.6


def test_old_string_spelling_still_works() -> None:
    for name, cls in RULE_CLASSES.items():
        method = PruneMethod(name, reinit=False)
        assert type(method.rule) is cls and method == PruneMethod(cls(), reinit=False)
    assert PruneMethod("none").rule is None and PruneMethod("none") == METHODS.get("dense") == PruneMethod(None)
    assert PruneMethod("local-magnitude") == METHODS.get("lmp-s")


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError, match=r"rule='magic'.*choose from none, global-magnitude, local-magnitude, random, "
                                         r"sao-mask"):
        PruneMethod("magic")
    with pytest.raises(TypeError, match="PruningRule instance"):
        PruneMethod(LocalMagnitudeRule)  # type: ignore[arg-type]  # the class, not an instance


def test_dense_is_no_rule_and_needs_no_target() -> None:
    dense = METHODS.get("dense")
    assert dense.rule is None and not dense.needs_target
    assert all(METHODS.get(name).needs_target for name, (rule, _) in EXPECTED.items() if rule is not None)


@dataclass(frozen=True)
class KeepLeading(PruningRule):
    """A toy rule: keep the first ``kept_count`` connections of each layer, row by row."""

    name: ClassVar[str] = "test-keep-leading"

    def masks(self, weights: list[Tensor], plans: list[LayerPlan], request: SparsifyRequest) -> list[Tensor]:
        assert isinstance(request, SparsifyRequest) and request.sparsity == 0.75 and request.degree is None
        assert request.settings == RedrawSettings(gain=2.0)  # the -s flavour: the redraw's settings
        assert [p.sparsity for p in plans] == [0.75, 0.75] and set(request.plans) == {"2", "4"}
        out = []
        for w, p in zip(weights, plans, strict=True):
            keep = torch.zeros(w.shape[:2].numel(), dtype=torch.bool)
            keep[: kept_count(keep.numel(), p.sparsity)] = True
            out.append(keep.view(w.shape[:2]))
        return out


def test_a_new_rule_plugs_into_prune_method_and_the_registries() -> None:
    PRUNING_RULES.register(KeepLeading.name, KeepLeading())
    METHODS.register("test-keep-leading", PruneMethod(KeepLeading.name))
    try:
        net = sao.sparsify(mlp(), "test-keep-leading", sparsity=0.75, gain=2.0, generator=gen())
        assert connection_mask(net[2]).flatten().tolist() == [True] * 256 + [False] * 768
    finally:
        METHODS.unregister("test-keep-leading")
        PRUNING_RULES.unregister(KeepLeading.name)
    assert "test-keep-leading" not in METHODS and KeepLeading.name not in PRUNING_RULES
