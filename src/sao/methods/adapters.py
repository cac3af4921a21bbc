"""Layer adapters: how :func:`sao.sparsify` reaches layers that are not ``nn.Linear``/``nn.Conv2d``.

Some models hold their weights in modules sparsify cannot replace one for one:
``nn.MultiheadAttention`` packs the Q, K and V projections into one ``in_proj_weight`` and reads
``out_proj.weight`` without calling ``out_proj``; GPT-2's ``Conv1D`` (Hugging Face
``transformers``) is a linear layer whose weight is stored ``(in, out)``. An *adapter* gives such a
module a **standard form**: a module that computes the same function (to float rounding) out of
weight layers sparsify knows, here ``nn.Linear`` — :class:`~sao.nn.SparseMultiheadAttention`
with four ``nn.Linear`` projections for ``nn.MultiheadAttention``, an ``nn.Linear`` holding the
transposed weight for ``Conv1D``.

:func:`sao.sparsify` puts every adaptable module into its standard form first, plans and
replaces the standard form's layers like any others (each projection is a row of the summary,
named ``<module>.q_proj`` … ``<module>.out_proj``; ``exclude=`` takes those names, or the
module's own name for all of its parts, and an exclude predicate also sees the module as it was),
and afterwards puts back the original module wherever none of its parts changed (all excluded or
skipped), so a model sparsify does not change keeps its modules (and PyTorch's fast paths). The
standard form holds copies of the weights (new Parameters, with the same ``requires_grad``): an
optimizer must be built after sparsify. A module that cannot be adapted faithfully — one with
hooks or parametrizations, which a new module would drop, one sharing a Parameter or child module
with the rest of the model, which it would untie, or one whose adapter raises — is left as it is
and reported as skipped.

**Registering an adapter** for another library's layer needs no change to sao: register a
:class:`LayerAdapter` under the layer's class path (:func:`class_path`). Only modules of exactly
that class are adapted (a subclass may compute something else). Example, for a linear layer
that stores its weight transposed:

    >>> import torch
    >>> from torch import nn
    >>> import sao
    >>> from sao.methods import ADAPTERS, LayerAdapter, class_path, linear_from_transposed
    >>> class TLinear(nn.Module):  # y = x @ weight + bias, weight (in, out)
    ...     def __init__(self, n, m):
    ...         super().__init__()
    ...         self.weight, self.bias = nn.Parameter(torch.randn(n, m)), nn.Parameter(torch.zeros(m))
    ...     def forward(self, x):
    ...         return x @ self.weight + self.bias
    >>> adapter = LayerAdapter(linear_from_transposed, "weight stored (in, out)")
    >>> adapter = ADAPTERS.register(class_path(TLinear), adapter)
    >>> net = nn.Sequential(nn.Linear(8, 64), TLinear(64, 64), nn.Linear(64, 2))
    >>> type(sao.sparsify(net, degree=8)[1]).__name__
    'SparseLinear'
    >>> ADAPTERS.unregister(class_path(TLinear)) is adapter
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from sao._registry import Registry
from sao.nn import SparseMultiheadAttention, reparametrization

__all__ = ["ADAPTERS", "Adaptation", "Adapted", "LayerAdapter", "adapt_layers", "adapter_for", "class_path",
           "linear_from_transposed", "module_places", "refusal", "restore_unchanged"]


@dataclass(frozen=True)
class LayerAdapter:
    """How :func:`sao.sparsify` sees one kind of module (module docstring).

    Attributes:
        to_standard: builds the standard form of a module of that kind: a new module computing the same
            function out of ``nn.Linear``/``nn.Conv2d`` layers (with copies of the weights, on the
            module's device and dtype, in its training mode).
        description: what the standard form is, for the docs and messages.
        shape: the ``(out, in)`` shape to report for a module of that kind left as it is (its weight's
            shape when not given; nothing where it has none).
    """

    to_standard: Callable[[nn.Module], nn.Module]
    description: str = ""
    shape: Callable[[nn.Module], tuple[int, ...]] | None = None


ADAPTERS: Registry[LayerAdapter] = Registry("layer adapter", "sao.methods.ADAPTERS", of=LayerAdapter)


def class_path(kind: type) -> str:
    """The key of ``kind`` in :data:`ADAPTERS`: ``"module.QualName"`` (so a registration needs no import of it)."""
    return f"{kind.__module__}.{kind.__qualname__}"


def adapter_for(module: nn.Module) -> LayerAdapter | None:
    """The adapter registered for exactly ``type(module)``, or ``None``."""
    key = class_path(type(module))
    return ADAPTERS.get(key) if key in ADAPTERS else None


_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                 "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                 "_load_state_dict_post_hooks")
_TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")


def refusal(module: nn.Module, model: nn.Module | None = None, names: tuple[str, ...] = ()) -> str | None:
    """Why an adaptable ``module`` cannot take its standard form faithfully; ``None`` if it can.

    A standard form is a new module with new Parameters: hooks (module hooks of every kind, hooks on its
    Parameters) and parametrizations on the module or its children would be lost, and a Parameter or child
    module it shares with the rest of ``model`` (where ``module`` is at ``names``) would be untied. Such a
    module is left as it is.
    """
    for name, sub in module.named_modules():
        where = f"its child {name!r}" if name else "it"
        hooks = [kind.strip("_") for kind in _MODULE_HOOKS if getattr(sub, kind, None)]
        hooks += [f"{pname}.{kind.strip('_')}" for pname, p in sub.named_parameters(recurse=False)
                  for kind in _TENSOR_HOOKS if getattr(p, kind, None)]
        if hooks:
            return (f"{where} has {', '.join(hooks)}, which a standard form (a new module) would drop; remove "
                    "them first")
        why = reparametrization(sub)
        if why is not None:
            return f"{where} is {why}" if name else why
    return None if model is None else _shared(module, model, names)


def _shared(module: nn.Module, model: nn.Module, names: tuple[str, ...]) -> str | None:
    """Which Parameter or child of ``module`` (at ``names`` in ``model``) a module elsewhere in ``model`` holds."""
    under = tuple(f"{n}." for n in names)
    inside = {id(m): n for n, m in module.named_modules(remove_duplicate=False)}
    params = {id(p): n for n, p in module.named_parameters(remove_duplicate=False)}
    for name, other in model.named_modules(remove_duplicate=False):
        if name in names or name.startswith(under):
            continue
        if id(other) in inside:
            return (f"its child {inside[id(other)]!r} is also {name!r} elsewhere in the model; a standard form "
                    "would untie them, so it is left as it is")
        for pname, p in other.named_parameters(recurse=False):
            if id(p) in params:
                return (f"its {params[id(p)]} Parameter is shared with {name!r} ({pname}); a standard form would "
                        "untie them, so it is left as it is")
    return None


@dataclass(eq=False)
class Adapted:
    """One module :func:`adapt_layers` put into its standard form.

    Attributes:
        names: every name it is reachable under (a tied module has several).
        original: the module as it was.
        standard: its standard form, now at those names.
        parts: the standard form's submodules as built (``{relative name: module}``), to tell
            afterwards whether any was replaced.
    """

    names: tuple[str, ...]
    original: nn.Module
    standard: nn.Module
    parts: dict[str, nn.Module] = field(default_factory=dict)

    def changed(self, model: nn.Module) -> bool:
        """Whether anything of the standard form was replaced in ``model`` since it was built."""
        if model.get_submodule(self.names[0]) is not self.standard:
            return True
        return any(self.standard.get_submodule(n) is not m for n, m in self.parts.items() if n)


@dataclass(eq=False)
class Adaptation:
    """What :func:`adapt_layers` did to a model.

    Attributes:
        adapted: one :class:`Adapted` per module put into its standard form, in ``named_modules`` order.
        refused: ``{id(module): reason}`` of the adaptable modules left as they are (:func:`refusal`, or
            the adapter's error).
    """

    adapted: list[Adapted] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)

    def enclosing(self, name: str) -> Adapted | None:
        """The adapted module whose standard form holds the layer at ``name``, if any."""
        return next((a for a in self.adapted for n in a.names if name == n or name.startswith(f"{n}.")), None)


def adapt_layers(model: nn.Module) -> Adaptation:
    """Put every adaptable module of ``model`` into its standard form, in place (module docstring).

    Modules with a registered adapter (exactly their class) and no :func:`refusal` are replaced at every
    name they have; nested adaptable modules are adapted outermost first (the standard form's own parts are
    not adapted again). An adapter that raises leaves its module as it is (the error is the reason). Undo
    with :func:`restore_unchanged` (``everything=True``: all).
    """
    done = Adaptation()
    for names, module in module_places(model):
        if names == ("",) or adapter_for(module) is None or done.enclosing(names[0]) is not None:
            continue  # the model itself; not adaptable; inside a module already adapted (its copy is in there)
        why = refusal(module, model, names)
        if why is None:
            try:
                standard = adapter_for(module).to_standard(module)
            except Exception as err:
                why = f"its standard form could not be built ({type(err).__name__}: {err})"
        if why is not None:
            done.refused[id(module)] = why
            continue
        standard.train(module.training)
        for name in names:
            model.set_submodule(name, standard)
        done.adapted.append(Adapted(names, module, standard, dict(standard.named_modules())))
    return done


def module_places(model: nn.Module) -> list[tuple[tuple[str, ...], nn.Module]]:
    """Every module of ``model`` with all the names it is reachable under, in order of first appearance."""
    names: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
        modules.setdefault(id(module), module)
    return [(tuple(names[key]), modules[key]) for key in names]


def restore_unchanged(model: nn.Module, adaptation: Adaptation, *, everything: bool = False) -> list[Adapted]:
    """Put back the original of each adapted module none of whose parts changed (all, with ``everything``).

    Returns:
        the adapted modules that stay in their standard form.
    """
    kept = []
    for record in reversed(adaptation.adapted):
        if everything or not record.changed(model):
            for name in record.names:
                model.set_submodule(name, record.original)
        else:
            kept.append(record)
    return kept[::-1]


@torch.no_grad()
def linear_from_transposed(module: nn.Module) -> nn.Linear:
    """An ``nn.Linear`` computing ``x @ module.weight + module.bias`` (a weight stored ``(in, out)``, as GPT-2's
    ``Conv1D``); the weights are copied (new Parameters, the same ``requires_grad``)."""
    weight, bias = module.weight, getattr(module, "bias", None)
    n, m = weight.shape
    linear = nn.Linear(n, m, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    linear.weight.copy_(weight.t())
    linear.weight.requires_grad_(weight.requires_grad)  # a frozen weight stays frozen
    if bias is not None:
        linear.bias.copy_(bias)
        linear.bias.requires_grad_(bias.requires_grad)
    return linear


ADAPTERS.register(class_path(nn.MultiheadAttention), LayerAdapter(
    SparseMultiheadAttention.from_dense,
    "sao.nn.SparseMultiheadAttention with nn.Linear projections q_proj, k_proj, v_proj, out_proj"))
ADAPTERS.register("transformers.pytorch_utils.Conv1D", LayerAdapter(
    linear_from_transposed, "nn.Linear with the transposed weight (GPT-2's Conv1D stores it (in, out))",
    lambda module: tuple(module.weight.shape[::-1])))
