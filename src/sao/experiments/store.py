"""The run store: a sweep folder of run folders — what is finished, what is damaged, who trains what.

A sweep folder holds one sub-folder per run, named ``<label>-<hash>`` (:func:`config_hash` of the
config), with

- ``config.json`` — the resolved config, written (atomically) before the run function starts;
- whatever the run writes while it works (``metrics.jsonl``, ``checkpoint.pt``, ...);
- ``result.json`` — written atomically as the very last step, carrying the hash of ``config.json``;
- ``.claim/`` — only while a driver trains the run: who it is, and its heartbeat.

A run is *finished* exactly when ``result.json`` parses and carries the hash of the folder's
``config.json``; an unfinished run is resumed in its own folder. Before a driver trains a run it
*claims* it, so several drivers sharing a sweep folder (two ``sao reproduce`` on one machine, or
on machines sharing it over NFS) train each run once; a claim whose driver died goes *stale* and
is taken over. The claim protocol, and why it is safe on network file systems, is described in
``docs/run-store.md``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from sao._atomic import atomic_write_json
from sao._validation import as_real
from sao.training.distributed import broadcast_object, is_main_process

__all__ = [
    "Attempt",
    "Claim",
    "Owner",
    "Run",
    "RunClaimed",
    "RunFunction",
    "RunStatus",
    "RunStore",
    "attempt",
    "config_hash",
    "finished_results",
    "is_finished",
    "read_result",
    "run_one",
]

RunFunction = Callable[[dict[str, Any], Path], dict[str, Any]]
Identity = Callable[[dict[str, Any]], dict[str, Any]]
Log = Callable[[str], None]

CLAIM = ".claim"
_ATTEMPTS = 20  # claim attempts while the claim changes hands under our eyes


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
        """The folder a new run gets in sweep folder ``out`` (:meth:`RunStore.directory` also finds older ones)."""
        return Path(out) / f"{self.label}-{self.hash}"


class RunStatus(str, Enum):
    """State of a run folder (see :meth:`RunStore.status`)."""

    FINISHED = "finished"
    UNFINISHED = "unfinished"
    DAMAGED = "damaged"


# ------------------------------------------------------------------------------------------ folders


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


@dataclass(frozen=True)
class _Folder:
    """What one run folder holds: its config (as read and in canonical form), result, or what is wrong."""

    path: Path
    config: dict[str, Any] | None = None
    canonical: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def status(self) -> RunStatus:
        if self.result is not None:
            return RunStatus.FINISHED
        return RunStatus.UNFINISHED if self.problem is None else RunStatus.DAMAGED


def _read_config(path: Path, identity: Identity) -> tuple[dict | None, dict | None, str | None]:
    """``(config, identity(config), problem)`` of the folder ``path``; a missing config.json is no problem."""
    try:
        config = _read_json(path / "config.json")
    except FileNotFoundError:
        return None, None, None
    except (OSError, ValueError) as err:
        return None, None, f"config.json unreadable ({err})"
    if not isinstance(config, dict):
        return None, None, "config.json is not a JSON object"
    try:
        return config, identity(config), None
    except ValueError as err:
        return config, None, f"config.json not understood ({err})"


def _read_result(path: Path, config: dict | None) -> tuple[dict | None, str | None]:
    """``(result, problem)``: the result when it is finished for ``config``, else what is wrong (if anything)."""
    try:
        result = _read_json(path / "result.json")
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as err:
        return None, f"result.json unreadable ({err})"
    if not isinstance(result, dict):
        return None, "result.json is not a JSON object"
    if config is None:
        return None, "result.json without a readable config.json"
    if result.get("config_hash") != config_hash(config):
        return None, f"result.json is for another config (hash {result.get('config_hash')!r})"
    return result, None


def _inspect(path: Path, identity: Identity) -> _Folder:
    config, canonical, problem = _read_config(path, identity)
    result, result_problem = _read_result(path, config)
    if problem is not None:  # a result whose config is not understood cannot be reported
        result = None
    return _Folder(path, config, canonical, result, problem or result_problem)


def _as_it_is(config: dict[str, Any]) -> dict[str, Any]:
    return config


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result if it is finished (valid ``result.json`` with its config's hash), else ``None``."""
    return _inspect(Path(run_dir), _as_it_is).result


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run."""
    return read_result(run_dir) is not None


# ------------------------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: ``host``, ``pid`` and the PID namespace it lives in, a random ``token``, its start time."""

    host: str
    pid: int
    token: str
    started: float
    pidns: str = ""

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"

    @classmethod
    def me(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex, time.time(), _pid_namespace())

    @classmethod
    def read(cls, claim_dir: Path) -> Owner:
        """The owner recorded in ``claim_dir`` (``.claim/<token>``); an unreadable record is an unknown owner."""
        try:
            data = _read_json(claim_dir / "owner.json")
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known and k != "token"}, token=claim_dir.name)
        except (OSError, ValueError, TypeError):
            return cls("?", 0, claim_dir.name, 0.0)

    def here(self) -> bool:
        """Whether this owner's PID can be checked from this process (same host and PID namespace)."""
        return self.host == socket.gethostname() and self.pidns == _pid_namespace()


