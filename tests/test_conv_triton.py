"""The Triton conv kernels compute the blocked SparseConv2d's forward, input gradient and block gradient.

The reference is the layer's formula, ``F.conv2d(x[:, col_perm], blocks, bias[row_perm], groups=g)`` with
the output channels put back by ``argsort(row_perm)``, computed in float64 (also for float32 cases, so a
CUDA run is not compared against TF32 convolutions), and its gradients by autograd.

On the CPU the kernels run through Triton's interpreter. The interpreter is chosen when a kernel is
decorated, from ``TRITON_INTERPRET``, so the interpreted cases run in one subprocess (this file run as
a script with ``TRITON_INTERPRET=1``), never in the pytest process, whose other tests must not see it;
each case reports back by name and is asserted here. Skipped if triton cannot be imported. On CUDA the
same cases run in-process. The argument checks run in-process (they come before any kernel is loaded).
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import pytest
import torch
import torch.nn.functional as F

from helpers import gen, report_checks, run_interpreted
from sao.nn import SparseConv2d
from sao.nn import _conv_triton as ct

# float32: sums in another order than the float64 reference (and tl.dot in IEEE float32, no TF32).
TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-12, "rtol": 0}}
CUDA_TOL = {torch.float32: {"atol": 1e-4, "rtol": 1e-4}, torch.float64: {"atol": 1e-12, "rtol": 0}}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Case(NamedTuple):
    """One convolution: ``g`` blocks of ``c_out/g × c_in/g`` channels on ``(batch, c_in, *size)`` inputs."""

    c_in: int
    c_out: int
    g: int
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    bias: bool = True
    dtype: str = "float64"
    batch: int = 2
    size: tuple[int, int] = (7, 5)
    layout: str = "contiguous"  # or "channels_last" (x, blocks and grad_y) or "strided" (views with gaps)
    split: int | None = None  # force the block gradient's split-K


# Names give (bm, bn) = (c_out/g, c_in/g). float32 cases with bm >= 16 and bn·kh·kw >= 16 take tl.dot in the
# forward and block gradient, with bm, bn >= 16 in the input gradient; the others the broadcast-sum.
CASES: dict[str, Case] = {
    "3x3-pad1-bm2-bn2-float64": Case(4, 4, 2),
    "3x3-pad1-bm2-bn2-float32": Case(4, 4, 2, dtype="float32"),
    "3x3-pad0-bm4-bn4-float32": Case(4, 4, 1, padding=(0, 0), dtype="float32"),
    "stride2-pad1-bm4-bn4-float64": Case(8, 8, 2, stride=(2, 2)),
    "stride2-pad2-dil2-bm2-bn4-nobias-float64": Case(8, 4, 2, stride=(2, 2), padding=(2, 2), dilation=(2, 2),
                                                     bias=False),
    "dil2-pad2-bm4-bn2-float32": Case(4, 8, 2, padding=(2, 2), dilation=(2, 2), dtype="float32"),
    "3x1-pad(1,0)-stride(2,1)-bm1-bn1-float64": Case(4, 4, 4, kernel=(3, 1), stride=(2, 1), padding=(1, 0)),
    "1x3-pad(0,1)-dil(1,2)-bm1-bn2-float32": Case(4, 2, 2, kernel=(1, 3), padding=(0, 1), dilation=(1, 2),
                                                  dtype="float32"),
    "1x1-pad0-bm4-bn2-nobias-float32": Case(4, 8, 2, kernel=(1, 1), padding=(0, 0), bias=False, dtype="float32"),
    "1x1-stride2-bm1-bn2-float64": Case(4, 2, 2, kernel=(1, 1), stride=(2, 2), padding=(0, 0)),
    "dot-bm16-bn16-float32": Case(32, 32, 2, dtype="float32"),
    "dot-bm32-bn16-stride2-float32": Case(16, 32, 1, stride=(2, 2), dtype="float32"),
    "bm16-bn32-float64": Case(32, 16, 1, size=(5, 3)),
    "bm16-bn1-float32": Case(2, 32, 2, dtype="float32"),
    "bm1-bn16-float32": Case(32, 2, 2, dtype="float32"),
    "bm2-bn16-1x1-float32": Case(32, 4, 2, kernel=(1, 1), padding=(0, 0), dtype="float32"),
    "bm32-bn32-3x1-float64": Case(32, 32, 1, kernel=(3, 1), padding=(1, 0), batch=1, size=(5, 3)),
    "dot-bm64-bn64-1x1-float32": Case(64, 64, 1, kernel=(1, 1), padding=(0, 0), batch=1, size=(5, 3),
                                      dtype="float32"),
    "batch0-float32": Case(8, 8, 2, batch=0, dtype="float32"),
    "batch0-dot-float32": Case(32, 32, 2, stride=(2, 2), batch=0, dtype="float32"),
    "batch1-float64": Case(8, 8, 2, batch=1),
    "channels-last-stride2-float32": Case(8, 8, 2, stride=(2, 2), dtype="float32", layout="channels_last"),
    "channels-last-dot-float32": Case(32, 32, 2, dtype="float32", layout="channels_last"),
    "channels-last-float64": Case(4, 8, 2, padding=(2, 2), dilation=(2, 2), layout="channels_last"),
    "strided-views-float64": Case(8, 4, 2, stride=(2, 1), layout="strided"),
    "split3-float64": Case(8, 8, 2, batch=4, split=3),
    "split3-dot-stride2-float32": Case(32, 32, 2, stride=(2, 2), batch=7, size=(9, 7), dtype="float32", split=3),
}


def reference(x: torch.Tensor, blocks: torch.Tensor, bias: torch.Tensor | None, row_perm: torch.Tensor,
              col_perm: torch.Tensor, case: Case) -> torch.Tensor:
    """The blocked layer's formula with ``F.conv2d`` and ``index_select``."""
    z = F.conv2d(x.index_select(1, col_perm), blocks, None if bias is None else bias.index_select(0, row_perm),
                 case.stride, case.padding, case.dilation, case.g)
    return z.index_select(1, torch.argsort(row_perm))


