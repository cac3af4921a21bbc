"""The model registry: ``@MODELS.register("name")`` on a builder, ``create_model(name, **kw)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from sao._registry import Registry

__all__ = ["MODELS", "create_model", "list_models"]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "sao.models.MODELS")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs``."""
    return MODELS.get(name)(**kwargs)


def list_models() -> list[str]:
    """Names of the registered models."""
    return MODELS.names()
