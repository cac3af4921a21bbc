"""Tests of the experiment runner: hashed run directories, atomic results, skip and redo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sao.experiments import FailedRuns, Run, config_hash, finished_results, is_finished, run_grid, run_one
from sao.experiments.store import Guard

CALLS: list[dict] = []


def square(config: dict, run_dir: Path, guard: Guard) -> dict:
    """A module-level run function (picklable for worker processes)."""
    CALLS.append(config)
    if config.get("fail"):
        raise RuntimeError("boom")
    guard()
    (run_dir / "metrics.jsonl").write_text(json.dumps({"x": config["x"]}) + "\n")
    return {"status": "completed", "value": config["x"] ** 2}


def quiet(_: str) -> None:
    return None


def test_config_hash_is_canonical() -> None:
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2}) and len(config_hash({})) == 12


def test_run_one_writes_config_and_result_and_skips_when_finished(tmp_path: Path) -> None:
    CALLS.clear()
    run = Run("x3", {"x": 3})
    result = run_one(run, square, tmp_path)
    run_dir = run.directory(tmp_path)
    assert result["value"] == 9 and result["config_hash"] == run.hash and run_dir.name == f"x3-{run.hash}"
    assert json.loads((run_dir / "config.json").read_text()) == {"x": 3}
    assert is_finished(run_dir) and not list(run_dir.glob(".*.tmp"))
    assert run_one(run, square, tmp_path)["value"] == 9 and len(CALLS) == 1  # never redone


@pytest.mark.parametrize("damage", ["truncated", "foreign", "missing"])
def test_damaged_run_directory_is_redone(tmp_path: Path, damage: str) -> None:
    CALLS.clear()
    run = Run("x4", {"x": 4})
    run_one(run, square, tmp_path)
    result_file = run.directory(tmp_path) / "result.json"
    if damage == "truncated":
        result_file.write_text(result_file.read_text()[:10])
    elif damage == "foreign":
        result_file.write_text(json.dumps({"config_hash": "0" * 12, "value": -1}))
    else:
        result_file.unlink()
    assert not is_finished(run.directory(tmp_path)) and finished_results(tmp_path) == []
    assert run_one(run, square, tmp_path)["value"] == 16 and len(CALLS) == 2


def test_grid_skips_finished_and_reports_failures(tmp_path: Path) -> None:
    CALLS.clear()
    runs = [Run(f"x{x}", {"x": x}) for x in range(4)]
    run_grid(runs[:2], square, tmp_path, log=quiet)
    results = run_grid(runs, square, tmp_path, log=quiet)
    assert [r["value"] for r in results] == [0, 1, 4, 9] and len(CALLS) == 4
    with pytest.raises(FailedRuns, match=r"1 run\(s\) failed.*bad") as err:
        run_grid([*runs, Run("bad", {"x": 9, "fail": True})], square, tmp_path, log=quiet)
    assert isinstance(err.value, RuntimeError) and err.value.labels == ["bad"]
    assert len(finished_results(tmp_path)) == 4  # the failed run is not reported
    assert not list(tmp_path.glob("*/.claim*"))  # its claim was released


def test_grid_with_worker_processes_matches_serial(tmp_path: Path) -> None:
    runs = [Run(f"x{x}", {"x": x}) for x in range(3)]
    serial = run_grid(runs, square, tmp_path / "serial", log=quiet)
    parallel = run_grid(runs, square, tmp_path / "parallel", workers=2, log=quiet)
    assert [r["value"] for r in serial] == [r["value"] for r in parallel]
    assert {r["config_hash"] for r in serial} == {r["config_hash"] for r in parallel}


def test_a_grid_starts_no_more_worker_processes_than_runs_to_go(tmp_path: Path) -> None:
    """``--workers 100000`` for 2 runs: 2 processes (once the log said 100000), and 1 run goes in this process."""
    runs = [Run(f"x{x}", {"x": x}) for x in range(3)]
    run_grid(runs[:1], square, tmp_path, log=quiet)
    lines: list[str] = []
    results = run_grid(runs, square, tmp_path, workers=100_000, log=lines.append)
    assert [r["value"] for r in results] == [0, 1, 4]
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert f"2 worker processes, {threads} thread(s) each" in lines, lines
    CALLS.clear()
    run_grid([*runs, Run("x3", {"x": 3})], square, tmp_path, workers=8, log=lines.append)
    assert CALLS == [{"x": 3}] and not any("worker processes" in line for line in lines[lines.index(
        "4 runs: 3 finished, 1 to run (launcher local)"):])  # ran here: CALLS is this process's


def test_grid_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="same config"):
        run_grid([Run("a", {"x": 1}), Run("b", {"x": 1})], square, tmp_path, log=quiet)
    with pytest.raises(ValueError, match="workers"):
        run_grid([], square, tmp_path, workers=0, log=quiet)
