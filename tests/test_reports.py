"""Tests of the sweep report: aggregation over seeds, known numbers, only finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sao.experiments import Run, run_one
from sao.reports import aggregate, table_rows, write_report


def fake_run(config: dict, run_dir: Path) -> dict:
    acc = {"sao": 0.9, "gmp-s": 0.1}[config["method"]] + 0.01 * config["seed"]
    return {"status": "completed", "test_acc": acc, "val_acc": acc, "jacobian_mean": 1.0 + config["seed"],
            "jacobian_var": 0.1 * (1 + config["depth"] / 100)}


def make_sweep(out: Path) -> None:
    for method in ("sao", "gmp-s"):
        for depth in (10, 100):
            for seed in (0, 1):
                run_one(Run(f"{method}-{depth}-{seed}", {"method": method, "depth": depth, "seed": seed}),
                        fake_run, out)


def test_table_rows_mean_std_over_seeds(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    from sao.experiments import finished_results

    results = finished_results(tmp_path)
    assert len(aggregate(results, "test_acc")["sao", 10]) == 2
    rows = {r["method"]: r for r in table_rows(results, known={("gmp-s", 100): 10.0})}
    assert rows["sao"]["N=10"] == "90.50 ± 0.71 (2) [paper —]"  # the paper has no number here: marked
    assert rows["gmp-s"]["N=100"] == "10.50 ± 0.71 (2) [paper 10.00]"
    assert table_rows(results)[0]["N=10"].endswith("(2)")  # no paper numbers at all: no marks


def test_write_report_files_and_unfinished_runs_are_ignored(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    partial = tmp_path / "sao-1000-0-deadbeef0000"
    partial.mkdir()
    (partial / "config.json").write_text(json.dumps({"method": "sao", "depth": 1000, "seed": 0}))
    files = write_report(tmp_path, tmp_path / "report", title="T7")
    assert {f.name for f in files} >= {"report.md", "report.csv", "jacobian.md", "accuracy_vs_depth.png",
                                        "jacobian_vs_depth.png"}
    text = (tmp_path / "report" / "report.md").read_text()
    assert "N=1000" not in text and "N=100" in text


def test_empty_sweep_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no finished runs"):
        write_report(tmp_path)
