"""Seconds per training epoch of one Table 7 run on every device and precision this machine has.

Trains FNN-N (``--depth``, ``--method``, MNIST-5k by default) for two epochs with
:func:`sao.training.train` — the real loop: SGD step, evaluation on val and test, Jacobian probe —
and reports the wall time of the second epoch (the first pays for cuDNN autotuning, allocator
warm-up and lazy initialisation). Cases: CPU float32 (the baseline), CPU bf16, and when CUDA is
present CUDA float32, bf16 and fp16; the ratio column is baseline / case, measured in the same run.

Run ``python benchmarks/bench_epoch.py [--depth 1000] [--method sao] [--batch-size 128] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import torch

from _common import machine_info, markdown_table, print_header, set_threads, write_json
from sao.experiments import EXPERIMENTS, DataConfig, MethodConfig, method_phase, run_experiment
from sao.experiments.protocol import AFTER_TRAINING
from sao.experiments.table7 import lr_for_depth
from sao.methods import METHODS


def cases(devices: str = "all") -> list[tuple[str, str | None]]:
    """(device, amp) pairs available here, on ``devices`` (``"all"``, ``"cpu"`` or ``"cuda"``); the first is the
    baseline of the speed-up column."""
    found: list[tuple[str, str | None]] = [("cpu", None), ("cpu", "bf16")]
    if torch.cuda.is_available():
        found += [("cuda", None), ("cuda", "bf16"), ("cuda", "fp16")]
    return [case for case in found if devices in ("all", case[0])]


def epoch_seconds(args: argparse.Namespace, device: str, amp: str | None) -> float:
    """Wall time of the second epoch of a fresh two-epoch run."""
    spec = EXPERIMENTS.get("table7")
    base = spec.runs("quick")[0]  # Table 7's settings: degree 4 (the dense baseline: none), SGD
    target = dataclasses.replace(spec.base.method, name=args.method) if METHODS.get(args.method).needs_target \
        else MethodConfig(args.method)
    config = dataclasses.replace(
        base, model=dataclasses.replace(base.model, depth=args.depth), method=target,
        data=DataConfig(args.dataset, args.data_root, args.batch_size),
        train=dataclasses.replace(base.train, epochs=2, lr=lr_for_depth(args.depth), device=device, amp=amp,
                                  cudnn_benchmark=device == "cuda", fused=not args.no_fused))
    with tempfile.TemporaryDirectory() as tmp:
        run_experiment(config.to_dict(), Path(tmp))
        sub = "finetune" if method_phase(args.method) == AFTER_TRAINING else "train"
        lines = (Path(tmp) / sub / "metrics.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=200)
    parser.add_argument("--method", default="sao")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: all cores)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--devices", choices=("all", "cpu", "cuda"), default="all",
                        help="which devices to time (default: every one present)")
    parser.add_argument("--no-fused", action="store_true", help="run the sparse chains layer by layer")
    args = parser.parse_args()
    threads = set_threads(args.threads)  # before machine_info, which records the thread count
    info = {**machine_info(), "threads": threads}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    print_header(f"One Table 7 epoch: FNN-{args.depth}, {args.method}, {args.dataset}, batch {args.batch_size}",
                 info)
    rows = []
    chosen = cases(args.devices)
    if not chosen:
        raise SystemExit(f"no {args.devices} device here")
    for device, amp in chosen:
        seconds = epoch_seconds(args, device, amp)
        rows.append({"device": device, "amp": amp or "fp32", "seconds": seconds})
        print(f"  {device} {amp or 'fp32'}: {seconds:.2f} s", flush=True)
    base = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = base / row["seconds"]
    print(markdown_table(["device", "precision", "s / epoch", "× vs CPU fp32"],
                         [[r["device"], r["amp"], f"{r['seconds']:.2f}", f"{r['speedup']:.2f}"] for r in rows]))
    if args.json:
        write_json(args.json, info, rows, vars(args))


if __name__ == "__main__":
    main()
