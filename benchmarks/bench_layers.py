"""Training-step time and memory of sparse layers: ``backend="blocked"`` vs ``backend="masked"``.

Linear section: a stack of ``--depth`` square ``SparseLinear(w, w, degree=d)`` layers with tanh
between, batch ``--batch``, float32. One step = forward, ``loss = mean(y²)``, backward (grads
reset to ``None`` first). For every width/degree: ms per step of the masked backend (dense
``weight_orig * weight_mask`` then a dense matmul, the paper's way), of the blocked backend
(gather, batched matmul over the ``g`` blocks, scatter) and of a dense ``nn.Linear`` stack;
the speed-up masked/blocked (``< 1`` means blocked is slower; such rows are marked); bytes of
parameters + gradients of each backend. Both backends are built from the same seeds, so they
compute the same function; ``max|Δy|`` checks it on the timed input.

Conv section: a stack of ``--conv-depth`` ``SparseConv2d(c, c, 3, padding=1)`` with tanh between
(``c = --channels``, input ``--conv-batch x c x --size x --size``) at sparsity 0.5 and
0.96875, blocked (channel permutation + grouped conv) vs masked, plus a dense ``nn.Conv2d``
stack.

``--profile W:D`` (linear) or ``--profile conv:S`` runs ``torch.profiler`` on one case and
prints where each backend spends its time, instead of the benchmark.

Run ``python benchmarks/bench_layers.py [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from _common import (
    CONTENTION_CORES,
    OtherCpuLoad,
    add_timing_args,
    fmt_bytes,
    fmt_other_load,
    load_average,
    machine_info,
    markdown_table,
    measure_uncontended,
    measurement_dict,
    print_header,
    set_threads,
    write_sections_json,
)
from sao.nn import SparseConv2d, SparseLinear, fuse_sparse_chains
from sao.topology import valid_degrees

WIDTHS = (256, 1024, 4096)
BASE_DEGREES = (4, 16, 64, 256)  # plus width/4 and width/2 (25 % and 50 % density) where valid
QUICK_LINEAR = ((256, 4), (256, 256), (1024, 16), (1024, 256), (4096, 64))
CONV_SPARSITIES = (0.5, 0.96875)
BACKENDS = ("masked", "blocked")


def linear_grid(widths: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(width, degree)`` cases: degrees 4, 16, 64, 256, width/4, width/2 that are valid for ``width``."""
    grid = []
    for w in widths:
        wanted = {*BASE_DEGREES, w // 4, w // 2}
        grid += [(w, d) for d in sorted(wanted) if d in valid_degrees(w, w)]
    return grid


def linear_stack(width: int, degree: int | None, depth: int, backend: str | None, seed: int) -> nn.Sequential:
    """``depth`` square layers with tanh between; ``backend=None`` gives plain ``nn.Linear`` layers."""
    layers: list[nn.Module] = []
    for i in range(depth):
        if backend is None:
            torch.manual_seed(seed + i)
            layers.append(nn.Linear(width, width))
        else:
            layers.append(SparseLinear(width, width, degree=degree, backend=backend,
                                       generator=torch.Generator().manual_seed(seed + i)))
        if i < depth - 1:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def conv_stack(channels: int, sparsity: float | None, depth: int, backend: str | None, seed: int) -> nn.Sequential:
    """``depth`` 3x3 same-padding convs with tanh between; ``backend=None`` gives plain ``nn.Conv2d``."""
    layers: list[nn.Module] = []
    for i in range(depth):
        if backend is None:
            torch.manual_seed(seed + i)
            layers.append(nn.Conv2d(channels, channels, 3, padding=1))
        else:
            layers.append(SparseConv2d(channels, channels, 3, padding=1, sparsity=sparsity, backend=backend,
                                       generator=torch.Generator().manual_seed(seed + i)))
        if i < depth - 1:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward + backward (grads set to ``None`` first, as ``optimizer.zero_grad()`` does)."""
    params = list(model.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        model(x).square().mean().backward()

    return step


def memory(model: nn.Module) -> dict[str, int]:
    """Bytes of parameters, of their gradients (after a step) and of buffers (masks, permutations)."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return {"params_bytes": params, "grads_bytes": grads, "buffers_bytes": buffers,
            "params_grads_bytes": params + grads}


