"""Turn a sweep folder into tables and figures: rows method, columns depth, mean ± std over seeds.

Reads the sweep through the run store (:class:`sao.experiments.RunStore`): only *finished* runs,
of this version's format or of version 0.1's, each as its typed
:class:`~sao.experiments.RunConfig`; damaged folders are listed, never reported. A run's
``result.json`` holds the metrics named in :data:`METRICS` (a run that diverged reports its
accuracies as they were when it stopped, and is counted). A run with a sparsity (the CNN tables)
gets its own row, labelled ``"method sparsity%"`` (:func:`row_label`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sao._files import plt, save_figure, write_table
from sao.experiments import EXPERIMENTS, ExperimentSpec, RunConfig, RunStore, identity

__all__ = ["METRICS", "Result", "aggregate", "load_results", "row_label", "settings_note", "table_rows",
           "write_report"]

METRICS = ("test_acc", "val_acc", "jacobian_mean", "jacobian_var")

#: A finished run: its typed config and its result.
Result = tuple[RunConfig, Mapping[str, Any]]


def load_results(sweep_dir: Path) -> tuple[list[Result], list[tuple[Path, str]]]:
    """The finished runs of a sweep folder (typed) and its damaged folders ``(folder, what is wrong)``."""
    store = RunStore(Path(sweep_dir), identity=identity)
    results = [(RunConfig.from_dict(r["config"]), {k: v for k, v in r.items() if k != "config"})
               for r in store.finished()]
    return results, store.damaged()


def row_label(config: RunConfig) -> str:
    """The table row of a run: its method, followed by its sparsity in % when it has one.

    >>> from sao.experiments import MethodConfig
    >>> row_label(RunConfig()), row_label(RunConfig(method=MethodConfig("lmp-s", sparsity=0.96875)))
    ('sao', 'lmp-s 96.875%')
    """
    method = config.method
    return method.name if method.sparsity is None else f"{method.name} {100 * method.sparsity:g}%"


def _cell(config: RunConfig) -> tuple[str, int]:
    return row_label(config), config.model.depth


def aggregate(results: Sequence[Result], metric: str) -> dict[tuple[str, int], list[float]]:
    """``(row label, depth) -> [metric over seeds]`` for the runs that report ``metric``."""
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)
    for config, result in results:
        value = result.get(metric)
        if value is not None:
            cells[_cell(config)].append(float(value))
    return dict(cells)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def table_rows(results: Sequence[Result], metric: str = "test_acc", scale: float = 100.0,
               known: Mapping[tuple[str, int], float] | None = None, fmt: str = ".2f") -> list[dict[str, str]]:
    """One row per method, one column per depth: ``mean ± std (n)`` of ``metric × scale``.

    ``known`` maps ``(row label, depth)`` to the paper's number, shown beside ours as ``[paper X]``;
    when ``known`` is given, cells the paper's surviving text has no number for say ``[paper —]``.
    Runs that diverged are counted and shown as ``(k diverged)``; their metrics are left out.
    """
    cells = aggregate(results, metric)
    diverged: dict[tuple[str, int], int] = defaultdict(int)
    for config, result in results:
        if result.get("status") == "diverged":
            diverged[_cell(config)] += 1
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


def write_report(sweep_dir: Path, out: Path | None = None, experiment: ExperimentSpec | None = None) -> list[Path]:
    """Write ``report.md``/``.csv`` (test accuracy %), ``jacobian.md``/``.csv`` and two PNGs into ``out``.

    ``experiment`` gives the title and the paper's numbers (default: the experiment the runs
    name, when they all name one); the numbers are shown only beside runs on the paper's dataset.

    Raises:
        ValueError: if ``sweep_dir`` holds no finished run.
    """
    results, damaged = load_results(Path(sweep_dir))
    if not results:
        raise ValueError(f"no finished runs in {sweep_dir} (a run is finished once its result.json is written)")
    experiment = experiment or _named_experiment(results)
    title, known = _title_and_known(results, experiment)
    notes = settings_note(results)
    if damaged:
        notes += f" Skipped {len(damaged)} damaged run folder(s): " + "; ".join(f"{p.name} ({why})"
                                                                              for p, why in damaged)
    out = Path(out or sweep_dir)
    files = [*write_table(table_rows(results, "test_acc", 100.0, known), out, "report",
                          f"{title}: test accuracy % (mean ± std over seeds, n runs)", notes)]
    files += write_table(table_rows(results, "jacobian_var", 1.0, fmt=".3g"), out, "jacobian",
                         f"{title}: variance of the input–output Jacobian's singular values at the end of training")
    files.append(_plot(results, "test_acc", 100.0, "test accuracy (%)", out, "accuracy_vs_depth", log=False))
    files.append(_plot_jacobian(results, out))
    return files


def _named_experiment(results: Sequence[Result]) -> ExperimentSpec | None:
    names = {config.experiment for config, _ in results}
    name = names.pop() if len(names) == 1 else None
    return EXPERIMENTS.get(name) if name in EXPERIMENTS else None


def _title_and_known(results: Sequence[Result], experiment: ExperimentSpec | None
                     ) -> tuple[str, Mapping[tuple[str, int], float]]:
    datasets = sorted({config.data.name for config, _ in results})
    title = (experiment.title if experiment is not None else "Sweep") + f" (this sweep: {', '.join(datasets)})"
    if experiment is None or not experiment.known:
        return title, {}
    if experiment.dataset is not None and datasets != [experiment.dataset]:
        return title + f"; the paper's {experiment.dataset} numbers are not shown beside other data", {}
    return title, experiment.known


#: Settings that name a run's place in the grid (or where it ran), not what it computes.
_GRID_KEYS = ("method.name", "model.depth", "train.seed", "method.sparsity", "data.root", "train.device")


def _flat(config: RunConfig) -> dict[str, Any]:
    return {f"{part}.{k}": v for part, values in config.to_dict().items() if isinstance(values, dict)
            for k, v in values.items()}


def settings_note(results: Sequence[Result]) -> str:
    """One line listing the settings every run shares and the ones that vary (besides the grid axes).

    >>> from sao.experiments import ModelConfig
    >>> settings_note([(RunConfig(model=ModelConfig(gain=1.1)), {}), (RunConfig(), {})]).split(". ")[-1]
    'Varying: model.gain.'
    """
    configs = [_flat(config) for config, _ in results]
    keys = sorted({k for c in configs for k in c} - set(_GRID_KEYS))
    shared = [k for k in keys if all(c.get(k) == configs[0].get(k) for c in configs)]
    varying = [k for k in keys if k not in shared]
    text = "Settings of every run: " + ", ".join(f"{k}={configs[0].get(k)}" for k in shared) + "."
    return text + (f" Varying: {', '.join(varying)}." if varying else "")


def _plot(results: Sequence[Result], metric: str, scale: float, label: str, out: Path, name: str,
          log: bool) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    _lines(ax, aggregate(results, metric), scale)
    ax.set_xlabel("depth N")
    ax.set_ylabel(label)
    ax.set_xscale("log")
    if log:
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return save_figure(fig, out, name)


def _plot_jacobian(results: Sequence[Result], out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, metric in zip(axes, ("jacobian_mean", "jacobian_var"), strict=True):
        _lines(ax, aggregate(results, metric), 1.0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("depth N")
        ax.set_title(metric.replace("_", " ") + " of the Jacobian's singular values (end of training)", fontsize=9)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    return save_figure(fig, out, "jacobian_vs_depth")


def _lines(ax: Any, cells: Mapping[tuple[str, int], list[float]], scale: float) -> None:
    for i, method in enumerate(sorted({m for m, _ in cells})):
        depths = sorted(d for m, d in cells if m == method)
        means = [_mean_std([scale * v for v in cells[method, d]])[0] for d in depths]
        ax.plot(depths, means, marker="o", color=f"C{i % 10}", label=method,
                linewidth=2.5 if method == "sao" else 1.2)
