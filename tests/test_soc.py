"""``SOCConv2d``: the skew orthogonal convolution (Singla & Feizi, ICML 2021; ``docs/orthogonal-conv.md`` §4).

The layer computes ``P_out · S_T · P_in`` with ``S_T = Σ_{i≤T} A_nⁱ/i!`` the truncated exponential
of a skew-symmetric zero-padded convolution ``A_n``. ``exp(A_n)`` is orthogonal and
``‖S_T − exp(A_n)‖ ≤ tail(a, T) = Σ_{i>T} aⁱ/i!`` with ``a = ‖A_n‖₂``, so by Weyl's inequality
every singular value of the layer lies within ``tail(a, T)`` of 1. The tests measure ``a`` from
the explicit Jacobian of one convolution and check that bound on the explicit Jacobian of the
whole layer (float64).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import gen
from sao.nn import SOCConv2d
from sao.nn.soc import _reshapes, skew_kernel
from sao.spectral import operator_singular_values

F64 = torch.float64
ROUNDING = 1e-13  # float64 rounding over a dozen convolutions on tiny inputs


def tail(a: float, terms: int) -> float:
    """``Σ_{i>T} aⁱ/i!``, summed directly (no cancellation)."""
    return sum(a**i / math.factorial(i) for i in range(terms + 1, terms + 40))


def soc(c_in: int, c_out: int, stride: int = 1, kernel_size: int = 3, seed: int = 0, **kw: object) -> SOCConv2d:
    return SOCConv2d(c_in, c_out, kernel_size, stride, generator=gen(seed), dtype=F64, **kw)


def skew_norm(layer: SOCConv2d, side: int) -> float:
    """``‖A_n‖₂`` of the zero-padded convolution on ``C x side x side`` (explicit Jacobian)."""
    kernel = layer.skew_weight().detach()
    return operator_singular_values(lambda z: F.conv2d(z, kernel, padding=layer.kernel_size // 2),
                                    (layer.channels, side, side)).max().item()


def orthogonality_error(layer: SOCConv2d, side: int, terms: int) -> tuple[float, int]:
    """``max |σ_i − 1|`` over the layer's singular values with ``T = terms`` (eval mode), and their count."""
    layer.eval()
    layer.terms_eval = terms
    s = operator_singular_values(layer, (layer.in_channels, side, side))
    return (s - 1).abs().max().item(), s.numel()


# --------------------------------------------------------------------------- orthogonality

# (c_in, c_out, stride, kernel, side); C = max(c_out, c_in · s²)
CASES = [
    pytest.param(4, 4, 1, 3, 6, id="4to4-s1"),
    pytest.param(2, 6, 1, 3, 6, id="2to6-pad"),
    pytest.param(6, 2, 1, 3, 6, id="6to2-crop"),
    pytest.param(2, 4, 2, 3, 6, id="2to4-s2"),
    pytest.param(4, 4, 2, 3, 6, id="4to4-s2-crop"),
    pytest.param(3, 5, 1, 5, 5, id="3to5-k5"),
    pytest.param(4, 4, 1, 1, 4, id="k1"),
]


