"""The typed run configuration, the experiment schema and the flags generated from them."""

from __future__ import annotations

import argparse
import dataclasses
import json
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
    experiment_for_model,
    from_flat,
    identity,
)
from sao.methods import METHODS
from sao.models import MODELS
from sao.training import TrainConfig

LEGACY = Path(__file__).parent / "data" / "legacy_preset_configs_v0_1.json"


def _legacy_label(config: dict[str, Any]) -> str:
    """The run label version 0.1 gave a flat config."""
    sparsity = config.get("sparsity")
    tag = "" if sparsity is None else f"-{100 * sparsity:g}"
    return f"{config['method']}{tag}-N{config['depth']}-s{config['seed']}"


#: Presets redesigned on purpose since 0.1 (issue 13: Table 7's quick and cpu grids at gain 1.02);
#: their old run folders still read (``test_a_redesigned_preset_keeps_its_old_runs_readable``).
REDESIGNED = {"table7/quick", "table7/cpu"}


@pytest.mark.parametrize("key", sorted(set(json.loads(LEGACY.read_text())) - REDESIGNED))
def test_every_preset_of_version_0_1_is_the_same_grid(key: str) -> None:
    """The configs 0.1 wrote for every preset (recorded then) mean exactly the runs the presets make now:
    same runs, same order, same labels — so their run folders are found and kept."""
    table, preset = key.split("/")
    old = json.loads(LEGACY.read_text())[key]
    new = EXPERIMENTS.get(table).runs(preset, train={"device": "auto"})
    assert [RunConfig.from_dict(c).resolved() for c in old] == new
    assert [identity(c) for c in old] == [identity(c.to_dict()) for c in new]
    assert [_legacy_label(c) for c in old] == [c.label for c in new]


@pytest.mark.parametrize("key", sorted(REDESIGNED))
def test_a_redesigned_preset_keeps_its_old_runs_readable(key: str) -> None:
    """A redesigned preset is a new grid (no old run is silently reused as a new one), and every
    config 0.1 wrote for it still reads as the run it was."""
    table, preset = key.split("/")
    old = [RunConfig.from_dict(c).resolved() for c in json.loads(LEGACY.read_text())[key]]
    new = EXPERIMENTS.get(table).runs(preset, train={"device": "auto"})
    assert not [c for c in old if identity(c.to_dict()) in [identity(n.to_dict()) for n in new]]
    assert {c.label for c in old} and all(c.experiment == table for c in old)


def test_a_flat_sao_train_config_of_version_0_1_reads() -> None:
    flat = {"experiment": "table7", "method": "sao", "depth": 50, "seed": 0, "epochs": 10, "dataset": "mnist5k",
            "data_root": None, "degree": 4, "gain": 1.1, "batch_size": 128, "lr": 0.01, "device": "auto",
            "activation": "tanh", "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False, "schedule": "constant",
            "warmup_epochs": 0, "max_grad_norm": None, "amp": None, "cudnn_benchmark": False}
    cfg = from_flat(flat)
    assert (cfg.model, cfg.method, cfg.data) == (ModelConfig("fnn", 50, activation="tanh", gain=1.1),
                                                 MethodConfig("sao", degree=4), DataConfig("mnist5k", None, 128))
    assert cfg.train == TrainConfig(epochs=10, lr=0.01)
    # the same run as the reproduce config of 0.1, which left the optional keys out
    short = {k: flat[k] for k in ("experiment", "method", "depth", "seed", "epochs", "dataset", "data_root",
                                  "degree", "gain", "batch_size", "lr", "device")}
    assert identity(short) == identity(flat)


def test_identity_ignores_what_does_not_change_a_run() -> None:
    """Where the data lie, fused or not, and the multistep settings under another schedule: the same run."""
    cfg = RunConfig(train=TrainConfig(epochs=2))
    for other in (dataclasses.replace(cfg, data=DataConfig(root="elsewhere")),
                  dataclasses.replace(cfg, train=TrainConfig(epochs=2, fused=False, milestones=(1,), gamma=0.5))):
        assert identity(other.to_dict()) == identity(cfg.to_dict())
    multistep = dataclasses.replace(cfg, train=TrainConfig(epochs=2, schedule="multistep"))
    assert identity(multistep.to_dict()) != identity(dataclasses.replace(
        multistep, train=TrainConfig(epochs=2, schedule="multistep", milestones=(1,))).to_dict())
    with pytest.raises(ValueError, match="invalid run config"):
        identity({**cfg.to_dict(), "model": {"name": "fnn", "depth": "10"}})


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
    (lambda: RunConfig(ModelConfig("cnn_eco", 2), MethodConfig("eoi", sparsity=0.5)),
     r"method='eoi' is not available for cnn_eco"),
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
    try:
        cfg = RunConfig(ModelConfig(model, depth, gain=gain),
                        MethodConfig(method, degree=4 if sparsity is None else None, sparsity=sparsity),
                        DataConfig(batch_size=batch), TrainConfig(epochs=epochs, seed=seed))
    except ValueError:  # e.g. a method the model's ECO layers do not take
        return
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    canonical = identity(cfg.to_dict())
    assert canonical == identity(cfg.resolved().to_dict()) == identity(canonical)
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


def test_a_setting_added_later_keeps_older_runs_identity() -> None:
    """``data.normalize`` came after format 2: a stored config without it is the run at its old value."""
    config = EXPERIMENTS.get("table7").runs("quick")[0]
    stored = config.to_dict()
    del stored["data"]["normalize"]  # as format-2 files before the setting were written
    assert RunConfig.from_dict(stored) == config and identity(stored) == identity(config.to_dict())
    assert "normalize" not in identity(stored)["data"]
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
