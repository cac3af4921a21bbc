"""``sao reproduce``, ``sao report`` and ``sao train``: the command-line face of the experiments."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sao._registry import Registry
from sao.experiments import table7
from sao.experiments.runner import Run, RunFunction, run_grid, run_one

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "add_report_args",
    "add_reproduce_args",
    "add_train_args",
    "run_report",
    "run_reproduce",
    "run_train",
]


@dataclass(frozen=True)
class Experiment:
    """A reproducible table: its runs per preset, the run function, the paper's known numbers."""

    title: str
    runs: Callable[[str, str | None, str], list[Run]]
    run_fn: RunFunction
    presets: tuple[str, ...]
    known: dict[tuple[str, int], float]


EXPERIMENTS: Registry[Experiment] = Registry("experiment", "sao.experiments._cli.EXPERIMENTS")
EXPERIMENTS.register("table7", Experiment("Table 7: FNN-N on MNIST", table7.table7_runs, table7.run_table7,
                                          tuple(table7.PRESETS), table7.KNOWN_TABLE7))


def add_reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", choices=EXPERIMENTS.names(), help="which table of the paper")
    p.add_argument("--preset", default="quick", help="quick (minutes, CPU), cpu (hours, CPU) or paper (GPU)")
    p.add_argument("--out", type=Path, default=None, help="sweep folder (default runs/EXPERIMENT-PRESET)")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (processes; default 1)")
    p.add_argument("--data-root", default=None, help="folder with the dataset files (full MNIST: MNIST/raw/...)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:i]")


def run_reproduce(args: argparse.Namespace) -> int:
    exp = EXPERIMENTS.get(args.experiment)
    if args.preset not in exp.presets:
        raise ValueError(f"preset={args.preset!r} is not known; choose from {', '.join(exp.presets)}")
    out = args.out or Path("runs") / f"{args.experiment}-{args.preset}"
    start = time.perf_counter()
    run_grid(exp.runs(args.preset, args.data_root, args.device), exp.run_fn, out, workers=args.workers)
    print(f"sweep finished in {time.perf_counter() - start:.0f} s: {out}")
    return _report(out, out, exp)


def add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", type=Path, help="a sweep folder written by sao reproduce")
    p.add_argument("--out", type=Path, default=None, help="where to write the report (default: the sweep folder)")
    p.add_argument("--experiment", choices=EXPERIMENTS.names(), default="table7",
                   help="which paper numbers to show beside ours (default table7)")


def run_report(args: argparse.Namespace) -> int:
    return _report(args.sweep, args.out or args.sweep, EXPERIMENTS.get(args.experiment))


def _report(sweep: Path, out: Path, exp: Experiment) -> int:
    from sao.reports import write_report

    for path in write_report(sweep, out, exp.title, exp.known):
        print(path)
    print((Path(out) / "report.md").read_text())
    return 0


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="sao", help="sparsify method (sao.methods.METHODS; default sao)")
    p.add_argument("--depth", type=int, default=50, help="FNN-N depth N (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--dataset", default="mnist5k", help="mnist5k (embedded) or mnist (needs --data-root)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--degree", type=int, default=4, help="SAO degree; other methods match its sparsity")
    p.add_argument("--gain", type=float, default=1.1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="default: the paper's learning rate for the depth")
    p.add_argument("--device", default="auto")
    p.add_argument("--activation", default="tanh", help="tanh (paper), relu (mirrored SAO) or linear")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    p.add_argument("--schedule", default="constant", help="constant, multistep or cosine")
    p.add_argument("--warmup-epochs", type=int, default=0, help="linear warm-up epochs")
    p.add_argument("--max-grad-norm", type=float, default=None, help="clip the gradient norm (default: no clipping)")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="parent folder of the run (default runs/train)")


def run_train(args: argparse.Namespace) -> int:
    from sao.data import list_datasets
    from sao.methods import METHODS
    from sao.training import lr_for_depth

    METHODS.get(args.method)
    if args.dataset not in list_datasets():
        raise ValueError(f"dataset={args.dataset!r} is not known; choose from {', '.join(list_datasets())}")
    config: dict[str, Any] = {
        "experiment": "table7", "method": args.method, "depth": args.depth, "seed": args.seed, "epochs": args.epochs,
        "dataset": args.dataset, "data_root": args.data_root, "degree": args.degree, "gain": args.gain,
        "batch_size": args.batch_size, "lr": args.lr if args.lr is not None else lr_for_depth(args.depth),
        "device": args.device, "activation": args.activation, "momentum": args.momentum,
        "weight_decay": args.weight_decay, "nesterov": args.nesterov, "schedule": args.schedule,
        "warmup_epochs": args.warmup_epochs, "max_grad_norm": args.max_grad_norm}
    result = run_one(Run(f"{args.method}-N{args.depth}-s{args.seed}", config), table7.run_table7, args.out)
    keys = ("status", "epochs_run", "val_acc", "test_acc", "best_val_acc", "jacobian_mean", "jacobian_var",
            "sparsity_sparse_layers", "sparsity_overall", "seconds", "run_dir")
    for key in keys:
        print(f"{key:>24}: {result.get(key)}")
    return 0
