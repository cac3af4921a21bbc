"""The static counterpart of Fig. 11: end-to-end Jacobian singular values of FNN-N at initialisation.

For every depth ``N`` and method, FNN-N (tanh, paper Table 1) is initialised orthogonally with
the paper's gain 1.1, made sparse by the method (first and last layer dense) and probed at one
input ``x ~ N(0, I)``: the singular values of the Jacobian of the last hidden activation
(256 values) with respect to the 1024 inputs. Dynamical isometry means they concentrate near
one value: a small variance, a mean that does not collapse with depth.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from sao._files import plt, save_figure, write_table
from sao.analysis.layers import check_methods
from sao.methods import METHODS, sparsify
from sao.models import fnn, orthogonal_init_

__all__ = ["DEFAULT_DEPTHS", "DEFAULT_METHODS", "jacobian_rows", "jacobian_singular_values", "run_jacobian"]

DEFAULT_METHODS = ("dense", "sao", "rg-n", "rg-u", "lmp-s", "gmp-s", "lrp", "eoi")
DEFAULT_DEPTHS = (50, 100, 200, 500, 1000)


def jacobian_singular_values(method: str, depth: int, degree: int = 4, gain: float = 1.1, seed: int = 0,
                             activation: str = "tanh") -> Tensor:
    """Singular values of ``∂ h_N / ∂ x`` for FNN-``depth`` drawn by ``method`` (float64)."""
    gen = torch.Generator().manual_seed(seed)
    model = fnn(depth, activation).double()
    # the method draws every target layer itself; only the kept dense first and last need the orthogonal init
    chosen = METHODS.get(method)
    sparsify(model, method, degree=degree if chosen.needs_target else None, generator=gen, strict=True,
             **chosen.offered(gain=gain, activation=activation))
    orthogonal_init_(nn.ModuleList([model[0], model[-1]]), gain=gain, activation=activation, generator=gen)
    body = nn.Sequential(*list(model)[:-1]).requires_grad_(False)
    x = torch.randn(body[0].in_features, generator=gen, dtype=torch.float64)
    return torch.linalg.svdvals(torch.func.jacrev(body)(x))


def jacobian_rows(methods: tuple[str, ...] = DEFAULT_METHODS, depths: tuple[int, ...] = DEFAULT_DEPTHS,
                  degree: int = 4, gain: float = 1.1, seed: int = 0, verbose: bool = False) -> list[dict[str, object]]:
    """One row per (method, depth): mean, std, variance, min and max of the singular values.

    With ``verbose`` a line per finished row goes to stderr (the deepest rows take seconds each).
    """
    rows = []
    for method in check_methods(methods):
        for depth in depths:
            start = time.perf_counter()
            sv = jacobian_singular_values(method, depth, degree, gain, seed)
            rows.append({"method": method, "depth N": depth, "mean σ": float(sv.mean()), "std σ": float(sv.std()),
                         "var σ": float(sv.var()), "min σ": float(sv.min()), "max σ": float(sv.max())})
            if verbose:
                print(f"  jacobian {method:>6} N={depth:<5} mean σ {float(sv.mean()):.3g}  var σ {float(sv.var()):.3g}"
                      f"  ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    return rows


def run_jacobian(out: Path, methods: tuple[str, ...] = DEFAULT_METHODS, depths: tuple[int, ...] = DEFAULT_DEPTHS,
                 degree: int = 4, gain: float = 1.1, seed: int = 0) -> list[Path]:
    """Write ``jacobian.csv``/``.md`` and ``jacobian.png`` (mean and variance vs depth) into ``out``."""
    rows = jacobian_rows(methods, depths, degree, gain, seed, verbose=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        mine = [r for r in rows if r["method"] == method]
        style = {"color": f"C{i}", "marker": "o", "label": method, "linewidth": 2.5 if method == "sao" else 1.2}
        axes[0].plot([r["depth N"] for r in mine], [max(r["mean σ"], 1e-300) for r in mine], **style)
        axes[1].plot([r["depth N"] for r in mine], [max(r["var σ"], 1e-300) for r in mine], **style)
    for ax, what, floor in zip(axes, ("mean", "variance"), (1e-8, 1e-16), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)  # collapsed methods (σ → 0, down to 1e-300) would hide the rest; see the table
        ax.set_xlabel("depth N")
        ax.set_title(f"{what} of the Jacobian's singular values at init", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"FNN-N, tanh, gain {gain}, degree {degree} (seed {seed}); lines leaving the bottom have collapsed")
    title = f"Input–output Jacobian of FNN-N at init (tanh, gain {gain}, degree {degree}, seed {seed})"
    return [*write_table(rows, out, "jacobian", title), save_figure(fig, out, "jacobian")]
