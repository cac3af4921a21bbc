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
import scipy.sparse
import scipy.sparse.csgraph
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

    Node ids ``0..m-1`` are outputs and ``m..m+n-1`` inputs; labels are reported per side.
    """
    m = _as_bool_matrix(mask)
    rows, cols = m.shape
    biadj = scipy.sparse.coo_matrix(m.numpy().astype(np.int8))
    adjacency = scipy.sparse.bmat([[None, biadj], [biadj.T, None]], format="csr",
                                  dtype=np.int8) if rows and cols else scipy.sparse.csr_matrix((rows + cols,) * 2)
    count, labels = scipy.sparse.csgraph.connected_components(adjacency, directed=False)
    labels = torch.from_numpy(labels.astype(np.int64))
    return Components(int(count), labels[:rows], labels[rows:])


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
