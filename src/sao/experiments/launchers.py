"""Launchers: how the unfinished runs of a grid are executed — local processes or a Ray cluster.

A launcher is a function ``(todo, run_fn, store, options, log) -> LaunchReport``. Every launcher
executes each run through :func:`sao.experiments.store.run_one`, so the run-folder contract of
:mod:`sao.experiments.store` (folders named by config hash, atomic ``result.json``, skip what is
finished, resume the rest, one driver per run) is the same whichever launcher ran a grid: a grid
started with one launcher can be finished with another. A run that fails, or that another driver
is training, is logged and reported, never stops the other runs;
:func:`sao.experiments.runner.run_grid` waits for the claimed ones and raises for the failed.
Ctrl-C stops a launcher at once: no run starts after it, the running ones unwind unfinished (their
claims released, no ``result.json``), and ``KeyboardInterrupt`` propagates; the same grid then
resumes them.

Add a launcher with ``@LAUNCHERS.register("name")`` on such a function.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from sao._registry import Registry
from sao._validation import as_int, as_real
from sao.experiments.store import Attempt, Owner, Run, RunFunction, RunStore, attempt

__all__ = ["LAUNCHERS", "LaunchOptions", "LaunchReport", "Launcher", "launch_local", "launch_ray"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class LaunchOptions:
    """Settings of the launchers; each launcher reads the fields it needs.

    Args:
        workers: ``local``: runs in parallel (1 = in this process, one after another).
        address: ``ray``: the cluster to connect to (``ray.init(address=...)``, e.g. ``"auto"`` or
            ``"ray://head:10001"``); ``None`` is Ray's default: ``RAY_ADDRESS`` if set, else a cluster
            started on this machine with ``ray start``, else a new local instance.
        cpus_per_run: ``ray``: CPUs reserved per run, also its number of PyTorch intra-op threads.
        gpus_per_run: ``ray``: GPUs reserved per run; a fraction below 1 lets runs share a GPU.
        max_retries: ``ray``: how often Ray reruns a run whose worker process died (killed, out of
            memory, node lost). Safe, since a run resumes from its own checkpoint; exceptions raised
            by the run function are never retried (they would fail again).
    """

    workers: int = 1
    address: str | None = None
    cpus_per_run: int = 1
    gpus_per_run: float = 0
    max_retries: int = 2

    def __post_init__(self) -> None:
        for name, low in (("workers", 1), ("cpus_per_run", 1), ("max_retries", 0)):
            object.__setattr__(self, name, as_int(getattr(self, name), name, minimum=low))
        gpus = as_real(self.gpus_per_run, "gpus_per_run", low=0.0)
        if gpus > 1 and gpus != int(gpus):
            raise ValueError(f"gpus_per_run must be a number >= 0 (a fraction only below 1), got {gpus!r}")
        object.__setattr__(self, "gpus_per_run", gpus)


@dataclass
class LaunchReport:
    """What a launcher left undone: the labels of the runs that failed, and of those another driver
    is training (label → that driver)."""

    failed: list[str] = field(default_factory=list)
    claimed: dict[str, Owner] = field(default_factory=dict)

    def record(self, run: Run, step: str, outcome: Callable[[], Attempt], log: Log, trace: bool = False) -> None:
        """Log and file what ``outcome()`` (an :func:`~sao.experiments.store.attempt` of ``run``) says, or raises."""
        try:
            result = outcome()
        except Exception as err:
            self.failed.append(run.label)
            detail = f"\n{traceback.format_exc()}" if trace else f": {type(err).__name__}: {err}"
            log(f"{step} FAILED {run.label}{detail}")
            return
        if result == "trained":
            log(f"{step} done {run.label}")
        elif result == "finished":
            log(f"{step} {run.label} was finished meanwhile by another driver; not trained here")
        else:
            self.claimed[run.label] = result
            log(f"{step} {run.label} is being trained by another driver ({result}); not trained here")


Launcher = Callable[[list[Run], RunFunction, RunStore, LaunchOptions, Log], LaunchReport]
LAUNCHERS: Registry[Launcher] = Registry("launcher", "sao.experiments.launchers.LAUNCHERS")


class _WorkerInterrupt:
    """Ctrl-C in a worker process of :func:`launch_local`: the run in progress stops, no other starts.

    The worker's SIGINT handler raises ``KeyboardInterrupt`` only while a run is in progress (once),
    so the run unwinds as it would in one process (its claim released, a fresh folder removed, no
    ``result.json``); an idle worker just takes note, without a traceback, and starts no other run.
    A thread turns the pool's shared ``stop`` flag, set by the driver on Ctrl-C, into a SIGINT of
    the worker, so a Ctrl-C that reached only the driver stops every run too. The handler touches
    no lock (a signal may arrive while the main thread holds one), and ``stop`` is a lock-free
    shared byte, so a worker that died never blocks the others.
    """

    stop: Any = None  # the pool's shared flag (multiprocessing RawValue), set by :func:`_init_worker`
    running = False
    interrupted = False

    @classmethod
    def install(cls, stop: Any) -> None:
        """Handle SIGINT from now on; one held back while the worker started (:func:`_sigint_held`) arrives now."""
        cls.stop = stop
        signal.signal(signal.SIGINT, cls._on_sigint)
        threading.Thread(target=cls._forward, daemon=True, name="sao-stop").start()
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    @classmethod
    def _on_sigint(cls, signum: int, frame: object) -> None:
        cls.interrupted = True
        if cls.running:
            cls.running = False
            raise KeyboardInterrupt

    @classmethod
    def _forward(cls, poll: float = 0.05) -> None:
        while not cls.stop.value:
            time.sleep(poll)
        os.kill(os.getpid(), signal.SIGINT)

    @classmethod
    def attempt(cls, run: Run, run_fn: RunFunction, store: RunStore) -> Attempt:
        """:func:`~sao.experiments.store.attempt` unless the sweep was interrupted (then ``KeyboardInterrupt``)."""
        cls.running = True  # before the check: a SIGINT from here on interrupts this call
        try:
            if cls.interrupted or cls.stop.value:
                raise KeyboardInterrupt
            return attempt(run, run_fn, store)
        finally:
            cls.running = False


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold SIGINT back in this thread (pending, not lost) while it starts worker processes: they inherit
    the mask, so a Ctrl-C while they import is taken once they can handle it, not as a traceback."""
    if not hasattr(signal, "pthread_sigmask"):  # no POSIX signal masks (Windows)
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _init_worker(threads: int, stop: Any) -> None:
    """Share the cores between workers (oversubscribed intra-op threads make steps 10-100x slower);
    stop on Ctrl-C (:class:`_WorkerInterrupt`)."""
    import torch

    torch.set_num_threads(threads)
    _WorkerInterrupt.install(stop)


