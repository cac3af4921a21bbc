"""Pruning masks at an exact sparsity: local magnitude (LMP), global magnitude (GMP), random (LRP).

These are the mask rules of the paper's pruning baselines (§III-E): fully-connected layers
prune single weights, convolutions whole kernels (score = L1 norm of the kernel, see
:func:`kernel_scores`). Each function keeps exactly ``round((1 - sparsity) · numel)`` entries
(ties are broken by position, deterministically), so the measured sparsity equals the
requested one up to that rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sao._random import check_generator, draw_device

__all__ = ["global_magnitude_masks", "kept_count", "kernel_scores", "magnitude_mask", "random_mask"]


def kept_count(numel: int, sparsity: float) -> int:
    """Entries kept at ``sparsity``: ``round((1 - sparsity) · numel)``."""
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return round((1.0 - float(sparsity)) * numel)


def _top_mask(scores: Tensor, keep: int) -> Tensor:
    """Bool mask of the ``keep`` largest scores; ties at the threshold go to the earliest positions.

    Linear time (a k-th value selection, no sort), so global pruning of a 1000-layer network
    takes a fraction of a second.
    """
    flat = scores.detach().reshape(-1)
    if keep <= 0 or keep >= flat.numel():
        return torch.full(scores.shape, keep > 0, dtype=torch.bool, device=flat.device)
    threshold = torch.kthvalue(flat.cpu(), flat.numel() - keep + 1).values.to(flat.device)
    mask = flat > threshold
    ties = torch.nonzero(flat == threshold).flatten()[: keep - int(mask.sum())]
    mask[ties] = True
    return mask.view(scores.shape)


def kernel_scores(weight: Tensor) -> Tensor:
    """Per-connection scores: ``|w|`` for ``(out, in)`` weights, the kernel L1 norm for ``(out, in, k, k)``."""
    return weight.detach().abs() if weight.dim() == 2 else weight.detach().abs().flatten(2).sum(-1)


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """LMP: keep the ``kept_count`` largest-magnitude connections of one layer.

    Returns a bool ``(out, in)`` mask (per kernel for convolutions, by :func:`kernel_scores`).
    """
    scores = kernel_scores(weight)
    return _top_mask(scores, kept_count(scores.numel(), sparsity))


def global_magnitude_masks(weights: Sequence[Tensor], sparsity: float) -> list[Tensor]:
    """GMP: keep the largest-magnitude connections across all layers together.

    The total number kept is ``kept_count(Σ numel, sparsity)``; single layers may end up denser
    or sparser than ``sparsity`` (or empty), which is what global pruning does.
    """
    if len(weights) == 0:
        raise ValueError("global_magnitude_masks needs at least one weight")
    scores = [kernel_scores(w) for w in weights]
    flat = torch.cat([s.reshape(-1).to(scores[0].device) for s in scores])
    mask = _top_mask(flat, kept_count(flat.numel(), sparsity))
    return [m.view(s.shape).to(s.device) for m, s in zip(mask.split([s.numel() for s in scores]), scores, strict=True)]


def random_mask(shape: Sequence[int], sparsity: float, generator: torch.Generator | None = None) -> Tensor:
    """LRP: a uniformly random bool mask of ``shape`` with exactly ``kept_count`` ``True`` entries."""
    check_generator(generator)
    numel = int(torch.Size(shape).numel())
    keep = kept_count(numel, sparsity)
    order = torch.randperm(numel, generator=generator, device=draw_device(generator)).cpu()
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[order[:keep]] = True
    return mask.view(*shape)
