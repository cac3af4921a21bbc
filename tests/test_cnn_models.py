"""Convolutional models (``docs/architectures.md``) and the ``MaxMin`` activation.

CNN-N (paper §III-D1), CNN-ECO (Table 12) and LipConvNet-N (§III-D2, Table 11): shapes for the
paper's depths at small widths, the layers ``sao.sparsify`` replaces and keeps, exact kernel
sparsity, and the FFT orthogonality check (:func:`sao.spectral.conv_singular_values`) of every
ECO layer at init in float64.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

import sao
from helpers import gen
from sao.methods import target_layers
from sao.models import cnn, cnn_eco, create_model, lipconvnet, list_models, orthogonal_init_
from sao.models.lipconvnet import eco_kernel_size
from sao.nn import ECOConv2d, MaxMin, SOCConv2d, SparseConv2d
from sao.spectral import conv_singular_values

F64 = torch.float64


@pytest.fixture
def float64() -> Iterator[None]:
    """Build models in float64 (the builders take the default dtype), restore afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    yield
    torch.set_default_dtype(previous)


def assert_eco_orthogonal(layer: ECOConv2d, atol: float = 1e-10) -> None:
    """All singular values of the layer's inner circular convolution (FFT method) are 1."""
    size = layer.input_size // layer.stride
    s = conv_singular_values(layer.conv.weight, size, dilation=layer.conv.dilation[0])
    assert s.numel() == size * size * layer.channels
    torch.testing.assert_close(s, torch.ones_like(s), atol=atol, rtol=0)


def assert_exact_kernel_sparsity(conv: SparseConv2d, sparsity: float) -> None:
    mask = conv.mask
    assert mask.float().mean().item() == pytest.approx(1 - sparsity, abs=1e-12)
    weight = conv.weight.detach()
    assert not weight[~mask].any(), "every kernel off the SAO support is exactly zero"
    assert weight[mask].flatten(1).any(1).all(), "every kernel on the support is non-zero"


# --------------------------------------------------------------------------- MaxMin

def test_maxmin_values() -> None:
    x = torch.tensor([[1.0, 4.0, -1.0, 3.0, 2.0, -2.0]])  # halves a = (1, 4, -1), b = (3, 2, -2)
    torch.testing.assert_close(MaxMin()(x), torch.tensor([[3.0, 4.0, -1.0, 1.0, 2.0, -2.0]]))


def test_maxmin_sorts_each_channel_pair_of_an_image() -> None:
    x = torch.randn(2, 6, 3, 3, generator=gen(0))
    y = MaxMin()(x)
    a, b = x[:, :3], x[:, 3:]
    torch.testing.assert_close(y[:, :3], torch.maximum(a, b))
    torch.testing.assert_close(y[:, 3:], torch.minimum(a, b))


def test_maxmin_preserves_the_norm_and_the_values() -> None:
    x = torch.randn(4, 8, 5, 5, generator=gen(1), dtype=F64)
    y = MaxMin()(x)
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1))
    torch.testing.assert_close(y.flatten(1).sort().values, x.flatten(1).sort().values)


def test_maxmin_gradient_is_the_pair_permutation() -> None:
    x = torch.tensor([[3.0, 1.0, 2.0, 2.0, 5.0, 2.0]], requires_grad=True)  # pairs (3,2) (1,5) (2,2)
    weights = torch.tensor([[10.0, 20.0, 30.0, 40.0, 50.0, 60.0]])
    (MaxMin()(x) * weights).sum().backward()
    # output = [3, 5, 2 | 2, 1, 2]: x0 → out0, x4 → out1, x2 → out2 (tie: identity), x3 → out3, x1 → out4, x5 → out5
    torch.testing.assert_close(x.grad, torch.tensor([[10.0, 50.0, 30.0, 40.0, 20.0, 60.0]]))


def test_maxmin_other_dim_and_repr() -> None:
    x = torch.tensor([[1.0, 4.0], [3.0, 2.0]])
    torch.testing.assert_close(MaxMin(dim=0)(x), torch.tensor([[3.0, 4.0], [1.0, 2.0]]))
    assert "dim=0" in repr(MaxMin(dim=0))


@pytest.mark.parametrize("shape", [(2, 3), (2, 5, 4, 4)])
def test_maxmin_rejects_odd_channels(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="even number of channels"):
        MaxMin()(torch.zeros(shape))


