"""Which layers of a model :func:`sao.sparsify` looks at, and what it decides before any method runs.

A model's *weight layers* are, in ``named_modules`` order and not looking inside one another:
its ``nn.Linear`` modules and every convolution (``torch.nn.modules.conv._ConvNd``:
``nn.Conv1d``/``Conv2d``/``Conv3d``, ``nn.ConvTranspose*d``; subclasses included), the masked
layers of earlier pruning (:class:`~sao.nn.MaskedLinear`, :class:`~sao.nn.MaskedConv2d`) and
sao's own layers (:class:`~sao.nn.SparseLinear`, :class:`~sao.nn.SparseConv2d`,
:class:`~sao.nn.SOCConv2d`, :class:`~sao.nn.ECOConv2d`). Every one is a row of the summary and
counts for ``exclude="first"``/``"last"``, also those sparsify cannot replace, so the first and
last layers are the model's, not the first and last that sparsify happens to support.
Modules with a layer adapter (:mod:`sao.methods.adapters`) are weight layers too: :func:`sao.sparsify`
puts them into their standard form before it looks, so those left are the ones it could not adapt.
A module reachable under several names (a tied layer) is one weight layer with all its names
(``named_modules(remove_duplicate=False)``), so one replacement goes to every place.

Each weight layer gets one decision that does not depend on the method:

- **excluded** (kept dense by choice): by ``exclude`` (first/last position, names, a
  predicate);
- **skipped** (left as it is because it cannot be replaced faithfully): a kind sao does not
  sparsify (``Conv1d``, ``Conv3d``, transposed convolutions, SOC layers); a layer that is
  *already sparse* (``SparseLinear``/``SparseConv2d``, an SAO-ECO layer:
  sparsify builds from dense layers, so a second call with another degree would otherwise be a
  silent no-op); a layer whose weight is *computed by a hook* (:mod:`torch.nn.utils.prune`,
  ``weight_norm``, ``parametrize``: a replacement would drop the hook; see
  :func:`sao.nn.reparametrization`); a *subclass* of
  ``nn.Linear``/``nn.Conv2d`` — its owner may use it without calling its ``forward``
  (as ``nn.MultiheadAttention`` reads ``out_proj.weight``), or the subclass may change
  what the layer computes, so a replacement could be ignored or wrong; a *grouped or
  depthwise* convolution (SAO, the Delta constructions and the kernel-level pruning baselines
  are defined for ``groups=1``); a layer whose weight or bias Parameter is *shared* with
  another module (replacing it would break the tie silently);
- **target**: handed to the method.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.conv import _ConvNd

from sao.methods.adapters import Adaptation, adapter_for, module_places
from sao.nn import ECOConv2d, MaskedConv2d, MaskedLinear, SOCConv2d, SparseConv2d, SparseLinear, reparametrization

__all__ = ["EXCLUDE_CHOICES", "WEIGHT_LAYER_KINDS", "Exclude", "LayerSlot", "find_layers", "layer_dims",
           "target_layers", "weight_shape"]

EXCLUDE_CHOICES = ("first_last", "first", "last", "none")
Exclude = str | Collection[str] | Callable[[str, nn.Module], bool]

_PLAIN = (nn.Linear, nn.Conv2d)
_MASKED = (MaskedLinear, MaskedConv2d)
_SAO = (SparseLinear, SparseConv2d, ECOConv2d, SOCConv2d)
WEIGHT_LAYER_KINDS = (nn.Linear, _ConvNd, *_MASKED, *_SAO)  # every weight layer (module docstring)


@dataclass(frozen=True, eq=False)
class LayerSlot:
    """One weight layer of a model and the method-independent decision about it.

    Attributes:
        names: every name the module is reachable under (more than one for a tied layer).
        module: the layer.
        role: ``"target"``, ``"excluded"`` or ``"skipped"``.
        reason: why it is excluded or skipped (empty for targets).
        refused_when_strict: for skipped layers, whether ``strict=True`` raises instead
            (every skip but subclasses, which are never targets).
    """

    names: tuple[str, ...]
    module: nn.Module
    role: str = "target"
    reason: str = ""
    refused_when_strict: bool = False

    @property
    def name(self) -> str:
        """The first name (``named_modules`` order)."""
        return self.names[0]


def layer_dims(module: nn.Module) -> tuple[int, int]:
    """``(out, in)`` of a weight layer's connection matrix (``(C, C)`` of an ECO layer's inner convolution)."""
    if isinstance(module, ECOConv2d):
        return module.channels, module.channels
    shape = weight_shape(module)
    return shape[0], shape[1]


def weight_shape(module: nn.Module) -> tuple[int, ...]:
    """The shape of a weight layer's (inner, for ECO) weight: ``(out, in)`` or ``(out, in // groups, kh, kw)``."""
    if isinstance(module, ECOConv2d):
        return weight_shape(module.conv)
    if isinstance(module, SparseLinear | SparseConv2d):  # without building the dense weight of a blocked layer
        return (module.topology.out_features, module.topology.in_features, *module.kernel_size)
    adapter = adapter_for(module)
    if adapter is not None and adapter.shape is not None:  # e.g. a weight stored (in, out)
        return adapter.shape(module)
    weight = getattr(module, "weight_orig", None)
    if weight is None:
        weight = module.weight
    return tuple(weight.shape)


