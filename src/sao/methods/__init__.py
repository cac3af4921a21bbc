"""Sparsify methods (SAO, RG-N, RG-U, Dense, LMP-S/T, GMP-S/T, LRP, RG-S/T, EOI), :func:`sparsify` and its summary."""

from sao.methods import eoi_method, init_methods, prune_methods
from sao.methods._base import (
    EXCLUDE_CHOICES,
    METHODS,
    LayerPlan,
    SparsifyMethod,
    SparsifySettings,
    connection_mask,
    degree_plan,
    eco_methods,
    eco_target_layers,
    has_eco_layers,
    sparsify,
    target_layers,
)
from sao.methods._summary import LayerReport, SparsifySummary
from sao.methods.eoi_method import EOIMethod
from sao.methods.init_methods import InitMethod
from sao.methods.prune_methods import PruneMethod

__all__ = [
    "EXCLUDE_CHOICES",
    "METHODS",
    "EOIMethod",
    "InitMethod",
    "LayerPlan",
    "LayerReport",
    "PruneMethod",
    "SparsifyMethod",
    "SparsifySettings",
    "SparsifySummary",
    "connection_mask",
    "degree_plan",
    "eco_methods",
    "eco_target_layers",
    "eoi_method",
    "has_eco_layers",
    "init_methods",
    "prune_methods",
    "sparsify",
    "target_layers",
]
