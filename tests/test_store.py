"""Tests of the run store: claims (acquire, refuse, stale takeover, races), leases (a stalled driver stops
writing), drivers at once, identity, damage, copied sweeps."""

from __future__ import annotations

import ast
import importlib.util
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sao.experiments import run_grid
from sao.experiments.store import (
    Guard,
    Lease,
    LeaseLost,
    Owner,
    Run,
    RunClaimed,
    RunStatus,
    RunStore,
    attempt,
    config_hash,
    read_result,
    run_one,
)
from sao.training import TrainConfig, load_checkpoint, read_metrics, train

FAST = {"stale_after": 0.4, "heartbeat": 0.05}
SPAWN = multiprocessing.get_context("spawn")


def quiet(_: str) -> None:
    return None


def store_of(root: Path, **settings: object) -> RunStore:
    return RunStore(root, **{**FAST, **settings})


def counted(config: dict, run_dir: Path, guard: Guard) -> dict:
    """Appends one line per call to ``calls.txt``; sleeps ``config["sleep"]``; hangs the first time if ``hang``."""
    guard()
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
        assert store.holder(RUN) == claim.owner and claim.owner.pid == os.getpid() and claim.lost() is None
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
    for trial in range(15):
        run, stores, lines = Run(f"r{trial}", {"x": trial}), [store_of(tmp_path) for _ in range(4)], []
        if stale:
            fake_claim(stores[0].directory(run), replace(gone, token=f"dead{trial}"))
        outcomes: list[Lease | RunClaimed | None] = [None] * 4
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
        (won,) = [o for o in outcomes if isinstance(o, Lease)]
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


def steal_claim(config: dict, run_dir: Path, guard: Guard) -> dict:
    """A run during which another driver takes the claim over (as if this one had stalled), then writes."""
    (claim,) = (run_dir / ".claim").iterdir()
    claim.rename(run_dir / "stolen")
    guard()
    (run_dir / "written.txt").touch()
    return {"value": config["x"]}


