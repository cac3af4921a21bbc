"""One schema for every table of the paper: :class:`ExperimentSpec` (settings, presets, known numbers).

An experiment is a title, the settings every run shares (a :class:`~sao.experiments.RunConfig`,
``base``), a grid per preset (:class:`Preset`: methods × sparsities × variants × depths × seeds,
plus the settings the preset changes), and the paper's surviving numbers. :meth:`ExperimentSpec.runs`
expands a preset into typed run configs; every run goes through the one run function
:func:`sao.experiments.protocol.run_experiment`. Table 7 (:mod:`sao.experiments.table7`) and
Tables 8–12 (:mod:`sao.experiments.cnn`) are instances registered in :data:`EXPERIMENTS`; adding a
table is one more instance (``docs/extending.md``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sao._registry import Registry
from sao.experiments.config import MethodConfig, RunConfig, execution_settings
from sao.methods import METHODS

__all__ = ["EXPERIMENTS", "ExperimentSpec", "Preset", "experiment_for_model"]


@dataclass(frozen=True)
class Preset:
    """A preset of an experiment: the grid, and the settings it changes (``None``: the experiment's).

    Attributes:
        methods, depths, seeds: grid axes (method names of :data:`sao.methods.METHODS`).
        sparsities: one run per sparsity for every method that takes a target (the dense
            baseline runs once, without one); ``()`` runs every method at the experiment's own
            degree/sparsity (Table 7).
        description: one line for ``--help`` and listings.
        epochs, dataset, batch_size, width, augment, schedule, warmup_epochs, gain, lr: settings
            that differ from the experiment's ``base``; ``lr`` replaces the experiment's rule.
        variants: a study's axis: settings ``"part.field" → value`` (``{"model.gain": 1.05}``,
            ``{"data.normalize": "feature"}``; parts ``model``, ``data``, ``train``) applied on top of
            the preset's, one run per variant for every method, target, depth and seed (``{}``: the
            preset as it is). ``()`` runs the preset once. Reports give each variant its own row.
    """

    methods: tuple[str, ...]
    depths: tuple[int, ...]
    epochs: int
    description: str
    seeds: tuple[int, ...] = (0,)
    sparsities: tuple[float, ...] = ()
    dataset: str | None = None
    batch_size: int | None = None
    width: int | None = None
    augment: bool | None = None
    schedule: str | None = None
    warmup_epochs: int | None = None
    gain: float | None = None
    lr: float | None = None
    variants: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.variants, tuple) or not all(isinstance(v, Mapping) for v in self.variants):
            raise TypeError(f"variants must be a tuple of mappings 'part.field' -> value, got {self.variants!r}")
        for variant in self.variants:
            for key in variant:
                _check_variant_key(key)


#: The parts of a run config a variant may change (the method, depth and seed are the grid's own axes).
_VARIED_PARTS = ("model", "data", "train")
#: Settings a variant may not change: the grid's axes, the model, and where or how a run executes.
_FIXED = ("model.name", "model.depth", "train.seed", *execution_settings())


def _check_variant_key(key: Any) -> None:
    """``ValueError`` unless ``key`` names a setting a variant may change (``"part.field"``), naming the choices."""
    part, _, name = str(key).partition(".")
    if part not in _VARIED_PARTS:
        raise ValueError(f"variant setting {key!r}: a variant changes {', '.join(_VARIED_PARTS)} settings "
                         "('part.field', e.g. 'model.gain'); method, depth and seed are the grid's axes")
    names = [f.name for f in dataclasses.fields(getattr(RunConfig(), part))
             if f.init and f"{part}.{f.name}" not in _FIXED]
    if name not in names:
        raise ValueError(f"variant setting {key!r} cannot be varied; {part} settings a variant may change: "
                         f"{', '.join(names)} (not {', '.join(k for k in _FIXED if k.startswith(part + '.'))})")


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class ExperimentSpec:
    """A table of the paper as data: its shared settings, its presets and its known numbers.

    Attributes:
        title: the table's caption (reports print it).
        base: the settings every run shares; each run replaces its model depth, method,
            sparsity and seed, and the preset's settings.
        presets: name → :class:`Preset` (``quick``, ``cpu`` and ``paper`` by convention).
        lr_by_depth: the learning rate of a depth (Table 7: :func:`sao.experiments.table7.lr_for_depth`);
            ``None``: ``base.train.lr``. A preset's ``lr`` overrides both.
        milestones_at: multistep milestones as fractions of the epochs (Tables 8–12: 0.25 and
            0.75, the paper's 50/150 of 200); ``None``: ``base.train.milestones``.
        known: ``(row, depth) → accuracy %`` the paper's text kept; a row is a method name, with
            `` S%`` appended when the grid has sparsities (``"sao 87.5%"``).
        dataset: the paper's dataset; its numbers are shown only beside runs on it.
    """

    title: str
    base: RunConfig
    presets: Mapping[str, Preset]
    lr_by_depth: Callable[[int], float] | None = None
    milestones_at: tuple[float, ...] | None = None
    known: Mapping[tuple[str, int], float] = field(default_factory=dict)
    dataset: str | None = None

    def preset(self, name: str) -> Preset:
        """The preset ``name`` (``ValueError`` listing the presets)."""
        if name not in self.presets:
            raise ValueError(f"preset={name!r} is not known; choose from {', '.join(self.presets)}")
        return self.presets[name]

    def settings(self, preset: str) -> RunConfig:
        """The settings every run of ``preset`` shares (depth, method and seed still the base's)."""
        p = self.preset(preset)
        base = self.base
        epochs = p.epochs
        train = _given(epochs=epochs, schedule=p.schedule, warmup_epochs=p.warmup_epochs, lr=p.lr)
        train.update({k: v for k, v in self.rules(base.model.depth, epochs).items() if k == "milestones"})
        return dataclasses.replace(
            base, model=dataclasses.replace(base.model, **_given(width=p.width, gain=p.gain)),
            data=dataclasses.replace(base.data, **_given(name=p.dataset, batch_size=p.batch_size, augment=p.augment)),
            train=dataclasses.replace(base.train, **train))

    def runs(self, preset: str, *, data_root: str | None = None,
             train: Mapping[str, Any] | None = None) -> list[RunConfig]:
        """The resolved run configs of ``preset``: method × sparsity × variant × depth × seed, in that order.

        ``data_root`` and ``train`` (``TrainConfig`` fields such as ``device``, ``amp``) apply to
        every run. Raises ``ValueError`` for an unknown preset, method or setting.
        """
        shared = self.settings(preset)
        shared = dataclasses.replace(shared, data=dataclasses.replace(shared.data, root=data_root),
                                     train=dataclasses.replace(shared.train, **(train or {})))
        grid = self._grid(preset)
        runs = [_vary(self._cell(shared, self.preset(preset), *cell), variant) for cell, variant in grid]
        seen: dict[str, str] = {}
        for config, (_, variant) in zip(runs, grid, strict=True):
            label = config.label + _tag(variant)  # a variant never changes method, depth or seed
            key = repr(config)
            if key in seen:
                raise ValueError(f"preset {preset!r} makes the same run twice ({seen[key]} and {label}): "
                                 "a variant repeats the preset's settings or another variant")
            seen[key] = label
        return runs

    def run_labels(self, preset: str) -> list[str]:
        """The names of :meth:`runs`'s runs, in order: :attr:`RunConfig.label`, then the variant's settings.

        >>> from sao.experiments import EXPERIMENTS
        >>> EXPERIMENTS.get("table7").run_labels("study")[2:4]  # a variant, then the preset itself
        ['sao-N1000-s2-gain1', 'sao-N1000-s0']
        """
        settings = self.settings(preset)
        return [self._cell(settings, self.preset(preset), *cell).label + _tag(variant)
                for cell, variant in self._grid(preset)]

    def _grid(self, preset: str) -> list[tuple[tuple[MethodConfig, int, int], Mapping[str, Any]]]:
        """``((target, depth, seed), variant)`` of every run, in the order of :meth:`runs`."""
        p = self.preset(preset)
        variants = p.variants or ({},)
        return [((target, depth, seed), variant) for method in p.methods for target in self._targets(method, p)
                for variant in variants for depth in p.depths for seed in p.seeds]

    def rules(self, depth: int, epochs: int) -> dict[str, Any]:
        """The training settings the table derives from a run's depth and epochs (``lr``, ``milestones``).

        >>> from sao.experiments import EXPERIMENTS
        >>> EXPERIMENTS.get("table7").rules(200, 3), EXPERIMENTS.get("table8").rules(32, 20)
        ({'lr': 0.001}, {'milestones': (5, 15)})
        """
        derived: dict[str, Any] = {}
        if self.lr_by_depth is not None:
            derived["lr"] = self.lr_by_depth(depth)
        if self.milestones_at is not None:
            # at least epoch 1: a milestone at 0 would cut the lr before the first step (a run of < 4 epochs)
            derived["milestones"] = tuple(max(1, int(f * epochs)) for f in self.milestones_at)
        return derived

    def twin(self, preset: str, config: RunConfig) -> RunConfig:
        """``config``'s run as ``preset`` makes it: the same method, target, depth and seed, the preset's settings.

        Reports use it to state how a sweep deviates from the ``paper`` preset.
        """
        return self._cell(self.settings(preset), self.preset(preset), config.method, config.model.depth,
                          config.train.seed)

    def _targets(self, method: str, preset: Preset) -> list[MethodConfig]:
        if not METHODS.get(method).needs_target:  # the dense baseline: one run, at no target
            return [MethodConfig(method)]
        if not preset.sparsities:
            return [dataclasses.replace(self.base.method, name=method)]
        return [MethodConfig(method, sparsity=s) for s in preset.sparsities]

    def _cell(self, shared: RunConfig, preset: Preset, method: MethodConfig, depth: int, seed: int) -> RunConfig:
        rule = {k: v for k, v in self.rules(depth, preset.epochs).items() if k == "lr" and preset.lr is None}
        return dataclasses.replace(shared, model=dataclasses.replace(shared.model, depth=depth), method=method,
                                   train=dataclasses.replace(shared.train, seed=seed, **rule)).resolved()


def _tag(variant: Mapping[str, Any]) -> str:
    """A variant in a run's name: ``{"model.gain": 1.05}`` → ``-gain1.05`` (``""`` for the preset itself).

    Floats as ``:g`` (``1.0`` → ``1``), sequences joined by ``_``, anything but letters, digits,
    ``.``, ``+`` and ``-`` replaced by ``_`` (the name starts a folder name).
    """
    def text(value: Any) -> str:
        if isinstance(value, list | tuple):
            return "_".join(map(text, value))
        return f"{value:g}" if isinstance(value, float) else str(value)

    return "".join(re.sub(r"[^A-Za-z0-9.+-]", "_", f"-{str(key).partition('.')[2]}{text(value)}")
                   for key, value in variant.items())


def _vary(config: RunConfig, variant: Mapping[str, Any]) -> RunConfig:
    """``config`` with a preset variant's settings (``"part.field" → value``).

    Raises:
        ValueError: a value its config refuses (naming it).
    """
    changes: dict[str, dict[str, Any]] = {}
    for key, value in variant.items():  # keys were checked when the Preset was made
        part, _, name = str(key).partition(".")
        changes.setdefault(part, {})[name] = value
    try:
        return dataclasses.replace(config, **{part: dataclasses.replace(getattr(config, part), **fields)
                                              for part, fields in changes.items()}).resolved()
    except TypeError as err:
        raise ValueError(f"variant {dict(variant)!r}: {err}") from None


EXPERIMENTS: Registry[ExperimentSpec] = Registry("experiment", "sao.experiments.EXPERIMENTS")


def experiment_for_model(model: str) -> str | None:
    """The first experiment (in natural order: table7 before table10) whose runs use ``model``, else ``None``.

    ``sao train`` takes its defaults from it.
    """
    def natural(name: str) -> list[Any]:
        return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]

    names = sorted(EXPERIMENTS.names(), key=natural)
    return next((name for name in names if EXPERIMENTS.get(name).base.model.name == model), None)
