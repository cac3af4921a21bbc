"""Tests of sao.sparsify and the method registry."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import nn

import sao
from helpers import gen
from sao._registry import Registry
from sao.experiments import METHOD_PHASES, method_phase
from sao.experiments.protocol import AFTER_TRAINING, AT_INIT, NEVER
from sao.methods import (
    METHODS,
    InitSettings,
    NoSettings,
    PruneMethod,
    RandomGraphSettings,
    RedrawSettings,
    SparsifyMethod,
    SparsifyRequest,
    target_layers,
)
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
    with pytest.raises(ValueError, match="neither weight layers"):
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
    ({"degree": 4, "gain": "x"}, TypeError, "gain"),
    ({"degree": 4, "dropout": 0.5}, TypeError,
     "method 'sao' takes no setting 'dropout'; its settings are backend, activation, gain"),
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
        def sparsify_layers(self, layers, request):
            assert isinstance(request, SparsifyRequest) and request.settings == NoSettings()
            return [nn.Identity() for _ in layers]
    METHODS.register("test-identity", Dense())
    try:
        net = sao.sparsify(mlp(), method="test-identity")
        assert isinstance(net[2], nn.Identity) and isinstance(net[4], nn.Identity)
        with pytest.raises(TypeError, match="method 'test-identity' takes no setting 'gain'; it takes no settings"):
            sao.sparsify(mlp(), method="test-identity", gain=1.0)
        with pytest.raises(ValueError, match="method 'test-identity' takes no target"):
            sao.sparsify(mlp(), method="test-identity", degree=4)
    finally:
        METHODS.unregister("test-identity")
    assert "test-identity" not in METHODS


def test_everything_after_the_method_is_keyword_only() -> None:
    with pytest.raises(TypeError, match="positional"):
        sao.sparsify(mlp(), "sao", 4)  # type: ignore[misc]


#: The settings type of every built-in method (the keyword arguments sparsify takes for it).
SETTINGS_TYPES = {"sao": InitSettings, "rg-n": RandomGraphSettings, "rg-u": RandomGraphSettings,
                  "dense": RedrawSettings, "lmp-s": RedrawSettings, "gmp-s": RedrawSettings, "lrp": RedrawSettings,
                  "rg-s": RedrawSettings, "eoi": RedrawSettings, "lmp-t": NoSettings, "gmp-t": NoSettings,
                  "rg-t": NoSettings}


def test_every_built_in_method_declares_its_settings() -> None:
    assert set(SETTINGS_TYPES) <= set(METHODS.names())
    for name, kind in SETTINGS_TYPES.items():
        assert METHODS.get(name).settings_type is kind, name
    assert [f.name for f in dataclasses.fields(InitSettings)] == ["backend", "activation", "gain"]
    assert [f.name for f in dataclasses.fields(RedrawSettings)] == ["activation", "gain"]
    assert [f.name for f in dataclasses.fields(RandomGraphSettings)] == ["backend", "gain"]
    assert dataclasses.fields(NoSettings) == ()


def _target(name: str) -> dict[str, object]:
    return {"sparsity": 0.5} if METHODS.get(name).needs_target else {}


@pytest.mark.parametrize("name", METHODS.names())
def test_a_setting_the_method_does_not_take_is_a_type_error_naming_its_settings(name: str) -> None:
    """Property over every registered method: an unknown setting is refused (nothing changes), the message names
    the method and the settings it takes; its own settings are accepted with their defaults."""
    method = METHODS.get(name)
    known = [f.name for f in dataclasses.fields(method.settings_type)]
    takes = f"its settings are {', '.join(known)}" if known else "it takes no settings"
    net = mlp()
    before = [type(m) for m in net]
    for unknown in ("dropout", *({"backend", "activation", "gain"} - set(known))):
        with pytest.raises(TypeError, match=f"method '{name}' takes no setting '{unknown}'; {takes}$"):
            sao.sparsify(net, name, **_target(name), **{unknown: None}, generator=gen())
        with pytest.raises(TypeError, match=f"takes no setting '{unknown}'"):
            method.settings(**{unknown: 1})
    assert [type(m) for m in net] == before
    defaults = method.settings()
    assert isinstance(defaults, method.settings_type)
    assert method.settings(**{f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)}) == defaults
    assert method.settings_type.__dataclass_params__.frozen  # type: ignore[attr-defined]


@pytest.mark.parametrize(("kind", "values", "error", "match"), [
    (InitSettings, {"backend": "sparse"}, ValueError, "backend='sparse' is not supported; choose from blocked, masked"),
    (InitSettings, {"activation": "gelu"}, ValueError, "activation='gelu' is not supported"),
    (InitSettings, {"gain": "x"}, TypeError, "gain must be a real number"),
    (InitSettings, {"gain": float("nan")}, ValueError, "gain must be a finite number"),
    (InitSettings, {"gain": True}, TypeError, "gain"),
    (RedrawSettings, {"activation": "gelu"}, ValueError, "activation='gelu' is not supported"),
    (RedrawSettings, {"gain": "x"}, TypeError, "gain must be a real number"),
    (RedrawSettings, {"gain": float("inf")}, ValueError, "gain must be a finite number"),
])
def test_settings_dataclasses_validate_their_values(kind: type, values: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        kind(**values)
    for name, method_kind in SETTINGS_TYPES.items():  # and sparsify, for every method that takes them
        if method_kind is kind:
            with pytest.raises(error, match=match):
                sao.sparsify(mlp(), name, **_target(name), **values)


def test_settings_keep_valid_values_as_plain_types() -> None:
    s = InitSettings(backend="masked", activation="relu", gain=torch.tensor(2))
    assert (s.backend, s.activation, s.gain) == ("masked", "relu", 2.0) and type(s.gain) is float
    assert RedrawSettings(gain=3).gain == 3.0 and type(RedrawSettings(gain=3).gain) is float


@pytest.mark.parametrize("name", METHODS.names())
def test_target_is_required_exactly_by_methods_that_need_one(name: str) -> None:
    """A method that needs a target refuses neither given; one that takes none (dense) refuses either."""
    method = METHODS.get(name)
    if method.needs_target:
        with pytest.raises(ValueError, match=f"method '{name}' needs degree= or sparsity="):
            sao.sparsify(mlp(), name)
    else:
        for target in ({"degree": 4}, {"sparsity": 0.5}):
            with pytest.raises(ValueError, match=f"method '{name}' takes no target; drop degree=/sparsity="):
                sao.sparsify(mlp(), name, **target)
        _, summary = sao.sparsify(mlp(), name, generator=gen(), return_summary=True)
        assert summary.request == ""
        assert [r.status for r in summary.layers] == ["excluded", "applied", "applied", "excluded"]


@pytest.mark.parametrize("name", METHODS.names())
@pytest.mark.parametrize("generator", [5, "seed", torch.tensor(0), torch.Generator().manual_seed(0).get_state()])
def test_every_method_refuses_a_generator_that_is_not_one(name: str, generator: object) -> None:
    """Whether or not the method draws from it: once ``rg-t`` failed with an AttributeError from deep inside and
    ``lmp-t``/``gmp-t`` accepted ``generator=5`` silently."""
    target = {"degree": 4} if METHODS.get(name).needs_target else {}
    with pytest.raises(TypeError, match=f"generator must be a torch.Generator or None, got {type(generator).__name__}"):
        sao.sparsify(mlp(), name, **target, generator=generator)


def test_dense_takes_no_target() -> None:
    assert not METHODS.get("dense").needs_target
    with pytest.raises(ValueError, match="takes no target"):
        sao.sparsify(mlp(), "dense", degree=4)
    net = sao.sparsify(mlp(), "dense", gain=2.0, generator=gen())
    assert type(net[2]) is nn.Linear  # redrawn orthogonal with the gain, nothing pruned
    w = net[2].weight.detach().double()
    torch.testing.assert_close(w @ w.T, 4 * torch.eye(32, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", METHODS.names())
def test_phase_is_after_training_exactly_for_the_t_methods(name: str) -> None:
    """The harness owns the phase: -t methods prune trained layers, dense never sparsifies, the rest at init."""
    expected = NEVER if name == "dense" else AFTER_TRAINING if name.endswith("-t") else AT_INIT
    assert method_phase(name) == expected


def test_phase_values_and_default() -> None:
    assert (AT_INIT, AFTER_TRAINING, NEVER) == ("at-init", "after-training", "never")
    assert sorted(METHOD_PHASES.names()) == ["dense", "gmp-t", "lmp-t", "rg-t"]
    for attribute in ("phase", "dense_baseline", "handles_eco"):  # the library knows nothing of phases
        assert not hasattr(SparsifyMethod(), attribute)
        assert not hasattr(PruneMethod("random", reinit=False), attribute)

    class Anything(SparsifyMethod):
        pass
    METHODS.register("test-anything", Anything())
    try:
        assert method_phase("test-anything") == AT_INIT  # not registered in METHOD_PHASES: applied at init
    finally:
        METHODS.unregister("test-anything")
    with pytest.raises(ValueError, match="unknown sparsify method 'test-anything'"):
        method_phase("test-anything")


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
