"""Deployed speed: sparse models exported with ``sao.export.to_onnx`` vs their dense export, in ONNX Runtime.

Models (random weights, no downloads; as in ``bench_models.py``): ``fnn1000`` (``sao.models.fnn(depth=1000)``,
1024 features), ``cnn8`` (``sao.models.cnn(8, width=128, activation="relu")``), ``resnet18-cifar``
(torchvision ResNet-18, 3x3 stride-1 stem, no max-pool) and ``vit-small`` (torchvision ``VisionTransformer``,
32x32 images, 4x4 patches, 6 layers, width 384, MLP 1536; its MLP layers, and its attention projections where
``sao.sparsify`` makes them sparse, are ``SparseLinear``), CIFAR-shaped inputs (3x32x32).

For each model, sparsity and batch size:

- ``dense``: the model untouched (same seed), exported by ``sao.export.to_onnx`` (no sparse layer: the plain
  ``torch.onnx.export(dynamo=True)`` graph, with its optimizer);
- ``sparse``: ``sao.sparsify(model, sparsity=s)`` (defaults: method ``"sao"``, blocked backend, first and last
  weight layers dense), made deployable with ``sao.export.deployable(model, x, form=--form, batch_size=batch,
  threads=--threads)`` (``"auto"``: each layer shape's fastest form measured in ONNX Runtime at that batch)
  and written by ``to_onnx``; one ONNX file per batch size, since ``"auto"`` may choose differently;
- ``eager``: the sparse model in PyTorch as sao runs it (``inference_mode``, eval; an exact ``nn.Sequential``
  through ``sao.nn.fuse_sparse_chains``, its fastest exact routes), and the dense model in PyTorch.

ONNX Runtime: CPU execution provider, ``--threads`` intra-op threads (1 by default), one inter-op thread,
sequential execution, all graph optimizations. PyTorch runs with the same thread count. For one model and batch
size, the dense export, the sparse export of every sparsity and the eager models are timed together round-robin
(``_common.measure_uncontended``: median of repeats, re-measured while other processes use more than 0.2 cores),
so their ratios are fair under load. ``dense / sparse`` above 1: the sparse export is faster than the dense one;
``less sparse / sparse``: the export at the previous (lower) sparsity over this one (below 0.95: sparser was
slower, ✗). ``forms`` says which form each sparse layer took (``grouped/8``: a grouped Conv with
8 groups; fewer groups than the layer's blocks means blocks merged, see ``sao.export.LayerSpec.coarsened``).

``--profile MODEL:SPARSITY:BATCH`` prints instead where ONNX Runtime spends the sparse and dense runs' time (its
own profiler, ``SessionOptions.enable_profiling``): per op type, summed over a few runs.

Run ``python benchmarks/bench_export.py [--models fnn1000 cnn8] [--sparsities 0.875] [--batches 1 64]
[--threads 1] [--form auto] [--json PATH]``; on a shared machine pin it: ``taskset -c 1 python ...``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from _common import (
    add_timing_args,
    fmt_other_load,
    fmt_time,
    machine_info,
    markdown_table,
    measure_uncontended,
    print_header,
    set_threads,
    write_json,
)
from bench_models import build
from sao.export import FormTimer, deployable, form_names, ort_session, to_onnx

DEFAULT_JSON = "benchmarks/results_export.json"
IMAGE = (3, 32, 32)
#: name -> (input shape of one sample, sparsities measured by default)
MODELS: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {
    "fnn1000": ((1024,), (0.875, 0.96875, 0.984375)),
    "cnn8": (IMAGE, (0.875, 0.96875)),
    "resnet18-cifar": (IMAGE, (0.875, 0.96875)),
    "vit-small": (IMAGE, (0.875, 0.96875)),
}


def measured_shapes(report: Any) -> list[dict]:
    """The candidates' times once per measured layer signature (layers of one signature share one measurement),
    with the count and the first layer's name: FNN-1000's 1000 layers are a few entries, not 1000."""
    shapes: dict[tuple, dict] = {}
    for c in report.layers:
        if c.times:
            key = (str(c.shape), tuple(c.input_shape), c.num_blocks, c.label, tuple(sorted(c.times.items())))
            entry = shapes.setdefault(key, {"first": c.name, "layers": 0, "shape": c.shape, "input": c.input_shape,
                                            "g": c.num_blocks, "form": c.label, "times_s": dict(c.times)})
            entry["layers"] += 1
    return list(shapes.values())


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ort_run(session: Any, x: torch.Tensor) -> Callable[[], object]:
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x.numpy())}
    return lambda: session.run(None, feed)


def eager_run(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model(x)
    return run


def max_diff(a: Any, b: torch.Tensor) -> float:
    return float((torch.as_tensor(np.asarray(a)) - b).abs().max())


def sample(shape: tuple[int, ...], batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed + batch))


def model(name: str, seed: int, sparsity: float | None = None) -> tuple[nn.Module, Any]:
    """``bench_models.build`` in eval mode; the ViT's head, which torchvision zero-initialises (its output would
    not depend on the body, and the outputs' check would check nothing), drawn at random."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers that take the nearest achievable sparsity
        built, summary, _ = build(name, seed, sparsity)
    head = getattr(getattr(built, "heads", None), "head", None)
    if isinstance(head, nn.Linear):
        with torch.no_grad():
            head.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(seed))
    return built.eval(), summary


