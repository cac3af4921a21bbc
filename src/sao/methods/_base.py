"""The sparsify entry point and the method registry: ``sao.sparsify(model, method="sao", degree=4)``.

:func:`sparsify` finds the ``nn.Linear`` and ``nn.Conv2d`` layers of a model (in
``named_modules`` order), leaves out the excluded ones (by default the first and the last, as
the paper keeps the stem and the classifier dense) and hands the rest to a method from
:data:`METHODS`, which returns their replacements. New methods (pruning baselines, EOI)
register themselves the same way::

    @METHODS.register("my-method")
    class MyMethod(SparsifyMethod):
        def sparsify_layers(self, layers, settings): ...
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sao._registry import Registry

__all__ = ["EXCLUDE_CHOICES", "METHODS", "SparsifyMethod", "SparsifySettings", "sparsify", "target_layers"]

EXCLUDE_CHOICES = ("first_last", "first", "last", "none")
Exclude = str | Collection[str] | Callable[[str, nn.Module], bool]


@dataclass(frozen=True)
class SparsifySettings:
    """What every method receives besides the layers.

    Attributes:
        degree: SAO degree per layer (exclusive with ``sparsity``).
        sparsity: target fraction of zero weights (kernels) per layer.
        backend: ``"blocked"`` or ``"masked"`` for the new sparse layers.
        activation: the network's activation (``"relu"`` selects mirrored SAO).
        gain: weight multiplier at initialisation.
        generator: source of randomness.
    """

    degree: int | None = None
    sparsity: float | None = None
    backend: str = "blocked"
    activation: str = "tanh"
    gain: float = 1.0
    generator: torch.Generator | None = None


class SparsifyMethod:
    """A way to sparsify a list of layers; override :meth:`sparsify_layers`."""

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], settings: SparsifySettings) -> list[nn.Module]:
        """Return one replacement module per ``(name, module)``, in order."""
        raise NotImplementedError


METHODS: Registry[SparsifyMethod] = Registry("sparsify method", "sao.methods.METHODS")


def target_layers(model: nn.Module, exclude: Exclude = "first_last") -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs :func:`sparsify` would replace, in ``named_modules`` order.

    Args:
        model: any module.
        exclude: ``"first_last"`` (default), ``"first"``, ``"last"``, ``"none"``, a collection
            of module names, or a predicate ``(name, module) -> bool`` returning ``True`` for
            layers to leave dense.
    """
    layers = [(n, m) for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]
    if callable(exclude):
        return [(n, m) for n, m in layers if not exclude(n, m)]
    if isinstance(exclude, str):
        if exclude not in EXCLUDE_CHOICES:
            raise ValueError(f"exclude={exclude!r} is not supported; choose from {', '.join(EXCLUDE_CHOICES)}, "
                             "a collection of layer names, or a predicate (name, module) -> bool")
        first = 1 if exclude in ("first_last", "first") else 0
        last = len(layers) - 1 if exclude in ("first_last", "last") else len(layers)
        return layers[first:max(first, last)]
    names = set(exclude)
    unknown = names - {n for n, _ in layers}
    if unknown:
        raise ValueError(f"exclude names {sorted(unknown)} are not Linear/Conv2d layers of the model; "
                         f"layers are: {[n for n, _ in layers]}")
    return [(n, m) for n, m in layers if n not in names]


def sparsify(model: nn.Module, method: str = "sao", degree: int | None = None, sparsity: float | None = None,
             backend: str = "blocked", exclude: Exclude = "first_last", activation: str = "tanh",
             gain: float = 1.0, generator: torch.Generator | None = None) -> nn.Module:
    """Replace the ``nn.Linear``/``nn.Conv2d`` layers of ``model`` by sparse ones, in place.

    With ``method="sao"`` every target layer becomes a :class:`~sao.nn.SparseLinear`
    (sparse orthogonal) or :class:`~sao.nn.SparseConv2d` (SAO-Delta) with the given degree or
    sparsity; ``"rg-n"``/``"rg-u"`` use Gaussian/uniform values on the same kind of topology.
    Weights are drawn afresh (this is sparsity *before* training); biases start at zero.

    Args:
        model: the model to change.
        method: a name in :data:`METHODS` (``sao.methods.METHODS.names()``).
        degree: SAO degree of every target layer (exclusive with ``sparsity``).
        sparsity: fraction of zero weights per target layer.
        backend: ``"blocked"`` (fast, memory ∝ density) or ``"masked"`` (the paper's way).
        exclude: layers to keep dense; see :func:`target_layers`.
        activation: the network's activation; ``"relu"`` selects the mirrored SAO construction.
        gain: weight multiplier.
        generator: source of randomness for every layer, drawn in module order.

    Returns:
        ``model``, changed in place.

    Raises:
        ValueError: on an unknown method/exclude choice, or a degree/sparsity that a target
            layer cannot take (the message names the layer and the valid values).

    Example:
        >>> net = nn.Sequential(nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10))
        >>> net = sparsify(net, degree=4, generator=torch.Generator().manual_seed(0))
        >>> type(net[2]).__name__, net[2].sparsity
        ('SparseLinear', 0.984375)
    """
    chosen = METHODS.get(method)
    settings = SparsifySettings(degree, sparsity, backend, activation, gain, generator)
    layers = target_layers(model, exclude)
    if any(name == "" for name, _ in layers):
        raise ValueError("sparsify changes the layers inside a model; to make a single layer sparse, "
                         "build sao.nn.SparseLinear / SparseConv2d directly")
    for (name, _), new in zip(layers, chosen.sparsify_layers(layers, settings), strict=True):
        model.set_submodule(name, new)
    return model


def connection_mask(module: nn.Module) -> Tensor:
    """Bool ``(out, in)`` mask of the connections a layer has (kernels, for convolutions).

    Works for :mod:`sao.nn` sparse layers (their ``mask``), layers pruned with
    :mod:`torch.nn.utils.prune` (a connection exists if any of its kernel taps is unmasked)
    and plain dense layers (all ``True``).
    """
    mask = getattr(module, "mask", None)
    if isinstance(mask, Tensor):
        return mask
    pruned = getattr(module, "weight_mask", None)
    if isinstance(pruned, Tensor):
        return (pruned != 0).flatten(2).any(-1) if pruned.dim() > 2 else pruned != 0
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() < 2:
        raise ValueError(f"{type(module).__name__} has no (out, in[, k, k]) weight")
    return torch.ones(weight.shape[:2], dtype=torch.bool, device=weight.device)
