"""Convolution initializers: Delta-orthogonal, SAO-Delta, ECO, SAO-ECO, and the spectral checker.

Orthogonality is checked as in ``docs/orthogonal-conv.md`` §1: singular values of the circular
convolution by the FFT method (:func:`sao.spectral.conv_singular_values`), which is itself
validated against the explicit Jacobian of ``F.conv2d`` with circular padding.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from helpers import gen
from sao.init import delta_orthogonal_, eco_, sao_delta_, sao_eco_
from sao.init.eco import _eco_kernels, eco_frequency_index
from sao.spectral import conv_singular_values, operator_singular_values
from sao.topology import ramanujan

ATOL = 1e-6
CHANNELS = [(8, 8), (4, 8), (8, 4)]


def assert_all_equal(values: Tensor, target: float, count: int) -> None:
    assert values.numel() == count
    torch.testing.assert_close(values, torch.full_like(values, target), atol=ATOL, rtol=0)


def kernel_support(w: Tensor) -> Tensor:
    """Bool ``(c_out, c_in)``: which kernels have any non-zero tap."""
    return (w != 0).any(dim=3).any(dim=2)


def circular_conv(w: Tensor, dilation: int) -> Callable[[Tensor], Tensor]:
    """``x ↦ F.conv2d(circular_pad(x), w, dilation)``: a circular convolution with 'same' output size."""
    total_h, total_w = dilation * (w.shape[2] - 1), dilation * (w.shape[3] - 1)
    pad = (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2)
    return lambda x: F.conv2d(F.pad(x, pad, mode="circular"), w, dilation=dilation)


# --------------------------------------------------------------------------- the checker itself

@pytest.mark.parametrize("c_out, c_in, k, n, dilation", [
    (3, 3, 3, 5, 1), (3, 2, 3, 6, 1), (2, 3, 3, 6, 2), (2, 2, 2, 6, 3), (3, 2, 1, 4, 1), (2, 3, 5, 7, 1),
])
def test_conv_singular_values_match_explicit_jacobian(c_out: int, c_in: int, k: int, n: int, dilation: int) -> None:
    w = torch.randn(c_out, c_in, k, k, generator=gen(1), dtype=torch.float64)
    fft = conv_singular_values(w, n, dilation=dilation)
    jac = operator_singular_values(circular_conv(w, dilation), (c_in, n, n))
    assert fft.dtype == jac.dtype == torch.float64
    assert fft.numel() == jac.numel() == n * n * min(c_out, c_in)
    torch.testing.assert_close(fft.sort().values, jac.sort().values, atol=1e-10, rtol=0)


def test_conv_singular_values_sums_colliding_taps() -> None:
    # Dilation 2 on a 2x2 image folds taps 0 and 2 onto the same position: 1 + 1 = 2 everywhere in frequency 0.
    w = torch.zeros(1, 1, 3, 1, dtype=torch.float64)
    w[0, 0, 0, 0] = w[0, 0, 2, 0] = 1.0
    jac = operator_singular_values(lambda x: F.conv2d(F.pad(x, (0, 0, 2, 2), mode="circular"), w, dilation=2)[
        :, :, :2], (1, 2, 2))
    torch.testing.assert_close(conv_singular_values(w, 2, dilation=2).sort().values, jac.sort().values, atol=1e-12,
                               rtol=0)


@pytest.mark.parametrize("weight, size, dilation, match", [
    (torch.zeros(2, 2, 3), 4, 1, "4-D"),
    (torch.zeros(2, 2, 3, 3), 0, 1, "input_size"),
    (torch.zeros(2, 2, 3, 3), 4, 0, "dilation"),
])
def test_conv_singular_values_rejects_bad_input(weight: Tensor, size: object, dilation: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        conv_singular_values(weight, size, dilation)


@pytest.mark.parametrize("weight, size, match", [
    (torch.zeros(2, 2, 3, 3, dtype=torch.complex64), 4, "real"),
    (torch.zeros(2, 2, 3, 3), 4.0, "input_size"),
])
def test_conv_singular_values_rejects_wrong_types(weight: Tensor, size: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        conv_singular_values(weight, size)


def test_operator_singular_values_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="callable"):
        operator_singular_values(3, (1, 2, 2))
    with pytest.raises(ValueError, match="input_shape"):
        operator_singular_values(lambda x: x, (1, 0, 2))
    with pytest.raises(ValueError, match="dtype"):
        operator_singular_values(lambda x: x, (1, 2, 2), dtype=torch.int64)
    with pytest.raises(TypeError, match="single tensor"):
        operator_singular_values(lambda x: (x, x), (1, 2, 2))


# --------------------------------------------------------------------------- Delta and SAO-Delta

@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("c_out, c_in", CHANNELS)
@pytest.mark.parametrize("gain", [1.0, 1.3])
def test_delta_orthogonal_is_orthogonal(c_out: int, c_in: int, k: int, gain: float) -> None:
    w = delta_orthogonal_(torch.empty(c_out, c_in, k, k, dtype=torch.float64), gain=gain, generator=gen())
    assert_all_equal(conv_singular_values(w, 6), gain, 36 * min(c_out, c_in))
    off_centre = torch.ones(k, k, dtype=torch.bool)
    off_centre[k // 2, k // 2] = False
    assert (w[:, :, off_centre] == 0).all()


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("c_out, c_in, degree", [(8, 8, 2), (8, 8, 4), (4, 8, 4), (8, 4, 2), (12, 6, 4)])
def test_sao_delta_is_orthogonal_with_kernel_mask(c_out: int, c_in: int, degree: int, k: int) -> None:
    topo = ramanujan(c_out, c_in, degree=degree, generator=gen(2))
    w = sao_delta_(torch.empty(c_out, c_in, k, k, dtype=torch.float64), gain=0.9, topology=topo, generator=gen())
    assert_all_equal(conv_singular_values(w, 5), 0.9, 25 * min(c_out, c_in))
    assert torch.equal(kernel_support(w), topo.mask())
    assert torch.equal(w[:, :, k // 2, k // 2] != 0, topo.mask())
    w[:, :, k // 2, k // 2] = 0
    assert (w == 0).all()


@pytest.mark.parametrize("init", ["delta", "sao_delta"])
@pytest.mark.parametrize("c_out, c_in", [(8, 8), (4, 8), (8, 4)])
def test_relu_variant_acts_as_orthogonal_chain(init: str, c_out: int, c_in: int) -> None:
    w = torch.empty(c_out, c_in, 3, 3, dtype=torch.float64)
    if init == "delta":
        delta_orthogonal_(w, activation="relu", generator=gen())
    else:
        sao_delta_(w, degree=4, activation="relu", generator=gen())
    centre = w[:, :, 1, 1]
    h0 = centre[: c_out // 2, : c_in // 2]
    torch.testing.assert_close(centre, torch.cat([torch.cat([h0, -h0], 1), torch.cat([-h0, h0], 1)], 0), atol=0,
                               rtol=0)
    u = torch.randn(2, c_in // 2, 5, 5, generator=gen(3), dtype=torch.float64)
    out = F.relu(F.conv2d(torch.cat([F.relu(u), F.relu(-u)], 1), w, padding=1))
    h0u = torch.einsum("oi,bihw->bohw", h0, u)
    torch.testing.assert_close(out, torch.cat([F.relu(h0u), F.relu(-h0u)], 1), atol=1e-12, rtol=0)


def test_relu_variant_needs_even_channels() -> None:
    with pytest.raises(ValueError, match="even channel counts"):
        delta_orthogonal_(torch.empty(5, 4, 3, 3), activation="relu")
    with pytest.raises(ValueError, match="even sizes"):
        sao_delta_(torch.empty(5, 5, 3, 3), degree=5, activation="relu")


# --------------------------------------------------------------------------- ECO and SAO-ECO

@pytest.mark.parametrize("k, expected", [(1, 1), (2, 4), (3, 5), (4, 10), (5, 13), (6, 20), (7, 25)])
def test_eco_frequency_index(k: int, expected: int) -> None:
    index = eco_frequency_index(k)
    assert index.shape == (k, k) and index.dtype == torch.long
    assert expected == ((k * k + 1) // 2 if k % 2 else k * k // 2 + 2)
    assert index.unique().tolist() == list(range(expected))
    neg = (-torch.arange(k)) % k
    assert torch.equal(index, index[neg][:, neg])  # conjugate pairs share a matrix
    pair = torch.stack(torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij"), -1)
    for i in range(expected):  # ... and nothing else does: each matrix is one conjugate orbit
        members = {tuple(p) for p in pair[index == i].tolist()}
        a, b = next(iter(members))
        assert members == {(a, b), ((-a) % k, (-b) % k)}


def test_eco_frequency_index_rejects_bad_k() -> None:
    for k in (0, -1):
        with pytest.raises(ValueError, match=r"k \(kernel side\) must be an integer >= 1"):
            eco_frequency_index(k)
    for k in (2.0, True):
        with pytest.raises(TypeError, match=r"k \(kernel side\) must be an integer"):
            eco_frequency_index(k)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("c_out, c_in", CHANNELS)
def test_eco_is_orthogonal_with_dilation(c_out: int, c_in: int, k: int, m: int) -> None:
    n = m * k
    w = eco_(torch.empty(c_out, c_in, k, k, dtype=torch.float64), generator=gen())
    assert_all_equal(conv_singular_values(w, n, dilation=m), 1.0, n * n * min(c_out, c_in))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("c_out, c_in, degree", [(8, 8, 2), (8, 8, 4), (4, 8, 4), (8, 4, 2), (12, 6, 4)])
def test_sao_eco_is_orthogonal_and_kernel_sparse(c_out: int, c_in: int, degree: int, k: int, m: int) -> None:
    n = m * k
    topo = ramanujan(c_out, c_in, degree=degree, generator=gen(2))
    w = sao_eco_(torch.empty(c_out, c_in, k, k, dtype=torch.float64), topology=topo, generator=gen())
    assert_all_equal(conv_singular_values(w, n, dilation=m), 1.0, n * n * min(c_out, c_in))
    mask = topo.mask()
    assert (w[~mask] == 0).all()  # off the support: exactly zero at every tap
    assert (w[mask].abs().sum(-1).sum(-1) > 0).all()  # kept kernels are non-zero
    assert torch.equal(kernel_support(w), mask)
    absent = int((~kernel_support(w)).sum())
    assert absent == c_out * c_in - c_out * c_in // topo.num_blocks
    assert absent / (c_out * c_in) == pytest.approx(topo.sparsity, abs=1e-12)


@pytest.mark.parametrize("init", [eco_, sao_eco_])
@pytest.mark.parametrize("k", [2, 3])
def test_eco_through_real_circular_conv(init: object, k: int) -> None:
    kwargs = {"degree": 2} if init is sao_eco_ else {}
    w = init(torch.empty(4, 4, k, k, dtype=torch.float64), gain=1.5, **kwargs, generator=gen())
    s = operator_singular_values(circular_conv(w, 2), (4, 2 * k, 2 * k))
    assert_all_equal(s, 1.5, 4 * (2 * k) ** 2)


@pytest.mark.parametrize("init", [eco_, sao_eco_])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_eco_spectrum_is_real_and_conjugate_symmetric(init: object, k: int) -> None:
    kwargs = {"degree": 3} if init is sao_eco_ else {}
    w = init(torch.empty(4, 6, k, k, dtype=torch.float64), **kwargs, generator=gen())
    spectrum = torch.fft.fft2(w, dim=(2, 3))  # (c_out, c_in, a, b): recovers P(a, b)
    assert spectrum.imag.abs().max() < 1e-12
    index = eco_frequency_index(k)
    for i in range(int(index.max()) + 1):
        members = spectrum.real[:, :, index == i]
        torch.testing.assert_close(members, members[..., :1].expand_as(members), atol=1e-12, rtol=0)
        torch.testing.assert_close(members[..., 0] @ members[..., 0].T, torch.eye(4, dtype=torch.float64),
                                   atol=1e-12, rtol=0)


def test_eco_kernels_asserts_real_output() -> None:
    unique = torch.eye(2, dtype=torch.float64).expand(5, 2, 2)
    assert _eco_kernels(unique, 3).dtype == torch.float64
    with pytest.raises(AssertionError, match="imaginary"):
        _eco_kernels(1j * torch.arange(5.0)[:, None, None] * unique, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eco_fills_any_dtype(dtype: torch.dtype) -> None:
    w = sao_eco_(torch.empty(8, 8, 3, 3, dtype=dtype), sparsity=0.5, generator=gen())
    assert w.dtype == dtype
    assert_all_equal(conv_singular_values(w, 9, dilation=3), 1.0, 81 * 8)


def test_sao_eco_rejects_mirrored_topology() -> None:
    topo = ramanujan(8, 8, degree=4, mirrored=True, generator=gen())
    with pytest.raises(ValueError, match="mirrored"):
        sao_eco_(torch.empty(8, 8, 3, 3), topology=topo)


# --------------------------------------------------------------------------- reproducibility and errors

@pytest.mark.parametrize("init, kwargs", [
    (delta_orthogonal_, {}), (delta_orthogonal_, {"activation": "relu"}), (sao_delta_, {"degree": 2}),
    (eco_, {}), (sao_eco_, {"degree": 2}), (sao_eco_, {"sparsity": 0.5}),
])
def test_same_seed_gives_identical_weights(init: object, kwargs: dict) -> None:
    a = init(torch.empty(8, 8, 3, 3), **kwargs, generator=gen(7))
    b = init(torch.empty(8, 8, 3, 3), **kwargs, generator=gen(7))
    c = init(torch.empty(8, 8, 3, 3), **kwargs, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("init", [delta_orthogonal_, sao_delta_, eco_, sao_eco_])
def test_rejects_non_4d_weight(init: object) -> None:
    kwargs = {"degree": 2} if init in (sao_delta_, sao_eco_) else {}
    with pytest.raises(ValueError, match=r"4-D \(c_out, c_in, kh, kw\)"):
        init(torch.empty(8, 8, 3), **kwargs)


@pytest.mark.parametrize("init", [delta_orthogonal_, sao_delta_])
def test_delta_rejects_even_kernel(init: object) -> None:
    kwargs = {"degree": 2} if init is sao_delta_ else {}
    with pytest.raises(ValueError, match="odd kernel sides"):
        init(torch.empty(8, 8, 2, 2), **kwargs)


@pytest.mark.parametrize("init", [eco_, sao_eco_])
@pytest.mark.parametrize("shape", [(8, 8, 3, 2), (8, 8, 1, 3)])
def test_eco_rejects_bad_kernel(init: object, shape: tuple[int, ...]) -> None:
    kwargs = {"degree": 2} if init is sao_eco_ else {}
    with pytest.raises(ValueError, match="square kernel"):
        init(torch.empty(shape), **kwargs)


@pytest.mark.parametrize("init", [sao_delta_, sao_eco_])
@pytest.mark.parametrize("kwargs, match", [
    ({"degree": 3}, r"degree=3 is not valid for a 8x8 layer.*all valid: \[1, 2, 4, 8\]"),
    ({"sparsity": 0.6}, r"sparsity=0.6 is not achievable.*nearest valid: degree=2 .*degree=4"),
    ({}, "exactly one of degree= or sparsity="),
])
def test_sao_conv_rejects_invalid_degree(init: object, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        init(torch.empty(8, 8, 3, 3), **kwargs)


# --------------------------------------------------------------------------- property test

@st.composite
def sao_eco_cases(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    g = draw(st.integers(1, 4))
    bm, bn = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    k, m = draw(st.integers(1, 5)), draw(st.integers(1, 2))
    c_out, c_in = g * bm, g * bn
    return c_out, c_in, max(c_out, c_in) // g, k, m


@settings(max_examples=25, deadline=None, derandomize=True)
@given(sao_eco_cases(), st.integers(0, 2**31 - 1))
def test_sao_eco_orthogonal_property(case: tuple[int, int, int, int, int], seed: int) -> None:
    c_out, c_in, degree, k, m = case
    w = sao_eco_(torch.empty(c_out, c_in, k, k, dtype=torch.float64), degree=degree, generator=gen(seed))
    n = m * k
    assert_all_equal(conv_singular_values(w, n, dilation=m), 1.0, n * n * min(c_out, c_in))
    assert int(kernel_support(w).sum()) == c_out * c_in * degree // max(c_out, c_in)
