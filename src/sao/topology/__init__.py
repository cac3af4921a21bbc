"""Sparse layer topologies (paper §IV-A) and their graph facts (§IV-B).

The public names are :class:`Topology`, :func:`ramanujan`, :func:`valid_degrees`,
:func:`degree_for_sparsity`, :func:`resolve_degree`, :func:`resolve_topology`, :func:`nearest_degree`,
:func:`scatter_blocks`, :func:`spectrum`,
:func:`components`, :func:`reachability` and, for contrast, random biregular graphs from
:func:`configuration_model`.
"""

from sao.topology._graph import Components, components, reachability, spectrum
from sao.topology._ramanujan import (
    Topology,
    degree_for_sparsity,
    nearest_degree,
    ramanujan,
    resolve_degree,
    resolve_topology,
    scatter_blocks,
    valid_degrees,
)
from sao.topology._random_graphs import configuration_model

__all__ = [
    "Components",
    "Topology",
    "components",
    "configuration_model",
    "degree_for_sparsity",
    "nearest_degree",
    "ramanujan",
    "reachability",
    "resolve_degree",
    "resolve_topology",
    "scatter_blocks",
    "spectrum",
    "valid_degrees",
]
