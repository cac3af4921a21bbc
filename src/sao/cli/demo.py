"""``sao demo``: build a deep SAO network and print its verified properties."""

from __future__ import annotations

import argparse

from sao.cli._types import SEED, Integer
from sao.demo import DemoConfig, run_demo
from sao.topology import resolve_degree

__all__ = ["HELP", "add_arguments", "resolve", "run"]

HELP = "build a deep SAO network and print its verified properties"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DemoConfig()
    parser.add_argument("--depth", type=Integer(low=1), default=defaults.depth,
                        help=f"number of sparse layers (default {defaults.depth})")
    parser.add_argument("--width", type=Integer(low=1), default=defaults.width,
                        help=f"width of every layer (default {defaults.width})")
    parser.add_argument("--degree", type=Integer(low=1), default=defaults.degree,
                        help=f"SAO degree (default {defaults.degree})")
    parser.add_argument("--seed", type=SEED, default=defaults.seed, help=f"random seed (default {defaults.seed})")


def resolve(args: argparse.Namespace) -> None:
    """The degree must suit the width (``ValueError`` naming the valid degrees)."""
    try:
        resolve_degree(args.width, args.width, args.degree)
    except ValueError as err:
        raise ValueError(f"argument --degree: {err}") from None


def run(args: argparse.Namespace) -> int:
    run_demo(DemoConfig(depth=args.depth, width=args.width, degree=args.degree, seed=args.seed))
    return 0
