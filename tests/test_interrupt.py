"""Ctrl-C stops a sweep at once, whatever runs it: exit status 130, no run started after the interrupt,
nothing half-written, and the same command then finishes the rest.

Each test drives a real sweep in a subprocess (``sao reproduce --workers 2``, or ``run_grid`` on a
local Ray instance) with a slow fake run function, interrupts it once two runs are training, and
reruns it with a fast one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: The fake run function: records its start, then sleeps ``SAO_TEST_SECONDS`` in small steps.
SLOW_RUNS = '''
import os
import time
import uuid
from pathlib import Path


def slow_run(config, run_dir, *_):
    log = Path(os.environ["SAO_TEST_LOG"])
    (log / f"{Path(run_dir).name}@{uuid.uuid4().hex}").write_text(repr(time.time()))
    deadline = time.time() + float(os.environ["SAO_TEST_SECONDS"])
    while time.time() < deadline:
        time.sleep(0.02)
    return {"status": "completed", "test_acc": 0.5, "val_acc": 0.5}
'''

#: ``sao reproduce`` with the slow run function in place of training.
CLI_DRIVER = '''
import sys

import slowruns
import sao.cli.reproduce
from sao.cli import main

if __name__ == "__main__":
    sao.cli.reproduce.run_experiment = slowruns.slow_run
    sys.exit(main(sys.argv[1:]))
'''

#: ``run_grid`` on a local two-CPU Ray instance, exiting 130 on Ctrl-C as the CLI does.
RAY_DRIVER = '''
import sys
from pathlib import Path

import ray

import slowruns
from sao.experiments import Run, run_grid

if __name__ == "__main__":
    ray.cloudpickle.register_pickle_by_value(slowruns)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = [Run(f"x{x}", {"x": x}) for x in range(6)]
    try:
        run_grid(runs, slowruns.slow_run, Path(sys.argv[1]), launcher="ray")
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        ray.shutdown()
'''

#: How long an interrupted sweep may take to exit (a run is slower: SAO_TEST_SECONDS).
EXIT_WITHIN = 10.0


def _starts(log: Path) -> dict[str, list[float]]:
    """Run folder name → the times its run function started."""
    starts: dict[str, list[float]] = {}
    for path in log.iterdir():
        starts.setdefault(path.name.split("@")[0], []).append(float(path.read_text()))
    return starts


def _driver(tmp_path: Path, source: str) -> tuple[Path, dict[str, str]]:
    (tmp_path / "slowruns.py").write_text(SLOW_RUNS)
    (tmp_path / "driver.py").write_text(source)
    log = tmp_path / "log"
    log.mkdir()
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return tmp_path / "driver.py", {**os.environ, "PYTHONPATH": path, "SAO_TEST_LOG": str(log)}


def _slow_sweep(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    """``argv`` started with runs of 60 s, in a process group of its own."""
    return subprocess.Popen(argv, env={**env, "SAO_TEST_SECONDS": "60"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _interrupt(proc: subprocess.Popen, to_group: bool) -> tuple[int, float, str]:
    """Send SIGINT: to the whole process group, as Ctrl-C in a terminal does, or to the driver only.

    Returns ``(exit status, when it was sent, stderr)``; fails unless it exits within :data:`EXIT_WITHIN` s.
    """
    sent = time.time()
    (os.killpg if to_group else os.kill)(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {EXIT_WITHIN:g} s after Ctrl-C")
    return proc.returncode, sent, err


def _interrupt_when_two_run(argv: list[str], env: dict[str, str], log: Path, to_group: bool) -> tuple[int, float,
                                                                                                       str]:
    """Start ``argv`` with slow runs and :func:`_interrupt` it once two runs train."""
    proc = _slow_sweep(argv, env)
    try:
        deadline = time.monotonic() + 120
        while sum(map(len, _starts(log).values())) < 2:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the runs did not start"
            time.sleep(0.05)
        return _interrupt(proc, to_group)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _check_interrupted(out: Path, log: Path, sent: float) -> dict[str, list[float]]:
    """No run started after the interrupt, none finished, none left claimed by a live driver."""
    starts = _starts(log)
    assert sorted(len(times) for times in starts.values()) == [1, 1]
    assert all(t < sent for times in starts.values() for t in times), "a run started after Ctrl-C"
    folders = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")] if out.is_dir() else []
    assert not any((p / "result.json").exists() for p in folders)
    from sao.experiments import Run, RunStore

    store = RunStore(out)
    for folder in folders:
        config = json.loads((folder / "config.json").read_text())
        assert store.holder(Run(folder.name, config)) is None, f"{folder.name} is still claimed"
    return starts


@pytest.mark.parametrize("to_group", [False, True], ids=["driver", "process-group"])
def test_ctrl_c_stops_reproduce_workers_and_the_rerun_finishes(tmp_path: Path, to_group: bool) -> None:
    driver, env = _driver(tmp_path, CLI_DRIVER)
    out, log = tmp_path / "sweep", tmp_path / "log"
    argv = [sys.executable, str(driver), "reproduce", "table7", "--preset", "quick", "--workers", "2",
            "--out", str(out)]
    status, sent, err = _interrupt_when_two_run(argv, env, log, to_group)
    assert status == 130, err
    assert err.strip().splitlines()[-1] == "sao reproduce: interrupted", err
    assert "Traceback" not in err, err
    interrupted = _check_interrupted(out, log, sent)
    assert all(not (out / name / ".claim").exists() for name in interrupted)  # released, not left to go stale
    rerun = subprocess.run(argv, env={**env, "SAO_TEST_SECONDS": "0"}, capture_output=True, text=True, timeout=300,
                           check=False)
    assert rerun.returncode == 0, rerun.stderr
    starts = _starts(log)
    assert len(starts) == 8 and len([p for p in out.iterdir() if (p / "result.json").exists()]) == 8
    assert {name: len(times) for name, times in starts.items() if len(times) > 1} == dict.fromkeys(interrupted, 2)


def test_ctrl_c_while_the_workers_start_is_quiet(tmp_path: Path) -> None:
    """Ctrl-C in a terminal while the worker processes still import: exit 130, no traceback of theirs."""
    driver, env = _driver(tmp_path, CLI_DRIVER)
    proc = _slow_sweep([sys.executable, str(driver), "reproduce", "table7", "--preset", "quick", "--workers", "2",
                        "--out", str(tmp_path / "sweep")], env)
    try:
        head = ""
        while "worker processes" not in head and proc.poll() is None:
            head += proc.stderr.readline() if proc.stderr else ""
        time.sleep(0.3)  # the workers are being started: importing torch takes longer
        status, sent, err = _interrupt(proc, to_group=True)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert status == 130 and "Traceback" not in err and err.strip().splitlines()[-1] == "sao reproduce: interrupted", (
        head + err)
    assert all(t < sent for times in _starts(tmp_path / "log").values() for t in times)


def test_ctrl_c_stops_a_ray_grid_and_the_rerun_finishes(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    driver, env = _driver(tmp_path, RAY_DRIVER)
    out, log = tmp_path / "grid", tmp_path / "log"
    status, sent, err = _interrupt_when_two_run([sys.executable, str(driver), str(out)], env, log, to_group=False)
    assert status == 130, err
    interrupted = _check_interrupted(out, log, sent)
    rerun = subprocess.run([sys.executable, str(driver), str(out)], env={**env, "SAO_TEST_SECONDS": "0"},
                           capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    starts = _starts(log)
    assert len(starts) == 6 and all((p / "result.json").exists() for p in out.iterdir() if p.is_dir())
    assert {name for name, times in starts.items() if len(times) > 1} == set(interrupted)