@pytest.mark.parametrize("c_in, c_out, stride, k, side", CASES)
def test_soc_is_orthogonal_up_to_truncation(c_in: int, c_out: int, stride: int, k: int, side: int) -> None:
    layer = soc(c_in, c_out, stride, k)
    assert layer.channels == max(c_out, c_in * stride**2)
    a = skew_norm(layer, side // stride)
    assert a < 1, "the certified scaling keeps the skew operator's norm below 1"
    errors = {}
    for terms in (5, 12):
        errors[terms], count = orthogonality_error(layer, side, terms)
        assert count == min(c_in * side**2, c_out * (side // stride) ** 2)
        assert errors[terms] <= tail(a, terms) + ROUNDING, (terms, a, errors[terms], tail(a, terms))
    assert errors[12] < errors[5] / 1e6
    assert errors[12] < 1e-12


def test_soc_measured_errors_for_the_default_layer() -> None:
    """The numbers quoted in the docs: 4 channels on 6x6 at init, ``‖A_n‖ ≈ 0.44``."""
    layer = soc(4, 4)
    a = skew_norm(layer, 6)
    err5, _ = orthogonality_error(layer, 6, 5)
    err12, _ = orthogonality_error(layer, 6, 12)
    assert 0.2 < a <= 0.7 * 1.001
    assert 1e-7 < err5 < 1e-4 and err12 < 1e-13


def test_soc_upstream_bound_is_larger_but_still_within_the_taylor_bound() -> None:
    certified, upstream = soc(4, 4), soc(4, 4, bound="upstream")
    torch.testing.assert_close(upstream.weight, certified.weight)
    torch.testing.assert_close(certified.sigma, 3 * upstream.sigma, atol=0, rtol=1e-12)
    a = skew_norm(upstream, 6)
    assert a > 1, "upstream's sigma (no sqrt(hw)) is not a bound: measured ~1.3 at init"
    for terms in (5, 12):
        err, _ = orthogonality_error(upstream, 6, terms)
        assert err <= tail(a, terms) + ROUNDING


@settings(max_examples=15, deadline=None)
@given(c_in=st.integers(1, 4), c_out=st.integers(1, 4), stride=st.sampled_from([1, 2]),
       k=st.sampled_from([1, 3]), cells=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_soc_orthogonal_on_random_shapes(c_in: int, c_out: int, stride: int, k: int, cells: int, seed: int) -> None:
    layer = soc(c_in, c_out, stride, k, seed=seed)
    side = stride * cells
    a = skew_norm(layer, cells)
    assert a < 1
    err, count = orthogonality_error(layer, side, 5)
    assert count == min(c_in * side**2, c_out * cells**2)
    assert err <= tail(a, 5) + ROUNDING


# --------------------------------------------------------------------------- the skew kernel and sigma

@pytest.mark.parametrize("k", [1, 3, 5])
def test_skew_kernel_gives_a_skew_symmetric_convolution(k: int) -> None:
    m = torch.randn(5, 5, k, k, generator=gen(1), dtype=F64)
    a = skew_kernel(m)
    torch.testing.assert_close(a, -a.transpose(0, 1).flip(2, 3))
    x, y = torch.randn(2, 1, 5, 7, 6, generator=gen(2), dtype=F64)
    conv = lambda z: F.conv2d(z, a, padding=k // 2)  # noqa: E731
    lhs, rhs = (conv(x) * y).sum(), -(x * conv(y)).sum()
    torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=0)
    assert (conv(x) * x).sum().abs() < 1e-12, "⟨Ax, x⟩ = 0 for a skew operator"


def test_layer_kernel_is_skew_and_scaled() -> None:
    layer = soc(3, 4)
    kernel = layer.skew_weight()
    torch.testing.assert_close(kernel, -kernel.transpose(0, 1).flip(2, 3))
    torch.testing.assert_close(kernel, skew_kernel(layer.weight) * 0.7 / layer.sigma)


def test_sigma_is_the_fantastic_four_bound() -> None:
    layer = soc(4, 4)
    exact = min(torch.linalg.matrix_norm(r, 2) for r in _reshapes(skew_kernel(layer.weight).detach()))
    torch.testing.assert_close(layer.sigma, 3 * exact, atol=0, rtol=1e-3)
    assert layer.sigma <= 3 * exact * (1 + 1e-12), "power iteration approaches the norm from below"


def test_weight_is_drawn_with_variance_one_over_c() -> None:
    layer = SOCConv2d(64, 64, generator=gen(0))
    assert layer.weight.shape == (64, 64, 3, 3)
    assert layer.weight.std().item() == pytest.approx(1 / 8, rel=0.03)
    assert layer.weight.mean().abs().item() < 0.01


# --------------------------------------------------------------------------- modes, gradients, state

def test_terms_follow_the_mode_and_sigma_updates_only_in_training() -> None:
    layer = soc(4, 4)
    x = torch.randn(2, 4, 6, 6, generator=gen(3), dtype=F64)
    assert layer.training and layer.terms == 5
    layer.eval()
    assert layer.terms == 12
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    y_eval = layer(x)
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key
    layer.train()
    y_train = layer(x)
    a = skew_norm(layer, 6)
    # both are within the truncation error of the same orthogonal map (sigma moved by ~1e-4 at most)
    assert (y_train - y_eval).norm() / x.norm() < tail(a, 5) + 1e-3


def test_gradients_flow_to_weight_bias_and_input() -> None:
    layer = soc(4, 8, stride=2)
    x = torch.randn(2, 4, 6, 6, generator=gen(4), dtype=F64, requires_grad=True)
    layer(x).square().sum().backward()
    for name, grad in (("weight", layer.weight.grad), ("bias", layer.bias.grad), ("input", x.grad)):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert not layer.sigma.requires_grad


def test_generator_makes_layers_reproducible_and_state_dict_round_trips() -> None:
    a, b = soc(4, 4, seed=7), soc(4, 4, seed=7)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.sigma, b.sigma)
    assert not torch.equal(a.weight, soc(4, 4, seed=8).weight)
    c = soc(4, 4, seed=9)
    c.load_state_dict(a.state_dict())
    x = torch.randn(1, 4, 6, 6, generator=gen(5), dtype=F64)
    torch.testing.assert_close(c.eval()(x), a.eval()(x), atol=0, rtol=0)


def test_bias_has_out_channels_and_starts_at_zero() -> None:
    layer = soc(6, 2)
    assert layer.bias.shape == (2,) and not layer.bias.any()
    assert SOCConv2d(2, 2, bias=False).bias is None


def test_extra_repr() -> None:
    text = repr(SOCConv2d(4, 8, stride=2))
    for part in ("4, 8", "kernel_size=3", "stride=2", "terms_train=5", "terms_eval=12", "inner_channels=16",
                 "bound='certified'"):
        assert part in text


# --------------------------------------------------------------------------- errors

def test_soc_rejects_non_integer_terms() -> None:
    with pytest.raises(TypeError, match="terms_eval must be an integer"):
        SOCConv2d(4, 4, terms_eval=1.5)


@pytest.mark.parametrize("kwargs, match", [
    ({"kernel_size": 2}, "odd kernel_size"),
    ({"kernel_size": 0}, "kernel_size must be an integer >= 1"),
    ({"stride": 0}, "stride must be an integer >= 1"),
    ({"terms_train": 0}, "terms_train"),
    ({"correction": 1.5}, "correction"),
    ({"correction": 0}, "correction"),
    ({"bound": "exact"}, "choose from certified, upstream"),
])
def test_soc_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SOCConv2d(4, 4, **kwargs)


def test_soc_rejects_a_non_generator() -> None:
    with pytest.raises(TypeError, match="generator"):
        SOCConv2d(4, 4, generator=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape, match", [
    ((1, 3, 6, 6), r"expects input of shape \(B, 4, H, W\)"),
    ((3, 6, 6), r"expects input"),
    ((6, 6), r"expects input"),
    ((1, 4, 5, 6), "divisible by 2"),
    ((4, 5, 6), "divisible by 2"),
])
def test_soc_rejects_wrong_input(shape: tuple[int, ...], match: str) -> None:
    layer = SOCConv2d(4, 4, stride=2)
    with pytest.raises(ValueError, match=match):
        layer(torch.zeros(shape))


def test_update_sigma_rejects_zero_iterations() -> None:
    with pytest.raises(ValueError, match="iters"):
        SOCConv2d(2, 2).update_sigma(0)
