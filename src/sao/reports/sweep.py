"""Turn a sweep folder into tables and figures: rows method, columns depth, mean ± std over seeds.

Reads the sweep through the run store (:class:`sao.experiments.RunStore`): only *finished* runs,
each as its typed :class:`~sao.experiments.RunConfig`; damaged folders (a config.json of another
format among them) are listed, never reported. A run's
``result.json`` holds the metrics named in :data:`METRICS` (a run that diverged reports its
accuracies as they were when it stopped, and is counted). A run with a sparsity (the CNN tables)
gets its own row, labelled ``"method sparsity%"`` (:func:`row_label`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator

from sao._files import plt, save_figure, write_table
from sao.experiments import EXPERIMENTS, ExperimentSpec, ModelConfig, RunConfig, RunStore, execution_settings, identity
from sao.experiments.protocol import training_history

__all__ = ["METRICS", "Result", "aggregate", "deviations_note", "load_results", "row_label", "row_labels",
           "runs_of", "settings_note", "table_rows", "training_curves", "write_report"]

METRICS = ("test_acc", "val_acc", "jacobian_mean", "jacobian_var")

#: A finished run: its typed config and its result.
Result = tuple[RunConfig, Mapping[str, Any]]


def load_results(sweep_dir: Path) -> tuple[list[Result], list[tuple[Path, str]]]:
    """The finished runs of a sweep folder (typed) and its damaged folders ``(folder, what is wrong)``."""
    store = RunStore(Path(sweep_dir), identity=identity)
    results = [(_stored_config(Path(r["run_dir"])), {k: v for k, v in r.items() if k != "config"})
               for r in store.finished()]
    return results, store.damaged()


def _stored_config(run_dir: Path) -> RunConfig:
    """The typed config a finished run folder holds (the store's ``"config"`` is only what decides the run)."""
    return RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))


def row_label(config: RunConfig) -> str:
    """The table row of a run: its method, followed by its sparsity in % when it has one.

    >>> from sao.experiments import MethodConfig
    >>> row_label(RunConfig()), row_label(RunConfig(method=MethodConfig("lmp-s", sparsity=0.96875)))
    ('sao', 'lmp-s 96.875%')
    """
    method = config.method
    return method.name if method.sparsity is None else f"{method.name} {100 * method.sparsity:g}%"


#: Settings that do not set a run apart from the others of its cell: the grid axes and where/how it ran.
_SAME_CELL = ("method.name", "method.sparsity", "model.depth", "train.seed", "data.root", "train.fused")


def row_labels(results: Sequence[Result]) -> list[str]:
    """The row of each run: :func:`row_label`, plus the settings that tell it apart from the other runs
    of its method and depth (besides the seed), so runs that differ are never averaged together.

    >>> from sao.experiments import ModelConfig
    >>> row_labels([(RunConfig(ModelConfig(depth=2)), {}), (RunConfig(ModelConfig(depth=2, gain=1.1)), {}),
    ...             (RunConfig(ModelConfig(depth=3)), {})])
    ['sao (gain 1)', 'sao (gain 1.1)', 'sao (gain 1)']
    """
    flats = [_flat(config) for config, _ in results]
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, (config, _) in enumerate(results):
        groups[row_label(config), config.model.depth].append(i)
    apart = sorted({k for members in groups.values() for k in flats[members[0]]
                    if k not in _SAME_CELL and len({_value(flats[i].get(k)) for i in members}) > 1})
    return [row_label(config) + (" (" + ", ".join(f"{_short(k)} {_value(flats[i].get(k))}" for k in apart) + ")"
                                 if apart else "") for i, (config, _) in enumerate(results)]


def _cells(results: Sequence[Result]) -> list[tuple[str, int]]:
    return [(label, config.model.depth) for label, (config, _) in zip(row_labels(results), results, strict=True)]


