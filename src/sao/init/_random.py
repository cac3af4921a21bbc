"""Random building blocks shared by the initializers (Haar (semi-)orthogonal matrices) and their checks."""

from __future__ import annotations

import torch
from torch import Tensor

from sao._random import draw_device
from sao._validation import check_float_tensor


def haar(batch: int, rows: int, cols: int, generator: torch.Generator | None = None) -> Tensor:
    """``batch`` Haar-random ``(rows, cols)`` matrices with orthonormal rows or columns (float64).

    QR of a Gaussian ``(max, min)`` matrix with the columns of ``Q`` multiplied by
    ``sign(diag R)`` (Mezzadri 2007), which makes ``Q`` exactly Haar-distributed on the
    Stiefel manifold. If ``rows <= cols`` the rows are orthonormal (``W Wᵀ = I``), otherwise
    the columns (``Wᵀ W = I``).
    """
    big, small = max(rows, cols), min(rows, cols)
    gauss = torch.randn(batch, big, small, generator=generator, dtype=torch.float64, device=draw_device(generator))
    q, r = torch.linalg.qr(gauss)
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    q = q * torch.where(signs == 0, torch.ones_like(signs), signs).unsqueeze(-2)
    return q.transpose(-2, -1) if rows <= cols else q


def mirror(half: Tensor) -> Tensor:
    """``[[H, -H], [-H, H]]`` over the last two axes (Burkholz & Dubatovka 2019).

    A ReLU layer with this weight, fed ``[relu(u); relu(-u)]``, outputs
    ``[relu(H u); relu(-H u)]``: the ReLU network acts as the linear chain ``H`` on ``u``.
    """
    top = torch.cat([half, -half], dim=-1)
    return torch.cat([top, -top], dim=-2)


def check_weight(tensor: object, fn: str, dims: int, expected: str, at_least: bool = False) -> bool:
    """Check the tensor an initializer fills, in :func:`torch.nn.init.orthogonal_`'s order; return whether it is empty.

    A non-tensor is a ``TypeError``; the wrong number of dimensions (``dims``, or at least
    ``dims`` if ``at_least``) a ``ValueError`` saying what was ``expected``; a dtype that is not
    real floating point (integer, bool, complex) a ``TypeError`` naming it. An empty tensor
    (``numel() == 0``) passes and ``True`` is returned: as in :mod:`torch.nn.init`, the
    initializer then returns it unchanged, skipping the checks that need its sizes.

    Example:
        >>> check_weight(torch.empty(0, 4), "sao_", 2, "a 2-D (out, in) weight")
        True
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{fn} expects a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < dims if at_least else tensor.dim() != dims:
        raise ValueError(f"{fn} expects {expected}, got shape {tuple(tensor.shape)}")
    check_float_tensor(tensor, fn)
    return tensor.numel() == 0