def speedup_cell(s: float) -> str:
    return f"{s:.2f}x" if s >= 1 else f"**{s:.2f}x ⚠ slower**"


def _bench_models(models: dict[str, nn.Module], x: torch.Tensor, opts: dict) -> dict:
    """Time the ``dense``/``masked``/``blocked`` models round-robin; memory; output check."""
    load_before = load_average()
    steps = {name: train_step(model, x) for name, model in models.items()}
    row: dict = {}
    times, row["other_cpu_cores"], row["attempts"] = measure_uncontended(steps, **opts)
    for name, m in times.items():
        row.update(measurement_dict(m, name))
    for name, model in models.items():
        row.update({f"{name}_{k}": v for k, v in memory(model).items()})
    with torch.no_grad():
        row["max_abs_diff"] = float((models["masked"](x) - models["blocked"](x)).abs().max())
    row["speedup_masked_over_blocked"] = row["masked_median_s"] / row["blocked_median_s"]
    if "fused" in models:
        row["speedup_masked_over_fused"] = row["masked_median_s"] / row["fused_median_s"]
    row["speedup_dense_over_blocked"] = row["dense_median_s"] / row["blocked_median_s"]
    row["load_average_1min_before"] = load_before[0] if load_before else None
    return row


def bench_linear(args: argparse.Namespace, grid: list[tuple[int, int]]) -> list[dict]:
    rows = []
    opts = {"warmup": args.warmup, "repeats": args.repeats, "max_total_s": args.max_case_s,
            "retries": args.retries, "wait_s": args.retry_wait_s}
    for width, degree in grid:
        torch.manual_seed(args.seed)
        x = torch.randn(args.batch, width)
        models = {"dense": linear_stack(width, None, args.depth, None, args.seed),
                  **{b: linear_stack(width, degree, args.depth, b, args.seed) for b in BACKENDS}}
        models["fused"] = fuse_sparse_chains(models["blocked"], min_layers=1)  # same parameters, one gather/layer
        row = {"width": width, "degree": degree, "sparsity": 1 - degree / width, "num_blocks": width // degree,
               "batch": args.batch, "depth": args.depth, **_bench_models(models, x, opts)}
        rows.append(row)
        del models
        print(f"  linear {width}/d={degree}: masked {row['masked_median_s'] * 1e3:.2f} ms, "
              f"blocked {row['blocked_median_s'] * 1e3:.2f} ms", file=sys.stderr, flush=True)
    return rows


def bench_conv(args: argparse.Namespace) -> list[dict]:
    rows = []
    opts = {"warmup": args.warmup, "repeats": args.repeats, "max_total_s": args.max_case_s,
            "retries": args.retries, "wait_s": args.retry_wait_s}
    torch.manual_seed(args.seed)
    x = torch.randn(args.conv_batch, args.channels, args.size, args.size)
    for s in CONV_SPARSITIES:
        models = {"dense": conv_stack(args.channels, None, args.conv_depth, None, args.seed),
                  **{b: conv_stack(args.channels, s, args.conv_depth, b, args.seed) for b in BACKENDS}}
        row = {"channels": args.channels, "sparsity": s, "num_blocks": round(1 / (1 - s)), "batch": args.conv_batch,
               "size": args.size, "depth": args.conv_depth, **_bench_models(models, x, opts)}
        rows.append(row)
        print(f"  conv s={s}: masked {row['masked_median_s'] * 1e3:.2f} ms, "
              f"blocked {row['blocked_median_s'] * 1e3:.2f} ms", file=sys.stderr, flush=True)
    return rows


def _mem_cell(row: dict, name: str) -> str:
    return f"{fmt_bytes(row[f'{name}_params_grads_bytes'])} (+{fmt_bytes(row[f'{name}_buffers_bytes'])})"


