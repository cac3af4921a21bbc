"""Vanilla CNN-N (paper §III-D1, Tables 8–10) and CNN-ECO (Table 12), as in ``conv-orthogonal.md`` (Architectures).

**CNN-N** — ``nn.Sequential`` with named parts, in this order (``sao.sparsify`` counts the
``Linear``/``Conv2d`` layers in ``named_modules`` order and by default keeps the first and the
last dense, so ``stem.0`` and ``classifier`` stay dense, as the paper keeps the stem's first
conv and the classifier dense, SPEC §2):

- ``stem``: three 3×3 convs ``in → w → w → w`` (zero padding 1), strides 1, 2, 2, activation
  after each: 32×32 → 32 → 16 → 8.
- ``body``: ``N`` convs ``w → w`` (3×3, zero padding 1), stride 2 at index ``N/2 − 1`` and at
  the last index ``N − 1``, activation after each: 8×8 → 4×4 → 2×2 for a 32×32 input.
- ``head``: ``"pool"`` — global average pool + flatten (the feature is ``w``);
  ``"conv"`` (CINIC-10 / CIFAR-100) — two more 3×3 stride-2 convs ``w → w`` (zero padding 1,
  activation after each, so they are body-like and *are* sparsified by ``sao.sparsify``) then
  flatten: 2×2 → 1×1 → 1×1 for a 32×32 input, feature ``w``.
- ``classifier``: ``nn.Linear(w, num_classes)``.

No batch norm, no skips. The layers are plain ``nn.Conv2d``/``nn.Linear`` with PyTorch's default
init: :func:`sao.models.orthogonal_init_` gives them the Delta-orthogonal start and
:func:`sao.sparsify` (``method="sao"``) turns every body (and conv-head) conv into a
:class:`~sao.nn.SparseConv2d` (SAO-Delta). The reference code (kiaraesguerra/SAO) flattens the
2×2 map into ``Linear(4w, classes)`` instead of pooling; we follow the paper/spec's pooling.

**CNN-ECO** — 36×36 input (resize CIFAR/CINIC), the same stem (36 → 36 → 18 → 9), then ``N``
:class:`~sao.nn.ECOConv2d` layers ``w → w`` (circular padding; dense ECO or SAO-ECO):

- indices ``0 … N/2 − 2``: 3×3 kernel dilated by 3 on 9×9;
- index ``N/2 − 1``: stride 3 (space-to-depth to ``9w`` channels at 3×3, 3×3 kernel), 9 → 3;
- indices ``N/2 … N − 2``: 3×3 kernel, dilation 1 on 3×3 (circular: every pixel sees all 9);
- index ``N − 1``: stride 3, 3 → 1; the kernel is 1×1 because ECO needs the kernel side to
  divide the feature side after the stride (here 1);
- activation after every conv, then flatten and ``nn.Linear(w, num_classes)``.

The stem convs and the classifier are plain and dense; ``orthogonal_init_`` makes them
orthogonal and leaves the ECO layers (already orthogonal) alone.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from sao._validation import as_int
from sao.models._registry import MODELS
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
        ``nn.Sequential`` with parts ``stem``, ``body``, ``head``, ``classifier`` (module
        docstring); ``3 + N (+ 2)`` ``nn.Conv2d`` and one ``nn.Linear``.

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
            degree: int | None = None, sparsity: float | None = None,
            generator: torch.Generator | None = None) -> nn.Sequential:
    """CNN-ECO: the CNN-N stem on a 36×36 input, ``N`` ECO body convs (9 → 3 → 1), linear classifier.

    Args:
        depth: ``N``, even, ≥ 2 (paper: 8, 16, …); stride 3 at body index ``N/2 − 1`` and ``N − 1``.
        width: ``w``.
        activation: ``"relu"`` (paper) or ``"tanh"``, after every conv.
        num_classes: outputs.
        in_channels: image channels.
        degree, sparsity: SAO-ECO degree or sparsity of every body layer's ``C x C`` channel
            graph (``C = w`` at stride 1, ``9w`` at the stride-3 layers); neither gives dense ECO.
            Invalid values raise the layers' ``ValueError`` (naming the valid degrees).
        generator: source of randomness for the ECO layers (drawn in layer order).

    Returns:
        ``nn.Sequential`` with parts ``stem``, ``body`` (``ECOConv2d`` + activation),
        ``head`` (flatten), ``classifier``.

    Shapes:
        ``(B, in_channels, 36, 36)`` → ``(B, num_classes)`` (the ECO layers check their input size).

    Guarantees:
        Every body layer is an orthogonal convolution at init (dense or SAO-ECO), with exactly
        the requested kernel-level sparsity when ``degree``/``sparsity`` is given.

    Example:
        >>> net = cnn_eco(depth=4, width=4, generator=torch.Generator().manual_seed(0))
        >>> net(torch.zeros(2, 3, 36, 36)).shape
        torch.Size([2, 10])
    """
    depth = _check_depth(depth)
    width, num_classes, in_channels = (as_int(value, name, minimum=1) for name, value in (
        ("width", width), ("num_classes", num_classes), ("in_channels", in_channels)))
    act = _check_activation(activation)
    body: list[nn.Module] = []
    for i in range(depth):
        if i == depth - 1:
            layer = ECOConv2d(width, width, 1, input_size=3, stride=3, degree=degree, sparsity=sparsity,
                              generator=generator)
        elif i == depth // 2 - 1:
            layer = ECOConv2d(width, width, 3, input_size=9, stride=3, degree=degree, sparsity=sparsity,
                              generator=generator)
        else:
            layer = ECOConv2d(width, width, 3, input_size=9 if i < depth // 2 else 3, degree=degree,
                              sparsity=sparsity, generator=generator)
        body += [layer, act()]
    return nn.Sequential(OrderedDict([("stem", _stem(in_channels, width, act)), ("body", nn.Sequential(*body)),
                                      ("head", nn.Flatten()), ("classifier", nn.Linear(width, num_classes))]))


MODELS.register("cnn", cnn)
MODELS.register("cnn_eco", cnn_eco)
