"""The ``sao`` command line: one module per command, one error boundary (:func:`main`).

Each command is a module of this package with ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> exit status``, registered in :data:`COMMANDS`, and optionally ``resolve(args)``,
which turns the parsed flags into the command's settings (stored on ``args``) as part of parsing.

Every flag is checked before anything runs: each value by its type (:mod:`sao.cli._types`), the
flags together by ``resolve``; either error is one line naming the flag, exit status 2
("sao train: error: argument --depth: ... (see sao train --help)"). :func:`main` returns that
status rather than exiting, and turns the user errors of a run into one line on stderr: a
``ValueError`` (bad settings, unknown names) or an ``OSError`` (missing data, unreadable folders)
exits 2, a grid with failed runs exits 1 naming them (:class:`sao.experiments.FailedRuns`), as
does a run another driver is training (:class:`sao.experiments.RunClaimed`) and running out of memory
(sizes too large for this machine: one line, exit 1); Ctrl-C exits 130
(a sweep stops at once and resumes on the next call). Anything else is a bug and keeps its
traceback.

Commands built on the harness need the ``experiments`` extra. Without it they still show in
``sao --help``, and running one says what to install (exit status 2): "sao reproduce needs the
experiments extra: pip install 'sao[experiments]' (not installed: ...)"; ``sao demo`` needs only
the library.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NoReturn

import torch

from sao import __version__
from sao._extras import MissingExtra
from sao._registry import Registry

__all__ = ["COMMANDS", "build_parser", "main"]

#: Command name → the module implementing it.
COMMANDS: Registry[str] = Registry("command", "sao.cli.COMMANDS")
for _name in ("demo", "train", "reproduce", "report", "analyze"):
    COMMANDS.register(_name, f"sao.cli.{_name}")


#: The attribute of the parsed arguments naming the command run (``"sao analyze spectrum"``), for its messages.
PROG = "prog"


def _module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS.get(name))


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and a pointer to ``--help``), exit status 2.

    With ``missing`` (the parser of a command whose extra is not installed) it takes any arguments,
    so that running the command reaches :func:`main`, which says what to install. With ``resolve``
    (a command's), the parsed flags are resolved together; a ``ValueError`` is an argument error.
    """

    def __init__(self, *args: Any, missing: MissingExtra | None = None,
                 resolve: Callable[[argparse.Namespace], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.missing = missing
        self.resolve = resolve

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        """Parse as usual and resolve, or, for a command whose extra is not installed, take every argument."""
        if self.missing is not None:
            return (namespace if namespace is not None else argparse.Namespace()), []
        namespace, extras = super().parse_known_args(args, namespace)
        if not hasattr(namespace, PROG):  # the innermost command's parser is done first
            setattr(namespace, PROG, self.prog)
        if self.resolve is not None and not extras:  # unknown arguments are the error to report first
            try:
                self.resolve(namespace)
            except ValueError as err:
                self.error(str(err))
        return namespace, extras

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
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP,
                                            resolve=getattr(module, "resolve", None)))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (module docstring)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version or an argument error, already printed
        return int(done.code or 0)
    except KeyboardInterrupt:
        print("sao: interrupted", file=sys.stderr)
        return 130
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command; its user errors are one line on stderr (module docstring)."""
    try:
        from sao.experiments import FailedRuns, LeaseLost, RunClaimed

        run_failures: tuple[type[Exception], ...] = (FailedRuns, RunClaimed, LeaseLost)
    except MissingExtra:
        run_failures = ()  # no command that runs experiments can run
    prog = getattr(args, PROG, f"sao {args.command}")
    try:
        return _module(args.command).run(args)
    except MissingExtra as err:
        print(MissingExtra(f"sao {args.command}", err.extra, err.missing), file=sys.stderr)
        return 2
    except run_failures as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader of stdout left (`sao report DIR | head`): not an input error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit must not fail
        return 141
    except (ValueError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:
        if not _out_of_memory(err):
            raise
        print(f"{prog}: out of memory{': ' * bool(str(err))}{_first_line(err)} (smaller sizes?)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` says memory ran out: Python's, torch's (CPU and CUDA), or a size torch cannot address."""
    return isinstance(err, MemoryError | torch.OutOfMemoryError) or any(
        words in str(err) for words in ("can't allocate memory", "Storage size calculation overflowed"))


def _first_line(err: BaseException) -> str:
    """The message of ``err`` without torch's source location (``[enforce fail at alloc_cpu.cpp:127] err == 0.``)."""
    line = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return line.split(". ", 1)[1] if line.startswith("[enforce fail") and ". " in line else line
