"""Plumbing shared by the benchmark scripts: timing, machine header, Markdown tables, JSON.

Timing is a warm-up followed by the median of several repeats. A repeat times a block of
``number`` back-to-back calls (``number`` chosen so a block lasts at least ``min_block_s``)
and divides by ``number``, so sub-millisecond calls are not drowned in timer noise; slow
calls (``number == 1``) are timed one by one. The spread reported is the interquartile range
of the per-repeat times. Functions whose times are compared (a baseline and its contenders) are
measured round-robin (:func:`measure_interleaved`), so a change in the machine's load during a
case hits them alike and their ratio stays fair.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CONTENTION_CORES",
    "Measurement",
    "OtherCpuLoad",
    "add_timing_args",
    "cpu_model",
    "fmt_bytes",
    "fmt_other_load",
    "fmt_time",
    "load_average",
    "machine_info",
    "markdown_table",
    "measure",
    "measure_interleaved",
    "measure_uncontended",
    "measurement_dict",
    "print_header",
    "set_threads",
    "write_json",
]


@dataclass(frozen=True)
class Measurement:
    """Seconds per call: ``median`` over ``repeats`` blocks of ``number`` calls; ``iqr`` their spread."""

    median: float
    iqr: float
    minimum: float
    repeats: int
    number: int


def _calibrate(fn: Callable[[], object], warmup: int, min_block_s: float) -> tuple[float, int]:
    """Run ``warmup`` untimed calls, then one timed call; return its time and the calls per block."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    estimate = max(time.perf_counter() - start, 1e-9)
    return estimate, max(1, int(min_block_s / estimate))


def _summarise(times: list[float], number: int) -> Measurement:
    quartiles = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return Measurement(statistics.median(times), quartiles[2] - quartiles[0], min(times), len(times), number)


