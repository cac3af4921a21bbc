"""``sao reproduce EXPERIMENT --preset P``: a table of the paper as a sweep — train, resume, report.

Runs the preset's grid (:meth:`sao.experiments.ExperimentSpec.runs`) into ``--out`` through the run
store: finished runs are skipped, unfinished ones resumed, runs another driver trains are waited
for; then writes the report (:func:`sao.reports.write_report`).
"""

from __future__ import annotations

import argparse
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sao.cli._flags import add_config_flags, check_device, flag_name, given
from sao.cli._lease import add_lease_flags, lease_settings, run_store
from sao.cli._types import Folder, Integer, Real, blame
from sao.experiments import (
    EXPERIMENTS,
    LAUNCHERS,
    LaunchOptions,
    Run,
    RunConfig,
    run_experiment,
    run_grid,
)
from sao.experiments.protocol import load_splits
from sao.reports import write_report

__all__ = ["HELP", "LAUNCH_FLAGS", "add_arguments", "resolve", "run"]

HELP = "reproduce a table of the paper: sweep, resume, report"

#: Config fields a sweep may set for all its runs (where and how they run, not the grid).
SWEEP_FLAGS = ("data.root", "train.device", "train.amp", "train.cudnn_benchmark", "train.fused", "train.deterministic")


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
    p.add_argument("--out", type=Folder(), default=None, help="sweep folder (default runs/EXPERIMENT-PRESET)")
    p.add_argument("--workers", type=Integer(), default=None, help="local: runs in parallel (processes; default 1)")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="do not wait for runs another driver is training (default: wait, then report all)")
    add_config_flags(p, only=SWEEP_FLAGS)
    p.add_argument("--launcher", choices=LAUNCHERS.names(), default="local",
                   help="local (processes on this machine, default) or ray (one Ray task per run)")
    p.add_argument("--address", default=None, help="ray: cluster address, e.g. auto or ray://HEAD:10001 "
                                                   "(default: RAY_ADDRESS, else a local instance)")
    p.add_argument("--cpus-per-run", type=Integer(), default=None, help="ray: CPUs (and torch threads) per run "
                                                                        "(default 1)")
    p.add_argument("--gpus-per-run", type=Real(), default=None,
                   help="ray: GPUs per run, fractions below 1 share a GPU (default 0)")
    add_lease_flags(p)


#: The launcher flags: flag → (the :class:`LaunchOptions` field it sets, the launcher it is for).
LAUNCH_FLAGS = {"--workers": ("workers", "local"), "--address": ("address", "ray"),
                "--cpus-per-run": ("cpus_per_run", "ray"), "--gpus-per-run": ("gpus_per_run", "ray")}


def _options(args: argparse.Namespace) -> LaunchOptions:
    """The launcher's options of the flags given (the others keep LaunchOptions' defaults); each must be for it."""
    chosen = {flag: getattr(args, name) for flag, (name, _) in LAUNCH_FLAGS.items() if getattr(args, name) is not None}
    wrong = [flag for flag in chosen if LAUNCH_FLAGS[flag][1] != args.launcher]
    if wrong:
        raise ValueError("; ".join(f"argument {flag}: only for --launcher {LAUNCH_FLAGS[flag][1]}" for flag in wrong))
    return blame(lambda values: LaunchOptions(**{LAUNCH_FLAGS[flag][0]: v for flag, v in values.items()}), chosen,
                 str)


def _configs(args: argparse.Namespace) -> list[RunConfig]:
    """The preset's run configs with the sweep flags given; a bad value is blamed on its flag."""
    spec = EXPERIMENTS.get(args.experiment)
    chosen = {key: getattr(args, key) for key in SWEEP_FLAGS if given(args, key)}

    def build(values: Mapping[str, Any]) -> list[RunConfig]:
        train = {key.split(".")[1]: v for key, v in values.items() if key.startswith("train.")}
        return spec.runs(args.preset, data_root=values.get("data.root"), train=train)

    return blame(build, chosen, flag_name)


def resolve(args: argparse.Namespace) -> None:
    """``args.options`` (:class:`LaunchOptions`) and ``args.configs`` (the runs) of the flags, on devices
    this machine has."""
    args.options = _options(args)
    args.lease = lease_settings(args)
    args.configs = _configs(args)
    for device in sorted({c.train.device for c in args.configs}):
        check_device(device)


def check_data(configs: list[RunConfig]) -> None:
    """Load each dataset the runs need once, so missing files are one error before anything runs."""
    seen = set()
    for config in configs:
        if (config.data, config.model.name) not in seen:
            seen.add((config.data, config.model.name))
            load_splits(config)


def run(args: argparse.Namespace) -> int:
    spec, configs = EXPERIMENTS.get(args.experiment), args.configs
    out = args.out or Path("runs") / f"{args.experiment}-{args.preset}"
    store = run_store(args, out)
    runs = [Run(label, c.to_dict()) for label, c in zip(spec.run_labels(args.preset), configs, strict=True)]
    check_data([c for c, run in zip(configs, runs, strict=True) if store.result(run) is None])
    start = time.perf_counter()
    run_grid(runs, run_experiment, out, launcher=args.launcher, options=args.options, store=store, wait=args.wait)
    print(f"sweep finished in {time.perf_counter() - start:.0f} s: {out}")
    for path in write_report(out, out, spec):
        print(path)
    print((Path(out) / "report.md").read_text())
    return 0