def _tensor(shape: tuple[int, ...], dtype: torch.dtype, seed: int, layout: str, device: str) -> torch.Tensor:
    """Standard normal values of ``shape`` in ``layout``: contiguous, channels-last (4-D) or a strided view."""
    if layout == "strided" and len(shape) == 4:  # every other column of a taller, twice as wide tensor
        n, c, h, w = shape
        t = torch.randn(n, c, h + 2, 2 * w, dtype=dtype, generator=gen(seed))[:, :, 1:h + 1, ::2]
        return t.to(device)
    t = torch.randn(shape, dtype=dtype, generator=gen(seed)).to(device)
    if layout == "channels_last" and len(shape) == 4:
        t = t.to(memory_format=torch.channels_last)
    return t


def check_case(case: Case, device: str = "cpu") -> None:
    """Forward, input gradient and block gradient agree with the reference and autograd."""
    dtype = DTYPES[case.dtype]
    tol = (TOL if device == "cpu" else CUDA_TOL)[dtype]
    kh, kw = case.kernel
    bn = case.c_in // case.g
    x = _tensor((case.batch, case.c_in, *case.size), dtype, 1, case.layout, device)
    blocks = _tensor((case.c_out, bn, kh, kw), dtype, 2, case.layout, device)
    bias = torch.randn(case.c_out, dtype=dtype, generator=gen(3)).to(device) if case.bias else None
    row_perm = torch.randperm(case.c_out, generator=gen(4)).to(device)
    col_perm = torch.randperm(case.c_in, generator=gen(5)).to(device)
    geometry = (case.stride, case.padding, case.dilation, case.g)

    y = ct.conv_forward_triton(x, blocks, bias, row_perm, col_perm, *geometry)
    x64, blocks64 = x.detach().double().requires_grad_(), blocks.detach().double().requires_grad_()
    y_ref = reference(x64, blocks64, None if bias is None else bias.double(), row_perm, col_perm, case)
    assert y.dtype == dtype and y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref.to(dtype), **tol)

    gy = _tensor(tuple(y_ref.shape), dtype, 6, case.layout, device)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x64, blocks64), gy.double())
    gx = ct.conv_input_grad_triton(gy, blocks, row_perm, col_perm, case.size, *geometry)
    if case.split is None:
        gw = ct.conv_weight_grad_triton(gy, x, row_perm, col_perm, case.kernel, *geometry)
    else:
        gw = ct._weight_grad(gy, x, row_perm, col_perm, case.kernel, *geometry, split=case.split)
    assert gx.shape == x.shape and gw.shape == blocks.shape and gw.is_contiguous()
    torch.testing.assert_close(gx, gx_ref.to(dtype), **tol)
    torch.testing.assert_close(gw, gw_ref.to(dtype), **tol)
    if case.layout == "channels_last" and case.batch:  # the output follows x's memory format, grad_x grad_y's
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert gx.is_contiguous(memory_format=torch.channels_last)
    # deterministic: no atomics, a fixed split
    assert torch.equal(gw, ct.conv_weight_grad_triton(gy, x, row_perm, col_perm, case.kernel, *geometry)
                       if case.split is None else
                       ct._weight_grad(gy, x, row_perm, col_perm, case.kernel, *geometry, split=case.split))


