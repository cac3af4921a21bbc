"""MaskedLinear / MaskedConv2d: the pruning baselines' layers (a dense weight times a fixed mask, no prune hooks)."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from helpers import gen
from sao.nn import InputShapeError, MaskedConv2d, MaskedLinear


def linear_mask(out: int = 6, inp: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(out, inp, generator=gen(seed)) < 0.5


def masked_linear(bias: bool = True) -> MaskedLinear:
    torch.manual_seed(0)
    return MaskedLinear.from_dense(nn.Linear(8, 6, bias=bias), linear_mask())


CONV_CASES = {
    "plain": {},
    "stride-pad": {"stride": 2, "padding": 1},
    "same-dilated": {"padding": "same", "dilation": 2},
    "circular": {"padding": "same", "dilation": 3, "padding_mode": "circular"},
    "reflect": {"padding": 1, "padding_mode": "reflect"},
    "replicate": {"padding": (1, 2), "padding_mode": "replicate"},
    "groups": {"groups": 2, "padding": 1},
    "no-bias": {"bias": False},
}


def conv_pair(case: str) -> tuple[nn.Conv2d, MaskedConv2d]:
    """A plain conv holding the masked weight, and the masked conv (both computing the same function)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, **CONV_CASES[case])
    mask = torch.rand(conv.weight.shape[:2], generator=gen(1)) < 0.5
    masked = MaskedConv2d.from_dense(copy.deepcopy(conv), mask)
    with torch.no_grad():
        conv.weight.mul_(mask[:, :, None, None])
    return conv, masked


# --------------------------------------------------------------------------- same function and shapes as the twin


@pytest.mark.parametrize("shape", [(8,), (3, 8), (0, 8), (2, 3, 8)])
def test_linear_takes_what_nn_linear_takes(shape: tuple[int, ...]) -> None:
    layer = masked_linear()
    x = torch.randn(shape, generator=gen(2))
    torch.testing.assert_close(layer(x), layer.to_dense()(x), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(7,), (3, 9), (3, 6), ()])
def test_linear_refuses_what_nn_linear_refuses(shape: tuple[int, ...]) -> None:
    layer = masked_linear()
    with pytest.raises(RuntimeError):
        layer.to_dense()(torch.randn(shape))
    with pytest.raises(InputShapeError, match=r"MaskedLinear expects input of shape \(\*, 8\)"):
        layer(torch.randn(shape))


@pytest.mark.parametrize("case", list(CONV_CASES))
@pytest.mark.parametrize("shape", [(2, 4, 9, 9), (4, 9, 9), (0, 4, 9, 9)])
def test_conv_computes_like_nn_conv2d(case: str, shape: tuple[int, ...]) -> None:
    conv, masked = conv_pair(case)
    x = torch.randn(shape, generator=gen(3))
    torch.testing.assert_close(masked(x), conv(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(masked.to_dense()(x), conv(x), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2, 5, 9, 9), (9, 9), (1, 2, 4, 9, 9)])
def test_conv_refuses_what_nn_conv2d_refuses(shape: tuple[int, ...]) -> None:
    conv, masked = conv_pair("plain")
    with pytest.raises(RuntimeError):
        conv(torch.randn(shape))
    with pytest.raises(InputShapeError, match="MaskedConv2d expects input"):
        masked(torch.randn(shape))


