"""The typed run configuration of :func:`sao.training.train`, the paper's lr-by-depth rule and device choice."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sao._validation import as_int, as_real

__all__ = ["AMP_DTYPES", "TrainConfig", "lr_for_depth", "resolve_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")
#: Mixed-precision choices of :attr:`TrainConfig.amp` and the autocast dtype of each.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (saved, resolved, beside every result).

    Defaults follow the paper's FNN/CNN training (SPEC §4): SGD, momentum 0.9, weight decay
    1e-4, lr × 0.1 at epochs 50 and 150 when ``schedule="multistep"``.

    Integer fields accept any integer (``int``, numpy integer, 0-d integer tensor) and real
    fields any real number; both are stored as plain ``int``/``float`` so the config saves as
    JSON. A value of the wrong type (``"0.1"``, ``True``, ``3.0`` for an integer) is a
    ``TypeError``, one out of range (NaN included) a ``ValueError``; both name the field.

    Example:
        >>> cfg = TrainConfig(epochs=3, lr=lr_for_depth(200))
        >>> cfg.lr, TrainConfig.from_dict(cfg.to_dict()) == cfg
        (0.001, True)
    """

    epochs: int = 100  # number of training epochs (paper: 100 for FNN-N, 200 for LipConvNet)
    batch_size: int = 128  # batch size the caller should build its loaders with; recorded, not enforced
    lr: float = 1e-2  # peak learning rate; FNN-N uses lr_for_depth(N) (SPEC §4)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # SGD L2 weight decay (coupled, as torch.optim.SGD does it)
    nesterov: bool = False  # Nesterov momentum (needs momentum > 0)
    schedule: str = "constant"  # lr schedule after warm-up: a name in sao.training.SCHEDULES
    milestones: tuple[int, ...] = (50, 150)  # "multistep": epochs (0-based index) at which lr is multiplied by gamma
    gamma: float = 0.1  # "multistep": factor per milestone
    warmup_epochs: int = 0  # linear warm-up epochs before the schedule: factor (e + 1) / (warmup_epochs + 1)
    gain: float = 1.0  # init weight multiplier, recorded for the run; the model builder applies it, train() does not
    seed: int = 0  # seeds torch, random and numpy at the start of a fresh run (not the model init nor loader generator)
    device: str = "auto"  # "auto" (CUDA if available, else CPU), "cpu" or "cuda[:i]"
    isometry_probe: int = 8  # probe examples for the Jacobian spectrum at init and after each epoch; 0 disables
    max_grad_norm: float | None = None  # clip the total gradient norm to this value; None: no clipping
    amp: str | None = None  # mixed precision: None (float32), "bf16" or "fp16" (fp16 adds a gradient scaler)
    cudnn_benchmark: bool = False  # let cuDNN pick the fastest conv algorithms (CUDA only; not bit-reproducible)
    fused: bool = True  # run an nn.Sequential's chains of blocked SparseLinear layers fused (sao.nn.FusedSequential;
    #                     the compiled CPU kernel where it applies): same parameters and function, an execution detail

    def __post_init__(self) -> None:
        from sao.training.schedule import SCHEDULES  # here to avoid an import cycle

        def field(name: str, check: Any, **bounds: Any) -> None:
            object.__setattr__(self, name, check(getattr(self, name), f"TrainConfig.{name}", **bounds))

        if isinstance(self.milestones, str) or not isinstance(self.milestones, Sequence):
            raise TypeError(f"TrainConfig.milestones must be a sequence of integers, got {self.milestones!r}")
        object.__setattr__(self, "milestones", tuple(as_int(m, "TrainConfig.milestones", minimum=0)
                                                     for m in self.milestones))
        for name in ("epochs", "batch_size"):
            field(name, as_int, minimum=1)
        for name in ("warmup_epochs", "isometry_probe", "seed"):
            field(name, as_int, minimum=0)
        for name in ("lr", "gamma"):
            field(name, as_real, low=0.0, low_open=True)
        for name in ("momentum", "weight_decay"):
            field(name, as_real, low=0.0)
        field("gain", as_real)
        if self.max_grad_norm is not None:
            field("max_grad_norm", as_real, low=0.0, low_open=True)
        _check("nesterov", self.nesterov, not self.nesterov or self.momentum > 0, "False when momentum is 0")
        _check("device", self.device, isinstance(self.device, str) and self.device.split(":")[0] in DEVICE_CHOICES,
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
        """Rebuild a config from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known fields are: {', '.join(sorted(known))}")
        return cls(**data)


def _check(name: str, value: object, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"TrainConfig.{name}={value!r} is invalid; it must be {allowed}")


def lr_for_depth(depth: int) -> float:
    """The paper's FNN-N learning rate for depth ``N`` (SPEC §4, Table 7 settings).

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