@LAUNCHERS.register("local")
def launch_local(todo: list[Run], run_fn: RunFunction, store: RunStore, options: LaunchOptions,
                 log: Log) -> LaunchReport:
    """Run ``todo`` on this machine; report the runs that raised and those another driver holds.

    With ``options.workers == 1`` the runs go one after another in this process (a failure is
    logged with its traceback), as they do when only one run is to go. Otherwise ``min(workers, runs)``
    processes (started with ``spawn``, so ``run_fn`` must be a module-level function) each get
    ``cpu_count // processes`` intra-op threads;
    their claim messages go to their standard error. Ctrl-C (``KeyboardInterrupt`` here, or SIGINT
    in a worker) stops every worker's run and starts no other; it returns once the workers have
    stopped (their runs unfinished, to be resumed) and raises ``KeyboardInterrupt``.
    """
    workers = min(options.workers, len(todo))  # no idle processes: their cores go to the runs' threads
    if workers <= 1:
        report = LaunchReport()
        for i, run in enumerate(todo, 1):
            report.record(run, f"[{i}/{len(todo)}]", lambda run=run: attempt(run, run_fn, store, log), log,
                          trace=True)
        return report
    threads = max(1, (os.cpu_count() or 1) // workers)
    log(f"{workers} worker processes, {threads} thread(s) each")
    context = multiprocessing.get_context("spawn")
    stop = context.RawValue("b", 0)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                               initargs=(threads, stop))
    try:
        report = _collect_local(pool, todo, run_fn, store, log)
    except BaseException:
        stop.value = 1  # no worker starts another run; the running ones are interrupted
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return report


def _collect_local(pool: ProcessPoolExecutor, todo: list[Run], run_fn: RunFunction, store: RunStore,
                   log: Log) -> LaunchReport:
    """Submit every run to ``pool`` and log each as it ends; a worker's ``KeyboardInterrupt`` is raised here."""
    report = LaunchReport()
    with _sigint_held():  # submitting starts the workers
        futures = {pool.submit(_WorkerInterrupt.attempt, run, run_fn, store): run for run in todo}
    for i, future in enumerate(as_completed(futures), 1):
        report.record(futures[future], f"[{i}/{len(todo)}]", future.result, log)
    return report


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as err:
        raise ValueError(f"the ray launcher needs Ray ({err}); install it with: pip install 'sao[ray]'") from None
    return ray


def _ray_task(run: Run, run_fn: RunFunction, store: RunStore, threads: int) -> Attempt:
    """One run in a Ray worker: ``threads`` intra-op threads (the CPUs Ray reserved), then ``attempt``."""
    import torch

    torch.set_num_threads(threads)
    return attempt(run, run_fn, store)


