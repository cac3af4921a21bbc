"""Input-shape checks of the sao layers: they accept exactly what their torch twins accept.

``nn.Linear`` takes ``(*, in_features)`` (unbatched ``(in_features,)``, empty batches and any
leading dims included); ``nn.Conv2d`` takes ``(C, H, W)`` or ``(B, C, H, W)``. The blocked
backends gather features by index, which would silently read the first ``in_features`` of a
wider input, so every layer checks before computing and raises :class:`InputShapeError`.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["InputShapeError", "check_features", "check_image"]


class InputShapeError(ValueError, RuntimeError):
    """An input shape the layer (and its torch twin) cannot take.

    A ``ValueError`` (sao's convention for bad input) and a ``RuntimeError`` (what
    ``nn.Linear``/``nn.Conv2d`` raise for the same input), so either ``except`` clause catches it.
    """


def check_features(x: Tensor, in_features: int, layer: str) -> None:
    """Raise :class:`InputShapeError` unless ``x`` is ``(*, in_features)`` with at least one dim."""
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise InputShapeError(f"{layer} expects input of shape (*, {in_features}) (last dim = in_features = "
                              f"{in_features}), got {tuple(x.shape)}")


def check_image(x: Tensor, channels: int, layer: str, size: tuple[int, int] | None = None) -> None:
    """Raise :class:`InputShapeError` unless ``x`` is ``(C, H, W)`` or ``(B, C, H, W)`` with ``C = channels``.

    ``size``: the ``(H, W)`` the layer is built for, if it only takes one (ECO).
    """
    spatial = "H, W" if size is None else f"{size[0]}, {size[1]}"
    wrong_size = size is not None and x.dim() in (3, 4) and tuple(x.shape[-2:]) != tuple(size)
    if x.dim() not in (3, 4) or x.shape[-3] != channels or wrong_size:
        raise InputShapeError(f"{layer} expects input of shape (B, {channels}, {spatial}) or unbatched "
                              f"({channels}, {spatial}), got {tuple(x.shape)}")
