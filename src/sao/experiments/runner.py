"""Grids of runs: train every unfinished run of a sweep folder once, whoever else is training it.

The run folders themselves (hashed names, ``config.json``, atomic ``result.json``, claims) are
:mod:`sao.experiments.store`; the engines that execute runs are :mod:`sao.experiments.launchers`.
:func:`run_grid` ties them: it skips finished runs, launches the rest, waits for the runs another
driver is training, and raises for the runs that failed. Re-running a grid therefore skips
finished runs and resumes the rest; nothing is trained twice, also with several drivers at once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sao.experiments.launchers import LAUNCHERS, LaunchOptions
from sao.experiments.store import Owner, Run, RunFunction, RunStore

__all__ = ["FailedRuns", "run_grid"]

Log = Callable[[str], None]


class FailedRuns(RuntimeError):
    """Raised by :func:`run_grid` after the other runs went on: the runs ``labels`` failed and stay unfinished."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        super().__init__(f"{len(self.labels)} run(s) failed and stay unfinished (rerun to retry): "
                         f"{', '.join(self.labels)}")

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:
        return type(self), (self.labels,)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_grid(runs: Sequence[Run], run_fn: RunFunction, out: Path, workers: int = 1,
             log: Log = _stderr, launcher: str = "local", options: LaunchOptions | None = None, *,
             wait: bool = True, poll: float = 10.0, store: RunStore | None = None) -> list[dict | None]:
    """Run every unfinished run of ``runs`` with ``launcher`` and return all results, in order.

    Finished runs are skipped (their stored result is returned). A run that fails is logged and
    left unfinished; the others go on, and a ``RuntimeError`` naming the failed runs is raised at
    the end. ``launcher`` names an entry of :data:`sao.experiments.launchers.LAUNCHERS` (``"local"``:
    ``workers`` processes on this machine, ``run_fn`` module-level when ``workers > 1``; ``"ray"``:
    one Ray task per run); ``options`` (a :class:`~sao.experiments.launchers.LaunchOptions`) holds
    its settings, and ``workers`` is short for ``options=LaunchOptions(workers=workers)``.

    A run another live driver is training (its claim, see :class:`~sao.experiments.store.RunStore`)
    is not trained here: with ``wait=True`` the grid checks every ``poll`` seconds until the other
    driver has finished it, or until its claim is released unfinished or goes stale, and then trains
    it itself; with ``wait=False`` it is left to the other driver and its entry is ``None``.
    ``store`` is the :class:`~sao.experiments.store.RunStore` of ``out`` (default: a plain one).

    Raises:
        ValueError: unknown launcher, invalid options, two runs with the same config, or a
            ``store`` of another folder — before anything runs.
        OSError: ``out`` cannot be created (a file on its path, no permission) — before anything runs.
        FailedRuns: (a ``RuntimeError``) at the end, if runs failed; it names them.
    """
    launch = LAUNCHERS.get(launcher)
    options = _options(workers, options)
    store = _store(out, store)
    _check_unique(runs, store)
    todo = [r for r in runs if store.result(r) is None]
    if todo:
        store.root.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made fails here, not in each run
    log(f"{len(runs)} runs: {len(runs) - len(todo)} finished, {len(todo)} to run (launcher {launcher})")
    failed: list[str] = []
    while todo:
        report = launch(todo, run_fn, store, options, log)
        failed += report.failed
        todo = [r for r in todo if r.label in report.claimed]
        if todo:
            log(_elsewhere(report.claimed, wait, poll))
        todo = _wait_for_others(todo, report.claimed, store, poll, log) if wait else []
    if failed:
        raise FailedRuns(failed)
    return [store.result(r) for r in runs]


def _options(workers: int, options: LaunchOptions | None) -> LaunchOptions:
    if options is None:
        return LaunchOptions(workers=workers)
    if workers not in (1, options.workers):
        raise ValueError(f"workers={workers} disagrees with options.workers={options.workers}; give one of them")
    return options


def _store(out: Path, store: RunStore | None) -> RunStore:
    if store is None:
        return RunStore(out)
    if Path(out).absolute() != store.root:
        raise ValueError(f"the store is of {store.root}, not of out={out}")
    return store


def _check_unique(runs: Sequence[Run], store: RunStore) -> None:
    seen: dict[str, str] = {}
    for run in runs:
        key = store.key(run)
        if key in seen:
            raise ValueError(f"runs {seen[key]!r} and {run.label!r} have the same config")
        seen[key] = run.label


def _elsewhere(claimed: dict[str, Owner], wait: bool, poll: float) -> str:
    drivers = ", ".join(sorted({str(owner) for owner in claimed.values()}))
    then = (f"waiting for them (checking every {poll:g} s)" if wait
            else "not waiting: their results are left to the other driver (None here)")
    return f"{len(claimed)} run(s) are being trained by another driver ({drivers}); {then}"


def _wait_for_others(waiting: list[Run], holders: dict[str, Owner], store: RunStore, poll: float,
                     log: Log) -> list[Run]:
    """Poll until each of ``waiting`` is finished elsewhere or free to train here; return the latter."""
    while waiting:
        time.sleep(poll)
        free = [r for r in waiting if store.holder(r) is None]  # before the results: a result precedes a release
        for run in [r for r in waiting if store.result(r) is not None]:
            log(f"{run.label} was finished by another driver ({holders[run.label]}); not trained here")
            waiting.remove(run)
        if any(r in waiting for r in free):
            break
    return waiting
