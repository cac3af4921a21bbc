"""Training time of a width-128 vanilla CNN-N: SAO-Delta blocked vs masked vs dense, per step and per epoch.

For each sparsity (50 %, 96.875 % by default) builds ``cnn(depth, width=128, activation="relu")``,
makes it SAO-sparse with ``backend="blocked"`` (grouped convolutions on the non-zero kernels) and
``backend="masked"`` (dense weight × mask, the paper's way), and times one full SGD step
(forward, cross-entropy, backward, momentum update) on a CIFAR-shaped batch, round-robin with the
dense model (``_common.measure_interleaved``, so ratios are fair under load). Seconds per epoch are
the step time × steps per epoch (CIFAR-10: 50 000 / batch, rounded up) — a projection from the
measured step, not a timed epoch (one CPU epoch of CIFAR-10 at width 128 takes many minutes).

Run ``python benchmarks/bench_cnn_epoch.py [--depth 8] [--batch-size 64] [--threads 1] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from _common import fmt_time, machine_info, markdown_table, measure_interleaved, print_header, set_threads, write_json
from sao import sparsify
from sao.models import cnn, orthogonal_init_

CIFAR_TRAIN = 50_000


def step_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    """One SGD step of ``model`` on ``batch`` as a closure."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    inputs, targets = batch

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()

    return step


def build(depth: int, width: int, sparsity: float | None, backend: str) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(0)
    model = orthogonal_init_(cnn(depth, width=width, activation="relu"), activation="relu", generator=gen)
    if sparsity is not None:
        sparsify(model, "sao", sparsity=sparsity, backend=backend, activation="relu", generator=gen, strict=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.96875])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    threads = set_threads(args.threads)  # before machine_info, which records the thread count
    info = {**machine_info(), "threads": threads}
    print_header(f"CNN-{args.depth}, width {args.width}, relu, batch {args.batch_size}: one SGD step, "
                 "SAO-Delta blocked vs masked vs dense", info)
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(args.batch_size, 3, 32, 32, generator=gen), torch.randint(0, 10, (args.batch_size,),
                                                                                    generator=gen))
    steps_per_epoch = math.ceil(CIFAR_TRAIN / args.batch_size)
    rows = []
    for sparsity in args.sparsities:
        fns = {"dense": step_fn(build(args.depth, args.width, None, "blocked"), batch)}
        for backend in ("blocked", "masked"):
            fns[backend] = step_fn(build(args.depth, args.width, sparsity, backend), batch)
        times = measure_interleaved(fns, warmup=1, repeats=args.repeats, min_repeats=3)
        row = {"sparsity": sparsity, **{f"{k}_s": m.median for k, m in times.items()},
               "masked_over_blocked": times["masked"].median / times["blocked"].median,
               "dense_over_blocked": times["dense"].median / times["blocked"].median}
        rows.append(row)
        print(f"  {100 * sparsity:g} %: " + ", ".join(f"{k} {fmt_time(m.median)}" for k, m in times.items()),
              flush=True)
    table = [[f"{100 * r['sparsity']:g} %", fmt_time(r["dense_s"]), fmt_time(r["masked_s"]), fmt_time(r["blocked_s"]),
              f"{r['masked_over_blocked']:.2f}", f"{r['dense_over_blocked']:.2f}",
              f"{r['masked_s'] * steps_per_epoch / 60:.1f} / {r['blocked_s'] * steps_per_epoch / 60:.1f}"]
             for r in rows]
    print(markdown_table(["sparsity", "dense step", "masked step", "blocked step", "masked / blocked",
                          "dense / blocked", f"CIFAR-10 epoch, min (masked / blocked, {steps_per_epoch} steps)"],
                         table))
    if args.json:
        write_json(args.json, info, rows, vars(args))


if __name__ == "__main__":
    main()
