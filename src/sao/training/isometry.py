"""Isometry tracking during training (paper Fig. 11): singular values of the input–output Jacobian.

For each example ``x_b`` of a fixed probe batch the Jacobian ``J_b = ∂ f(x_b) / ∂ x_b`` has shape
``(outputs, prod(input shape))``; :func:`jacobian_spectrum` pools the singular values of all
``J_b`` and reports their mean and variance. Dynamical isometry means mean ≈ 1, variance ≈ 0.

Cost: one forward pass of the probe batch and one backward pass per output unit (10 for the
paper's classifiers), all probe examples at once — cheap enough to run after every epoch.
This relies on examples not interacting in eval mode (true for Linear/Conv/activations and
batch norm with running statistics).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate

from sao._validation import as_int

__all__ = ["jacobian_spectrum", "probe_batch"]


def jacobian_spectrum(model: nn.Module, probe: Tensor) -> tuple[float, float]:
    """Mean and variance of the singular values of ``∂ model(x) / ∂ x`` over the probe examples.

    The model runs in eval mode (its previous mode is restored); gradients go to the input only,
    so parameter ``.grad`` fields and the autograd state of the caller are untouched.

    Args:
        model: maps a batch ``(B, ...)`` to outputs ``(B, ...)``, examples independent.
        probe: a batch of inputs ``(B, ...)`` on the model's device and dtype.

    Returns:
        ``(mean, variance)`` of the ``B · min(outputs, inputs)`` singular values (population variance).

    Example:
        >>> q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0]
        >>> layer = nn.Linear(6, 6, bias=False).double()
        >>> _ = layer.weight.data.copy_(q)
        >>> mean, var = jacobian_spectrum(layer, torch.randn(3, 6, dtype=torch.float64))
        >>> round(mean, 12), round(var, 12)
        (1.0, 0.0)
    """
    if probe.dim() < 1 or probe.shape[0] == 0:
        raise ValueError(f"probe must be a non-empty batch (B, ...), got shape {tuple(probe.shape)}")
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = probe.detach().clone().requires_grad_(True)
            out = model(x).reshape(x.shape[0], -1)
            rows = []
            for j in range(out.shape[1]):
                (grad,) = torch.autograd.grad(out[:, j].sum(), x, retain_graph=j + 1 < out.shape[1])
                rows.append(grad.reshape(x.shape[0], -1))
        jac = torch.stack(rows, dim=1).detach()  # (B, outputs, inputs)
        sv = torch.linalg.svdvals(jac).flatten()
    finally:
        model.train(was_training)
    return float(sv.mean()), float(sv.var(correction=0))


def probe_batch(loader: DataLoader, size: int) -> Tensor | None:
    """The inputs of the first ``size`` examples of ``loader.dataset`` (indexed, so no RNG is drawn).

    Returns ``None`` when ``size`` is 0. The dataset must be map-style with ``(input, target)`` items.

    Raises:
        TypeError: if ``size`` is not an integer.
        ValueError: if it is negative.
    """
    size = as_int(size, "size", minimum=0)
    if size == 0:
        return None
    dataset = loader.dataset
    count = min(size, len(dataset))  # type: ignore[arg-type]
    return default_collate([dataset[i] for i in range(count)])[0]
