"""``sao reproduce``, ``sao report`` and ``sao train``: the command-line face of the experiments."""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sao._registry import Registry
from sao.experiments import cnn, table7
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
    dataset: str | None = None  # the paper's dataset; its numbers are shown only beside runs on it


EXPERIMENTS: Registry[Experiment] = Registry("experiment", "sao.experiments._cli.EXPERIMENTS")
EXPERIMENTS.register("table7", Experiment("Table 7: FNN-N on MNIST", table7.table7_runs, table7.run_table7,
                                          tuple(table7.PRESETS), table7.KNOWN_TABLE7))
for _name, _table in cnn.CNN_TABLES.items():
    EXPERIMENTS.register(_name, Experiment(_table.title, functools.partial(cnn.cnn_runs, _name), cnn.run_cnn,
                                           tuple(_table.presets), _table.known or {}, _table.presets["paper"].dataset))


def add_reproduce_args(p: argparse.ArgumentParser) -> None:
    from sao.experiments.launchers import LAUNCHERS

    p.add_argument("experiment", choices=EXPERIMENTS.names(), help="which table of the paper")
    p.add_argument("--preset", default="quick", help="quick (minutes, CPU), cpu (about an hour, CPU) or paper (GPU)")
    p.add_argument("--out", type=Path, default=None, help="sweep folder (default runs/EXPERIMENT-PRESET)")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (processes; default 1)")
    p.add_argument("--data-root", default=None, help="folder with the dataset files (full MNIST: MNIST/raw/...)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:i]")
    _add_precision_args(p)
    p.add_argument("--launcher", choices=LAUNCHERS.names(), default="local",
                   help="local (processes on this machine, default) or ray (one Ray task per run)")
    p.add_argument("--address", default=None, help="ray: cluster address, e.g. auto or ray://HEAD:10001 "
                                                   "(default: RAY_ADDRESS, else a local instance)")
    p.add_argument("--cpus-per-run", type=int, default=None, help="ray: CPUs (and torch threads) per run (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="ray: GPUs per run, fractions below 1 share a GPU (default 0)")


def run_reproduce(args: argparse.Namespace) -> int:
    from sao.experiments.launchers import LaunchOptions

    exp = EXPERIMENTS.get(args.experiment)
    if args.preset not in exp.presets:
        raise ValueError(f"preset={args.preset!r} is not known; choose from {', '.join(exp.presets)}")
    ray_flags = {"--address": args.address, "--cpus-per-run": args.cpus_per_run, "--gpus-per-run": args.gpus_per_run}
    if args.launcher != "ray" and any(v is not None for v in ray_flags.values()):
        raise ValueError(f"{', '.join(f for f, v in ray_flags.items() if v is not None)} need --launcher ray")
    if args.launcher == "ray" and args.workers != 1:
        raise ValueError("--workers is for --launcher local; Ray runs as many runs as the cluster has room for")
    options = LaunchOptions(workers=args.workers, address=args.address,
                            cpus_per_run=1 if args.cpus_per_run is None else args.cpus_per_run,
                            gpus_per_run=0 if args.gpus_per_run is None else args.gpus_per_run)
    out = args.out or Path("runs") / f"{args.experiment}-{args.preset}"
    # precision settings enter a run's config (and so its hash) only when asked for
    overrides: dict[str, Any] = {k: v for k, v in (("amp", args.amp), ("cudnn_benchmark", args.cudnn_benchmark))
                                 if v}
    if args.no_fused:
        overrides["fused"] = False
    runs = [Run(r.label, {**r.config, **overrides}) for r in exp.runs(args.preset, args.data_root, args.device)]
    start = time.perf_counter()
    run_grid(runs, exp.run_fn, out, launcher=args.launcher, options=options)
    print(f"sweep finished in {time.perf_counter() - start:.0f} s: {out}")
    return _report(out, out, exp)


def add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", type=Path, help="a sweep folder written by sao reproduce")
    p.add_argument("--out", type=Path, default=None, help="where to write the report (default: the sweep folder)")
    p.add_argument("--experiment", choices=EXPERIMENTS.names(), default=None,
                   help="which paper numbers to show beside ours (default: the table the sweep's runs name)")


def run_report(args: argparse.Namespace) -> int:
    from sao.experiments.runner import finished_results

    name = args.experiment
    if name is None:
        found = {r["config"].get("experiment", "table7") for r in finished_results(args.sweep)}
        name = found.pop() if len(found) == 1 else "table7"
    return _report(args.sweep, args.out or args.sweep, EXPERIMENTS.get(name))


def _report(sweep: Path, out: Path, exp: Experiment) -> int:
    from sao.experiments.runner import finished_results
    from sao.reports import write_report

    datasets = sorted({str(r["config"].get("dataset")) for r in finished_results(sweep)})
    title = f"{exp.title} (this sweep: {', '.join(datasets)})" if datasets else exp.title
    comparable = exp.dataset is None or datasets == [exp.dataset]
    if not comparable and exp.known:
        title += f"; the paper's {exp.dataset} numbers are not shown beside other data"
    for path in write_report(sweep, out, title, exp.known if comparable else {}):
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
    _add_precision_args(p)
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="parent folder of the run (default runs/train)")


def _add_precision_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--amp", default=None, choices=("bf16", "fp16"), help="mixed precision (default: float32)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune conv algorithms (CUDA)")
    p.add_argument("--no-fused", action="store_true",
                   help="run chains of sparse layers layer by layer instead of fused (compiled on the CPU); "
                        "same function up to float rounding; enters the run's config")


def run_train(args: argparse.Namespace) -> int:
    """One run; under ``torchrun`` a data-parallel one (``--batch-size`` is the global batch)."""
    from sao.training.distributed import init_from_env, is_main_process, shutdown

    init_from_env(args.device)
    main = is_main_process()  # asked before the group is gone
    try:
        result = _train_one(args)
    finally:
        shutdown()
    if main:
        keys = ("status", "epochs_run", "val_acc", "test_acc", "best_val_acc", "jacobian_mean", "jacobian_var",
                "sparsity_sparse_layers", "sparsity_overall", "seconds", "run_dir")
        for key in keys:
            print(f"{key:>24}: {result.get(key)}")
    return 0


def _train_one(args: argparse.Namespace) -> dict[str, Any]:
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
        "warmup_epochs": args.warmup_epochs, "max_grad_norm": args.max_grad_norm, "amp": args.amp,
        "cudnn_benchmark": args.cudnn_benchmark}
    if args.no_fused:  # only when asked: runs of earlier versions keep their config hash
        config["fused"] = False
    return run_one(Run(f"{args.method}-N{args.depth}-s{args.seed}", config), table7.run_table7, args.out)
