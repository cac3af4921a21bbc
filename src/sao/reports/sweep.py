"""Turn a sweep directory into tables and figures: rows method, columns depth, mean ± std over seeds.

Reads only *finished* runs (:func:`sao.experiments.finished_results`), so a partial or damaged
run directory is never reported. Each run's ``config.json`` must hold ``method``, ``depth`` and
``seed``; its ``result.json`` the metrics named in :data:`METRICS` (a run that diverged reports
its accuracies as they were when it stopped, and is counted). A run whose config also holds a
``sparsity`` (the CNN tables) gets its own row, labelled ``"method sparsity%"`` (:func:`row_label`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sao._files import plt, save_figure, write_table
from sao.experiments import finished_results

__all__ = ["METRICS", "aggregate", "row_label", "settings_note", "table_rows", "write_report"]

METRICS = ("test_acc", "val_acc", "jacobian_mean", "jacobian_var")


def row_label(config: Mapping[str, Any]) -> str:
    """The table row of a run: its method, followed by its sparsity in % when the config has one.

    >>> row_label({"method": "sao"}), row_label({"method": "lmp-s", "sparsity": 0.96875})
    ('sao', 'lmp-s 96.875%')
    """
    sparsity = config.get("sparsity")
    return str(config["method"]) if sparsity is None else f"{config['method']} {100 * sparsity:g}%"


def aggregate(results: Sequence[Mapping[str, Any]], metric: str) -> dict[tuple[str, int], list[float]]:
    """``(row label, depth) -> [metric over seeds]`` for the runs that report ``metric``."""
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in results:
        value = r.get(metric)
        if value is not None:
            cells[row_label(r["config"]), int(r["config"]["depth"])].append(float(value))
    return dict(cells)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def table_rows(results: Sequence[Mapping[str, Any]], metric: str = "test_acc", scale: float = 100.0,
               known: Mapping[tuple[str, int], float] | None = None, fmt: str = ".2f") -> list[dict[str, str]]:
    """One row per method, one column per depth: ``mean ± std (n)`` of ``metric × scale``.

    ``known`` maps ``(row label, depth)`` to the paper's number, shown beside ours as ``[paper X]``;
    when ``known`` is given, cells the paper's surviving text has no number for say ``[paper —]``.
    Runs that diverged are counted and shown as ``(k diverged)``; their metrics are left out.
    """
    cells = aggregate(results, metric)
    diverged: dict[tuple[str, int], int] = defaultdict(int)
    for r in results:
        if r.get("status") == "diverged":
            diverged[row_label(r["config"]), int(r["config"]["depth"])] += 1
    methods = sorted({m for m, _ in cells} | {m for m, _ in diverged})
    depths = sorted({d for _, d in cells} | {d for _, d in diverged})
    rows = []
    for method in methods:
        row = {"method": method}
        for depth in depths:
            values = cells.get((method, depth))
            text = "—"
            if values:
                mean, std = _mean_std([scale * v for v in values])
                text = f"{mean:{fmt}} ± {std:{fmt}} ({len(values)})"
            if diverged.get((method, depth)):
                text += f" ({diverged[method, depth]} diverged)"
            if known:
                text += f" [paper {known[method, depth]:.2f}]" if (method, depth) in known else " [paper —]"
            row[f"N={depth}"] = text
        rows.append(row)
    return rows


def write_report(sweep_dir: Path, out: Path | None = None, title: str = "Sweep",
                 known: Mapping[tuple[str, int], float] | None = None) -> list[Path]:
    """Write ``report.md``/``.csv`` (test accuracy %), ``jacobian.md``/``.csv`` and two PNGs into ``out``.

    Raises:
        ValueError: if ``sweep_dir`` holds no finished run.
    """
    results = finished_results(Path(sweep_dir))
    if not results:
        raise ValueError(f"no finished runs in {sweep_dir} (a run is finished once its result.json is written)")
    out = Path(out or sweep_dir)
    files = [*write_table(table_rows(results, "test_acc", 100.0, known), out, "report",
                          f"{title}: test accuracy % (mean ± std over seeds, n runs)", settings_note(results))]
    files += write_table(table_rows(results, "jacobian_var", 1.0, fmt=".3g"), out, "jacobian",
                         f"{title}: variance of the input–output Jacobian's singular values at the end of training")
    files.append(_plot(results, "test_acc", 100.0, "test accuracy (%)", out, "accuracy_vs_depth", log=False))
    files.append(_plot_jacobian(results, out))
    return files


#: Config keys that name a run's place in the grid (or where it ran), not its settings.
_GRID_KEYS = ("method", "depth", "seed", "sparsity", "data_root", "device")


def settings_note(results: Sequence[Mapping[str, Any]]) -> str:
    """One line listing the settings every run shares and the ones that vary (besides the grid axes).

    >>> settings_note([{"config": {"method": "sao", "epochs": 5, "lr": 0.01}},
    ...                {"config": {"method": "dense", "epochs": 5, "lr": 0.001}}])
    'Settings of every run: epochs=5. Varying: lr.'
    """
    configs = [r["config"] for r in results]
    keys = sorted({k for c in configs for k in c} - set(_GRID_KEYS))
    shared = [k for k in keys if all(c.get(k) == configs[0].get(k) for c in configs)]
    varying = [k for k in keys if k not in shared]
    text = "Settings of every run: " + ", ".join(f"{k}={configs[0].get(k)}" for k in shared) + "."
    return text + (f" Varying: {', '.join(varying)}." if varying else "")


def _plot(results: Sequence[Mapping[str, Any]], metric: str, scale: float, label: str, out: Path, name: str,
          log: bool) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    _lines(ax, aggregate(results, metric), scale)
    ax.set_xlabel("depth N")
    ax.set_ylabel(label)
    ax.set_xscale("log")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return save_figure(fig, out, name)


def _plot_jacobian(results: Sequence[Mapping[str, Any]], out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, metric in zip(axes, ("jacobian_mean", "jacobian_var"), strict=True):
        _lines(ax, aggregate(results, metric), 1.0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("depth N")
        ax.set_title(metric.replace("_", " ") + " of the Jacobian's singular values (end of training)", fontsize=9)
    axes[0].legend(fontsize=8)
    return save_figure(fig, out, "jacobian_vs_depth")


def _lines(ax: Any, cells: Mapping[tuple[str, int], list[float]], scale: float) -> None:
    for i, method in enumerate(sorted({m for m, _ in cells})):
        depths = sorted(d for m, d in cells if m == method)
        means = [_mean_std([scale * v for v in cells[method, d]])[0] for d in depths]
        ax.plot(depths, means, marker="o", color=f"C{i % 10}", label=method,
                linewidth=2.5 if method == "sao" else 1.2)
