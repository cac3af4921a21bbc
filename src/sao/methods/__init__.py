"""Sparsify methods (SAO, RG-N, RG-U, Dense, LMP-S, GMP-S, LRP) and :func:`sparsify`."""

from sao.methods import init_methods, prune_methods
from sao.methods._base import (
    EXCLUDE_CHOICES,
    METHODS,
    SparsifyMethod,
    SparsifySettings,
    connection_mask,
    sparsify,
    target_layers,
)
from sao.methods.init_methods import InitMethod
from sao.methods.prune_methods import PruneMethod

__all__ = [
    "EXCLUDE_CHOICES",
    "METHODS",
    "InitMethod",
    "PruneMethod",
    "SparsifyMethod",
    "SparsifySettings",
    "connection_mask",
    "init_methods",
    "prune_methods",
    "sparsify",
    "target_layers",
]
