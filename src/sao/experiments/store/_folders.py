"""The format of one run folder: ``config.json``, ``result.json``, and what a folder's state is.

A run folder holds ``config.json`` (the run's config) and, once the run is finished,
``result.json``: the run function's result with ``config_hash``, the hash of the folder's
``config.json``. The result file names no path: a result read from a folder gets that folder
as ``run_dir``, so a copied or moved sweep folder reports its own folders.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sao._atomic import atomic_write_json

Identity = Callable[[dict[str, Any]], dict[str, Any]]

#: The key under which a reported result names the folder it was read from (never stored).
RUN_DIR = "run_dir"


def config_hash(config: dict[str, Any]) -> str:
    """First 12 hex digits of the SHA-256 of the canonical (sorted, compact) JSON of ``config``."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Run:
    """One run of a grid: a readable ``label`` (part of the directory name) and its ``config``.

    ``config`` is a JSON-ready dict, or a typed config with a ``to_dict()`` giving one (e.g. a
    :class:`~sao.experiments.RunConfig`): the store writes and hashes :attr:`stored`, and the run
    function receives ``config`` as given, so a typed config reaches it without a round trip.
    """

    label: str
    config: Any

    @property
    def stored(self) -> dict[str, Any]:
        """The config as ``config.json`` holds it."""
        return self.config.to_dict() if hasattr(self.config, "to_dict") else dict(self.config)

    @property
    def hash(self) -> str:
        return config_hash(self.stored)

    def directory(self, out: Path) -> Path:
        """The folder a new run gets in sweep folder ``out`` (:meth:`RunStore.directory` also finds older ones)."""
        return Path(out) / f"{self.label}-{self.hash}"


class RunStatus(str, Enum):
    """State of a run folder (see :meth:`RunStore.status`)."""

    FINISHED = "finished"
    UNFINISHED = "unfinished"
    DAMAGED = "damaged"


@dataclass(frozen=True)
class Folder:
    """What one run folder holds: its config (as read and in canonical form), result (with ``run_dir``),
    or what is wrong."""

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


def read_json(path: Path) -> Any:
    """The JSON value in ``path``.

    Raises:
        OSError: if it cannot be read (``FileNotFoundError`` if it is missing).
        ValueError: if it is no valid JSON.
    """
    return json.loads(Path(path).read_text())


def as_it_is(config: dict[str, Any]) -> dict[str, Any]:
    """The identity of a store without one: a config is canonical as it is."""
    return config


def _read_config(path: Path, identity: Identity) -> tuple[dict | None, dict | None, str | None]:
    """``(config, identity(config), problem)`` of the folder ``path``; a missing config.json is no problem."""
    try:
        config = read_json(path / "config.json")
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
    """``(result, problem)``: the result, with ``run_dir``, when it is finished for ``config``, else what is wrong."""
    try:
        result = read_json(path / "result.json")
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
    return reported(result, path), None


def inspect(path: Path, identity: Identity) -> Folder:
    """What the run folder ``path`` holds, its config read through ``identity`` (see :class:`Folder`)."""
    config, canonical, problem = _read_config(path, identity)
    result, result_problem = _read_result(path, config)
    if problem is not None:  # a result whose config is not understood cannot be reported
        result = None
    return Folder(path, config, canonical, result, problem or result_problem)


def reported(result: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``result`` as the store returns it: with the folder it belongs to under ``run_dir``."""
    return {**result, RUN_DIR: str(run_dir)}


def stored(result: dict[str, Any], folder_hash: str) -> dict[str, Any]:
    """``result`` as ``result.json`` holds it: with ``config_hash`` (of the folder's ``config.json``), without
    ``run_dir``."""
    return {**{k: v for k, v in result.items() if k != RUN_DIR}, "config_hash": folder_hash}


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """Write ``result`` (:func:`stored`) atomically as ``run_dir/result.json``.

    Raises:
        OSError: if it cannot be written.
    """
    atomic_write_json(run_dir / "result.json", result)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result if it is finished (valid ``result.json`` with its config's hash), else ``None``.

    The result names ``run_dir`` (made absolute) under ``"run_dir"``.
    """
    return inspect(Path(run_dir).absolute(), as_it_is).result


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run."""
    return read_result(run_dir) is not None
