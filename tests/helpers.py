"""Small helpers shared by the test modules (``from helpers import ...``)."""

from __future__ import annotations

import torch


def gen(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def assert_semi_orthogonal(w: torch.Tensor, gain: float = 1.0, atol: float = 1e-10) -> None:
    """``W Wᵀ = gain² I`` (``m <= n``) or ``Wᵀ W = gain² I`` (``m > n``) to ``atol``."""
    m, n = w.shape
    gram = w @ w.T if m <= n else w.T @ w
    torch.testing.assert_close(gram, gain**2 * torch.eye(min(m, n), dtype=w.dtype), atol=atol, rtol=0)
