"""Self-describing, atomically written training checkpoints with every RNG state needed for exact resume.

A checkpoint (``torch.save`` of a dict, read back with ``weights_only=True``) holds:

- ``format``: :data:`CHECKPOINT_FORMAT`; ``epoch``: finished training epochs (0 = the initial state);
  ``status``: ``"ok"`` or ``"diverged"``;
- ``config``: :meth:`TrainConfig.to_dict`; ``model_class`` and ``num_parameters`` (for humans);
- ``model``, ``optimizer``, ``scheduler``: their ``state_dict()``;
- ``rng``: torch CPU, every CUDA device (when CUDA is available), Python ``random`` and numpy's
  global generator; ``loader_rng``: the state of the train loader's ``generator`` and of its
  sampler's ``generator`` if that is a different object (``None`` when absent).
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from sao._atomic import atomic_write_bytes

__all__ = ["CHECKPOINT_FORMAT", "capture_rng", "load_checkpoint", "restore_rng", "save_checkpoint"]

CHECKPOINT_FORMAT = "sao.training.checkpoint/1"
_REQUIRED = ("format", "epoch", "status", "config", "model", "optimizer", "scheduler", "rng", "loader_rng")


def _loader_generators(loader: DataLoader) -> list[torch.Generator | None]:
    """The loader's generator and its sampler's one (when distinct): what decides the shuffling."""
    own = getattr(loader, "generator", None)
    sampler = getattr(getattr(loader, "sampler", None), "generator", None)
    return [own, sampler if sampler is not None and sampler is not own else None]


def capture_rng(loader: DataLoader | None = None) -> tuple[dict[str, Any], list[torch.Tensor | None]]:
    """The global RNG states and the train loader's generator states, in checkpoint form."""
    state = np.random.get_state(legacy=False)
    key = torch.from_numpy(state["state"]["key"].astype(np.int64))
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python": random.getstate(),
        "numpy": {"bit_generator": state["bit_generator"], "key": key,
                  "pos": int(state["state"]["pos"]), "has_gauss": int(state["has_gauss"]),
                  "gauss": float(state["gauss"])},
    }
    loader_rng = [None if g is None else g.get_state() for g in _loader_generators(loader)] if loader else [None, None]
    return rng, loader_rng


def restore_rng(rng: dict[str, Any], loader_rng: list[torch.Tensor | None], loader: DataLoader | None = None) -> None:
    """Put back what :func:`capture_rng` saved (CUDA states only where CUDA is available)."""
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate(_as_tuple(rng["python"]))
    np_state = rng["numpy"]
    np.random.set_state({"bit_generator": np_state["bit_generator"],
                         "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    if loader is not None:
        for generator, saved in zip(_loader_generators(loader), loader_rng, strict=True):
            if generator is not None and saved is not None:
                generator.set_state(saved)


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants tuples all the way down."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (see the module docstring) to ``path`` atomically: never a partial file."""
    missing = [k for k in _REQUIRED if k not in payload]
    assert not missing, f"checkpoint payload lacks {missing}"  # internal invariant: built by the loop
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        ValueError: naming the file when it is unreadable (corrupt, truncated) or not a
            ``sao.training`` checkpoint; delete it to start the run afresh.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); "
                         "delete it (and metrics.jsonl) to restart the run from scratch") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"checkpoint {path} is not a {CHECKPOINT_FORMAT} checkpoint (found {found!r})")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"checkpoint {path} lacks the entries {missing}")
    return payload
