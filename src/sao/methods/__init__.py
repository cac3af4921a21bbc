"""Sparsify methods (SAO, RG-N, RG-U, Dense, LMP-S/T, GMP-S/T, LRP, RG-S/T, EOI), :func:`sparsify` and its summary.

Methods are registered by name in :data:`METHODS` (how to add one: :mod:`sao.methods._base`);
each says when it applies (:attr:`SparsifyMethod.phase`: :data:`AT_INIT` or
:data:`AFTER_TRAINING`). The pruning baselines are a :class:`PruneMethod` with a
:class:`PruningRule` (:mod:`sao.methods.prune_methods`).
"""

from sao.methods import eoi_method, init_methods, prune_methods
from sao.methods._base import (
    AFTER_TRAINING,
    AT_INIT,
    EXCLUDE_CHOICES,
    METHODS,
    PHASES,
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
from sao.methods.prune_methods import (
    PRUNING_RULES,
    GlobalMagnitudeRule,
    LocalMagnitudeRule,
    PruneMethod,
    PruningRule,
    RandomRule,
    SAOMaskRule,
)

__all__ = [
    "AFTER_TRAINING",
    "AT_INIT",
    "EXCLUDE_CHOICES",
    "METHODS",
    "PHASES",
    "PRUNING_RULES",
    "EOIMethod",
    "GlobalMagnitudeRule",
    "InitMethod",
    "LayerPlan",
    "LayerReport",
    "LocalMagnitudeRule",
    "PruneMethod",
    "PruningRule",
    "RandomRule",
    "SAOMaskRule",
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