def test_conv_constructor_matches_nn_conv2d_and_channels_last() -> None:
    layer = MaskedConv2d(4, 8, (3, 5), stride=2, padding="valid", dilation=(1, 2), groups=2, padding_mode="zeros")
    ref = nn.Conv2d(4, 8, (3, 5), stride=2, padding="valid", dilation=(1, 2), groups=2)
    assert layer.weight_orig.shape == ref.weight.shape and layer.weight_mask.shape == ref.weight.shape
    assert (layer.kernel_size, layer.stride, layer.padding, layer.dilation) == ((3, 5), (2, 2), "valid", (1, 2))
    assert layer.mask.shape == (8, 2) and layer.sparsity == 0.0
    x = torch.randn(2, 4, 11, 11)
    out = layer(x)
    cl = copy.deepcopy(layer).to(memory_format=torch.channels_last)
    torch.testing.assert_close(cl(x.to(memory_format=torch.channels_last)), out, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        MaskedConv2d(4, 6, 3, groups=4)  # nn.Conv2d's own check


# --------------------------------------------------------------------------- state and identity


def test_from_dense_reuses_the_parameters_and_keeps_the_mode() -> None:
    dense = nn.Linear(8, 6).eval()
    layer = MaskedLinear.from_dense(dense, linear_mask())
    assert layer.weight_orig is dense.weight and layer.bias is dense.bias and not layer.training
    conv = nn.Conv2d(4, 6, 3)
    masked = MaskedConv2d.from_dense(conv)
    assert masked.weight_orig is conv.weight and bool(masked.mask.all()) and masked.weight_mask.dtype == torch.float32
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        MaskedLinear.from_dense(nn.modules.linear.NonDynamicallyQuantizableLinear(8, 6))
    with pytest.raises(TypeError, match=r"nn\.Conv2d"):
        MaskedConv2d.from_dense(nn.Linear(8, 6))


def test_mask_buffer_is_full_shape_in_weight_dtype() -> None:
    conv = nn.Conv2d(4, 6, 3, dtype=torch.float64)
    connections = torch.rand(6, 4, generator=gen(0)) < 0.5
    masked = MaskedConv2d.from_dense(conv, connections)
    assert masked.weight_mask.shape == (6, 4, 3, 3) and masked.weight_mask.dtype == torch.float64
    assert torch.equal(masked.mask, connections)
    assert masked.sparsity == pytest.approx(1 - float(connections.double().mean()))
    taps = torch.zeros(6, 4, 3, 3, dtype=torch.bool)
    taps[0, 1, 1, 1] = True  # one tap of one kernel: that connection is present
    assert MaskedConv2d.from_dense(nn.Conv2d(4, 6, 3), taps).mask.sum().item() == 1


def test_bad_masks_are_refused() -> None:
    with pytest.raises(ValueError, match=r"mask must have the weight's shape \(6, 8\)"):
        MaskedLinear(8, 6, mask=torch.ones(8, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="0 and 1"):
        MaskedLinear(8, 6, mask=torch.full((6, 8), 0.5))
    with pytest.raises(TypeError, match="tensor"):
        MaskedLinear(8, 6, mask=[[1] * 8] * 6)


def test_state_dict_keys_are_torch_prunes_and_its_checkpoints_load() -> None:
    cases = [(nn.Linear(8, 6), MaskedLinear(8, 6), torch.randn(2, 8)),
             (nn.Conv2d(4, 6, 3, padding=1), MaskedConv2d(4, 6, 3, padding=1), torch.randn(2, 4, 5, 5))]
    for plain, ours, x in cases:
        mask = torch.rand(plain.weight.shape, generator=gen(4)) < 0.5
        pruned = prune.custom_from_mask(plain, "weight", mask)
        assert list(ours.state_dict()) == list(pruned.state_dict()) == ["bias", "weight_orig", "weight_mask"]
        ours.load_state_dict(pruned.state_dict())
        torch.testing.assert_close(ours(x), pruned(x), rtol=0, atol=0)
        # an optimizer's state saved beside a pruned model resumes on ours (same parameter order)
        opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (pruned, ours)]
        for m, opt in zip((pruned, ours), opts, strict=True):
            m(x).square().sum().backward()
            opt.step()
        opts[1].load_state_dict(copy.deepcopy(opts[0].state_dict()))
        for m, opt in zip((pruned, ours), opts, strict=True):
            opt.zero_grad()
            m(x).square().sum().backward()
            opt.step()
        torch.testing.assert_close(ours.weight_orig, pruned.weight_orig, rtol=0, atol=0)


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_keep_the_function(how: str) -> None:
    model = nn.Sequential(masked_linear(), nn.Tanh(), MaskedLinear(6, 4))
    x = torch.randn(3, 8)
    if how == "deepcopy":
        other = copy.deepcopy(model)
    elif how == "pickle":
        other = pickle.loads(pickle.dumps(model))
    else:
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        other = torch.load(buf, weights_only=False)
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)
    assert other[0].weight_orig is not model[0].weight_orig


