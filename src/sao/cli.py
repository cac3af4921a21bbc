"""The ``sao`` command line. Each subcommand is one entry of :data:`COMMANDS`.

Errors in user input end the program with one readable line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sao import __version__
from sao._registry import Registry

__all__ = ["COMMANDS", "main"]

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: Registry[Command] = Registry("command", "sao.cli.COMMANDS")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depth", type=_positive_int, default=200, help="number of sparse layers (default 200)")
    parser.add_argument("--width", type=_positive_int, default=256, help="width of every layer (default 256)")
    parser.add_argument("--degree", type=_positive_int, default=4, help="SAO degree (default 4 = 98.4%% sparse)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _demo(args: argparse.Namespace) -> int:
    from sao.demo import DemoConfig, run_demo
    from sao.topology import resolve_degree

    resolve_degree(args.width, args.width, args.degree)
    run_demo(DemoConfig(depth=args.depth, width=args.width, degree=args.degree, seed=args.seed))
    return 0


def _analyze_args(parser: argparse.ArgumentParser) -> None:
    from sao.analysis._cli import add_analyze_args

    add_analyze_args(parser)


def _analyze(args: argparse.Namespace) -> int:
    from sao.analysis._cli import run_analyze

    return run_analyze(args)


def _lazy(name: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    """Argument adder and runner of ``sao.experiments._cli`` command ``name``, imported on use."""
    def add(parser: argparse.ArgumentParser) -> None:
        from sao.experiments import _cli

        getattr(_cli, f"add_{name}_args")(parser)

    def run(args: argparse.Namespace) -> int:
        from sao.experiments import _cli

        return getattr(_cli, f"run_{name}")(args)

    return add, run


COMMANDS.register("demo", ("build a deep SAO network and print its verified properties", _demo_args, _demo))
COMMANDS.register("train", ("train one FNN-N run (any method, depth, seed; resumable)", *_lazy("train")))
COMMANDS.register("reproduce", ("reproduce a table of the paper: sweep, resume, report", *_lazy("reproduce")))
COMMANDS.register("report", ("turn a sweep folder into tables and figures", *_lazy("report")))
COMMANDS.register("analyze", ("spectra, reachability, singular values, Jacobians (paper Figs. 7-11, Table 6)",
                              _analyze_args, _analyze))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(prog="sao", description="Sparsity-Aware Orthogonal initialization (SAO).")
    parser.add_argument("--version", action="version", version=f"sao {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        help_text, add_args, _ = COMMANDS.get(name)
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS.get(args.command)[2](args)
    except (ValueError, TypeError) as err:
        print(f"sao {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sao {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