def export_sparse(name: str, sparsity: float, sparse: nn.Module, x: torch.Tensor, args: argparse.Namespace,
                  folder: Path, timer: FormTimer) -> tuple[Any, Any, float]:
    """The sparse model made deployable for ``x``'s batch, written as ONNX: (report, session, seconds taken)."""
    started = time.perf_counter()
    deploy = deployable(sparse, x, form=args.form, batch_size=x.shape[0], threads=args.threads, timer=timer,
                        verbose=not args.quiet)
    report = to_onnx(deploy, x, folder / f"{name}-{sparsity:g}-b{x.shape[0]}.onnx")
    log(str(report))
    return report, ort_session(report.path, args.threads), time.perf_counter() - started


def run_model(name: str, args: argparse.Namespace, folder: Path, rows: list[dict], on_row: Callable[[], None]
              ) -> None:
    """Every sparsity of ``name`` at each batch size; the dense export, the sparse exports of all sparsities and
    the eager models of one batch size timed together, round-robin (so rows of one batch compare directly)."""
    shape, default_sparsities = MODELS[name]
    sparsities = sorted(args.sparsities or default_sparsities)
    dense, _ = model(name, args.seed)
    dense_path = folder / f"{name}-dense.onnx"
    log(f"[{name}] exporting the dense model")
    to_onnx(dense, sample(shape, 2, args.seed), dense_path, form="dense", verbose=False)
    dense_session = ort_session(dense_path, args.threads)
    timer = FormTimer(threads=args.threads, verbose=not args.quiet)
    log(f"[{name}] sparsify at {', '.join(f'{s:g}' for s in sparsities)}")
    sparse = {s: model(name, args.seed, s) for s in sparsities}
    for batch in args.batches:
        x = sample(shape, batch, args.seed)
        exported = {s: export_sparse(name, s, sparse[s][0], x, args, folder, timer) for s in sparsities}
        errors = {}
        with torch.inference_mode():
            dense_error = max_diff(dense_session.run(None, {"input": x.numpy()})[0], dense(x))
            for s, (_, session, _) in exported.items():
                expected = sparse[s][0](x)
                errors[s] = {"sparse_onnx_vs_eager": max_diff(session.run(None, {"input": x.numpy()})[0], expected),
                             "scale": float(expected.abs().max()), "dense_onnx_vs_eager": dense_error}
        fns = {"ort_dense": ort_run(dense_session, x), "eager_dense": eager_run(dense, x)}
        for s, (_, session, _) in exported.items():
            fns[f"ort_sparse@{s}"], fns[f"eager_sparse@{s}"] = ort_run(session, x), eager_run(sparse[s][0], x)
        log(f"[{name}] batch {batch}: timing {', '.join(fns)}")
        times, other, attempts = measure_uncontended(fns, warmup=args.warmup, repeats=args.repeats,
                                                     max_total_s=args.max_case_s * len(fns) / 4,
                                                     retries=args.retries, wait_s=args.retry_wait_s)
        med = {k: m.median for k, m in times.items()}
        previous = None
        for s, (report, _, prepare_s) in exported.items():
            sparse_s = med[f"ort_sparse@{s}"]
            row = {"model": name, "sparsity": s, "batch": batch, "form": args.form, "forms": report.forms(),
                   "gathers": report.gathers, "sparse_layers": len(report.layers),
                   "overall_sparsity": sparse[s][1].sparsity, "ort_dense_s": med["ort_dense"],
                   "ort_sparse_s": sparse_s, "eager_sparse_s": med[f"eager_sparse@{s}"],
                   "eager_dense_s": med["eager_dense"], "ort_dense_iqr_s": times["ort_dense"].iqr,
                   "ort_sparse_iqr_s": times[f"ort_sparse@{s}"].iqr,
                   "dense_over_sparse": med["ort_dense"] / sparse_s,
                   "less_sparse_over_sparse": None if previous is None else previous / sparse_s,
                   "eager_sparse_over_ort_sparse": med[f"eager_sparse@{s}"] / sparse_s,
                   "eager_dense_over_ort_dense": med["eager_dense"] / med["ort_dense"],
                   "errors": errors[s], "prepare_s": prepare_s, "other_cores": other, "attempts": attempts,
                   "repeats": times["ort_dense"].repeats,
                   "measured": measured_shapes(report)}
            previous = sparse_s
            rows.append(row)
            log(f"[{name}] sparsity {s:g}, batch {batch}: ORT dense {fmt_time(med['ort_dense'])}, sparse "
                f"{fmt_time(sparse_s)} ({row['dense_over_sparse']:.2f}x); eager sparse "
                f"{fmt_time(row['eager_sparse_s'])}, eager dense {fmt_time(med['eager_dense'])}; other procs "
                f"{fmt_other_load(other)}")
        on_row()
        del exported, fns
        gc.collect()


