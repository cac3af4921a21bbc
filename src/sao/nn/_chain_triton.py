"""The Triton (GPU) kernel for chains of blocked ``SparseLinear`` layers: kernels and autograd wrapper.

The GPU twin of :mod:`sao.nn._chain_kernel` (same arguments, same saved state): one kernel launch
per layer forward and two per layer backward, activations feature-major in block order, gathers
fused into the loads, no atomics. Offers :func:`triton_chain_available` and
:func:`sparse_chain_triton`. Triton is imported on first use, never by ``import sao``, so
``TRITON_INTERPRET=1`` set before that runs the kernels on the CPU (how the CPU test run checks
them). Grids, precision and memory: ``docs/fused-chains.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from sao.nn._chain_kernel import _codes, _names, chain_backward_differentiable, chain_indices, chain_params
from sao.nn._extension import kernel_readable
from sao.nn._triton import TritonKernels
from sao.nn.kernels import CHAIN_KERNELS, ChainKernel

__all__ = ["TritonChainFunction", "chain_indices", "sparse_chain_triton", "triton_chain_available"]

tl: Any = None  # triton.language, bound by _load (the jit functions look it up in this module's globals)


def triton_chain_available(device: torch.device | str) -> bool:
    """Whether :func:`sparse_chain_triton` can run on ``device``: CUDA with triton importable, or any
    device while Triton's interpreter is active (``TRITON_INTERPRET=1``, CPU tensors)."""
    return _TRITON.available(device)


