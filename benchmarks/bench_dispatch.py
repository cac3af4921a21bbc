"""Training step of ``train()``'s default execution path against the plain model: FNN-1000 at four sparsities.

``sao.training.train`` runs a model through ``_execution_model(model, TrainConfig())``: by default its
chains of blocked ``SparseLinear`` layers are fused, each on the route :mod:`sao.nn.dispatch` picks
(``plain``, ``fused`` or ``compiled``, measured on this machine at the first call). This script checks
the promise that goes with that default — never slower than the plain model — where it is hardest:
FNN-1000 (Table 7's 1000-layer tanh MLP) at sparsities 0.5, 0.875, 0.96875 and 0.984375 (degree 128,
32, 8, 4 on the 256-wide layers), with 1 and 2 threads. Variants, timed round-robin per case:

- ``plain``: the sparsified model run module by module (``TrainConfig(fused=False)``);
- ``default``: what ``train()`` runs by default, after its first call (that call measures the routes;
  its time is printed as ``first call``);
- ``compiled``: the chains forced onto the compiled kernel (``fusion="compiled"``) — what the default
  was before the dispatcher (the "before" of issue 18's fault 5);
- ``dense``: the dense FNN-1000 (the deep-chain gain: at least 8x at degree 4 is the target).

One step = ``zero_grad(set_to_none=True)``, forward, cross-entropy on fixed random labels, backward,
SGD step (momentum 0.9), float32, batch 128 (``--batch``). The ``route`` column is the chain's
decision with its measured reason. ``other procs`` is how many cores other processes used meanwhile.

Run ``python benchmarks/bench_dispatch.py [--quick] [--batch 128] [--depth 1000] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

import sao
from _common import (
    add_timing_args,
    fmt_other_load,
    fmt_time,
    machine_info,
    markdown_table,
    measure_uncontended,
    measurement_dict,
    print_header,
    write_sections_json,
)
from sao.models import create_model
from sao.nn import FusedSparseChain, fuse_sparse_chains
from sao.training import TrainConfig
from sao.training.loop import _execution_model

SPARSITIES = (0.5, 0.875, 0.96875, 0.984375)


def train_step(model: nn.Module, params: list[nn.Parameter], x: torch.Tensor,
               y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(params, lr=1e-6, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def fnn(depth: int, sparsity: float | None, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    model = create_model("fnn", depth=depth)
    if sparsity is not None:
        sao.sparsify(model, sparsity=sparsity, generator=torch.Generator().manual_seed(seed))
    return model


def route_of(runner: nn.Module) -> str:
    chains = [s for s in getattr(runner, "steps", list)() if isinstance(s, FusedSparseChain)]
    decided = [c.last_decision for c in chains if c.last_decision is not None]
    return "; ".join(f"{len(c.layers)} layers: {d}" for c, d in zip(chains, decided, strict=False)) or "—"


def run_case(sparsity: float, dense: nn.Sequential, args: argparse.Namespace) -> dict:
    model = fnn(args.depth, sparsity, args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x, y = torch.randn(args.batch, 1024, generator=gen), torch.randint(0, 10, (args.batch,), generator=gen)
    runner = _execution_model(model, TrainConfig())
    params = list(model.parameters())
    default = train_step(runner, params, x, y)
    began = time.perf_counter()
    default()  # the first call measures the routes
    first = time.perf_counter() - began
    fns = {"plain": train_step(model, params, x, y), "default": default,
           "compiled": train_step(fuse_sparse_chains(model, fusion="compiled"), params, x, y),
           "dense": train_step(dense, list(dense.parameters()), x, y)}
    times, other, _ = measure_uncontended(fns, warmup=args.warmup, repeats=args.repeats, max_total_s=args.max_case_s,
                                          retries=args.retries, wait_s=args.retry_wait_s)
    return {"times": times, "other": other, "first": first, "route": route_of(runner)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="depth 100, 3 repeats (a smoke run)")
    parser.add_argument("--depth", type=int, default=1000, help="FNN depth N")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--thread-counts", default="1,2", help="comma-separated torch thread counts")
    add_timing_args(parser, repeats=5, warmup=1, max_case_s=60.0)
    args = parser.parse_args()
    if args.quick:
        args.depth, args.repeats, args.retries = 100, 3, 0
    info = machine_info()
    print_header(f"train()'s default path vs the plain model: FNN-{args.depth}, batch {args.batch}, float32", info, [
        "one step = zero_grad, forward, cross-entropy, backward, SGD; variants timed round-robin per case",
        "default = sao.training.loop._execution_model(model, TrainConfig()) (fusion='auto')",
    ])
    rows, json_rows = [], []
    for threads in (int(t) for t in args.thread_counts.split(",")):
        torch.set_num_threads(threads)
        dense = fnn(args.depth, None, args.seed)
        for sparsity in SPARSITIES:
            r = run_case(sparsity, dense, args)
            t = r["times"]
            rows.append([threads, f"{sparsity:g}", fmt_time(t["plain"].median), fmt_time(t["default"].median),
                         fmt_time(t["compiled"].median), fmt_time(t["dense"].median),
                         f"{t['plain'].median / t['default'].median:.2f}×",
                         f"{t['plain'].median / t['compiled'].median:.2f}×",
                         f"{t['dense'].median / t['default'].median:.2f}×", fmt_time(r["first"]), r["route"],
                         fmt_other_load(r["other"])])
            json_rows.append({"threads": threads, "sparsity": sparsity, "depth": args.depth, "batch": args.batch,
                              "route": r["route"], "first_call_s": r["first"], "other_cores": r["other"],
                              **{k: v for name, m in t.items() for k, v in measurement_dict(m, name).items()}})
            print(f"(threads {threads}, sparsity {sparsity:g} done: {r['route']})", flush=True)
    print()
    print(markdown_table(["threads", "sparsity", "plain", "default", "compiled", "dense", "default vs plain",
                          "compiled vs plain", "default vs dense", "first call", "route", "other procs"], rows,
                         align="rrrrrrrrrrll"))
    write_sections_json(args, info, dispatch=json_rows)


if __name__ == "__main__":
    main()
