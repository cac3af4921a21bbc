"""The typed configuration of one run: model, method, data and training, saved resolved with the run.

A :class:`RunConfig` is four frozen parts — :class:`ModelConfig`, :class:`MethodConfig`,
:class:`DataConfig` and :class:`sao.training.TrainConfig` — plus the table it belongs to. The
field defaults of these dataclasses are the one source of defaults: the experiment presets
(:mod:`sao.experiments.spec`) and ``sao train``'s flags are built from them.

``RunConfig.to_dict()`` is what a run folder's ``config.json`` holds (``"format": 2``, nested
parts, every field resolved); :meth:`RunConfig.from_dict` reads it back and also reads the flat
configs written by version 0.1 (:func:`from_flat`), so old run folders keep their meaning.
:func:`identity` is the canonical form two configs are compared by (the run store's key).

Example:
    >>> cfg = RunConfig(model=ModelConfig(depth=10), train=TrainConfig(epochs=1, lr=0.01))
    >>> cfg.label, RunConfig.from_dict(cfg.to_dict()) == cfg
    ('sao-N10-s0', True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sao._validation import as_int, as_real
from sao.data import NORMALIZATIONS, list_datasets
from sao.methods import METHODS, eco_methods
from sao.models import model_info
from sao.training import TrainConfig

__all__ = ["ADDED_LATER", "EXECUTION_ONLY", "FORMAT", "DataConfig", "MethodConfig", "ModelConfig", "RunConfig",
           "from_flat", "identity"]

#: The degree of a run that names none: the paper's FNN setting (98.4 % sparse 256-wide layers, Table 7).
DEFAULT_DEGREE = 4

#: The ``config.json`` format this version writes (version 0.1 wrote flat dicts, format 1).
FORMAT = 2


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class ModelConfig:
    """Which registered model (:data:`sao.models.MODELS`) and how it is built and initialised."""

    name: str = field(default="fnn", metadata=_help("a model of sao.models.MODELS", flag="--model"))
    depth: int = field(default=50, metadata=_help("the paper's depth N"))
    width: int | None = field(default=None, metadata=_help("channels (CNNs) or width; the model's own when not given"))
    activation: str | None = field(default=None, metadata=_help("activation; the choices depend on the model"))
    head: str | None = field(default=None, metadata=_help("classifier head, models with a choice (cnn: pool, conv)"))
    gain: float = field(default=1.0, metadata=_help("gain of the orthogonal initialisation of every layer"))

    def __post_init__(self) -> None:
        info = model_info(self.name)  # ValueError listing the models
        object.__setattr__(self, "depth", as_int(self.depth, "depth", minimum=1))
        if self.width is not None:
            object.__setattr__(self, "width", as_int(self.width, "width", minimum=1))
            if info.width_arg is None:
                raise ValueError(f"model {self.name!r} takes no width (its widths are fixed)")
        object.__setattr__(self, "gain", as_real(self.gain, "gain", low=0.0, low_open=True))
        _choice(self.name, "activation", self.activation, info.activations)
        _choice(self.name, "head", self.head, info.heads)

    def resolved(self) -> ModelConfig:
        """Every ``None`` that has a model default filled in; settings the model lacks set to ``None``."""
        info = model_info(self.name)
        return dataclasses.replace(self, width=None if info.width_arg is None else self.width or info.default_width,
                                   activation=self.activation or info.activations[0],
                                   head=(self.head or info.heads[0]) if info.heads else None)


def _choice(model: str, what: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        allowed = f"choose from {', '.join(choices)}" if choices else "it has none"
        raise ValueError(f"{what}={value!r} is not available for model {model!r}; {allowed}")


@dataclass(frozen=True)
class MethodConfig:
    """The sparsify method (:data:`sao.methods.METHODS`) and its target: a degree or a sparsity."""

    name: str = field(default="sao", metadata=_help("a method of sao.methods.METHODS", flag="--method"))
    degree: int | None = field(default=None, metadata=_help("SAO degree; other methods match its sparsity"))
    sparsity: float | None = field(default=None, metadata=_help("fraction of connections removed, in [0, 1)"))

    def __post_init__(self) -> None:
        METHODS.get(self.name)
        if self.degree is not None:
            object.__setattr__(self, "degree", as_int(self.degree, "degree", minimum=1))
        if self.sparsity is not None:
            object.__setattr__(self, "sparsity", as_real(self.sparsity, "sparsity", low=0.0, high=1.0,
                                                         high_open=True))
        if self.degree is not None and self.sparsity is not None:
            raise ValueError(f"give a degree or a sparsity, not both (degree={self.degree}, sparsity={self.sparsity})")


@dataclass(frozen=True)
class DataConfig:
    """The dataset (:func:`sao.data.list_datasets`), where its files are, and how batches are made."""

    name: str = field(default="mnist5k", metadata=_help("a dataset of sao.data (mnist5k is embedded)",
                                                         flag="--dataset"))
    root: str | None = field(default=None, metadata=_help("folder with the dataset files", flag="--data-root"))
    batch_size: int = field(default=128, metadata=_help("examples per SGD step (the global batch under torchrun)"))
    augment: bool = field(default=False, metadata=_help("random crops and flips (image datasets)"))
    normalize: str = field(default="dataset", metadata=_help(
        "inputs normalised with the dataset's statistics, or every feature to mean 0 and std 1 over the "
        "training split (sao.data.NORMALIZATIONS)"))

    def __post_init__(self) -> None:
        if self.name not in list_datasets():
            raise ValueError(f"dataset={self.name!r} is not known; choose from {', '.join(list_datasets())}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize={self.normalize!r} is not known; choose from {', '.join(NORMALIZATIONS)}")
        object.__setattr__(self, "batch_size", as_int(self.batch_size, "batch_size", minimum=1))
        if not isinstance(self.augment, bool):
            raise TypeError(f"augment must be True or False, got {self.augment!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides one run. ``experiment`` names the table the run belongs to."""

    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=lambda: MethodConfig(degree=DEFAULT_DEGREE))
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    experiment: str | None = None

    def __post_init__(self) -> None:
        info = model_info(self.model.name)
        if METHODS.get(self.method.name).needs_target and self.method.degree is None and self.method.sparsity is None:
            raise ValueError(f"method={self.method.name!r} needs a degree or a sparsity")
        if not info.sparse_at_construction or self.method.name == "sao":
            return
        if not METHODS.get(self.method.name).handles_eco:
            raise ValueError(f"method={self.method.name!r} is not available for {self.model.name} (its ECO layers "
                             f"take 'sao' = SAO-ECO, built at construction, or {', '.join(eco_methods())})")

    @property
    def label(self) -> str:
        """A readable run name: ``method[-sparsity%]-N<depth>-s<seed>`` (the start of its folder name)."""
        tag = "" if self.method.sparsity is None else f"-{100 * self.method.sparsity:g}"
        return f"{self.method.name}{tag}-N{self.model.depth}-s{self.train.seed}"

    def resolved(self) -> RunConfig:
        """The config with the model's defaults filled in (what is saved and compared)."""
        return dataclasses.replace(self, model=self.model.resolved())

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready nested dict of ``config.json`` (``"format": 2``)."""
        return {"format": FORMAT, "experiment": self.experiment, "model": dataclasses.asdict(self.model),
                "method": dataclasses.asdict(self.method), "data": dataclasses.asdict(self.data),
                "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Read :meth:`to_dict` output, or a flat version-0.1 config (:func:`from_flat`).

        Raises:
            ValueError: unknown keys (naming them and the known ones) or invalid values.
        """
        if "format" not in data:
            return from_flat(data)
        if data["format"] != FORMAT:
            raise ValueError(f"config format {data['format']!r} is not known (this version reads 1 and {FORMAT})")
        _known_keys(data, ("format", "experiment", "model", "method", "data", "train"), "run config")
        parts = {name: _part(kind, data.get(name, {}), name)
                 for name, kind in (("model", ModelConfig), ("method", MethodConfig), ("data", DataConfig))}
        train = data.get("train", {})
        if not isinstance(train, Mapping):
            raise ValueError(f"the train config must be a mapping of its fields, got {train!r}")
        experiment = data.get("experiment")
        if experiment is not None and not isinstance(experiment, str):
            raise ValueError(f"experiment must be a name or null, got {experiment!r}")
        return cls(**parts, train=TrainConfig.from_dict(dict(train)), experiment=experiment)