def aggregate(results: Sequence[Result], metric: str) -> dict[tuple[str, int], list[float]]:
    """``(row label, depth) -> [metric over seeds]`` for the runs that report ``metric`` (rows: :func:`row_labels`)."""
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)
    for cell, (_, result) in zip(_cells(results), results, strict=True):
        value = result.get(metric)
        if value is not None:
            cells[cell].append(float(value))
    return dict(cells)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def table_rows(results: Sequence[Result], metric: str = "test_acc", scale: float = 100.0,
               known: Mapping[tuple[str, int], float] | None = None, fmt: str = ".2f",
               best: bool = True) -> list[dict[str, str]]:
    """One row per method, one column per depth: the mean of ``metric × scale`` over seeds.

    A cell reads ``mean`` for one run and ``mean ± std`` for several (sample standard deviation);
    ``(n=k)`` is added where a cell has another number of runs than most. ``best`` puts the
    highest mean of each depth in bold. ``known`` maps ``(row label, depth)`` to the paper's
    number, shown as ``[paper X]`` in the cells that have one. Runs that diverged are counted and
    shown as ``(k diverged)``; their metrics are left out.

    >>> from sao.experiments import MethodConfig, ModelConfig
    >>> runs = [(RunConfig(ModelConfig(depth=10), MethodConfig(m, degree=None if m == "dense" else 4)), {"test_acc": a})
    ...         for m, a in (("sao", 0.9), ("sao", 0.8), ("dense", 0.7), ("dense", 0.6), ("rg-n", 0.5))]
    >>> for row in table_rows(runs, known={("dense", 10): 60.0}):
    ...     print(row)
    {'method': 'dense', 'N=10': '65.00 ± 7.07 [paper 60.00]'}
    {'method': 'rg-n', 'N=10': '50.00 (n=1)'}
    {'method': 'sao', 'N=10': '**85.00 ± 7.07**'}
    """
    cells = aggregate(results, metric)
    diverged: dict[tuple[str, int], int] = defaultdict(int)
    for cell, (_, result) in zip(_cells(results), results, strict=True):
        if result.get("status") == "diverged":
            diverged[cell] += 1
    methods = sorted({m for m, _ in cells} | {m for m, _ in diverged})
    depths = sorted({d for _, d in cells} | {d for _, d in diverged})
    stats = {cell: _mean_std([scale * v for v in values]) for cell, values in cells.items()}
    typical = _most_common([len(values) for values in cells.values()])
    top = {d: max((stats[m, d][0] for m in methods if (m, d) in stats), default=None) for d in depths}
    rows = []
    for method in methods:
        row = {"method": method}
        for depth in depths:
            text = "—"
            if (method, depth) in stats:
                (mean, std), n = stats[method, depth], len(cells[method, depth])
                text = f"{mean:{fmt}}" + (f" ± {std:{fmt}}" if n > 1 else "")
                if best and mean == top[depth] and len(methods) > 1:
                    text = f"**{text}**"
                text += f" (n={n})" if n != typical else ""
            if diverged.get((method, depth)):
                text += f" ({diverged[method, depth]} diverged)"
            if known and (method, depth) in known:
                text += f" [paper {known[method, depth]:.2f}]"
            row[f"N={depth}"] = text
        rows.append(row)
    return rows


def _most_common(counts: Sequence[int]) -> int | None:
    return max(set(counts), key=counts.count) if counts else None


