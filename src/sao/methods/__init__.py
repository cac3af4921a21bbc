"""Sparsify methods (SAO, RG-N, RG-U, Dense, LMP-S/T, GMP-S/T, LRP, RG-S/T, EOI), :func:`sparsify` and its summary.

Methods are registered by name in :data:`METHODS` (how to add one: :mod:`sao.methods._base`);
each declares what it takes: a target (:attr:`SparsifyMethod.needs_target`) and its own typed
settings (:attr:`SparsifyMethod.settings_type`: :class:`InitSettings`, :class:`RandomGraphSettings`,
:class:`RedrawSettings` or :class:`NoSettings`). The pruning baselines are a :class:`PruneMethod` with a
:class:`PruningRule` (:mod:`sao.methods.prune_methods`). Modules other than ``nn.Linear``/``nn.Conv2d``
(``nn.MultiheadAttention``, GPT-2's ``Conv1D``) are reached through layer adapters (:mod:`sao.methods.adapters`).
"""

from sao.methods import adapters, eoi_method, init_methods, prune_methods
from sao.methods._base import (
    EXCLUDE_CHOICES,
    METHODS,
    CommonSettings,
    Exclude,
    LayerPlan,
    NoSettings,
    SparsifyMethod,
    SparsifyRequest,
    connection_mask,
    degree_plan,
    sparsify,
    target_layers,
)
from sao.methods._summary import LayerReport, SparsifySummary
from sao.methods.adapters import ADAPTERS, LayerAdapter, class_path, linear_from_transposed
from sao.methods.eoi_method import EOIMethod
from sao.methods.init_methods import InitMethod, InitSettings, RandomGraphSettings
from sao.methods.prune_methods import (
    PRUNING_RULES,
    GlobalMagnitudeRule,
    LocalMagnitudeRule,
    PruneMethod,
    PruningRule,
    RandomRule,
    RedrawSettings,
    SAOMaskRule,
)

__all__ = [
    "ADAPTERS",
    "EXCLUDE_CHOICES",
    "METHODS",
    "PRUNING_RULES",
    "CommonSettings",
    "EOIMethod",
    "Exclude",
    "GlobalMagnitudeRule",
    "InitMethod",
    "InitSettings",
    "LayerAdapter",
    "LayerPlan",
    "LayerReport",
    "LocalMagnitudeRule",
    "NoSettings",
    "PruneMethod",
    "PruningRule",
    "RandomGraphSettings",
    "RandomRule",
    "RedrawSettings",
    "SAOMaskRule",
    "SparsifyMethod",
    "SparsifyRequest",
    "SparsifySummary",
    "adapters",
    "class_path",
    "connection_mask",
    "degree_plan",
    "eoi_method",
    "init_methods",
    "linear_from_transposed",
    "prune_methods",
    "sparsify",
    "target_layers",
]
