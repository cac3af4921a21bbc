"""Pruning baselines as sparsify methods (paper §III-E): Dense, LMP-S/T, GMP-S/T, LRP, RG-S/T.

``-S`` methods rebuild each target layer as a plain ``nn.Linear``/``nn.Conv2d`` with an
orthogonal initialisation (``orthogonal_`` for linear layers, Delta-orthogonal for
convolutions) and prune it at once: prune right after initialisation, then train. ``-T``
methods prune the layers as they are — apply them to a dense model after training it, then
fine-tune (the paper's train–prune–fine-tune flow). A pruned layer is a
:class:`~sao.nn.MaskedLinear`/:class:`~sao.nn.MaskedConv2d` (``weight_orig`` times a fixed
``weight_mask``, the state :mod:`torch.nn.utils.prune` would give it, as a plain module that
deep-copies and pickles); ``-T`` wraps the trained layer's own Parameters. Masked weights get
zero gradients. Linear layers prune single weights; convolutions prune whole kernels by their
L1 norm. A layer that is masked already is pruned further: the new mask, computed on its
masked weight, is combined with the old one (as repeated ``prune`` calls do).

When a degree is given instead of a sparsity, each layer is pruned to the sparsity SAO would
have at that degree, ``1 - degree / max(out, in)``, so comparisons are at equal sparsity; with
``strict=False`` a degree the layer cannot take is replaced by its nearest valid degree
(:func:`sao.methods.degree_plan`), as for RG-S/RG-T's SAO masks. A sparsity is taken as it is:
magnitude and random pruning keep ``round((1 - sparsity) · connections)`` connections
(:func:`sao.methods.pruning.kept_count`), GMP that many over all target layers together.

**ECO layers** (:class:`~sao.nn.ECOConv2d`, the targets of :func:`sao.sparsify` on ``cnn_eco``
and ``lipconvnet``, see :func:`sao.methods.eco_target_layers`). An ECO layer computes with one
inner ``C x C`` circular convolution (``C = max(c_out, c_in s²)``); the pruning methods prune
whole kernels of that convolution: its dense ``SparseConv2d`` is swapped for a plain
``nn.Conv2d`` holding the same kernel (:meth:`~sao.nn.SparseConv2d.to_dense`, same function)
and masked as a :class:`~sao.nn.MaskedConv2d`, so masked kernels stay exactly zero while
training (their ``weight_orig`` entries get zero gradient). Sparsity is therefore counted over
the ``C²`` kernels of the inner convolution (also where ``C > c_out`` or the input is
zero-padded), exactly as SAO-ECO counts it, and :func:`sao.methods.connection_mask` of the
ECO layer (or of its ``conv``) reports it. LMP keeps the kernels of largest L1 norm per layer,
GMP across all ECO layers, LRP random kernels, RG-S/RG-T the SAO-ECO support: the ``C x C``
channel graph ``ramanujan(C, C, degree, sparsity)`` that SAO-ECO draws for that layer.
Where ``C > c_out`` (stride layers) the rows ``≥ c_out`` are cropped from the output: they
count like the others (SAO-ECO's topology is regular over all ``C`` rows), get no gradient from
the loss, only weight decay; at initialisation LMP keeps about as many kernels per used row as
SAO-ECO does, after training (``-T``) it may favour the used rows.
``-S`` does **not** redraw an ECO layer: the dense ECO kernel the layer was built with is the
orthogonal initialisation of these networks (not Delta-orthogonal), so ``-S`` prunes it as it
stands (apply it right after construction, as the protocol does) and ``-T`` prunes the
trained kernel; on an ECO layer the two differ only in the train–prune–fine-tune flow around
them. ``dense`` leaves ECO layers as they are. A layer already SAO-ECO sparse is skipped
(refused with ``strict=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor, nn

from sao.init import delta_orthogonal_, orthogonal_
from sao.methods._base import METHODS, LayerPlan, SparsifyMethod, SparsifySettings, degree_plan
from sao.methods._layers import layer_dims
from sao.methods.pruning import global_magnitude_masks, magnitude_mask, random_mask
from sao.nn import ECOConv2d, MaskedConv2d, MaskedLinear, SparseConv2d
from sao.topology import ramanujan

__all__ = ["PruneMethod", "apply_mask", "check_fresh_copy", "eco_kernel_layer", "fresh_orthogonal_copy"]

RULES = ("none", "local-magnitude", "global-magnitude", "random", "sao-mask")
_MASKED = (MaskedLinear, MaskedConv2d)


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear | MaskedLinear)


def check_fresh_copy(module: nn.Module, settings: SparsifySettings) -> None:
    """Raise ``ValueError`` if :func:`fresh_orthogonal_copy` cannot redraw ``module`` (draws nothing).

    Delta-orthogonal kernels need odd kernel sides (a centre tap) and, for ``activation="relu"``
    (the mirrored construction), even channel counts.
    """
    if _is_linear(module):
        return
    if any(side % 2 == 0 for side in module.kernel_size):
        raise ValueError(f"a Delta-orthogonal redraw needs odd kernel sides (a centre tap), got "
                         f"kernel_size={module.kernel_size}")
    if settings.activation == "relu" and (module.in_channels % 2 or module.out_channels % 2):
        raise ValueError(f"activation='relu' (mirrored Delta-orthogonal) needs even channel counts, got "
                         f"{module.out_channels}x{module.in_channels}")


def fresh_orthogonal_copy(module: nn.Module, settings: SparsifySettings) -> nn.Module:
    """A new plain layer of the same configuration with (Delta-)orthogonal weights and zero bias."""
    w = module.weight_orig if isinstance(module, _MASKED) else module.weight
    if _is_linear(module):
        new: nn.Module = nn.Linear(module.in_features, module.out_features, module.bias is not None,
                                   device=w.device, dtype=w.dtype)
        orthogonal_(new.weight, gain=settings.gain, generator=settings.generator)
    else:
        new = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                        module.dilation, module.groups, module.bias is not None, module.padding_mode,
                        device=w.device, dtype=w.dtype)
        delta_orthogonal_(new.weight, gain=settings.gain, activation=settings.activation,
                          generator=settings.generator)
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def _check_eco(eco: ECOConv2d) -> None:
    """Raise ``ValueError`` unless the inner convolution of ``eco`` can be pruned (dense or masked)."""
    inner = eco.conv
    if isinstance(inner, SparseConv2d):
        if inner.num_blocks > 1:
            raise ValueError(f"the ECO layer is SAO-ECO sparse already (sparsity {inner.sparsity:g}); pruning "
                             "baselines start from a dense ECO layer (build the model without degree/sparsity)")
    elif type(inner) is not nn.Conv2d and not isinstance(inner, MaskedConv2d):
        raise ValueError(f"cannot prune an inner {type(inner).__name__}")


def eco_kernel_layer(name: str, eco: ECOConv2d) -> nn.Conv2d | MaskedConv2d:
    """The conv layer whose kernels are pruned for an ECO layer (not yet attached to it).

    A plain ``nn.Conv2d`` copy of the dense inner ``SparseConv2d`` (same kernel, same
    function), or the inner conv itself if it is a plain ``nn.Conv2d`` or already masked.

    Raises:
        ValueError: if the layer is SAO-ECO sparse already.
    """
    try:
        _check_eco(eco)
    except ValueError as err:
        raise ValueError(f"layer {name!r} ({eco}): {err}") from None
    inner = eco.conv
    return inner.to_dense().train(inner.training) if isinstance(inner, SparseConv2d) else inner


def apply_mask(module: nn.Module, mask: Tensor) -> MaskedLinear | MaskedConv2d:
    """Mask a layer with a bool ``(out, in)`` (broadcast over kernel taps) or full-shape ``mask``.

    A plain ``nn.Linear``/``nn.Conv2d`` becomes a :class:`~sao.nn.MaskedLinear`/
    :class:`~sao.nn.MaskedConv2d` holding its Parameters (``from_dense``); a masked layer keeps
    only the connections both masks keep (its mask is updated in place).
    """
    if isinstance(module, _MASKED):
        keep = mask.to(device=module.weight_mask.device, dtype=module.weight_mask.dtype)
        if keep.dim() == 2 and module.weight_mask.dim() > 2:
            keep = keep.view(*keep.shape, *[1] * (module.weight_mask.dim() - 2))
        with torch.no_grad():
            module.weight_mask.mul_(keep)
        return module
    return (MaskedLinear if _is_linear(module) else MaskedConv2d).from_dense(module, mask)


@dataclass(frozen=True)
class PruneMethod(SparsifyMethod):
    """Prune by ``rule`` (one of :data:`RULES`) at the settings' sparsity.

    Attributes:
        rule: ``"none"`` (dense baseline), ``"local-magnitude"`` (LMP), ``"global-magnitude"``
            (GMP, one threshold over all target layers), ``"random"`` (LRP) or ``"sao-mask"``
            (RG-S/RG-T: an SAO topology's mask used as a pruning mask).
        reinit: ``True`` for the ``-S`` flavour (fresh orthogonal weights, then prune);
            ``False`` for ``-T`` (prune the layers as they are, e.g. after dense training,
            keeping their trained weights; fine-tune afterwards). ECO layers are never
            redrawn (module docstring).
    """

    rule: str
    reinit: bool = True
    handles_eco: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule={self.rule!r} is not supported; choose from {', '.join(RULES)}")

    @property
    def needs_target(self) -> bool:
        return self.rule != "none"

    def plan_layer(self, name: str, module: nn.Module, settings: SparsifySettings) -> LayerPlan:
        eco = isinstance(module, ECOConv2d)
        if self.rule == "none":
            if not eco:
                check_fresh_copy(module, settings)
            return LayerPlan(None, 0.0, 0.0, note="dense baseline" if not eco else "dense baseline: left as it is")
        if eco:
            _check_eco(module)
        elif self.reinit:
            check_fresh_copy(module, settings)
        if self.rule == "sao-mask" or settings.degree is not None:
            plan = degree_plan(*layer_dims(module), settings)
        else:
            plan = LayerPlan(None, settings.sparsity, settings.sparsity)
        if self.rule == "global-magnitude":
            note = "global threshold: layers vary, the target layers together keep the target"
            plan = replace(plan, note=f"{plan.note}; {note}" if plan.note else note, pooled=True)
        return plan

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], settings: SparsifySettings) -> list[nn.Module]:
        if self.rule == "none":
            return [m if isinstance(m, ECOConv2d) else self._start(m, settings) for _, m in layers]
        # the layers whose weight is pruned: for ECO layers a plain copy of the inner conv, attached below
        new = [eco_kernel_layer(n, m) if isinstance(m, ECOConv2d) else self._start(m, settings) for n, m in layers]
        if not new:
            return new
        pruned = [apply_mask(m, mask) for m, mask in zip(new, self.masks(layers, new, settings), strict=True)]
        return [_attach(module, kernel) for (_, module), kernel in zip(layers, pruned, strict=True)]

    def _start(self, module: nn.Module, settings: SparsifySettings) -> nn.Module:
        """A layer to prune: a fresh orthogonal copy (``-S``) or the layer itself (``-T``)."""
        return fresh_orthogonal_copy(module, settings) if self.reinit else module

    def masks(self, layers: list[tuple[str, nn.Module]], new: list[nn.Module],
              settings: SparsifySettings) -> list[Tensor]:
        """The bool ``(out, in)`` connection masks of the ``new`` layers (layers to prune) under this rule."""
        plans = [settings.plan(name) for name, _ in layers]
        if self.rule == "global-magnitude":
            return global_magnitude_masks([m.weight for m in new], _common_sparsity(new, plans, settings))
        if self.rule == "local-magnitude":
            return [magnitude_mask(m.weight, p.sparsity) for m, p in zip(new, plans, strict=True)]
        if self.rule == "sao-mask":
            return [ramanujan(*m.weight.shape[:2], degree=p.degree, generator=settings.generator).mask()
                    for m, p in zip(new, plans, strict=True)]
        return [random_mask(m.weight.shape[:2], p.sparsity, settings.generator)
                for m, p in zip(new, plans, strict=True)]


def _attach(module: nn.Module, kernel: nn.Module) -> nn.Module:
    """The replacement of ``module``: the pruned ``kernel`` layer, or for an ECO layer the layer holding it."""
    if isinstance(module, ECOConv2d):
        module.conv = kernel
        return module
    return kernel


def _common_sparsity(layers: list[nn.Module], plans: list[LayerPlan], settings: SparsifySettings) -> float:
    """Global pruning needs one sparsity: the given one, or the weighted per-layer SAO sparsity at the degree."""
    if settings.degree is None:
        return float(settings.sparsity)
    sizes = [m.weight.shape[:2].numel() for m in layers]
    kept = sum(n * (1 - p.sparsity) for n, p in zip(sizes, plans, strict=True))
    return 1.0 - kept / sum(sizes)


METHODS.register("dense", PruneMethod("none"))
METHODS.register("lmp-s", PruneMethod("local-magnitude"))
METHODS.register("gmp-s", PruneMethod("global-magnitude"))
METHODS.register("lrp", PruneMethod("random"))
METHODS.register("rg-s", PruneMethod("sao-mask"))
METHODS.register("lmp-t", PruneMethod("local-magnitude", reinit=False))
METHODS.register("gmp-t", PruneMethod("global-magnitude", reinit=False))
METHODS.register("rg-t", PruneMethod("sao-mask", reinit=False))