def write_report(sweep_dir: Path, out: Path | None = None, experiment: ExperimentSpec | None = None) -> list[Path]:
    """Write ``report.md``/``.csv`` (test accuracy %), ``jacobian.md``/``.csv``, the PNGs
    ``accuracy_vs_depth`` and ``jacobian_vs_depth``, and — for the deepest depth — every epoch's test
    accuracy and Jacobian mean (``training_curves.md``/``.csv``/``.png``, :func:`training_curves`) into ``out``.

    ``experiment`` gives the title and the paper's numbers, and only its runs (those whose config
    names it) are reported; the runs of other tables are left out, and the notes say how many.
    Default: every run, under the experiment they name when they all name one. The paper's numbers
    are shown only beside runs on the paper's dataset.

    Raises:
        ValueError: if ``sweep_dir`` holds no finished run (of ``experiment``: naming the tables it holds).
    """
    results, damaged = load_results(Path(sweep_dir))
    if not results:
        raise ValueError(f"no finished runs in {sweep_dir} (a run is finished once its result.json is written)")
    results, left_out = runs_of(results, experiment, sweep_dir)
    experiment = experiment or _named_experiment(results)
    title, known = _title_and_known(results, experiment)
    notes = settings_note(results)
    for note in (deviations_note(results, experiment), left_out):
        notes += f" {note}" if note else ""
    if damaged:
        notes += f" Skipped {len(damaged)} damaged run folder(s): " + "; ".join(f"{p.name} ({why})"
                                                                              for p, why in damaged)
    out = Path(out or sweep_dir)
    runs = _most_common([len(v) for v in aggregate(results, "test_acc").values()]) or 1
    spread = f"mean ± std over {runs} seeds" if runs > 1 else "one seed"
    shown = any(cell in known for cell in _cells(results))
    marks = "**Bold**: the best at that depth." + (" [paper X]: the paper's number, where its text kept one."
                                                   if shown else "")
    files = [*write_table(table_rows(results, "test_acc", 100.0, known), out, "report",
                          f"{title}: test accuracy % ({spread})", f"{marks}\n\n{notes}")]
    files += write_table(table_rows(results, "jacobian_var", 1.0, fmt=".3g", best=False), out, "jacobian",
                         f"{title}: variance of the input–output Jacobian's singular values at the end of training "
                         f"({spread})", notes)
    files.append(_plot(results, "test_acc", 100.0, "test accuracy (%)", out, "accuracy_vs_depth", log=False))
    files.append(_plot_jacobian(results, out))
    deepest = max(config.model.depth for config, _ in results)
    curves = training_curves(Path(sweep_dir), results, deepest)
    if curves:
        files += write_table(curves, out, "training_curves", f"{title}: every epoch at N={deepest}", notes)
        files.append(_plot_curves(curves, deepest, out))
    else:  # no epoch lines (runs of another tool): no stale curves of an earlier report either
        for suffix in (".md", ".csv", ".png"):
            (out / f"training_curves{suffix}").unlink(missing_ok=True)
    return files


def training_curves(sweep_dir: Path, results: Sequence[Result], depth: int) -> list[dict[str, Any]]:
    """The epoch-by-epoch history of the runs at ``depth``: one row per (row label, seed, epoch line).

    Columns ``method`` (:func:`row_labels`), ``seed``, ``step`` and ``phase``
    (:func:`sao.experiments.protocol.training_history`: an after-training method's fine-tuning
    continues its dense phase), ``test_acc`` (%, ``None`` without a test split) and
    ``jacobian_mean`` (mean singular value of the input–output Jacobian). Run folders are looked up
    in ``sweep_dir`` by name, so a moved sweep folder still reads.
    """
    rows = []
    for (config, result), label in zip(results, row_labels(results), strict=True):
        if config.model.depth != depth or not result.get("run_dir"):
            continue
        for line in training_history(Path(sweep_dir) / Path(result["run_dir"]).name):
            acc = line.get("test_acc")
            rows.append({"method": label, "seed": config.train.seed, "step": line["step"], "phase": line["phase"],
                         "test_acc": None if acc is None else round(100.0 * acc, 2),
                         "jacobian_mean": line.get("jacobian_mean")})
    return sorted(rows, key=lambda row: (row["method"], row["seed"]))  # stable: each run's lines stay in order


def runs_of(results: Sequence[Result], experiment: ExperimentSpec | None, sweep_dir: Path) -> tuple[list[Result], str]:
    """The runs of ``experiment`` (every run when ``None``) and a note on the runs of other tables (``""``: none).

    Raises:
        ValueError: none of ``results`` (the runs of ``sweep_dir``) is of ``experiment``; it names the
            tables they are of.
    """
    if experiment is None:
        tables = Counter(config.experiment for config, _ in results)
        return list(results), (f"The runs are of several tables: {_tables(tables)} (sao report --experiment NAME "
                                "reports one)." if len(tables) > 1 else "")
    name = experiment.base.experiment
    kept = [(config, result) for config, result in results if config.experiment == name]
    others = Counter(config.experiment for config, _ in results if config.experiment != name)
    if not kept:
        raise ValueError(f"{sweep_dir} holds no finished runs of {name}, only runs of {_tables(others)}")
    return kept, f"Left out the runs of other tables: {_tables(others)}." if others else ""


