"""The Triton chain kernel computes exactly what its blocked SparseLinear layers compute, forward and backward.

On the CPU the kernels run through Triton's interpreter. The interpreter is chosen when a kernel is
decorated, from ``TRITON_INTERPRET``, so the interpreted cases run in one subprocess (this file run as
a script with ``TRITON_INTERPRET=1``), never in the pytest process, whose other tests must not see it;
each case reports back by name and is asserted here. Skipped if triton cannot be imported. On CUDA the
same cases run in-process against the unfused layers on the GPU.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from helpers import CHAIN_MODULES, gen, make_chain, report_checks, run_interpreted
from sao.nn import SparseLinear
from sao.nn import _chain_triton as ct

MODULES = CHAIN_MODULES
# float32: sums are reordered and tanh is computed from exp (a few ulp from torch.tanh). The GPU's exp is
# itself approximate (ex2.approx), so the CUDA comparison allows 1e-4.
TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-12, "rtol": 0}}
CUDA_TOL = {torch.float32: {"atol": 1e-4, "rtol": 1e-4}, torch.float64: {"atol": 1e-12, "rtol": 0}}
DTYPES = {"float32": torch.float32, "float64": torch.float64}

Case = tuple[list[int], list[int], list[str], bool, str, int]

# name -> (sizes, degrees, activations, bias, dtype, batch). Blocks: 16->8/d4 is (4, 2, 4), 8->16/d4 (4, 4, 2)
# (broadcast-sum path); 32/d16 (2, 16, 16) and 128/d128 (1, 128, 128): tl.dot in float32, several row,
# column and batch tiles.
CASES: dict[str, Case] = {}
for _acts in (["tanh"] * 3, ["relu"] * 3, ["identity"] * 3, ["tanh", "relu", "identity"]):
    for _bias in (True, False):
        for _dtype in DTYPES:
            CASES[f"{'-'.join(_acts)}-{'bias' if _bias else 'nobias'}-{_dtype}"] = (
                [16, 8, 16, 16], [4, 4, 4], _acts, _bias, _dtype, 5)
for _batch in (0, 1):
    CASES[f"batch{_batch}"] = ([16, 16, 8], [4, 4], ["tanh", "relu"], True, "float32", _batch)
CASES["one-layer"] = ([16, 8], [4], ["relu"], True, "float32", 5)
CASES["dot-tiles-float32"] = ([32, 32, 128, 128], [16, 32, 128], ["tanh", "relu", "tanh"], True, "float32", 70)
CASES["wide-float64"] = ([32, 32, 128], [16, 32], ["tanh", "relu"], True, "float64", 70)




def check_case(case: Case, device: str = "cpu") -> None:
    """Output and the gradients of x, every blocks and every bias agree with the unfused layers."""
    sizes, degrees, acts, bias, dtype_name, batch = case
    dtype = DTYPES[dtype_name]
    tol = (TOL if device == "cpu" else CUDA_TOL)[dtype]
    layers, ref = make_chain(sizes, degrees, acts, bias, dtype, device=device)
    x = torch.randn(batch, sizes[0], dtype=dtype, generator=gen(1)).to(device).requires_grad_()
    y, y_ref = ct.sparse_chain_triton(x, layers, acts), ref(x)
    torch.testing.assert_close(y, y_ref, **tol)
    gy = torch.randn(y.shape, dtype=dtype, generator=gen(2)).to(device)
    params = [x, *ref.parameters()]
    for a, b in zip(torch.autograd.grad(y, params, gy), torch.autograd.grad(y_ref, params, gy), strict=True):
        torch.testing.assert_close(a, b, **tol)


def check_no_grad_and_leading_dims(device: str = "cpu") -> None:
    layers, ref = make_chain([16, 16, 16], [4, 4], ["tanh", "tanh"], True, torch.float32, device=device)
    x = torch.randn(2, 5, 16, generator=gen(3)).to(device)
    with torch.no_grad():
        y = ct.sparse_chain_triton(x, layers, ["tanh", "tanh"])
        torch.testing.assert_close(y, ref(x), **TOL[torch.float32])
    assert y.shape == (2, 5, 16) and y.grad_fn is None


def check_tanh_accuracy(device: str = "cpu") -> None:
    """tanh within 4 ulp of torch.tanh over the whole range (±0, saturation, ±inf, NaN), both dtypes."""
    for dtype in DTYPES.values():
        layer = SparseLinear(16, 16, degree=1, bias=False, generator=gen(), dtype=dtype).to(device)
        with torch.no_grad():  # degree 1 = 16 blocks of 1x1 set to 1: the layer is a permutation
            layer.blocks.fill_(1.0)
        z = torch.cat([torch.linspace(-12, 12, 20_000, dtype=dtype),
                       torch.tensor([0.0, -0.0, 1e-30, 4e-4, 0.0999, 0.1, 0.1001, float("inf"), -float("inf")],
                                    dtype=dtype)])
        z = torch.cat([z, z.new_zeros((-z.numel()) % 16)]).view(-1, 16).to(device)
        with torch.no_grad():
            y = ct.sparse_chain_triton(z, [layer], ["tanh"])
            expected = torch.tanh(layer.run(z, "plain", layer.blocks, None))  # blocked: inf stays inf
        info = torch.finfo(dtype)
        ulp = info.eps * expected.abs().clamp_min(info.tiny)
        assert ((y - expected).abs() <= 4 * ulp).all(), f"{dtype}: max error {(y - expected).abs().max()}"
        assert torch.isnan(ct.sparse_chain_triton(torch.full((1, 16), float("nan"), dtype=dtype, device=device),
                                                  [layer], ["tanh"])).all()


def check_gradcheck(device: str = "cpu") -> None:
    acts = ["tanh", "relu"]
    layers, _ = make_chain([8, 8, 8], [2, 2], acts, True, torch.float64, device=device)
    gathers, row_perms, final = ct.chain_indices(layers)
    params = [p.detach().clone().requires_grad_() for layer in layers for p in (layer.blocks, layer.bias)]
    x = torch.randn(2, 8, dtype=torch.float64, generator=gen(1)).to(device).requires_grad_()

    def fn(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return ct.TritonChainFunction.apply(x, tuple(acts), gathers, row_perms, final, *ps)

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-8)


CHECKS = {**{f"case:{name}": (lambda case=case, device="cpu": check_case(case, device))
             for name, case in CASES.items()},
          "no_grad_and_leading_dims": check_no_grad_and_leading_dims, "tanh_accuracy": check_tanh_accuracy,
          "gradcheck": check_gradcheck}


@pytest.fixture(scope="module")
def interpreted() -> dict[str, Any]:
    results = run_interpreted(__file__)
    if "unavailable" in results:
        pytest.skip(results["unavailable"])
    return results


@pytest.mark.parametrize("name", list(CHECKS))
def test_interpreter(interpreted: dict[str, Any], name: str) -> None:
    assert interpreted[name] is None, interpreted[name]


def test_not_available_on_cpu_without_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not ct.triton_chain_available("cpu")


def test_unknown_activation_and_dtype() -> None:
    """Checked before any kernel is loaded (no triton needed)."""
    layers, _ = make_chain([8, 8], [2], ["tanh"], False, torch.float32)
    with pytest.raises(ValueError, match=r"'gelu'.*allowed: identity, tanh, relu"):
        ct.sparse_chain_triton(torch.randn(2, 8, requires_grad=True), layers, ["gelu"])
    with pytest.raises(ValueError, match="one per layer"):
        ct.sparse_chain_triton(torch.randn(2, 8), layers, ["tanh", "tanh"])
    with pytest.raises(TypeError, match="float32 or float64"):
        ct.sparse_chain_triton(torch.randn(2, 8, dtype=torch.bfloat16), layers, ["tanh"])
    with pytest.raises(TypeError, match=r"params\[0\]"):
        ct.sparse_chain_triton(torch.randn(2, 8, dtype=torch.float64), layers, ["tanh"])


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")


@cuda
@pytest.mark.parametrize("name", list(CHECKS))
def test_cuda(name: str) -> None:
    assert ct.triton_chain_available("cuda")
    CHECKS[name](device="cuda")


@cuda
@pytest.mark.parametrize(("depth", "width", "degree", "batch"), [(50, 256, 4, 128), (4, 4096, 64, 256)])
def test_cuda_benchmark_shapes(depth: int, width: int, degree: int, batch: int) -> None:
    """The benchmark's chains (1000 × 256/d4 cut to 50 layers; 4 × 4096/d64) agree with the unfused layers."""
    check_case(([width] * (depth + 1), [degree] * depth, ["tanh"] * depth, True, "float32", batch), "cuda")


if __name__ == "__main__":
    report_checks(CHECKS)
