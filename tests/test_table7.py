"""Tests of the Table 7 experiment: presets, one run end to end (at-init and after-training flows), resume, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from helpers import tiny_run
from sao.cli import main
from sao.experiments import (
    EXPERIMENTS,
    MethodConfig,
    Run,
    RunConfig,
    finished_results,
    method_phase,
    protocol,
    run_experiment,
    run_one,
)
from sao.experiments.protocol import AFTER_TRAINING, measured_sparsity
from sao.experiments.table7 import lr_for_depth
from sao.methods import METHODS, sparsify
from sao.models import model_info


def test_presets_cover_the_paper_grid() -> None:
    spec = EXPERIMENTS.get("table7")
    runs, paper = spec.runs("cpu"), spec.runs("paper")
    for grid in (runs, paper):
        assert {r.method.name for r in grid} == {"dense", "gmp-t", "gmp-s", "rg-u", "rg-n", "sao"}
        assert {r.model.depth for r in grid} == {50, 200, 400, 600, 800, 1000}
        assert {r.train.seed for r in grid} == {0, 1, 2}
        assert {r.method.degree for r in grid if r.method.name != "dense"} == {4}
        assert {(r.method.degree, r.method.sparsity) for r in grid if r.method.name == "dense"} == {(None, None)}
    # the paper preset is the paper's settings; cpu and quick those of the depth-1000 study
    assert {r.train.lr for r in paper if r.model.depth == 1000} == {1e-4}
    assert {(r.data.name, r.train.epochs, r.model.gain) for r in paper} == {("mnist", 100, 1.1)}
    for grid in (runs, spec.runs("quick")):
        assert {(r.model.gain, r.train.lr, r.data.batch_size) for r in grid} == {(1.02, 1e-3, 32)}
    assert 1000 in {r.model.depth for r in spec.runs("quick")}


@pytest.mark.parametrize("method", ["sao", "gmp-s", "gmp-t"])
def test_one_run_end_to_end(method: str, tmp_path: Path) -> None:
    result = run_one(tiny_run("table7", method, depth=3), run_experiment, tmp_path)
    assert result["status"] == "completed" and 0.0 <= result["test_acc"] <= 1.0
    assert result["jacobian_mean_init"] is not None and result["jacobian_var"] is not None
    assert result["sparsity_sparse_layers"] == pytest.approx(1 - (256 * 4 * 3) / (256 * 512 + 2 * 256 * 256),
                                                             abs=1e-6)
    assert result["sparsity_dense_layers"] == 0.0
    run_dir = Path(result["run_dir"])
    phases = ["dense", "finetune"] if method_phase(method) == AFTER_TRAINING else ["train"]
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == phases
    for phase in phases:
        assert (run_dir / phase / "metrics.jsonl").exists()
    history = protocol.training_history(run_dir)  # init + 1 epoch per phase, steps counted across phases
    assert [(r["phase"], r["step"]) for r in history] == [(p, s) for i, p in enumerate(phases) for s in (i, i + 1)]
    assert RunConfig.from_dict(json.loads((run_dir / "config.json").read_text())).method.name == method


def test_a_version_0_1_flat_config_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """The run function reads only the current format: a flat 0.1 config is a clear error, and nothing is written."""
    typed = tiny_run("table7", "sao", depth=2)
    cfg = RunConfig.from_dict(typed.config)
    flat = {"experiment": "table7", "method": "sao", "depth": 2, "seed": 0, "epochs": 1, "dataset": "mnist5k",
            "data_root": None, "degree": 4, "gain": cfg.model.gain, "batch_size": 256, "lr": cfg.train.lr,
            "device": "cpu"}
    run_dir = tmp_path / "flat"
    run_dir.mkdir()
    with pytest.raises(ValueError, match=r"config format None is not known \(this version reads 2\)"):
        run_experiment(flat, run_dir)
    with pytest.raises(ValueError, match=r"config format 1 is not known"):
        run_experiment({**typed.config, "format": 1}, run_dir)
    assert list(run_dir.iterdir()) == []


def test_lr_for_depth_is_table7s_rule() -> None:
    """The paper's learning rate by depth (Table 2), owned by Table 7's module, is what its presets use."""
    table = {1: 1e-2, 50: 1e-2, 60: 1e-2, 61: 1e-3, 200: 1e-3, 400: 1e-3, 401: 1e-4, 600: 1e-4, 1000: 1e-4}
    assert {n: lr_for_depth(n) for n in table} == table
    assert EXPERIMENTS.get("table7").lr_by_depth is lr_for_depth
    assert all(r.train.lr == lr_for_depth(r.model.depth) for r in EXPERIMENTS.get("table7").runs("paper"))
    with pytest.raises(ValueError, match="depth"):
        lr_for_depth(0)
    with pytest.raises(TypeError, match="depth"):
        lr_for_depth(2.0)


def _tiny_data() -> dict[str, torch.utils.data.DataLoader]:
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 12, generator=g), torch.randint(0, 3, (64,), generator=g)
    return {k: DataLoader(TensorDataset(x, y), batch_size=32) for k in ("train", "val")}


@pytest.mark.parametrize("phase", [protocol.AT_INIT, protocol.AFTER_TRAINING, protocol.NEVER])
def test_train_with_method_applies_the_method_at_its_phase(tmp_path: Path, phase: str) -> None:
    """``train_with_method(model, phase, apply, ...)``: ``apply`` runs once, on the model as the phase has it
    (freshly built; after the dense phase trained it), or never; the phase folders are the protocol's."""
    from sao.training import TrainConfig

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 3))
    start = model[2].weight.detach().clone()
    seen: list[bool] = []

    def apply(net: torch.nn.Module) -> None:
        seen.append(torch.equal(net[2].weight.detach(), start))  # untrained yet?
        sparsify(net, "lmp-t", sparsity=0.5)

    cfg = TrainConfig(epochs=1, lr=0.05, device="cpu", isometry_probe=0)
    result = protocol.train_with_method(model, phase, apply, _tiny_data(), cfg, tmp_path)
    assert result["status"] == "completed" and "run_dir" not in result
    folders = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    if phase == protocol.NEVER:
        assert seen == [] and folders == ["train"] and result["sparsity_sparse_layers"] == 0.0
    else:
        assert seen == [phase == protocol.AT_INIT]  # at init: the fresh model; after training: the trained one
        assert folders == (["train"] if phase == protocol.AT_INIT else ["dense", "finetune"])
        assert result["connection_sparsity_min"] == result["connection_sparsity_max"] == 0.5


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_a_run_gives_its_method_only_the_settings_it_takes(method: str) -> None:
    config = EXPERIMENTS.get("table7").runs("paper")[0]
    config = dataclasses.replace(config, method=MethodConfig(method, **({"degree": 4} if METHODS.get(
        method).needs_target else {})), model=dataclasses.replace(config.model, gain=1.3, activation="relu"))
    settings = protocol.method_settings(config)
    taken = {f.name for f in dataclasses.fields(METHODS.get(method).settings_type)}
    assert settings == {k: v for k, v in {"gain": 1.3, "activation": "relu"}.items() if k in taken}
    METHODS.get(method).settings(**settings)  # accepted as they are
    if method.endswith("-t"):
        assert settings == {}


