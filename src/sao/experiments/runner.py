"""Run directories and grids: hashed configs, atomic results, resume, skip what is finished.

Every run of an experiment grid is a JSON-able config. Its directory is named by a readable
prefix and the first 12 hex digits of the SHA-256 of the canonical config JSON, and holds

- ``config.json`` — the resolved config, written (atomically) before the run starts;
- whatever the run writes while it works (``metrics.jsonl``, ``checkpoint.pt``, ...);
- ``result.json`` — written atomically as the very last step, with the config hash inside.

A run is *finished* exactly when ``result.json`` parses and carries the directory's hash;
anything else (no result, a truncated or foreign result) is *unfinished*: it is run again —
resuming from its own checkpoint if the run function supports that — and never reported.
Re-running a grid therefore skips finished runs and resumes the rest; nothing is counted twice.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sao._atomic import atomic_write_json

__all__ = [
    "Run",
    "RunFunction",
    "config_hash",
    "finished_results",
    "is_finished",
    "read_result",
    "run_grid",
    "run_one",
]

RunFunction = Callable[[dict[str, Any], Path], dict[str, Any]]


def config_hash(config: dict[str, Any]) -> str:
    """First 12 hex digits of the SHA-256 of the canonical (sorted, compact) JSON of ``config``."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Run:
    """One run of a grid: a readable ``label`` (part of the directory name) and its ``config``."""

    label: str
    config: dict[str, Any]

    @property
    def hash(self) -> str:
        return config_hash(self.config)

    def directory(self, out: Path) -> Path:
        return Path(out) / f"{self.label}-{self.hash}"


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result if it is finished (valid ``result.json`` with this directory's hash), else ``None``."""
    try:
        result = json.loads((Path(run_dir) / "result.json").read_text())
        config = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("config_hash") != config_hash(config):
        return None
    return result


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run (see the module docstring)."""
    return read_result(run_dir) is not None


def run_one(run: Run, run_fn: RunFunction, out: Path) -> dict[str, Any]:
    """Run ``run`` unless it is finished; return its result (with ``config_hash`` and ``run_dir``)."""
    run_dir = run.directory(out)
    done = read_result(run_dir)
    if done is not None:
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", run.config)
    result = dict(run_fn(dict(run.config), run_dir))
    result.update(config_hash=run.hash, run_dir=str(run_dir))
    atomic_write_json(run_dir / "result.json", result)
    return result


def _init_worker(threads: int) -> None:
    """Share the cores between workers: oversubscribed intra-op threads make steps 10-100x slower."""
    import torch

    torch.set_num_threads(threads)


def _run_in_worker(run: Run, run_fn: RunFunction, out: Path) -> dict[str, Any]:
    return run_one(run, run_fn, out)


def run_grid(runs: Sequence[Run], run_fn: RunFunction, out: Path, workers: int = 1,
             log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> list[dict]:
    """Run every unfinished run of ``runs`` (``workers`` processes at a time) and return all results.

    Finished runs are skipped (their stored result is returned). A run that raises is logged
    with its traceback and left unfinished; the others go on, and a ``RuntimeError`` naming the
    failed runs is raised at the end. ``run_fn`` must be a module-level function when
    ``workers > 1`` (it is sent to worker processes, started with ``spawn``); each worker gets
    ``cpu_count // workers`` intra-op threads.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    _check_unique(runs)
    todo = [r for r in runs if not is_finished(r.directory(out))]
    log(f"{len(runs)} runs: {len(runs) - len(todo)} finished, {len(todo)} to run with {workers} worker(s)")
    failed: list[str] = []
    if workers == 1:
        for i, run in enumerate(todo, 1):
            try:
                run_one(run, run_fn, out)
                log(f"[{i}/{len(todo)}] done {run.label}")
            except Exception:
                failed.append(run.label)
                log(f"[{i}/{len(todo)}] FAILED {run.label}\n{traceback.format_exc()}")
    else:
        context = multiprocessing.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(_run_in_worker, run, run_fn, out): run for run in todo}
            for i, future in enumerate(as_completed(futures), 1):
                run = futures[future]
                try:
                    future.result()
                    log(f"[{i}/{len(todo)}] done {run.label}")
                except Exception as err:
                    failed.append(run.label)
                    log(f"[{i}/{len(todo)}] FAILED {run.label}: {err!r}")
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed and stay unfinished (rerun to retry): {', '.join(failed)}")
    return [read_result(r.directory(out)) for r in runs]


def _check_unique(runs: Iterable[Run]) -> None:
    seen: dict[str, str] = {}
    for run in runs:
        if run.hash in seen:
            raise ValueError(f"runs {seen[run.hash]!r} and {run.label!r} have the same config")
        seen[run.hash] = run.label


def finished_results(out: Path) -> list[dict[str, Any]]:
    """Results of every finished run below ``out`` with its config under ``"config"``; unfinished ones are skipped."""
    results = []
    for run_dir in sorted(p for p in Path(out).iterdir() if p.is_dir()) if Path(out).is_dir() else []:
        result = read_result(run_dir)
        if result is not None:
            results.append({**result, "config": json.loads((run_dir / "config.json").read_text())})
    return results
