"""Triton (GPU) kernels for the blocked ``SparseConv2d``: forward, input gradient and block gradient.

The GPU twin of the CPU convolution kernel (:mod:`sao.nn._conv_kernel`). A blocked
:class:`~sao.nn.SparseConv2d` with ``g`` blocks of ``bm`` output × ``bn`` input channels computes, with
zero padding ``(ph, pw)``, stride ``(sh, sw)`` and dilation ``(dh, dw)``::

    y[n, row_perm[b·bm + o], oh, ow] = bias[row_perm[b·bm + o]]
        + Σ_{j < bn, p < kh, q < kw} blocks[b·bm + o, j, p, q] · xpad[n, col_perm[b·bn + j], oh·sh + p·dh, ow·sw + q·dw]

i.e. ``F.conv2d(x[:, col_perm], blocks, bias[row_perm], groups=g)[:, argsort(row_perm)]``. The
permutations are folded into the kernels' loads and stores (no gather pass over the activations), and
every output element has exactly one writer, so no kernel uses atomics and every result is
deterministic (bitwise repeatable on one device).

**Kernels** (implicit GEMMs per block; ``S = N·OH·OW`` output pixels, ``K = bn·kh·kw``):

* forward, grid ``(cdiv(S, BLOCK_P), g · cdiv(bm, BLOCK_M))``: a program owns ``BLOCK_M`` output
  channels of one block and ``BLOCK_P`` output pixels; it loops over the flattened ``(j, p, q)``
  reduction in tiles of ``BLOCK_K``, loading the block rows (any strides) and gathering the input
  columns ``x[n, col_perm[b·bn + j], oh·sh − ph + p·dh, ow·sw − pw + q·dw]`` (masked outside the image:
  the zero padding), adds ``bias[row_perm[…]]`` and stores to channels ``row_perm[…]`` of ``y``.
* input gradient, grid ``(sh·sw · cdiv(N·⌈H/sh⌉·⌈W/sw⌉, BLOCK_P), g · cdiv(bn, BLOCK_K))``: the
  transposed convolution, split by stride phase ``(ih mod sh, iw mod sw)`` so that within a program a tap
  ``(p, q)`` either reaches every pixel or none (taps that reach none are skipped, so a stride-2
  backward does no masked-out work). A program owns ``BLOCK_K`` input channels of one block — it
  writes ``grad_x[:, col_perm[b·bn + j]]``, the only writer of those channels — and ``BLOCK_P`` pixels
  of one phase, looping over the taps and over the block's ``bm`` output channels (read from
  ``grad_y[:, row_perm[…]]``) in tiles of ``BLOCK_M``.
* block gradient, grid ``(g · cdiv(bm, BLOCK_M), cdiv(K, BLOCK_K), split)``: ``grad_y`` rows times the
  gathered input columns, reduced over the ``S`` pixels in tiles of ``BLOCK_S``. A split-K over ``S``
  (``split`` contiguous ranges of whole tiles, chosen from the shape only — never from the device —
  so a result does not depend on the GPU model) writes ``split`` partial sums that a second small
  reduction (``torch.sum`` over the split axis) adds; with ``split == 1`` the kernel writes
  ``grad_blocks`` directly.

**Precision.** float32 tiles use ``tl.dot`` (with ``input_precision="ieee"``: no TF32) when every
dimension of the product is at least 16 (``bm ≥ 16`` and ``K ≥ 16`` forward and for the block
gradient, ``bm, bn ≥ 16`` for the input gradient), else a broadcast-multiply-sum over tiles of at
most 4096 products; float64 always takes the broadcast-sum (``tl.dot`` has no float64 path). Sums
run in the input's dtype, in another order than cuDNN's: results agree with ``F.conv2d`` to float
rounding (about 1e-6 relative in float32, 1e-15 in float64). Offsets are computed in int64.

Triton is imported on first use, never by ``import sao``, so ``TRITON_INTERPRET=1`` set before that
runs the kernels on the CPU (how the CPU test run checks them). Check :func:`triton_conv_available`
before calling; the functions are plain (no autograd): the caller's ``autograd.Function`` saves what
it needs and computes the bias gradient as ``grad_y.sum((0, 2, 3))``.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from sao.nn._triton import TritonKernels

__all__ = ["conv_forward_triton", "conv_input_grad_triton", "conv_weight_grad_triton", "triton_conv_available"]

tl: Any = None  # triton.language, bound by _load (the jit functions look it up in this module's globals)

#: dtypes the kernels take.
DTYPES = (torch.float32, torch.float64)
#: programs the block gradient's split-K aims at (a constant, not the device's SM count: results must not
#: depend on the GPU model).
_TARGET_PROGRAMS = 512
#: fewest pixel tiles one split of the block gradient reduces.
_MIN_TILES_PER_SPLIT = 4


def triton_conv_available(device: torch.device | str) -> bool:
    """Whether the Triton convolution kernels can run on ``device``: CUDA with triton importable, or the
    CPU while Triton's interpreter is active (``TRITON_INTERPRET=1``)."""
    return _TRITON.available(device)


