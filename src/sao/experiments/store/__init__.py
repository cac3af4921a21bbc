"""The run store: a sweep folder of run folders — what is finished, what is damaged, who trains what.

A sweep folder holds one sub-folder per run, named ``<label>-<hash>`` (:func:`config_hash` of the
config), with

- ``config.json`` — the resolved config, written (atomically) before the run function starts;
- whatever the run writes while it works (``metrics.jsonl``, ``checkpoint.pt``, ...);
- ``result.json`` — written atomically as the very last step, carrying the hash of ``config.json``
  (and no path: results are returned with the folder they were read from under ``run_dir``);
- ``.claim/`` — only while a driver trains the run: who it is, and its heartbeat.

A run is *finished* exactly when ``result.json`` parses and carries the hash of the folder's
``config.json``; an unfinished run is resumed in its own folder. Before a driver trains a run it
*claims* it, so several drivers sharing a sweep folder (two ``sao reproduce`` on one machine, or
on machines sharing it over NFS) train each run once; a claim whose driver died goes *stale* and
is taken over. The claim is a *lease*: valid only for a while after each heartbeat, so a driver
that stalled stops before its next write (:class:`LeaseLost`) instead of writing next to the
driver that took its run over. The protocol, and why it is safe on network file systems, is
described in ``docs/run-store.md``.

The parts, each readable alone: ``_folders`` (the format of a run folder), ``_claim`` (claims on
disk, staleness), ``_lease`` (holding a claim: heartbeat, expiry, the write guard), ``_index``
(:class:`RunStore`: the sweep folder), ``_ranks`` (``torch.distributed``: rank 0 decides),
``_execution`` (:func:`run_one`, :func:`attempt`).
"""

from sao.experiments.store._claim import Owner, RunClaimed
from sao.experiments.store._execution import Attempt, RunFunction, attempt, run_one
from sao.experiments.store._folders import Run, RunStatus, config_hash, is_finished, read_result
from sao.experiments.store._index import RunStore, finished_results
from sao.experiments.store._lease import Guard, Lease, LeaseLost

__all__ = [
    "Attempt",
    "Guard",
    "Lease",
    "LeaseLost",
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
