"""Tests of the grid launchers: Ray gives the same run folders as local processes, survives killed workers,
and leaves runs another driver holds to it."""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch

from sao.experiments import Run, RunStore, finished_results, run_grid
from sao.experiments.launchers import LAUNCHERS, LaunchOptions
from sao.experiments.store import Guard

# Ray workers cannot import this file (tests/ is not a package on their path): ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

TIMING = {"seconds", "run_dir"}


def quiet(_: str) -> None:
    return None


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """One local Ray instance for the module (starting one takes seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def seeded_run(config: dict, run_dir: Path, guard: Guard) -> dict:
    """A small deterministic run: a few SGD steps of a seeded least-squares problem, one metrics line each."""
    g = torch.Generator().manual_seed(config["seed"])
    x, y = torch.randn(64, config["width"], generator=g), torch.randn(64, generator=g)
    w = torch.zeros(config["width"], requires_grad=True)
    guard()
    with open(run_dir / "metrics.jsonl", "a") as metrics:
        for step in range(5):
            loss = ((x @ w - y) ** 2).mean()
            loss.backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad = None
            metrics.write(json.dumps({"step": step, "loss": loss.item()}) + "\n")
    return {"status": "completed", "loss": loss.item(), "threads": torch.get_num_threads()}


def tiny_grid() -> list[Run]:
    return [Run(f"w{width}-s{seed}", {"width": width, "seed": seed}) for width in (4, 8) for seed in (0, 1)]


def test_ray_grid_matches_local_grid(tmp_path: Path, ray_instance: None) -> None:
    runs = tiny_grid()
    local = run_grid(runs, seeded_run, tmp_path / "local", log=quiet)
    lines: list[str] = []
    remote = run_grid(runs, seeded_run, tmp_path / "ray", log=lines.append, launcher="ray",
                      options=LaunchOptions(cpus_per_run=1))
    assert ray.is_initialized()  # the launcher keeps a Ray instance it did not start
    names = {side: sorted(p.name for p in (tmp_path / side).iterdir()) for side in ("local", "ray")}
    assert names["local"] == names["ray"] and len(names["ray"]) == len(runs)
    for a, b in zip(local, remote, strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
    assert sum(" done " in line for line in lines) == len(runs)


def counted_run(config: dict, run_dir: Path, guard: Guard) -> dict:
    """Count each call in a file; the run named ``config["kill"]`` SIGKILLs its worker the first time."""
    calls = Path(config["calls"])
    (calls / f"{config['x']}-{uuid.uuid4().hex}").touch()
    marker = calls.parent / "killed"
    if config["x"] == config["kill"] and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return {"status": "completed", "value": config["x"] ** 2}


def test_killed_worker_loses_nothing_and_rerun_completes(tmp_path: Path, ray_instance: None) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    runs = [Run(f"x{x}", {"x": x, "kill": 2, "calls": str(calls)}) for x in range(5)]
    out = tmp_path / "grid"
    lines: list[str] = []
    with pytest.raises(RuntimeError, match=r"1 run\(s\) failed.*x2"):
        run_grid(runs, counted_run, out, log=lines.append, launcher="ray", options=LaunchOptions(max_retries=0))
    assert any(line.startswith("[") and "FAILED x2" in line for line in lines)
    finished = {r["config"]["x"]: r for r in finished_results(out)}
    assert sorted(finished) == [0, 1, 3, 4] and all(r["value"] == x * x for x, r in finished.items())
    results = run_grid(runs, counted_run, out, log=quiet, launcher="ray")
    assert [r["value"] for r in results] == [x * x for x in range(5)]
    per_run = [sum(p.name.startswith(f"{x}-") for p in calls.iterdir()) for x in range(5)]
    assert per_run == [1, 1, 2, 1, 1]  # finished runs were not redone; the killed one ran again
    assert json.loads((runs[0].directory(out) / "result.json").read_text())["value"] == 0
    (tmp_path / "killed").unlink()  # with the default retries Ray reruns the killed run itself
    assert [r["value"] for r in run_grid(runs, counted_run, tmp_path / "retried", log=quiet, launcher="ray")] == [
        x * x for x in range(5)]
    assert sum(p.name.startswith("2-") for p in calls.iterdir()) == 4


def test_ray_leaves_a_run_claimed_elsewhere_to_its_driver(tmp_path: Path, ray_instance: None) -> None:
    """A Ray task that finds its run claimed by a live driver reports the holder back; the grid waits."""
    runs, lines = tiny_grid()[:2], []
    with RunStore(tmp_path).claim(runs[1], log=quiet) as claim:
        results = run_grid(runs, seeded_run, tmp_path, log=lines.append, launcher="ray", wait=False)
    assert results[0]["status"] == "completed" and results[1] is None
    assert any(f"{runs[1].label} is being trained by another driver ({claim.owner})" in line for line in lines)
    assert run_grid(runs, seeded_run, tmp_path, log=quiet, launcher="ray")[1]["status"] == "completed"


def test_unknown_launcher_and_bad_options(tmp_path: Path) -> None:
    assert LAUNCHERS.names() == ["local", "ray"]
    with pytest.raises(ValueError, match="local, ray"):
        run_grid([Run("a", {"x": 1})], counted_run, tmp_path, log=quiet, launcher="slurm")
    for bad in ({"workers": 0}, {"cpus_per_run": 0}, {"gpus_per_run": -1}, {"gpus_per_run": 1.5},
                {"max_retries": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LaunchOptions(**bad)
    with pytest.raises(ValueError, match="disagrees"):
        run_grid([], counted_run, tmp_path, workers=2, log=quiet, options=LaunchOptions(workers=3))


def test_missing_ray_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes ``import ray`` fail
    with pytest.raises(ValueError, match=r"pip install 'sao\[ray\]'"):
        run_grid([Run("a", {"x": 1})], counted_run, tmp_path, log=quiet, launcher="ray")


def test_cli_launcher_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sao.cli import build_parser, main

    args = build_parser().parse_args(["reproduce", "table7", "--launcher", "ray", "--address", "auto",
                                      "--cpus-per-run", "4", "--gpus-per-run", "0.5"])
    assert (args.launcher, args.address, args.cpus_per_run, args.gpus_per_run) == ("ray", "auto", 4, 0.5)
    assert build_parser().parse_args(["reproduce", "table7"]).launcher == "local"
    for argv in (["--launcher", "ray", "--cpus-per-run", "0"], ["--launcher", "ray", "--gpus-per-run", "-1"],
                 ["--cpus-per-run", "2"], ["--launcher", "ray", "--workers", "2"]):
        assert main(["reproduce", "table7", "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("sao reproduce: error: "), err
    assert not any(tmp_path.iterdir())  # nothing ran
    assert main(["reproduce", "table7", "--launcher", "slurm"]) == 2