def test_masked_weights_get_zero_grad_and_stay_zero_under_sgd() -> None:
    layer = masked_linear()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    off = ~layer.mask
    for step in range(4):
        opt.zero_grad()
        layer(torch.randn(5, 8, generator=gen(step))).square().sum().backward()
        assert bool((layer.weight_orig.grad[off] == 0).all()) and bool(layer.weight_orig.grad[~off].abs().sum() > 0)
        opt.step()
    assert bool((layer.weight[off] == 0).all())


def test_deferred_init_on_meta_then_load() -> None:
    src = masked_linear()
    layer = MaskedLinear(8, 6, device="meta")
    assert "sparsity=?" in repr(layer)
    layer = layer.to_empty(device="cpu")
    layer.reset_parameters()
    layer.load_state_dict(src.state_dict())
    x = torch.randn(2, 8)
    torch.testing.assert_close(layer(x), src(x), rtol=0, atol=0)


def test_reset_parameters_keeps_the_mask_and_repr() -> None:
    layer = masked_linear()
    mask = layer.weight_mask.clone()
    layer.reset_parameters()
    assert torch.equal(layer.weight_mask, mask)
    assert bool((layer.weight_orig.abs() <= 1 / 8**0.5).all())  # nn.Linear's kaiming-uniform bound
    assert repr(layer).startswith("MaskedLinear(in_features=8, out_features=6, bias=True, sparsity=")
    text = repr(MaskedConv2d(4, 6, 3, padding="same", dilation=2, groups=2, bias=False, padding_mode="circular"))
    assert text == ("MaskedConv2d(4, 6, kernel_size=(3, 3), stride=(1, 1), padding='same', dilation=(2, 2), "
                    "groups=2, bias=False, padding_mode='circular', sparsity=0.0000%)")


# --------------------------------------------------------------------------- from_dense refuses prune's layers


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_from_dense_refuses_a_layer_pruned_with_torch_prune(kind: str) -> None:
    """Its ``weight`` is a non-leaf tensor recomputed by a hook; wrapping it would drop the pruning."""
    plain = nn.Linear(8, 6) if kind == "linear" else nn.Conv2d(4, 6, 3)
    cls = MaskedLinear if kind == "linear" else MaskedConv2d
    prune.l1_unstructured(plain, "weight", 0.5)
    with pytest.raises(ValueError, match=rf"pruned with torch\.nn\.utils\.prune.*call prune\.remove\(module, "
                                         rf"'weight'\) first, or load its state_dict into sao\.nn\.{cls.__name__}"):
        cls.from_dense(plain)
    ours = cls(*((8, 6) if kind == "linear" else (4, 6, 3)))
    ours.load_state_dict(plain.state_dict())  # the advice works
    prune.remove(plain, "weight")
    assert torch.equal(cls.from_dense(plain).weight, ours.weight)


# --------------------------------------------------------------------------- deferred initialisation on meta


def build_on_meta(kind: str, how: str, mask: torch.Tensor | None) -> MaskedLinear | MaskedConv2d:
    args = (8, 6) if kind == "linear" else (4, 6, 3)
    cls = MaskedLinear if kind == "linear" else MaskedConv2d
    if how == "kwarg":
        return cls(*args, mask=mask, device="meta")
    with torch.device("meta"):
        return cls(*args, mask=mask)


def full(kind: str, mask: torch.Tensor | None) -> torch.Tensor:
    shape = (6, 8) if kind == "linear" else (6, 4, 3, 3)
    if mask is None:
        return torch.ones(shape)
    return mask.float() if kind == "linear" else mask.float()[:, :, None, None].expand(shape)