def print_table(rows: list[dict]) -> None:
    def less_sparse(r: dict) -> str:
        ratio = r["less_sparse_over_sparse"]
        return "—" if ratio is None else f"{ratio:.2f}" + ("" if ratio >= 0.95 else " ✗")

    table = [[r["model"], f"{r['sparsity']:g}", r["batch"], fmt_time(r["ort_dense_s"]), fmt_time(r["ort_sparse_s"]),
              f"{r['dense_over_sparse']:.2f}", less_sparse(r), fmt_time(r["eager_sparse_s"]),
              f"{r['eager_sparse_over_ort_sparse']:.2f}", fmt_time(r["eager_dense_s"]),
              ", ".join(f"{k} ×{v}" for k, v in sorted(r["forms"].items())), r["gathers"],
              fmt_other_load(r["other_cores"])]
             for r in sorted(rows, key=lambda r: (list(MODELS).index(r["model"]), r["batch"], r["sparsity"]))]
    print(markdown_table(["model", "sparsity", "batch", "ORT dense", "ORT sparse", "dense / sparse",
                          "less sparse / sparse", "eager sparse", "eager / ORT (sparse)", "eager dense", "forms",
                          "gathers", "other procs"], table, align="lrrrrrrrrrlrl"))


def profile(spec: str, args: argparse.Namespace, folder: Path) -> None:
    """``--profile MODEL:SPARSITY:BATCH``: ONNX Runtime's time per op type, sparse export next to dense."""
    name, sparsity, batch = spec.split(":")
    shape = MODELS[name][0]
    x = sample(shape, int(batch), args.seed)
    totals: dict[str, dict[str, float]] = {}
    for variant, sp in (("dense", None), ("sparse", float(sparsity))):
        built, _ = model(name, args.seed, sp)
        path = folder / f"profile-{variant}.onnx"
        to_onnx(built, x, path, form=args.form if sp else "dense", batch_size=int(batch),
                threads=args.threads, verbose=False)
        session = ort_session(path, args.threads, profile=str(folder / f"profile-{variant}"))
        run = ort_run(session, x)
        for _ in range(3):
            run()
        trace = json.loads(Path(session.end_profiling()).read_text())
        ops: dict[str, float] = {}
        for event in trace:
            if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
                op = event.get("args", {}).get("op_name", "?")
                ops[op] = ops.get(op, 0.0) + event["dur"] / 1e6 / 3
        totals[variant] = ops
    labels = sorted(set(totals["dense"]) | set(totals["sparse"]),
                    key=lambda k: -(totals["sparse"].get(k, 0.0) + totals["dense"].get(k, 0.0)))
    sums = {v: sum(t.values()) for v, t in totals.items()}
    table = [[op, fmt_time(totals["dense"].get(op, 0.0)), fmt_time(totals["sparse"].get(op, 0.0)),
              f"{100 * totals['sparse'].get(op, 0.0) / sums['sparse']:.0f} %"] for op in labels]
    table.append(["total (kernel time per run)", fmt_time(sums["dense"]), fmt_time(sums["sparse"]), "100 %"])
    print(f"### ONNX Runtime profile: {name} at sparsity {sparsity}, batch {batch}, {args.threads} thread(s)\n")
    print(markdown_table(["op type", "dense", "sparse", "sparse share"], table))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--sparsities", type=float, nargs="+", default=None,
                        help="default: 0.875 0.96875 (fnn1000 also 0.984375)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--form", default="auto", choices=form_names())
    parser.add_argument("--quiet", action="store_true", help="do not print form='auto''s measurements")
    parser.add_argument("--onnx-dir", help="keep the ONNX files here (default: a temporary folder)")
    parser.add_argument("--profile", metavar="MODEL:SPARSITY:BATCH", action="append", default=[],
                        help="print ONNX Runtime's time per op type (sparse vs dense) instead of the table")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up, no retries")
    add_timing_args(parser, repeats=7, warmup=2, max_case_s=20.0)
    parser.set_defaults(threads=1, json=DEFAULT_JSON, retries=2)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup, args.max_case_s, args.retries = 3, 1, 3.0, 0
    threads = set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.onnx_dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if args.profile:
            for spec in args.profile:
                profile(spec, args, folder)
            return
        import onnxruntime

        info = {**machine_info(), "threads": threads, "onnxruntime": onnxruntime.__version__}
        print_header("Export: sparse ONNX vs dense ONNX in ONNX Runtime (CPU), and PyTorch eager", info, [
            f"onnxruntime {info['onnxruntime']}; {threads} thread(s) (ONNX Runtime intra-op and torch); "
            f"form={args.form!r}; batches {', '.join(map(str, args.batches))}",
            "dense / sparse = ORT time of the dense export / of the sparse export (above 1: sparse is faster); "
            "eager / ORT = PyTorch eager time of the sparse model / its ORT time; timed round-robin",
        ])
        rows: list[dict] = []

        def save() -> None:
            if args.json:
                write_json(args.json, info, rows, vars(args))

        started = time.perf_counter()
        for name in args.models:
            run_model(name, args, folder, rows, save)
        print_table(rows)
        print(f"\n(total {time.perf_counter() - started:.0f} s)")
        save()


if __name__ == "__main__":
    main()
