"""Claims on disk: who holds a run folder, how a claim is made, dropped and judged stale.

A claim is the folder ``<run>/.claim/<token>/`` holding ``owner.json`` and an empty ``heartbeat``
file; ``.claim`` is *held* when it has an entry. It is made by building it in a private folder and
renaming that onto ``.claim`` (which succeeds onto a missing or empty folder only), and dropped by
renaming ``.claim/<token>`` away (which succeeds for one caller, and only while that claim is
there). Only ``mkdir``, ``rename`` and ``rmdir`` decide, so this holds on NFS too
(``docs/run-store.md``). Holding a claim, its heartbeat and its expiry are :mod:`._lease`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sao._atomic import atomic_write_json
from sao.experiments.store._folders import read_json

CLAIM = ".claim"


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
            data = read_json(claim_dir / "owner.json")
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known and k != "token"}, token=claim_dir.name)
        except (OSError, ValueError, TypeError):
            return cls("?", 0, claim_dir.name, 0.0)

    def here(self) -> bool:
        """Whether this owner's PID can be checked from this process (same host and PID namespace)."""
        return self.host == socket.gethostname() and self.pidns == _pid_namespace()


class RunClaimed(RuntimeError):
    """The run in ``run_dir`` is being trained by another live driver, ``holder``; nothing was done here."""

    def __init__(self, run_dir: Path, holder: Owner) -> None:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.started))
        super().__init__(f"{Path(run_dir).name} is being trained by another driver ({holder}, since {since})")
        self.run_dir, self.holder = Path(run_dir), holder

    def __reduce__(self) -> tuple[type, tuple[Path, Owner]]:
        return type(self), (self.run_dir, self.holder)


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


def claim_dir(run_dir: Path, owner: Owner) -> Path:
    """Where ``owner``'s claim on ``run_dir`` lives: ``run_dir/.claim/<token>``."""
    return run_dir / CLAIM / owner.token


def try_claim(run_dir: Path, me: Owner) -> bool:
    """Build ``.claim-new-<token>/<token>/{owner.json,heartbeat}`` and rename it to ``.claim``; whether it won.

    Raises:
        OSError: if the claim cannot be built, or the rename fails otherwise than on a held claim.
    """
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
    return claim_dir(run_dir, me).is_dir()  # also right when a retried NFS rename reported a failure


def drop_claim(path: Path) -> bool:
    """Rename the claim ``path`` (``.claim/<token>``) away (one atomic step, which fails when it is gone), then
    delete it at leisure. Returns whether this call removed it."""
    grave = path.parent.parent / f"{CLAIM}-gone-{path.name}"
    try:
        os.rename(path, grave)
    except OSError:
        return False
    shutil.rmtree(grave, ignore_errors=True)
    with contextlib.suppress(OSError):  # fails when another driver has claimed meanwhile: then it stays
        os.rmdir(path.parent)
    return True


def current_owner(run_dir: Path) -> Owner | None:
    """The holder of ``run_dir``'s claim, or ``None`` when it has none."""
    try:
        tokens = sorted(os.listdir(run_dir / CLAIM))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Owner.read(run_dir / CLAIM / tokens[0]) if tokens else None


def exists(run_dir: Path, owner: Owner) -> bool:
    """Whether ``owner``'s claim is still there (it may have been released or taken over since it was read)."""
    return claim_dir(run_dir, owner).is_dir()


def _beat(path: Path) -> int | None:
    """mtime (ns) of the claim's heartbeat (opened, so that NFS revalidates it), else of the claim; ``None`` if gone."""
    try:
        with open(path / "heartbeat", "rb") as handle:
            return os.fstat(handle.fileno()).st_mtime_ns
    except FileNotFoundError:
        pass
    try:
        return path.stat().st_mtime_ns
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


class StaleJudge:
    """Tells live claims from stale ones: a claim is stale when its owner's process is gone (same host and PID
    namespace), or its heartbeat has not moved for ``stale_after`` seconds — watched on this process's monotonic
    clock, or aged by the file system's clock. Verdicts are kept (and travel with a pickled judge); the
    monotonic watch times do not (they mean nothing in another process)."""

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self._seen: dict[str, tuple[int, float]] = {}  # claim token -> (heartbeat mtime, when first seen so)
        self._stale: dict[str, str] = {}  # claim token -> why it is stale

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_seen": {}}

    def reason(self, run_dir: Path, owner: Owner) -> str | None:
        """Why ``owner``'s claim on ``run_dir`` is stale, or ``None`` while it is live (or gone)."""
        if owner.token in self._stale:
            return self._stale[owner.token]
        if owner.here() and not _alive(owner.pid):
            why: str | None = f"process {owner.pid} is gone"
        else:
            beat = _beat(claim_dir(run_dir, owner))
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