@pytest.mark.parametrize("given", ["mask", "none"])
@pytest.mark.parametrize("how", ["kwarg", "context"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_deferred_init_writes_the_mask_given_at_construction(kind: str, how: str, given: str) -> None:
    mask = (linear_mask() if kind == "linear" else linear_mask(6, 4)) if given == "mask" else None
    layer = build_on_meta(kind, how, mask)
    assert layer.weight_mask.is_meta and "sparsity=?" in repr(layer)
    layer.to_empty(device="cpu")
    with pytest.raises(RuntimeError, match="holds no values yet: after to_empty"):  # never computes with garbage
        layer.weight  # noqa: B018
    layer.reset_parameters()
    assert torch.equal(layer.weight_mask, full(kind, mask)) and layer._pending_mask is None
    assert bool((layer.weight[layer.weight_mask == 0] == 0).all())


@pytest.mark.parametrize("how", ["kwarg", "context"])
def test_load_state_dict_after_to_empty_takes_the_checkpoints_mask(how: str) -> None:
    src = masked_linear()  # mask linear_mask(seed=0)
    layer = build_on_meta("linear", how, linear_mask(seed=1)).to_empty(device="cpu")
    layer.load_state_dict(src.state_dict())
    layer.reset_parameters()  # after loading: redraws the weight only, the loaded mask stays
    assert torch.equal(layer.weight_mask, src.weight_mask) and layer._pending_mask is None


def test_a_mask_given_on_meta_waits_for_load_state_dict() -> None:
    with torch.device("meta"):
        layer = MaskedLinear(8, 6, mask=torch.ones(6, 8, dtype=torch.bool))  # the mask is meta too: no values
    layer.to_empty(device="cpu")
    layer.reset_parameters()
    with pytest.raises(RuntimeError, match=r"call load_state_dict\(\) \(its mask was given on the meta device"):
        layer(torch.randn(2, 8))
    src = masked_linear()
    layer.load_state_dict(src.state_dict())
    torch.testing.assert_close(layer(torch.ones(2, 8)), src(torch.ones(2, 8)), rtol=0, atol=0)


def test_layers_not_built_on_meta_keep_nothing_pending() -> None:
    assert MaskedLinear(8, 6, mask=linear_mask())._pending_mask is None
    assert MaskedConv2d.from_dense(nn.Conv2d(4, 6, 3))._pending_mask is None  # built on meta, then bound
    assert masked_linear()._pending_mask is None
    old = masked_linear()
    del old.__dict__["_pending_mask"]  # as a layer pickled before the attribute existed
    torch.testing.assert_close(pickle.loads(pickle.dumps(old))(torch.ones(1, 8)), old(torch.ones(1, 8)))


# --------------------------------------------------------------------------- integer arguments


@pytest.mark.parametrize(("make", "name"), [
    (lambda v: MaskedLinear(v, 4), "in_features"), (lambda v: MaskedLinear(4, v), "out_features"),
    (lambda v: MaskedConv2d(v, 4, 3), "in_channels"), (lambda v: MaskedConv2d(4, v, 3), "out_channels"),
    (lambda v: MaskedConv2d(4, 4, v), "kernel_size"), (lambda v: MaskedConv2d(4, 4, 3, stride=v), "stride"),
    (lambda v: MaskedConv2d(4, 4, 3, padding=v), "padding"), (lambda v: MaskedConv2d(4, 4, 3, dilation=v), "dilation"),
    (lambda v: MaskedConv2d(4, 4, 3, groups=v), "groups"),
])
@pytest.mark.parametrize("bad", [True, torch.tensor([2]), "2", 2.0])
def test_integer_arguments_are_validated(make: object, name: str, bad: object) -> None:
    if name == "padding" and isinstance(bad, str):  # a string padding is "same"/"valid": nn.Conv2d's own ValueError
        with pytest.raises(ValueError, match="Invalid padding string"):
            make(bad)
        return
    with pytest.raises(TypeError, match=f"{name} must be an integer"):
        make(bad)


def test_numpy_and_0d_integers_are_accepted() -> None:
    import numpy as np

    layer = MaskedConv2d(np.int64(4), torch.tensor(6), (np.int32(3), 3), stride=torch.tensor(2), groups=np.int64(2))
    assert (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.groups) == (4, 6, (3, 3),
                                                                                                   (2, 2), 2)
    assert all(type(v) is int for v in (layer.in_channels, *layer.kernel_size, *layer.stride, layer.groups))
    assert MaskedLinear(np.int64(8), torch.tensor(6)).weight_orig.shape == (6, 8)
