"""The typed run configuration of :func:`sao.training.train`, the paper's lr-by-depth rule and device choice."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sao._validation import as_int, as_real
from sao.training.schedule import SCHEDULES

__all__ = ["AMP_DTYPES", "TrainConfig", "lr_for_depth", "resolve_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")
#: Fields of version 0.1 that ``train()`` never read (the model's gain, the loaders' batch size); they
#: now live in the experiment's run config, and :meth:`TrainConfig.from_dict` drops them from old files.
RETIRED_FIELDS = ("gain", "batch_size")
#: Mixed-precision choices of :attr:`TrainConfig.amp` and the autocast dtype of each.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


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
        >>> cfg = TrainConfig(epochs=3, lr=lr_for_depth(200))
        >>> cfg.lr, TrainConfig.from_dict(cfg.to_dict()) == cfg
        (0.001, True)
    """

    epochs: int = field(default=100, metadata=_help("training epochs (paper §III-D2: 200 for LipConvNet)"))
    lr: float = field(default=1e-2, metadata=_help("peak learning rate (FNN-N: lr_for_depth, paper Table 2)"))
    momentum: float = field(default=0.9, metadata=_help("SGD momentum"))
    weight_decay: float = field(default=1e-4, metadata=_help("SGD L2 weight decay (coupled, as torch.optim.SGD)"))
    nesterov: bool = field(default=False, metadata=_help("Nesterov momentum (needs momentum > 0)"))
    schedule: str = field(default="constant", metadata=_help("lr schedule after warm-up (sao.training.SCHEDULES)"))
    milestones: tuple[int, ...] = field(default=(50, 150), metadata=_help(
        "multistep: 0-based epochs at which the lr is multiplied by gamma"))
    gamma: float = field(default=0.1, metadata=_help("multistep: factor per milestone"))
    warmup_epochs: int = field(default=0, metadata=_help(
        "linear warm-up epochs before the schedule: factor (e + 1) / (warmup_epochs + 1)"))
    seed: int = field(default=0, metadata=_help(
        "seeds torch, random and numpy at the start of a fresh run (experiments also seed the init and loaders)"))
    device: str = field(default="auto", metadata=_help("auto (CUDA if available, else CPU), cpu or cuda[:i]"))
    isometry_probe: int = field(default=8, metadata=_help(
        "probe examples for the Jacobian spectrum at init and after each epoch; 0 disables"))
    max_grad_norm: float | None = field(default=None, metadata=_help("clip the total gradient norm (None: none)"))
    amp: str | None = field(default=None, metadata=_help("mixed precision: bf16 or fp16 (None: float32)"))
    cudnn_benchmark: bool = field(default=False, metadata=_help(
        "let cuDNN pick the fastest conv algorithms (CUDA only; not bit-reproducible)"))
    fused: bool = field(default=True, metadata=_help(
        "run chains of blocked SparseLinear layers and blocked SparseConv2d layers on their fastest exact route "
        "(fused, dense or compiled where measured faster, else plain; sao.nn.dispatch): same function, an "
        "execution detail"))

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
        SCHEDULES.get(self.schedule)  # ValueError listing the known schedules

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``milestones`` as a list)."""
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys raise ``ValueError``.

        The :data:`RETIRED_FIELDS` of configs written by version 0.1 are dropped.
        """
        data = {k: v for k, v in data.items() if k not in RETIRED_FIELDS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known fields are: {', '.join(sorted(known))}")
        return cls(**data)


def _check(name: str, value: object, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"TrainConfig.{name}={value!r} is invalid; it must be {allowed}")


def lr_for_depth(depth: int) -> float:
    """The paper's FNN-N learning rate for depth ``N`` (paper Table 2, used for Table 7).

    The paper gives ``N ≤ 60: 1e-2``, ``200: 1e-3``, ``400: 1e-3``, ``600–1000: 1e-4``.
    Depths between table entries take the rate of the next listed depth up
    (``60 < N ≤ 400 → 1e-3``); every ``N > 400`` gets ``1e-4``.

    Example:
        >>> [lr_for_depth(n) for n in (50, 100, 400, 1000)]
        [0.01, 0.001, 0.001, 0.0001]
    """
    depth = as_int(depth, "depth", minimum=1)
    if depth <= 60:
        return 1e-2
    if depth <= 400:
        return 1e-3
    return 1e-4


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; any other name as given (never a hard-coded ``cuda``).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
