"""Tests of the run store: claims (acquire, refuse, stale takeover, races), drivers at once, identity, damage."""

from __future__ import annotations

import ast
import importlib.util
import json
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from sao.experiments import Run, RunClaimed, RunStore, config_hash, run_grid, run_one
from sao.experiments.store import Claim, Owner, RunStatus

FAST = {"stale_after": 0.4, "heartbeat": 0.05}
SPAWN = multiprocessing.get_context("spawn")


def quiet(_: str) -> None:
    return None


def store_of(root: Path, **settings: object) -> RunStore:
    return RunStore(root, **{**FAST, **settings})


def counted(config: dict, run_dir: Path) -> dict:
    """Appends one line per call to ``calls.txt``; sleeps ``config["sleep"]``; hangs the first time if ``hang``."""
    with open(run_dir / "calls.txt", "a") as handle:
        handle.write(f"{os.getpid()}\n")
    if config.get("hang") and not (run_dir / "hung").exists():
        (run_dir / "hung").touch()
        time.sleep(120)
    time.sleep(config.get("sleep", 0))
    return {"status": "completed", "value": config["x"] ** 2}


def calls(run_dir: Path) -> list[str]:
    path = run_dir / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def fake_claim(run_dir: Path, owner: Owner, age: float = 0.0) -> None:
    """A claim as another driver leaves it (``.claim/<token>/{owner.json,heartbeat}``), its heartbeat ``age`` s old."""
    claim = run_dir / ".claim" / owner.token
    claim.mkdir(parents=True)
    (claim / "owner.json").write_text(json.dumps({k: v for k, v in asdict(owner).items() if k != "token"}))
    (claim / "heartbeat").touch()
    os.utime(claim / "heartbeat", (time.time() - age,) * 2)


