"""Training-step time of whole SparseLinear chains: the compiled chain kernel vs the PyTorch paths.

A chain is ``depth × (SparseLinear(w, w, degree=d) + tanh)``, float32. One step = grads reset to
``None``, forward, ``loss = mean(y²)``, backward. Variants, all built from the same seed so the
sparse ones compute the same function (``max|Δy|`` vs the per-layer blocked stack is printed):

- ``dense``: an ``nn.Linear`` stack of the same shape (the baseline);
- ``masked``: ``SparseLinear(backend="masked")`` layers (dense ``weight_orig * weight_mask``);
- ``fused``: :class:`sao.nn.FusedSparseChain` with ``compiled=False`` (PyTorch ops: composed gathers, one
  ``bmm`` per layer);
- ``kernel``: :func:`sao.nn._chain_kernel.sparse_chain` (one compiled call per pass);
- ``sparseprop``: the public CPU peer, SparseProp (Nikdan et al., ICML 2023; sparse backpropagation
  for unstructured sparsity), each layer ``sparseprop.modules.SparseLinear.from_dense`` of the same
  SAO weight — only if it is installed (it builds from source:
  ``pip install pybind11 && pip install --no-build-isolation sparseprop``).

All variants are timed round-robin in one run (``measure_uncontended``), so their ratios are fair even
on a busy machine; ``other procs`` is how many cores other processes used meanwhile (⚠ above
0.2). The kernel's build/load time is printed first (a first build compiles; later runs load the
cached binary).

Run ``python benchmarks/bench_chain.py [--quick] [--threads 2] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from _common import (
    add_timing_args,
    fmt_bytes,
    fmt_other_load,
    fmt_time,
    machine_info,
    markdown_table,
    measure_uncontended,
    measurement_dict,
    print_header,
    set_threads,
    write_sections_json,
)
from sao.nn import FusedSparseChain, SparseLinear
from sao.nn import _chain_kernel as ck

CASES = ((1000, 256, 4, 128), (4, 4096, 64, 256))  # (depth, width, degree, batch)
QUICK_CASES = ((200, 256, 4, 128), (4, 1024, 16, 256))


def sparse_layers(depth: int, width: int, degree: int, backend: str, seed: int) -> list[SparseLinear]:
    g = torch.Generator().manual_seed(seed)
    return [SparseLinear(width, width, degree=degree, backend=backend, generator=g) for _ in range(depth)]


def step_fn(forward: Callable[[torch.Tensor], torch.Tensor], params: list[nn.Parameter],
            x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        for p in params:
            p.grad = None
        forward(x).square().mean().backward()
    return step


def _sparseprop_stack(layers: list[SparseLinear]) -> nn.Module | None:
    """The same chain as SparseProp layers (built from each layer's dense SAO weight), if SparseProp is installed."""
    try:
        from sparseprop.modules import SparseLinear as PeerLinear
    except ImportError:
        return None
    return nn.Sequential(*[m for layer in layers for m in (PeerLinear.from_dense(layer.to_dense()), nn.Tanh())])


def run_case(depth: int, width: int, degree: int, batch: int, args: argparse.Namespace) -> dict:
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(args.seed + 1))
    blocked = sparse_layers(depth, width, degree, "blocked", args.seed)
    masked = sparse_layers(depth, width, degree, "masked", args.seed)
    dense = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.Tanh())])
    per_layer = nn.Sequential(*[m for layer in blocked for m in (layer, nn.Tanh())])
    masked_seq = nn.Sequential(*[m for layer in masked for m in (layer, nn.Tanh())])
    fused = FusedSparseChain(blocked, [nn.Tanh() for _ in blocked], compiled=False)  # the PyTorch path
    acts = ["tanh"] * depth
    indices = ck.chain_indices(blocked)
    blocked_params = list(per_layer.parameters())
    peer = _sparseprop_stack(blocked)
    fns = {
        "dense": step_fn(dense, list(dense.parameters()), x),
        "masked": step_fn(masked_seq, list(masked_seq.parameters()), x),
        "fused": step_fn(fused, blocked_params, x),
        "kernel": step_fn(lambda v: ck.sparse_chain(v, blocked, acts, indices), blocked_params, x),
    }
    if peer is not None:
        fns["sparseprop"] = step_fn(peer, list(peer.parameters()), x)
    with torch.no_grad():
        ref = per_layer(x)
        diffs = {"masked": (masked_seq(x) - ref).abs().max().item(), "fused": (fused(x) - ref).abs().max().item(),
                 "kernel": (ck.sparse_chain(x, blocked, acts, indices) - ref).abs().max().item()}
        if peer is not None:
            diffs["sparseprop"] = (peer(x) - ref).abs().max().item()
    times, other, attempts = measure_uncontended(fns, warmup=args.warmup, repeats=args.repeats,
                                                 max_total_s=args.max_case_s, retries=args.retries,
                                                 wait_s=args.retry_wait_s)
    saved = depth * width * batch * 4
    return {"depth": depth, "width": width, "degree": degree, "batch": batch, "times": times, "other": other,
            "attempts": attempts, "diffs": diffs, "kernel_saved_bytes": saved}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller cases (a smoke run)")
    add_timing_args(parser, repeats=5, warmup=2, max_case_s=60.0)
    args = parser.parse_args()
    set_threads(args.threads)
    start = time.perf_counter()
    kernel = ck.load_chain_kernel()
    load_s = time.perf_counter() - start
    if kernel is None:
        raise SystemExit("the compiled chain kernel is unavailable here; nothing to compare")
    info = machine_info()
    info["kernel_load_s"] = load_s
    print_header("SparseLinear chains: compiled kernel vs PyTorch paths (fwd + bwd, float32, tanh)", info, [
        f"chain kernel build/load in this process: {load_s:.2f} s (a cached binary loads in well under 1 s; "
        "a first build compiles for ~30 s)",
        "one step = grads to None, forward, mean(y²), backward; all variants timed round-robin in one run",
    ])
    rows, json_rows = [], []
    for depth, width, degree, batch in (QUICK_CASES if args.quick else CASES):
        r = run_case(depth, width, degree, batch, args)
        t = r["times"]
        for name in [n for n in ("dense", "masked", "fused", "kernel", "sparseprop") if n in t]:
            m = t[name]
            rows.append([f"{depth} × {width}/d{degree}, B={batch}", name, fmt_time(m.median), fmt_time(m.iqr),
                         f"{t['dense'].median / m.median:.2f}×", f"{t['masked'].median / m.median:.2f}×",
                         f"{r['diffs'][name]:.1e}" if name in r["diffs"] else "—", fmt_other_load(r["other"])])
            json_rows.append({"depth": depth, "width": width, "degree": degree, "batch": batch, "variant": name,
                              **measurement_dict(m, "step"), "other_cores": r["other"]})
        print(f"(case {depth} × {width}/d{degree} done; kernel saves {fmt_bytes(r['kernel_saved_bytes'])} of "
              "outputs for backward)", flush=True)
    print()
    print(markdown_table(["chain", "variant", "step", "IQR", "vs dense", "vs masked", "max|Δy|", "other procs"],
                         rows, align="llrrrrrr"))
    write_sections_json(args, info, chain=json_rows)


if __name__ == "__main__":
    main()
