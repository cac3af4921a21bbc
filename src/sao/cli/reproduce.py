"""``sao reproduce EXPERIMENT --preset P``: a table of the paper as a sweep — train, resume, report.

Runs the preset's grid (:meth:`sao.experiments.ExperimentSpec.runs`) into ``--out`` through the run
store: finished runs are skipped, unfinished ones resumed, runs another driver trains are waited
for; then writes the report (:func:`sao.reports.write_report`).
"""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

from sao.cli._flags import add_config_flags, check_device
from sao.experiments import (
    EXPERIMENTS,
    LAUNCHERS,
    LaunchOptions,
    Run,
    RunConfig,
    RunStore,
    identity,
    run_experiment,
    run_grid,
)
from sao.experiments.protocol import load_splits
from sao.reports import write_report

__all__ = ["HELP", "add_arguments", "run"]

HELP = "reproduce a table of the paper: sweep, resume, report"

#: Config fields a sweep may set for all its runs (where and how they run, not the grid).
SWEEP_FLAGS = ("data.root", "train.device", "train.amp", "train.cudnn_benchmark", "train.fused")


def _presets() -> str:
    """Every experiment's presets with their descriptions, for the end of ``--help``."""
    lines = ["presets:"]
    for name in sorted(EXPERIMENTS, key=lambda n: (len(n), n)):  # table7 before table10
        for preset, p in EXPERIMENTS.get(name).presets.items():
            lines += textwrap.wrap(p.description, 100, initial_indent=f"  {name:<8}{preset:<7}",
                                   subsequent_indent=" " * 17)
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _presets()
    p.add_argument("experiment", choices=EXPERIMENTS.names(), help="which table of the paper")
    p.add_argument("--preset", default="quick", help="the grid to run (default quick; each table's presets are "
                                                     "listed below)")
    p.add_argument("--out", type=Path, default=None, help="sweep folder (default runs/EXPERIMENT-PRESET)")
    p.add_argument("--workers", type=int, default=1, help="local: runs in parallel (processes; default 1)")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="do not wait for runs another driver is training (default: wait, then report all)")
    add_config_flags(p, only=SWEEP_FLAGS)
    p.add_argument("--launcher", choices=LAUNCHERS.names(), default="local",
                   help="local (processes on this machine, default) or ray (one Ray task per run)")
    p.add_argument("--address", default=None, help="ray: cluster address, e.g. auto or ray://HEAD:10001 "
                                                   "(default: RAY_ADDRESS, else a local instance)")
    p.add_argument("--cpus-per-run", type=int, default=None, help="ray: CPUs (and torch threads) per run (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="ray: GPUs per run, fractions below 1 share a GPU (default 0)")


def _options(args: argparse.Namespace) -> LaunchOptions:
    ray_flags = {"--address": args.address, "--cpus-per-run": args.cpus_per_run, "--gpus-per-run": args.gpus_per_run}
    if args.launcher != "ray" and any(v is not None for v in ray_flags.values()):
        raise ValueError(f"{', '.join(f for f, v in ray_flags.items() if v is not None)} need --launcher ray")
    if args.launcher == "ray" and args.workers != 1:
        raise ValueError("--workers is for --launcher local; Ray runs as many runs as the cluster has room for")
    return LaunchOptions(workers=args.workers, address=args.address,
                         cpus_per_run=1 if args.cpus_per_run is None else args.cpus_per_run,
                         gpus_per_run=0 if args.gpus_per_run is None else args.gpus_per_run)


def check_data(configs: list[RunConfig]) -> None:
    """Load each dataset the runs need once, so missing files are one error before anything runs."""
    seen = set()
    for config in configs:
        if (config.data, config.model.name) not in seen:
            seen.add((config.data, config.model.name))
            load_splits(config)


def run(args: argparse.Namespace) -> int:
    spec = EXPERIMENTS.get(args.experiment)
    options = _options(args)
    train = {key.split(".")[1]: getattr(args, key) for key in SWEEP_FLAGS
             if key.startswith("train.") and getattr(args, key) is not None}
    configs = spec.runs(args.preset, data_root=getattr(args, "data.root"), train=train)
    out = args.out or Path("runs") / f"{args.experiment}-{args.preset}"
    store = RunStore(out, identity=identity)
    runs = [Run(label, c.to_dict()) for label, c in zip(spec.run_labels(args.preset), configs, strict=True)]
    todo = [c for c, run in zip(configs, runs, strict=True) if store.result(run) is None]
    for device in sorted({c.train.device for c in todo}):
        check_device(device)
    check_data(todo)
    start = time.perf_counter()
    run_grid(runs, run_experiment, out, launcher=args.launcher, options=options, store=store, wait=args.wait)
    print(f"sweep finished in {time.perf_counter() - start:.0f} s: {out}")
    for path in write_report(out, out, spec):
        print(path)
    print((Path(out) / "report.md").read_text())
    return 0