def _define_kernels() -> SimpleNamespace:
    # Module globals, not closures: Triton (and its interpreter) resolves the names a kernel calls in its globals.
    global tl, _tanh, _act, _act_grad, _dz
    import triton
    import triton.language as language

    tl = language

    @triton.jit
    def _tanh(z):
        # tanh(a) = (1 - e) / (1 + e), e = exp(-2|a|), for |a| >= 0.1; below, its Taylor series to z^13
        # (truncation < 2e-17 relative), which avoids the cancellation in 1 - e near 0.
        a = tl.abs(z)
        e = tl.exp(-2.0 * a)
        big = (1.0 - e) / (1.0 + e)
        big = tl.where(z < 0, -big, big)
        z2 = z * z
        p = -929569.0 / 638512875.0
        p = p * z2 + 21844.0 / 6081075.0
        p = p * z2 - 1382.0 / 155925.0
        p = p * z2 + 62.0 / 2835.0
        p = p * z2 - 17.0 / 315.0
        p = p * z2 + 2.0 / 15.0
        p = p * z2 - 1.0 / 3.0
        small = z + z * z2 * p
        return tl.where(a < 0.1, small, big)

    @triton.jit
    def _act(z, ACT: tl.constexpr):
        if ACT == 1:
            z = _tanh(z)
        elif ACT == 2:
            z = tl.where(z < 0, 0.0, z)  # NaN propagates, as torch.relu
        return z

    @triton.jit
    def _act_grad(g, h, ACT: tl.constexpr):
        if ACT == 1:
            g = g * (1.0 - h * h)
        elif ACT == 2:
            g = tl.where(h > 0, g, 0.0)
        return g

    @triton.jit
    def _fwd(in_ptr, in_sf, in_sb, gather_ptr, w_ptr, bias_ptr, rperm_ptr, out_ptr, out_sf, out_sb, oidx_ptr,
             B, BM, BN, M_TILES,
             ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_OIDX: tl.constexpr, USE_DOT: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr):
        pid_b = tl.program_id(0)
        pid_g = tl.program_id(1)
        blk = pid_g // M_TILES
        rows = (pid_g % M_TILES) * BLOCK_M + tl.arange(0, BLOCK_M)
        mrow = rows < BM
        s = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
        ms = s < B
        acc = tl.zeros((BLOCK_M, BLOCK_B), dtype=w_ptr.dtype.element_ty)
        for k0 in range(0, BN, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            mk = kk < BN
            idx = tl.load(gather_ptr + blk * BN + kk, mask=mk, other=0)
            xt = tl.load(in_ptr + idx[:, None] * in_sf + s[None, :] * in_sb, mask=mk[:, None] & ms[None, :],
                         other=0.0)
            w = tl.load(w_ptr + (blk * BM + rows[:, None]) * BN + kk[None, :], mask=mrow[:, None] & mk[None, :],
                        other=0.0)
            if USE_DOT:
                acc = tl.dot(w, xt, acc, input_precision="ieee")
            else:
                acc += tl.sum(w[:, :, None] * xt[None, :, :], axis=1)
        orow = blk * BM + rows
        if HAS_BIAS:
            bidx = tl.load(rperm_ptr + orow, mask=mrow, other=0)
            acc += tl.load(bias_ptr + bidx, mask=mrow, other=0.0)[:, None]
        h = _act(acc, ACT)
        if HAS_OIDX:
            orow = tl.load(oidx_ptr + orow, mask=mrow, other=0)
        tl.store(out_ptr + orow[:, None] * out_sf + s[None, :] * out_sb, h, mask=mrow[:, None] & ms[None, :])

    @triton.jit
    def _dz(gh_ptr, h_ptr, z_sf, z_sb, oidx_ptr, orow, mrow, s, ms, ACT: tl.constexpr, HAS_OIDX: tl.constexpr):
        # dL/dz for rows orow (block order) and samples s: dL/dh * act'(h)
        if HAS_OIDX:
            orow = tl.load(oidx_ptr + orow, mask=mrow, other=0)
        mask = mrow[:, None] & ms[None, :]
        off = orow[:, None] * z_sf + s[None, :] * z_sb
        g = tl.load(gh_ptr + off, mask=mask, other=0.0)
        if ACT != 0:
            g = _act_grad(g, tl.load(h_ptr + off, mask=mask, other=0.0), ACT)
        return g

    @triton.jit
    def _bwd_input(gh_ptr, h_ptr, z_sf, z_sb, oidx_ptr, w_ptr, gather_ptr, gin_ptr, gin_sf, gin_sb,
                   B, BM, BN, K_TILES,
                   ACT: tl.constexpr, HAS_OIDX: tl.constexpr, USE_DOT: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr):
        pid_b = tl.program_id(0)
        pid_g = tl.program_id(1)
        blk = pid_g // K_TILES
        kk = (pid_g % K_TILES) * BLOCK_K + tl.arange(0, BLOCK_K)
        mk = kk < BN
        s = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
        ms = s < B
        acc = tl.zeros((BLOCK_K, BLOCK_B), dtype=w_ptr.dtype.element_ty)
        for i0 in range(0, BM, BLOCK_M):
            rows = i0 + tl.arange(0, BLOCK_M)
            mrow = rows < BM
            dz = _dz(gh_ptr, h_ptr, z_sf, z_sb, oidx_ptr, blk * BM + rows, mrow, s, ms, ACT,
                     HAS_OIDX)
            wt = tl.load(w_ptr + (blk * BM + rows[None, :]) * BN + kk[:, None], mask=mk[:, None] & mrow[None, :],
                         other=0.0)  # (BLOCK_K, BLOCK_M): the block transposed
            if USE_DOT:
                acc = tl.dot(wt, dz, acc, input_precision="ieee")
            else:
                acc += tl.sum(wt[:, :, None] * dz[None, :, :], axis=1)
        idx = tl.load(gather_ptr + blk * BN + kk, mask=mk, other=0)
        tl.store(gin_ptr + idx[:, None] * gin_sf + s[None, :] * gin_sb, acc, mask=mk[:, None] & ms[None, :])

    @triton.jit
    def _bwd_weight(gh_ptr, h_ptr, z_sf, z_sb, oidx_ptr, in_ptr, in_sf, in_sb, gather_ptr, rperm_ptr, gw_ptr, gb_ptr,
                    B, BM, BN, M_TILES,
                    ACT: tl.constexpr, HAS_OIDX: tl.constexpr, HAS_BIAS: tl.constexpr, USE_DOT: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr):
        pid_g = tl.program_id(0)
        pid_k = tl.program_id(1)
        blk = pid_g // M_TILES
        rows = (pid_g % M_TILES) * BLOCK_M + tl.arange(0, BLOCK_M)
        mrow = rows < BM
        kk = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        mk = kk < BN
        idx = tl.load(gather_ptr + blk * BN + kk, mask=mk, other=0)
        acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=gw_ptr.dtype.element_ty)
        gb = tl.zeros((BLOCK_M,), dtype=gw_ptr.dtype.element_ty)
        for s0 in range(0, B, BLOCK_B):
            s = (s0 + tl.arange(0, BLOCK_B)).to(tl.int64)
            ms = s < B
            dz = _dz(gh_ptr, h_ptr, z_sf, z_sb, oidx_ptr, blk * BM + rows, mrow, s, ms, ACT,
                     HAS_OIDX)
            xin = tl.load(in_ptr + idx[None, :] * in_sf + s[:, None] * in_sb, mask=ms[:, None] & mk[None, :],
                          other=0.0)  # (BLOCK_B, BLOCK_K)
            if USE_DOT:
                acc = tl.dot(dz, xin, acc, input_precision="ieee")
            else:
                acc += tl.sum(dz[:, :, None] * xin[None, :, :], axis=1)
            if HAS_BIAS:
                gb += tl.sum(dz, axis=1)
        tl.store(gw_ptr + (blk * BM + rows[:, None]) * BN + kk[None, :], acc, mask=mrow[:, None] & mk[None, :])
        if HAS_BIAS:  # the first column tile writes the bias gradient
            mb = mrow & (pid_k == 0)
            bidx = tl.load(rperm_ptr + blk * BM + rows, mask=mb, other=0)
            tl.store(gb_ptr + bidx, gb, mask=mb)

    return SimpleNamespace(fwd=_fwd, bwd_input=_bwd_input, bwd_weight=_bwd_weight, next_pow2=triton.next_power_of_2,
                           cdiv=triton.cdiv)


