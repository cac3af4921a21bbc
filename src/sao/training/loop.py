"""The training loop: ``train(model, {"train": ..., "val": ...}, config, run_dir)``.

Reads top to bottom: set up (device, SGD, schedule, isometry probe), resume from
``run_dir/checkpoint.pt`` or start afresh (epoch-0 line and checkpoint), then per epoch: train,
evaluate, measure the Jacobian spectrum, append a line to ``metrics.jsonl``, write the checkpoint
atomically, call ``on_epoch_end``. Files in ``run_dir``:

- ``config.json``: the resolved config (``config``, ``device``, ``torch`` version, ``model_class``);
- ``metrics.jsonl`` / ``metrics.csv``: one line per epoch (see :mod:`sao.training.metrics`);
- ``checkpoint.pt``: the state after the last finished epoch (see :mod:`sao.training.checkpoint`).

**Resume.** Calling :func:`train` again with the same ``run_dir`` and config continues after the
last checkpointed epoch (a finished or diverged run does nothing more) and gives bit-identical
weights to an uninterrupted run on CPU: model, optimizer, scheduler, the torch/CUDA/Python/numpy
RNGs and the train loader's shuffling generator are restored, and ``metrics.jsonl`` lines newer
than the checkpoint (written before a crash) are dropped. For exact shuffling build the train
loader with ``generator=torch.Generator().manual_seed(...)`` (without one, shuffling draws from the
global torch RNG, which is restored as well, but is shared with everything else). The validation
set picks nothing: the test set, when given, is only reported.

**Interruption.** Any exception (``KeyboardInterrupt`` included) ends the call; the checkpoint of the
last finished epoch stays valid. ``on_epoch_end(row)`` runs after each epoch's checkpoint is
written — the place for an external stop (raise) or extra logging.

**Divergence.** When the training loss becomes NaN or ±inf the epoch stops, its line is written
with ``status = "diverged"`` (metrics ``null``), and :func:`train` returns ``status="diverged"``.

**Devices and precision.** ``config.device`` ``"auto"`` takes CUDA when present; ``config.amp``
runs forward and loss under ``torch.autocast`` in bf16 or fp16 (fp16 with a gradient scaler,
whose state is checkpointed); ``config.cudnn_benchmark`` sets ``torch.backends.cudnn.benchmark``
for CUDA runs. Evaluation and the Jacobian probe run in float32.

**Reproducibility.** With ``config.deterministic`` (the default) the call runs under
``torch.use_deterministic_algorithms(True, warn_only=True)`` (as Lightning's ``Trainer(deterministic=True)``;
on CUDA with ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless set), restored afterwards: sparse layers and
chains then take fixed routes (:func:`sao.nn.dispatch.deterministic_route`) instead of timed ones, which
differ in float rounding, so the same seed gives the same numbers on the same machine and thread count.

**Data parallel.** Inside a ``torch.distributed`` process group (see
:mod:`sao.training.distributed`; ``sao train`` under ``torchrun``) the model is wrapped in
``DistributedDataParallel``, the train loader must be sharded (``loaders(..., shard=(rank, W))``),
training loss/accuracy are summed over ranks, and only rank 0 writes files and shows progress;
every rank returns the same result. World size 1 is the ordinary single-process run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from sao._atomic import atomic_write_bytes
from sao.data import ShardedBatchSampler
from sao.nn import fusable_container, fuse_sparse_chains, fusion
from sao.training.checkpoint import CHECKPOINT_FORMAT, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from sao.training.config import AMP_DTYPES, TrainConfig, decisive, resolve_device
from sao.training.distributed import all_reduce_sum, device_for_rank, is_main_process, world
from sao.training.isometry import jacobian_spectrum, probe_batch
from sao.training.metrics import append_metrics, clean_row, read_metrics, truncate_metrics
from sao.training.schedule import build_optimizer, build_scheduler

__all__ = ["evaluate", "train"]

LOADER_KEYS = ("train", "val", "test")
_CHECK_EVERY = 20  # batches between host syncs for the progress bar and the divergence check


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) of ``model`` on ``loader``, in eval mode without grad."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    with torch.no_grad():
        for inputs, targets in loader:
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            logits = model(inputs)
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").double()
            correct += (logits.argmax(dim=1) == targets).sum()
            count += targets.shape[0]
    model.train(was_training)
    if count == 0:
        raise ValueError("cannot evaluate on an empty loader")
    return float(loss_sum) / count, int(correct) / count


def autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` (``"bf16"``/``"fp16"``) on ``device``; a no-op context for ``None``."""
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp]) if amp is not None else contextlib.nullcontext()