def test_a_claim_taken_over_stops_the_run_before_its_next_write(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(LeaseLost, match="another driver took it over") as err:
        run_one(RUN, steal_claim, store_of(tmp_path), log=lines.append)
    run_dir = store_of(tmp_path).directory(RUN)
    assert not (run_dir / "written.txt").exists() and not (run_dir / "result.json").exists()
    assert lines == [f"stopped {RUN.label}: {err.value}"]
    copy = pickle.loads(pickle.dumps(err.value))  # crosses process and Ray boundaries intact
    assert (copy.run_dir, copy.why, str(copy)) == (err.value.run_dir, err.value.why, str(err.value))


def test_a_lease_is_valid_for_a_margin_less_than_stale_after_and_kept_valid_by_its_heartbeat(tmp_path: Path) -> None:
    with store_of(tmp_path).claim(RUN, quiet) as lease:
        assert FAST["heartbeat"] < lease.valid_for < FAST["stale_after"]
        time.sleep(3 * lease.valid_for)
        lease.check()


# --- a driver that stalls (SIGSTOP, a suspended laptop) past stale_after -------------------------------------------

STALL = {"stale_after": 1.0, "heartbeat": 0.1}
EPOCHS = 4
STALLING = Run("t", {"epochs": EPOCHS})


def stalling_training(config: dict, run_dir: Path, guard: Guard) -> dict:
    """Trains a tiny classifier with :func:`sao.training.train`; the first driver to finish epoch 1 stops its whole
    process there (SIGSTOP: every thread, its heartbeat too), as a suspended machine would."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g)
    data = {"train": DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True,
                                generator=torch.Generator().manual_seed(1)),
            "val": DataLoader(TensorDataset(x, y), batch_size=16)}
    torch.manual_seed(0)
    marker = run_dir.parent.parent / "stalled"

    def stall(row: dict) -> None:
        if row["epoch"] == 1 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGSTOP)

    cfg = TrainConfig(epochs=config["epochs"], lr=0.1, device="cpu", isometry_probe=0)
    result = train(nn.Linear(4, 2), data, cfg, run_dir / "train", progress=False, on_epoch_end=stall, guard=guard)
    return {k: v for k, v in result.items() if k in ("status", "epochs_run", "val_acc")}


def stalling_driver(out: str) -> None:
    """A driver (a spawned process) that attempts the run, which stalls it; what happened goes to ``stalled.json``."""
    lines: list[str] = []
    try:
        outcome = str(attempt(STALLING, stalling_training, RunStore(out, **STALL), lines.append))
    except LeaseLost as err:
        outcome = f"LeaseLost: {err}"
    (Path(out).parent / "stalled.json").write_text(json.dumps({"outcome": outcome, "log": lines}))


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def start_stalled_driver(out: Path) -> multiprocessing.process.BaseProcess:
    """A driver that has trained epoch 1 of the run and is stopped now."""
    driver = SPAWN.Process(target=stalling_driver, args=(str(out),))
    driver.start()
    deadline = time.monotonic() + 120
    while driver.is_alive() and process_state(driver.pid) != "T" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert driver.is_alive() and process_state(driver.pid) == "T", "the driver did not stall"
    return driver


def wake(driver: multiprocessing.process.BaseProcess, out: Path) -> dict:
    """Continue the stopped ``driver``; what it reported."""
    os.kill(driver.pid, signal.SIGCONT)
    driver.join(timeout=120)
    assert driver.exitcode == 0
    return json.loads((out.parent / "stalled.json").read_text())


def epochs_written(out: Path) -> list[int]:
    return [row["epoch"] for row in read_metrics(RunStore(out).directory(STALLING) / "train" / "metrics.jsonl")]


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="watches the driver in /proc")


@needs_proc
def test_a_stalled_driver_whose_run_was_taken_over_writes_nothing_more(tmp_path: Path) -> None:
    """The stalled driver's claim goes stale, another driver takes the run over and finishes it; the stalled
    driver wakes and stops at its next write: every epoch is in metrics.jsonl once, the checkpoint is the new
    driver's."""
    out = tmp_path / "sweep"
    driver = start_stalled_driver(out)
    lines: list[str] = []
    (result,) = run_grid([STALLING], stalling_training, out, log=lines.append, poll=0.05, store=RunStore(out, **STALL))
    assert result["epochs_run"] == EPOCHS and any("its claim is stale" in line for line in lines)
    woken = wake(driver, out)
    assert woken["outcome"] == "finished"  # by the driver that took it over
    assert any("lost the lease on t-" in line for line in woken["log"])
    assert epochs_written(out) == list(range(EPOCHS + 1))
    run_dir = RunStore(out).directory(STALLING)
    assert load_checkpoint(run_dir / "train" / "checkpoint.pt")["epoch"] == EPOCHS
    assert read_result(run_dir)["epochs_run"] == EPOCHS and not (run_dir / ".claim").exists()


@needs_proc
def test_a_lease_that_expired_without_takeover_stops_the_driver_too(tmp_path: Path) -> None:
    """Nobody took the run over while its driver was stopped, but the lease expired: the driver stops and
    releases the run unfinished; the next driver resumes it from its last checkpoint."""
    out = tmp_path / "sweep"
    driver = start_stalled_driver(out)
    time.sleep(STALL["stale_after"])  # longer than the lease is valid, (stale_after + heartbeat) / 2
    woken = wake(driver, out)
    assert woken["outcome"].startswith("LeaseLost: lost the lease on t-") and "stalled" in woken["outcome"]
    assert epochs_written(out) == [0, 1]
    run_dir = RunStore(out).directory(STALLING)
    assert not (run_dir / "result.json").exists() and not (run_dir / ".claim").exists()
    assert run_one(STALLING, stalling_training, RunStore(out, **STALL), log=quiet)["epochs_run"] == EPOCHS
    assert epochs_written(out) == list(range(EPOCHS + 1))


# --- a copied sweep folder -----------------------------------------------------------------------------------------


def test_a_copied_sweep_reports_the_folders_of_the_copy(tmp_path: Path) -> None:
    runs = [Run(f"x{x}", {"x": x}) for x in range(3)]
    run_grid(runs, counted, tmp_path / "sweep", log=quiet)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "sweep", copy)
    store = RunStore(copy)
    results = [*store.finished(), *(store.result(run) for run in runs),
               *(run_one(run, counted, store, log=quiet) for run in runs), *run_grid(runs, counted, copy, log=quiet),
               read_result(store.directory(runs[0]))]
    assert len(results) == 13
    for result in results:
        assert Path(result["run_dir"]).parent == copy and Path(result["run_dir"]).is_dir()
    assert all("run_dir" not in json.loads((folder / "result.json").read_text()) for folder in copy.iterdir())
    assert [len(calls(store.directory(run))) for run in runs] == [1, 1, 1]  # nothing was trained again


def imported_sao_modules(module: str) -> set[str]:
    """The ``sao`` modules that ``module`` imports; of a package, those its modules import from outside it."""
    origin = Path(importlib.util.find_spec(module).origin)
    paths = sorted(origin.parent.glob("*.py")) if origin.name == "__init__.py" else [origin]
    names: set[str] = set()
    for path in paths:
        tree = ast.parse(path.read_text())
        names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return {name for name in names if name.split(".")[0] == "sao" and not name.startswith(f"{module}.")}


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
