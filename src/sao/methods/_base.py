"""The sparsify entry point and the method registry: ``sao.sparsify(model, method="sao", degree=4)``.

:func:`sparsify` finds the ``nn.Linear`` and ``nn.Conv2d`` layers of a model (in
``named_modules`` order), leaves out the excluded ones (by default the first and the last, as
the paper keeps the stem and the classifier dense) and hands the rest to a method from
:data:`METHODS`, which returns their replacements. New methods (pruning baselines, EOI)
register themselves the same way::

    @METHODS.register("my-method")
    class MyMethod(SparsifyMethod):
        def sparsify_layers(self, layers, settings): ...

**Models with ECO layers** (:class:`~sao.nn.ECOConv2d`: ``cnn_eco``, ``lipconvnet``) are treated
differently: their sparse variant, SAO-ECO, is built into the ECO layers at construction, and
the plain layers around them (stem convs, classifier) and the SOC layers are left dense by
SAO-ECO. So on such a model :func:`sparsify` targets the ECO layers only
(:func:`eco_target_layers`) and only takes methods that can prune them (the kernel-level
pruning baselines, :class:`~sao.methods.PruneMethod`); ``sao``, ``rg-n``, ``rg-u`` and ``eoi``
raise ``ValueError`` there. Comparisons stay like for like: every method sparsifies exactly the
layers SAO-ECO does.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from sao._registry import Registry
from sao.nn import ECOConv2d, SOCConv2d

__all__ = ["EXCLUDE_CHOICES", "METHODS", "SparsifyMethod", "SparsifySettings", "connection_mask", "eco_methods",
           "eco_target_layers", "has_eco_layers", "sparsify", "target_layers"]

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
    """A way to sparsify a list of layers; override :meth:`sparsify_layers`.

    Attributes:
        handles_eco: ``True`` if :meth:`sparsify_layers` also takes :class:`~sao.nn.ECOConv2d`
            layers (the targets of :func:`sparsify` on models with ECO layers).
    """

    handles_eco: ClassVar[bool] = False

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], settings: SparsifySettings) -> list[nn.Module]:
        """Return one replacement module per ``(name, module)``, in order."""
        raise NotImplementedError


METHODS: Registry[SparsifyMethod] = Registry("sparsify method", "sao.methods.METHODS")


def _excluded(layers: list[tuple[str, nn.Module]], exclude: Exclude, kinds: str) -> list[tuple[str, nn.Module]]:
    """``layers`` without the ones ``exclude`` names (see :func:`target_layers`)."""
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
        raise ValueError(f"exclude names {sorted(unknown)} are not {kinds} layers of the model; "
                         f"layers are: {[n for n, _ in layers]}")
    return [(n, m) for n, m in layers if n not in names]


def target_layers(model: nn.Module, exclude: Exclude = "first_last") -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs :func:`sparsify` would replace, in ``named_modules`` order.

    The plain ``nn.Linear``/``nn.Conv2d`` layers left after ``exclude``. On a model with
    :class:`~sao.nn.ECOConv2d` layers :func:`sparsify` prunes :func:`eco_target_layers` instead.

    Args:
        model: any module.
        exclude: ``"first_last"`` (default), ``"first"``, ``"last"``, ``"none"``, a collection
            of module names, or a predicate ``(name, module) -> bool`` returning ``True`` for
            layers to leave dense.
    """
    layers = [(n, m) for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]
    return _excluded(layers, exclude, "Linear/Conv2d")


def eco_methods() -> list[str]:
    """Names of the registered methods that can sparsify a model with ECO layers (``handles_eco``)."""
    return [name for name in METHODS.names() if METHODS.get(name).handles_eco]


def has_eco_layers(model: nn.Module) -> bool:
    """Whether ``model`` holds :class:`~sao.nn.ECOConv2d` layers (then :func:`sparsify` targets only them)."""
    return any(isinstance(m, ECOConv2d) for m in model.modules())