def _global_mean(loss_sum: Tensor, correct: Tensor, count: int) -> tuple[float, float]:
    """Mean loss and accuracy over every rank's examples so far (one all-reduce in a process group)."""
    totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(count), dtype=torch.float64,
                                                                   device=loss_sum.device)])
    all_reduce_sum(totals)
    loss, hits, n = totals.tolist()
    return loss / n, hits / n


def _train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, config: TrainConfig, device: torch.device,
                 bar: tqdm) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, accuracy) over all ranks, the loss non-finite if it diverged."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for step, (inputs, targets) in enumerate(loader, start=1):
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, config.amp):
            logits = model(inputs)
            loss = F.cross_entropy(logits, targets)
        loss_sum += loss.detach().double() * targets.shape[0]
        correct += (logits.detach().argmax(dim=1) == targets).sum()
        count += targets.shape[0]
        bar.update(1)
        if step % _CHECK_EVERY == 0:  # NaN/inf stays in the sum, so the end-of-epoch check never misses it
            mean, acc = _global_mean(loss_sum, correct, count)  # every rank takes the same decision
            if not np.isfinite(mean):
                return mean, acc
            bar.set_postfix(loss=f"{mean:.4f}", acc=f"{acc:.3f}")
        scaler.scale(loss).backward()
        if config.max_grad_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    if count == 0:
        raise ValueError("the train loader yielded no batches")
    mean, acc = _global_mean(loss_sum, correct, count)
    bar.set_postfix(loss=f"{mean:.4f}", acc=f"{acc:.3f}")
    return mean, acc


def _measure(model: nn.Module, loaders: Mapping[str, DataLoader], probe: Tensor | None,
             device: torch.device) -> dict[str, Any]:
    """Validation (and test) loss/accuracy and the Jacobian spectrum of the current model."""
    row: dict[str, Any] = {}
    row["val_loss"], row["val_acc"] = evaluate(model, loaders["val"], device)
    if "test" in loaders:
        row["test_loss"], row["test_acc"] = evaluate(model, loaders["test"], device)
    row["jacobian_mean"], row["jacobian_var"] = jacobian_spectrum(model, probe) if probe is not None else (None, None)
    return row


def _row(epoch: int, status: str, lr: float | None, train: tuple[float | None, float | None],
         measured: dict[str, Any], has_test: bool, seconds: float) -> dict[str, Any]:
    row = {"epoch": epoch, "status": status, "lr": lr, "train_loss": train[0], "train_acc": train[1],
           "val_loss": measured.get("val_loss"), "val_acc": measured.get("val_acc")}
    if has_test:
        row |= {"test_loss": measured.get("test_loss"), "test_acc": measured.get("test_acc")}
    return row | {"jacobian_mean": measured.get("jacobian_mean"), "jacobian_var": measured.get("jacobian_var"),
                  "seconds": seconds}


def _execution_model(model: nn.Module, config: TrainConfig) -> nn.Module:
    """What runs the forward passes: ``model`` on its sparse layers' fastest exact routes (``config.fused``),
    else ``model`` with every sparse layer on its plain route.

    With ``config.fused``: the fused view (:func:`~sao.nn.fuse_sparse_chains`, ``fusion="auto"``) of an exact
    ``nn.Sequential`` shares every module and hook with ``model`` and has its ``state_dict`` keys, so
    checkpoints, the optimizer and the saved results are the same either way; each chain runs on the fastest
    route that is exact for the call (:mod:`sao.nn.dispatch`), as does each blocked ``SparseConv2d`` in any
    model, so the default is never slower than the plain modules. Without it, calls run under
    ``sao.nn.fusion("off")``.
    """
    if not config.fused:
        return _Unfused(model)
    if fusable_container(model) is None:
        return fuse_sparse_chains(model)
    return model


