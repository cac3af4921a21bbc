"""Atomic result files for analyses and reports: CSV + Markdown tables and PNG figures (matplotlib, Agg).

Part of the harness, not of the library: it needs matplotlib (the ``experiments`` extra), and only
sao.analysis and sao.reports import it. Its layer in pyproject.toml lies above sao.models, so no
library module can import it; the harness packages check the extra (:mod:`sao._extras`) before they do.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

from sao._atomic import atomic_write_bytes

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["atomic_write_bytes", "markdown_table", "plt", "save_figure", "write_table"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A GitHub Markdown table of ``rows`` (keys of the first row are the columns)."""
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict[str, Any]], out_dir: Path, name: str, title: str = "",
                note: str = "") -> tuple[Path, Path]:
    """Write ``rows`` as ``name.csv`` and ``name.md`` (with an optional title, and a note below) into ``out_dir``."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    md = (f"## {title}\n\n" if title else "") + markdown_table(rows) + (f"\n{note}\n" if note else "")
    out_dir = Path(out_dir)
    return (atomic_write_bytes(out_dir / f"{name}.csv", buffer.getvalue().encode()),
            atomic_write_bytes(out_dir / f"{name}.md", md.encode()))


def save_figure(fig: Figure, out_dir: Path, name: str) -> Path:
    """Save ``fig`` as ``name.png`` in ``out_dir`` (atomically) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(Path(out_dir) / f"{name}.png", buffer.getvalue())
