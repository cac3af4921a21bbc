"""``sao analyze NAME --out DIR``: spectra, reachability, singular values, Jacobians (:mod:`sao.analysis`)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from sao._registry import Registry
from sao.analysis import jacobian, reachability, singular_values, spectrum
from sao.cli._types import SEED, Folder, Integer, Listing, Real

__all__ = ["ANALYSES", "HELP", "add_arguments", "run"]

HELP = "spectra, reachability, singular values, Jacobians (paper Figs. 7-11, Table 6)"


#: The value types of the flags: sizes, depths and degrees are positive integers, lists comma-separated;
#: method names are checked by the analysis, which names the known ones.
_COUNT = Integer(low=1)
_COUNTS = Listing(_COUNT)
_NAMES = Listing(str)
_SPARSITY = Real(0.0, 1.0, high_open=True)
_GAIN = Real(0.0, low_open=True)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Folder(), default=Path("analysis"), help="output folder (default ./analysis)")
    parser.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")


def _spectrum_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=_COUNTS, default=(128, 256, 512, 1024), help="nodes per side (default 128,...,1024)")
    p.add_argument("--degree", type=_COUNT, default=4, help="degree (default 4)")


def _reachability_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", type=_NAMES, default=reachability.DEFAULT_METHODS, help="comma-separated methods")
    p.add_argument("--width", type=_COUNT, default=256, help="layer width (default 256)")
    p.add_argument("--depth", type=_COUNT, default=8, help="layers (default 8)")
    p.add_argument("--degree", type=_COUNT, default=4, help="SAO degree; other methods match its sparsity (default 4)")


def _singular_values_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", type=_NAMES, default=singular_values.DEFAULT_METHODS, help="comma-separated methods")
    p.add_argument("--width", type=_COUNT, default=256, help="layer width (default 256)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--degree", type=_COUNT, default=None, help="SAO degree (default 2 = 99.2%% sparse at 256)")
    group.add_argument("--sparsity", type=_SPARSITY, default=None, help="sparsity instead of a degree")
    p.add_argument("--repeats", type=_COUNT, default=10, help="independent layers pooled (default 10)")


def _jacobian_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", type=_NAMES, default=jacobian.DEFAULT_METHODS, help="comma-separated methods")
    p.add_argument("--depths", type=_COUNTS, default=jacobian.DEFAULT_DEPTHS, help="depths N (default 50,...,1000)")
    p.add_argument("--degree", type=_COUNT, default=4, help="SAO degree (default 4)")
    p.add_argument("--gain", type=_GAIN, default=1.1, help="weight gain (default 1.1, the paper's)")


def _run_singular_values(a: argparse.Namespace) -> list[Path]:
    degree = 2 if a.degree is None and a.sparsity is None else a.degree
    return singular_values.run_singular_values(a.out, a.methods, a.width, degree, a.sparsity, a.repeats, a.seed)


Analysis = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], list[Path]]]
ANALYSES: Registry[Analysis] = Registry("analysis", "sao.cli.analyze.ANALYSES")
ANALYSES.register("spectrum", ("adjacency spectra of SAO layers (Fig. 7)", _spectrum_args,
                               lambda a: spectrum.run_spectrum(a.out, a.sizes, a.degree, a.seed)))
ANALYSES.register("reachability", ("reachability over depth per method (Fig. 8)", _reachability_args,
                                   lambda a: reachability.run_reachability(a.out, a.methods, a.width, a.depth,
                                                                           a.degree, a.seed)))
ANALYSES.register("singular-values", ("one layer's singular values, KS test vs dense orthogonal (Figs. 9-10, "
                                      "Table 6)", _singular_values_args, _run_singular_values))
ANALYSES.register("jacobian", ("end-to-end Jacobian of FNN-N at init (static Fig. 11)", _jacobian_args,
                               lambda a: jacobian.run_jacobian(a.out, a.methods, a.depths, a.degree, a.gain, a.seed)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One subcommand per registered analysis, each with its own options."""
    sub = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    for name in ANALYSES:
        help_text, add_args, _ = ANALYSES.get(name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        add_args(p)


def run(args: argparse.Namespace) -> int:
    """Run the chosen analysis and list the files it wrote."""
    start = time.perf_counter()
    for path in ANALYSES.get(args.analysis)[2](args):
        print(path)
    print(f"sao analyze {args.analysis}: done in {time.perf_counter() - start:.1f} s")
    return 0
