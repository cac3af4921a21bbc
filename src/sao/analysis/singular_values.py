"""Figs. 9–10, Table 6: singular values of one sparse layer against a dense orthogonal one.

For each method a ``width × width`` layer is drawn (plain constructions, ``activation="linear"``,
so every method's weight is comparable) ``repeats`` times with different seeds. The layer's
Jacobian at a random input ``x ~ N(0, I)`` is ``J = diag(φ'(W x)) W`` for the activations
linear (``φ' = 1``), tanh and relu; its singular values are pooled over the repeats and
compared with the dense orthogonal layer's by the two-sample Kolmogorov–Smirnov test
(``scipy.stats.ks_2samp``), as in the paper's Table 6. Values are rounded to 9 decimals first,
so float noise around 1.0 is not mistaken for a difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import stats

from sao._files import plt, save_figure, write_table
from sao.analysis.layers import check_methods, method_weight

__all__ = ["DEFAULT_METHODS", "DERIVATIVES", "layer_singular_values", "run_singular_values", "singular_value_rows"]

DEFAULT_METHODS = ("dense", "lmp-s", "lrp", "rg-n", "rg-u", "sao", "eoi")
DERIVATIVES = {
    "linear": lambda h: torch.ones_like(h),
    "tanh": lambda h: 1 - torch.tanh(h) ** 2,
    "relu": lambda h: (h > 0).to(h.dtype),
}


def layer_singular_values(method: str, activation: str, width: int = 256, degree: int | None = 2,
                          sparsity: float | None = None, repeats: int = 10, seed: int = 0) -> np.ndarray:
    """Pooled singular values of ``diag(φ'(W x)) W`` over ``repeats`` draws (rounded to 1e-9)."""
    values = []
    for r in range(repeats):
        gen = torch.Generator().manual_seed(seed * 10_000 + r)
        kwargs = {"degree": degree, "sparsity": sparsity} if method != "dense" else {}
        w, _ = method_weight(method, width, width, activation="linear", generator=gen, **kwargs)
        x = torch.randn(width, generator=gen, dtype=torch.float64)
        jac = DERIVATIVES[activation](w @ x)[:, None] * w
        values.append(torch.linalg.svdvals(jac).numpy())
    return np.round(np.concatenate(values), 9)


def singular_value_rows(methods: tuple[str, ...] = DEFAULT_METHODS, width: int = 256, degree: int | None = 2,
                        sparsity: float | None = None, repeats: int = 10,
                        seed: int = 0) -> tuple[list[dict[str, object]], dict[tuple[str, str], np.ndarray]]:
    """Rows of Table 6 (one per method and activation) and the pooled singular values."""
    rows, values = [], {}
    check_methods(methods)
    for activation in DERIVATIVES:
        dense = layer_singular_values("dense", activation, width, None, None, repeats, seed)
        for method in methods:
            sv = dense if method == "dense" else layer_singular_values(method, activation, width, degree, sparsity,
                                                                       repeats, seed)
            values[method, activation] = sv
            ks = stats.ks_2samp(sv, dense)
            rows.append({"method": method, "activation": activation, "mean σ": float(sv.mean()),
                         "std σ": float(sv.std()), "min σ": float(sv.min()), "max σ": float(sv.max()),
                         "KS statistic": float(ks.statistic), "KS p-value": float(ks.pvalue),
                         "same as dense (p > 0.05)": bool(ks.pvalue > 0.05)})
    return rows, values


def run_singular_values(out: Path, methods: tuple[str, ...] = DEFAULT_METHODS, width: int = 256,
                        degree: int | None = 2, sparsity: float | None = None, repeats: int = 10,
                        seed: int = 0) -> list[Path]:
    """Write ``singular_values.csv``/``.md`` and ``singular_values.png`` into ``out``."""
    rows, values = singular_value_rows(methods, width, degree, sparsity, repeats, seed)
    fig, axes = plt.subplots(1, len(DERIVATIVES), figsize=(5 * len(DERIVATIVES), 3.6),
                             squeeze=False, layout="constrained")
    bins = np.linspace(0, max(2.5, max(float(v.max()) for v in values.values())), 60)
    for ax, activation in zip(axes[0], DERIVATIVES, strict=True):
        for i, method in enumerate(m for m in methods if (m, activation) in values):
            ax.hist(values[method, activation], bins=bins, histtype="step", label=method, color=f"C{i}",
                    linewidth=2.5 if method in ("dense", "sao") else 1.2)
        ax.set_yscale("log")
        ax.set_title(f"{activation}: singular values of J = diag(φ'(Wx)) W", fontsize=9)
        ax.set_xlabel("σ")
    axes[0][0].legend(fontsize=8)
    layer = f"degree {degree}" if degree is not None else f"sparsity {sparsity}"
    fig.suptitle(f"One {width}×{width} layer at {layer}, {repeats} draws pooled")
    title = f"Singular values vs dense orthogonal, {width}×{width}, {layer}, {repeats} draws (KS test)"
    return [*write_table(rows, out, "singular_values", title), save_figure(fig, out, "singular_values")]