def measure_interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 2, repeats: int = 7,
                        min_block_s: float = 0.02, max_total_s: float | None = None,
                        min_repeats: int = 3) -> dict[str, Measurement]:
    """Time several functions round-robin: each repeat times one block of every function in turn.

    Interleaving makes ratios between the functions robust to slow drifts of the machine's
    load (other processes, frequency changes): every function sees the same conditions on
    average. ``max_total_s`` caps the timed part (all functions together): for slow functions the
    number of repeats is cut down, never below ``min_repeats``.
    """
    calib = {name: _calibrate(fn, warmup, min_block_s) for name, fn in fns.items()}
    if max_total_s is not None:
        per_round = sum(est * number for est, number in calib.values())
        repeats = max(min_repeats, min(repeats, int(max_total_s / per_round)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in fns.items():
                number = calib[name][1]
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                times[name].append((time.perf_counter() - start) / number)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: _summarise(t, calib[name][1]) for name, t in times.items()}


def measure(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 7, min_block_s: float = 0.02,
            max_total_s: float | None = None, min_repeats: int = 3) -> Measurement:
    """Time ``fn()``: ``warmup`` untimed calls, then the median of ``repeats`` timed blocks.

    ``max_total_s`` caps the timed part: for a slow ``fn`` the number of repeats is cut down
    (never below ``min_repeats``) so one case cannot eat the whole budget.
    """
    return measure_interleaved({"fn": fn}, warmup=warmup, repeats=repeats, min_block_s=min_block_s,
                               max_total_s=max_total_s, min_repeats=min_repeats)["fn"]


def load_average() -> tuple[float, float, float] | None:
    """``os.getloadavg()`` where available (the 1, 5 and 15 minute run-queue averages)."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


CONTENTION_CORES = 0.2  # "other procs" above this: the timing ran under contention


class OtherCpuLoad:
    """How many CPU cores *other* processes kept busy while a block of code ran (Linux only).

    System-wide busy time from ``/proc/stat`` minus this process's own CPU time
    (``os.times``), divided by the wall time. On a shared machine a value well above 0 means
    the timings of that block were taken under contention. ``None`` where ``/proc/stat`` is
    missing. Use as a context manager; the result is in ``.cores``.
    """

    def __init__(self) -> None:
        self.cores: float | None = None

    @staticmethod
    def _system_busy_s() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()
        except (OSError, IndexError):
            return None
        ticks = [int(v) for v in fields[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        busy = sum(ticks[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is inside user)
        return busy / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        t = os.times()
        return t.user + t.system

    def __enter__(self) -> OtherCpuLoad:
        self._busy, self._own, self._wall = self._system_busy_s(), self._own_s(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, wall = self._system_busy_s(), time.perf_counter() - self._wall
        if busy is not None and self._busy is not None and wall > 0:
            self.cores = max(0.0, ((busy - self._busy) - (self._own_s() - self._own)) / wall)


def measure_uncontended(fns: dict[str, Callable[[], object]], *, retries: int = 0, wait_s: float = 20.0,
                        **opts: Any) -> tuple[dict[str, Measurement], float | None, int]:
    """:func:`measure_interleaved` under :class:`OtherCpuLoad`, retried while other processes interfere.

    On a shared machine another process on one of the cores stalls every parallel region
    (OpenMP threads wait for the descheduled one), which can slow small ops down 10-100x. If
    other processes used more than :data:`CONTENTION_CORES` cores during the measurement, wait
    ``wait_s`` seconds and measure again, at most ``retries`` more times; the attempt with the
    least interference is kept. Returns ``(times, other_cores, attempts)``.
    """
    best: tuple[dict[str, Measurement], float | None] | None = None
    for attempt in range(1, retries + 2):
        with OtherCpuLoad() as other:
            times = measure_interleaved(fns, **opts)
        if best is None or (other.cores is not None and best[1] is not None and other.cores < best[1]):
            best = (times, other.cores)
        if other.cores is None or other.cores <= CONTENTION_CORES or attempt == retries + 1:
            break
        print(f"    (other processes used {other.cores:.2f} cores; waiting {wait_s:g} s and measuring again)",
              file=sys.stderr, flush=True)
        time.sleep(wait_s)
    return best[0], best[1], attempt


def set_threads(threads: int | None) -> int:
    """Set the intra-op thread count if given; return the count in use."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    """What produced the numbers: date, versions, CPU, threads."""
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "mkl": torch.backends.mkl.is_available(),
        "load_average_at_start": load_average(),
        "other_cpu_cores_at_start": _sample_other_load(),
    }


def _sample_other_load(seconds: float = 1.0) -> float | None:
    """Cores used by other processes over a short idle sample (the load average lags by minutes)."""
    with OtherCpuLoad() as other:
        time.sleep(seconds)
    return other.cores


def print_header(title: str, info: dict[str, Any], notes: Sequence[str] = ()) -> None:
    """A Markdown header: title, machine/version bullet list, free-form notes."""
    print(f"# {title}\n")
    print(f"- date: {info['date']}")
    print(f"- command: `{info['command']}`")
    print(f"- torch {info['torch']}, Python {info['python']}, {info['platform']}")
    print(f"- CPU: {info['cpu_model']} (platform.processor: {info['processor'] or 'n/a'}; "
          f"os.cpu_count: {info['cpu_count']}); torch.get_num_threads(): {info['torch_num_threads']}")
    print(f"- MKL: {info['mkl']}, oneDNN (mkldnn): {info['mkldnn']}")
    load, other = info.get("load_average_at_start"), info.get("other_cpu_cores_at_start")
    if load is not None:
        print(f"- load average at start (1/5/15 min, lags; includes any earlier run): "
              f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    if other is not None:
        busy = " — **the machine is busy: timings will be noisy**" if other > CONTENTION_CORES else ""
        print(f"- other processes at start (1 s sample): {other:.2f} cores{busy}")
    for note in notes:
        print(f"- {note}")
    print()


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A GitHub Markdown table; ``align`` is one of ``l``/``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = (c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align, strict=True))
        return "| " + " | ".join(padded) + " |"

    dashes = (":" + "-" * (w + 1) if a == "l" else "-" * (w + 1) + ":" for w, a in zip(widths, align, strict=True))
    rule = "|" + "|".join(dashes)
    return "\n".join([line(cells[0]), rule + "|", *(line(r) for r in cells[1:])])


def fmt_time(seconds: float) -> str:
    """Seconds as a readable duration with 3 significant digits (µs, ms or s)."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def fmt_other_load(cores: float | None) -> str:
    """An :class:`OtherCpuLoad` result for a table cell; marked ⚠ above :data:`CONTENTION_CORES`."""
    return "n/a" if cores is None else f"{cores:.2f}" + (" ⚠" if cores > CONTENTION_CORES else "")


def fmt_bytes(n: int) -> str:
    """Bytes in KiB/MiB with 3 significant digits."""
    if n < 1024**2:
        return f"{n / 1024:.3g} KiB"
    return f"{n / 1024**2:.4g} MiB"


def write_json(path: str | os.PathLike, info: dict[str, Any], rows: Sequence[dict[str, Any]],
               config: dict[str, Any]) -> None:
    """Write ``{"machine": info, "config": config, "rows": rows}`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"machine": info, "config": config, "rows": list(rows)}, indent=2, default=str) + "\n")
    tmp.replace(path)


def measurement_dict(m: Measurement, prefix: str) -> dict[str, float | int]:
    """``m`` as flat JSON fields named ``{prefix}_median_s`` etc."""
    return {f"{prefix}_{k}{'_s' if k in ('median', 'iqr', 'minimum') else ''}": v for k, v in asdict(m).items()}


def add_timing_args(parser: argparse.ArgumentParser, repeats: int, warmup: int, max_case_s: float) -> None:
    """The timing options every benchmark script shares (defaults differ per script)."""
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats per case (median reported)")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed calls before timing")
    parser.add_argument("--max-case-s", type=float, default=max_case_s,
                        help="cap on the timed part of one case (cuts repeats of slow calls, min 3)")
    parser.add_argument("--retries", type=int, default=3,
                        help="re-measure a case up to this many times while other processes interfere")
    parser.add_argument("--retry-wait-s", type=float, default=20.0, help="pause before such a retry")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: the script's, else torch's)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")


def timing_args(doc: str, argv: list[str] | None, *, repeats: int, warmup: int, max_case_s: float
                ) -> argparse.Namespace:
    """Parse the shared timing options plus ``--quick`` (3 repeats, 1 warm-up, no retries) for a script."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_timing_args(parser, repeats=repeats, warmup=warmup, max_case_s=max_case_s)
    parser.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up, no retries (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.max_case_s, args.retries = 3, 1, 3.0, 0
    set_threads(args.threads)
    return args


def write_sections_json(args: argparse.Namespace, info: dict[str, Any], **sections: Sequence[dict[str, Any]]) -> None:
    """If ``--json`` was given, write every section's rows (tagged ``section``) with the machine info."""
    if args.json:
        rows = [{"section": name, **row} for name, section in sections.items() for row in section]
        write_json(args.json, info, rows, vars(args))
        print(f"(rows written to {args.json})")