def _tables(counts: Counter) -> str:
    """``"table7 (8 runs), table10 (1 run)"``: how many runs each table (``None``: no table) has."""
    return ", ".join(f"{table or 'no table'} ({n} run{'s' * (n > 1)})" for table, n in sorted(
        counts.items(), key=lambda item: (len(item[0] or ""), item[0] or "")))


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
_GRID_KEYS = ("method.name", "model.depth", "train.seed", "method.sparsity", *execution_settings())


def _flat(config: RunConfig) -> dict[str, Any]:
    """The settings that decide the run (:meth:`RunConfig.identity`, which resolves the config: no execution-only or
    inapplicable ones), flat: ``{"part.field": value}``."""
    return {f"{part}.{k}": v for part, values in config.identity().items() if isinstance(values, dict)
            for k, v in values.items()}


#: A method's target: ``None`` there is "not given" (the dense baseline's degree, the sparsity of a run given a
#: degree), so it neither varies nor is printed; elsewhere ``None`` is a value like any other (``amp None``).
_TARGET = ("method.degree", "method.sparsity")

#: Settings named in every note; the others only where they differ from the dataclasses' defaults.
_ALWAYS = ("model.name", "data.name", "data.batch_size", "train.epochs", "train.lr")
_NAMES = {"model.name": "model", "data.name": "dataset", "data.batch_size": "batch", "train.lr": "lr"}


def _short(key: str) -> str:
    return _NAMES.get(key, key.split(".", 1)[1].replace("_", " "))


def _value(value: Any) -> str:
    """A setting's value as the report shows it: ``0.001``, ``"2 4"`` for a list, ``"none"`` for ``None``."""
    if value is None:
        return "none"
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else f"{value:g}" if isinstance(
        value, float) else str(value)


def settings_note(results: Sequence[Result]) -> str:
    """A short line of the settings: what every run shares (defaults left out) and what varies, and how.

    >>> from sao.experiments import ModelConfig
    >>> from sao.training import TrainConfig
    >>> note = settings_note([(RunConfig(ModelConfig(depth=10, gain=1.1), train=TrainConfig(lr=0.01)), {}),
    ...                       (RunConfig(ModelConfig(depth=200, gain=1.1), train=TrainConfig(lr=0.001)), {})])
    >>> print(*note.split("; "), sep="\\n")
    Settings: model fnn, dataset mnist5k, batch 128, epochs 100, gain 1.1
    lr 0.01 (N=10), 0.001 (N=200)
    the rest at their defaults (sao train --help).
    """
    configs = [(config, _flat(config)) for config, _ in results]
    defaults = _flat(RunConfig(model=dataclasses.replace(ModelConfig(), name=results[0][0].model.name)))
    keys = [k for k in configs[0][1] if k not in _GRID_KEYS]
    values = {k: [flat[k] for _, flat in configs if not (k in _TARGET and flat.get(k) is None)] for k in keys}
    shared = [k for k in keys if all(v == values[k][0] for v in values[k])]
    parts = [f"{_short(k)} {_value(values[k][0])}" for k in sorted(shared, key=_order)
             if values[k] and (k in _ALWAYS or values[k][0] != defaults.get(k))]
    varying = [_varying(k, configs) for k in keys if k not in shared]
    return "Settings: " + ", ".join(parts) + "".join(f"; {v}" for v in varying) + \
        "; the rest at their defaults (sao train --help)."


