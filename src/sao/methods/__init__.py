"""Sparsify methods (SAO, RG-N, RG-U; pruning baselines register here too) and :func:`sparsify`."""

from sao.methods import init_methods
from sao.methods._base import EXCLUDE_CHOICES, METHODS, SparsifyMethod, SparsifySettings, sparsify, target_layers
from sao.methods.init_methods import InitMethod

__all__ = [
    "EXCLUDE_CHOICES",
    "METHODS",
    "InitMethod",
    "SparsifyMethod",
    "SparsifySettings",
    "init_methods",
    "sparsify",
    "target_layers",
]
