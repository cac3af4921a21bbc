"""The blocked linear layer's storage, one layer forward + backward: shipped vs the alternatives.

For one ``SparseLinear(w, w, degree=d)`` layer and a ``(batch, w)`` input, times one training
step (grads reset, forward, ``mean(y²)``, backward) of

- ``masked``: ``SparseLinear(..., backend="masked")`` (dense ``weight_orig * weight_mask``);
- ``blocked``: ``SparseLinear(..., backend="blocked")`` as shipped: contiguous ``(g, bm, bn)``
  blocks and its own autograd function, whose backward writes the blocks' gradient as
  ``gradᵀ @ xs`` straight into the parameter's layout;
- ``format-1``: the layout before it: the parameter a transposed view of ``(g, bn, bm)``
  storage and autograd's own ``bmm`` backward (fast, but ``p.view(-1)`` fails, so
  ``parameters_to_vector`` and ``torch.optim.LBFGS`` did not work);
- ``contiguous + autograd``: contiguous blocks with autograd's own ``bmm`` backward, whose
  transposed gradient ``AccumulateGrad`` copies into the parameter's layout;
- ``bmm only``: just the batched matmul on pre-gathered inputs (the floor).

Run ``python benchmarks/probe_blocked_linear.py [--cases 256:4 4096:1024 ...]``.
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

DEFAULT_CASES = ("256:4", "256:256", "1024:16", "1024:256", "4096:64", "4096:1024", "4096:2048")
VARIANTS = ("masked", "blocked", "format_1", "contiguous_autograd", "bmm_only")


def steps_for(width: int, degree: int, batch: int, seed: int) -> dict:
    torch.manual_seed(seed)
    x = torch.randn(batch, width)
    blocked, masked = (SparseLinear(width, width, degree=degree, backend=backend,
                                    generator=torch.Generator().manual_seed(seed)) for backend in ("blocked", "masked"))
    g, bm, bn = blocked.blocks.shape
    strided = torch.nn.Parameter(blocked.blocks.detach().transpose(1, 2).contiguous().transpose(1, 2))
    contiguous = torch.nn.Parameter(blocked.blocks.detach().clone())
    bias = torch.nn.Parameter(blocked.bias.detach().clone())
    xs_fixed = x.index_select(1, blocked.col_perm).view(-1, g, bn).transpose(0, 1).contiguous()

    def step_layer(layer: SparseLinear):
        params = list(layer.parameters())

        def step() -> None:
            for p in params:
                p.grad = None
            layer(x).square().mean().backward()

        return step

    def autograd_forward(blocks: torch.Tensor) -> torch.Tensor:
        xs = x.index_select(1, blocked.col_perm).view(-1, g, bn).transpose(0, 1)
        z = torch.baddbmm(bias.index_select(0, blocked.row_perm).view(g, 1, bm), xs, blocks.transpose(1, 2))
        return z.transpose(0, 1).reshape(-1, g * bm).index_select(1, blocked.row_inverse)

    def step_autograd(blocks: torch.nn.Parameter):
        def step() -> None:
            blocks.grad = bias.grad = None
            autograd_forward(blocks).square().mean().backward()

        return step

    def step_bmm_only() -> None:
        contiguous.grad = None
        torch.bmm(xs_fixed, contiguous.transpose(1, 2)).square().mean().backward()

    with torch.no_grad():  # the variants compute the shipped layer's function
        assert torch.allclose(autograd_forward(strided), blocked(x), atol=1e-5)
    return {"masked": step_layer(masked), "blocked": step_layer(blocked), "format_1": step_autograd(strided),
            "contiguous_autograd": step_autograd(contiguous), "bmm_only": step_bmm_only}


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
                 [f"batch {args.batch}, float32, median of {args.repeats} repeats; the five variants are timed "
                  "round-robin"])
    rows = []
    for case in args.cases:
        width, degree = (int(v) for v in case.split(":"))
        steps = steps_for(width, degree, args.batch, args.seed)
        times, other, _ = measure_uncontended(steps, warmup=3, repeats=args.repeats, max_total_s=6.0,
                                              retries=args.retries)
        ms = {k: times[k].median * 1e3 for k in VARIANTS}
        rows.append([width, degree, *(f"{ms[k]:.3g} ms" for k in VARIANTS),
                     f"{ms['blocked'] / ms['format_1']:.2f}x", f"{ms['contiguous_autograd'] / ms['blocked']:.2f}x",
                     fmt_other_load(other)])
    print(markdown_table(["width", "degree", "masked", "blocked (shipped)", "format-1 layout", "contiguous + autograd",
                          "bmm only", "shipped / format-1", "autograd copy / shipped", "other procs"], rows))

if __name__ == "__main__":
    main()