_TRITON = TritonKernels(_define_kernels)


def _kernels() -> SimpleNamespace:
    return _TRITON.require()


def _tiles(k: SimpleNamespace, bm: int, bn: int, dtype: torch.dtype) -> dict[str, Any]:
    """Tile sizes: ``tl.dot`` (every dim >= 16) for float32 blocks of at least 16×16, else broadcast-sum tiles
    of at most 4096 products per step."""
    if dtype == torch.float32 and bm >= 16 and bn >= 16:
        return {"USE_DOT": True, "BLOCK_M": min(64, k.next_pow2(bm)), "BLOCK_K": min(32, k.next_pow2(bn)),
                "BLOCK_B": 64}
    block_m, block_k = min(16, k.next_pow2(bm)), min(16, k.next_pow2(bn))
    return {"USE_DOT": False, "BLOCK_M": block_m, "BLOCK_K": block_k,
            "BLOCK_B": max(1, min(128, 4096 // (block_m * block_k)))}


def _chain_forward(x: Tensor, blocks: Sequence[Tensor], biases: Sequence[Tensor | None], gathers: Sequence[Tensor],
                   row_perms: Sequence[Tensor], codes: Sequence[int], save: bool) -> tuple[Tensor, list[Tensor]]:
    """``(y, outputs)``: ``y`` ``(B, m_{L-1})`` and, if ``save``, every layer's output (the last is ``y``)."""
    k = _kernels()
    batch, depth = x.shape[0], len(blocks)
    widths = [b.shape[0] * b.shape[1] for b in blocks]
    y = x.new_empty((batch, widths[-1]))
    if save:  # one allocation for the hidden outputs, feature-major, in block order
        flat = x.new_empty(sum(widths[:-1]) * batch)
        offsets = [sum(widths[:i]) * batch for i in range(depth)]
        hidden = [flat[o:o + w * batch].view(w, batch) for o, w in zip(offsets, widths[:-1], strict=False)]
    else:  # ping-pong
        pool = [x.new_empty(max(widths[:-1], default=0) * batch) for _ in range(min(2, depth - 1))]
        hidden = [pool[i % 2][:w * batch].view(w, batch) for i, w in enumerate(widths[:-1])]
    src, src_sf, src_sb = x, x.stride(1), x.stride(0)
    for layer in range(depth):
        g, bm, bn = blocks[layer].shape
        last = layer == depth - 1
        out, out_sf, out_sb = (y, 1, widths[-1]) if last else (hidden[layer], batch, 1)
        tiles = _tiles(k, bm, bn, x.dtype)
        m_tiles = k.cdiv(bm, tiles["BLOCK_M"])
        if batch:
            bias = biases[layer]
            k.fwd[(k.cdiv(batch, tiles["BLOCK_B"]), g * m_tiles)](
                src, src_sf, src_sb, gathers[layer], blocks[layer], blocks[layer] if bias is None else bias,
                row_perms[layer], out, out_sf, out_sb, row_perms[layer], batch, bm, bn, m_tiles,
                ACT=codes[layer], HAS_BIAS=bias is not None, HAS_OIDX=last, **tiles)
        src, src_sf, src_sb = out, out_sf, out_sb
    return y, [*hidden, y] if save else []


def _chain_backward(grad_y: Tensor, x: Tensor, outputs: Sequence[Tensor], blocks: Sequence[Tensor],
                    biases: Sequence[Tensor | None], gathers: Sequence[Tensor], row_perms: Sequence[Tensor],
                    codes: Sequence[int], need_x: bool, need_params: Sequence[bool]) -> list[Tensor | None]:
    """``[grad_x, grad_blocks_0, grad_bias_0, …]`` (``None`` where not needed)."""
    k = _kernels()
    batch, depth = x.shape[0], len(blocks)
    grads: list[Tensor | None] = [None] * (1 + 2 * depth)
    gh, z_sf, z_sb, oidx = grad_y.contiguous(), 1, outputs[-1].shape[1], row_perms[-1]
    for layer in reversed(range(depth)):
        g, bm, bn = blocks[layer].shape
        tiles = _tiles(k, bm, bn, x.dtype)
        m_tiles, k_tiles = k.cdiv(bm, tiles["BLOCK_M"]), k.cdiv(bn, tiles["BLOCK_K"])
        h, has_oidx = outputs[layer], layer == depth - 1
        src, src_sf, src_sb = (x, x.stride(1), x.stride(0)) if layer == 0 else (outputs[layer - 1], batch, 1)
        bias = biases[layer]
        if need_params[2 * layer] or (bias is not None and need_params[2 * layer + 1]):
            gw = torch.empty_like(blocks[layer])
            gb = None if bias is None else torch.empty_like(bias)
            k.bwd_weight[(g * m_tiles, k_tiles)](
                gh, h, z_sf, z_sb, oidx, src, src_sf, src_sb, gathers[layer], row_perms[layer], gw,
                gw if gb is None else gb, batch, bm, bn, m_tiles,
                ACT=codes[layer], HAS_OIDX=has_oidx, HAS_BIAS=gb is not None, **tiles)
            grads[1 + 2 * layer] = gw if need_params[2 * layer] else None
            grads[2 + 2 * layer] = gb if bias is not None and need_params[2 * layer + 1] else None
        if layer == 0 and not need_x:
            break
        if layer == 0:
            gin, gin_sf, gin_sb = x.new_empty(x.shape), 1, x.shape[1]
        else:
            gin, gin_sf, gin_sb = x.new_empty((outputs[layer - 1].shape[0], batch)), batch, 1
        if batch:
            k.bwd_input[(k.cdiv(batch, tiles["BLOCK_B"]), g * k_tiles)](
                gh, h, z_sf, z_sb, oidx, blocks[layer], gathers[layer], gin, gin_sf, gin_sb, batch, bm, bn, k_tiles,
                ACT=codes[layer], HAS_OIDX=has_oidx, **tiles)
        gh, z_sf, z_sb, oidx = gin, batch, 1, row_perms[layer]  # oidx unused from here (HAS_OIDX=False)
        if layer == 0:
            grads[0] = gin
    return grads


def _check(x: Tensor, params: Sequence[Tensor | None]) -> None:
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x: the Triton chain kernel takes float32 or float64, got {x.dtype}")
    for i, p in enumerate(params):
        if p is not None and (p.dtype != x.dtype or p.device != x.device):
            raise TypeError(f"params[{i}]: expected {x.dtype} on {x.device} like x, got {p.dtype} on {p.device}")


class TritonChainFunction(torch.autograd.Function):
    """``y = chain(x)`` for blocked layers through the Triton kernels (one launch per layer forward, two backward).

    ``apply(x, activations, gathers, row_perms, final_inverse, blocks_0, bias_0, blocks_1, bias_1, …)``, exactly
    as :class:`sao.nn._chain_kernel.SparseChainFunction` (``final_inverse`` is accepted for that symmetry; the
    last layer scatters through ``row_perms[-1]``, its inverse). ``x``: ``(B, n_0)``, float32 or float64, on a
    CUDA device (or the CPU under ``TRITON_INTERPRET=1``); ``blocks_l`` contiguous. Gradients: ``x``, every
    ``blocks_l`` and ``bias_l`` (output order). Twice differentiable, as the CPU one (a backward under
    ``create_graph=True`` runs :func:`~sao.nn._chain_kernel.chain_backward_differentiable`).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, activations: tuple[str, ...], gathers: Sequence[Tensor],
                row_perms: Sequence[Tensor], final_inverse: Tensor, *params: Tensor | None) -> Tensor:
        _check(x, params)
        blocks, biases = [p.contiguous() for p in params[0::2]], list(params[1::2])
        codes = _codes(activations)
        with _device_guard(x):
            y, outputs = _chain_forward(x, blocks, biases, gathers, row_perms, codes, save=True)
        ctx.save_for_backward(x, *outputs, *blocks, *[b for b in biases if b is not None])  # outputs[-1] is y
        ctx.meta = (len(blocks), [b is not None for b in biases], list(gathers), list(row_perms), codes, final_inverse)
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        depth, has_bias, gathers, row_perms, codes, final_inverse = ctx.meta
        x, *rest = ctx.saved_tensors
        outputs, blocks, it = rest[:depth], rest[depth:2 * depth], iter(rest[2 * depth:])
        biases = [next(it) if has else None for has in has_bias]
        # create_graph=True (the backward itself must be differentiable), or vmap-batched gradients
        if torch.is_grad_enabled() or not kernel_readable(grad_y):
            params = [p for pair in zip(blocks, biases, strict=True) for p in pair]
            grads = chain_backward_differentiable(grad_y, x, params, (gathers, row_perms, final_inverse),
                                                  _names(codes), ctx.needs_input_grad)
            return (grads[0], None, None, None, None, *grads[1:])
        with _device_guard(x):
            grads = _chain_backward(grad_y, x, outputs, blocks, biases, gathers, row_perms, codes,
                                    ctx.needs_input_grad[0], ctx.needs_input_grad[5:])
        return (grads[0], None, None, None, None, *grads[1:])


def _device_guard(x: Tensor) -> Any:
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def sparse_chain_triton(x: Tensor, layers: Sequence[Any], activations: Sequence[str],
                        indices: tuple[list[Tensor], list[Tensor], Tensor] | None = None) -> Tensor:
    """``act_{L-1}(layers[L-1](… act_0(layers[0](x)) …))`` through the Triton kernels.

    The GPU counterpart of :func:`sao.nn._chain_kernel.sparse_chain`, with the same arguments.

    Args:
        x: ``(*, layers[0].in_features)``, float32 or float64, on CUDA (or the CPU under ``TRITON_INTERPRET=1``).
        layers: blocked :class:`~sao.nn.SparseLinear` layers, chained.
        activations: one name per layer: ``"identity"``, ``"tanh"`` or ``"relu"``.
        indices: :func:`chain_indices` of ``layers`` (computed if not given).

    Raises:
        ValueError: for a wrong number of activations or an unsupported one.
        TypeError: for a dtype other than float32/float64, or parameters of another dtype or device.
        RuntimeError: if triton cannot be imported (check :func:`triton_chain_available` first).

    Example:
        >>> from sao.nn import SparseLinear
        >>> layers = [SparseLinear(16, 16, degree=4, device="cuda") for _ in range(3)]  # doctest: +SKIP
        >>> y = sparse_chain_triton(torch.randn(8, 16, device="cuda"), layers, ["tanh"] * 3)  # doctest: +SKIP
    """
    if len(activations) != len(layers):
        raise ValueError(f"activations: give one per layer ({len(layers)}), got {len(activations)}")
    gathers, row_perms, final_inverse = indices if indices is not None else chain_indices(layers)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    params = chain_params(layers)
    if torch.is_grad_enabled() and any(p is not None and p.requires_grad for p in [x, *params]):
        y = TritonChainFunction.apply(x2, tuple(activations), gathers, row_perms, final_inverse, *params)
    else:  # nothing to differentiate: two ping-pong buffers, nothing saved
        _check(x2, params)
        blocks = [p.detach().contiguous() for p in params[0::2]]
        biases = [None if b is None else b.detach() for b in params[1::2]]
        with _device_guard(x2):
            y = _chain_forward(x2, blocks, biases, gathers, row_perms, _codes(activations), save=False)[0]
    return y.view(*lead, y.shape[-1])


class _TritonChain(ChainKernel):
    """The Triton chain kernels, on CUDA."""

    def unavailable(self, device: torch.device) -> str | None:
        return None if triton_chain_available(device) else "triton is not available"

    def run(self, x: Tensor, layers: Sequence[Any], activations: Sequence[str],
            indices: tuple[list[Tensor], list[Tensor], Tensor] | None = None) -> Tensor:
        return sparse_chain_triton(x, layers, activations, indices)


CHAIN_KERNELS.register("cuda", _TritonChain())
