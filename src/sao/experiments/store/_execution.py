"""Running one run: skip it when finished, else lease it, run the run function under the lease's guard, write
its result — and stop the moment the lease may be lost."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from sao.experiments.store._claim import Owner, RunClaimed
from sao.experiments.store._folders import Run, reported, stored, write_result
from sao.experiments.store._index import RunStore
from sao.experiments.store._lease import Guard, Lease, LeaseLost, Log, to_stderr
from sao.experiments.store._ranks import on_rank_0, shared_guard

#: ``run_fn(config, run_dir, guard) -> result``: trains the run (``config``: the :class:`Run`'s config as given,
#: typed or a dict) in ``run_dir``, calling ``guard()`` before each
#: file it writes (``guard`` raises :class:`LeaseLost` once the run may no longer be this driver's; in a
#: process group every rank must call it at the same points). ``result`` is JSON-serialisable.
RunFunction = Callable[[Any, Path, Guard], dict[str, Any]]

#: What :func:`attempt` found: the run ``"trained"`` here, ``"finished"`` before, or the live driver holding it.
Attempt = Literal["trained", "finished"] | Owner


def run_one(run: Run, run_fn: RunFunction, out: Path | RunStore, *, log: Log = to_stderr) -> dict[str, Any]:
    """Train ``run`` unless it is finished; return its result (with ``config_hash`` and ``run_dir``).

    ``out`` is the sweep folder or its :class:`RunStore`. A finished run's stored result is
    returned at once. Otherwise the run is leased, its ``config.json`` written (a folder found by
    :meth:`RunStore.directory` keeps its own), ``run_fn(dict(config), run_dir, guard)`` called, its
    result written atomically to ``result.json`` with the hash of the folder's ``config.json``, and
    the lease released, also when ``run_fn`` raises. Every write, the run function's and the
    store's, is preceded by ``guard()``. In a ``torch.distributed`` process group only rank 0 leases
    and writes; it broadcasts its decisions, and every rank runs ``run_fn``.

    Raises:
        RunClaimed: if another live driver is training the run (on every rank).
        LeaseLost: if this driver's lease expired or was taken over while it trained (on every rank):
            it stopped before its next write, and wrote no result.
    """
    return _run(run, run_fn, out if isinstance(out, RunStore) else RunStore(out), log)[0]


def attempt(run: Run, run_fn: RunFunction, store: RunStore, log: Log = to_stderr) -> Attempt:
    """:func:`run_one`, telling what happened: ``"trained"`` here, ``"finished"`` (nothing done, or the run was
    finished by the driver that took it over), or the :class:`Owner` of the claim when another live driver is
    training the run (also when it took the run over from this one).

    Raises:
        LeaseLost: if this driver's lease expired and no other driver holds the run.
    """
    try:
        return "trained" if _run(run, run_fn, store, log)[1] else "finished"
    except RunClaimed as err:
        return err.holder
    except LeaseLost:
        if store.result(run) is not None:
            return "finished"
        holder = store.holder(run)
        if holder is None:
            raise
        return holder


def _run(run: Run, run_fn: RunFunction, store: RunStore, log: Log) -> tuple[dict[str, Any], bool]:
    """:func:`run_one`'s work: ``(result, whether it was trained here)``.

    A run that fails before writing anything but its ``config.json`` leaves no folder behind.
    """
    started: list[Path] = []
    try:
        return _run_leased(run, run_fn, store, log, started)
    except BaseException:
        for run_dir in started:  # the lease is released by now; a claim of another driver keeps the folder
            if [p.name for p in run_dir.iterdir()] == ["config.json"]:
                (run_dir / "config.json").unlink()
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
        raise


def _decide(run: Run, store: RunStore, stack: contextlib.ExitStack, log: Log, leases: list[Lease]) -> tuple:
    """Rank 0's lease and decision: ``("done", result)``, ``("claimed", (dir, holder))`` or ``("run", (dir, hash))``."""
    done = store.result(run)
    if done is not None:
        log(f"skipped {run.label}: already finished")
        return "done", done
    try:
        lease = stack.enter_context(store.claim(run, log))
    except RunClaimed as err:
        return "claimed", (err.run_dir, err.holder)
    done = store.result(run)
    if done is not None:
        log(f"skipped {run.label}: finished by another driver meanwhile")
        return "done", done
    leases.append(lease)
    return "run", (lease.run_dir, store.prepare(run, lease.run_dir, lease.check))


def _fresh(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds nothing but the ``config.json`` just written (and its claim)."""
    return [p.name for p in run_dir.iterdir() if not p.name.startswith(".")] == ["config.json"]


def _run_leased(run: Run, run_fn: RunFunction, store: RunStore, log: Log,
                started: list[Path]) -> tuple[dict[str, Any], bool]:
    with contextlib.ExitStack() as stack:
        leases: list[Lease] = []  # rank 0's, when it trains the run
        kind, value = on_rank_0(lambda: _decide(run, store, stack, log, leases),
                                failed=("error", f"rank 0 failed to claim {run.label}"))
        if kind == "error":
            raise RuntimeError(value)
        if kind == "claimed":
            raise RunClaimed(*value)
        if kind == "done":
            return value, False
        run_dir, folder_hash = value
        lease = leases[0] if leases else None
        if lease is not None and _fresh(run_dir):
            started.append(run_dir)  # removed again if the run fails before writing anything
        guard = shared_guard(lease.check if lease is not None else None)
        try:
            config = dict(run.config) if isinstance(run.config, dict) else run.config  # a dict: the caller's stays
            result = stored(run_fn(config, run_dir, guard), folder_hash)
            guard()
        except LeaseLost as err:
            if lease is not None:
                log(f"stopped {run.label}: {err}")
            raise
        if lease is not None:
            write_result(run_dir, result)
        return reported(result, run_dir), True
