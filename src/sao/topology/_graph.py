"""Graph facts of sparse layers: spectrum, connected components, reachability (paper §IV-A/B).

A layer mask ``M`` of shape ``(m, n) = (out, in)`` is the biadjacency of a bipartite graph
between its ``n`` inputs and ``m`` outputs. Its adjacency matrix is

.. math::

    A = \\begin{bmatrix} 0 & M \\\\ M^\\top & 0 \\end{bmatrix},

whose eigenvalues are ``±σ_i(M)`` plus ``|m - n|`` zeros. For one SAO layer (a disjoint union
of ``g`` complete bipartite graphs ``K_{r,d}``) that is ``±sqrt(r d)`` repeated ``g`` times and
zeros: the layer alone is disconnected (``g`` components) and its second eigenvalue, counted
with multiplicity, equals its first. Connectivity is a property of the *stack* of layers,
which :func:`reachability` measures (paper Fig. 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["Components", "components", "reachability", "spectrum"]


class Components(NamedTuple):
    """Connected components of one layer's bipartite graph.

    Attributes:
        count: number of components (an isolated node is a component of its own).
        row_labels: ``(m,)`` long tensor, component id of each output node.
        col_labels: ``(n,)`` long tensor, component id of each input node.
    """

    count: int
    row_labels: Tensor
    col_labels: Tensor


def _as_bool_matrix(mask: Tensor, name: str = "mask") -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (out, in) tensor, got {getattr(mask, 'shape', type(mask))}")
    return mask.detach().cpu() != 0


def spectrum(mask: Tensor) -> Tensor:
    """Eigenvalues of the bipartite adjacency matrix of ``mask``, in descending order.

    Computed from the singular values of the ``(m, n)`` mask (float64): ``±σ_i`` and
    ``|m - n|`` zeros, ``m + n`` values in all.

    Example:
        >>> spectrum(torch.ones(1, 3)).round(decimals=5).tolist()  # the star K_{1,3}: ±sqrt(3), 0, 0
        [1.73205, 0.0, 0.0, -1.73205]
    """
    m = _as_bool_matrix(mask).double()
    sv = torch.linalg.svdvals(m)
    zeros = sv.new_zeros(sum(m.shape) - 2 * sv.numel())
    return torch.cat([sv, zeros, -sv]).sort(descending=True).values + 0.0  # + 0.0 turns -0.0 into 0.0


def components(mask: Tensor) -> Components:
    """Connected components of the bipartite graph of one ``(m, n)`` mask.

    Node ids ``0..m-1`` are outputs and ``m..m+n-1`` inputs; labels are reported per side. Components are
    numbered in the order of their lowest node id (as ``scipy.sparse.csgraph.connected_components`` does),
    found by breadth-first search: each step takes the inputs of the new outputs and the outputs of the new
    inputs at once, so every row and column of the mask is read once, ``O(m n)`` in all.

    Example:
        >>> c = components(torch.tensor([[1, 0, 0], [0, 0, 1], [1, 0, 0]]))  # outputs 0, 2 share input 0
        >>> c.count, c.row_labels.tolist(), c.col_labels.tolist()
        (3, [0, 1, 0], [0, 2, 1])
    """
    biadjacency = _as_bool_matrix(mask).numpy()
    rows, cols = biadjacency.shape
    labels = np.full(rows + cols, -1, dtype=np.int64)
    row_labels, col_labels = labels[:rows], labels[rows:]  # views: labelling one side labels ``labels``
    no_nodes = np.empty(0, dtype=np.int64)
    count = 0
    for start in range(rows + cols):
        if labels[start] >= 0:
            continue
        labels[start] = count
        new_rows, new_cols = (np.array([start]), no_nodes) if start < rows else (no_nodes, np.array([start - rows]))
        while new_rows.size or new_cols.size:
            reached_cols = np.flatnonzero(biadjacency[new_rows].any(axis=0) & (col_labels < 0))
            reached_rows = np.flatnonzero(biadjacency[:, new_cols].any(axis=1) & (row_labels < 0))
            col_labels[reached_cols] = count
            row_labels[reached_rows] = count
            new_rows, new_cols = reached_rows, reached_cols
        count += 1
    labels_t = torch.from_numpy(labels)
    return Components(count, labels_t[:rows], labels_t[rows:])


def reachability(masks: Sequence[Tensor], cumulative: bool = False) -> Tensor | list[Tensor]:
    """Which inputs reach which outputs through a stack of sparse layers (paper §IV-B, Fig. 8).

    ``masks`` are in forward order, each ``(out, in)``, with ``masks[i+1].shape[1] ==
    masks[i].shape[0]``. The result ``R`` is the boolean product ``M_L ⋯ M_1`` of shape
    ``(out_last, in_first)``: ``R[o, i]`` is ``True`` iff some path leads from input ``i`` to
    output ``o``. (The paper writes the transpose, input × output.)

    Args:
        masks: the layer masks.
        cumulative: return the list of ``R`` after each layer instead of the last one.
    """
    if len(masks) == 0:
        raise ValueError("reachability needs at least one mask")
    mats = [_as_bool_matrix(mk, f"masks[{i}]") for i, mk in enumerate(masks)]
    reach, out = mats[0], [mats[0]]
    for i, mat in enumerate(mats[1:], start=1):
        if mat.shape[1] != reach.shape[0]:
            raise ValueError(f"masks[{i}] has {mat.shape[1]} inputs but masks[{i - 1}] has {reach.shape[0]} outputs")
        reach = (mat.float() @ reach.float()) > 0
        out.append(reach)
    return out if cumulative else reach
