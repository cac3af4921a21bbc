"""The per-epoch metrics log: ``metrics.jsonl`` (one JSON object per line) and its ``metrics.csv`` view.

Every line has the keys of :data:`METRIC_KEYS` (``test_loss``/``test_acc`` only when a test loader
is given); values that are not finite numbers are written as ``null`` so the file is strict JSON.
Line ``epoch = 0`` describes the initial model (``status = "init"``, no training metrics); the
line of epoch ``k ≥ 1`` has ``status`` ``"ok"`` or ``"diverged"`` (the last line of a run that
diverged). ``lr`` is the learning rate used during that epoch, ``seconds`` its wall time.
``metrics.csv`` is rewritten atomically from the JSONL after every line.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from sao._atomic import atomic_write_bytes

__all__ = ["METRIC_KEYS", "append_metrics", "clean_row", "read_metrics", "truncate_metrics"]

METRIC_KEYS = ("epoch", "status", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
               "jacobian_mean", "jacobian_var", "seconds")


def clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every non-finite float replaced by ``None`` (what :func:`append_metrics` writes)."""
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in row.items()}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The lines of ``path`` as dicts; an unreadable (partially written) line and all after it are left out."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(row, dict) or "epoch" not in row:
            break
        rows.append(row)
    return rows


def _write_all(path: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write_bytes(path, text.encode())
    _write_csv(path.with_suffix(".csv"), rows)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def truncate_metrics(path: Path, last_epoch: int) -> list[dict[str, Any]]:
    """Keep only the lines with ``epoch <= last_epoch`` (the checkpointed ones); return them."""
    rows = [row for row in read_metrics(path) if row["epoch"] <= last_epoch]
    _write_all(Path(path), rows)
    return rows


def append_metrics(path: Path, row: dict[str, Any]) -> dict[str, Any]:
    """Append ``row`` (non-finite numbers as ``null``) as one line and refresh the CSV view; return it cleaned."""
    path = Path(path)
    row = clean_row(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
    _write_csv(path.with_suffix(".csv"), read_metrics(path))
    return row
