"""The typed run configuration of :func:`sao.training.train`, what decides a run, and the device choice.

**What decides a run** is declared once, on the fields of the typed configs (this
:class:`TrainConfig` and the experiment's run config): a field whose metadata has
:data:`EXECUTION` set chooses how a run executes, not what it computes (the device, the
execution route, where the data lie); one with :data:`ONLY_WITH` matters only while a sibling
field has a given value (the multistep settings under another schedule). :func:`decisive` reads
that declaration; a run's identity in the run store, its resume check, the settings an
experiment's variants may change and the reports' columns all come from it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sao._random import SEED_LIMIT
from sao._validation import as_int, as_real
from sao.training.schedule import SCHEDULES

__all__ = ["AMP_DTYPES", "EXECUTION", "ONLY_WITH", "TrainConfig", "decisive", "execution_fields", "resolve_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")
#: Field metadata key: ``True`` on a setting that chooses how a run executes, not what it computes.
EXECUTION = "execution"
#: Field metadata key: ``(sibling, value)``: the setting decides a run only while ``sibling`` has ``value``.
ONLY_WITH = "only_with"
#: Mixed-precision choices of :attr:`TrainConfig.amp` and the autocast dtype of each.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _help(text: str, **declared: Any) -> dict[str, Any]:
    return {"help": text, **declared}


def execution_fields(kind: type) -> tuple[str, ...]:
    """The names of the fields of the dataclass ``kind`` declared :data:`EXECUTION`."""
    return tuple(f.name for f in dataclasses.fields(kind) if f.metadata.get(EXECUTION))


def decisive(config: Any) -> dict[str, Any]:
    """The JSON-ready settings of the dataclass ``config`` that decide what a run computes (module docstring).

    Every field but those declared :data:`EXECUTION` and those whose :data:`ONLY_WITH` condition
    does not hold; values as ``config.to_dict()`` gives them (``dataclasses.asdict`` without one).

    Example:
        >>> sorted(set(TrainConfig().to_dict()) - set(decisive(TrainConfig())))
        ['cudnn_benchmark', 'deterministic', 'device', 'fused', 'gamma', 'milestones']
    """
    values = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    out = {}
    for f in dataclasses.fields(config):
        when = f.metadata.get(ONLY_WITH)
        if f.metadata.get(EXECUTION) or (when is not None and getattr(config, when[0]) != when[1]):
            continue
        out[f.name] = values[f.name]
    return out


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (saved, resolved, beside every result).

    Defaults follow the paper's FNN/CNN training (paper §III-C, §III-D1): SGD, momentum 0.9,
    weight decay 1e-4, lr × 0.1 at epochs 50 and 150 when ``schedule="multistep"``.

    Each field's ``metadata["help"]`` says what it does (``sao train --help`` shows it).
    Integer fields accept any integer (``int``, numpy integer, 0-d integer tensor) and real
    fields any real number; both are stored as plain ``int``/``float`` so the config saves as
    JSON. A value of the wrong type (``"0.1"``, ``True``, ``3.0`` for an integer) is a
    ``TypeError``, one out of range (NaN included) a ``ValueError``; both name the field.

    Example:
        >>> cfg = TrainConfig(epochs=3, lr=1e-3)
        >>> cfg.lr, TrainConfig.from_dict(cfg.to_dict()) == cfg
        (0.001, True)
    """

    epochs: int = field(default=100, metadata=_help("training epochs (paper §III-D2: 200 for LipConvNet)"))
    lr: float = field(default=1e-2, metadata=_help("peak learning rate (Table 7 sets it by depth, paper Table 2)"))
    momentum: float = field(default=0.9, metadata=_help("SGD momentum"))
    weight_decay: float = field(default=1e-4, metadata=_help("SGD L2 weight decay (coupled, as torch.optim.SGD)"))
    nesterov: bool = field(default=False, metadata=_help("Nesterov momentum (needs momentum > 0)"))
    schedule: str = field(default="constant", metadata=_help("lr schedule after warm-up (sao.training.SCHEDULES)"))
    milestones: tuple[int, ...] = field(default=(50, 150), metadata=_help(
        "multistep: 0-based epochs at which the lr is multiplied by gamma", only_with=("schedule", "multistep")))
    gamma: float = field(default=0.1, metadata=_help("multistep: factor per milestone",
                                                     only_with=("schedule", "multistep")))
    warmup_epochs: int = field(default=0, metadata=_help(
        "linear warm-up epochs before the schedule: factor (e + 1) / (warmup_epochs + 1)"))
    seed: int = field(default=0, metadata=_help(
        "seeds torch, random and numpy at the start of a fresh run (experiments also seed the init and loaders)"))
    device: str = field(default="auto", metadata=_help("auto (CUDA if available, else CPU), cpu or cuda[:i]",
                                                       execution=True))
    isometry_probe: int = field(default=8, metadata=_help(
        "probe examples for the Jacobian spectrum at init and after each epoch; 0 disables"))
    max_grad_norm: float | None = field(default=None, metadata=_help("clip the total gradient norm (None: none)"))
    amp: str | None = field(default=None, metadata=_help("mixed precision: bf16 or fp16 (None: float32)"))
    cudnn_benchmark: bool = field(default=False, metadata=_help(
        "let cuDNN pick the fastest conv algorithms (CUDA only; not bit-reproducible)", execution=True))
    fused: bool = field(default=True, metadata=_help(
        "run chains of blocked SparseLinear layers and blocked SparseConv2d layers on their fastest exact route "
        "(fused, dense or compiled where measured faster, else plain; sao.nn.dispatch): same function, an "
        "execution detail", execution=True))
    deterministic: bool = field(default=True, metadata=_help(
        "same seed, same numbers on this machine: train under torch.use_deterministic_algorithms (warn only), so "
        "sparse layers take fixed routes instead of timed ones (routes differ in float rounding); off: the "
        "fastest measured routes", execution=True))

    def __post_init__(self) -> None:
        def check(name: str, checker: Any, **bounds: Any) -> None:
            object.__setattr__(self, name, checker(getattr(self, name), f"TrainConfig.{name}", **bounds))

        if isinstance(self.milestones, str) or not isinstance(self.milestones, Sequence):
            raise TypeError(f"TrainConfig.milestones must be a sequence of integers, got {self.milestones!r}")
        object.__setattr__(self, "milestones", tuple(as_int(m, "TrainConfig.milestones", minimum=0)
                                                     for m in self.milestones))
        check("epochs", as_int, minimum=1)
        for name in ("warmup_epochs", "isometry_probe", "seed"):
            check(name, as_int, minimum=0)
        _check("seed", self.seed, self.seed < SEED_LIMIT, "below 2**32 (the seeds numpy takes)")
        for name in ("lr", "gamma"):
            check(name, as_real, low=0.0, low_open=True)
        for name in ("momentum", "weight_decay"):
            check(name, as_real, low=0.0)
        if self.max_grad_norm is not None:
            check("max_grad_norm", as_real, low=0.0, low_open=True)
        _check("nesterov", self.nesterov, not self.nesterov or self.momentum > 0, "False when momentum is 0")
        device_ok = isinstance(self.device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None
        _check("device", self.device, device_ok,
               f"one of {', '.join(DEVICE_CHOICES)} (cuda may carry an index, e.g. 'cuda:1')")
        _check("amp", self.amp, self.amp is None or self.amp in AMP_DTYPES, f"None or one of {', '.join(AMP_DTYPES)}")
        _check("cudnn_benchmark", self.cudnn_benchmark, isinstance(self.cudnn_benchmark, bool), "True or False")
        _check("fused", self.fused, isinstance(self.fused, bool), "True or False")
        _check("deterministic", self.deterministic, isinstance(self.deterministic, bool), "True or False")
        SCHEDULES.get(self.schedule)  # ValueError listing the known schedules

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``milestones`` as a list)."""
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known fields are: {', '.join(sorted(known))}")
        return cls(**data)


def _check(name: str, value: object, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"TrainConfig.{name}={value!r} is invalid; it must be {allowed}")


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; any other name as given (never a hard-coded ``cuda``).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
