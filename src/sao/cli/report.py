"""``sao report SWEEP``: a sweep folder's tables and figures (:func:`sao.reports.write_report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sao.cli._types import Folder
from sao.experiments import EXPERIMENTS
from sao.reports import write_report

__all__ = ["HELP", "add_arguments", "run"]

HELP = "turn a sweep folder into tables and figures"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", type=Folder(exists=True), help="a sweep folder written by sao reproduce (or sao "
                                                           "train's --out)")
    p.add_argument("--out", type=Folder(), default=None, help="where to write the report (default: the sweep folder)")
    p.add_argument("--experiment", choices=EXPERIMENTS.names(), default=None,
                   help="report only this table's runs, with its title and the paper's numbers beside ours "
                        "(default: every run, under the table they name)")


def run(args: argparse.Namespace) -> int:
    out = args.out or args.sweep
    experiment = EXPERIMENTS.get(args.experiment) if args.experiment else None
    for path in write_report(args.sweep, out, experiment):
        print(path)
    print((Path(out) / "report.md").read_text())
    return 0