class _Unfused(nn.Module):
    """``model`` called under ``fusion("off")``: every sparse chain and layer on its plain route."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with fusion("off"):
            return self.model(*args, **kwargs)


def _check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """A run resumes only under the settings that decided it (:func:`~sao.training.config.decisive`).

    Raises:
        ValueError: ``saved`` is not a valid config, or one that decides another run (the message
            lists the settings that differ).
    """
    before, now = decisive(TrainConfig.from_dict(saved)), decisive(config)
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if differ:
        details = ", ".join(f"{k}: {before.get(k)!r} → {now.get(k)!r}" for k in differ)
        raise ValueError(f"checkpoint {path} was written with a different config ({details}); "
                         "use a new run_dir or the original config")


def _result(rows: list[dict[str, Any]], run_dir: Path, epoch: int, status: str) -> dict[str, Any]:
    """The run summary, from its metric lines (so a resumed or re-invoked run reports the same)."""
    last = rows[-1] if rows else {"epoch": epoch, "status": status, "val_acc": None}  # metrics.jsonl was deleted
    trained = [r for r in rows if r["epoch"] >= 1 and r["status"] == "ok" and r["val_acc"] is not None]
    best = max(trained, key=lambda r: r["val_acc"], default=None)
    return {"status": "diverged" if last["status"] == "diverged" else "completed", "epochs_run": last["epoch"],
            "val_acc": last["val_acc"], "test_acc": last.get("test_acc"),
            "best_val_acc": best["val_acc"] if best else None, "best_epoch": best["epoch"] if best else None,
            "seconds": sum(r["seconds"] or 0.0 for r in rows), "run_dir": str(run_dir)}


@contextlib.contextmanager
def _reproducible(config: TrainConfig, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms for the block when ``config.deterministic`` (module docstring), then as before."""
    if not config.deterministic or torch.are_deterministic_algorithms_enabled():  # off, or on as the caller set it
        yield
        return
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic workspace
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False, warn_only=warn_only)


