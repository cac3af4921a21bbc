"""Training-step time of whole SparseLinear chains: the compiled chain kernel vs the PyTorch paths.

A chain is ``depth × (SparseLinear(w, w, degree=d) + tanh)``, float32. One step = grads reset to
``None``, forward, ``loss = mean(y²)``, backward. Variants, all built from the same seed so the
sparse ones compute the same function (``max|Δy|`` vs the per-layer blocked stack is printed):

- ``dense``: an ``nn.Linear`` stack of the same shape (the baseline);
- ``masked``: ``SparseLinear(backend="masked")`` layers (dense ``weight_orig * weight_mask``);
- ``fused``: :class:`sao.nn.FusedSparseChain` with ``fusion="fused"`` (PyTorch ops: composed gathers, one
  ``bmm`` per layer);
- ``kernel``: :func:`sao.nn._chain_kernel.sparse_chain` (one compiled call per pass);
- ``sparseprop``: the public CPU peer, SparseProp (Nikdan et al., ICML 2023; sparse backpropagation
  for unstructured sparsity), each layer ``sparseprop.modules.SparseLinear.from_dense`` of the same
  SAO weight — only if it is installed (it builds from source:
  ``pip install pybind11 && pip install --no-build-isolation sparseprop``).

``peak memory``: peak resident memory of building that variant alone and running two steps, in a
fresh process, above the process's memory after the imports (parameters, gradients, activations). All variants are timed
round-robin in one run (``measure_uncontended``), so their ratios are fair even on a busy machine;
``other procs`` is how many cores other processes used meanwhile (⚠ above 0.2). The kernel's
build/load time is printed first (a first build compiles; later runs load the cached binary).

Run ``python benchmarks/bench_chain.py [--quick] [--threads 2] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
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


def build_steps(depth: int, width: int, degree: int, batch: int, seed: int,
                only: str | None = None) -> tuple[dict[str, Callable[[], None]], dict[str, float]]:
    """One training step per variant (same seeds, so the sparse ones compute the same function) and their
    ``max|Δy|`` against the per-layer blocked stack; with ``only``, just that variant's step (no ``Δy``)."""
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 1))
    wanted = {only} if only else {"dense", "masked", "fused", "kernel", "sparseprop"}
    fns: dict[str, Callable[[], None]] = {}
    if "dense" in wanted:
        dense = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.Tanh())])
        fns["dense"] = step_fn(dense, list(dense.parameters()), x)
    if "masked" in wanted:
        masked = nn.Sequential(*[m for layer in sparse_layers(depth, width, degree, "masked", seed)
                                 for m in (layer, nn.Tanh())])
        fns["masked"] = step_fn(masked, list(masked.parameters()), x)
    blocked = sparse_layers(depth, width, degree, "blocked", seed) if wanted & {"fused", "kernel", "sparseprop"} \
        else []
    per_layer = nn.Sequential(*[m for layer in blocked for m in (layer, nn.Tanh())])
    fused = FusedSparseChain(blocked, [nn.Tanh() for _ in blocked], fusion="fused") if blocked else None
    acts = ["tanh"] * depth
    indices = ck.chain_indices(blocked) if blocked else None
    if "fused" in wanted:
        fns["fused"] = step_fn(fused, list(per_layer.parameters()), x)  # the PyTorch path
    if "kernel" in wanted:
        fns["kernel"] = step_fn(lambda v: ck.sparse_chain(v, blocked, acts, indices), list(per_layer.parameters()), x)
    peer = _sparseprop_stack(blocked) if "sparseprop" in wanted else None
    if peer is not None:
        fns["sparseprop"] = step_fn(peer, list(peer.parameters()), x)
    diffs: dict[str, float] = {}
    if only is None:
        with torch.no_grad():
            ref = per_layer(x)
            diffs = {"masked": (masked(x) - ref).abs().max().item(), "fused": (fused(x) - ref).abs().max().item(),
                     "kernel": (ck.sparse_chain(x, blocked, acts, indices) - ref).abs().max().item()}
            if peer is not None:
                diffs["sparseprop"] = (peer(x) - ref).abs().max().item()
    return fns, diffs


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_peak_memory(variant: str, case: tuple[int, int, int, int], seed: int) -> int:
    """In a fresh process: peak resident memory of building ``variant``'s model and running two steps,
    above the process's memory before building (``VmHWM`` reset first; Linux >= 4.0)."""
    before = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    step = build_steps(*case, seed, only=variant)[0][variant]
    step()
    step()
    return max(0, _status_bytes("VmHWM") - before)


def step_memory(case: tuple[int, int, int, int], variant: str, args: argparse.Namespace) -> int | None:
    """:func:`measure_peak_memory` of one variant, in a child process of its own (``None`` if that fails)."""
    command = [sys.executable, __file__, "--memory-of", variant, "--case", ":".join(map(str, case)),
               "--seed", str(args.seed), "--threads", str(torch.get_num_threads())]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
        return int(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def run_case(depth: int, width: int, degree: int, batch: int, args: argparse.Namespace) -> dict:
    fns, diffs = build_steps(depth, width, degree, batch, args.seed)
    times, other, attempts = measure_uncontended(fns, warmup=args.warmup, repeats=args.repeats,
                                                 max_total_s=args.max_case_s, retries=args.retries,
                                                 wait_s=args.retry_wait_s)
    peaks = {name: step_memory((depth, width, degree, batch), name, args) for name in fns}
    saved = depth * width * batch * 4
    return {"depth": depth, "width": width, "degree": degree, "batch": batch, "times": times, "other": other,
            "attempts": attempts, "diffs": diffs, "kernel_saved_bytes": saved, "peaks": peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller cases (a smoke run)")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # child mode of step_memory
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    add_timing_args(parser, repeats=5, warmup=2, max_case_s=60.0)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.memory_of:
        depth, width, degree, batch = (int(v) for v in args.case.split(":"))
        print(measure_peak_memory(args.memory_of, (depth, width, degree, batch), args.seed))
        return
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
                         f"{r['diffs'][name]:.1e}" if name in r["diffs"] else "—",
                         "—" if r["peaks"][name] is None else fmt_bytes(r["peaks"][name]), fmt_other_load(r["other"])])
            json_rows.append({"depth": depth, "width": width, "degree": degree, "batch": batch, "variant": name,
                              **measurement_dict(m, "step"), "peak_step_bytes": r["peaks"][name],
                              "other_cores": r["other"]})
        print(f"(case {depth} × {width}/d{degree} done; kernel saves {fmt_bytes(r['kernel_saved_bytes'])} of "
              "outputs for backward)", flush=True)
    print()
    print(markdown_table(["chain", "variant", "step", "IQR", "vs dense", "vs masked", "max|Δy|", "peak memory",
                          "other procs"], rows, align="llrrrrrrr"))
    write_sections_json(args, info, chain=json_rows)


if __name__ == "__main__":
    main()