def test_build_model_builds_every_model_dense() -> None:
    for table in ("table7", "table8", "table11", "table12"):
        run = EXPERIMENTS.get(table).runs("quick")[0]
        info = model_info(run.model.name)
        shallow = dataclasses.replace(run, model=dataclasses.replace(run.model, depth=info.depths[0], width=(
            None if info.width_arg is None else 4)))
        model = protocol.build_model(shallow, info.input_shape, 10, torch.Generator().manual_seed(0))
        assert measured_sparsity(model)["connection_sparsity_max"] == 0.0, table


class Killed(KeyboardInterrupt):
    """Stands for the process being killed after an epoch's checkpoint was written."""


@pytest.mark.usefixtures("deterministic_routes")  # the same result across runs: fixed routes
def test_killed_run_resumes_to_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tiny_run("table7", "gmp-t", depth=3, epochs=2)
    full = run_one(run, run_experiment, tmp_path / "full")
    real_train = protocol.train
    calls = []

    def train_killed_after_first_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the fine-tuning phase of the after-training flow

            def stop(row: dict) -> None:
                if row["epoch"] == 1:
                    raise Killed
            kwargs["on_epoch_end"] = stop
        return real_train(*args, **kwargs)

    monkeypatch.setattr(protocol, "train", train_killed_after_first_epoch)
    with pytest.raises(Killed):
        run_one(run, run_experiment, tmp_path / "cut")
    assert not (run.directory(tmp_path / "cut") / "result.json").exists()
    assert finished_results(tmp_path / "cut") == []  # the partial run is never reported
    monkeypatch.setattr(protocol, "train", real_train)
    resumed = run_one(run, run_experiment, tmp_path / "cut")
    for key in ("test_acc", "val_acc", "epochs_run", "jacobian_var", "sparsity_sparse_layers"):
        assert resumed[key] == full[key], key


def test_measured_sparsity_of_a_dense_model() -> None:
    from sao.models import fnn

    assert measured_sparsity(fnn(2)) == {"connection_sparsity_min": 0.0, "connection_sparsity_max": 0.0,
                                         "sparsity_sparse_layers": 0.0, "sparsity_sparse_layers_min": 0.0,
                                         "sparsity_sparse_layers_max": 0.0, "sparsity_dense_layers": 0.0,
                                         "sparsity_overall": 0.0}


