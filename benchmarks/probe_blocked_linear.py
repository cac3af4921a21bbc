"""Where the blocked linear backend loses time: one layer, forward + backward, four ways.

Backs the analysis in ``RESULTS.md``. For one ``SparseLinear(w, w, degree=d)`` layer and a
``(batch, w)`` input, times one training step (grads reset, forward, ``mean(y²)``, backward) of

- ``masked``: ``SparseLinear(..., backend="masked")`` (dense ``weight_orig * weight_mask``);
- ``blocked``: ``SparseLinear(..., backend="blocked")`` as shipped: gather, ``baddbmm`` with
  ``blocks.transpose(1, 2)``, scatter;
- ``blocked, (g, bn, bm) layout``: the same computation with the parameter stored transposed,
  so the ``bmm`` weight gradient arrives contiguous and autograd's ``AccumulateGrad`` does not
  have to copy a transposed ``(g, bn, bm)`` gradient into the ``(g, bm, bn)`` parameter layout;
- ``bmm only``: just the batched matmul of the blocked layer on pre-gathered inputs (no
  gathers/scatters), i.e. the floor the blocked backend could reach.

A prototype for the analysis, not a proposed implementation. Run
``python benchmarks/probe_blocked_linear.py [--cases 256:256 4096:2048 ...]``.
"""

from __future__ import annotations

import argparse

import torch

from _common import (
    fmt_other_load,
    machine_info,
    markdown_table,
    measure_uncontended,
    print_header,
    set_threads,
)
from sao.nn import SparseLinear

DEFAULT_CASES = ("256:4", "256:256", "1024:256", "4096:64", "4096:1024", "4096:2048")


def steps_for(width: int, degree: int, batch: int, seed: int) -> dict:
    torch.manual_seed(seed)
    x = torch.randn(batch, width)
    blocked, masked = (SparseLinear(width, width, degree=degree, backend=backend,
                                    generator=torch.Generator().manual_seed(seed)) for backend in ("blocked", "masked"))
    g, bm, bn = blocked.blocks.shape
    blocks_t = torch.nn.Parameter(blocked.blocks.detach().transpose(1, 2).contiguous())  # (g, bn, bm)
    bias = torch.nn.Parameter(blocked.bias.detach().clone())
    xs_fixed = x.index_select(1, blocked.col_perm).view(-1, g, bn).transpose(0, 1).contiguous()

    def step_layer(layer: SparseLinear):
        params = list(layer.parameters())

        def step() -> None:
            for p in params:
                p.grad = None
            layer(x).square().mean().backward()

        return step

    def step_transposed_layout() -> None:
        blocks_t.grad = bias.grad = None
        xs = x.index_select(1, blocked.col_perm).view(-1, g, bn).transpose(0, 1)
        z = torch.baddbmm(bias.index_select(0, blocked.row_perm).view(g, 1, bm), xs, blocks_t)
        y = z.transpose(0, 1).reshape(-1, g * bm).index_select(1, blocked.row_inverse)
        y.square().mean().backward()

    def step_bmm_only() -> None:
        blocks_t.grad = None
        torch.bmm(xs_fixed, blocks_t).square().mean().backward()

    with torch.no_grad():  # the prototype computes the same function as the shipped layer
        xs = x.index_select(1, blocked.col_perm).view(-1, g, bn).transpose(0, 1)
        z = torch.baddbmm(bias.index_select(0, blocked.row_perm).view(g, 1, bm), xs, blocks_t)
        y = z.transpose(0, 1).reshape(-1, g * bm).index_select(1, blocked.row_inverse)
        assert torch.allclose(y, blocked(x), atol=1e-5)
    return {"masked": step_layer(masked), "blocked": step_layer(blocked),
            "blocked_transposed_layout": step_transposed_layout, "bmm_only": step_bmm_only}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), metavar="W:D")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    print_header("Probe: one blocked SparseLinear layer, forward + backward", machine_info(),
                 [f"batch {args.batch}, float32, median of {args.repeats} repeats; the four variants are timed "
                  "round-robin"])
    rows = []
    for case in args.cases:
        width, degree = (int(v) for v in case.split(":"))
        steps = steps_for(width, degree, args.batch, args.seed)
        times, other, _ = measure_uncontended(steps, warmup=3, repeats=args.repeats, max_total_s=6.0,
                                              retries=args.retries)
        ms = {k: v.median * 1e3 for k, v in times.items()}
        rows.append([width, degree, f"{ms['masked']:.3g} ms", f"{ms['blocked']:.3g} ms",
                     f"{ms['blocked_transposed_layout']:.3g} ms",
                     f"{ms['blocked'] / ms['blocked_transposed_layout']:.2f}x", f"{ms['bmm_only']:.3g} ms",
                     f"{(ms['blocked_transposed_layout'] - ms['bmm_only']) / ms['blocked_transposed_layout']:.0%}",
                     fmt_other_load(other)])
    print(markdown_table(["width", "degree", "masked", "blocked (shipped)", "blocked, (g, bn, bm) layout",
                          "shipped / transposed layout", "bmm only", "time outside the bmm", "other procs"], rows))


if __name__ == "__main__":
    main()
