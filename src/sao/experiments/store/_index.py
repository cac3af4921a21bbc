"""The sweep folder: :class:`RunStore` finds each run's folder, tells finished from unfinished and damaged,
and leases runs to this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sao._atomic import atomic_write_json
from sao._validation import as_real
from sao.experiments.store._claim import Owner, StaleJudge, current_owner, exists
from sao.experiments.store._folders import Folder, Identity, Run, RunStatus, as_it_is, config_hash, inspect
from sao.experiments.store._lease import Guard, Lease, Log, acquire, to_stderr


class RunStore:
    """One sweep folder: finds each run's folder, tells finished from unfinished and damaged, claims runs.

    Results are returned with the folder they were read from under ``"run_dir"`` (``result.json``
    itself names no path, so a copied or moved sweep folder reports its own folders).

    Args:
        root: the sweep folder (need not exist yet).
        identity: maps a config read from a ``config.json`` (maybe written by an older version in
            an older format) to its canonical form; two configs are the same run when the
            :func:`config_hash` of their canonical forms agree. A ``ValueError`` it raises marks the
            folder damaged. Default: a config is canonical as it is. Must be picklable (module-level)
            for the process and Ray launchers.
        stale_after: seconds without a heartbeat after which another driver takes a claim over (see
            docs/run-store.md; over NFS keep it above ``heartbeat`` plus the attribute cache time, 60 s).
            A lease held here is valid for ``(stale_after + heartbeat) / 2`` s after each heartbeat.
        heartbeat: seconds between two heartbeats of a claim held here.

    Raises:
        ValueError: if ``stale_after`` or ``heartbeat`` is not positive, or ``stale_after <= heartbeat``.
    """

    def __init__(self, root: Path, *, identity: Identity | None = None, stale_after: float = 120.0,
                 heartbeat: float = 10.0) -> None:
        self.root = Path(root).absolute()
        self.identity = identity
        self.heartbeat = as_real(heartbeat, "heartbeat", low=0, low_open=True)
        self.stale_after = as_real(stale_after, "stale_after", low=self.heartbeat, low_open=True)
        self._index: dict[str, str] | None = None  # built on first use
        self._judge = StaleJudge(self.stale_after)  # its verdicts travel with the store to worker processes

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # what the folders hold

    def key(self, run: Run) -> str:
        """The run's identity: :func:`config_hash` of its canonical config."""
        return config_hash(self._canonical(run.stored))

    def _canonical(self, config: dict[str, Any]) -> dict[str, Any]:
        return (self.identity or as_it_is)(config)

    def _folders(self) -> list[Folder]:
        if not self.root.is_dir():
            return []
        paths = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        return [inspect(p, self._canonical) for p in paths]

    def _find(self, key: str) -> str | None:
        if self._index is None:  # canonical hash -> folder name: a finished folder wins over an unfinished twin
            self._index, done = {}, set()
            for folder in self._folders():
                if folder.canonical is None or (found := config_hash(folder.canonical)) in done:
                    continue
                if folder.result is not None or found not in self._index:
                    self._index[found] = folder.path.name
                if folder.result is not None:
                    done.add(found)
        return self._index.get(key)

    def directory(self, run: Run) -> Path:
        """The run's folder: the existing one with the same canonical config, else ``root/<label>-<hash>``.

        Existing folders are indexed on first use; folders made later by other drivers of this
        version carry the new name and are found by it.
        """
        name = self._find(self.key(run))
        return self.root / name if name is not None else run.directory(self.root)

    def status(self, run: Run) -> RunStatus:
        """``FINISHED``, ``UNFINISHED`` (also: no folder yet) or ``DAMAGED`` (unreadable or foreign
        ``result.json``, unreadable ``config.json``: such a run is trained again, its result replaced)."""
        return inspect(self.directory(run), self._canonical).status

    def result(self, run: Run) -> dict[str, Any] | None:
        """The run's stored result, with its folder under ``"run_dir"``, if it is finished; else ``None``."""
        return inspect(self.directory(run), self._canonical).result

    def finished(self) -> list[dict[str, Any]]:
        """Every finished run's result with its folder under ``"run_dir"`` and its canonical config under
        ``"config"`` (one per canonical config)."""
        seen: set[str] = set()
        results = []
        for folder in self._folders():
            if folder.result is not None and folder.canonical is not None:
                key = config_hash(folder.canonical)
                if key not in seen:
                    seen.add(key)
                    results.append({**folder.result, "config": folder.canonical})
        return results

    def damaged(self) -> list[tuple[Path, str]]:
        """``(folder, what is wrong)`` for each damaged run folder (see :meth:`status`)."""
        return [(f.path, f.problem) for f in self._folders() if f.result is None and f.problem is not None]

    # claims

    def holder(self, run: Run) -> Owner | None:
        """The live driver holding the run's claim, or ``None`` when it is free or the claim is stale."""
        run_dir = self.directory(run)
        owner = current_owner(run_dir)
        live = owner is not None and self._judge.reason(run_dir, owner) is None and exists(run_dir, owner)
        return owner if live else None

    def claim(self, run: Run, log: Log = to_stderr) -> Lease:
        """Lease the run to this process (its folder is created), taking over a stale claim.

        Raises:
            RunClaimed: if another live driver holds the run.
        """
        return acquire(self.directory(run), self._judge, self.heartbeat, log)

    def prepare(self, run: Run, run_dir: Path, guard: Guard) -> str:
        """The hash of the folder's ``config.json``, written from ``run`` (after ``guard()``) unless the folder
        holds the run's config already.

        Raises:
            ValueError: if the folder holds the config of another run.
            LeaseLost: from ``guard``.
        """
        folder = inspect(run_dir, self._canonical)
        if folder.canonical is None:
            guard()
            atomic_write_json(run_dir / "config.json", run.stored)
            return config_hash(run.stored)
        if config_hash(folder.canonical) != self.key(run):
            raise ValueError(f"{run_dir} holds the config.json of another run; move it away")
        return config_hash(folder.config or run.stored)


def finished_results(out: Path) -> list[dict[str, Any]]:
    """Results of every finished run below ``out`` with its folder under ``"run_dir"`` and its config under
    ``"config"``; others are skipped."""
    return RunStore(out).finished()
