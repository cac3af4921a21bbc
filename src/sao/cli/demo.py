"""``sao demo``: build a deep SAO network and print its verified properties."""

from __future__ import annotations

import argparse

from sao.demo import DemoConfig, run_demo
from sao.topology import resolve_degree

__all__ = ["HELP", "add_arguments", "run"]

HELP = "build a deep SAO network and print its verified properties"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DemoConfig()
    parser.add_argument("--depth", type=_positive_int, default=defaults.depth,
                        help=f"number of sparse layers (default {defaults.depth})")
    parser.add_argument("--width", type=_positive_int, default=defaults.width,
                        help=f"width of every layer (default {defaults.width})")
    parser.add_argument("--degree", type=_positive_int, default=defaults.degree,
                        help=f"SAO degree (default {defaults.degree})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed (default {defaults.seed})")


def run(args: argparse.Namespace) -> int:
    resolve_degree(args.width, args.width, args.degree)
    run_demo(DemoConfig(depth=args.depth, width=args.width, degree=args.degree, seed=args.seed))
    return 0
