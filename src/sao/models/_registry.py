"""The model registry: each entry a :class:`ModelInfo` (builder + metadata), ``create_model(name, **kw)``.

The metadata is what code above the models needs to build and feed a model without branching
on its name (timm's ``default_cfgs`` idea): the input it takes, the choices of its activation
and head, and the name of its width argument.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sao._registry import Registry

__all__ = ["MODELS", "ModelInfo", "create_model", "list_models", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: its builder and what callers need to know about it.

    Calling the info calls the builder (``MODELS.get("cnn")(8, width=16)``).

    Attributes:
        builder: ``builder(depth, **kwargs) -> nn.Module``.
        input_shape: the input of one example at the registered size, without the batch axis:
            ``(features,)`` for a model of vectors, ``(channels, height, width)`` for images.
        image_size: the side images must be resized to (CNN-ECO: 36, for its 9 → 3 → 1
            strides); ``None``: the dataset's own size.
        activations: the values the builder's ``activation`` takes, the first its default; one
            value and no ``activation`` argument means a fixed activation (LipConvNet: MaxMin).
        heads: the values of the builder's ``head``, the first its default; ``()``: no choice.
        width_arg: the builder's width argument (``None``: the widths are fixed).
        default_width: that argument's default (``None`` when ``width_arg`` is).
        depths: the smallest valid depths, for examples and tests (the builder checks the rule).
        description: one line for listings.
        arguments: the builder's parameter names (derived; a setting goes only where it is taken).
    """

    builder: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    activations: tuple[str, ...]
    depths: tuple[int, ...]
    description: str
    image_size: int | None = None
    heads: tuple[str, ...] = ()
    width_arg: str | None = "width"
    arguments: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "arguments", frozenset(inspect.signature(self.builder).parameters))

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module:
        return self.builder(*args, **kwargs)

    @property
    def takes_images(self) -> bool:
        """Whether the model takes ``(C, H, W)`` images (else flat vectors)."""
        return len(self.input_shape) == 3

    @property
    def default_width(self) -> int | None:
        """The default of the width argument (``None`` if the widths are fixed)."""
        if self.width_arg is None:
            return None
        return inspect.signature(self.builder).parameters[self.width_arg].default

    def build(self, depth: int, *, input_shape: tuple[int, ...], num_classes: int, width: int | None = None,
              activation: str | None = None, head: str | None = None,
              generator: torch.Generator | None = None) -> nn.Module:
        """Build the model for inputs of ``input_shape`` and ``num_classes`` outputs.

        ``None`` leaves a setting at the builder's default; ``generator`` reaches builders that draw weights.

        Raises:
            ValueError: a setting the model does not take (e.g. a head for a model without
                one), or the builder's own errors (depth rule, widths, ...).
        """
        kwargs: dict[str, Any] = {"num_classes": num_classes}
        kwargs["in_channels" if self.takes_images else "in_features"] = input_shape[0]
        for name, value, argument in (("width", width, self.width_arg), ("activation", activation, "activation"),
                                      ("head", head, "head")):
            if value is None:
                continue
            if argument is None or argument not in self.arguments:
                raise ValueError(f"this model takes no {name} (got {name}={value!r})")
            kwargs[argument] = value
        if generator is not None and "generator" in self.arguments:
            kwargs["generator"] = generator
        return self.builder(depth, **kwargs)


MODELS: Registry[ModelInfo] = Registry("model", "sao.models.MODELS")


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` registered as ``name`` (``ValueError`` listing the known names)."""
    return MODELS.get(name)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs`` (its builder's arguments)."""
    return MODELS.get(name)(**kwargs)


def list_models() -> list[str]:
    """Names of the registered models."""
    return MODELS.names()