def _known_keys(data: Mapping[str, Any], known: tuple[str, ...] | list[str], what: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known keys are: {', '.join(sorted(known))}")


def _part(kind: type, data: Mapping[str, Any], name: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"the {name} config must be a mapping of its fields, got {data!r}")
    _known_keys(data, [f.name for f in dataclasses.fields(kind)], f"{name} config")
    return kind(**data)


#: Flat version-0.1 keys → (part, field) of the typed config.
_FLAT = {"model": ("model", "name"), "depth": ("model", "depth"), "width": ("model", "width"),
         "activation": ("model", "activation"), "head": ("model", "head"), "gain": ("model", "gain"),
         "method": ("method", "name"), "degree": ("method", "degree"), "sparsity": ("method", "sparsity"),
         "dataset": ("data", "name"), "data_root": ("data", "root"), "batch_size": ("data", "batch_size"),
         "augment": ("data", "augment")}
#: Version-0.1 defaults of keys a flat config could leave out (FNN-N runs of Table 7).
_FLAT_DEFAULTS = {"model": "fnn", "activation": "tanh"}


def from_flat(data: Mapping[str, Any]) -> RunConfig:
    """The typed config of a flat version-0.1 run config (``sao reproduce``/``sao train`` of 0.1).

    Keys map one to one (:data:`_FLAT`, the rest are :class:`TrainConfig` fields);
    ``soc_bound`` other than the default ``"certified"`` is no longer supported.

    Raises:
        ValueError: unknown keys or invalid values.
    """
    data = {**_FLAT_DEFAULTS, **data}
    if data.pop("soc_bound", "certified") != "certified":
        raise ValueError("soc_bound is no longer a run setting (runs use the certified SOC bound)")
    parts: dict[str, dict[str, Any]] = {"model": {}, "method": {}, "data": {}, "train": {}}
    experiment = data.pop("experiment", None)
    for key, value in data.items():
        part, name = _FLAT.get(key, ("train", key))
        parts[part][name] = value
    if not model_info(parts["model"]["name"]).heads:  # 0.1 recorded the vanilla CNN's head for every CNN table
        parts["model"].pop("head", None)
    return RunConfig(model=_part(ModelConfig, parts["model"], "model"), method=_part(MethodConfig, parts["method"],
                     "method"), data=_part(DataConfig, parts["data"], "data"),
                     train=TrainConfig.from_dict(parts["train"]), experiment=experiment)


#: Settings that do not change what a run computes: where the data lie, and whether sparse chains run fused.
EXECUTION_ONLY = (("data", "root"), ("train", "fused"))

#: Settings added after config format 2, with the value every run before them had: at that value
#: they are left out of :func:`identity`, so run folders written before keep their identity (and hash).
ADDED_LATER = {("data", "normalize"): "dataset"}


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical form of a stored config (either format): two runs are the same exactly when these match.

    The resolved config without the :data:`EXECUTION_ONLY` settings, without the settings of
    :data:`ADDED_LATER` at the value runs had before they existed, and without the multistep
    settings (``milestones``, ``gamma``) under another schedule: a run started with one of them
    is resumed and reported under the other.

    Raises:
        ValueError: the config is not a valid run config (either format).
    """
    try:
        canonical = RunConfig.from_dict(config).resolved().to_dict()
    except TypeError as err:  # a value of the wrong type in a stored file
        raise ValueError(f"invalid run config: {err}") from None
    for part, key in EXECUTION_ONLY:
        canonical[part].pop(key)
    for (part, key), before in ADDED_LATER.items():
        if canonical[part][key] == before:
            del canonical[part][key]
    if canonical["train"]["schedule"] != "multistep":
        del canonical["train"]["milestones"], canonical["train"]["gamma"]
    return canonical
