"""Tables 8-12: grids of every preset, and real runs of every CNN model and conv method (tiny, on MNIST-5k)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sao.cli import main
from sao.experiments import Run, finished_results, run_one
from sao.experiments.cnn import CNN_TABLES, cnn_runs, run_cnn


@pytest.mark.parametrize("table", list(CNN_TABLES))
@pytest.mark.parametrize("preset", ["quick", "cpu", "paper"])
def test_grids(table: str, preset: str) -> None:
    runs = cnn_runs(table, preset)
    grid = CNN_TABLES[table].presets[preset]
    sparse_methods = [m for m in grid.methods if m != "dense"]
    per_depth = len(sparse_methods) * len(grid.sparsities) + ("dense" in grid.methods)
    expected = len(grid.depths) * len(grid.seeds) * per_depth
    assert len(runs) == expected
    assert len({r.hash for r in runs}) == len(runs)
    assert all((r.config["sparsity"] is None) == (r.config["method"] == "dense") for r in runs)
    assert {r.config["dataset"] for r in runs} == {"mnist5k" if preset != "paper" else grid.dataset}


def test_unknown_table_and_preset() -> None:
    with pytest.raises(ValueError, match="table8"):
        cnn_runs("table99", "quick")
    with pytest.raises(ValueError, match="quick, cpu, paper"):
        cnn_runs("table8", "huge")


def tiny(table: str, method: str, sparsity: float | None, **over: object) -> Run:
    base = cnn_runs(table, "quick", device="cpu")[0].config
    config = {**base, "method": method, "sparsity": sparsity, "width": 8, "epochs": 1, "batch_size": 500,
              "depth": 2, **over}
    return Run(f"{method}-{sparsity}", config)


@pytest.mark.parametrize("method", ["sao", "lmp-s", "lmp-t", "rg-s", "rg-t", "eoi"])
def test_every_conv_method_hits_its_kernel_sparsity_exactly(tmp_path: Path, method: str) -> None:
    result = run_one(tiny("table8", method, 0.75), run_cnn, tmp_path)
    assert result["status"] == "completed"
    assert result["connection_sparsity_min"] == result["connection_sparsity_max"] == 0.75


@pytest.mark.parametrize(("table", "depth"), [("table9", 2), ("table12", 2), ("table11", 5)])
def test_every_model_trains_dense_and_sao(tmp_path: Path, table: str, depth: int) -> None:
    for method, sparsity in (("dense", None), ("sao", 0.5)):
        result = run_one(tiny(table, method, sparsity, depth=depth), run_cnn, tmp_path)
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
    with pytest.raises(ValueError, match=r"not available for cnn_eco.*lmp-s"):
        run_one(tiny("table12", method, 0.5), run_cnn, tmp_path)


def test_cli_lists_the_cnn_tables(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["reproduce", "table9", "--preset", "nope", "--out", str(tmp_path)]) == 2
    assert "quick, cpu, paper" in capsys.readouterr().err


@pytest.mark.parametrize("table", list(CNN_TABLES))
@pytest.mark.parametrize("preset", ["quick", "cpu", "paper"])
def test_every_sparse_run_of_every_preset_can_be_built(table: str, preset: str) -> None:
    """A sparsity the layers cannot take (e.g. 96.875 % with ReLU at width 32) fails here, not hours into a sweep."""
    from sao.experiments.cnn import _build_model
    from sao.methods import sparsify

    seen = set()
    for run in cnn_runs(table, preset):
        c = run.config
        key = (c["method"] == "sao", c["sparsity"], c["width"])
        if c["sparsity"] is None or key in seen or (c["model"] != "cnn" and preset == "paper"):
            continue  # building the paper-size ECO/SOC models takes a minute; their layers check the same rule
        seen.add(key)
        shallow = {**c, "depth": 5 if c["model"] == "lipconvnet" else 2}
        model = _build_model(shallow, 10, 3, torch.Generator().manual_seed(0))
        if c["model"] == "cnn":
            activation = c["activation"] if c["activation"] in ("tanh", "relu") else "tanh"
            sparsify(model, c["method"], sparsity=c["sparsity"], activation=activation)


def test_runs_do_not_leave_denormals_flushed(tmp_path: Path) -> None:
    """Flushing subnormals is scoped to a run: the flag is global and broke later float tests once."""
    run_one(tiny("table8", "dense", None), run_cnn, tmp_path)
    assert (torch.tensor([1e-39]) * 1.0).item() != 0.0
