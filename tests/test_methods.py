"""Tests of sao.sparsify and the method registry."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import sao
from helpers import gen
from sao._registry import Registry
from sao.methods import AFTER_TRAINING, AT_INIT, METHODS, PHASES, PruneMethod, SparsifyMethod, target_layers
from sao.nn import SparseConv2d, SparseLinear


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, 10))


def cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10))


def test_sao_sparsifies_all_but_first_and_last() -> None:
    net = sao.sparsify(mlp(), degree=4, generator=gen())
    assert type(net[0]) is nn.Linear and type(net[6]) is nn.Linear
    for i in (2, 4):
        assert isinstance(net[i], SparseLinear) and net[i].degree == 4 and net[i].init == "sao"
        w = net[i].weight.detach().double()
        torch.testing.assert_close(w @ w.T, torch.eye(32, dtype=torch.float64), atol=1e-6, rtol=0)
    assert net(torch.randn(5, 64)).shape == (5, 10)


@pytest.mark.parametrize(("method", "init"), [("sao", "sao"), ("rg-n", "rg-normal"), ("rg-u", "rg-uniform")])
def test_each_method_uses_its_init(method: str, init: str) -> None:
    net = sao.sparsify(mlp(), method=method, sparsity=0.875, backend="masked", generator=gen())
    assert net[2].init == init and net[2].backend == "masked" and net[2].sparsity == 0.875


@pytest.mark.parametrize(("exclude", "expected"), [
    ("first_last", ["2", "4"]), ("first", ["2", "4", "6"]), ("last", ["0", "2", "4"]), ("none", ["0", "2", "4", "6"]),
    (["0", "4"], ["2", "6"]), (lambda name, m: m.in_features == 32 and m.out_features == 10, ["0", "2", "4"]),
])
def test_exclude_choices(exclude: object, expected: list[str]) -> None:
    assert [n for n, _ in target_layers(mlp(), exclude)] == expected  # type: ignore[arg-type]


def test_exclude_errors() -> None:
    with pytest.raises(ValueError, match="first_last, first, last, none"):
        target_layers(mlp(), "middle")
    with pytest.raises(ValueError, match="not weight layers"):
        target_layers(mlp(), ["1"])


def test_conv_model_gets_sao_delta() -> None:
    net = sao.sparsify(cnn(), sparsity=0.75, activation="relu", generator=gen())
    conv = net[2]
    assert isinstance(conv, SparseConv2d) and conv.init == "sao-delta" and conv.mirrored
    assert isinstance(net[4], SparseConv2d) and net[4].stride == (2, 2) and net[4].padding == (1, 1)
    assert type(net[0]) is nn.Conv2d and type(net[8]) is nn.Linear
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_invalid_degree_names_the_layer_when_strict() -> None:
    with pytest.raises(ValueError, match=r"layer '2'.*nearest valid"):
        sao.sparsify(mlp(), degree=3, strict=True)


def test_invalid_degree_takes_the_nearest_by_default() -> None:
    with pytest.warns(UserWarning, match=r"2 of 2 sparsified layers cannot take degree=3 exactly"):
        net, summary = sao.sparsify(mlp(), degree=3, generator=gen(), return_summary=True)
    assert net[2].degree == net[4].degree == 4  # 32x32: valid 1, 2, 4, ...; a tie goes to the denser layer
    assert [r.status for r in summary.layers] == ["excluded", "nearest", "nearest", "excluded"]


def test_method_without_conv_form_and_grouped_conv_when_strict() -> None:
    with pytest.raises(ValueError, match="no convolution form"):
        sao.sparsify(cnn(), method="rg-n", sparsity=0.5, strict=True)
    grouped = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 8, 3))
    with pytest.raises(ValueError, match="groups=2"):
        sao.sparsify(grouped, sparsity=0.5, strict=True)


def test_method_without_conv_form_skips_convs_by_default() -> None:
    with pytest.warns(UserWarning, match="no convolution form"):
        net, summary = sao.sparsify(cnn(), method="rg-n", sparsity=0.5, return_summary=True)
    assert [type(m) for m in net if isinstance(m, nn.Conv2d)] == [nn.Conv2d] * 3
    assert [r.status for r in summary.layers] == ["excluded", "skipped", "skipped", "excluded"]


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"degree": 4, "sparsity": 0.5}, ValueError, "at most one of degree= or sparsity="),
    ({}, ValueError, "needs degree= or sparsity="),
    ({"sparsity": 1.0}, ValueError, "sparsity"),
    ({"sparsity": "0.5"}, TypeError, "sparsity"),
    ({"degree": 4.0}, TypeError, "degree"),
    ({"degree": 4, "backend": "sparse"}, ValueError, "backend"),
    ({"degree": 4, "activation": "gelu"}, ValueError, "activation"),
])
def test_bad_requests_raise_whatever_strict(kwargs: dict, error: type, match: str) -> None:
    for strict in (False, True):
        with pytest.raises(error, match=match):
            sao.sparsify(mlp(), **kwargs, strict=strict)


def test_unknown_method_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"choose from: dense, eoi, .*rg-u, sao"):
        sao.sparsify(mlp(), method="magic", degree=4)


def test_single_layer_model_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="SparseLinear"):
        sao.sparsify(nn.Linear(8, 8), degree=2, exclude="none")


def test_keeps_device_dtype_and_bias_presence() -> None:
    net = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 16, bias=False), nn.Linear(16, 2)).double()
    sao.sparsify(net, degree=4, generator=gen())
    assert net[1].bias is None and net[1].blocks.dtype == torch.float64


def test_same_seed_same_model() -> None:
    a, b = (sao.sparsify(mlp(), degree=8, generator=gen(3)) for _ in range(2))
    for la, lb in zip(a.modules(), b.modules(), strict=True):
        if isinstance(la, SparseLinear):
            assert torch.equal(la.weight, lb.weight)


def test_custom_method_registration() -> None:
    class Dense(SparsifyMethod):
        def sparsify_layers(self, layers, settings):
            return [nn.Identity() for _ in layers]
    METHODS.register("test-identity", Dense())
    try:
        net = sao.sparsify(mlp(), method="test-identity")
        assert isinstance(net[2], nn.Identity) and isinstance(net[4], nn.Identity)
    finally:
        METHODS.unregister("test-identity")
    assert "test-identity" not in METHODS


@pytest.mark.parametrize("name", METHODS.names())
def test_phase_is_after_training_exactly_for_the_t_methods(name: str) -> None:
    """The one place a method's name is read for its phase: names ending in ``-t`` prune trained layers."""
    assert METHODS.get(name).phase == (AFTER_TRAINING if name.endswith("-t") else AT_INIT)


def test_phase_values_and_default() -> None:
    assert (AT_INIT, AFTER_TRAINING) == PHASES == ("at-init", "after-training")

    class Anything(SparsifyMethod):
        pass
    assert Anything().phase == AT_INIT
    assert PruneMethod("random", reinit=False).phase == AFTER_TRAINING and PruneMethod(None).phase == AT_INIT


def test_registry_warns_on_overwrite_and_lists_names() -> None:
    reg: Registry[int] = Registry("thing", "tests.REG")
    reg.register("a", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg.register("a", 2)
    assert reg.get("a") == 2 and "already registered" in str(caught[0].message)
    with pytest.raises(ValueError, match=r"unknown thing 'b'; choose from: a \(add one with tests.REG.register\)"):
        reg.get("b")


def test_registry_unregister() -> None:
    reg: Registry[int] = Registry("thing", "tests.REG")
    reg.register("a", 1)
    reg.register("b", 2)
    assert reg.unregister("a") == 1 and "a" not in reg and reg.names() == ["b"]
    with pytest.raises(ValueError, match=r"unknown thing 'a'; choose from: b "):
        reg.unregister("a")
    reg.register("a", 3)  # a name can be registered again once removed, without a warning
    assert reg.get("a") == 3