def eco_target_layers(model: nn.Module, exclude: Exclude = "first_last") -> list[tuple[str, nn.Module]]:
    """The :class:`~sao.nn.ECOConv2d` ``(name, module)`` pairs :func:`sparsify` prunes on a model with ECO layers.

    ``exclude`` is applied to the model's weight layers in ``named_modules`` order — plain
    ``nn.Linear``/``nn.Conv2d``, :class:`~sao.nn.SOCConv2d` and ``ECOConv2d`` (not looking
    inside SOC/ECO layers) — exactly as in :func:`target_layers`; of what is left only the ECO
    layers are returned. The plain and SOC layers always stay dense, as SAO-ECO leaves them,
    so every method sparsifies the same layers. For ``cnn_eco`` and ``lipconvnet`` the first
    and last layers are never ECO, so the default returns every ECO layer.
    """
    layers: list[tuple[str, nn.Module]] = []
    inside: str | None = None  # prefix of the SOC/ECO layer being walked: its parts are not layers of their own
    for n, m in model.named_modules():
        if inside is not None and n.startswith(inside):
            continue
        if isinstance(m, ECOConv2d | SOCConv2d):
            layers.append((n, m))
            inside = f"{n}." if n else ""
        elif type(m) in (nn.Linear, nn.Conv2d):
            layers.append((n, m))
    return [(n, m) for n, m in _excluded(layers, exclude, "Linear/Conv2d/SOC/ECO") if isinstance(m, ECOConv2d)]


def sparsify(model: nn.Module, method: str = "sao", degree: int | None = None, sparsity: float | None = None,
             backend: str = "blocked", exclude: Exclude = "first_last", activation: str = "tanh",
             gain: float = 1.0, generator: torch.Generator | None = None) -> nn.Module:
    """Replace the ``nn.Linear``/``nn.Conv2d`` layers of ``model`` by sparse ones, in place.

    With ``method="sao"`` every target layer becomes a :class:`~sao.nn.SparseLinear`
    (sparse orthogonal) or :class:`~sao.nn.SparseConv2d` (SAO-Delta) with the given degree or
    sparsity; ``"rg-n"``/``"rg-u"`` use Gaussian/uniform values on the same kind of topology.
    Weights are drawn afresh (this is sparsity *before* training); biases start at zero.

    On a model with :class:`~sao.nn.ECOConv2d` layers only the ECO layers are targets
    (:func:`eco_target_layers`; stem, SOC layers and classifier stay dense, as SAO-ECO leaves
    them) and only the pruning methods apply: they prune whole kernels of each ECO layer's inner
    ``C x C`` convolution (:mod:`sao.methods.prune_methods`). SAO-ECO itself is built at
    construction (``cnn_eco(..., sparsity=...)``), not by this function.

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
        ValueError: on an unknown method/exclude choice, a degree/sparsity that a target
            layer cannot take (the message names the layer and the valid values), or a method
            that cannot prune ECO layers on a model with ECO layers.

    Example:
        >>> net = nn.Sequential(nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10))
        >>> net = sparsify(net, degree=4, generator=torch.Generator().manual_seed(0))
        >>> type(net[2]).__name__, net[2].sparsity
        ('SparseLinear', 0.984375)
    """
    chosen = METHODS.get(method)
    settings = SparsifySettings(degree, sparsity, backend, activation, gain, generator)
    if has_eco_layers(model):
        if not chosen.handles_eco:
            raise ValueError(f"method={method!r} cannot sparsify a model with ECOConv2d layers: SAO-ECO is built "
                             "into the ECO layers at construction (e.g. cnn_eco(..., sparsity=0.5), "
                             "lipconvnet(..., sparsity=0.5)); on ECO models sparsify takes the kernel pruning "
                             f"methods {', '.join(eco_methods())}")
        layers = eco_target_layers(model, exclude)
    else:
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
    and plain dense layers (all ``True``). For an :class:`~sao.nn.ECOConv2d` it is the ``C x C``
    mask of its inner convolution (SAO-ECO topology or pruning mask; all ``True`` when dense).
    """
    if isinstance(module, ECOConv2d):
        return connection_mask(module.conv)
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