def print_linear(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"## Linear: {args.depth} x SparseLinear(w, w) + tanh, batch {args.batch}, float32, forward + backward\n")
    print(markdown_table(
        ["width", "degree", "sparsity", "blocks g×(d×d)", "dense nn.Linear", "masked", "blocked",
         "speed-up masked/blocked", "fused chain", "masked/fused", "dense/blocked", "masked params+grads (+buffers)",
         "blocked params+grads (+buffers)", "memory masked/blocked", "max\\|Δy\\|", "other procs"],
        [[r["width"], r["degree"], f"{r['sparsity']:.4%}", f"{r['num_blocks']}×({r['degree']}×{r['degree']})",
          f"{r['dense_median_s'] * 1e3:.3g} ms", f"{r['masked_median_s'] * 1e3:.3g} ms",
          f"{r['blocked_median_s'] * 1e3:.3g} ms", speedup_cell(r["speedup_masked_over_blocked"]),
          f"{r['fused_median_s'] * 1e3:.3g} ms", speedup_cell(r["speedup_masked_over_fused"]),
          f"{r['speedup_dense_over_blocked']:.2f}x", _mem_cell(r, "masked"), _mem_cell(r, "blocked"),
          f"{r['masked_params_grads_bytes'] / r['blocked_params_grads_bytes']:.1f}x", f"{r['max_abs_diff']:.1e}",
          fmt_other_load(r.get("other_cpu_cores"))]
         for r in rows]))
    print()


def print_conv(rows: list[dict], args: argparse.Namespace) -> None:
    c = args.channels
    print(f"## Conv: {args.conv_depth} x SparseConv2d({c}, {c}, 3, padding=1) + tanh, input {args.conv_batch}×{c}×"
          f"{args.size}×{args.size}, float32, forward + backward\n")
    print(markdown_table(
        ["sparsity", "groups", "dense nn.Conv2d", "masked", "blocked", "speed-up masked/blocked", "dense/blocked",
         "masked params+grads (+buffers)", "blocked params+grads (+buffers)", "max\\|Δy\\|", "other procs"],
        [[f"{r['sparsity']:.5g}", r["num_blocks"], f"{r['dense_median_s'] * 1e3:.3g} ms",
          f"{r['masked_median_s'] * 1e3:.3g} ms", f"{r['blocked_median_s'] * 1e3:.3g} ms",
          speedup_cell(r["speedup_masked_over_blocked"]), f"{r['speedup_dense_over_blocked']:.2f}x",
          _mem_cell(r, "masked"), _mem_cell(r, "blocked"), f"{r['max_abs_diff']:.1e}",
          fmt_other_load(r.get("other_cpu_cores"))]
         for r in rows]))
    print()


def summary(linear: list[dict], conv: list[dict]) -> None:
    cases = [(f"linear {r['width']}/d={r['degree']}", r["speedup_masked_over_blocked"]) for r in linear]
    cases += [(f"conv sparsity {r['sparsity']:.5g}", r["speedup_masked_over_blocked"]) for r in conv]
    slower = [f"{name} ({s:.2f}x)" for name, s in cases if s < 1]
    worst = min(cases, key=lambda c: c[1])
    print(f"**Blocked slower than masked in {len(slower)} of {len(cases)} cases**"
          + (f": {', '.join(slower)}." if slower else "."))
    print(f"Smallest speed-up masked/blocked: {worst[1]:.2f}x ({worst[0]}); largest: "
          f"{max(c[1] for c in cases):.2f}x ({max(cases, key=lambda c: c[1])[0]}).")
    busy = [r for r in (*linear, *conv) if (r.get("other_cpu_cores") or 0) > CONTENTION_CORES]
    print(f"Cases timed under contention from other processes (> {CONTENTION_CORES} cores): "
          f"{len(busy)} of {len(cases)}.\n")