# --------------------------------------------------------------------------- CNN-N

def body_convs(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.body if not isinstance(m, (nn.Tanh, nn.ReLU))]


@pytest.mark.parametrize("depth, width", [(8, 8), (16, 8), (32, 8), (128, 4)], ids=["N8", "N16", "N32", "N128"])
def test_cnn_shapes_and_layout(depth: int, width: int) -> None:
    net = cnn(depth, width=width)
    x = torch.randn(2, 3, 32, 32, generator=gen(0))
    assert net(x).shape == (2, 10)
    assert net.stem(x).shape == (2, width, 8, 8)
    assert net.body(net.stem(x)).shape == (2, width, 2, 2)
    convs = body_convs(net)
    assert len(convs) == depth
    strided = [i for i, conv in enumerate(convs) if conv.stride == (2, 2)]
    assert strided == [depth // 2 - 1, depth - 1]
    assert [m.stride for m in net.stem if isinstance(m, nn.Conv2d)] == [(1, 1), (2, 2), (2, 2)]
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == depth + 3


@pytest.mark.parametrize("activation, act_type", [("tanh", nn.Tanh), ("relu", nn.ReLU)])
def test_cnn_activation_after_every_conv(activation: str, act_type: type[nn.Module]) -> None:
    net = cnn(4, width=4, activation=activation, head="conv")
    mods = [m for m in net.modules() if isinstance(m, (nn.Conv2d, act_type))]
    assert len(mods) == 2 * (3 + 4 + 2)
    assert all(isinstance(m, nn.Conv2d) == (i % 2 == 0) for i, m in enumerate(mods))
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Tanh if act_type is nn.ReLU else nn.ReLU))
                   for m in net.modules())


def test_cnn_conv_head_sizes() -> None:
    net = cnn(8, width=8, head="conv", num_classes=100, in_channels=1)
    x = torch.randn(2, 1, 32, 32, generator=gen(1))
    features = net.body(net.stem(x))
    assert features.shape == (2, 8, 2, 2)
    head_convs = [m for m in net.head if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in head_convs] == [(2, 2), (2, 2)]
    assert net.head(features).shape == (2, 8)  # 2x2 → 1x1 → 1x1, flattened
    assert net(x).shape == (2, 100)


def test_cnn_sparsify_keeps_first_conv_and_classifier_dense() -> None:
    net = orthogonal_init_(cnn(8, width=8, head="conv"), generator=gen(0))
    names = [n for n, _ in target_layers(net)]
    assert names[0] == "stem.2" and "stem.0" not in names and "classifier" not in names
    sao.sparsify(net, "sao", sparsity=0.75, generator=gen(1))
    assert type(net.stem[0]) is nn.Conv2d and type(net.classifier) is nn.Linear
    sparse = [m for m in net.modules() if isinstance(m, SparseConv2d)]
    assert len(sparse) == 2 + 8 + 2  # stem convs 2-3, the body, the conv head
    assert sum(type(m) is nn.Conv2d for m in net.modules()) == 1
    for conv in sparse:
        assert conv.init == "sao-delta"
        assert_exact_kernel_sparsity(conv, 0.75)
    assert [m.stride for m in body_convs(net)] == [(1, 1)] * 3 + [(2, 2)] + [(1, 1)] * 3 + [(2, 2)]
    assert net(torch.randn(2, 3, 32, 32, generator=gen(2))).shape == (2, 10)
    centre = net.stem[0].weight[:, :, 1, 1]
    torch.testing.assert_close(centre.T @ centre, torch.eye(3), atol=1e-5, rtol=0)


def test_cnn_sparsify_relu_mirrored() -> None:
    net = sao.sparsify(cnn(4, width=8, activation="relu"), "sao", sparsity=0.5, activation="relu",
                       generator=gen(0))
    sparse = [m for m in net.modules() if isinstance(m, SparseConv2d)]
    assert sparse and all(m.mirrored for m in sparse)
    for conv in sparse:
        assert_exact_kernel_sparsity(conv, 0.5)


