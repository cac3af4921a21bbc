"""FNN-N, the deep fully-connected network of the paper (§III-C, Table 1).

``1024 → 512 → 256 → (256 → 256) × (N − 1) → 10`` with an activation after every hidden
layer: ``N + 2`` linear layers in all, ``N`` of them between the input and the output
activations in the paper's counting (the ``512 → 256`` layer ``L0`` and the ``N − 1``
symmetric layers). Inputs are 32 × 32 = 1024 features (MNIST zero-padded).
"""

from __future__ import annotations

import itertools

from torch import nn

from sao._validation import as_int, as_int_tuple
from sao.models._registry import MODELS, ModelInfo

__all__ = ["fnn"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity}


def fnn(depth: int = 50, activation: str = "tanh", in_features: int = 1024, num_classes: int = 10,
        widths: tuple[int, int] = (512, 256)) -> nn.Sequential:
    """FNN-N: ``in_features → 512 → 256 → (256 → 256)×(depth−1) → num_classes`` (paper Table 1).

    Args:
        depth: ``N`` (≥ 1), the paper's depth.
        activation: ``"tanh"`` (paper), ``"relu"`` or ``"linear"``.
        in_features: input size (1024 = 32 × 32).
        num_classes: outputs.
        widths: the first hidden width and the symmetric width, ``(512, 256)``.

    Returns:
        A plain :class:`torch.nn.Sequential` of ``Linear, activation, …, Linear`` with PyTorch's
        default init; give it the paper's start with :func:`sao.models.orthogonal_init_` and
        make it sparse with :func:`sao.sparsify` (which keeps the first and last layers dense).

    Raises:
        TypeError: if a size is not an integer (``int``, numpy integer or 0-d integer tensor).
        ValueError: if a size is below 1 or the activation is unknown.

    Example:
        >>> import torch
        >>> fnn(depth=3)(torch.zeros(2, 1024)).shape
        torch.Size([2, 10])
    """
    depth = as_int(depth, "depth", minimum=1)
    in_features = as_int(in_features, "in_features", minimum=1)
    num_classes = as_int(num_classes, "num_classes", minimum=1)
    widths = as_int_tuple(widths, "widths", 2, minimum=1)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not supported; choose from {', '.join(ACTIVATIONS)}")
    sizes = [in_features, widths[0], *[widths[1]] * depth]
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(sizes[-1], num_classes))
    return nn.Sequential(*layers)


MODELS.register("fnn", ModelInfo(
    fnn, input_shape=(1024,), activations=tuple(ACTIVATIONS), depths=(1, 2), width_arg=None,
    description="FNN-N, the paper's deep MLP (Table 1; Table 7)"))
