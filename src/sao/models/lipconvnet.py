"""LipConvNet-N (Singla & Feizi, ICML 2021, §6; paper §III-D2, Table 11) with SOC and ECO layers.

:func:`lipconvnet` builds five stages of ``N/5`` orthogonal convolutions, the last of each with
stride 2 and twice the channels: :class:`~sao.nn.SOCConv2d` in stages 1–2 (always dense),
:class:`~sao.nn.ECOConv2d` in stages 3–5 (dense ECO; SAO-ECO is ``sao.sparsify(net, "sao", ...)`` with
``exclude=lambda name, m: not isinstance(m, ECOConv2d)``, as Table 11 does),
:class:`~sao.nn.MaxMin` after every convolution, and a 1×1 SOC layer to the classes.
:func:`eco_kernel_size` picks each ECO layer's kernel so that it divides the feature side. The
paper's Table 4 (the architecture) is lost; the choices made here, and their sources (the
paper, upstream LipConvNet, the reference code), are in ``docs/architectures.md``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from sao._validation import as_int
from sao.models._registry import MODELS, ModelInfo
from sao.nn import ECOConv2d, MaxMin, SOCConv2d

__all__ = ["eco_kernel_size", "lipconvnet"]

INPUT_SIZE = 32
SOC_STAGES = 2


def eco_kernel_size(side: int) -> int:
    """The divisor of ``side`` closest to 3 (ties to the larger): the ECO kernel for that feature side.

    Example:
        >>> [eco_kernel_size(n) for n in (9, 8, 4, 3, 2, 1)]
        [3, 4, 4, 3, 2, 1]
    """
    side = as_int(side, "side", minimum=1)
    return min((k for k in range(1, side + 1) if side % k == 0), key=lambda k: (abs(k - 3), -k))


def lipconvnet(depth: int, init_channels: int = 32, num_classes: int = 10, in_channels: int = 3,
               generator: torch.Generator | None = None, soc_bound: str = "certified") -> nn.Sequential:
    """LipConvNet-N: five stages of ``N/5`` orthogonal convs (SOC in stages 1–2, ECO in 3–5), MaxMin, 1×1 SOC head.

    Args:
        depth: ``N``, a positive multiple of 5 (paper: 5, 10, 15).
        init_channels: channels of stage 1 (32 in the paper); even (MaxMin pairs channels).
        num_classes: outputs.
        in_channels: image channels.
        generator: source of randomness for all layers, drawn in layer order.
        soc_bound: spectral-norm scaling of every SOC layer: ``"certified"`` (default, ‖A‖ ≤ 0.7
            guaranteed) or ``"upstream"`` (the reference implementation's cheaper bound, which
            lets ‖A‖ exceed 1; see :class:`sao.nn.SOCConv2d`).

    Returns:
        ``nn.Sequential`` with parts ``stage1`` … ``stage5`` (each a ``nn.Sequential`` of conv,
        ``MaxMin`` pairs), ``last`` (1×1 SOC) and ``flatten``; choices in ``docs/architectures.md``.

    Shapes:
        ``(B, in_channels, 32, 32)`` → ``(B, num_classes)`` (the ECO layers check their input size).

    Raises:
        TypeError: if ``depth`` or a channel count is not an integer (``int``, numpy integer or
            0-d integer tensor).
        ValueError: on a depth that is not a positive multiple of 5, an odd or non-positive
            ``init_channels``, or a non-positive ``num_classes``/``in_channels``.

    Example:
        >>> net = lipconvnet(depth=5, init_channels=4, generator=torch.Generator().manual_seed(0))
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    depth = as_int(depth, "depth")
    if depth < 5 or depth % 5:
        raise ValueError(f"depth must be a positive multiple of 5 (five stages of depth/5 convs), got {depth!r}")
    init_channels, num_classes, in_channels = (as_int(value, name, minimum=1) for name, value in (
        ("init_channels", init_channels), ("num_classes", num_classes), ("in_channels", in_channels)))
    if init_channels % 2:
        raise ValueError(f"init_channels must be even (MaxMin splits channels into pairs), got {init_channels}")
    per_stage = depth // 5
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    channels, side = in_channels, INPUT_SIZE
    for stage in range(1, 6):
        planes = init_channels * 2 ** (stage - 1)
        layers: list[nn.Module] = []
        for block in range(per_stage):
            stride = 2 if block == per_stage - 1 else 1
            out = planes * stride
            if stage <= SOC_STAGES:
                conv: nn.Module = SOCConv2d(channels, out, 3, stride, generator=generator, bound=soc_bound)
            else:
                conv = ECOConv2d(channels, out, eco_kernel_size(side // stride), input_size=side, stride=stride,
                                 generator=generator)
            layers += [conv, MaxMin()]
            channels, side = out, side // stride
        parts[f"stage{stage}"] = nn.Sequential(*layers)
    parts["last"] = SOCConv2d(channels, num_classes, 1, generator=generator, bound=soc_bound)
    parts["flatten"] = nn.Flatten()
    return nn.Sequential(parts)


MODELS.register("lipconvnet", ModelInfo(
    lipconvnet, input_shape=(3, 32, 32), activations=("maxmin",), width_arg="init_channels", depths=(5, 10),
    description="LipConvNet-N, SOC and ECO convolutions (Table 11; SAO-ECO: sparsify its ECO layers with 'sao')"))