def _pid_namespace() -> str:
    with contextlib.suppress(OSError):
        return os.readlink("/proc/self/ns/pid")
    return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def _drop_claim(claim_dir: Path) -> bool:
    """Rename ``.claim/<token>`` away (one atomic step, which fails when it is gone), then delete it at leisure.

    Returns whether this call removed it.
    """
    grave = claim_dir.parent.parent / f"{CLAIM}-gone-{claim_dir.name}"
    try:
        os.rename(claim_dir, grave)
    except OSError:
        return False
    shutil.rmtree(grave, ignore_errors=True)
    with contextlib.suppress(OSError):  # fails when another driver has claimed meanwhile: then it stays
        os.rmdir(claim_dir.parent)
    return True


def _try_claim(run_dir: Path, me: Owner) -> bool:
    """Build ``.claim-new-<token>/<token>/{owner.json,heartbeat}`` and rename it to ``.claim`` (wins or not)."""
    tmp = run_dir / f"{CLAIM}-new-{me.token}"
    inner = tmp / me.token
    inner.mkdir(parents=True)
    atomic_write_json(inner / "owner.json", {k: v for k, v in asdict(me).items() if k != "token"})
    (inner / "heartbeat").touch()
    try:
        os.rename(tmp, run_dir / CLAIM)  # onto a missing or empty .claim only
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    shutil.rmtree(tmp, ignore_errors=True)
    return (run_dir / CLAIM / me.token).is_dir()  # also right when a retried NFS rename reported a failure


def _current_owner(run_dir: Path) -> Owner | None:
    """The holder of ``run_dir``'s claim, or ``None`` when it has none."""
    try:
        tokens = sorted(os.listdir(run_dir / CLAIM))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Owner.read(run_dir / CLAIM / tokens[0]) if tokens else None


def _exists(run_dir: Path, owner: Owner) -> bool:
    """Whether ``owner``'s claim is still there (it may have been released or taken over since it was read)."""
    return (run_dir / CLAIM / owner.token).is_dir()


def _beat(claim_dir: Path) -> int | None:
    """mtime (ns) of the claim's heartbeat (opened, so that NFS revalidates it), else of the claim; ``None`` if gone."""
    try:
        with open(claim_dir / "heartbeat", "rb") as handle:
            return os.fstat(handle.fileno()).st_mtime_ns
    except FileNotFoundError:
        pass
    try:
        return claim_dir.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _fs_now(directory: Path) -> int | None:
    """The file system's clock (ns): the mtime of a folder created for the purpose; ``None`` if none can be."""
    probe = directory / f".clock-{uuid.uuid4().hex}"
    try:
        probe.mkdir()
    except OSError:
        return None
    try:
        return probe.stat().st_mtime_ns
    finally:
        probe.rmdir()


class RunClaimed(RuntimeError):
    """The run in ``run_dir`` is being trained by another live driver, ``holder``; nothing was done here."""

    def __init__(self, run_dir: Path, holder: Owner) -> None:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.started))
        super().__init__(f"{Path(run_dir).name} is being trained by another driver ({holder}, since {since})")
        self.run_dir, self.holder = Path(run_dir), holder

    def __reduce__(self) -> tuple[type, tuple[Path, Owner]]:
        return type(self), (self.run_dir, self.holder)


