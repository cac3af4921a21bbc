"""The typed run configuration, the experiment schema and the flags generated from them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sao.cli._flags import SECTIONS, add_config_flags, apply_flags
from sao.experiments import (
    EXPERIMENTS,
    DataConfig,
    MethodConfig,
    ModelConfig,
    Preset,
    RunConfig,
    execution_settings,
    experiment_for_model,
    identity,
)
from sao.experiments.config import PARTS
from sao.methods import METHODS
from sao.models import MODELS
from sao.training import EXECUTION, ONLY_WITH, TrainConfig, decisive

LEGACY = Path(__file__).parent / "data" / "legacy_preset_configs_v0_1.json"


def _legacy_label(config: dict[str, Any]) -> str:
    """The run label version 0.1 gave a flat config."""
    sparsity = config.get("sparsity")
    tag = "" if sparsity is None else f"-{100 * sparsity:g}"
    return f"{config['method']}{tag}-N{config['depth']}-s{config['seed']}"


#: Where each key of a flat 0.1 config lives in a run config now ("part.field"); ``model`` is the model's name.
FLAT_KEYS = {"experiment": "experiment", "model": "model.name", "depth": "model.depth", "width": "model.width",
             "activation": "model.activation", "head": "model.head", "gain": "model.gain", "method": "method.name",
             "degree": "method.degree", "sparsity": "method.sparsity", "dataset": "data.name", "data_root": "data.root",
             "augment": "data.augment", "batch_size": "data.batch_size", "seed": "train.seed", "epochs": "train.epochs",
             "lr": "train.lr", "schedule": "train.schedule", "warmup_epochs": "train.warmup_epochs",
             "milestones": "train.milestones", "weight_decay": "train.weight_decay", "device": "train.device"}


def _recorded(flat: dict[str, Any]) -> dict[str, Any]:
    """The settings a recorded 0.1 config states, by "part.field" (this file's reading of it; sao reads no 0.1
    config). The dense baseline's target is left out: dense takes none since issue 20; so are the multistep
    settings under another schedule."""
    out = {FLAT_KEYS[k]: v for k, v in flat.items()}
    out.setdefault("model.name", "fnn")
    if not MODELS.get(out["model.name"]).heads:  # 0.1 wrote a head for every CNN; the ECO models have no choice
        out.pop("model.head", None)
    if flat["method"] == "dense":
        out.pop("method.degree", None), out.pop("method.sparsity", None)
    if out.get("train.schedule", "constant") != "multistep":  # they decide nothing there (issue 20 clamped them)
        out.pop("train.milestones", None), out.pop("train.gamma", None)
    return out


def _stated(config: RunConfig, keys: Any) -> dict[str, Any]:
    """``config``'s values (resolved, as ``to_dict`` writes them) at the "part.field" ``keys``."""
    data = config.resolved().to_dict()
    return {k: data[k] if "." not in k else data[k.split(".")[0]][k.split(".")[1]] for k in keys}


#: Presets redesigned on purpose since 0.1 (issue 13: Table 7's quick and cpu grids at gain 1.02).
REDESIGNED = {"table7/quick", "table7/cpu"}


@pytest.mark.parametrize("key", sorted(set(json.loads(LEGACY.read_text())) - REDESIGNED))
def test_every_preset_of_version_0_1_is_the_same_grid(key: str) -> None:
    """The runs 0.1 recorded for every preset are the runs the presets make now: same runs, same order, same
    labels, every recorded setting the same (the dense baseline at no target)."""
    table, preset = key.split("/")
    old = json.loads(LEGACY.read_text())[key]
    new = EXPERIMENTS.get(table).runs(preset, train={"device": "auto"})
    assert [_legacy_label(c) for c in old] == [c.label for c in new]
    for flat, config in zip(old, new, strict=True):
        recorded = _recorded(flat)
        assert _stated(config, recorded) == recorded, config.label
    assert all(c.method.degree is None and c.method.sparsity is None for c in new if c.method.name == "dense")


@pytest.mark.parametrize("key", sorted(REDESIGNED))
def test_a_redesigned_preset_is_a_new_grid(key: str) -> None:
    """A redesigned preset makes none of the runs 0.1 recorded for it (no old run is mistaken for a new one)."""
    table, preset = key.split("/")
    old = [_recorded(c) for c in json.loads(LEGACY.read_text())[key]]
    new = EXPERIMENTS.get(table).runs(preset, train={"device": "auto"})
    assert old and all(c["experiment"] == table for c in old)
    assert not [c for c in old if any(_stated(n, c) == c for n in new)]


