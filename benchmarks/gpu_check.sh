#!/usr/bin/env bash
# GPU checks for the chain kernels (issue 11), under 8 minutes on one GPU:
#   1. every CUDA test of the suite (`pytest -k cuda`: the Triton chain vs the unfused layers, the CUDA
#      cases of test_nn / test_distributed);
#   2. the Triton chain vs a dense cuBLAS nn.Linear stack and the PyTorch fused path, forward + backward,
#      1000 x 256/d4 batch 128 and 4 x 4096/d64 batch 256 (median of repeats, torch.cuda.synchronize);
#   3. `benchmarks/bench_epoch.py --depth 1000 --devices cuda` (one Table 7 epoch, every CUDA precision).
# Each step has its own time limit; the script prints a summary and exits non-zero if any step failed
# (2 if there is no CUDA device at all).
#
# Usage: bash benchmarks/gpu_check.sh        (PYTHON=... to choose the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" && -f .venv/bin/activate ]]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
PY=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device visible to $PY; nothing to check" >&2
  exit 2
fi
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" \
  || echo "gpu_check: triton is not importable (the Triton tests will skip and the timing will fail)"

names=() results=() times=()
step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2 start rc
  shift 2
  echo
  echo "=== $name (limit ${limit}s)"
  start=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  names+=("$name") times+=("$(( $(date +%s) - start ))s")
  if [[ $rc -eq 0 ]]; then results+=("ok"); elif [[ $rc -eq 124 || $rc -eq 137 ]]; then results+=("TIMEOUT");
  else results+=("FAILED (exit $rc)"); fi
}

step "CUDA tests" 150 "$PY" -m pytest -q -p no:cacheprovider tests -k cuda

step "Triton chain vs dense cuBLAS" 150 "$PY" - <<'PYEOF'
import statistics
import time

import torch
from torch import nn

from sao.nn import FusedSparseChain, SparseLinear
from sao.nn._chain_triton import chain_indices, sparse_chain_triton

torch.backends.cuda.matmul.allow_tf32 = False  # float32 everywhere, as the Triton kernel (ieee dots)
dev = torch.device("cuda")


def timed(fn, repeats=15):
    """(first call incl. compile, median of repeats) in ms."""
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = (time.perf_counter() - t) * 1e3
    for _ in range(2):
        fn()
    samples = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - t) * 1e3)
    return first, statistics.median(samples)


ok = True
for depth, width, degree, batch in [(1000, 256, 4, 128), (4, 4096, 64, 256)]:
    g = torch.Generator().manual_seed(0)
    layers = [SparseLinear(width, width, degree=degree, generator=g).to(dev) for _ in range(depth)]
    acts = ["tanh"] * depth
    dense = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width, device=dev), nn.Tanh())])
    fused = FusedSparseChain(layers, [nn.Tanh() for _ in range(depth)])
    x = torch.randn(batch, width, device=dev, requires_grad=True)
    idx = chain_indices(layers)
    params = [p for layer in layers for p in layer.parameters()]

    def run(f):
        def step():
            y = f(x)
            y.sum().backward()
        return step

    with torch.no_grad():  # agreement first
        err = (sparse_chain_triton(x, layers, acts, idx) - fused(x)).abs().max().item()
    torch.cuda.reset_peak_memory_stats()
    first_t, triton_ms = timed(run(lambda v: sparse_chain_triton(v, layers, acts, idx)))
    peak_t = torch.cuda.max_memory_allocated() / 2**20
    torch.cuda.reset_peak_memory_stats()
    _, dense_ms = timed(run(dense))
    peak_d = torch.cuda.max_memory_allocated() / 2**20
    _, fused_ms = timed(run(fused))
    fwd_first, fwd_triton = timed(lambda: sparse_chain_triton(x.detach(), layers, acts, idx))
    _, fwd_dense = timed(lambda: dense(x.detach()))
    print(f"{depth} x {width}/d{degree}, batch {batch}, fwd+bwd: triton {triton_ms:.2f} ms (first call "
          f"{first_t:.0f} ms, peak {peak_t:.0f} MiB) | dense cuBLAS {dense_ms:.2f} ms (peak {peak_d:.0f} MiB) | "
          f"PyTorch fused {fused_ms:.2f} ms | dense/triton {dense_ms / triton_ms:.2f}x, "
          f"fused/triton {fused_ms / triton_ms:.2f}x; forward only: triton {fwd_triton:.2f} ms, dense "
          f"{fwd_dense:.2f} ms; max |triton - fused| {err:.2e}", flush=True)
    ok &= err < 1e-3
raise SystemExit(0 if ok else 1)
PYEOF

step "bench_epoch --depth 1000" 210 "$PY" benchmarks/bench_epoch.py --depth 1000 --devices cuda

echo
echo "=== gpu_check summary"
status=0
for i in "${!names[@]}"; do
  printf '  %-32s %-18s %s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
  [[ ${results[$i]} == ok ]] || status=1
done
exit $status
