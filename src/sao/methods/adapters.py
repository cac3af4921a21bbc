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
module's own name for all of its parts), and afterwards puts back the original module wherever
none of its parts changed (excluded, skipped, method ``"dense"``), so a model sparsify does not
change keeps its modules (and PyTorch's fast paths). A module that cannot be adapted faithfully —
one with hooks or parametrizations, which a new module would drop — is left as it is and
reported as skipped.

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

__all__ = ["ADAPTERS", "Adapted", "LayerAdapter", "adapt_layers", "adapter_for", "class_path",
           "linear_from_transposed", "refusal", "restore_unchanged"]


@dataclass(frozen=True)
class LayerAdapter:
    """How :func:`sao.sparsify` sees one kind of module (module docstring).

    Attributes:
        to_standard: builds the standard form of a module of that kind: a new module computing the same
            function out of ``nn.Linear``/``nn.Conv2d`` layers (with copies of the weights, on the
            module's device and dtype, in its training mode).
        description: what the standard form is, for the docs and messages.
    """

    to_standard: Callable[[nn.Module], nn.Module]
    description: str = ""


ADAPTERS: Registry[LayerAdapter] = Registry("layer adapter", "sao.methods.ADAPTERS", of=LayerAdapter)


def class_path(kind: type) -> str:
    """The key of ``kind`` in :data:`ADAPTERS`: ``"module.QualName"`` (so a registration needs no import of it)."""
    return f"{kind.__module__}.{kind.__qualname__}"


def adapter_for(module: nn.Module) -> LayerAdapter | None:
    """The adapter registered for exactly ``type(module)``, or ``None``."""
    key = class_path(type(module))
    return ADAPTERS.get(key) if key in ADAPTERS else None


def refusal(module: nn.Module) -> str | None:
    """Why an adaptable ``module`` cannot take its standard form faithfully; ``None`` if it can.

    A standard form is a new module: hooks (forward, pre-forward, backward, state-dict) and
    parametrizations on the module or its children would be lost, so such a module is left as it is.
    """
    for name, sub in module.named_modules():
        where = f"its child {name!r}" if name else "it"
        hooks = [kind for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                                   "_backward_pre_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks")
                 if getattr(sub, kind, None)]
        if hooks:
            return (f"{where} has {', '.join(h.strip('_') for h in hooks)}, which a standard form (a new module) "
                    "would drop; remove them first")
        why = reparametrization(sub)
        if why is not None:
            return f"{where} is {why}" if name else why
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


def adapt_layers(model: nn.Module) -> list[Adapted]:
    """Put every adaptable module of ``model`` into its standard form, in place (module docstring).

    Modules with a registered adapter (exactly their class) and no :func:`refusal` are replaced at
    every name they have; nested adaptable modules are adapted outermost first (the standard form's
    own parts are not adapted again). Undo with :func:`restore_unchanged` (``everything=True``: all).

    Returns:
        one :class:`Adapted` per replaced module, in ``named_modules`` order.
    """
    names: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if name and adapter_for(module) is not None:
            names.setdefault(id(module), []).append(name)
            modules.setdefault(id(module), module)
    done: list[Adapted] = []
    for key, module in modules.items():
        if any(n.startswith(f"{a}.") for a in (d.names[0] for d in done) for n in names[key]):
            continue  # inside a module already adapted: its standard form holds a copy
        if refusal(module) is not None:
            continue
        standard = adapter_for(module).to_standard(module)
        standard.train(module.training)
        for name in names[key]:
            model.set_submodule(name, standard)
        done.append(Adapted(tuple(names[key]), module, standard, dict(standard.named_modules())))
    return done


def restore_unchanged(model: nn.Module, adapted: list[Adapted], *, everything: bool = False) -> None:
    """Put back the original of each adapted module none of whose parts changed (all, with ``everything``)."""
    for record in reversed(adapted):
        if everything or not record.changed(model):
            for name in record.names:
                model.set_submodule(name, record.original)


@torch.no_grad()
def linear_from_transposed(module: nn.Module) -> nn.Linear:
    """An ``nn.Linear`` computing ``x @ module.weight + module.bias`` (a weight stored ``(in, out)``, as GPT-2's
    ``Conv1D``); the weights are copied."""
    weight, bias = module.weight, getattr(module, "bias", None)
    n, m = weight.shape
    linear = nn.Linear(n, m, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    linear.weight.copy_(weight.t())
    if bias is not None:
        linear.bias.copy_(bias)
    return linear


ADAPTERS.register(class_path(nn.MultiheadAttention), LayerAdapter(
    SparseMultiheadAttention.from_dense,
    "sao.nn.SparseMultiheadAttention with nn.Linear projections q_proj, k_proj, v_proj, out_proj"))
ADAPTERS.register("transformers.pytorch_utils.Conv1D", LayerAdapter(
    linear_from_transposed, "nn.Linear with the transposed weight (GPT-2's Conv1D stores it (in, out))"))