@pytest.mark.parametrize("stored", [
    pytest.param(json.loads(LEGACY.read_text())["table7/paper"][0], id="flat-0.1-fnn"),
    pytest.param(json.loads(LEGACY.read_text())["table8/quick"][0], id="flat-0.1-cnn"),
    pytest.param({**RunConfig().to_dict(), "format": 1}, id="format-1"),
    pytest.param({k: v for k, v in RunConfig().to_dict().items() if k != "format"}, id="no-format"),
    pytest.param({**RunConfig().to_dict(), "format": "2"}, id="format-as-text"),
])
def test_an_old_or_flat_config_is_refused_clearly(stored: dict[str, Any]) -> None:
    """Formats written before the first release are not read: a clear ValueError naming the format, no guess."""
    found = stored.get("format")
    message = rf"config format {re.escape(repr(found))} is not known \(this version reads 2\)"
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(stored)
    with pytest.raises(ValueError, match=message):
        identity(stored)
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()  # the current format reads


def test_identity_ignores_what_does_not_change_a_run() -> None:
    """Where the data lie, the device, the execution route, and the multistep settings under another schedule:
    the same run."""
    cfg = RunConfig(train=TrainConfig(epochs=2))
    for other in (dataclasses.replace(cfg, data=DataConfig(root="elsewhere")),
                  dataclasses.replace(cfg, train=TrainConfig(epochs=2, fused=False, milestones=(1,), gamma=0.5)),
                  dataclasses.replace(cfg, train=TrainConfig(epochs=2, device="cpu", cudnn_benchmark=True))):
        assert identity(other.to_dict()) == identity(cfg.to_dict()) == other.identity() == cfg.identity()
    multistep = dataclasses.replace(cfg, train=TrainConfig(epochs=2, schedule="multistep"))
    assert identity(multistep.to_dict()) != identity(dataclasses.replace(
        multistep, train=TrainConfig(epochs=2, schedule="multistep", milestones=(1,))).to_dict())
    with pytest.raises(ValueError, match="invalid run config"):
        identity({**cfg.to_dict(), "model": {"name": "fnn", "depth": "10"}})


def test_the_execution_only_settings_are_declared_on_the_fields() -> None:
    assert set(execution_settings()) == {"data.root", "train.device", "train.cudnn_benchmark", "train.fused",
                                         "train.deterministic"}
    declared = {f"{part}.{f.name}" for part in PARTS for f in dataclasses.fields(type(getattr(RunConfig(), part)))
                if f.metadata.get(EXECUTION)}
    assert declared == set(execution_settings())
    only_with = {f.name: f.metadata[ONLY_WITH] for f in dataclasses.fields(TrainConfig) if ONLY_WITH in f.metadata}
    assert only_with == {"milestones": ("schedule", "multistep"), "gamma": ("schedule", "multistep")}


#: Another valid value of every run-config field ("part.field"), against :data:`IDENTITY_BASE`.
OTHER_VALUE: dict[str, Any] = {
    "model.name": "cnn_eco", "model.depth": 2, "model.width": 16, "model.activation": "relu", "model.head": "conv",
    "model.gain": 1.5, "method.name": "lrp", "method.degree": 2, "method.sparsity": 0.75, "data.name": "cifar10",
    "data.root": "elsewhere", "data.batch_size": 64, "data.augment": True, "data.normalize": "feature",
    "train.epochs": 3, "train.lr": 0.1, "train.momentum": 0.5, "train.weight_decay": 0.0, "train.nesterov": True,
    "train.schedule": "cosine", "train.milestones": (1,), "train.gamma": 0.5, "train.warmup_epochs": 1,
    "train.seed": 1, "train.device": "cpu", "train.isometry_probe": 0, "train.max_grad_norm": 1.0,
    "train.amp": "bf16", "train.cudnn_benchmark": True, "train.fused": False, "train.deterministic": False,
}
IDENTITY_BASE = RunConfig(ModelConfig("cnn", 4, width=8), MethodConfig("lmp-s", degree=4), DataConfig(),
                          TrainConfig(epochs=2), experiment="table8")