def train(model: nn.Module, loaders: Mapping[str, DataLoader], config: TrainConfig, run_dir: Path | str,
          progress: bool = True, on_epoch_end: Callable[[dict[str, Any]], None] | None = None, *,
          guard: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train ``model`` with SGD on ``loaders["train"]`` for ``config.epochs`` epochs, resumably.

    Args:
        model: any classifier ``(B, ...) → (B, classes)`` trained with cross-entropy; moved to the
            config's device. On resume its weights are replaced by the checkpoint's.
        loaders: ``"train"`` and ``"val"`` (map-style datasets of ``(input, target)``), optional
            ``"test"`` (reported only). Build ``"train"`` with a seeded ``torch.Generator`` for
            exact resume (see the module docstring).
        config: the run's settings; must equal the saved one when resuming (device aside).
        run_dir: folder of ``config.json``, ``metrics.jsonl``/``.csv`` and ``checkpoint.pt``.
        progress: show a tqdm bar per epoch on stderr (only on a terminal).
        on_epoch_end: called with each epoch's metric line after its checkpoint is written.
        guard: called on every rank before each write to ``run_dir`` (``config.json``, ``metrics.jsonl``,
            ``checkpoint.pt``); it raises to stop the run before the write. The run store passes its
            lease check (:class:`sao.experiments.store.LeaseLost` once the run may be another driver's);
            in a process group it is a collective, called by every rank at the same points.

    Returns:
        ``status`` (``"completed"`` or ``"diverged"``), ``epochs_run``, the last line's ``val_acc`` and
        ``test_acc`` (``None`` after divergence), ``best_val_acc``/``best_epoch`` over trained epochs,
        ``seconds`` (wall time summed over all epochs, across resumes) and ``run_dir``.

    Raises:
        ValueError: on missing/unknown loader keys, an unreadable checkpoint (naming the file) or a
            checkpoint written under a different config.
    """
    device = device_for_rank(resolve_device(config.device))
    with _reproducible(config, device):
        return _train(model, loaders, config, run_dir, progress, on_epoch_end, guard=guard, device=device)


def _train(model: nn.Module, loaders: Mapping[str, DataLoader], config: TrainConfig, run_dir: Path | str,
          progress: bool = True, on_epoch_end: Callable[[dict[str, Any]], None] | None = None, *,
          guard: Callable[[], None] | None = None, device: torch.device) -> dict[str, Any]:
    """:func:`train` itself on ``device``, under the algorithms ``config.deterministic`` asks for."""
    if "train" not in loaders or "val" not in loaders or set(loaders) - set(LOADER_KEYS):
        raise ValueError(f"loaders must have keys 'train' and 'val' (and optionally 'test'), got {sorted(loaders)}")
    _check_sharded(loaders["train"])
    main = is_main_process()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, metrics_path = run_dir / "checkpoint.pt", run_dir / "metrics.jsonl"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = config.cudnn_benchmark
    model.to(device)
    runner = _execution_model(model, config)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    probe = probe_batch(loaders["val"], config.isometry_probe)
    probe = probe.to(device) if probe is not None else None
    has_test = "test" in loaders
    resolved = {"config": config.to_dict(), "device": str(device), "world_size": world()[1], "torch": torch.__version__,
                "model_class": f"{type(model).__module__}.{type(model).__qualname__}"}
    check = guard or _unguarded
    check()
    if main:
        atomic_write_bytes(run_dir / "config.json", (json.dumps(resolved, indent=2) + "\n").encode())

    def log(row: dict[str, Any]) -> None:
        check()
        rows.append(append_metrics(metrics_path, row) if main else clean_row(row))

    def checkpoint(epoch: int, status: str) -> None:
        check()
        if not main:
            return
        rng, loader_rng = capture_rng(loaders["train"])
        save_checkpoint(ckpt_path, {
            "format": CHECKPOINT_FORMAT, "epoch": epoch, "status": status, "config": config.to_dict(),
            "model_class": resolved["model_class"], "num_parameters": sum(p.numel() for p in model.parameters()),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng, "loader_rng": loader_rng})

    rows: list[dict[str, Any]] = []
    check()  # before metrics.jsonl is cut back (resume) or emptied (fresh start)
    if ckpt_path.exists():
        saved = load_checkpoint(ckpt_path, map_location=device)
        _check_resumable(saved["config"], config, ckpt_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        restore_rng(saved["rng"], saved["loader_rng"], loaders["train"])
        start, status = int(saved["epoch"]), saved["status"]
        rows = truncate_metrics(metrics_path, start) if main else [
            r for r in read_metrics(metrics_path) if r["epoch"] <= start]
    else:
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)
        if main:
            truncate_metrics(metrics_path, -1)
        began = time.perf_counter()
        measured = _measure(runner, loaders, probe, device)
        log(_row(0, "init", None, (None, None), measured, has_test, time.perf_counter() - began))
        checkpoint(0, "ok")
        start, status = 0, "ok"
        if on_epoch_end is not None:
            on_epoch_end(rows[-1])

    net = _data_parallel(runner, device)
    epoch = start
    while epoch < config.epochs and status != "diverged":
        epoch += 1
        began = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        with tqdm(total=len(loaders["train"]), desc=f"epoch {epoch}/{config.epochs}", leave=False,
                  disable=None if progress and main else True) as bar:
            train_loss, train_acc = _train_epoch(net, loaders["train"], optimizer, scaler, config, device, bar)
        if not np.isfinite(train_loss):
            status, measured = "diverged", {}
        else:
            scheduler.step()
            measured = _measure(runner, loaders, probe, device)
        log(_row(epoch, status, lr, (train_loss, train_acc), measured, has_test, time.perf_counter() - began))
        checkpoint(epoch, status)
        if on_epoch_end is not None:
            on_epoch_end(rows[-1])
    return _result(rows, run_dir, epoch, status)


def _unguarded() -> None:
    return None


def _check_sharded(loader: DataLoader) -> None:
    """In a process group each rank must train on its own share of every batch, not the whole batch."""
    rank, world_size = world()
    sampler = loader.batch_sampler
    if world_size > 1 and not (isinstance(sampler, ShardedBatchSampler) and sampler.world_size == world_size
                               and sampler.rank == rank):
        raise ValueError(f"rank {rank} of {world_size}: the train loader must be sharded for data-parallel "
                         f"training; build it with sao.data.loaders(..., shard=({rank}, {world_size}))")


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel inside a process group, else ``model`` itself."""
    if world()[1] == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
