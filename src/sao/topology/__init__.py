"""Sparse layer topologies (paper §IV-A) and their graph facts (§IV-B).

The public names are :class:`Topology`, :func:`ramanujan`, :func:`valid_degrees`,
:func:`degree_for_sparsity`, :func:`resolve_degree`, :func:`scatter_blocks`, :func:`spectrum`,
:func:`components` and :func:`reachability`.
"""

from sao.topology._graph import Components, components, reachability, spectrum
from sao.topology._ramanujan import (
    Topology,
    degree_for_sparsity,
    ramanujan,
    resolve_degree,
    scatter_blocks,
    valid_degrees,
)

__all__ = [
    "Components",
    "Topology",
    "components",
    "degree_for_sparsity",
    "ramanujan",
    "reachability",
    "resolve_degree",
    "scatter_blocks",
    "spectrum",
    "valid_degrees",
]