def _changed(base: RunConfig, key: str, value: Any) -> tuple[RunConfig, RunConfig]:
    """``(base, base with the field key set to value)``; the base adjusted where the change needs it."""
    if key == "method.sparsity":  # a target is a degree or a sparsity: start from a sparsity
        base = dataclasses.replace(base, method=MethodConfig(base.method.name, sparsity=0.5))
    if key == "model.name":  # cnn_eco has no head choice: the base leaves the head to the model
        base = dataclasses.replace(base, model=dataclasses.replace(base.model, head=None))
    part, name = key.split(".")
    return base, dataclasses.replace(base, **{part: dataclasses.replace(getattr(base, part), **{name: value})})


@pytest.mark.parametrize("schedule", ["constant", "multistep"])
def test_every_field_changes_the_identity_unless_declared_execution_only(schedule: str) -> None:
    """Property over every field of every part: another valid value changes ``identity()`` exactly when the
    field is not declared execution-only (``--device``-like settings); milestones and gamma only under a
    multistep schedule. The experiment name counts too."""
    fields = {f"{part}.{f.name}" for part in PARTS for f in dataclasses.fields(type(getattr(RunConfig(), part)))}
    assert set(OTHER_VALUE) == fields  # a new field needs its entry here
    start = dataclasses.replace(IDENTITY_BASE, train=dataclasses.replace(IDENTITY_BASE.train, schedule=schedule))
    execution = set(execution_settings())
    for key, value in OTHER_VALUE.items():
        base, other = _changed(start, key, value)
        assert other != base, key
        decides = key not in execution and not (key in ("train.milestones", "train.gamma") and schedule != "multistep")
        assert (other.identity() != base.identity()) is decides, key
        assert identity(other.to_dict()) == other.identity() and identity(base.to_dict()) == base.identity(), key
        assert RunConfig.from_dict(other.to_dict()) == other, key
    assert dataclasses.replace(start, experiment=None).identity() != start.identity()


def test_round_trip_and_unknown_keys() -> None:
    cfg = RunConfig(ModelConfig("cnn", 4, width=8, head="conv"), MethodConfig("lmp-s", sparsity=0.5),
                    DataConfig(batch_size=16), TrainConfig(epochs=2, milestones=(1,)), experiment="table9")
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    data = cfg.to_dict()
    data["model"]["depthh"] = 3
    with pytest.raises(ValueError, match=r"unknown model config keys \['depthh'\].*depth"):
        RunConfig.from_dict(data)
    with pytest.raises(ValueError, match="format 7"):
        RunConfig.from_dict({**cfg.to_dict(), "format": 7})
    with pytest.raises(ValueError, match="unknown run config keys"):
        RunConfig.from_dict({**cfg.to_dict(), "seed": 1})


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ModelConfig("resnet"), r"unknown model 'resnet'; choose from: cnn, cnn_eco, fnn, lipconvnet"),
    (lambda: ModelConfig("lipconvnet", activation="relu"), r"activation='relu' is not available .* maxmin"),
    (lambda: ModelConfig("fnn", head="pool"), r"head='pool' is not available for model 'fnn'; it has none"),
    (lambda: MethodConfig("magic"), r"unknown sparsify method 'magic'"),
    (lambda: MethodConfig(degree=4, sparsity=0.5), r"a degree or a sparsity, not both"),
    (lambda: MethodConfig(sparsity=1.0), r"sparsity"),
    (lambda: DataConfig("imagenet"), r"dataset='imagenet' is not known; choose from .*mnist5k"),
    (lambda: MethodConfig("dense", degree=4), r"method='dense' takes no degree or sparsity"),
    (lambda: MethodConfig("dense", sparsity=0.5), r"method='dense' takes no degree or sparsity"),
    (lambda: MethodConfig("lmp-s"), r"method='lmp-s' needs a degree or a sparsity"),
    (lambda: RunConfig(ModelConfig("lipconvnet", 5), MethodConfig("sao")), r"'sao' needs a degree or a sparsity"),
    (lambda: ModelConfig("fnn", width=64), r"model 'fnn' takes no width"),
    (lambda: RunConfig.from_dict({"format": 2, "model": "fnn"}), r"the model config must be a mapping"),
])
def test_invalid_settings_name_the_choices(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(sorted(MODELS.names())), method=st.sampled_from(sorted(METHODS.names())),
       depth=st.integers(1, 2000), seed=st.integers(0, 2**31), sparsity=st.sampled_from([None, 0.5, 0.875]),
       epochs=st.integers(1, 300), batch=st.integers(1, 1024), gain=st.floats(0.5, 2.0))