def check_layer(device: str = "cpu") -> None:
    """The kernels compute what a blocked ``SparseConv2d`` (its own parameters and buffers) computes.

    The expected values come from a float64 copy of the layer (no TF32 convolution on CUDA)."""
    for dtype in DTYPES.values():
        layer = SparseConv2d(8, 16, 3, stride=2, padding=1, degree=4, generator=gen(0), dtype=dtype).to(device)
        with torch.no_grad():  # delta init leaves most taps zero and the bias zero: make every value count
            layer.blocks.normal_(generator=gen(1))
            layer.bias.normal_(generator=gen(2))
        assert layer.num_blocks == 4 and tuple(layer.blocks.shape) == (16, 2, 3, 3)
        ref = copy.deepcopy(layer).double()
        x = torch.randn(2, 8, 7, 5, dtype=dtype, generator=gen(3)).to(device)
        x64 = x.detach().double().requires_grad_()
        args = (layer.row_perm, layer.col_perm)
        geometry = (layer.stride, layer.padding, layer.dilation, layer.num_blocks)
        y_ref = ref(x64)
        y = ct.conv_forward_triton(x, layer.blocks.detach(), layer.bias.detach(), *args, *geometry)
        tol = (TOL if device == "cpu" else CUDA_TOL)[dtype]
        torch.testing.assert_close(y, y_ref.to(dtype), **tol)
        gy = torch.randn(y.shape, dtype=dtype, generator=gen(4)).to(device)
        gx_ref, gw_ref = torch.autograd.grad(y_ref, (x64, ref.blocks), gy.double())
        gx = ct.conv_input_grad_triton(gy, layer.blocks.detach(), *args, (7, 5), *geometry)
        gw = ct.conv_weight_grad_triton(gy, x, *args, layer.kernel_size, *geometry)
        torch.testing.assert_close(gx, gx_ref.to(dtype), **tol)
        torch.testing.assert_close(gw, gw_ref.to(dtype), **tol)