def test_cnn_registered() -> None:
    assert {"cnn", "cnn_eco", "lipconvnet"} <= set(list_models())
    assert create_model("cnn", depth=2, width=2)(torch.zeros(1, 3, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 7}, "even"),
    ({"depth": 0}, "depth must be an integer >= 2"),
    ({"depth": 8, "width": 0}, "width"),
    ({"depth": 8, "num_classes": 0}, "num_classes"),
    ({"depth": 8, "activation": "gelu"}, "choose from tanh, relu"),
    ({"depth": 8, "head": "flatten"}, "choose from pool, conv"),
])
def test_cnn_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cnn(**kwargs)


# --------------------------------------------------------------------------- CNN-ECO

@pytest.mark.parametrize("depth", [8, 16])
def test_cnn_eco_shapes_and_layout(depth: int) -> None:
    net = cnn_eco(depth, width=4, generator=gen(0))
    x = torch.randn(2, 3, 36, 36, generator=gen(1))
    assert net(x).shape == (2, 10)
    assert net.stem(x).shape == (2, 4, 9, 9)
    layers = [m for m in net.body if isinstance(m, ECOConv2d)]
    assert len(layers) == depth and all(isinstance(m, nn.ReLU) for m in net.body[1::2])
    half = depth // 2
    assert [m.input_size for m in layers] == [9] * half + [3] * half
    assert [i for i, m in enumerate(layers) if m.stride == 3] == [half - 1, depth - 1]
    dilations = [m.conv.dilation[0] for m in layers]
    assert dilations == [3] * (half - 1) + [1] * half + [1]
    assert layers[-1].conv.kernel_size == (1, 1) and layers[0].conv.kernel_size == (3, 3)
    assert all(m.conv.padding_mode == "circular" and m.conv.sparsity == 0 for m in layers)
    assert net.body(net.stem(x)).shape == (2, 4, 1, 1)


def _eco_only(name: str, module: nn.Module) -> bool:
    return not isinstance(module, ECOConv2d)


def test_cnn_eco_sao_eco_is_sparse_and_orthogonal(float64: None) -> None:
    net = sao.sparsify(cnn_eco(8, width=8, generator=gen(0)), "sao", sparsity=0.5, exclude=_eco_only,
                       generator=gen(2), strict=True)
    layers = [m for m in net.body if isinstance(m, ECOConv2d)]
    for layer in layers:
        assert layer.conv.weight.dtype == F64 and layer.conv.init == "sao-eco"
        assert_exact_kernel_sparsity(layer.conv, 0.5)
        assert_eco_orthogonal(layer)
    assert {layer.channels for layer in layers} == {8, 72}  # w at stride 1, 9w at stride 3
    assert net(torch.randn(2, 3, 36, 36, generator=gen(1))).shape == (2, 10)


def test_cnn_eco_degree_and_dense_are_orthogonal(float64: None) -> None:
    net = sao.sparsify(cnn_eco(4, width=4, generator=gen(0)), "sao", degree=2, exclude=_eco_only, generator=gen(2))
    for layer in [m for m in net.body if isinstance(m, ECOConv2d)]:
        assert layer.conv.degree == 2
        assert_eco_orthogonal(layer)
    for layer in [m for m in cnn_eco(4, width=4, generator=gen(1)).body if isinstance(m, ECOConv2d)]:
        assert layer.conv.sparsity == 0
        assert_eco_orthogonal(layer)


def test_cnn_eco_errors() -> None:
    with pytest.raises(ValueError, match="even"):
        cnn_eco(5, width=4)
    with pytest.raises(ValueError, match="degree=3 is not valid"):
        sao.sparsify(cnn_eco(4, width=4), "sao", degree=3, exclude=_eco_only, strict=True)
    with pytest.raises(ValueError, match="expects input"):
        cnn_eco(4, width=4)(torch.zeros(1, 3, 32, 32))


def test_cnn_eco_orthogonal_init_leaves_eco_layers(float64: None) -> None:
    net = cnn_eco(4, width=4, generator=gen(0))
    eco = [m.conv.weight.detach().clone() for m in net.body if isinstance(m, ECOConv2d)]
    orthogonal_init_(net, generator=gen(1))
    assert all(torch.equal(w, m.conv.weight) for w, m in zip(eco, [m for m in net.body if isinstance(m, ECOConv2d)],
                                                                 strict=True))
    # ECO layers are weight layers like the others: the stem's inner convs and the four (dense) ECO layers
    assert [n for n, _ in target_layers(net)] == ["stem.2", "stem.4", "body.0", "body.2", "body.4", "body.6"]


# --------------------------------------------------------------------------- LipConvNet-N

