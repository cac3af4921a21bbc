"""Tests of the Table 7 experiment: presets, one run end to end (S and T flows), resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sao.cli import main
from sao.experiments import Run, finished_results, protocol, run_one
from sao.experiments.table7 import PRESETS, measured_sparsity, run_table7, table7_runs


def tiny(method: str, depth: int = 3, epochs: int = 1) -> Run:
    config = {"experiment": "table7", "method": method, "depth": depth, "seed": 0, "epochs": epochs,
              "dataset": "mnist5k", "data_root": None, "degree": 4, "gain": 1.1, "batch_size": 256, "lr": 1e-2,
              "device": "cpu"}
    return Run(f"{method}-N{depth}", config)


def test_presets_cover_the_paper_grid() -> None:
    runs = table7_runs("cpu")
    assert {r.config["method"] for r in runs} == {"dense", "gmp-t", "gmp-s", "rg-u", "rg-n", "sao"}
    assert {r.config["depth"] for r in runs} == {50, 200, 400, 600, 800, 1000}
    assert {r.config["lr"] for r in runs if r.config["depth"] == 1000} == {1e-4}
    assert PRESETS["paper"].dataset == "mnist" and PRESETS["paper"].epochs == 100
    assert len({r.hash for r in table7_runs("quick")}) == len(table7_runs("quick"))
    with pytest.raises(ValueError, match="quick, cpu, paper"):
        table7_runs("huge")


@pytest.mark.parametrize("method", ["sao", "gmp-s", "gmp-t"])
def test_one_run_end_to_end(method: str, tmp_path: Path) -> None:
    result = run_one(tiny(method), run_table7, tmp_path)
    assert result["status"] == "completed" and 0.0 <= result["test_acc"] <= 1.0
    assert result["jacobian_mean_init"] is not None and result["jacobian_var"] is not None
    assert result["sparsity_sparse_layers"] == pytest.approx(1 - (256 * 4 * 3) / (256 * 512 + 2 * 256 * 256),
                                                             abs=1e-6)
    assert result["sparsity_dense_layers"] == 0.0
    run_dir = Path(result["run_dir"])
    phases = ["dense", "finetune"] if method.endswith("-t") else ["train"]
    for phase in phases:
        assert (run_dir / phase / "metrics.jsonl").exists()
    assert json.loads((run_dir / "config.json").read_text())["method"] == method


class Killed(KeyboardInterrupt):
    """Stands for the process being killed after an epoch's checkpoint was written."""


def test_killed_run_resumes_to_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = run_one(tiny("gmp-t", epochs=2), run_table7, tmp_path / "full")
    real_train = protocol.train
    calls = []

    def train_killed_after_first_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the fine-tuning phase of the -T flow

            def stop(row: dict) -> None:
                if row["epoch"] == 1:
                    raise Killed
            kwargs["on_epoch_end"] = stop
        return real_train(*args, **kwargs)

    monkeypatch.setattr(protocol, "train", train_killed_after_first_epoch)
    run = tiny("gmp-t", epochs=2)
    with pytest.raises(Killed):
        run_one(run, run_table7, tmp_path / "cut")
    assert not (run.directory(tmp_path / "cut") / "result.json").exists()
    assert finished_results(tmp_path / "cut") == []  # the partial run is never reported
    monkeypatch.setattr(protocol, "train", real_train)
    resumed = run_one(run, run_table7, tmp_path / "cut")
    for key in ("test_acc", "val_acc", "epochs_run", "jacobian_var", "sparsity_sparse_layers"):
        assert resumed[key] == full[key], key


def test_measured_sparsity_of_a_dense_model() -> None:
    from sao.models import fnn

    assert measured_sparsity(fnn(2)) == {"connection_sparsity_min": 0.0, "connection_sparsity_max": 0.0,
                                         "sparsity_sparse_layers": 0.0, "sparsity_sparse_layers_min": 0.0,
                                         "sparsity_sparse_layers_max": 0.0, "sparsity_dense_layers": 0.0,
                                         "sparsity_overall": 0.0}


def test_cli_train_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--method", "sao", "--depth", "3", "--epochs", "1", "--batch-size", "256",
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert "test_acc" in capsys.readouterr().out
    assert len(finished_results(tmp_path)) == 1
    assert main(["report", str(tmp_path)]) == 0
    assert "| sao |" in capsys.readouterr().out
    assert main(["train", "--method", "sao", "--depth", "2", "--epochs", "1", "--batch-size", "256", "--activation",
                 "relu", "--schedule", "cosine", "--warmup-epochs", "1", "--nesterov", "--max-grad-norm", "1.0",
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    relu_run = next(r for r in finished_results(tmp_path) if r["config"]["activation"] == "relu")
    assert relu_run["config"]["schedule"] == "cosine" and relu_run["status"] == "completed"
    assert main(["train", "--method", "nope", "--out", str(tmp_path)]) == 2
    assert main(["train", "--schedule", "sometimes", "--out", str(tmp_path)]) == 2
    assert main(["reproduce", "table7", "--preset", "huge", "--out", str(tmp_path)]) == 2


def test_reproduce_precision_flags_enter_the_run_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sao.experiments._cli as cli

    seen: dict[str, list[Run]] = {}

    def capture(runs: list[Run], *args: object, **kwargs: object) -> None:
        seen.setdefault("runs", []).extend(runs)
        raise KeyboardInterrupt  # stop before training anything

    monkeypatch.setattr(cli, "run_grid", capture)
    assert main(["reproduce", "table7", "--preset", "quick", "--out", str(tmp_path)]) == 130
    plain = seen.pop("runs")
    assert all("amp" not in r.config for r in plain)  # default runs keep their hashes
    assert main(["reproduce", "table7", "--preset", "quick", "--amp", "bf16", "--cudnn-benchmark",
                 "--out", str(tmp_path)]) == 130
    mixed = seen["runs"]
    assert all(r.config["amp"] == "bf16" and r.config["cudnn_benchmark"] for r in mixed)
    assert {r.hash for r in mixed}.isdisjoint({r.hash for r in plain})