def _configs(out: Path) -> list[RunConfig]:
    return [RunConfig.from_dict(r["config"]) for r in finished_results(out)]


def test_cli_train_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--method", "sao", "--depth", "3", "--epochs", "1", "--batch-size", "256",
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert "test_acc" in capsys.readouterr().out
    (first,) = _configs(tmp_path)
    # what was not given comes from Table 7: gain 1.1, degree 4, the paper's lr at depth 3
    assert (first.experiment, first.model.gain, first.method.degree, first.train.lr) == ("table7", 1.1, 4, 1e-2)
    assert main(["report", str(tmp_path)]) == 0
    assert "| sao |" in capsys.readouterr().out
    assert main(["train", "--method", "sao", "--depth", "2", "--epochs", "1", "--batch-size", "256", "--activation",
                 "relu", "--schedule", "cosine", "--warmup-epochs", "1", "--nesterov", "--max-grad-norm", "1.0",
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    relu = next(c for c in _configs(tmp_path) if c.model.activation == "relu")
    assert relu.train.schedule == "cosine" and relu.train.nesterov and relu.train.max_grad_norm == 1.0


@pytest.mark.parametrize(("argv", "message"), [
    (["--experiment", "table8", "--model", "fnn"], "experiment 'table8' runs model 'cnn', not 'fnn'"),
    (["--model", "lipconvnet", "--activation", "tanh"], "activation='tanh' is not available"),
    (["--degree", "3", "--depth", "2", "--epochs", "1"], "degree=3 is not valid"),
    (["--data-root", "/no/such/folder", "--dataset", "mnist", "--depth", "2", "--epochs", "1"], "/no/such/folder"),
])
def test_cli_train_user_errors_are_one_line(argv: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *argv, "--device", "cpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("sao train: error: ")
    assert "Traceback" not in "\n".join(err)


def test_reproduce_sweep_flags_enter_the_run_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sao.cli.reproduce as reproduce

    seen: dict[str, list[Run]] = {}

    def capture(runs: list[Run], *args: object, **kwargs: object) -> None:
        seen.setdefault("runs", []).extend(runs)
        raise KeyboardInterrupt  # stop before training anything

    monkeypatch.setattr(reproduce, "run_grid", capture)
    assert main(["reproduce", "table7", "--preset", "quick", "--out", str(tmp_path)]) == 130
    plain = [RunConfig.from_dict(r.config) for r in seen.pop("runs")]
    assert plain == EXPERIMENTS.get("table7").runs("quick")
    assert main(["reproduce", "table7", "--preset", "quick", "--amp", "bf16", "--cudnn-benchmark", "--no-fused",
                 "--no-deterministic", "--device", "cpu", "--data-root", "data", "--out", str(tmp_path)]) == 130
    mixed = [RunConfig.from_dict(r.config) for r in seen["runs"]]
    assert all((c.train.amp, c.train.cudnn_benchmark, c.train.fused, c.train.deterministic, c.train.device, c.data.root)
               == ("bf16", True, False, False, "cpu", "data") for c in mixed)
    assert [c.label for c in mixed] == [c.label for c in plain]


def test_a_method_without_a_target_is_applied_not_trained_dense(tmp_path: Path) -> None:
    """Only the dense baseline trains the model as it is; a registered method without a target is applied (at init:
    the harness gives any method not in METHOD_PHASES that phase), with no target and no settings."""
    from sao.methods import SparsifyMethod, SparsifyRequest
    from sao.nn import MaskedLinear

    class Half(SparsifyMethod):
        def sparsify_layers(self, layers, request):  # keep the first half of every row
            assert isinstance(request, SparsifyRequest) and (request.degree, request.sparsity) == (None, None)
            return [MaskedLinear.from_dense(m, torch.arange(m.in_features).expand(m.out_features, -1)
                                            < m.in_features // 2) for _, m in layers]

    METHODS.register("half", Half())
    try:
        run = tiny_run("table7", "half", depth=2)
        assert RunConfig.from_dict(run.config).method == MethodConfig("half")
        assert method_phase("half") == protocol.AT_INIT
        result = run_one(run, run_experiment, tmp_path)
    finally:
        METHODS.unregister("half")
    assert result["sparsity_sparse_layers"] == pytest.approx(0.5)
    assert sorted(p.name for p in Path(result["run_dir"]).iterdir() if p.is_dir()) == ["train"]


def test_cli_experiment_alone_picks_its_model_and_its_rules(tmp_path: Path) -> None:
    assert main(["train", "--experiment", "table11", "--depth", "5", "--width", "8", "--epochs", "4",
                 "--batch-size", "500", "--device", "cpu", "--out", str(tmp_path)]) == 0
    (config,) = _configs(tmp_path)
    assert (config.model.name, config.method.sparsity, config.train.milestones) == ("lipconvnet", 0.5, (1, 3))
