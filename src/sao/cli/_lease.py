"""The run store's lease flags of ``sao train`` and ``sao reproduce``: how long a silent driver keeps its runs.

``--stale-after S``: another driver takes over a run whose heartbeat has not moved for ``S`` seconds;
``--heartbeat H``: how often this driver touches its claims. Over NFS keep ``S`` well above ``H`` plus
the attribute-cache time (``actimeo``, up to 60 s); docs/run-store.md has the protocol. The defaults
are :class:`sao.experiments.RunStore`'s.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

from sao.cli._types import Real, blame
from sao.experiments import RunStore, identity

__all__ = ["add_lease_flags", "lease_settings", "run_store"]

#: Flag → the :class:`RunStore` argument it sets.
_FLAGS = {"--stale-after": "stale_after", "--heartbeat": "heartbeat"}


def add_lease_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--stale-after`` and ``--heartbeat`` (seconds; default: RunStore's)."""
    group = parser.add_argument_group("run store", "Claims on the runs of --out, so that drivers sharing a folder "
                                                   "never train a run twice (docs/run-store.md).")
    group.add_argument("--stale-after", type=Real(low=0.0, low_open=True), default=None, metavar="SECONDS",
                       help="take over a run whose driver's heartbeat has not moved for this long; over NFS keep it "
                            f"well above --heartbeat + 60 (default {_default('stale_after'):g})")
    group.add_argument("--heartbeat", type=Real(low=0.0, low_open=True), default=None, metavar="SECONDS",
                       help=f"seconds between two heartbeats of this driver's claims "
                            f"(default {_default('heartbeat'):g})")


def lease_settings(args: argparse.Namespace) -> dict[str, float]:
    """The RunStore arguments of the lease flags given, checked together (``ValueError`` naming the flags)."""
    given = {flag: getattr(args, name) for flag, name in _FLAGS.items() if getattr(args, name) is not None}

    def build(values: dict[str, Any]) -> dict[str, float]:
        settings = {_FLAGS[flag]: value for flag, value in values.items()}
        stale, beat = (settings.get(name, _default(name)) for name in ("stale_after", "heartbeat"))
        if stale <= beat:
            raise ValueError(f"--stale-after ({_shown(settings, 'stale_after')}) must be longer than --heartbeat "
                             f"({_shown(settings, 'heartbeat')})")
        RunStore(Path("."), **settings)  # its own checks too; touches no file
        return settings

    return blame(build, given, str)


def _default(name: str) -> float:
    """RunStore's default of ``name`` (the one source of the defaults)."""
    return inspect.signature(RunStore).parameters[name].default


def _shown(settings: dict[str, float], name: str) -> str:
    """``"30 s"`` as given, ``"120 s, the default"`` when not."""
    return f"{settings[name]:g} s" if name in settings else f"{_default(name):g} s, the default"


def run_store(args: argparse.Namespace, out: Path) -> RunStore:
    """The run store of ``out`` with the lease flags (``args.lease``, set by the command's ``resolve``)."""
    return RunStore(out, identity=identity, **args.lease)
