"""Random bipartite graphs for contrast with SAO: the biregular configuration model."""

from __future__ import annotations

from collections import Counter

import torch
from torch import Tensor

from sao._random import check_generator, draw_device
from sao._validation import as_int

__all__ = ["configuration_model"]


def configuration_model(m: int, n: int, row_degree: int, generator: torch.Generator | None = None) -> Tensor:
    """A random simple biregular bipartite graph: every output has ``row_degree`` inputs.

    Each of the ``m`` outputs gets ``row_degree`` stubs and each of the ``n`` inputs
    ``c = m · row_degree / n`` stubs; a uniformly random matching of the stubs gives the edges
    (Bollobás' configuration model). Repeated edges are then removed by degree-preserving
    double-edge swaps with random partner edges, which keeps every degree exact.

    Returns:
        bool ``(m, n)`` mask with row sums ``row_degree`` and column sums ``c``.

    Raises:
        TypeError: if ``m``, ``n`` or ``row_degree`` is not an integer.
        ValueError: if ``c`` is not a whole number, a degree exceeds the other side's size, or
            the repeated edges cannot be swapped away (nearly complete graphs).
    """
    check_generator(generator)
    m, n = as_int(m, "m", minimum=1), as_int(n, "n", minimum=1)
    row_degree = as_int(row_degree, "row_degree", minimum=1)
    if row_degree > n or (m * row_degree) % n or m * row_degree // n > m:
        raise ValueError(f"row_degree={row_degree} must be in [1, {n}] with m*row_degree divisible by n={n}")
    col_degree = m * row_degree // n
    rows = torch.arange(m).repeat_interleave(row_degree).tolist()
    perm = torch.randperm(n * col_degree, generator=generator, device=draw_device(generator)).cpu()
    cols = torch.arange(n).repeat_interleave(col_degree)[perm].tolist()
    counts = Counter(zip(rows, cols, strict=True))
    duplicates = [e for e, (r, c) in enumerate(zip(rows, cols, strict=True)) if counts[r, c] > 1]
    budget = 1000 * len(duplicates) + 1000
    picks = torch.randint(len(rows), (budget,), generator=generator, device=draw_device(generator)).tolist()
    for e in duplicates:
        while counts[rows[e], cols[e]] > 1:
            if not picks:
                raise ValueError(f"could not remove repeated edges for {m}x{n}, row_degree={row_degree}: "
                                 "the graph is too dense for the configuration model")
            f = picks.pop()
            r, c, r2, c2 = rows[e], cols[e], rows[f], cols[f]
            if r == r2 or c == c2 or counts[r, c2] or counts[r2, c]:
                continue
            counts[r, c] -= 1
            counts[r2, c2] -= 1
            counts[r, c2] += 1
            counts[r2, c] += 1
            cols[e], cols[f] = c2, c
    mask = torch.zeros(m, n, dtype=torch.bool)
    mask[rows, cols] = True
    return mask