def test_any_valid_config_round_trips_and_its_identity_is_stable(model: str, method: str, depth: int, seed: int,
                                                                   sparsity: float | None, epochs: int, batch: int,
                                                                   gain: float) -> None:
    target = {} if not METHODS.get(method).needs_target else {"degree": 4} if sparsity is None else {
        "sparsity": sparsity}
    try:
        model_config = ModelConfig(model, depth, gain=gain)
    except ValueError:  # a depth the model's rule refuses
        return
    cfg = RunConfig(model_config, MethodConfig(method, **target), DataConfig(batch_size=batch),
                    TrainConfig(epochs=epochs, seed=seed))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    canonical = identity(cfg.to_dict())
    assert canonical == identity(cfg.resolved().to_dict()) == cfg.identity() == cfg.resolved().identity()
    assert canonical == identity(json.loads(json.dumps(cfg.to_dict())))
    assert json.loads(json.dumps(canonical)) == canonical  # JSON-ready
    assert cfg.resolved().resolved() == cfg.resolved()


@pytest.mark.parametrize("name", EXPERIMENTS.names())
def test_every_experiment_expands_every_preset_into_valid_unique_runs(name: str) -> None:
    spec = EXPERIMENTS.get(name)
    assert {"quick", "cpu", "paper"} <= set(spec.presets)
    for preset in spec.presets:
        runs, labels = spec.runs(preset), spec.run_labels(preset)
        p = spec.preset(preset)
        assert len(set(labels)) == len(runs) == len({json.dumps(r.to_dict()) for r in runs})
        assert all(label.startswith(r.label) for label, r in zip(labels, runs, strict=True))
        assert {r.method.name for r in runs} == set(p.methods)
        assert {r.model.depth for r in runs} == set(p.depths) and {r.train.seed for r in runs} == set(p.seeds)
        assert {r.train.epochs for r in runs} == {p.epochs}
        assert all(r.experiment == name and r == r.resolved() for r in runs)
        if spec.lr_by_depth is not None and p.lr is None:
            assert all(r.train.lr == spec.lr_by_depth(r.model.depth) for r in runs)
    with pytest.raises(ValueError, match="preset='nope' is not known; choose from quick, cpu, paper"):
        spec.runs("nope")


def test_every_model_has_an_experiment_or_none() -> None:
    assert experiment_for_model("fnn") == "table7" and experiment_for_model("lipconvnet") == "table11"
    assert experiment_for_model("cnn") == "table8"  # natural order: table8 before table10
    assert experiment_for_model("no-such-model") is None


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return parser.parse_args(argv)


def test_every_config_field_has_one_flag_defaulting_to_not_given() -> None:
    args = vars(_parse([]))
    expected = {f"{s}.{f.name}" for s, kind in SECTIONS.items() for f in dataclasses.fields(kind) if f.init}
    assert set(args) == expected and all(v is None for v in args.values())


def test_flags_change_only_what_is_given() -> None:
    base = RunConfig(ModelConfig(gain=1.1), MethodConfig(degree=4), train=TrainConfig(weight_decay=5e-4))
    cfg = apply_flags(base, _parse(["--depth", "7", "--sparsity", "0.5", "--no-fused", "--milestones", "2", "4",
                                    "--dataset", "mnist5k", "--model", "fnn"]))
    assert cfg.model == ModelConfig(depth=7, gain=1.1)
    assert cfg.method == MethodConfig(sparsity=0.5)  # a sparsity given replaces the base's degree
    assert cfg.train == TrainConfig(weight_decay=5e-4, fused=False, milestones=(2, 4))
    assert apply_flags(base, _parse([])) == base


@pytest.mark.parametrize("argv", [["--model", "resnet"], ["--method", "x"], ["--dataset", "x"],
                                  ["--schedule", "x"], ["--amp", "fp8"], ["--depth", "x"]])
