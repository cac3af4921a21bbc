"""Fig. 7: adjacency spectra of SAO layers, against random biregular graphs and EOI masks.

For every size ``s`` (nodes per side) and kind of mask the table reports the distinct
eigenvalues of the bipartite adjacency with multiplicities, the connected components, the
biregular Ramanujan bound ``sqrt(c - 1) + sqrt(d - 1)`` and whether the second-largest
eigenvalue satisfies it — counted *with* multiplicity (the standard definition) and, as the
paper does, among *distinct* values. An SAO layer is a union of ``s/d`` copies of ``K_{d,d}``:
``λ1 = λ2 = d`` with multiplicity, so it is Ramanujan only in the paper's distinct-value sense
(and only trivially, since it is disconnected); a random biregular graph of the same degrees
is connected and close to the bound.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from sao._files import plt, save_figure, write_table
from sao.analysis.layers import method_weight
from sao.methods import METHODS
from sao.topology import components, configuration_model, ramanujan, spectrum

__all__ = ["run_spectrum", "spectrum_rows"]


def _distinct(eig: Tensor, decimals: int = 8) -> list[tuple[float, int]]:
    values, counts = torch.unique(eig.round(decimals=decimals) + 0.0, return_counts=True)
    return sorted(zip(values.tolist(), counts.tolist(), strict=True), key=lambda vc: -vc[0])


def _masks(size: int, degree: int, generator: torch.Generator) -> dict[str, Tensor]:
    masks = {"SAO": ramanujan(size, size, degree=degree, generator=generator).mask(),
             "random biregular": configuration_model(size, size, degree, generator=generator)}
    if "eoi" in METHODS:
        masks["EOI"] = method_weight("eoi", size, size, degree=degree, generator=generator)[1]
    return masks


def spectrum_row(kind: str, mask: Tensor) -> dict[str, object]:
    """The table row of one mask (see the module docstring)."""
    eig = spectrum(mask)
    distinct = _distinct(eig)
    c, d = int(mask.sum(0).max()), int(mask.sum(1).max())
    regular = bool((mask.sum(0) == c).all() and (mask.sum(1) == d).all())
    bound = math.sqrt(max(c - 1, 0)) + math.sqrt(max(d - 1, 0))
    second_distinct = distinct[1][0] if len(distinct) > 1 else float("nan")
    shown = distinct if len(distinct) <= 5 else [*distinct[:2], (float("nan"), len(distinct) - 4), *distinct[-2:]]
    return {
        "graph": kind, "nodes per side": mask.shape[0], "degrees (c, d)": f"({c}, {d})" + ("" if regular else " max"),
        "λ1": float(eig[0]), "mult(λ1)": distinct[0][1], "λ2 (with multiplicity)": float(eig[1]),
        "λ2 (distinct)": second_distinct, "Ramanujan bound": bound,
        "Ramanujan (with mult.)": bool(eig[1] <= bound + 1e-9),
        "Ramanujan (distinct, paper)": bool(second_distinct <= bound + 1e-9),
        "components": components(mask).count,
        "distinct eigenvalues (value×mult.)": "; ".join(f"… {k} more" if math.isnan(v) else f"{v:.4g}×{k}"
                                                        for v, k in shown),
    }


def spectrum_rows(sizes: tuple[int, ...] = (128, 256, 512, 1024), degree: int = 4,
                  seed: int = 0) -> tuple[list[dict[str, object]], dict[tuple[int, str], Tensor]]:
    """Rows of the table and the eigenvalues of every ``(size, kind)``."""
    gen = torch.Generator().manual_seed(seed)
    rows, eigs = [], {}
    for size in sizes:
        for kind, mask in _masks(size, degree, gen).items():
            rows.append(spectrum_row(kind, mask))
            eigs[size, kind] = spectrum(mask)
    return rows, eigs


def run_spectrum(out: Path, sizes: tuple[int, ...] = (128, 256, 512, 1024), degree: int = 4,
                 seed: int = 0) -> list[Path]:
    """Write ``spectrum.csv``/``.md`` and the histogram grid ``spectrum.png`` into ``out``."""
    rows, eigs = spectrum_rows(sizes, degree, seed)
    kinds = list(dict.fromkeys(kind for _, kind in eigs))
    fig, axes = plt.subplots(len(sizes), len(kinds), figsize=(4 * len(kinds), 2.4 * len(sizes)),
                             squeeze=False, layout="constrained")
    for i, size in enumerate(sizes):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            ax.hist(eigs[size, kind].numpy(), bins=81, color=f"C{j}")
            ax.set_yscale("log")
            bound = 2 * math.sqrt(degree - 1)
            for x in (-bound, bound):
                ax.axvline(x, color="red", linestyle="--", linewidth=0.8)
            ax.set_title(f"{kind}, {size} nodes/side, d={degree}", fontsize=9)
    fig.suptitle("Eigenvalues of the bipartite adjacency (log counts); red: Ramanujan bound ±2√(d−1)")
    title = f"Adjacency spectra, degree {degree} (seed {seed})"
    return [*write_table(rows, out, "spectrum", title), save_figure(fig, out, "spectrum")]
