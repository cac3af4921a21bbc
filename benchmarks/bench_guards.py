"""Speed guards: how long the cheap-by-design paths take (errors on huge layers, big initializers).

The unit tests check only what these paths compute; the times they once asserted are measured
here instead, against a baseline timed in the same run:

- **errors**: invalid arguments on 4096-wide layers (``sao.topology.ramanujan``,
  ``SparseLinear``, ``SparseConv2d``, ``ECOConv2d``) must raise before anything is drawn or
  allocated. Baseline: the valid ``SparseLinear(4096, 4096, degree=64)`` constructor; an
  error should cost a tiny fraction of it (the former test limit was 1 s per error);
- **big initializers**: ``sao.init.sao_`` on a float32 ``(4096, 4096)`` at degree 64 (former
  limit 2 s: a guard against O(n³) paths) and ``sao.init.eoi_with_mask_`` at density 1/64
  (former limit 3 s). Baseline: ``torch.nn.init.orthogonal_`` on a ``(1024, 1024)`` tensor,
  one dense QR, which scales with the machine the same way.

Every timing is the median of several repeats after warm-up (see ``_common.measure``); a case
and its baseline are timed round-robin. Run
``python benchmarks/bench_guards.py [--quick] [--json PATH] [--threads N]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from _common import (
    CONTENTION_CORES,
    fmt_other_load,
    fmt_time,
    machine_info,
    markdown_table,
    measure_uncontended,
    measurement_dict,
    print_header,
    timing_args,
    write_sections_json,
)
from sao.init import eoi_with_mask_, sao_
from sao.nn import ECOConv2d, SparseConv2d, SparseLinear
from sao.topology import ramanujan

ERROR_LIMIT_S = 1.0  # what tests/test_topology.py and tests/test_nn.py used to assert per error
SAO_LIMIT_S = 2.0  # what tests/test_init_linear.py used to assert for sao_ 4096 / d=64
EOI_LIMIT_S = 3.0  # what tests/test_eoi.py used to assert for eoi 4096 at density 1/64 (one thread, best of two)

#: name -> a call that must raise ValueError (the cases of the former timed tests)
ERROR_CASES: dict[str, Callable[[], object]] = {
    "ramanujan(256, 256, degree=5)": lambda: ramanujan(256, 256, degree=5),
    "ramanujan(4096, 4096, degree=3)": lambda: ramanujan(4096, 4096, degree=3),
    "ramanujan(300, 200, degree=7)": lambda: ramanujan(300, 200, degree=7),
    "ramanujan(10, 4, degree=4)": lambda: ramanujan(10, 4, degree=4),
    "SparseLinear(4096, 4096, degree=5)": lambda: SparseLinear(4096, 4096, degree=5),
    "SparseLinear(4096, 4096, sparsity=0.3)": lambda: SparseLinear(4096, 4096, sparsity=0.3),
    "SparseLinear(4096, 4096, degree=4, sparsity=0.999)": lambda: SparseLinear(4096, 4096, degree=4, sparsity=0.999),
    "SparseLinear(4096, 4096)": lambda: SparseLinear(4096, 4096),
    "SparseLinear(4096, 4096, degree=4096, init='nope')": lambda: SparseLinear(4096, 4096, degree=4096, init="nope"),
    "SparseLinear(4096, 4096, topology=<8x8>)": lambda: SparseLinear(4096, 4096, topology=ramanujan(8, 8, degree=2)),
    "SparseLinear(4096, 4096, degree=4096, backend='dense')":
        lambda: SparseLinear(4096, 4096, degree=4096, backend="dense"),
    "SparseLinear(4095, 4095, degree=4095, activation='relu')":
        lambda: SparseLinear(4095, 4095, degree=4095, activation="relu"),
    "SparseConv2d(4096, 4096, 3, degree=4096, init='sao')":
        lambda: SparseConv2d(4096, 4096, 3, degree=4096, init="sao"),
    "SparseConv2d(4096, 4096, 3, degree=5, padding_mode='bad')":
        lambda: SparseConv2d(4096, 4096, 3, degree=5, padding_mode="bad"),
    "ECOConv2d(4096, 4096, 5, input_size=12)": lambda: ECOConv2d(4096, 4096, 5, input_size=12),
}


def _raising(fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` wrapped so that its ``ValueError`` is the expected outcome (anything else propagates)."""
    def call() -> None:
        try:
            fn()
        except ValueError:
            return
        raise AssertionError("expected a ValueError")
    return call


def _opts(args: argparse.Namespace) -> dict:
    return {"warmup": args.warmup, "repeats": args.repeats, "max_total_s": args.max_case_s,
            "retries": args.retries, "wait_s": args.retry_wait_s}


