"""The ``sao`` command line: one module per command, one error boundary (:func:`main`).

Each command is a module of this package with ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> exit status``, registered in :data:`COMMANDS`. :func:`main` turns user errors
into one line on stderr: a ``ValueError`` (bad settings, unknown names) or an ``OSError``
(missing data, unreadable folders) exits 2, a grid with failed runs exits 1 naming them
(:class:`sao.experiments.FailedRuns`), as does a run another driver is training
(:class:`sao.experiments.RunClaimed`); Ctrl-C exits 130. Anything else is a bug and keeps its
traceback.

Commands built on the harness need the ``experiments`` extra. Without it they still show in
``sao --help``, and running one says what to install (exit status 2): "sao reproduce needs the
experiments extra: pip install 'sao[experiments]' (not installed: ...)"; ``sao demo`` needs only
the library.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn

from sao import __version__
from sao._extras import MissingExtra
from sao._registry import Registry

__all__ = ["COMMANDS", "build_parser", "main"]

#: Command name → the module implementing it.
COMMANDS: Registry[str] = Registry("command", "sao.cli.COMMANDS")
for _name in ("demo", "train", "reproduce", "report", "analyze"):
    COMMANDS.register(_name, f"sao.cli.{_name}")


def _module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS.get(name))


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and a pointer to ``--help``), exit status 2.

    With ``missing`` (the parser of a command whose extra is not installed) it takes any arguments,
    so that running the command reaches :func:`main`, which says what to install.
    """

    def __init__(self, *args: Any, missing: MissingExtra | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.missing = missing

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        """Parse as usual, or, for a command whose extra is not installed, take every argument."""
        if self.missing is not None:
            return (namespace if namespace is not None else argparse.Namespace()), []
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per registered command."""
    parser = _Parser(prog="sao", description="Sparsity-Aware Orthogonal initialization (SAO).")
    parser.add_argument("--version", action="version", version=f"sao {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = _module(name)
        except MissingExtra as err:
            sub.add_parser(name, help=f"(needs the {err.extra} extra: pip install 'sao[{err.extra}]')", missing=err)
            continue
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (module docstring)."""
    try:
        from sao.experiments import FailedRuns, RunClaimed

        run_failures: tuple[type[Exception], ...] = (FailedRuns, RunClaimed)
    except MissingExtra:
        run_failures = ()  # no command that runs experiments can run

    args = build_parser().parse_args(argv)
    try:
        return _module(args.command).run(args)
    except MissingExtra as err:
        print(MissingExtra(f"sao {args.command}", err.extra, err.missing), file=sys.stderr)
        return 2
    except run_failures as err:
        print(f"sao {args.command}: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:
        print(f"sao {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sao {args.command}: interrupted", file=sys.stderr)
        return 130
