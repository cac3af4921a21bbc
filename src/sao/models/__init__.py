"""Models of the paper, in a registry: ``create_model("fnn", depth=100)``, ``cnn``, ``cnn_eco``, ``lipconvnet``."""

from sao.models._init import orthogonal_init_
from sao.models._registry import MODELS, ModelInfo, create_model, list_models, model_info
from sao.models.cnn import cnn, cnn_eco
from sao.models.fnn import fnn
from sao.models.lipconvnet import lipconvnet

__all__ = [
    "MODELS",
    "ModelInfo",
    "cnn",
    "cnn_eco",
    "create_model",
    "fnn",
    "lipconvnet",
    "list_models",
    "model_info",
    "orthogonal_init_",
]