def deviations_note(results: Sequence[Result], experiment: ExperimentSpec | None) -> str:
    """One line: where this sweep's settings differ from the ``paper`` preset of ``experiment`` ('' if nowhere).

    Each run is compared with its twin in the paper's grid (:meth:`ExperimentSpec.twin`: same method,
    depth and seed) on what decides a run (:func:`sao.experiments.identity`), plus the number of seeds.

    >>> from sao.experiments import EXPERIMENTS
    >>> t7 = EXPERIMENTS.get("table7")
    >>> print(*deviations_note([(c, {}) for c in t7.runs("quick")], t7).split("), "), sep="),\\n")
    Deviations from the paper's settings: dataset mnist5k (paper mnist),
    batch 32 (paper 128),
    epochs 2 (paper 100),
    lr 0.001 (paper 0.0001, 0.01),
    gain 1.02 (paper 1.1),
    1 seed (paper 3).
    """
    if experiment is None or "paper" not in experiment.presets:
        return ""
    ours: dict[str, set[str]] = defaultdict(set)
    paper: dict[str, set[str]] = defaultdict(set)
    runs: Counter[str] = Counter()  # how many runs deviate in each setting
    for config, _ in results:
        mine, theirs = (_flat(c) for c in (config, experiment.twin("paper", config)))
        for key in [k for k in mine if k in theirs and k not in _SAME_CELL and k != "train.device"]:  # field order
            if mine[key] != theirs[key]:
                ours[key].add(_value(mine[key]))
                paper[key].add(_value(theirs[key]))
                runs[key] += 1
    parts = [f"{_short(k)} {', '.join(sorted(ours[k]))} (paper {', '.join(sorted(paper[k]))}"
             + (f"; {runs[k]} of {len(results)} runs" if runs[k] < len(results) else "") + ")"
             for k in sorted(ours, key=_order)]
    seeds, paper_seeds = len({c.train.seed for c, _ in results}), len(experiment.preset("paper").seeds)
    if seeds != paper_seeds:
        parts.append(f"{seeds} seed{'s' * (seeds > 1)} (paper {paper_seeds})")
    return f"Deviations from the paper's settings: {', '.join(parts)}." if parts else ""


def _order(key: str) -> int:
    return _ALWAYS.index(key) if key in _ALWAYS else len(_ALWAYS)


def _varying(key: str, configs: Sequence[tuple[RunConfig, dict[str, Any]]]) -> str:
    """``"lr 0.01 (N=10, 50), 0.001 (N=200)"``: each value of a varying setting and the depths that have it;
    ``"amp none, bf16 (by row)"`` where values share a depth (the table's rows name each run's)."""
    depths: dict[str, set[int]] = defaultdict(set)
    for config, flat in configs:
        depths[_value(flat.get(key))].add(config.model.depth)
    if sum(map(len, depths.values())) > len(set().union(*depths.values())):  # not by depth: the rows tell them apart
        return f"{_short(key)} {', '.join(depths)} (by row)"
    return f"{_short(key)} " + ", ".join(f"{value} (N={', '.join(map(str, sorted(ds)))})"
                                          for value, ds in sorted(depths.items(), key=lambda kv: min(kv[1])))


def _plot(results: Sequence[Result], metric: str, scale: float, label: str, out: Path, name: str,
          log: bool) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    _lines(ax, aggregate(results, metric), scale, log=log)
    ax.set_xlabel("depth N")
    ax.set_ylabel(label)
    ax.set_xscale("log")
    if log:
        ax.set_yscale("log")
    _legend(ax)
    return save_figure(fig, out, name)