def profile(args: argparse.Namespace) -> None:
    """Print ``torch.profiler`` tables (self CPU time per op) of one case, both backends."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    kind, _, rest = args.profile.partition(":")
    if kind == "conv":
        torch.manual_seed(args.seed)
        x = torch.randn(args.conv_batch, args.channels, args.size, args.size)
        models = {b: conv_stack(args.channels, float(rest), args.conv_depth, b, args.seed) for b in BACKENDS}
        title = f"conv {args.channels}ch sparsity {rest}, batch {args.conv_batch}, {args.size}x{args.size}"
    else:
        width, degree = int(kind), int(rest)
        torch.manual_seed(args.seed)
        x = torch.randn(args.batch, width)
        models = {b: linear_stack(width, degree, args.depth, b, args.seed) for b in BACKENDS}
        title = f"linear {width}/d={degree}, batch {args.batch}, depth {args.depth}"
    steps = args.profile_steps
    for backend, model in models.items():
        step = train_step(model, x)
        for _ in range(3):
            step()
        with OtherCpuLoad() as other, torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                step()
            wall = time.perf_counter() - start
        print(f"### {title}: backend={backend!r}, {steps} steps (times are totals over the steps)\n")
        print(f"wall time {wall / steps * 1e3:.3g} ms/step under the profiler; other processes used "
              f"{fmt_other_load(other.cores)} cores meanwhile\n")
        print("```")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))
        print("```\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batch", type=int, default=256, help="batch size of the linear stacks")
    parser.add_argument("--depth", type=int, default=4, help="SparseLinear layers per stack")
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS), help="linear widths")
    parser.add_argument("--channels", type=int, default=128, help="conv channels (in = out)")
    parser.add_argument("--size", type=int, default=16, help="conv input side")
    parser.add_argument("--conv-batch", type=int, default=64, help="conv batch size")
    parser.add_argument("--conv-depth", type=int, default=4, help="SparseConv2d layers per stack")
    parser.add_argument("--no-conv", action="store_true", help="skip the conv section")
    add_timing_args(parser, repeats=15, warmup=3, max_case_s=6.0)
    parser.add_argument("--quick", action="store_true",
                        help=f"small grid {QUICK_LINEAR}, conv depth 2, 3 repeats, no retries (< 1 min)")
    parser.add_argument("--profile", metavar="W:D|conv:S", help="profile one case instead of benchmarking")
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--profile-rows", type=int, default=14)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.max_case_s, args.conv_depth, args.retries = 3, 1, 2.0, 2, 0
    set_threads(args.threads)
    info = machine_info()
    if args.profile:
        print_header(f"Profile of {args.profile}", info)
        profile(args)
        return
    grid = list(QUICK_LINEAR) if args.quick else linear_grid(tuple(args.widths))
    print_header("Sparse layers: blocked vs masked backend", info, [
        f"median of {args.repeats} repeats after {args.warmup} warm-up step(s) (slow cases: at least 3 repeats, "
        f"timed part capped at {args.max_case_s:g} s; re-measured up to {args.retries} time(s) if other processes "
        "interfered); one step = zero grads + forward + mean(y²) + backward; "
        "dense, masked and blocked of one case are timed round-robin (same load conditions)",
        "speed-up = masked time / blocked time, both measured in this run (< 1: blocked is slower, marked ⚠); "
        "dense/blocked compares with plain nn.Linear / nn.Conv2d stacks of the same shape",
        "memory: bytes of parameters + their gradients (float32) for the whole stack; in brackets the buffers "
        "(masked: a float32 mask as large as the weight; both: int64 row/col permutations)",
        "max|Δy|: largest difference between the two backends' outputs (same seeds ⇒ same weights)",
        "other procs: CPU cores kept busy by *other* processes while the case was timed (/proc/stat minus this "
        f"process); above {CONTENTION_CORES} (⚠) the case ran under contention",
    ])
    linear = bench_linear(args, grid)
    print_linear(linear, args)
    conv = [] if args.no_conv else bench_conv(args)
    if conv:
        print_conv(conv, args)
    summary(linear, conv)
    write_sections_json(args, info, linear=linear, conv=conv)


if __name__ == "__main__":
    main()
