"""Holding a claim: the lease — a claim that is ours only until its last confirmed heartbeat grows too old.

Other drivers may take a claim over once its heartbeat has not moved for ``stale_after`` seconds
(:class:`~._claim.StaleJudge`). So a holder may trust its claim only for less than that: a
:class:`Lease` is *valid* while its last confirmed heartbeat is younger than ``(stale_after +
heartbeat) / 2`` — the rest of ``stale_after`` is the margin for a write that has begun — and its
claim folder is still there. Age is measured on ``CLOCK_BOOTTIME`` where it exists (it counts the
time a machine is suspended, which ``time.monotonic`` does not on Linux), else on wall time. A
heartbeat is confirmed at the time taken *before* it was written, and an expired lease is never
renewed, so a process that stalls anywhere (Ctrl-Z, SIGSTOP, a suspended laptop, swapping) finds
its lease expired when it wakes. :meth:`Lease.check` raises :class:`LeaseLost` then; a run calls
it (its *guard*) before every write.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sao.experiments.store._claim import (
    Owner,
    RunClaimed,
    StaleJudge,
    claim_dir,
    current_owner,
    drop_claim,
    exists,
    try_claim,
)

#: Called before every write of a run: returns, or raises :class:`LeaseLost` when the run may no longer be ours.
Guard = Callable[[], None]
Log = Callable[[str], None]

_ATTEMPTS = 20  # claim attempts while the claim changes hands under our eyes
_CLOCK = getattr(time, "CLOCK_BOOTTIME", None)


def to_stderr(line: str) -> None:
    """The default log of the store: one line on standard error."""
    print(line, file=sys.stderr, flush=True)


def lease_clock() -> float:
    """Seconds on a clock that keeps counting while the machine is suspended (``CLOCK_BOOTTIME``; wall time
    where there is none)."""
    return time.clock_gettime(_CLOCK) if _CLOCK is not None else time.time()


class LeaseLost(RuntimeError):
    """This driver may no longer own the run in ``run_dir`` (``why``): it stopped before writing, and leaves the
    run to whichever driver claims it."""

    def __init__(self, run_dir: Path, why: str) -> None:
        super().__init__(f"lost the lease on {Path(run_dir).name} ({why}); stopped before writing, the run is "
                         "left to the driver that claims it")
        self.run_dir, self.why = Path(run_dir), why

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        return type(self), (self.run_dir, self.why)


class Lease:
    """This process's claim on a run folder, valid for a bounded time after each confirmed heartbeat.

    Made by :func:`acquire`. A daemon thread renews it every ``heartbeat`` seconds while it is valid;
    :meth:`check` is the guard to call before each write. :meth:`release` (or ``with``'s end) stops
    the heartbeat and drops the claim unless another driver took it over.
    """

    def __init__(self, run_dir: Path, owner: Owner, *, heartbeat: float, stale_after: float, confirmed: float,
                 log: Log) -> None:
        self.run_dir, self.owner, self._log = Path(run_dir), owner, log
        self.valid_for = (stale_after + heartbeat) / 2
        self._path = claim_dir(self.run_dir, owner)
        self._confirmed = confirmed  # lease_clock() before the last heartbeat written
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, args=(heartbeat,), daemon=True,
                                        name=f"sao-lease-{self.run_dir.name}")
        self._thread.start()

    def check(self) -> None:
        """Return while the lease is valid.

        Raises:
            LeaseLost: if its last confirmed heartbeat is too old or its claim is gone (and from then on).
        """
        why = self.lost()
        if why is not None:
            raise LeaseLost(self.run_dir, why)

    def lost(self) -> str | None:
        """Why the lease is no longer valid, or ``None`` while it is (once lost, it stays lost)."""
        if self._lost is None:
            age = lease_clock() - self._confirmed
            if age >= self.valid_for:
                self._lost = (f"no confirmed heartbeat for {age:.1f} s, it is valid for {self.valid_for:g} s: "
                              "this process stalled")
            elif not self._claim_is_there():
                self._lost = "its claim is gone: another driver took it over"
        return self._lost

    def _claim_is_there(self) -> bool:
        try:  # opened, not stat'ed: an NFS client then asks the server instead of its cache
            with open(self._path / "heartbeat", "rb"):
                return True
        except FileNotFoundError:
            return False
        except OSError:  # a network file system's hiccup: the clock still bounds the lease
            return True

    def _renew(self) -> bool:
        """Write a heartbeat if the lease is still valid; ``False`` once it is lost."""
        began = lease_clock()
        if self.lost() is not None:
            return False
        try:
            os.utime(self._path / "heartbeat")
        except FileNotFoundError:
            self._lost = "its claim is gone: another driver took it over"
            return False
        except OSError:  # a network file system's hiccup: unconfirmed; the next beat tries again
            return True
        self._confirmed = began
        return True

    def _keep_alive(self, every: float) -> None:
        while not self._stop.wait(every):
            if not self._renew():
                self._log(f"WARNING: lost the lease on {self.run_dir.name}: {self._lost}; "
                          "the run stops at its next write")
                return

    def release(self) -> None:
        """Stop the heartbeat and drop the claim (idempotent; a claim taken over is left to its new holder)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        drop_claim(self._path)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(run_dir: Path, judge: StaleJudge, heartbeat: float, log: Log) -> Lease:
    """Claim ``run_dir`` (created if need be) for this process, taking over a stale claim; the routine case is
    silent, a takeover is logged.

    Raises:
        RunClaimed: if another live driver holds the run.
        RuntimeError: if the claim changed hands too often to get hold of it.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    me = Owner.me()
    for _ in range(_ATTEMPTS):
        began = lease_clock()
        if try_claim(run_dir, me):
            return Lease(run_dir, me, heartbeat=heartbeat, stale_after=judge.stale_after, confirmed=began, log=log)
        owner = current_owner(run_dir)
        if owner is None:  # released meanwhile
            continue
        why = judge.reason(run_dir, owner)
        if why is None and exists(run_dir, owner):
            raise RunClaimed(run_dir, owner)
        if why is not None and drop_claim(claim_dir(run_dir, owner)):
            log(f"took over {run_dir.name} from {owner}: its claim is stale ({why})")
    raise RuntimeError(f"could not claim {run_dir}: its claim changed hands {_ATTEMPTS} times")
