"""Pruning baselines as sparsify methods (paper §III-E): Dense, LMP-S/T, GMP-S/T, LRP, RG-S/T.

A :class:`PruneMethod` is a :class:`PruningRule` (which connections to keep: one hook,
:meth:`PruningRule.masks`) plus the flavour (``reinit``). The rules: :class:`LocalMagnitudeRule`
(LMP), :class:`GlobalMagnitudeRule` (GMP), :class:`RandomRule` (LRP) and :class:`SAOMaskRule`
(RG-S/RG-T); the dense baseline is ``PruneMethod(None)``, no rule at all. Rules are also
registered by name in :data:`PRUNING_RULES`, so ``PruneMethod("local-magnitude")`` works too.

``-S`` methods rebuild each target layer as a plain ``nn.Linear``/``nn.Conv2d`` with an
orthogonal initialisation (``orthogonal_`` for linear layers, Delta-orthogonal for
convolutions) and prune it at once: prune right after initialisation, then train. ``-T``
methods prune the layers as they are — apply them to a dense model after training it, then
fine-tune (the paper's train–prune–fine-tune flow, Fig. 1; how an experiment schedules each
method is the harness's business, :data:`sao.experiments.METHOD_PHASES`). A pruned layer is a
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

**ECO layers** (:class:`~sao.nn.ECOConv2d`, the body layers of ``cnn_eco`` and ``lipconvnet``).
An ECO layer computes with one
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

from sao._registry import Registry
from sao.init import delta_orthogonal_, orthogonal_
from sao.methods._base import (
    METHODS,
    CommonSettings,
    LayerPlan,
    NoSettings,
    SparsifyMethod,
    SparsifyRequest,
    degree_plan,
)
from sao.methods._layers import layer_dims
from sao.methods.pruning import global_magnitude_masks, magnitude_mask, random_mask
from sao.nn import ECOConv2d, MaskedConv2d, MaskedLinear, SparseConv2d
from sao.topology import ramanujan

__all__ = ["PRUNING_RULES", "GlobalMagnitudeRule", "LocalMagnitudeRule", "PruneMethod", "PruningRule", "RandomRule",
           "RedrawSettings", "SAOMaskRule", "apply_mask", "check_fresh_copy", "eco_kernel_layer",
           "fresh_orthogonal_copy", "pruning_rule"]

_MASKED = (MaskedLinear, MaskedConv2d)
_DENSE = "none"  # the string PruneMethod takes for the dense baseline (no rule), as before rules were classes


# --------------------------------------------------------------------------- pruning rules


@dataclass(frozen=True)
class PruningRule:
    """Which connections a pruning baseline keeps (paper §III-E): one hook, :meth:`masks`.

    Subclass it, set the class attributes and implement :meth:`masks`; register an instance in
    :data:`PRUNING_RULES` to make its name a valid ``PruneMethod(name)``.

    Attributes:
        name: the rule's name in :data:`PRUNING_RULES` (class attribute).
        pooled: ``True`` if the rule ranks the connections of all target layers together (one
            global threshold), so only their total is at the target sparsity; their plans are
            marked :attr:`~sao.methods.LayerPlan.pooled` (class attribute).
        needs_degree: ``True`` if the rule builds SAO topologies, so every layer is planned at a
            valid SAO degree (:func:`~sao.methods.degree_plan`) even when a sparsity is asked
            (class attribute).
    """

    name: ClassVar[str] = ""
    pooled: ClassVar[bool] = False
    needs_degree: ClassVar[bool] = False

    def masks(self, weights: list[Tensor], plans: list[LayerPlan], request: SparsifyRequest) -> list[Tensor]:
        """The connections to keep of the layers with these weights, all layers at once.

        Args:
            weights: each layer's weight, ``(out, in)`` or ``(out, in, kh, kw)`` (a convolution
                keeps or drops whole kernels).
            plans: each layer's :class:`~sao.methods.LayerPlan` (its ``sparsity`` and ``degree``),
                in the order of ``weights``.
            request: the request; ``request.generator`` is drawn from in layer order.

        Returns:
            One bool ``(out, in)`` mask per weight, in order (``True``: kept).
        """
        raise NotImplementedError


@dataclass(frozen=True)
class LocalMagnitudeRule(PruningRule):
    """LMP: keep each layer's largest connections by ``|w|`` (by the L1 norm of a kernel).

    Each layer keeps ``round((1 - plan.sparsity) · out · in)`` connections
    (:func:`sao.methods.pruning.magnitude_mask`).
    """

    name: ClassVar[str] = "local-magnitude"

    def masks(self, weights: list[Tensor], plans: list[LayerPlan], request: SparsifyRequest) -> list[Tensor]:
        return [magnitude_mask(w, p.sparsity) for w, p in zip(weights, plans, strict=True)]


@dataclass(frozen=True)
class GlobalMagnitudeRule(PruningRule):
    """GMP: one magnitude threshold over all target layers (:func:`sao.methods.pruning.global_magnitude_masks`).

    The layers together keep ``round((1 - s) · Σ out · in)`` connections, ``s`` the requested
    sparsity or, for a degree, the connection-weighted sparsity SAO would have at it; single
    layers may end up denser or sparser.
    """

    name: ClassVar[str] = "global-magnitude"
    pooled: ClassVar[bool] = True

    def masks(self, weights: list[Tensor], plans: list[LayerPlan], request: SparsifyRequest) -> list[Tensor]:
        return global_magnitude_masks(weights, _common_sparsity(weights, plans, request))


@dataclass(frozen=True)
class RandomRule(PruningRule):
    """LRP: keep ``round((1 - plan.sparsity) · out · in)`` random connections per layer.

    Drawn with :func:`sao.methods.pruning.random_mask` from ``request.generator``, layer by layer.
    """

    name: ClassVar[str] = "random"

    def masks(self, weights: list[Tensor], plans: list[LayerPlan], request: SparsifyRequest) -> list[Tensor]:
        return [random_mask(w.shape[:2], p.sparsity, request.generator) for w, p in zip(weights, plans, strict=True)]


@dataclass(frozen=True)
class SAOMaskRule(PruningRule):
    """RG-S/RG-T: keep the connections of an SAO topology, ``ramanujan(out, in, plan.degree)`` (paper §IV-A)."""

    name: ClassVar[str] = "sao-mask"
    needs_degree: ClassVar[bool] = True

    def masks(self, weights: list[Tensor], plans: list[LayerPlan], request: SparsifyRequest) -> list[Tensor]:
        return [ramanujan(*w.shape[:2], degree=p.degree, generator=request.generator).mask()
                for w, p in zip(weights, plans, strict=True)]


def _common_sparsity(weights: list[Tensor], plans: list[LayerPlan], request: SparsifyRequest) -> float:
    """Global pruning needs one sparsity: the given one, or the weighted per-layer SAO sparsity at the degree."""
    if request.degree is None:
        return float(request.sparsity)
    sizes = [w.shape[:2].numel() for w in weights]
    kept = sum(n * (1 - p.sparsity) for n, p in zip(sizes, plans, strict=True))
    return 1.0 - kept / sum(sizes)


#: The pruning rules by name: the strings ``PruneMethod(rule)`` takes (``"none"``: the dense baseline).
PRUNING_RULES: Registry[PruningRule] = Registry("pruning rule", "sao.methods.PRUNING_RULES")
for _rule in (LocalMagnitudeRule(), GlobalMagnitudeRule(), RandomRule(), SAOMaskRule()):
    PRUNING_RULES.register(_rule.name, _rule)
del _rule


def pruning_rule(rule: PruningRule | str | None) -> PruningRule | None:
    """The rule ``rule`` stands for: a :class:`PruningRule` itself, a name in :data:`PRUNING_RULES`, or ``None``.

    ``None`` and ``"none"`` mean no rule (the dense baseline).

    Raises:
        ValueError: on an unknown name (the message lists the valid ones).
        TypeError: on anything else (e.g. a rule class instead of an instance).
    """
    if rule is None or isinstance(rule, PruningRule):
        return rule
    if not isinstance(rule, str):
        raise TypeError(f"rule must be a PruningRule instance, one of its names or None, got {rule!r}")
    if rule == _DENSE:
        return None
    if rule not in PRUNING_RULES:
        raise ValueError(f"rule={rule!r} is not supported; choose from {', '.join([_DENSE, *PRUNING_RULES.names()])} "
                         "(or pass a PruningRule)")
    return PRUNING_RULES.get(rule)


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class RedrawSettings(CommonSettings):
    """The settings of methods that redraw a layer orthogonal before pruning it (``-s``, ``dense``, ``eoi``).

    Attributes:
        activation: the network's activation; ``"relu"`` selects the mirrored Delta-orthogonal
            construction for convolutions.
        gain: weight multiplier of the redraw.

    Raises:
        ValueError, TypeError: as :class:`~sao.methods.CommonSettings`.
    """

    activation: str = "tanh"
    gain: float = 1.0


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear | MaskedLinear)


def check_fresh_copy(module: nn.Module, request: SparsifyRequest) -> None:
    """Raise ``ValueError`` if :func:`fresh_orthogonal_copy` cannot redraw ``module`` (draws nothing).

    Delta-orthogonal kernels need odd kernel sides (a centre tap) and, for ``activation="relu"``
    (the mirrored construction), even channel counts.
    """
    if _is_linear(module):
        return
    if any(side % 2 == 0 for side in module.kernel_size):
        raise ValueError(f"a Delta-orthogonal redraw needs odd kernel sides (a centre tap), got "
                         f"kernel_size={module.kernel_size}")
    if request.settings.activation == "relu" and (module.in_channels % 2 or module.out_channels % 2):
        raise ValueError(f"activation='relu' (mirrored Delta-orthogonal) needs even channel counts, got "
                         f"{module.out_channels}x{module.in_channels}")


def fresh_orthogonal_copy(module: nn.Module, request: SparsifyRequest) -> nn.Module:
    """A new plain layer of the same configuration with (Delta-)orthogonal weights and zero bias."""
    w = module.weight_orig if isinstance(module, _MASKED) else module.weight
    if _is_linear(module):
        new: nn.Module = nn.Linear(module.in_features, module.out_features, module.bias is not None,
                                   device=w.device, dtype=w.dtype)
        orthogonal_(new.weight, gain=request.settings.gain, generator=request.generator)
    else:
        new = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                        module.dilation, module.groups, module.bias is not None, module.padding_mode,
                        device=w.device, dtype=w.dtype)
        delta_orthogonal_(new.weight, gain=request.settings.gain, activation=request.settings.activation,
                          generator=request.generator)
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def _check_eco(eco: ECOConv2d) -> None:
    """Raise ``ValueError`` unless the inner convolution of ``eco`` can be pruned (dense or masked)."""
    inner = eco.conv
    if isinstance(inner, SparseConv2d):
        if inner.num_blocks > 1:
            raise ValueError(f"the ECO layer is SAO-ECO sparse already (sparsity {inner.sparsity:g}); pruning "
                             "baselines start from a dense ECO layer (e.g. layer.redrawn())")
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
    """Prune by ``rule`` at the requested sparsity (or SAO's sparsity at the requested degree).

    Attributes:
        rule: the :class:`PruningRule` (LMP, GMP, LRP or RG's SAO mask), or ``None`` for the
            dense baseline (layers redrawn orthogonal with ``reinit``, nothing pruned). A name
            in :data:`PRUNING_RULES` or ``"none"`` is taken too and replaced by what it stands
            for (:func:`pruning_rule`; ``ValueError`` on unknown names).
        reinit: ``True`` for the ``-S`` flavour (fresh orthogonal weights, then prune);
            ``False`` for ``-T`` (prune the layers as they are, e.g. after dense training,
            keeping their trained weights; fine-tune afterwards). ECO layers are never
            redrawn (module docstring).

    Its settings (:attr:`settings_type`) are :class:`RedrawSettings` with ``reinit`` (the
    orthogonal redraw's), none without.
    """

    rule: PruningRule | None
    reinit: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "rule", pruning_rule(self.rule))

    @property
    def needs_target(self) -> bool:
        return self.rule is not None

    @property
    def settings_type(self) -> type:
        return RedrawSettings if self.reinit else NoSettings

    @property
    def keeps_parameters(self) -> bool:
        return not self.reinit

    def plan_layer(self, name: str, module: nn.Module, request: SparsifyRequest) -> LayerPlan:
        self._check_layer(module, request)
        if self.rule is None:
            eco = isinstance(module, ECOConv2d)
            return LayerPlan(None, 0.0, 0.0, note="dense baseline: left as it is" if eco else "dense baseline")
        if self.rule.needs_degree or request.degree is not None:
            plan = degree_plan(*layer_dims(module), request)
        else:
            plan = LayerPlan(None, request.sparsity, request.sparsity)
        if self.rule.pooled:
            note = "global threshold: layers vary, the target layers together keep the target"
            plan = replace(plan, note=f"{plan.note}; {note}" if plan.note else note, pooled=True)
        return plan

    def _check_layer(self, module: nn.Module, request: SparsifyRequest) -> None:
        """Raise ``ValueError`` if this method cannot redraw or prune ``module`` (dense keeps ECO layers as is)."""
        if isinstance(module, ECOConv2d):
            if self.rule is not None:
                _check_eco(module)
        elif self.reinit:
            check_fresh_copy(module, request)

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], request: SparsifyRequest) -> list[nn.Module]:
        if self.rule is None:
            return [m if isinstance(m, ECOConv2d) else self._start(m, request) for _, m in layers]
        # the layers whose weight is pruned: for ECO layers a plain copy of the inner conv, attached below
        new = [eco_kernel_layer(n, m) if isinstance(m, ECOConv2d) else self._start(m, request) for n, m in layers]
        if not new:
            return new
        masks = self.rule.masks([m.weight for m in new], [request.plan(name) for name, _ in layers], request)
        pruned = [apply_mask(m, mask) for m, mask in zip(new, masks, strict=True)]
        return [_attach(module, kernel) for (_, module), kernel in zip(layers, pruned, strict=True)]

    def _start(self, module: nn.Module, request: SparsifyRequest) -> nn.Module:
        """A layer to prune: a fresh orthogonal copy (``-S``) or the layer itself (``-T``)."""
        return fresh_orthogonal_copy(module, request) if self.reinit else module


def _attach(module: nn.Module, kernel: nn.Module) -> nn.Module:
    """The replacement of ``module``: the pruned ``kernel`` layer, or for an ECO layer the layer holding it."""
    if isinstance(module, ECOConv2d):
        module.conv = kernel
        return module
    return kernel


METHODS.register("dense", PruneMethod(None))
METHODS.register("lmp-s", PruneMethod(LocalMagnitudeRule()))
METHODS.register("gmp-s", PruneMethod(GlobalMagnitudeRule()))
METHODS.register("lrp", PruneMethod(RandomRule()))
METHODS.register("rg-s", PruneMethod(SAOMaskRule()))
METHODS.register("lmp-t", PruneMethod(LocalMagnitudeRule(), reinit=False))
METHODS.register("gmp-t", PruneMethod(GlobalMagnitudeRule(), reinit=False))
METHODS.register("rg-t", PruneMethod(SAOMaskRule(), reinit=False))