class Claim:
    """This process's claim on a run folder: keeps its heartbeat fresh until :meth:`release` (or ``with``'s end).

    Made by :meth:`RunStore.claim`. :meth:`held` says whether it is still ours: a claim can be lost
    when this process stalled longer than ``stale_after`` and another driver took it over.
    """

    def __init__(self, run_dir: Path, owner: Owner, heartbeat: float, log: Log) -> None:
        self.run_dir, self.owner, self._log = Path(run_dir), owner, log
        self._path = self.run_dir / CLAIM / owner.token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, args=(heartbeat,), daemon=True,
                                        name=f"sao-claim-{self.run_dir.name}")
        self._thread.start()

    def held(self) -> bool:
        """Refresh the heartbeat; ``False`` once another driver has taken the claim over."""
        try:
            os.utime(self._path / "heartbeat")
        except FileNotFoundError:
            return False
        except OSError:  # a network file system's hiccup: the next beat tries again
            pass
        return True

    def _keep_alive(self, every: float) -> None:
        while not self._stop.wait(every):
            if not self.held():
                self._log(f"WARNING: lost the claim on {self.run_dir.name}: another driver took it over")
                return

    def release(self) -> None:
        """Stop the heartbeat and remove the claim (idempotent; a claim taken over is left to its new holder)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        _drop_claim(self._path)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# -------------------------------------------------------------------------------------------- store


class RunStore:
    """One sweep folder: finds each run's folder, tells finished from unfinished and damaged, claims runs.

    Args:
        root: the sweep folder (need not exist yet).
        identity: maps a config read from a ``config.json`` (maybe written by an older version in
            an older format) to its canonical form; two configs are the same run when the
            :func:`config_hash` of their canonical forms agree. A ``ValueError`` it raises marks the
            folder damaged. Default: a config is canonical as it is. Must be picklable (module-level)
            for the process and Ray launchers.
        stale_after: seconds without a heartbeat after which a claim is stale (see
            docs/run-store.md; over NFS keep it above ``heartbeat`` plus the attribute cache time, 60 s).
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
        self._seen: dict[str, tuple[int, float]] = {}  # claim token -> (heartbeat mtime, when first seen so)
        self._stale: dict[str, str] = {}  # claim token -> why it is stale (travels with the store)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_seen": {}}  # monotonic times mean nothing on another host

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # what the folders hold

    def key(self, run: Run) -> str:
        """The run's identity: :func:`config_hash` of its canonical config."""
        return config_hash(self._canonical(run.config))

    def _canonical(self, config: dict[str, Any]) -> dict[str, Any]:
        return (self.identity or _as_it_is)(config)

    def _folders(self) -> list[_Folder]:
        if not self.root.is_dir():
            return []
        paths = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        return [_inspect(p, self._canonical) for p in paths]

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
        return _inspect(self.directory(run), self._canonical).status

    def result(self, run: Run) -> dict[str, Any] | None:
        """The run's stored result if it is finished, else ``None``."""
        return _inspect(self.directory(run), self._canonical).result

    def finished(self) -> list[dict[str, Any]]:
        """Every finished run's result with its canonical config under ``"config"`` (one per canonical config)."""
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
        owner = _current_owner(run_dir)
        live = owner is not None and self._stale_reason(run_dir, owner) is None and _exists(run_dir, owner)
        return owner if live else None

    def claim(self, run: Run, log: Log = _stderr) -> Claim:
        """Claim the run for this process (its folder is created), taking over a stale claim.

        Raises:
            RunClaimed: if another live driver holds the run.
        """
        run_dir = self.directory(run)
        run_dir.mkdir(parents=True, exist_ok=True)
        me = Owner.me()
        for _ in range(_ATTEMPTS):
            if _try_claim(run_dir, me):  # the routine case is not logged; a takeover is, below
                return Claim(run_dir, me, self.heartbeat, log)
            owner = _current_owner(run_dir)
            if owner is None:  # released meanwhile
                continue
            why = self._stale_reason(run_dir, owner)
            if why is None and _exists(run_dir, owner):
                raise RunClaimed(run_dir, owner)
            if why is not None and _drop_claim(run_dir / CLAIM / owner.token):
                log(f"took over {run_dir.name} from {owner}: its claim is stale ({why})")
        raise RuntimeError(f"could not claim {run_dir}: its claim changed hands {_ATTEMPTS} times")

    def _stale_reason(self, run_dir: Path, owner: Owner) -> str | None:
        """Why ``owner``'s claim on ``run_dir`` is stale, or ``None`` while it is live (or gone)."""
        if owner.token in self._stale:
            return self._stale[owner.token]
        if owner.here() and not _alive(owner.pid):
            why: str | None = f"process {owner.pid} is gone"
        else:
            beat = _beat(run_dir / CLAIM / owner.token)
            why = None if beat is None else self._silent_for(run_dir, owner.token, beat)
        if why is not None:
            self._stale[owner.token] = why
        return why

    def _silent_for(self, run_dir: Path, token: str, beat: int) -> str | None:
        """A heartbeat that has not moved for ``stale_after`` s: on our clock, or by the file system's."""
        now = time.monotonic()
        last, since = self._seen.get(token, (None, now))
        if beat != last:
            self._seen[token] = (beat, now)
            since = now
        if now - since >= self.stale_after:
            return f"no heartbeat for {now - since:.1f} s"
        fs_now = _fs_now(run_dir)
        age = 0.0 if fs_now is None else (fs_now - beat) / 1e9
        return f"last heartbeat {age:.1f} s ago by the file system's clock" if age >= self.stale_after else None

    # running

    def _prepare(self, run: Run, run_dir: Path) -> dict[str, Any]:
        """The folder's config, written from ``run`` unless the folder holds the run's config already."""
        folder = _inspect(run_dir, self._canonical)
        if folder.canonical is None:
            atomic_write_json(run_dir / "config.json", run.config)
            return run.config
        if config_hash(folder.canonical) != self.key(run):
            raise ValueError(f"{run_dir} holds the config.json of another run; move it away")
        return folder.config or run.config


