"""Vanilla CNN-N (paper §III-D1, Tables 8–10) and CNN-ECO (paper Table 12).

:func:`cnn` builds ``stem`` (three 3×3 convs, strides 1, 2, 2), ``body`` (``N`` 3×3 convs ``w → w``,
stride 2 at index ``N/2 − 1`` and ``N − 1``), ``head`` (``"pool"``: global average pool;
``"conv"``: two stride-2 convs, for CINIC-10 / CIFAR-100) and ``classifier`` (``Linear(w, classes)``),
as plain dense ``nn.Conv2d``/``nn.Linear``: :func:`sao.models.orthogonal_init_` gives the
Delta-orthogonal start and :func:`sao.sparsify` makes the body SAO-Delta, keeping ``stem.0`` and
``classifier`` dense as the paper does (§IV-C). :func:`cnn_eco` takes 36×36 inputs and has
:class:`~sao.nn.ECOConv2d` body layers on 9×9 and 3×3 maps (dense ECO or SAO-ECO).
:data:`HEADS` names the heads. The layer-by-layer layout and where each choice comes from:
``docs/architectures.md``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from sao._validation import as_int
from sao.models._registry import MODELS, ModelInfo
from sao.models.fnn import ACTIVATIONS
from sao.nn import ECOConv2d

__all__ = ["HEADS", "cnn", "cnn_eco"]

HEADS = ("pool", "conv")
CNN_ACTIVATIONS = ("tanh", "relu")


def _check_depth(depth: object) -> int:
    depth = as_int(depth, "depth", minimum=2)
    if depth % 2:
        raise ValueError(f"depth must be even (the body downsamples at index depth/2 - 1 and at the last index), "
                         f"got {depth}")
    return depth


def _check_activation(activation: str) -> type[nn.Module]:
    if activation not in CNN_ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not supported; choose from {', '.join(CNN_ACTIVATIONS)}")
    return ACTIVATIONS[activation]


def _stem(in_channels: int, width: int, act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, stride in enumerate((1, 2, 2)):
        layers += [nn.Conv2d(in_channels if i == 0 else width, width, 3, stride, padding=1), act()]
    return nn.Sequential(*layers)


def cnn(depth: int, width: int = 128, activation: str = "tanh", num_classes: int = 10, in_channels: int = 3,
        head: str = "pool") -> nn.Sequential:
    """Vanilla CNN-N: stem ``in → w → w → w`` (strides 1, 2, 2), ``N`` 3×3 body convs, pool or conv head, linear.

    Args:
        depth: ``N``, even, ≥ 2 (paper: 8 … 768); stride 2 at body index ``N/2 − 1`` and ``N − 1``.
        width: ``w``, channels of every conv (paper: 32 … 256; 128 for CINIC-10).
        activation: ``"tanh"`` or ``"relu"``, after every conv.
        num_classes: outputs of the classifier.
        in_channels: image channels.
        head: ``"pool"`` (global average pool, CIFAR-10) or ``"conv"`` (two stride-2 convs,
            CINIC-10 / CIFAR-100).

    Returns:
        ``nn.Sequential`` with parts ``stem``, ``body``, ``head``, ``classifier``
        (``docs/architectures.md``); ``3 + N (+ 2)`` ``nn.Conv2d`` and one ``nn.Linear``.

    Shapes:
        ``(B, in_channels, H, W)`` → ``(B, num_classes)``; for 32×32 the body ends at 2×2.
        Any ``H, W ≥ 1`` works (zero padding); the pool head makes the output size-independent.

    Raises:
        TypeError: if ``depth`` or a size is not an integer (``int``, numpy integer or 0-d
            integer tensor).
        ValueError: on an odd or too small ``depth``, a non-positive size, or an unknown
            activation or head.

    Example:
        >>> net = cnn(depth=4, width=8)
        >>> net(torch.zeros(2, 3, 32, 32)).shape, sum(isinstance(m, nn.Conv2d) for m in net.modules())
        (torch.Size([2, 10]), 7)
    """
    depth = _check_depth(depth)
    width, num_classes, in_channels = (as_int(value, name, minimum=1) for name, value in (
        ("width", width), ("num_classes", num_classes), ("in_channels", in_channels)))
    act = _check_activation(activation)
    if head not in HEADS:
        raise ValueError(f"head={head!r} is not supported; choose from {', '.join(HEADS)}")
    body: list[nn.Module] = []
    for i in range(depth):
        stride = 2 if i in (depth // 2 - 1, depth - 1) else 1
        body += [nn.Conv2d(width, width, 3, stride, padding=1), act()]
    tail: list[nn.Module] = []
    if head == "conv":
        for _ in range(2):
            tail += [nn.Conv2d(width, width, 3, 2, padding=1), act()]
    else:
        tail.append(nn.AdaptiveAvgPool2d(1))
    tail.append(nn.Flatten())
    return nn.Sequential(OrderedDict([("stem", _stem(in_channels, width, act)), ("body", nn.Sequential(*body)),
                                      ("head", nn.Sequential(*tail)), ("classifier", nn.Linear(width, num_classes))]))


def cnn_eco(depth: int, width: int = 128, activation: str = "relu", num_classes: int = 10, in_channels: int = 3,
            generator: torch.Generator | None = None) -> nn.Sequential:
    """CNN-ECO: the CNN-N stem on a 36×36 input, ``N`` ECO body convs (9 → 3 → 1), linear classifier.

    Args:
        depth: ``N``, even, ≥ 2 (paper: 8, 16, …); stride 3 at body index ``N/2 − 1`` and ``N − 1``.
        width: ``w``.
        activation: ``"relu"`` (paper) or ``"tanh"``, after every conv.
        num_classes: outputs.
        in_channels: image channels.
        generator: source of randomness for the ECO layers (drawn in layer order).

    Returns:
        ``nn.Sequential`` with parts ``stem``, ``body`` (``ECOConv2d`` + activation),
        ``head`` (flatten), ``classifier``.

    Shapes:
        ``(B, in_channels, 36, 36)`` → ``(B, num_classes)`` (the ECO layers check their input size).

    Guarantees:
        Every body layer is a dense orthogonal convolution at init. SAO-ECO (paper §IV-C) is
        ``sao.sparsify(net, "sao", degree=...)`` on the ECO layers (``exclude=`` every other layer,
        as Table 12 does): each gets the SAO topology on its ``C x C`` channel graph (``C = w`` at
        stride 1, ``9w`` at the stride-3 layers).

    Example:
        >>> net = cnn_eco(depth=4, width=4, generator=torch.Generator().manual_seed(0))
        >>> net(torch.zeros(2, 3, 36, 36)).shape
        torch.Size([2, 10])
        >>> import sao
        >>> net = sao.sparsify(net, "sao", sparsity=0.5, generator=torch.Generator().manual_seed(0),
        ...                    exclude=lambda name, m: not isinstance(m, sao.nn.ECOConv2d))
        >>> [round(layer.conv.sparsity, 3) for layer in net.body if isinstance(layer, sao.nn.ECOConv2d)]
        [0.5, 0.5, 0.5, 0.5]
    """
    depth = _check_depth(depth)
    width, num_classes, in_channels = (as_int(value, name, minimum=1) for name, value in (
        ("width", width), ("num_classes", num_classes), ("in_channels", in_channels)))
    act = _check_activation(activation)
    body: list[nn.Module] = []
    for i in range(depth):
        if i == depth - 1:
            layer = ECOConv2d(width, width, 1, input_size=3, stride=3, generator=generator)
        elif i == depth // 2 - 1:
            layer = ECOConv2d(width, width, 3, input_size=9, stride=3, generator=generator)
        else:
            layer = ECOConv2d(width, width, 3, input_size=9 if i < depth // 2 else 3, generator=generator)
        body += [layer, act()]
    return nn.Sequential(OrderedDict([("stem", _stem(in_channels, width, act)), ("body", nn.Sequential(*body)),
                                      ("head", nn.Flatten()), ("classifier", nn.Linear(width, num_classes))]))


MODELS.register("cnn", ModelInfo(
    cnn, input_shape=(3, 32, 32), activations=("tanh", "relu"), heads=("pool", "conv"), depths=(2, 4),
    description="vanilla CNN-N with Delta-orthogonal convolutions (Tables 8-10)"))
MODELS.register("cnn_eco", ModelInfo(
    cnn_eco, input_shape=(3, 36, 36), image_size=36, activations=("relu", "tanh"), depths=(2, 4),
    description="CNN-ECO, ECO convolutions (Table 12; SAO-ECO: sparsify with 'sao')"))
