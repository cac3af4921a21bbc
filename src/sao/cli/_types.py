"""The value types of the ``sao`` flags: every value is checked where it is parsed, before anything runs.

Each is an argparse ``type=``: it turns the flag's text into its value or raises
``argparse.ArgumentTypeError``, which the parser reports as one line naming the flag, exit
status 2 (``sao analyze reachability: error: argument --width: must be an integer >= 1, got '0'``).
Integers are also kept within 64 bits (what torch takes for sizes and seeds), real numbers finite,
and folders of the kind the flag needs. What depends on several flags together (a config's
cross-field rules) is checked by :func:`blame` once they are parsed, and named the same way.

Only the standard library is imported here: ``sao demo`` runs without the experiments extra.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sao._random import SEED_LIMIT

__all__ = ["INT64", "SEED", "Folder", "Integer", "Listing", "Real", "blame"]

T = TypeVar("T")
K = TypeVar("K")

#: The range of a 64-bit signed integer: torch's sizes, and ``int`` flags without a narrower range.
INT64 = (-(2**63), 2**63 - 1)


def _range(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    """``">= 1"``, ``"> 0"``, ``"in [0, 1)"``: the words for a range (``""`` when unbounded).

    >>> _range(0, 1, high_open=True), _range(0.5, None, low_open=True), _range(None, None)
    ('in [0, 1)', '> 0.5', '')
    """
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_number(low)}, {_number(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_number(low)}"
    return "" if high is None else f"{'<' if high_open else '<='} {_number(high)}"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _outside(value: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    return below or above


def _refuse(text: str, *what: str) -> argparse.ArgumentTypeError:
    """``must be <what, the empty parts left out>, got '<text>'``."""
    return argparse.ArgumentTypeError(f"must be {' '.join(filter(None, what))}, got {text!r}")


@dataclass(frozen=True)
class Integer:
    """An integer in ``[low, high]``; an end left out is that of a 64-bit integer.

    >>> Integer(low=1)("12")
    12
    """

    low: int | None = None
    high: int | None = None

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise self._refuse(text) from None
        if _outside(value, *INT64, False, False):
            raise self._refuse(text, "that fits in 64 bits")
        if _outside(value, self.low, self.high, False, False):
            raise self._refuse(text)
        return value

    def _refuse(self, text: str, also: str = "") -> argparse.ArgumentTypeError:
        return _refuse(text, "an integer", _range(self.low, self.high), also)


#: A random seed: what every generator a run seeds takes (``numpy.random.seed``: below 2**32; torch takes more).
SEED = Integer(0, SEED_LIMIT - 1)


@dataclass(frozen=True)
class Real:
    """A finite real number between ``low`` and ``high`` (ends open where asked; ``None``: unbounded).

    >>> Real(0.0, 1.0, high_open=True)("0.5")
    0.5
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or _outside(value, self.low, self.high, self.low_open, self.high_open):
            raise _refuse(text, "a finite number", _range(self.low, self.high, self.low_open, self.high_open))
        return value


@dataclass(frozen=True)
class Listing:
    """A comma-separated list of at least one ``item`` (each checked by it, e.g. :class:`Integer`).

    >>> Listing(Integer(low=1))("16,32")
    (16, 32)
    """

    item: Callable[[str], Any]

    def __call__(self, text: str) -> tuple[Any, ...]:
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"must be a comma-separated list without empty entries, got {text!r}")
        try:
            return tuple(self.item(part) for part in parts)
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentTypeError(f"each entry {err}" + f" (in {text!r})" * (len(parts) > 1)) from None


@dataclass(frozen=True)
class Folder:
    """A folder: an input one (``exists=True``) must be there; an output one may be created, so neither
    it nor any folder above it may be a file."""

    exists: bool = False

    def __call__(self, text: str) -> Path:
        path = Path(text)
        if self.exists and not path.is_dir():
            raise argparse.ArgumentTypeError(f"{'is not a folder' if path.exists() else 'no such folder'}: {text!r}")
        blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise argparse.ArgumentTypeError(f"{str(blocking)!r} is a file, not a folder")
        return path


def blame(build: Callable[[Mapping[K, Any]], T], given: Mapping[K, Any], flag: Callable[[K], str]) -> T:
    """``build(given)``; when it raises ``ValueError``, the error again, naming the flags to blame.

    ``given`` holds the values of the flags the user gave (key → value); a flag is to blame when
    building without it does not raise the same error. With none to blame (the error comes from
    what was not given) the error is raised as it is.

    >>> def build(given):
    ...     if given.get("depth", 1) < 1:
    ...         raise ValueError(f"depth must be >= 1, got {given['depth']}")
    >>> blame(build, {"depth": 0, "lr": 0.1}, lambda key: "--" + key)
    Traceback (most recent call last):
    ValueError: argument --depth: depth must be >= 1, got 0
    """
    try:
        return build(given)
    except ValueError as err:
        culprits = [flag(key) for key in given if _error(build, {k: v for k, v in given.items() if k != key})
                    != str(err)]
        if not culprits:
            raise
        raise ValueError(f"{_arguments(culprits)}: {err}") from None


def _error(build: Callable[[Mapping[K, Any]], Any], given: Mapping[K, Any]) -> str | None:
    try:
        build(given)
    except ValueError as err:
        return str(err)
    return None


def _arguments(flags: Iterable[str]) -> str:
    flags = list(flags)
    return f"argument {flags[0]}" if len(flags) == 1 else f"arguments {', '.join(flags)}"