def bench_errors(args: argparse.Namespace) -> list[dict]:
    gen = torch.Generator().manual_seed(args.seed)
    fns = {"baseline": lambda: SparseLinear(4096, 4096, degree=64, generator=gen)}
    fns.update({name: _raising(fn) for name, fn in ERROR_CASES.items()})
    times, other_cores, attempts = measure_uncontended(fns, **_opts(args))
    base = times["baseline"]
    rows = [{"case": "SparseLinear(4096, 4096, degree=64) — valid, baseline", **measurement_dict(base, "time"),
             "ratio_vs_baseline": 1.0, "limit_s": None, "other_cpu_cores": other_cores, "attempts": attempts}]
    for name in ERROR_CASES:
        t = times[name]
        rows.append({"case": name, **measurement_dict(t, "time"), "ratio_vs_baseline": t.median / base.median,
                     "limit_s": ERROR_LIMIT_S, "other_cpu_cores": other_cores, "attempts": attempts})
    return rows


def bench_init(args: argparse.Namespace) -> list[dict]:
    gen = torch.Generator().manual_seed(args.seed)
    small, big = torch.empty(1024, 1024), torch.empty(4096, 4096)
    fns = {
        "baseline": lambda: torch.nn.init.orthogonal_(small, generator=gen),
        "sao": lambda: sao_(big, degree=64, generator=gen),
        "eoi": lambda: eoi_with_mask_(big, density=1 / 64, generator=gen),
    }
    times, other_cores, attempts = measure_uncontended(fns, **_opts(args))
    _, mask = eoi_with_mask_(big, density=1 / 64, generator=gen)
    checks = {"sao": f"{int((sao_(big, degree=64, generator=gen) != 0).sum())} non-zeros (4096·64 = 262144)",
              "eoi": f"{int(mask.sum())} non-zeros (target 262144)"}
    labels = {"baseline": "torch.nn.init.orthogonal_ (1024, 1024) — baseline",
              "sao": "sao_ (4096, 4096), degree=64", "eoi": "eoi_with_mask_ (4096, 4096), density=1/64"}
    limits = {"baseline": None, "sao": SAO_LIMIT_S, "eoi": EOI_LIMIT_S}
    base = times["baseline"]
    return [{"case": labels[name], **measurement_dict(times[name], "time"),
             "ratio_vs_baseline": times[name].median / base.median, "limit_s": limits[name],
             "check": checks.get(name, ""), "other_cpu_cores": other_cores, "attempts": attempts}
            for name in fns]


def _table(rows: list[dict], extra: str | None = None) -> str:
    headers = ["case", "time (median ± IQR)", "time / baseline", "former test limit", "within"]
    if extra:
        headers.append(extra)
    headers.append("other procs")
    body = []
    for r in rows:
        limit = r["limit_s"]
        cells = [r["case"], f"{fmt_time(r['time_median_s'])} ± {fmt_time(r['time_iqr_s'])}",
                 f"{r['ratio_vs_baseline']:.3g}x", "—" if limit is None else fmt_time(limit),
                 "—" if limit is None else ("yes" if r["time_median_s"] < limit else "**NO**")]
        if extra:
            cells.append(r.get("check", ""))
        cells.append(fmt_other_load(r.get("other_cpu_cores")))
        body.append(cells)
    return markdown_table(headers, body, align="l" + "r" * (len(headers) - 1))


def main(argv: list[str] | None = None) -> None:
    args = timing_args(__doc__, argv, repeats=7, warmup=1, max_case_s=10.0)
    info = machine_info()
    print_header("Speed guards: errors on huge layers and big initializers", info, [
        "these times used to be asserted in unit tests (tests/test_topology.py, tests/test_nn.py, "
        "tests/test_init_linear.py, tests/test_eoi.py); the 'former test limit' column gives those limits",
        f"median of {args.repeats} repeats after {args.warmup} warm-up call(s) (timed part capped at "
        f"{args.max_case_s:g} s per table, at least 3 repeats; re-measured up to {args.retries} time(s) if other "
        "processes interfered); IQR = interquartile range; the rows of one table are timed round-robin with "
        "their baseline (same load conditions)",
        "the former EOI test ran on one thread (best of two); use --threads 1 to compare like with like",
        "other procs: CPU cores kept busy by *other* processes while the table was timed; above "
        f"{CONTENTION_CORES} (⚠) it ran under contention",
    ])

    errors = bench_errors(args)
    print("## Errors on 4096-wide layers (must raise before drawing or allocating)\n")
    print(_table(errors))
    print()

    init = bench_init(args)
    print("## Big initializers\n")
    print(_table(init, extra="check"))
    print()

    write_sections_json(args, info, errors=errors, init=init)


if __name__ == "__main__":
    main()