@LAUNCHERS.register("ray")
def launch_ray(todo: list[Run], run_fn: RunFunction, store: RunStore, options: LaunchOptions,
               log: Log) -> LaunchReport:
    """Run ``todo`` as one Ray task per run; report the runs that failed and those another driver holds.

    Connects with ``ray.init(address=options.address)`` unless Ray is already initialised (then
    the caller's connection is used and kept); a connection made here is shut down on return.
    Each task reserves ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (Ray sets
    ``CUDA_VISIBLE_DEVICES``; a run's ``device="auto"`` then finds its GPU), sets that many
    PyTorch threads and calls ``run_one``. Results are logged as they arrive. A task whose run
    raised, or whose worker died more than ``max_retries`` times, is a failed run; the others go on.
    A task that finds its run claimed by another live driver reports that driver (``claimed``); a
    killed worker's claim goes stale (at once on its own node, after ``stale_after`` elsewhere).
    If this function is interrupted (Ctrl-C), every task submitted is cancelled (:func:`_cancel`):
    queued runs never start, running ones stop and stay unfinished, to resume on the next call.

    ``store.root`` (an absolute path) must be the same folder on every node (a shared file
    system); a task that ends without its ``result.json`` visible here counts as failed.
    ``run_fn`` travels by pickle: a function of an installed module (``sao`` must be installed on
    every node), or one registered with ``ray.cloudpickle.register_pickle_by_value``.
    """
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=options.address)
        except ConnectionError as err:
            raise ValueError(f"cannot reach a Ray cluster at address={options.address!r}: {err}") from None
    elif options.address is not None:
        log(f"Ray is already initialised; address {options.address!r} is not used")
    try:
        _log_cluster(ray, options, log)
        runs: dict[Any, Run] = {}  # object ref -> run, filled as they are submitted: an interrupt cancels each
        with _cancelled_on_interrupt(ray, runs):
            _submit(ray, todo, run_fn, store, options, runs)
            return _collect_ray(ray, runs, store, log)
    finally:
        if started:
            ray.shutdown()


def _submit(ray: ModuleType, todo: list[Run], run_fn: RunFunction, store: RunStore, options: LaunchOptions,
            runs: dict[Any, Run]) -> None:
    """One task per run of ``todo``, each entered into ``runs`` (object ref → run) as it is submitted."""
    task = ray.remote(_ray_task)
    resources = {"num_cpus": options.cpus_per_run, "num_gpus": options.gpus_per_run,
                 "max_retries": options.max_retries, "retry_exceptions": False}
    fn_ref = ray.put(run_fn)
    for run in todo:
        runs[task.options(name=f"sao:{run.label}", **resources).remote(run, fn_ref, store, options.cpus_per_run)] = run


#: Seconds the runs of an interrupted Ray grid get to stop on their own before their workers are killed.
RAY_GRACE = 5.0


@contextlib.contextmanager
def _cancelled_on_interrupt(ray: ModuleType, refs: dict[Any, Run]) -> Iterator[None]:
    """Cancel the tasks ``refs`` holds when the body raises (``KeyboardInterrupt`` included), then re-raise."""
    try:
        yield
    except BaseException:
        _cancel(ray, list(refs))
        raise


def _cancel(ray: ModuleType, refs: list[Any]) -> None:
    """Cancel ``refs``: a queued task never starts; a running one gets ``KeyboardInterrupt``, so its run
    unwinds (claim released, no ``result.json``); one still running after :data:`RAY_GRACE` s is killed
    (its claim goes stale)."""
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False)
    running = refs
    with contextlib.suppress(Exception):
        running = ray.wait(refs, num_returns=len(refs), timeout=RAY_GRACE, fetch_local=False)[1] if refs else []
    for ref in running:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)


def _log_cluster(ray: ModuleType, options: LaunchOptions, log: Log) -> None:
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
    log(f"Ray cluster: {cpus:g} CPU(s), {gpus:g} GPU(s); each run takes {options.cpus_per_run} CPU(s), "
        f"{options.gpus_per_run:g} GPU(s)")
    if options.cpus_per_run > cpus or options.gpus_per_run > gpus:
        log("WARNING: the cluster has less than one run asks for; the runs wait until nodes join (Ctrl-C to stop)")


def _collect_ray(ray: ModuleType, runs: dict[Any, Run], store: RunStore, log: Log) -> LaunchReport:
    """Wait for the tasks ``runs`` (object ref → run), log each as it ends, report the undone ones."""
    report = LaunchReport()
    pending = list(runs)

    def outcome(ref: Any, run: Run) -> Attempt:
        result = ray.get(ref)
        if not isinstance(result, Owner) and store.result(run) is None:
            raise RuntimeError(f"the task ended but {store.directory(run)}/result.json is not visible "
                               "here: is the output folder shared by every Ray node?")
        return result

    for i in range(1, len(runs) + 1):
        [ready], pending = ray.wait(pending, num_returns=1)
        report.record(runs[ready], f"[{i}/{len(runs)}]", lambda ref=ready: outcome(ref, runs[ref]), log)
    return report