def _plot_jacobian(results: Sequence[Result], out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    colors = _colors(sorted(set(row_labels(results))))
    for ax, metric in zip(axes, ("jacobian_mean", "jacobian_var"), strict=True):
        _lines(ax, aggregate(results, metric), 1.0, colors, log=True)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("depth N")
        ax.set_title(metric.replace("_", " ") + " of the Jacobian's singular values (end of training)", fontsize=9)
    _legend(axes[-1])
    return save_figure(fig, out, "jacobian_vs_depth")


#: The series of an after-training method's fine-tuning, beside its dense phase (same colour, dashed).
_PRUNED = " after pruning"


def _plot_curves(curves: Sequence[Mapping[str, Any]], depth: int, out: Path) -> Path:
    """Test accuracy and the Jacobian's mean singular value after every epoch, per method (± std over seeds).

    An after-training method's fine-tuning is its own dashed series (its first point: just pruned),
    so the pruned network is never averaged with the dense one it came from.
    """
    methods = sorted({row["method"] for row in curves})
    colors = _colors(methods)
    colors.update({m + _PRUNED: c for m, c in colors.items()})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, metric, label in zip(axes, ("test_acc", "jacobian_mean"),
                                 ("test accuracy (%)", "Jacobian mean singular value (0: not drawn)"), strict=True):
        cells: dict[tuple[str, int], list[float]] = defaultdict(list)
        for row in curves:
            value = row[metric]
            if value is not None and (metric == "test_acc" or value > 0):
                cells[row["method"] + (_PRUNED if row["phase"] == "finetune" else ""), row["step"]].append(value)
        _lines(ax, cells, 1.0, colors, log=metric == "jacobian_mean")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epochs trained (after-training methods: dense, then pruned and fine-tuned)")
        ax.set_ylabel(label)
        if metric == "jacobian_mean":
            ax.set_yscale("log")
        ax.set_title(f"N = {depth}: {label.split(' (')[0]} after every epoch", fontsize=9)
    _legend(axes[0])  # every row has an accuracy; a Jacobian of 0 (a disconnected network) is not drawn
    return save_figure(fig, out, "training_curves")


def _colors(names: Sequence[str]) -> dict[str, Any]:
    """A distinct colour per row: the default cycle up to 10 rows, ``tab20`` up to 20, then a spread of ``turbo``."""
    if len(names) <= 10:
        return {n: f"C{i}" for i, n in enumerate(names)}
    cmap = plt.get_cmap("tab20" if len(names) <= 20 else "turbo")
    return {n: cmap(i if len(names) <= 20 else i / (len(names) - 1)) for i, n in enumerate(names)}


def _legend(ax: Any) -> None:
    """The legend inside the axes for a few rows, to their right for many (so it never hides the data)."""
    handles = ax.get_legend_handles_labels()[0]
    if len(handles) > 6:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    elif handles:
        ax.legend(fontsize=8)


def _lines(ax: Any, cells: Mapping[tuple[str, int], list[float]], scale: float,
           colors: Mapping[str, Any] | None = None, *, log: bool = False) -> None:
    """Per row: the mean over seeds, a band of ± one std, and every seed's value as a dot.

    ``colors`` fixes each row's colour (default :func:`_colors`), so panels missing a row still agree;
    SAO's rows are drawn thicker, fine-tuning after pruning dashed. With ``log`` (a log axis) the
    mean and band are geometric (taken over log10 of the positive values), as the axis shows them.
    """
    names = sorted({m for m, _ in cells})
    colors = colors or _colors(names)
    for method in names:
        depths = sorted(d for m, d in cells if m == method)
        bands = [_band([scale * v for v in cells[method, d]], log) for d in depths]
        color = colors[method]
        ax.plot(depths, [b[0] for b in bands], marker="o", color=color, label=method,
                linewidth=2.5 if method.split()[0] == "sao" else 1.2,
                linestyle="--" if method.endswith(_PRUNED) else "-")
        ax.fill_between(depths, [b[1] for b in bands], [b[2] for b in bands], color=color, alpha=0.15, linewidth=0)
        if any(len(cells[method, d]) > 1 for d in depths):
            ax.scatter(*zip(*[(d, scale * v) for d in depths for v in cells[method, d]], strict=True), color=color,
                       s=6, alpha=0.5)


def _band(values: Sequence[float], log: bool) -> tuple[float, float, float]:
    """``(centre, low, high)``: mean ± std, or for a log axis the same over log10 of the positive values."""
    if not log:
        mean, std = _mean_std(values)
        return mean, mean - std, mean + std
    logs = [math.log10(v) for v in values if v > 0]
    if not logs:
        return math.nan, math.nan, math.nan
    mean, std = _mean_std(logs)
    return 10 ** mean, 10 ** (mean - std), 10 ** (mean + std)
