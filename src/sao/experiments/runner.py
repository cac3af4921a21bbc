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
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sao._atomic import atomic_write_json

if TYPE_CHECKING:
    from sao.experiments.launchers import LaunchOptions

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
    """Run ``run`` unless it is finished; return its result (with ``config_hash`` and ``run_dir``).

    In a data-parallel process group (``torchrun``) every rank runs ``run_fn`` and only rank 0
    writes ``config.json`` and ``result.json``.
    """
    from sao.training.distributed import barrier, is_main_process

    run_dir = run.directory(out)
    done = read_result(run_dir)
    barrier()  # every rank has decided before rank 0 may write a result
    if done is not None:
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        atomic_write_json(run_dir / "config.json", run.config)
    result = dict(run_fn(dict(run.config), run_dir))
    result.update(config_hash=run.hash, run_dir=str(run_dir))
    if is_main_process():
        atomic_write_json(run_dir / "result.json", result)
    return result


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_grid(runs: Sequence[Run], run_fn: RunFunction, out: Path, workers: int = 1,
             log: Callable[[str], None] = _stderr, launcher: str = "local",
             options: LaunchOptions | None = None) -> list[dict]:
    """Run every unfinished run of ``runs`` with ``launcher`` and return all results, in order.

    Finished runs are skipped (their stored result is returned). A run that fails is logged and
    left unfinished; the others go on, and a ``RuntimeError`` naming the failed runs is raised at
    the end. ``launcher`` names an entry of :data:`sao.experiments.launchers.LAUNCHERS` (``"local"``:
    ``workers`` processes on this machine, ``run_fn`` module-level when ``workers > 1``; ``"ray"``:
    one Ray task per run); ``options`` (a :class:`~sao.experiments.launchers.LaunchOptions`) holds
    its settings, and ``workers`` is short for ``options=LaunchOptions(workers=workers)``.
    Unknown launchers and invalid options raise ``ValueError`` before anything runs.
    """
    from sao.experiments.launchers import LAUNCHERS, LaunchOptions

    launch = LAUNCHERS.get(launcher)
    if options is None:
        options = LaunchOptions(workers=workers)
    elif workers not in (1, options.workers):
        raise ValueError(f"workers={workers} disagrees with options.workers={options.workers}; give one of them")
    out = Path(out)
    _check_unique(runs)
    todo = [r for r in runs if not is_finished(r.directory(out))]
    log(f"{len(runs)} runs: {len(runs) - len(todo)} finished, {len(todo)} to run (launcher {launcher})")
    failed = launch(todo, run_fn, out, options, log) if todo else []
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
