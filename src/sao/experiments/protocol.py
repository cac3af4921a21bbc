"""The paper's training protocol for one run of any table: data, ``-S``/``-T`` flow, result summary.

``-S`` methods, SAO and the other sparse-from-scratch constructions are applied to the
initialised model, which then trains ``epochs`` (in ``run_dir/train``). ``-T`` methods train the
dense model for ``epochs`` (``run_dir/dense``), are pruned, and fine-tune for ``epochs`` more
(``run_dir/finetune``), paper Fig. 1. Every phase is a resumable :func:`sao.training.train` call,
so an interrupted run continues where it stopped. The result adds to the training summary the
Jacobian spectrum at the start and end of the last phase and the sparsity measured from the
weights (:func:`measured_sparsity`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from sao.data import Splits, loaders
from sao.methods import connection_mask, sparsify
from sao.training import TrainConfig, read_metrics, resolve_device, train
from sao.training.distributed import world

__all__ = [
    "TRAINING_DEFAULTS",
    "data_loaders",
    "flush_denormals",
    "measured_sparsity",
    "train_config",
    "train_with_method",
]

#: Optional run-config keys of the training and their defaults (the paper's FNN settings, SPEC §4).
TRAINING_DEFAULTS: dict[str, Any] = {"momentum": 0.9, "weight_decay": 1e-4, "nesterov": False, "schedule": "constant",
                                     "warmup_epochs": 0, "max_grad_norm": None, "amp": None, "cudnn_benchmark": False,
                                     "fused": True}


def train_config(config: dict[str, Any], defaults: dict[str, Any] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of a run config; missing optional keys take ``defaults`` (or the FNN ones)."""
    opt = {k: config.get(k, v) for k, v in (defaults or TRAINING_DEFAULTS).items()}
    if "milestones" in config:
        opt["milestones"] = tuple(config["milestones"])
    return TrainConfig(epochs=config["epochs"], batch_size=config["batch_size"], lr=config["lr"],
                       gain=config["gain"], seed=config["seed"], device=config["device"], **opt)


def data_loaders(splits: Splits, config: dict[str, Any]) -> dict[str, DataLoader]:
    """Train/val/test loaders of a run: seeded, pinned for CUDA, sharded in a data-parallel group."""
    batches = loaders(splits, config["batch_size"], config["seed"], device=resolve_device(config["device"]),
                      shard=world())
    return dict(zip(("train", "val", "test"), batches, strict=True))


def _weight_sparsity(modules: list[nn.Module]) -> float:
    zeros = sum(int((m.weight == 0).sum()) for m in modules)
    return zeros / sum(m.weight.numel() for m in modules)


def measured_sparsity(model: nn.Module) -> dict[str, float]:
    """Sparsity measured from the model: zero weights in the sparsified layers (all, least and most
    sparse layer), in the dense layers and overall, and the fraction of missing connections
    (whole kernels, for convolutions; :func:`sao.methods.connection_mask`) of the least and most
    sparse sparsified layer."""
    layers = [m for m in model.modules() if isinstance(getattr(m, "weight", None), torch.Tensor)
              and m.weight.dim() >= 2]
    sparse = [m for m in layers if not bool(connection_mask(m).all())]
    dense = [m for m in layers if m not in sparse]
    per_layer = [_weight_sparsity([m]) for m in sparse]
    connections = [1.0 - connection_mask(m).double().mean().item() for m in sparse]
    return {"connection_sparsity_min": min(connections, default=0.0),
            "connection_sparsity_max": max(connections, default=0.0),
            "sparsity_sparse_layers": _weight_sparsity(sparse) if sparse else 0.0,
            "sparsity_sparse_layers_min": min(per_layer, default=0.0),
            "sparsity_sparse_layers_max": max(per_layer, default=0.0),
            "sparsity_dense_layers": _weight_sparsity(dense) if dense else 0.0,
            "sparsity_overall": _weight_sparsity(layers)}


def _jacobian_summary(metrics_dir: Path) -> dict[str, float | None]:
    lines = [r for r in read_metrics(metrics_dir / "metrics.jsonl") if r.get("jacobian_mean") is not None]
    return {"jacobian_mean_init": lines[0]["jacobian_mean"] if lines else None,
            "jacobian_var_init": lines[0]["jacobian_var"] if lines else None,
            "jacobian_mean": lines[-1]["jacobian_mean"] if lines else None,
            "jacobian_var": lines[-1]["jacobian_var"] if lines else None}


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush subnormal floats to zero inside the block (usable as a decorator); restored to off after.

    Collapsed (pruned) networks carry subnormal activations, which are 10-100x slower on CPUs;
    flushing them changes no result worth having (they are below 1e-38). The flag is global to
    the process, so it is switched off again on exit instead of leaking into later code.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def train_with_method(model: nn.Module, method: str, settings: dict[str, Any], data: dict[str, DataLoader],
                      cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """Sparsify ``model`` with ``method`` (``sparsify(model, method, **settings)``) and train it, resumably.

    ``"dense"`` trains the model as it is; names ending in ``-t`` train dense first, then prune
    and fine-tune (module docstring). Returns the training summary (without ``run_dir``), the
    Jacobian summary and :func:`measured_sparsity`; a run whose dense phase diverged returns
    that phase's summary with ``phase="dense"``. Run functions wrap the whole run, model
    construction included, in :func:`flush_denormals`.
    """
    if method.endswith("-t"):
        dense = train(model, data, cfg, Path(run_dir) / "dense", progress=False)
        if dense["status"] == "diverged":
            return {**dense, "phase": "dense", **measured_sparsity(model)}
        sparsify(model, method, **settings, strict=True)
        metrics_dir = Path(run_dir) / "finetune"
    else:
        if method != "dense":
            sparsify(model, method, **settings, strict=True)
        # a subfolder: train() writes its own config.json, which must not replace the run's
        metrics_dir = Path(run_dir) / "train"
    result = train(model, data, cfg, metrics_dir, progress=False)
    result = {k: v for k, v in result.items() if k != "run_dir"}
    return {**result, **_jacobian_summary(metrics_dir), **measured_sparsity(model)}