def finished_results(out: Path) -> list[dict[str, Any]]:
    """Results of every finished run below ``out`` with its config under ``"config"``; others are skipped."""
    return RunStore(out).finished()


# --------------------------------------------------------------------------------------------- run_one


def _decide(run: Run, store: RunStore, stack: contextlib.ExitStack, log: Log) -> tuple[Claim | None, tuple]:
    """Rank 0's claim and decision: ``("done", result)``, ``("claimed", (dir, holder))`` or ``("run", (dir, hash))``."""
    done = store.result(run)
    if done is not None:
        log(f"skipped {run.label}: already finished")
        return None, ("done", done)
    try:
        claim = stack.enter_context(store.claim(run, log))
    except RunClaimed as err:
        return None, ("claimed", (err.run_dir, err.holder))
    done = store.result(run)
    if done is not None:
        log(f"skipped {run.label}: finished by another driver meanwhile")
        return None, ("done", done)
    return claim, ("run", (claim.run_dir, config_hash(store._prepare(run, claim.run_dir))))


def run_one(run: Run, run_fn: RunFunction, out: Path | RunStore, *, log: Log = _stderr) -> dict[str, Any]:
    """Train ``run`` unless it is finished; return its result (with ``config_hash`` and ``run_dir``).

    ``out`` is the sweep folder or its :class:`RunStore`. A finished run's stored result is
    returned at once. Otherwise the run is claimed, its ``config.json`` written (a folder found by
    :meth:`RunStore.directory` keeps its own), ``run_fn(dict(config), run_dir)`` called, its result
    written atomically to ``result.json`` with the hash of the folder's ``config.json``, and the
    claim released, also when ``run_fn`` raises. In a ``torch.distributed`` process group only
    rank 0 claims and writes; it broadcasts its decision, and every rank runs ``run_fn``.

    Raises:
        RunClaimed: if another live driver is training the run (on every rank).
        RuntimeError: if this driver lost its claim while training (the result is not written).
    """
    return _run(run, run_fn, out if isinstance(out, RunStore) else RunStore(out), log)[0]


#: What :func:`attempt` found: the run ``"trained"`` here, ``"finished"`` before, or the live driver holding it.
Attempt = Literal["trained", "finished"] | Owner


def attempt(run: Run, run_fn: RunFunction, store: RunStore, log: Log = _stderr) -> Attempt:
    """:func:`run_one`, telling what happened: ``"trained"`` here, ``"finished"`` already (nothing
    done), or the :class:`Owner` of the claim when another live driver is training the run."""
    try:
        return "trained" if _run(run, run_fn, store, log)[1] else "finished"
    except RunClaimed as err:
        return err.holder


def _run(run: Run, run_fn: RunFunction, store: RunStore, log: Log) -> tuple[dict[str, Any], bool]:
    """:func:`run_one`'s work: ``(result, whether it was trained here)``.

    A run that fails before writing anything but its ``config.json`` leaves no folder behind.
    """
    started: list[Path] = []
    try:
        return _run_claimed(run, run_fn, store, log, started)
    except BaseException:
        for run_dir in started:  # the claim is released by now
            if [p.name for p in run_dir.iterdir()] == ["config.json"]:
                (run_dir / "config.json").unlink()
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
        raise


def _run_claimed(run: Run, run_fn: RunFunction, store: RunStore, log: Log,
                 started: list[Path]) -> tuple[dict[str, Any], bool]:
    with contextlib.ExitStack() as stack:
        claim, decision = None, ("error", f"rank 0 failed to claim {run.label}")
        try:
            if is_main_process():
                claim, decision = _decide(run, store, stack, log)
        finally:  # every rank takes rank 0's decision, also when rank 0 failed
            decision = broadcast_object(decision)
        kind, value = decision
        if kind in ("error", "claimed"):
            raise RuntimeError(value) if kind == "error" else RunClaimed(*value)
        if kind == "done":
            return value, False
        run_dir, folder_hash = value
        if claim is not None and [p.name for p in run_dir.iterdir() if not p.name.startswith(".")] == ["config.json"]:
            started.append(run_dir)  # a fresh folder: removed again if the run fails before writing anything
        result = {**run_fn(dict(run.config), run_dir), "config_hash": folder_hash, "run_dir": str(run_dir)}
        if claim is not None:
            if not claim.held():
                raise RuntimeError(f"the claim on {run_dir} was taken over while this driver trained it "
                                   "(stalled longer than stale_after?); its result is left to the other driver")
            atomic_write_json(run_dir / "result.json", result)
        return result, True