def test_flags_refuse_unknown_choices(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(argv)


def test_identity_holds_every_decisive_setting_with_no_special_cases() -> None:
    """No setting is left out of a run's identity for its history (``data.normalize`` included): a field a stored
    config leaves out reads as its default, and its identity is that of the full config, default included."""
    config = EXPERIMENTS.get("table7").runs("quick")[0]
    stored = config.to_dict()
    del stored["data"]["normalize"]
    assert RunConfig.from_dict(stored) == config and identity(stored) == identity(config.to_dict())
    assert identity(stored)["data"]["normalize"] == "dataset"
    assert identity(stored) == {"experiment": "table7", **{part: decisive(getattr(config, part)) for part in PARTS}}
    feature = dataclasses.replace(config, data=dataclasses.replace(config.data, normalize="feature"))
    assert identity(feature.to_dict()) != identity(stored)
    assert identity(feature.to_dict())["data"]["normalize"] == "feature"
    with pytest.raises(ValueError, match="normalize='pixel' is not known; choose from dataset, feature"):
        DataConfig(normalize="pixel")


def test_a_preset_variant_is_one_more_run_per_cell_with_its_settings() -> None:
    base = EXPERIMENTS.get("table7")
    preset = Preset(("sao", "dense"), (2, 3), epochs=1, description="", seeds=(0, 1),
                    variants=({}, {"model.gain": 1.05, "train.lr": 0.5}, {"data.normalize": "feature"}))
    spec = dataclasses.replace(base, presets={"v": preset})
    runs, labels = spec.runs("v"), spec.run_labels("v")
    assert len(runs) == 2 * 3 * 2 * 2 and len(set(labels)) == len(runs)
    assert labels[:5] == ["sao-N2-s0", "sao-N2-s1", "sao-N3-s0", "sao-N3-s1", "sao-N2-s0-gain1.05-lr0.5"]
    varied = runs[4]
    assert (varied.model.gain, varied.train.lr, varied.data.normalize) == (1.05, 0.5, "dataset")  # over the lr rule
    assert runs[0].model.gain == base.base.model.gain and runs[0].train.lr == base.lr_by_depth(2)
    assert {r.data.normalize for r in runs[8:12]} == {"feature"}


@pytest.mark.parametrize(("variant", "message"), [
    ({"model.gian": 1.0}, "variant setting 'model.gian' cannot be varied; model settings a variant may change: "
                          "width, activation, head, gain"),
    ({"model.depth": 5}, "'model.depth' cannot be varied"),
    ({"train.seed": 7}, "'train.seed' cannot be varied"),
    ({"data.root": "elsewhere"}, "'data.root' cannot be varied"),
    ({"train.device": "cpu"}, "'train.device' cannot be varied"),
    ({"train.fused": False}, "'train.fused' cannot be varied"),
    ({"train.cudnn_benchmark": True}, "'train.cudnn_benchmark' cannot be varied"),
    ({"method.degree": 2}, "a variant changes model, data, train settings"),
    ({"gain": 1.0}, "a variant changes model, data, train settings"),
])
def test_a_variant_of_a_setting_it_may_not_change_is_refused_at_once(variant: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Preset(("sao",), (2,), epochs=1, description="", variants=(variant,))
    with pytest.raises(TypeError, match="variants must be a tuple of mappings"):
        Preset(("sao",), (2,), epochs=1, description="", variants={"model.gain": 1.0})  # type: ignore[arg-type]


@pytest.mark.parametrize(("variants", "message"), [
    (({"data.normalize": "pixel"},), "normalize='pixel' is not known"),
    (({"model.gain": "big"},), "variant {'model.gain': 'big'}"),
    (({"data.batch_size": 0},), "batch_size"),
    (({}, {"model.gain": 1.1}), r"makes the same run twice \(sao-N2-s0 and sao-N2-s0-gain1.1\)"),
    (({"model.gain": 1}, {"model.gain": 1.0}), "makes the same run twice"),
])
def test_a_bad_variant_value_or_a_repeated_run_is_a_clear_error(variants: tuple, message: str) -> None:
    spec = dataclasses.replace(EXPERIMENTS.get("table7"),  # its base gain is 1.1
                               presets={"v": Preset(("sao",), (2,), epochs=1, description="", variants=variants)})
    with pytest.raises(ValueError, match=message):
        spec.runs("v")


def test_variant_names_are_safe_folder_names() -> None:
    variants = ({"model.gain": 1.0}, {"train.lr": 1e-5}, {"train.milestones": (1, 2), "train.schedule": "multistep"})
    spec = dataclasses.replace(EXPERIMENTS.get("table7"), presets={"v": Preset(("sao",), (2,), epochs=1, description="",
                                                                               variants=variants)})
    assert spec.run_labels("v") == ["sao-N2-s0-gain1", "sao-N2-s0-lr1e-05",
                                    "sao-N2-s0-milestones1_2-schedulemultistep"]
