"""Layers whose ``weight``/``bias`` is computed instead of held: what they are, and what to do first.

:mod:`torch.nn.utils.prune` replaces a layer's ``weight`` Parameter by ``weight_orig`` and a
``weight_mask`` buffer and recomputes ``weight = weight_orig * weight_mask`` in a forward
pre-hook; the old ``weight_norm``/``spectral_norm`` do the same with their own tensors, and
:mod:`torch.nn.utils.parametrize` computes ``weight`` from ``parametrizations.weight``. Such a
layer's ``weight`` is not a Parameter, and a new module built from it would silently drop the
hook (and with it the pruning or normalisation). :func:`reparametrization` says which of these
applies and how to undo it, so :func:`sao.sparsify` can leave the layer alone and
:meth:`~sao.nn.MaskedLinear.from_dense` can refuse it with that advice.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils import parametrize, prune

__all__ = ["reparametrization"]

_MASKED_TWIN = {nn.Linear: "sao.nn.MaskedLinear", nn.Conv2d: "sao.nn.MaskedConv2d"}


def _computed(module: nn.Module) -> list[str]:
    """Names among ``weight``/``bias`` that are tensors on ``module`` but not its own Parameters."""
    return [name for name in ("weight", "bias")
            if name not in module._parameters and isinstance(module.__dict__.get(name), Tensor)]


def reparametrization(module: nn.Module) -> str | None:
    """Why ``module``'s weight (or bias) is not a Parameter of its own, with what to do first; ``None`` if it is.

    Example:
        >>> layer = prune.l1_unstructured(nn.Linear(4, 2), "weight", 0.5)
        >>> reparametrization(layer)[:34], reparametrization(nn.Linear(4, 2))
        ('pruned with torch.nn.utils.prune (', None)
    """
    if parametrize.is_parametrized(module):
        names = list(module.parametrizations.keys())
        return (f"parametrized with torch.nn.utils.parametrize ({', '.join(names)}); call "
                f"parametrize.remove_parametrizations(module, {names[0]!r}) first")
    pruned = list(dict.fromkeys(h._tensor_name for h in module._forward_pre_hooks.values()
                                if isinstance(h, prune.BasePruningMethod)))
    if pruned:
        twin = next((t for kind, t in _MASKED_TWIN.items() if type(module) is kind), None)
        load = f", or load its state_dict into {twin}" if twin is not None and pruned == ["weight"] else ""
        formulas = ", ".join(f"{n} = {n}_orig * {n}_mask" for n in pruned)
        removes = " and ".join(f"prune.remove(module, {n!r})" for n in pruned)
        return f"pruned with torch.nn.utils.prune ({formulas} in a forward pre-hook); call {removes} first{load}"
    computed = _computed(module)
    if computed:
        hooks = sorted({type(h).__name__ for h in module._forward_pre_hooks.values()})
        by = f" by a {'/'.join(hooks)} forward pre-hook" if hooks else ""
        return (f"its {' and '.join(computed)} is not a Parameter but recomputed before each forward{by}; remove "
                "that first (e.g. torch.nn.utils.remove_weight_norm or remove_spectral_norm)")
    return None