def dead_pid() -> int:
    """The PID of a process of this host that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def renamed(config: dict) -> dict:
    """The identity hook of the tests: an older version called ``x`` ``width``; ``bad`` is no known format."""
    if "bad" in config:
        raise ValueError("unknown config format")
    return {("x" if key == "width" else key): value for key, value in config.items()}


RUN = Run("a", {"x": 1})


def test_claim_is_acquired_and_released(tmp_path: Path) -> None:
    store, lines = store_of(tmp_path), []
    with store.claim(RUN, lines.append) as claim:
        run_dir = store.directory(RUN)
        assert (run_dir / ".claim" / claim.owner.token / "owner.json").is_file()
        assert store.holder(RUN) == claim.owner and claim.owner.pid == os.getpid() and claim.held()
        assert lines == []  # a routine claim is silent
    assert store.holder(RUN) is None and list(run_dir.iterdir()) == []  # no claim debris is left
    claim.release()  # twice is harmless
    with store.claim(RUN, quiet):
        pass


def test_second_claim_is_refused_while_the_first_lives(tmp_path: Path) -> None:
    first, second = store_of(tmp_path), store_of(tmp_path)
    with first.claim(RUN, quiet) as claim:
        for _ in range(10):  # 1 s > stale_after: only the heartbeat keeps the claim live
            assert second.holder(RUN) == claim.owner
            time.sleep(0.1)
        with pytest.raises(RunClaimed, match=f"being trained by another driver \\({socket.gethostname()}:") as err:
            second.claim(RUN, quiet)
        assert err.value.holder == claim.owner
        copy = pickle.loads(pickle.dumps(err.value))  # crosses process and Ray boundaries intact
        assert (copy.holder, copy.run_dir, str(copy)) == (claim.owner, err.value.run_dir, str(err.value))
        with pytest.raises(RunClaimed):
            run_one(RUN, counted, second, log=quiet)
        assert calls(first.directory(RUN)) == []
    assert run_one(RUN, counted, second, log=quiet)["value"] == 1


def test_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path: Path) -> None:
    store, lines = RunStore(tmp_path, stale_after=60, heartbeat=1), []  # only the dead PID makes it stale
    gone = replace(Owner.me(), pid=dead_pid())
    fake_claim(store.directory(RUN), gone)
    with store.claim(RUN, lines.append) as claim:
        assert claim.owner.token != gone.token
    assert lines[0] == (f"took over {store.directory(RUN).name} from {gone}: its claim is stale "
                        f"(process {gone.pid} is gone)")
    assert len(lines) == 1


@pytest.mark.parametrize("clock", ["observer", "file system"])
def test_silent_claim_of_another_host_is_taken_over_after_stale_after(tmp_path: Path, clock: str) -> None:
    """A foreign host's PID means nothing here: only its heartbeat tells; it is timed on our clock, or the
    file system's (a heartbeat from a clock an hour ahead is never old by the file system's clock)."""
    elsewhere = replace(Owner.me(), host="elsewhere", pid=dead_pid())
    store, lines = store_of(tmp_path), []
    fake_claim(store.directory(RUN), elsewhere, age=-3600 if clock == "observer" else 10)
    if clock == "observer":
        with pytest.raises(RunClaimed, match="elsewhere:"):
            store.claim(RUN, lines.append)
        time.sleep(FAST["stale_after"])
    with store.claim(RUN, lines.append):
        pass
    reason = "no heartbeat for" if clock == "observer" else "by the file system's clock"
    assert f"from elsewhere:{elsewhere.pid}: its claim is stale" in lines[0] and reason in lines[0]


@pytest.mark.parametrize("stale", [False, True])
def test_racing_claimers_exactly_one_wins(tmp_path: Path, stale: bool) -> None:
    """Four threads claim one run at once (free, or held by a dead process): one claim, three refusals."""
    gone = replace(Owner.me(), pid=dead_pid())
    for attempt in range(15):
        run, stores, lines = Run(f"r{attempt}", {"x": attempt}), [store_of(tmp_path) for _ in range(4)], []
        if stale:
            fake_claim(stores[0].directory(run), replace(gone, token=f"dead{attempt}"))
        outcomes: list[Claim | RunClaimed | None] = [None] * 4
        gate = threading.Barrier(4)

        def claim(i: int, run: Run = run, gate: threading.Barrier = gate, outcomes: list = outcomes,
                  stores: list[RunStore] = stores, lines: list[str] = lines) -> None:
            gate.wait()
            try:
                outcomes[i] = stores[i].claim(run, lines.append)
            except RunClaimed as err:
                outcomes[i] = err

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        (won,) = [o for o in outcomes if isinstance(o, Claim)]
        assert all(o.holder == won.owner for o in outcomes if isinstance(o, RunClaimed))
        assert sum("took over" in line for line in lines) == stale
        won.release()


def drive(out: str, runs: list[Run], name: str, gate: object | None = None) -> None:
    """One driver (a spawned process): ``run_grid`` over ``runs``; its results and log go to ``name.json``."""
    lines: list[str] = []
    if gate is not None:
        gate.wait(timeout=120)  # type: ignore[attr-defined]
    results = run_grid(runs, counted, Path(out), log=lines.append, poll=0.05,
                       store=RunStore(out, stale_after=5, heartbeat=0.1))
    (Path(out).parent / f"{name}.json").write_text(json.dumps({"results": results, "log": lines}))


def test_two_drivers_at_once_train_each_run_once(tmp_path: Path) -> None:
    out, runs = tmp_path / "sweep", [Run(f"x{x}", {"x": x, "sleep": 0.3}) for x in range(6)]
    gate = SPAWN.Barrier(2)
    drivers = [SPAWN.Process(target=drive, args=(str(out), runs, name, gate)) for name in ("a", "b")]
    for driver in drivers:
        driver.start()
    for driver in drivers:
        driver.join(timeout=120)
    assert [d.exitcode for d in drivers] == [0, 0]
    reports = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("a", "b")]
    for report in reports:  # both return every result
        assert [r["value"] for r in report["results"]] == [x * x for x in range(6)]
    store = RunStore(out)
    assert [len(calls(store.directory(run))) for run in runs] == [1] * 6  # each run trained once, each line once
    lines = [line for report in reports for line in report["log"]]
    assert sum(" done " in line for line in lines) == 6
    assert any("being trained by another driver" in line for line in lines)
    assert not list(out.glob("*/.claim*"))


def test_killed_driver_leaves_a_stale_claim_that_the_next_driver_resumes(tmp_path: Path) -> None:
    out, runs = tmp_path / "sweep", [Run("x0", {"x": 0}), Run("x1", {"x": 1, "hang": True})]
    driver = SPAWN.Process(target=drive, args=(str(out), runs, "killed"))
    driver.start()
    run_dir = RunStore(out).directory(runs[1])
    while not (run_dir / "hung").exists() and driver.is_alive():
        time.sleep(0.05)
    assert (run_dir / "hung").exists(), "the driver died before its run started"
    os.kill(driver.pid, signal.SIGKILL)
    driver.join()
    assert (run_dir / ".claim").is_dir() and not (run_dir / "result.json").exists()
    lines: list[str] = []
    results = run_grid(runs, counted, out, log=lines.append, store=store_of(out), poll=0.05)
    assert [r["value"] for r in results] == [0, 1]
    assert any(f"from {socket.gethostname()}:{driver.pid}: its claim is stale" in line for line in lines)
    assert calls(run_dir) == [str(driver.pid), str(os.getpid())]  # resumed in its own folder
    assert len(list(out.iterdir())) == 2 and not (run_dir / ".claim").exists()


@pytest.mark.parametrize("finished", [False, True])
def test_identity_finds_a_folder_of_an_older_version(tmp_path: Path, finished: bool) -> None:
    old = {"width": 3}
    old_dir = tmp_path / f"w3-{config_hash(old)}"
    old_dir.mkdir()
    (old_dir / "config.json").write_text(json.dumps(old))
    if finished:
        (old_dir / "result.json").write_text(json.dumps({"config_hash": config_hash(old), "value": 9}))
    run = Run("x3", {"x": 3})
    assert RunStore(tmp_path).directory(run) != old_dir  # without the hook the old folder is not this run's
    store = store_of(tmp_path, identity=renamed)
    assert store.directory(run) == old_dir
    assert store.status(run) is (RunStatus.FINISHED if finished else RunStatus.UNFINISHED)
    assert run_grid([run], counted, tmp_path, log=quiet, store=store)[0]["value"] == 9
    assert [p.name for p in tmp_path.iterdir()] == [old_dir.name]  # never redone elsewhere
    assert len(calls(old_dir)) == (0 if finished else 1)
    assert json.loads((old_dir / "config.json").read_text()) == old
    (found,) = RunStore(tmp_path, identity=renamed).finished()
    assert found["config"] == {"x": 3} and found["value"] == 9


def test_damaged_folders_are_listed_skipped_and_redone(tmp_path: Path) -> None:
    runs = [Run(f"x{x}", {"x": x}) for x in range(5)]
    run_grid(runs, counted, tmp_path, log=quiet, store=store_of(tmp_path, identity=renamed))
    dirs = [RunStore(tmp_path).directory(run) for run in runs]
    (dirs[0] / "result.json").write_text("{")
    (dirs[1] / "result.json").write_text(json.dumps({"config_hash": "0" * 12}))
    (dirs[2] / "config.json").write_text("[1, 2")
    (dirs[3] / "config.json").write_text(json.dumps({"bad": 1}))
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "result.json").write_text("{}")
    store = store_of(tmp_path, identity=renamed)
    problems = {path.name: problem for path, problem in store.damaged()}
    assert list(problems) == ["stray"] + [d.name for d in dirs[:4]]
    for name, expected in zip(problems, ["without a readable config.json", "result.json unreadable",
                                         "another config", "config.json unreadable", "not understood"], strict=True):
        assert expected in problems[name]
    assert [r["config"] for r in store.finished()] == [{"x": 4}]
    assert [store.status(run) for run in runs] == [RunStatus.DAMAGED] * 4 + [RunStatus.FINISHED]
    results = run_grid(runs, counted, tmp_path, log=quiet, store=store)
    assert [r["value"] for r in results] == [x * x for x in range(5)]
    assert [len(calls(d)) for d in dirs] == [2, 2, 2, 2, 1]
    assert [path.name for path, _ in store.damaged()] == ["stray"]


@pytest.mark.parametrize("workers", [1, 2])
def test_grid_leaves_or_takes_over_a_run_claimed_elsewhere(tmp_path: Path, workers: int) -> None:
    """Claimed elsewhere is not failed: left with ``wait=False``; taken over once its heartbeat stops.

    With worker processes the holder comes back from the workers, and the stale verdict of the
    waiting driver (timed on its clock: the heartbeat is an hour ahead) travels to them.
    """
    runs, lines = [Run("x0", {"x": 0}), Run("x1", {"x": 1})], []
    elsewhere = replace(Owner.me(), host="elsewhere")
    fake_claim(RunStore(tmp_path).directory(runs[1]), elsewhere, age=-3600)
    results = run_grid(runs, counted, tmp_path, workers=workers, log=lines.append, wait=False,
                       store=store_of(tmp_path, stale_after=60))
    assert results[0]["value"] == 0 and results[1] is None
    assert f"x1 is being trained by another driver ({elsewhere}); not trained here" in "\n".join(lines)
    assert "1 run(s) are being trained by another driver (elsewhere:" in lines[-1] and "not waiting" in lines[-1]
    lines.clear()
    results = run_grid(runs, counted, tmp_path, workers=workers, log=lines.append, store=store_of(tmp_path),
                       poll=0.05)
    assert [r["value"] for r in results] == [0, 1] and len(calls(RunStore(tmp_path).directory(runs[1]))) == 1
    assert any("waiting for them" in line for line in lines) and lines[-1].endswith("done x1")


def test_grid_waits_for_a_run_another_driver_finishes(tmp_path: Path) -> None:
    run, lines = Run("x2", {"x": 2, "sleep": 0.5}), []
    other = threading.Thread(target=run_one, args=(run, counted, store_of(tmp_path)), kwargs={"log": quiet})
    other.start()
    while not (RunStore(tmp_path).directory(run) / "calls.txt").exists():
        time.sleep(0.01)
    results = run_grid([run], counted, tmp_path, log=lines.append, store=store_of(tmp_path), poll=0.05)
    other.join()
    assert results[0]["value"] == 4 and len(calls(RunStore(tmp_path).directory(run))) == 1
    assert lines[-1] == f"x2 was finished by another driver ({socket.gethostname()}:{os.getpid()}); not trained here"


def steal_claim(config: dict, run_dir: Path) -> dict:
    """A run during which another driver takes the claim over (as if this one had stalled)."""
    (claim,) = (run_dir / ".claim").iterdir()
    claim.rename(run_dir / "stolen")
    time.sleep(0.2)  # the heartbeat notices
    return {"value": config["x"]}


def test_a_claim_lost_while_training_writes_no_result(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(RuntimeError, match="taken over while this driver trained"):
        run_one(RUN, steal_claim, store_of(tmp_path), log=lines.append)
    assert not (store_of(tmp_path).directory(RUN) / "result.json").exists()
    assert any("lost the claim" in line for line in lines)


def imported_sao_modules(module: str) -> set[str]:
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return {name for name in names if name.split(".")[0] == "sao"}


def test_the_store_is_the_ground_of_the_experiment_layer() -> None:
    """No import cycle: store ← launchers ← runner, and the store needs nothing of the experiment layer."""
    assert imported_sao_modules("sao.experiments.store") == {"sao._atomic", "sao._validation",
                                                             "sao.training.distributed"}
    assert imported_sao_modules("sao.experiments.launchers") - {"sao._registry", "sao._validation"} == {
        "sao.experiments.store"}
    assert imported_sao_modules("sao.experiments.runner") == {"sao.experiments.launchers", "sao.experiments.store"}


def test_store_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stale_after"):
        RunStore(tmp_path, stale_after=1, heartbeat=2)
    with pytest.raises(ValueError, match="heartbeat"):
        RunStore(tmp_path, heartbeat=0)
    with pytest.raises(ValueError, match="store is of"):
        run_grid([], counted, tmp_path / "elsewhere", log=quiet, store=RunStore(tmp_path))
