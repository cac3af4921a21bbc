"""Tables 8-12: grids of every preset, and real runs of every CNN model and conv method (tiny, on MNIST-5k)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from helpers import tiny_run
from sao.cli import main
from sao.experiments import EXPERIMENTS, finished_results, run_experiment, run_one
from sao.experiments.cnn import CNN_TABLES
from sao.experiments.protocol import build_model, method_settings, sparsify_exclude
from sao.methods import sparsify
from sao.models import model_info
from sao.nn import ECOConv2d


@pytest.mark.parametrize("table", list(CNN_TABLES))
@pytest.mark.parametrize("preset", ["quick", "cpu", "paper"])
def test_grids(table: str, preset: str) -> None:
    spec = CNN_TABLES[table]
    runs = spec.runs(preset)
    grid = spec.preset(preset)
    sparse_methods = [m for m in grid.methods if m != "dense"]
    per_depth = len(sparse_methods) * len(grid.sparsities) + ("dense" in grid.methods)
    assert len(runs) == len(grid.depths) * len(grid.seeds) * per_depth
    assert all((r.method.sparsity is None) == (r.method.name == "dense") for r in runs)
    assert {r.data.name for r in runs} == {"mnist5k" if preset != "paper" else spec.dataset}
    assert {r.train.milestones for r in runs} == {(max(1, grid.epochs // 4), max(1, 3 * grid.epochs // 4))}
    assert {r.model.name for r in runs} == {spec.base.model.name}


@pytest.mark.parametrize("method", ["sao", "lmp-s", "lmp-t", "rg-s", "rg-t", "eoi"])
def test_every_conv_method_hits_its_kernel_sparsity_exactly(tmp_path: Path, method: str) -> None:
    result = run_one(tiny_run("table8", method, depth=2, sparsity=0.75, width=8, batch_size=500), run_experiment,
                     tmp_path)
    assert result["status"] == "completed"
    assert result["connection_sparsity_min"] == result["connection_sparsity_max"] == 0.75


@pytest.mark.parametrize(("table", "depth"), [("table9", 2), ("table12", 2), ("table11", 5)])
def test_every_model_trains_dense_and_sao(tmp_path: Path, table: str, depth: int) -> None:
    for method, sparsity in (("dense", None), ("sao", 0.5)):
        run = tiny_run(table, method, depth=depth, sparsity=sparsity, width=8, batch_size=500)
        result = run_one(run, run_experiment, tmp_path)
        assert result["status"] == "completed" and result["test_acc"] is not None
        if method == "sao":
            assert result["connection_sparsity_min"] == result["connection_sparsity_max"] == 0.5
    assert len(finished_results(tmp_path)) == 2
    assert main(["report", str(tmp_path)]) == 0  # finds the table from the runs' configs
    report = (tmp_path / "report.md").read_text()
    assert CNN_TABLES[table].title in report and "sao 50%" in report
    assert "[paper" not in report  # MNIST-5k runs are never put beside the paper's CIFAR/CINIC numbers


@pytest.mark.parametrize("method", ["eoi", "rg-n", "rg-u"])
def test_methods_without_an_eco_form_are_refused_on_eco_models(tmp_path: Path, method: str) -> None:
    """The protocol sparsifies an ECO model's ECO layers only, strictly: a method without an ECO form fails the run
    (naming the layer and why) before it trains, and leaves no result."""
    run = tiny_run("table12", method, depth=2, sparsity=0.5, width=8, batch_size=500)
    with pytest.raises(ValueError, match=r"(?s)layer 'body\.0' .*no ECO form \(SAO-ECO is method 'sao'\)"):
        run_one(run, run_experiment, tmp_path)
    assert finished_results(tmp_path) == []


def test_sao_eco_runs_are_method_sao_on_the_eco_layers_only(tmp_path: Path) -> None:
    """Table 12's SAO-ECO is ``"sao"`` through sparsify: the ECO layers at the sparsity, every other layer dense."""
    run = tiny_run("table12", "sao", depth=2, sparsity=0.75, width=8, batch_size=500)
    result = run_one(run, run_experiment, tmp_path)
    assert result["status"] == "completed"
    assert result["connection_sparsity_min"] == result["connection_sparsity_max"] == 0.75
    assert result["sparsity_dense_layers"] == 0.0 and 0 < result["sparsity_overall"] < 0.75  # stem, classifier


def test_cli_lists_the_presets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["reproduce", "table9", "--preset", "nope", "--out", str(tmp_path)]) == 2
    assert "quick, cpu, paper" in capsys.readouterr().err


def test_cli_trains_any_registered_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``sao train`` is not FNN-only: a CNN run takes Table 8's settings (its first table)."""
    assert main(["train", "--model", "cnn", "--depth", "2", "--width", "8", "--sparsity", "0.5", "--epochs", "1",
                 "--batch-size", "500", "--device", "cpu", "--out", str(tmp_path)]) == 0
    (result,) = finished_results(tmp_path)
    config = EXPERIMENTS.get("table8").base
    assert result["config"]["experiment"] == "table8" and result["config"]["model"]["activation"] == "relu"
    assert result["config"]["train"]["lr"] == config.train.lr and result["connection_sparsity_max"] == 0.5


#: Models whose paper-size build takes about a minute (ECO and SOC layers); their layers check the same rule.
SLOW_AT_PAPER_SIZE = {"cnn_eco", "lipconvnet"}


@pytest.mark.parametrize("table", list(CNN_TABLES))
@pytest.mark.parametrize("preset", ["quick", "cpu", "paper"])
def test_every_sparse_run_of_every_preset_can_be_built(table: str, preset: str) -> None:
    """A sparsity the layers cannot take (e.g. 96.875 % with ReLU at width 32) fails here, not hours into a sweep:
    each (method, sparsity, width) of a preset is applied as the protocol applies it (its exclude, its settings,
    strict)."""
    seen = set()
    for run in CNN_TABLES[table].runs(preset):
        info = model_info(run.model.name)
        key = (run.method.name, run.method.sparsity, run.model.width)
        if run.method.sparsity is None or key in seen or (run.model.name in SLOW_AT_PAPER_SIZE and preset == "paper"):
            continue
        seen.add(key)
        shallow = dataclasses.replace(run, model=dataclasses.replace(run.model, depth=info.depths[0]))
        model = build_model(shallow, info.input_shape, 10, torch.Generator().manual_seed(0))
        exclude = sparsify_exclude(model)
        assert (exclude == "first_last") != any(isinstance(m, ECOConv2d) for m in model.modules())
        _, summary = sparsify(model, run.method.name, sparsity=run.method.sparsity, exclude=exclude, strict=True,
                              return_summary=True, **method_settings(shallow))
        assert summary.sparsified and not summary.skipped and not summary.nearest


def test_runs_do_not_leave_denormals_flushed(tmp_path: Path) -> None:
    """Flushing subnormals is scoped to a run: the flag is global and broke later float tests once."""
    run_one(tiny_run("table8", "dense", depth=2, width=8, batch_size=500), run_experiment, tmp_path)
    assert (torch.tensor([1e-39]) * 1.0).item() != 0.0