def test_eco_kernel_size() -> None:
    assert [eco_kernel_size(n) for n in (1, 2, 3, 4, 6, 8, 9, 16)] == [1, 2, 3, 4, 3, 4, 3, 4]


@pytest.mark.parametrize("depth", [5, 10, 15])
def test_lipconvnet_shapes_and_layout(depth: int) -> None:
    init = 4
    net = lipconvnet(depth, init_channels=init, generator=gen(0)).eval()
    x = torch.randn(2, 3, 32, 32, generator=gen(1))
    per_stage = depth // 5
    for stage, side in zip(range(1, 6), (16, 8, 4, 2, 1), strict=True):
        part = getattr(net, f"stage{stage}")
        convs = list(part[0::2])
        assert len(convs) == per_stage and all(isinstance(m, MaxMin) for m in part[1::2])
        assert all(isinstance(c, SOCConv2d if stage <= 2 else ECOConv2d) for c in convs)
        assert [c.stride for c in convs] == [1] * (per_stage - 1) + [2]
        x = part(x)
        assert x.shape == (2, init * 2**stage, side, side)
    assert net.stage1[0].in_channels == 3
    assert net.stage5[-2].conv.kernel_size == (1, 1)
    assert isinstance(net.last, SOCConv2d) and net.last.kernel_size == 1 and net.last.in_channels == 32 * init
    assert net.flatten(net.last(x)).shape == (2, 10)


def test_lipconvnet_is_one_lipschitz_at_init(float64: None) -> None:
    net = lipconvnet(10, init_channels=4, num_classes=7, generator=gen(0)).eval()
    x, y = torch.randn(2, 4, 3, 32, 32, generator=gen(1))
    fx, fy = net(x), net(y)
    assert fx.shape == (4, 7)
    # orthogonal layers (within their truncation error) and 1-Lipschitz MaxMin
    assert ((fx - fy).norm(dim=1) <= (x - y).flatten(1).norm(dim=1) * (1 + 1e-6)).all()


def test_lipconvnet_sao_eco_is_sparse_and_orthogonal(float64: None) -> None:
    net = sao.sparsify(lipconvnet(10, init_channels=4, generator=gen(0)), "sao", sparsity=0.75, exclude=_eco_only,
                       generator=gen(2), strict=True)
    eco = [m for m in net.modules() if isinstance(m, ECOConv2d)]
    assert len(eco) == 6
    assert [m.conv.kernel_size[0] for m in eco] == [4, 4, 4, 2, 2, 1]
    for layer in eco:
        assert_exact_kernel_sparsity(layer.conv, 0.75)
        assert_eco_orthogonal(layer)
    assert all(m.conv.sparsity == 0 for m in lipconvnet(5, init_channels=4).modules() if isinstance(m, ECOConv2d))
    assert target_layers(net) == [], "every layer is SOC or ECO (now SAO-ECO sparse): nothing left to replace"


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 7}, "multiple of 5"),
    ({"depth": 0}, "multiple of 5"),
    ({"depth": 5, "init_channels": 3}, "even"),
    ({"depth": 5, "num_classes": 0}, "num_classes"),
])
def test_lipconvnet_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lipconvnet(**kwargs)


def test_orthogonal_init_relu_gives_an_image_stem_the_plain_delta_kernel() -> None:
    """The mirrored ReLU construction needs even channels; the 1- or 3-channel stem takes plain Delta."""
    model = orthogonal_init_(cnn(2, width=8, activation="relu", in_channels=3), activation="relu",
                             generator=torch.Generator().manual_seed(0))
    stem = model.stem[0].weight.detach().double()
    centre = stem[:, :, 1, 1]
    torch.testing.assert_close(centre.T @ centre, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert stem[:, :, 0, 0].abs().max() == 0


@pytest.mark.parametrize("bound", ["certified", "upstream"])
def test_lipconvnet_passes_the_soc_bound_to_every_soc_layer(bound: str) -> None:
    from sao.nn import SOCConv2d

    net = lipconvnet(5, init_channels=4, generator=gen(0), soc_bound=bound)
    socs = [m for m in net.modules() if isinstance(m, SOCConv2d)]
    assert socs and all(m.bound == bound for m in socs)
    with pytest.raises(ValueError, match="certified"):
        lipconvnet(5, init_channels=4, soc_bound="loose")
