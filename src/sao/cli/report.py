"""``sao report SWEEP``: a sweep folder's tables and figures (:func:`sao.reports.write_report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sao.experiments import EXPERIMENTS
from sao.reports import write_report

__all__ = ["HELP", "add_arguments", "run"]

HELP = "turn a sweep folder into tables and figures"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", type=Path, help="a sweep folder written by sao reproduce (or sao train's --out)")
    p.add_argument("--out", type=Path, default=None, help="where to write the report (default: the sweep folder)")
    p.add_argument("--experiment", choices=EXPERIMENTS.names(), default=None,
                   help="which paper numbers to show beside ours (default: the table the sweep's runs name)")


def run(args: argparse.Namespace) -> int:
    if not args.sweep.is_dir():
        raise FileNotFoundError(f"no sweep folder {args.sweep}")
    out = args.out or args.sweep
    experiment = EXPERIMENTS.get(args.experiment) if args.experiment else None
    for path in write_report(args.sweep, out, experiment):
        print(path)
    print((Path(out) / "report.md").read_text())
    return 0