def _weight_layers(model: nn.Module) -> list[LayerSlot]:
    """The weight layers (module docstring), not looking inside one another (an ECO layer's inner conv)."""
    places = [(names, m) for names, m in module_places(model)
              if isinstance(m, WEIGHT_LAYER_KINDS) or adapter_for(m) is not None]
    inside = {id(sub) for _, m in places for sub in m.modules() if sub is not m}
    return [LayerSlot(names, m) for names, m in places if id(m) not in inside]


def _exclusions(slots: list[LayerSlot], exclude: Exclude, adaptation: Adaptation) -> dict[int, str]:
    """``{index: reason}`` of the slots ``exclude`` names (a predicate also sees the adapted module a slot
    belongs to, as it was: ``isinstance(module, nn.MultiheadAttention)`` excludes all its projections)."""
    if callable(exclude):
        def named(slot: LayerSlot) -> bool:
            record = adaptation.enclosing(slot.name)
            return (any(exclude(n, slot.module) for n in slot.names)
                    or (record is not None and any(exclude(n, record.original) for n in record.names)))
        return {i: "excluded by the exclude predicate" for i, s in enumerate(slots) if named(s)}
    if isinstance(exclude, str):
        if exclude not in EXCLUDE_CHOICES:
            raise ValueError(f"exclude={exclude!r} is not supported; choose from {', '.join(EXCLUDE_CHOICES)}, "
                             "a collection of layer names, or a predicate (name, module) -> bool")
        out: dict[int, str] = {}
        if slots and exclude in ("first_last", "first"):
            out.update(dict.fromkeys(_with_siblings(slots, 0, adaptation), f"first layer (exclude={exclude!r})"))
        if slots and exclude in ("first_last", "last"):
            for i in _with_siblings(slots, len(slots) - 1, adaptation):
                out.setdefault(i, f"last layer (exclude={exclude!r})")
        return out
    if not isinstance(exclude, Collection) or not all(isinstance(n, str) for n in exclude):
        raise TypeError(f"exclude must be one of {', '.join(EXCLUDE_CHOICES)}, a collection of layer names or a "
                        f"predicate (name, module) -> bool, got {exclude!r}")
    names = set(exclude)

    def named(slot: LayerSlot) -> bool:
        return any(n == name or n.startswith(f"{name}.") for n in slot.names for name in names)

    unknown = {name for name in names if not any(n == name or n.startswith(f"{name}.")
                                                 for s in slots for n in s.names)}
    if unknown:
        raise ValueError(f"exclude names {sorted(unknown)} are neither weight layers (nn.Linear, convolutions, "
                         "sao layers, adapted layers' parts) of the model nor modules holding some; layers are: "
                         f"{[n for s in slots for n in s.names]}")
    return {i: "excluded by name" for i, s in enumerate(slots) if named(s)}


def _with_siblings(slots: list[LayerSlot], i: int, adaptation: Adaptation) -> list[int]:
    """``[i]``, or the indices of every part of the adapted module slot ``i`` belongs to (an attention's four
    projections are one first or last layer: its keys and values read the same input as its queries)."""
    record = adaptation.enclosing(slots[i].name)
    if record is None:
        return [i]
    return [j for j, s in enumerate(slots) if adaptation.enclosing(s.name) is record]


def _owners(model: nn.Module) -> dict[int, list[str]]:
    """``{id(parameter): [first names of the modules holding it directly]}``."""
    owners: dict[int, list[str]] = {}
    for names, module in module_places(model):
        for p in module._parameters.values():
            if p is not None:
                owners.setdefault(id(p), []).append(names[0])
    return owners