def check_gradcheck(device: str = "cpu") -> None:
    """The three kernels as one autograd function pass ``gradcheck`` (bias gradient as the caller does it)."""
    case = Case(4, 4, 2, stride=(2, 1), padding=(1, 0), dilation=(1, 2), batch=1, size=(5, 6))
    geometry = (case.stride, case.padding, case.dilation, case.g)
    row_perm = torch.randperm(4, generator=gen(4)).to(device)
    col_perm = torch.randperm(4, generator=gen(5)).to(device)

    class Conv(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, blocks: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(x, blocks)
            return ct.conv_forward_triton(x, blocks, bias, row_perm, col_perm, *geometry)

        @staticmethod
        def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x, blocks = ctx.saved_tensors
            return (ct.conv_input_grad_triton(gy, blocks, row_perm, col_perm, tuple(x.shape[2:]), *geometry),
                    ct.conv_weight_grad_triton(gy, x, row_perm, col_perm, tuple(blocks.shape[2:]), *geometry),
                    gy.sum((0, 2, 3)))

    inputs = [torch.randn(shape, dtype=torch.float64, generator=gen(i)).to(device).requires_grad_()
              for i, shape in enumerate([(1, 4, 5, 6), (4, 2, 3, 3), (4,)])]
    assert torch.autograd.gradcheck(Conv.apply, inputs, eps=1e-6, atol=1e-8)


CHECKS = {**{f"case:{name}": (lambda case=case, device="cpu": check_case(case, device))
             for name, case in CASES.items()},
          "layer": check_layer, "gradcheck": check_gradcheck}


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
    assert not ct.triton_conv_available("cpu")
    assert not ct.triton_conv_available("meta")


# ------------------------------------------------------------------ argument checks (in-process, no kernel)


def _valid() -> dict[str, Any]:
    """Valid arguments of all three functions (g = 2 blocks of 3 × 2 channels, 3×3 kernel, 7×5 input)."""
    return {"x": torch.randn(2, 4, 7, 5), "blocks": torch.randn(6, 2, 3, 3), "bias": torch.randn(6),
            "row_perm": torch.randperm(6), "col_perm": torch.randperm(4), "grad_y": torch.randn(2, 6, 4, 3),
            "stride": (2, 2), "padding": (1, 1), "dilation": (1, 1), "num_blocks": 2, "input_size": (7, 5),
            "kernel_size": (3, 3)}


def _call(fn: str, args: dict[str, Any]) -> Any:
    names = {"forward": ["x", "blocks", "bias", "row_perm", "col_perm", "stride", "padding", "dilation", "num_blocks"],
             "input": ["grad_y", "blocks", "row_perm", "col_perm", "input_size", "stride", "padding", "dilation",
                       "num_blocks"],
             "weight": ["grad_y", "x", "row_perm", "col_perm", "kernel_size", "stride", "padding", "dilation",
                        "num_blocks"]}[fn]
    function = {"forward": ct.conv_forward_triton, "input": ct.conv_input_grad_triton,
                "weight": ct.conv_weight_grad_triton}[fn]
    return function(*[args[name] for name in names])


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("forward", {"x": torch.randn(2, 4, 7, 5, dtype=torch.float16)}, r"x: .*float32 or float64, got torch.float16"),
    ("forward", {"x": torch.randn(4, 7, 5)}, r"x: expected a 4-D tensor"),
    ("forward", {"x": [[1.0]]}, r"x: expected a torch.Tensor"),
    ("forward", {"blocks": torch.randn(6, 2, 3, 3, dtype=torch.float64)}, r"blocks: expected torch.float32"),
    ("forward", {"blocks": torch.randn(6, 2, 3, 3, device="meta")}, r"blocks: expected torch.float32 on cpu"),
    ("forward", {"blocks": torch.randn(6, 3, 3, 3)}, r"x has 4 channels but blocks"),
    ("forward", {"blocks": torch.randn(5, 2, 3, 3)}, r"num_blocks=2 must divide"),
    ("forward", {"blocks": torch.randn(0, 2, 3, 3), "bias": None, "row_perm": torch.randperm(0)},
     r"at least one channel"),
    ("forward", {"bias": torch.randn(5)}, r"bias: expected shape \(6,\)"),
    ("forward", {"bias": torch.randn(6, dtype=torch.float64)}, r"bias: expected torch.float32"),
    ("forward", {"row_perm": torch.randperm(5)}, r"row_perm: expected shape \(6,\)"),
    ("forward", {"col_perm": torch.randperm(4).float()}, r"col_perm: expected an int64 or int32"),
    ("forward", {"col_perm": torch.randperm(4, device="meta")}, r"col_perm: expected a tensor on cpu"),
    ("forward", {"stride": (0, 1)}, r"stride: give a tuple of two ints >= 1, got \(0, 1\)"),
    ("forward", {"stride": 2}, r"stride: give a tuple of two ints >= 1, got 2"),
    ("forward", {"padding": (1, 1, 1)}, r"padding: give a tuple of two ints >= 0"),
    ("forward", {"padding": (-1, 0)}, r"padding: give a tuple of two ints >= 0"),
    ("forward", {"dilation": (1.0, 1)}, r"dilation: give a tuple of two ints >= 1"),
    ("forward", {"num_blocks": 0}, r"num_blocks: give an int >= 1"),
    ("forward", {"num_blocks": True}, r"num_blocks: give an int >= 1"),
    ("forward", {"x": torch.randn(2, 4, 2, 5), "padding": (0, 0)}, r"smaller than the dilated kernel"),
    ("input", {"grad_y": torch.randn(2, 6, 4, 4)}, r"grad_y: expected spatial size \(4, 3\)"),
    ("input", {"grad_y": torch.randn(2, 5, 4, 3)}, r"grad_y has 5 channels but blocks"),
    ("input", {"grad_y": torch.randn(2, 6, 4, 3).int()}, r"grad_y: .*float32 or float64, got torch.int32"),
    ("input", {"input_size": (7,)}, r"input_size: give a tuple of two ints >= 1"),
    ("input", {"col_perm": torch.randperm(6)}, r"col_perm: expected shape \(4,\)"),
    ("input", {"blocks": torch.randn(6, 2, 3, 3, dtype=torch.float64)}, r"blocks: expected torch.float32"),
    ("weight", {"grad_y": torch.randn(3, 6, 4, 3)}, r"grad_y: expected batch 2 like x"),
    ("weight", {"grad_y": torch.randn(2, 6, 4, 3, dtype=torch.float64)}, r"grad_y: expected torch.float32"),
    ("weight", {"kernel_size": (3, 0)}, r"kernel_size: give a tuple of two ints >= 1"),
    ("weight", {"kernel_size": (1, 1)}, r"grad_y: expected spatial size \(5, 4\)"),
    ("weight", {"num_blocks": 3}, r"num_blocks=3 must divide"),
    ("weight", {"row_perm": torch.randperm(6).view(2, 3)}, r"row_perm: expected shape \(6,\)"),
]