def _define_kernels() -> SimpleNamespace:
    # Module globals, not closures: Triton (and its interpreter) resolves the names a kernel uses in its globals.
    global tl
    import triton
    import triton.language as language

    tl = language

    @triton.jit
    def _fwd(x_ptr, sx0, sx1, sx2, sx3, w_ptr, sw0, sw1, sw2, sw3, bias_ptr, rperm_ptr, cperm_ptr,
             y_ptr, sy0, sy1, sy2, sy3,
             S, H, W, OH, OW, BM, BN, KW, KHW, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W, M_TILES,
             HAS_BIAS: tl.constexpr, USE_DOT: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr):
        pid_p = tl.program_id(0)
        pid_g = tl.program_id(1)
        blk = pid_g // M_TILES
        rows = (pid_g % M_TILES) * BLOCK_M + tl.arange(0, BLOCK_M)
        mrow = rows < BM
        s = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
        ms = s < S
        n = s // (OH * OW)
        ohw = s % (OH * OW)
        oh = ohw // OW
        ow = ohw % OW
        ih0 = oh * STRIDE_H - PAD_H
        iw0 = ow * STRIDE_W - PAD_W
        xbase = n * sx0
        wrow = (blk * BM + rows).to(tl.int64) * sw0
        acc = tl.zeros((BLOCK_M, BLOCK_P), dtype=x_ptr.dtype.element_ty)
        for k0 in range(0, BN * KHW, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)  # flattened (j, p, q)
            mk = kk < BN * KHW
            j = kk // KHW
            tap = kk % KHW
            p = tap // KW
            q = tap % KW
            chan = tl.load(cperm_ptr + blk * BN + j, mask=mk, other=0).to(tl.int64)
            w = tl.load(w_ptr + wrow[:, None] + j[None, :] * sw1 + p[None, :] * sw2 + q[None, :] * sw3,
                        mask=mrow[:, None] & mk[None, :], other=0.0)
            ih = ih0[None, :] + (p * DIL_H)[:, None]
            iw = iw0[None, :] + (q * DIL_W)[:, None]
            mx = mk[:, None] & ms[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            xt = tl.load(x_ptr + xbase[None, :] + chan[:, None] * sx1 + ih * sx2 + iw * sx3, mask=mx,
                         other=0.0)  # (BLOCK_K, BLOCK_P)
            if USE_DOT:
                acc = tl.dot(w, xt, acc, input_precision="ieee")
            else:
                acc += tl.sum(w[:, :, None] * xt[None, :, :], axis=1)
        ochan = tl.load(rperm_ptr + blk * BM + rows, mask=mrow, other=0).to(tl.int64)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + ochan, mask=mrow, other=0.0)[:, None]
        tl.store(y_ptr + ochan[:, None] * sy1 + (n * sy0 + oh * sy2 + ow * sy3)[None, :], acc,
                 mask=mrow[:, None] & ms[None, :])

    @triton.jit
    def _bwd_input(gy_ptr, sg0, sg1, sg2, sg3, w_ptr, sw0, sw1, sw2, sw3, rperm_ptr, cperm_ptr,
                   gx_ptr, sx0, sx1, sx2, sx3,
                   SQ, P_TILES, H, W, HQ, WQ, OH, OW, BM, BN, KH, KW, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H,
                   DIL_W, K_TILES,
                   USE_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr):
        pid_p = tl.program_id(0)
        pid_g = tl.program_id(1)
        phase = pid_p // P_TILES  # (ih mod sh, iw mod sw)
        rh = phase // STRIDE_W
        rw = phase % STRIDE_W
        blk = pid_g // K_TILES
        kk = (pid_g % K_TILES) * BLOCK_K + tl.arange(0, BLOCK_K)  # input channels j of the block
        mk = kk < BN
        s = (pid_p % P_TILES).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
        n = s // (HQ * WQ)
        hw = s % (HQ * WQ)
        ih2 = hw // WQ
        iw2 = hw % WQ
        ih = rh + ih2 * STRIDE_H
        iw = rw + iw2 * STRIDE_W
        ms = (s < SQ) & (ih < H) & (iw < W)
        gbase = n * sg0
        acc = tl.zeros((BLOCK_K, BLOCK_P), dtype=gx_ptr.dtype.element_ty)
        for p in range(0, KH):
            # oh = (ih + ph - p·dh) / sh must be an integer: the same for every pixel of the phase. t is that
            # numerator made non-negative (+ sh·kh·dh), so % and // need no sign convention.
            th = rh + PAD_H - p * DIL_H + STRIDE_H * KH * DIL_H
            if th % STRIDE_H == 0:
                oh = ih2 + (th // STRIDE_H - KH * DIL_H)
                mh = (oh >= 0) & (oh < OH)
                for q in range(0, KW):
                    tw = rw + PAD_W - q * DIL_W + STRIDE_W * KW * DIL_W
                    if tw % STRIDE_W == 0:
                        ow = iw2 + (tw // STRIDE_W - KW * DIL_W)
                        mp = ms & mh & (ow >= 0) & (ow < OW)
                        goff = gbase + oh * sg2 + ow * sg3
                        for i0 in range(0, BM, BLOCK_M):
                            rows = i0 + tl.arange(0, BLOCK_M)
                            mrow = rows < BM
                            ochan = tl.load(rperm_ptr + blk * BM + rows, mask=mrow, other=0).to(tl.int64)
                            dy = tl.load(gy_ptr + ochan[:, None] * sg1 + goff[None, :],
                                         mask=mrow[:, None] & mp[None, :], other=0.0)  # (BLOCK_M, BLOCK_P)
                            wt = tl.load(w_ptr + (blk * BM + rows[None, :]).to(tl.int64) * sw0 + kk[:, None] * sw1
                                         + p * sw2 + q * sw3, mask=mk[:, None] & mrow[None, :],
                                         other=0.0)  # (BLOCK_K, BLOCK_M): the block transposed
                            if USE_DOT:
                                acc = tl.dot(wt, dy, acc, input_precision="ieee")
                            else:
                                acc += tl.sum(wt[:, :, None] * dy[None, :, :], axis=1)
        ichan = tl.load(cperm_ptr + blk * BN + kk, mask=mk, other=0).to(tl.int64)
        tl.store(gx_ptr + ichan[:, None] * sx1 + (n * sx0 + ih * sx2 + iw * sx3)[None, :], acc,
                 mask=mk[:, None] & ms[None, :])

    @triton.jit
    def _bwd_weight(gy_ptr, sg0, sg1, sg2, sg3, x_ptr, sx0, sx1, sx2, sx3, rperm_ptr, cperm_ptr, gw_ptr,
                    S, CHUNK, H, W, OH, OW, BM, BN, KW, KHW, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
                    M_TILES, C_OUT,
                    USE_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr):
        pid_g = tl.program_id(0)
        pid_k = tl.program_id(1)
        pid_s = tl.program_id(2)
        blk = pid_g // M_TILES
        rows = (pid_g % M_TILES) * BLOCK_M + tl.arange(0, BLOCK_M)
        mrow = rows < BM
        kk = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)  # flattened (j, p, q)
        mk = kk < BN * KHW
        j = kk // KHW
        tap = kk % KHW
        dih = (tap // KW) * DIL_H - PAD_H
        diw = (tap % KW) * DIL_W - PAD_W
        ichan = tl.load(cperm_ptr + blk * BN + j, mask=mk, other=0).to(tl.int64)
        ochan = tl.load(rperm_ptr + blk * BM + rows, mask=mrow, other=0).to(tl.int64)
        start = pid_s.to(tl.int64) * CHUNK
        end = tl.minimum(start + CHUNK, S)
        acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=gw_ptr.dtype.element_ty)
        for s0 in range(start, end, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            ms = s < end
            n = s // (OH * OW)
            ohw = s % (OH * OW)
            oh = ohw // OW
            ow = ohw % OW
            dy = tl.load(gy_ptr + ochan[:, None] * sg1 + (n * sg0 + oh * sg2 + ow * sg3)[None, :],
                         mask=mrow[:, None] & ms[None, :], other=0.0)  # (BLOCK_M, BLOCK_S)
            ih = (oh * STRIDE_H)[:, None] + dih[None, :]
            iw = (ow * STRIDE_W)[:, None] + diw[None, :]
            mx = ms[:, None] & mk[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            xc = tl.load(x_ptr + (n * sx0)[:, None] + ichan[None, :] * sx1 + ih * sx2 + iw * sx3, mask=mx,
                         other=0.0)  # (BLOCK_S, BLOCK_K)
            if USE_DOT:
                acc = tl.dot(dy, xc, acc, input_precision="ieee")
            else:
                acc += tl.sum(dy[:, :, None] * xc[None, :, :], axis=1)
        out = gw_ptr + (pid_s.to(tl.int64) * C_OUT + blk * BM + rows[:, None]) * (BN * KHW) + kk[None, :]
        tl.store(out, acc, mask=mrow[:, None] & mk[None, :])

    return SimpleNamespace(fwd=_fwd, bwd_input=_bwd_input, bwd_weight=_bwd_weight, cdiv=triton.cdiv)


_TRITON = TritonKernels(_define_kernels)


def _kernels(device: torch.device) -> SimpleNamespace:
    """The kernels, after checking that they can run on ``device``."""
    if not _TRITON.runs_on(device):
        raise ValueError(f"the Triton conv kernels run on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), "
                         f"got tensors on {device}")
    return _TRITON.require()


# ---------------------------------------------------------------------------------------------- tiles


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _broadcast_tiles(a: int, b: int, cap: int = 16) -> tuple[int, int, int]:
    """Broadcast-sum tiles: the two channel tiles (powers of two, at most ``cap``) and a pixel tile such that a
    step multiplies at most 4096 products (at most 128 pixels)."""
    ta, tb = min(cap, _pow2(a)), min(cap, _pow2(b))
    return ta, tb, max(1, min(128, 4096 // (ta * tb)))


def _forward_tiles(bm: int, k: int, dtype: torch.dtype) -> dict[str, Any]:
    """Forward and block-gradient tiles for ``bm`` rows and a flattened reduction/column extent ``k`` = bn·kh·kw."""
    if dtype == torch.float32 and bm >= 16 and k >= 16:
        return {"USE_DOT": True, "BLOCK_M": min(64, _pow2(bm)), "BLOCK_K": min(32, _pow2(k)), "BLOCK_P": 64}
    block_m, block_k, block_p = _broadcast_tiles(bm, k)
    return {"USE_DOT": False, "BLOCK_M": block_m, "BLOCK_K": block_k, "BLOCK_P": block_p}


def _input_tiles(bm: int, bn: int, dtype: torch.dtype) -> dict[str, Any]:
    """Input-gradient tiles: ``BLOCK_K`` input channels written, ``BLOCK_M`` output channels reduced."""
    if dtype == torch.float32 and bm >= 16 and bn >= 16:
        return {"USE_DOT": True, "BLOCK_M": min(32, _pow2(bm)), "BLOCK_K": min(64, _pow2(bn)), "BLOCK_P": 64}
    block_m, block_k, block_p = _broadcast_tiles(bm, bn)
    return {"USE_DOT": False, "BLOCK_M": block_m, "BLOCK_K": block_k, "BLOCK_P": block_p}


def _split(programs: int, s_tiles: int) -> tuple[int, int]:
    """``(split, tiles per split)`` of the block gradient's reduction over ``s_tiles`` pixel tiles, for a grid
    of ``programs`` without the split: enough splits to reach :data:`_TARGET_PROGRAMS` programs, each of at
    least :data:`_MIN_TILES_PER_SPLIT` tiles, at most 65535 (the grid's third axis)."""
    want = max(1, min(_TARGET_PROGRAMS // max(programs, 1), s_tiles // _MIN_TILES_PER_SPLIT, 65535))
    per = -(-s_tiles // want)
    return -(-s_tiles // per), per


# ---------------------------------------------------------------------------------------------- checks


def _pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    """``value`` as a tuple of two ints ``>= minimum`` (a ValueError naming ``name`` otherwise)."""
    try:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
            raise TypeError
        if any(isinstance(v, bool) for v in value):
            raise TypeError
        pair = (operator.index(value[0]), operator.index(value[1]))
    except TypeError:
        raise ValueError(f"{name}: give a tuple of two ints >= {minimum}, got {value!r}") from None
    if min(pair) < minimum:
        raise ValueError(f"{name}: give a tuple of two ints >= {minimum}, got {pair}")
    return pair


def _check_tensor(t: object, name: str, dim: int, like: Tensor | None = None) -> Tensor:
    """``t`` is a ``dim``-D float32/float64 tensor (of ``like``'s dtype and device if given)."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dim:
        raise ValueError(f"{name}: expected a {dim}-D tensor, got shape {tuple(t.shape)}")
    if like is None:
        if t.dtype not in DTYPES:
            raise ValueError(f"{name}: the Triton conv kernels take float32 or float64, got {t.dtype}")
    elif t.dtype != like.dtype or t.device != like.device:
        raise ValueError(f"{name}: expected {like.dtype} on {like.device} like the activations, got {t.dtype} on "
                         f"{t.device}")
    return t


def _check_perm(t: object, name: str, size: int, device: torch.device) -> Tensor:
    """``t`` is a ``(size,)`` int64/int32 tensor on ``device`` (a permutation: not checked, that would sync)."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name}: expected an int64 or int32 permutation, got {t.dtype}")
    if tuple(t.shape) != (size,):
        raise ValueError(f"{name}: expected shape ({size},), got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name}: expected a tensor on {device} like the activations, got {t.device}")
    return t.contiguous()


def _check_num_blocks(num_blocks: object, c_out: int, c_in: int | None = None) -> int:
    """``num_blocks`` as an int ``>= 1`` dividing ``c_out`` (and ``c_in`` if given)."""
    try:
        if isinstance(num_blocks, bool):
            raise TypeError
        g = operator.index(num_blocks)
    except TypeError:
        raise ValueError(f"num_blocks: give an int >= 1, got {num_blocks!r}") from None
    if g < 1:
        raise ValueError(f"num_blocks: give an int >= 1, got {g}")
    if c_out < 1 or (c_in is not None and c_in < 1):
        raise ValueError(f"the Triton conv kernels need at least one channel on each side, got {c_out} out, "
                         f"{c_in} in")
    if c_out % g or (c_in is not None and c_in % g):
        channels = f"out {c_out}" if c_in is None else f"out {c_out}, in {c_in}"
        raise ValueError(f"num_blocks={g} must divide the channel counts ({channels})")
    return g


def _geometry(stride: object, padding: object, dilation: object, kernel: tuple[int, int],
              size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(stride, padding, dilation, (OH, OW))`` checked; ``ValueError`` if the output would be empty."""
    st, pad, dil = _pair(stride, "stride", 1), _pair(padding, "padding", 0), _pair(dilation, "dilation", 1)
    out = tuple((size[i] + 2 * pad[i] - dil[i] * (kernel[i] - 1) - 1) // st[i] + 1 for i in range(2))
    if min(out) < 1:
        raise ValueError(f"the input {size[0]}x{size[1]} padded by {pad} is smaller than the dilated kernel "
                         f"{kernel} (dilation {dil}): the output would be {out[0]}x{out[1]}")
    return st, pad, dil, out  # type: ignore[return-value]


def _check_out_size(grad_y: Tensor, out: tuple[int, int], source: str) -> None:
    """``ValueError`` unless ``grad_y``'s spatial size is the forward's output size ``out`` (of ``source``)."""
    if tuple(grad_y.shape[2:]) != out:
        raise ValueError(f"grad_y: expected spatial size {out} (the output of {source}), got {tuple(grad_y.shape[2:])}")


def _like(t: Tensor, shape: Sequence[int]) -> Tensor:
    """An empty tensor of ``shape`` in ``t``'s memory format (channels-last if ``t`` is, else contiguous)."""
    channels_last = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.empty(tuple(shape), dtype=t.dtype, device=t.device,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _device_guard(t: Tensor) -> Any:
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------- functions


def conv_forward_triton(x: Tensor, blocks: Tensor, bias: Tensor | None, row_perm: Tensor, col_perm: Tensor,
                        stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                        num_blocks: int) -> Tensor:
    """The blocked ``SparseConv2d`` forward with zero padding: ``y`` ``(N, C_out, OH, OW)``.

    ``F.conv2d(x[:, col_perm], blocks, bias[row_perm], stride, padding, dilation, num_blocks)[:, argsort(row_perm)]``
    in one launch, the permutations folded into the loads and stores.

    Args:
        x: ``(N, C_in, H, W)``, float32 or float64, any strides (channels-last too); ``N`` may be 0.
        blocks: ``(g·bm, bn, kh, kw)`` with ``C_in = g·bn``, like ``x`` (dtype and device), any strides.
        bias: ``(C_out,)`` in output order (``C_out = g·bm``), or ``None``.
        row_perm, col_perm: ``(C_out,)`` and ``(C_in,)`` int64 (or int32) permutations (not checked to be).
        stride, dilation: two ints ``>= 1``; padding: two ints ``>= 0`` (zero padding).
        num_blocks: ``g``.

    Returns:
        ``y`` ``(N, C_out, OH, OW)``, ``OH = (H + 2·ph − dh·(kh − 1) − 1) // sh + 1`` (as :class:`torch.nn.Conv2d`),
        channels-last if ``x`` is.

    Raises:
        ValueError: for a dtype other than float32/float64, tensors of different dtypes or devices, wrong
            shapes, bad stride/padding/dilation, an empty output, or a device the kernels do not run on.
        RuntimeError: if triton cannot be imported (check :func:`triton_conv_available` first).
    """
    x = _check_tensor(x, "x", 4)
    blocks = _check_tensor(blocks, "blocks", 4, x)
    n, c_in, h, w = x.shape
    c_out, bn, kh, kw = blocks.shape
    g = _check_num_blocks(num_blocks, c_out, c_in)
    if c_in != g * bn:
        raise ValueError(f"x has {c_in} channels but blocks {tuple(blocks.shape)} with num_blocks={g} read "
                         f"{g * bn} (g·bn)")
    if bias is not None:
        bias = _check_tensor(bias, "bias", 1, x)
        if bias.shape[0] != c_out:
            raise ValueError(f"bias: expected shape ({c_out},), got {tuple(bias.shape)}")
        bias = bias.contiguous()
    row_perm = _check_perm(row_perm, "row_perm", c_out, x.device)
    col_perm = _check_perm(col_perm, "col_perm", c_in, x.device)
    (sh, sw), (ph, pw), (dh, dw), (oh, ow) = _geometry(stride, padding, dilation, (kh, kw), (h, w))
    k = _kernels(x.device)
    y = _like(x, (n, c_out, oh, ow))
    if n == 0:
        return y
    bm = c_out // g
    tiles = _forward_tiles(bm, bn * kh * kw, x.dtype)
    m_tiles = k.cdiv(bm, tiles["BLOCK_M"])
    s = n * oh * ow
    with _device_guard(x):
        k.fwd[(k.cdiv(s, tiles["BLOCK_P"]), g * m_tiles)](
            x, *x.stride(), blocks, *blocks.stride(), blocks if bias is None else bias, row_perm, col_perm,
            y, *y.stride(), s, h, w, oh, ow, bm, bn, kw, kh * kw, sh, sw, ph, pw, dh, dw, m_tiles,
            HAS_BIAS=bias is not None, **tiles)
    return y


def conv_input_grad_triton(grad_y: Tensor, blocks: Tensor, row_perm: Tensor, col_perm: Tensor,
                           input_size: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                           dilation: tuple[int, int], num_blocks: int) -> Tensor:
    """``grad_x`` ``(N, C_in, H, W)`` = dL/dx of :func:`conv_forward_triton` given ``grad_y`` = dL/dy.

    The transposed convolution, one launch, split by stride phase; each input channel ``col_perm[b·bn + j]``
    has one owner (block ``b``'s program), so no atomics.

    Args:
        grad_y: ``(N, C_out, OH, OW)``, float32 or float64, any strides; ``OH``/``OW`` those of ``input_size``.
        blocks: ``(g·bm, bn, kh, kw)``, like ``grad_y``, any strides.
        row_perm, col_perm: ``(C_out,)`` and ``(C_in,)`` int64 (or int32) permutations, ``C_in = g·bn``.
        input_size: ``(H, W)`` of ``x``.
        stride, padding, dilation, num_blocks: as for :func:`conv_forward_triton`.

    Returns:
        ``grad_x`` ``(N, C_in, H, W)``, channels-last if ``grad_y`` is.

    Raises:
        ValueError: for a dtype other than float32/float64, tensors of different dtypes or devices, wrong
            shapes (``grad_y`` not the output shape of ``input_size``), bad geometry, or a device the kernels
            do not run on.
        RuntimeError: if triton cannot be imported.
    """
    grad_y = _check_tensor(grad_y, "grad_y", 4)
    blocks = _check_tensor(blocks, "blocks", 4, grad_y)
    n, c_out = grad_y.shape[:2]
    bm_total, bn, kh, kw = blocks.shape
    if c_out != bm_total:
        raise ValueError(f"grad_y has {c_out} channels but blocks {tuple(blocks.shape)} write {bm_total}")
    h, w = _pair(input_size, "input_size", 1)
    g = _check_num_blocks(num_blocks, c_out)
    c_in = g * bn
    (sh, sw), (ph, pw), (dh, dw), (oh, ow) = _geometry(stride, padding, dilation, (kh, kw), (h, w))
    _check_out_size(grad_y, (oh, ow), f"input_size {(h, w)}")
    row_perm = _check_perm(row_perm, "row_perm", c_out, grad_y.device)
    col_perm = _check_perm(col_perm, "col_perm", c_in, grad_y.device)
    k = _kernels(grad_y.device)
    grad_x = _like(grad_y, (n, c_in, h, w))
    if n == 0:
        return grad_x
    bm = c_out // g
    tiles = _input_tiles(bm, bn, grad_y.dtype)
    k_tiles = k.cdiv(bn, tiles["BLOCK_K"])
    hq, wq = -(-h // sh), -(-w // sw)
    sq = n * hq * wq
    p_tiles = k.cdiv(sq, tiles["BLOCK_P"])
    with _device_guard(grad_y):
        k.bwd_input[(sh * sw * p_tiles, g * k_tiles)](
            grad_y, *grad_y.stride(), blocks, *blocks.stride(), row_perm, col_perm, grad_x, *grad_x.stride(),
            sq, p_tiles, h, w, hq, wq, oh, ow, bm, bn, kh, kw, sh, sw, ph, pw, dh, dw, k_tiles, **tiles)
    return grad_x


def conv_weight_grad_triton(grad_y: Tensor, x: Tensor, row_perm: Tensor, col_perm: Tensor,
                            kernel_size: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                            dilation: tuple[int, int], num_blocks: int) -> Tensor:
    """``grad_blocks`` ``(g·bm, bn, kh, kw)`` = dL/dblocks of :func:`conv_forward_triton` given ``grad_y``.

    Deterministic: a split-K over the ``N·OH·OW`` pixels (chosen from the shape alone) writes partial sums
    that ``torch.sum`` adds; no atomics.

    Args:
        grad_y: ``(N, C_out, OH, OW)``, float32 or float64, any strides.
        x: ``(N, C_in, H, W)``, the forward's input, like ``grad_y``, any strides.
        row_perm, col_perm: ``(C_out,)`` and ``(C_in,)`` int64 (or int32) permutations.
        kernel_size: ``(kh, kw)``.
        stride, padding, dilation, num_blocks: as for :func:`conv_forward_triton`.

    Returns:
        ``grad_blocks`` ``(C_out, C_in // g, kh, kw)``, contiguous (zeros if ``N`` is 0).

    Raises:
        ValueError: for a dtype other than float32/float64, tensors of different dtypes or devices, wrong
            shapes (``grad_y`` not the output shape of ``x``), bad geometry, or a device the kernels do not run on.
        RuntimeError: if triton cannot be imported.
    """
    return _weight_grad(grad_y, x, row_perm, col_perm, kernel_size, stride, padding, dilation, num_blocks)


def _weight_grad(grad_y: Tensor, x: Tensor, row_perm: Tensor, col_perm: Tensor, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], num_blocks: int,
                 split: int | None = None) -> Tensor:
    """:func:`conv_weight_grad_triton`, with the split-K forced to ``split`` ranges if given (tests)."""
    x = _check_tensor(x, "x", 4)
    grad_y = _check_tensor(grad_y, "grad_y", 4, x)
    n, c_in, h, w = x.shape
    c_out = grad_y.shape[1]
    if grad_y.shape[0] != n:
        raise ValueError(f"grad_y: expected batch {n} like x, got {grad_y.shape[0]}")
    g = _check_num_blocks(num_blocks, c_out, c_in)
    kh, kw = _pair(kernel_size, "kernel_size", 1)
    (sh, sw), (ph, pw), (dh, dw), (oh, ow) = _geometry(stride, padding, dilation, (kh, kw), (h, w))
    _check_out_size(grad_y, (oh, ow), f"x's {(h, w)}")
    row_perm = _check_perm(row_perm, "row_perm", c_out, x.device)
    col_perm = _check_perm(col_perm, "col_perm", c_in, x.device)
    k = _kernels(x.device)
    bm, bn = c_out // g, c_in // g
    kflat = bn * kh * kw
    if n == 0:
        return x.new_zeros((c_out, bn, kh, kw))
    tiles = _forward_tiles(bm, kflat, x.dtype)
    block_s = tiles.pop("BLOCK_P")
    m_tiles, k_tiles = k.cdiv(bm, tiles["BLOCK_M"]), k.cdiv(kflat, tiles["BLOCK_K"])
    s = n * oh * ow
    s_tiles = k.cdiv(s, block_s)
    if split is None:
        split, per = _split(g * m_tiles * k_tiles, s_tiles)
    else:
        per = k.cdiv(s_tiles, split)
        split = k.cdiv(s_tiles, per)
    out = x.new_empty((split, c_out, bn, kh, kw))
    with _device_guard(x):
        k.bwd_weight[(g * m_tiles, k_tiles, split)](
            grad_y, *grad_y.stride(), x, *x.stride(), row_perm, col_perm, out,
            s, per * block_s, h, w, oh, ow, bm, bn, kw, kh * kw, sh, sw, ph, pw, dh, dw, m_tiles, c_out,
            BLOCK_S=block_s, **tiles)
    return out[0] if split == 1 else out.sum(0)
