"""Models of the paper, in a registry: ``create_model("fnn", depth=100)``."""

from sao.models._init import orthogonal_init_
from sao.models._registry import MODELS, create_model, list_models
from sao.models.fnn import fnn

__all__ = ["MODELS", "create_model", "fnn", "list_models", "orthogonal_init_"]