@pytest.mark.parametrize(("fn", "change", "match"), BAD, ids=[f"{fn}-{match[:30]}" for fn, _, match in BAD])
def test_argument_errors(fn: str, change: dict[str, Any], match: str) -> None:
    """Checked before any kernel is loaded (no triton needed)."""
    with pytest.raises(ValueError, match=match):
        _call(fn, {**_valid(), **change})


@pytest.mark.parametrize("fn", ["forward", "input", "weight"])
def test_cpu_without_interpreter(monkeypatch: pytest.MonkeyPatch, fn: str) -> None:
    """Valid CPU arguments without the interpreter: a ValueError naming where the kernels run."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="run on CUDA tensors"):
        _call(fn, _valid())


def test_split_heuristic() -> None:
    """The block gradient's split-K: from the shape alone, whole tiles, no empty split, within the grid."""
    assert ct._split(512, 10_000) == (1, 10_000)  # enough programs already
    assert ct._split(8, 3) == (1, 3)  # too few tiles to split
    for programs in (1, 7, 64, 300):
        for tiles in (1, 4, 5, 63, 1000, 10**7):
            split, per = ct._split(programs, tiles)
            assert 1 <= split <= 65535 and (split - 1) * per < tiles <= split * per
            assert split == 1 or per >= ct._MIN_TILES_PER_SPLIT


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")


@cuda
@pytest.mark.parametrize("name", list(CHECKS))
def test_cuda(name: str) -> None:
    assert ct.triton_conv_available("cuda")
    CHECKS[name](device="cuda")


@cuda
@pytest.mark.parametrize("case", [
    Case(64, 64, 4, batch=8, size=(32, 32), dtype="float32"),
    Case(128, 256, 4, stride=(2, 2), batch=4, size=(17, 17), dtype="float32", layout="channels_last"),
    Case(256, 256, 16, kernel=(1, 1), padding=(0, 0), batch=16, size=(14, 14), dtype="float32"),
    Case(64, 64, 64, batch=2, size=(16, 16), dtype="float64"),
], ids=["bm16-32x32", "bm64-bn32-stride2-cl", "1x1-bm16-14x14", "depthwise-float64"])
def test_cuda_realistic_shapes(case: Case) -> None:
    """Layers of the CNN experiments' size (split-K active in the block gradient)."""
    check_case(case, "cuda")


if __name__ == "__main__":
    report_checks(CHECKS)
