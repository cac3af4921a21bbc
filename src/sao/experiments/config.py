"""The typed configuration of one run: model, method, data and training, saved resolved with the run.

A :class:`RunConfig` is four frozen parts — :class:`ModelConfig`, :class:`MethodConfig`,
:class:`DataConfig` and :class:`sao.training.TrainConfig` — plus the table it belongs to. The
field defaults of these dataclasses are the one source of defaults: the experiment presets
(:mod:`sao.experiments.spec`) and ``sao train``'s flags are built from them.

``RunConfig.to_dict()`` is what a run folder's ``config.json`` holds (``"format": 2``, nested
parts, every field resolved); :meth:`RunConfig.from_dict` reads it back. :meth:`RunConfig.identity`
is what decides a run — the resolved settings minus those the fields declare execution-only
(:func:`sao.training.decisive`: device, execution route, data folder) — and :func:`identity` its
form for stored configs, the run store's key. Formats written before the first release are not
read (``docs/run-store.md``, "Formats").

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
from sao.methods import METHODS
from sao.models import model_info
from sao.training import TrainConfig, decisive, execution_fields

__all__ = ["FORMAT", "PARTS", "DataConfig", "MethodConfig", "ModelConfig", "RunConfig", "execution_settings",
           "identity"]

#: The degree of a run that names none: the paper's FNN setting (98.4 % sparse 256-wide layers, Table 7).
DEFAULT_DEGREE = 4

#: The ``config.json`` format this version writes and reads.
FORMAT = 2


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}  # extra: the CLI flag name, sao.training.EXECUTION


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
        chosen = METHODS.get(self.name)
        if self.degree is not None:
            object.__setattr__(self, "degree", as_int(self.degree, "degree", minimum=1))
        if self.sparsity is not None:
            object.__setattr__(self, "sparsity", as_real(self.sparsity, "sparsity", low=0.0, high=1.0,
                                                         high_open=True))
        if self.degree is not None and self.sparsity is not None:
            raise ValueError(f"give a degree or a sparsity, not both (degree={self.degree}, sparsity={self.sparsity})")
        given = self.degree is not None or self.sparsity is not None
        if given != chosen.needs_target:
            raise ValueError(f"method={self.name!r} needs a degree or a sparsity" if chosen.needs_target else
                             f"method={self.name!r} takes no degree or sparsity")


@dataclass(frozen=True)
class DataConfig:
    """The dataset (:func:`sao.data.list_datasets`), where its files are, and how batches are made."""

    name: str = field(default="mnist5k", metadata=_help("a dataset of sao.data (mnist5k is embedded)",
                                                         flag="--dataset"))
    root: str | None = field(default=None, metadata=_help("folder with the dataset files", flag="--data-root",
                                                          execution=True))
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

    @property
    def label(self) -> str:
        """A readable run name: ``method[-sparsity%]-N<depth>-s<seed>`` (the start of its folder name)."""
        tag = "" if self.method.sparsity is None else f"-{100 * self.method.sparsity:g}"
        return f"{self.method.name}{tag}-N{self.model.depth}-s{self.train.seed}"

    def resolved(self) -> RunConfig:
        """The config with the model's defaults filled in (what is saved and compared)."""
        return dataclasses.replace(self, model=self.model.resolved())

    def identity(self) -> dict[str, Any]:
        """What decides the run: the resolved config's settings, part by part, without the execution-only ones.

        Two runs are the same exactly when these agree (the run store's key, :func:`identity`).
        """
        resolved = self.resolved()
        return {"experiment": resolved.experiment, **{part: decisive(getattr(resolved, part)) for part in PARTS}}

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready nested dict of ``config.json`` (``"format": 2``)."""
        return {"format": FORMAT, "experiment": self.experiment, "model": dataclasses.asdict(self.model),
                "method": dataclasses.asdict(self.method), "data": dataclasses.asdict(self.data),
                "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Read :meth:`to_dict` output.

        Raises:
            ValueError: another format, unknown keys (naming them and the known ones) or invalid values.
        """
        if data.get("format") != FORMAT:
            raise ValueError(f"config format {data.get('format')!r} is not known (this version reads {FORMAT})")
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


#: The parts of a run config, each a typed dataclass.
PARTS = ("model", "method", "data", "train")


def execution_settings() -> tuple[str, ...]:
    """``"part.field"`` of every setting declared execution-only (:data:`sao.training.EXECUTION`)."""
    return tuple(f"{part}.{name}" for part in PARTS for name in execution_fields(type(getattr(RunConfig(), part))))


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """:meth:`RunConfig.identity` of a stored config (:meth:`RunConfig.to_dict` output): the run store's key.

    Raises:
        ValueError: the config is not a valid run config.
    """
    try:
        return RunConfig.from_dict(config).identity()
    except TypeError as err:  # a value of the wrong type in a stored file
        raise ValueError(f"invalid run config: {err}") from None