def _kind_reason(m: nn.Module, adaptation: Adaptation) -> str | None:
    """Why sparsify cannot take a layer of this kind or state (module docstring); ``None`` if it can."""
    kind = type(m).__name__
    if adapter_for(m) is not None:
        why = adaptation.refused.get(id(m), "sparsify puts it into its standard form first")
        return f"{kind} left as it is: {why} (sao.methods.adapters)"
    if isinstance(m, SparseLinear | SparseConv2d) or (isinstance(m, ECOConv2d) and isinstance(m.conv, SparseConv2d)
                                                      and m.conv.num_blocks > 1):
        degree = (m.conv if isinstance(m, ECOConv2d) else m).degree
        dense = "layer.redrawn()" if isinstance(m, ECOConv2d) else "layer.to_dense()"
        return (f"already sparse ({kind}, degree {degree}); sparsify builds from a dense model (e.g. "
                f"{dense}), so the new request is not applied to it")
    if isinstance(m, SOCConv2d) or (isinstance(m, _ConvNd) and not isinstance(m, nn.Conv2d)):
        return f"not supported: {kind}; sao sparsifies nn.Linear and nn.Conv2d"
    if not isinstance(m, _MASKED):
        return reparametrization(m)
    return None


def _skip_reason(slot: LayerSlot, owners: dict[int, list[str]], adaptation: Adaptation) -> tuple[str, bool] | None:
    """Why a non-excluded layer cannot be replaced, and whether ``strict=True`` refuses it; ``None`` if it can."""
    m = slot.module
    why = _kind_reason(m, adaptation)
    if why is not None:
        return why, True
    base = next((b for b in _PLAIN if isinstance(m, b)), None)
    if base is not None and type(m) is not base:
        return (f"{type(m).__name__} is a subclass of nn.{base.__name__}: not replaced, since its owner may use it "
                "without calling forward (nn.MultiheadAttention reads out_proj.weight) or the subclass may "
                "change what it computes; name it in exclude= to keep it dense silently (with the first and last "
                "layers: a list replaces exclude='first_last')", False)
    groups = getattr(m, "groups", 1)
    if groups != 1:
        kind = "depthwise" if groups == m.in_channels else "grouped"
        return (f"{kind} convolution (groups={groups}) left dense: SAO, the Delta constructions and "
                "kernel-level pruning are defined for groups=1", True)
    for pname, p in m._parameters.items():
        others = [] if p is None else [n for n in owners.get(id(p), []) if n != slot.name]
        if others:
            return (f"its {pname} Parameter is shared with {others[0]!r}; replacing the layer would break the tie, "
                    "so it is left dense", True)
    return None


def find_layers(model: nn.Module, exclude: Exclude = "first_last",
                adaptation: Adaptation | None = None) -> list[LayerSlot]:
    """The weight layers of ``model`` with their role (module docstring), in ``named_modules`` order.

    Args:
        model: any module.
        exclude: see :func:`target_layers`; applied to the weight layers in order (for
            ``"first"``/``"last"``: the first/last weight layer, whatever it is).
        adaptation: what :func:`sao.methods.adapters.adapt_layers` did to ``model`` (its refusals are the
            reasons of the adaptable modules left; an exclude predicate also sees the adapted modules).
    """
    adaptation = Adaptation() if adaptation is None else adaptation
    slots = _weight_layers(model)
    excluded = _exclusions(slots, exclude, adaptation)
    owners = _owners(model)
    out = []
    for i, slot in enumerate(slots):
        if i in excluded:
            out.append(LayerSlot(slot.names, slot.module, "excluded", excluded[i]))
        elif (skip := _skip_reason(slot, owners, adaptation)) is not None:
            out.append(LayerSlot(slot.names, slot.module, "skipped", *skip))
        else:
            out.append(slot)
    return out


def target_layers(model: nn.Module, exclude: Exclude = "first_last") -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs :func:`sao.sparsify` hands to a method.

    The plain ``nn.Linear``/``nn.Conv2d``, masked and dense :class:`~sao.nn.ECOConv2d` layers
    left after ``exclude`` and the method-independent skips (kinds sao does not sparsify, layers
    already sparse or pruned with :mod:`torch.nn.utils.prune`, subclasses, grouped convolutions,
    shared Parameters; module docstring); a tied layer appears once, under its first name.

    Args:
        model: any module.
        exclude: ``"first_last"`` (default), ``"first"``, ``"last"``, ``"none"``, a collection
            of module names, or a predicate ``(name, module) -> bool`` returning ``True`` for
            layers to leave dense. A collection of names keeps *exactly* those layers dense (the
            name of a module that holds weight layers, e.g. an attention module or a ResNet
            stage, keeps all of them dense): it replaces ``"first_last"``, so to keep the first and
            last weight layers dense as well, name them too (e.g. ``exclude=["conv1", "layer4",
            "fc"]``; the warning about skipped layers prints the list that keeps the current choice).

    Raises:
        ValueError: for an unknown ``exclude`` choice or a name that is neither a weight layer nor
            a module holding one.
    """
    return [(s.name, s.module) for s in find_layers(model, exclude) if s.role == "target"]
