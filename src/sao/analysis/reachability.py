"""Fig. 8: which inputs reach which outputs after N sparse layers, per method.

A stack of ``depth`` square layers is made sparse by each method at the same sparsity (SAO's
at the given degree); :func:`sao.topology.reachability` multiplies the boolean masks. The
table gives, after every ``N``, the fraction of (output, input) pairs connected and the first
``N`` with full connectivity ("never" if not within ``depth``). Magnitude pruning can leave
whole rows or columns of a layer empty, after which no depth helps.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sao._files import plt, save_figure, write_table
from sao.analysis.layers import check_methods, method_stack
from sao.topology import reachability

__all__ = ["DEFAULT_METHODS", "reachability_rows", "run_reachability"]

DEFAULT_METHODS = ("sao", "gmp-s", "lrp", "eoi")


def reachability_rows(methods: tuple[str, ...] = DEFAULT_METHODS, width: int = 256, depth: int = 8,
                      degree: int = 4, seed: int = 0) -> tuple[list[dict[str, object]], dict[str, list[torch.Tensor]]]:
    """Table rows and, per method, the reachability matrices after ``N = 1..depth`` layers."""
    rows, reach = [], {}
    for method in check_methods(methods):
        masks = [mask for _, mask in method_stack(method, width, depth, degree=degree,
                                                   generator=torch.Generator().manual_seed(seed))]
        reach[method] = reachability(masks, cumulative=True)
        fractions = [float(r.float().mean()) for r in reach[method]]
        full = next((n + 1 for n, f in enumerate(fractions) if f == 1.0), "never")
        sparsity = 1 - sum(float(m.float().mean()) for m in masks) / depth
        rows.append({"method": method, "sparsity": round(sparsity, 6), "full connectivity at N": full,
                     **{f"N={n + 1}": round(f, 4) for n, f in enumerate(fractions)}})
    return rows, reach


def run_reachability(out: Path, methods: tuple[str, ...] = DEFAULT_METHODS, width: int = 256, depth: int = 8,
                     degree: int = 4, seed: int = 0) -> list[Path]:
    """Write ``reachability.csv``/``.md`` and the image grid ``reachability.png`` into ``out``."""
    rows, reach = reachability_rows(methods, width, depth, degree, seed)
    fig, axes = plt.subplots(len(reach), depth, figsize=(1.6 * depth, 1.8 * len(reach)),
                             squeeze=False, layout="constrained")
    for i, (method, mats) in enumerate(reach.items()):
        for n, mat in enumerate(mats):
            ax = axes[i][n]
            ax.imshow(mat.numpy(), cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"N={n + 1}", fontsize=8)
            if n == 0:
                ax.set_ylabel(method, fontsize=9)
    fig.suptitle(f"Reachability (output × input) of {width}-wide layers, degree {degree} (black = reachable)")
    title = f"Reachability of {width}-wide stacks at degree {degree} (seed {seed})"
    return [*write_table(rows, out, "reachability", title), save_figure(fig, out, "reachability")]
