"""Pruning baselines as sparsify methods (paper §III-E): Dense, LMP-S/T, GMP-S/T, LRP, RG-S/T.

``-S`` methods rebuild each target layer as a plain ``nn.Linear``/``nn.Conv2d`` with an
orthogonal initialisation (``orthogonal_`` for linear layers, Delta-orthogonal for
convolutions) and prune it at once: prune right after initialisation, then train. ``-T``
methods prune the layers as they are — apply them to a dense model after training it, then
fine-tune (the paper's train–prune–fine-tune flow). The mask is
attached with :func:`torch.nn.utils.prune.custom_from_mask`, so the layer has
``weight_orig``/``weight_mask`` and masked weights get zero gradients. Linear layers prune
single weights; convolutions prune whole kernels by their L1 norm.

When a degree is given instead of a sparsity, each layer is pruned to the sparsity SAO would
have at that degree, ``1 - degree / max(out, in)``, so comparisons are at equal sparsity.

**ECO layers** (:class:`~sao.nn.ECOConv2d`, the targets of :func:`sao.sparsify` on ``cnn_eco``
and ``lipconvnet``, see :func:`sao.methods.eco_target_layers`). An ECO layer computes with one
inner ``C x C`` circular convolution (``C = max(c_out, c_in s²)``); the pruning methods prune
whole kernels of that convolution: its dense ``SparseConv2d`` is swapped for a plain
``nn.Conv2d`` holding the same kernel (:meth:`~sao.nn.SparseConv2d.to_dense`, same function)
and the kernel mask is attached with ``prune.custom_from_mask``, so masked kernels stay exactly
zero while training (their ``weight_orig`` entries get zero gradient). Sparsity is therefore
counted over the ``C²`` kernels of the inner convolution (also where ``C > c_out`` or the input
is zero-padded), exactly as SAO-ECO counts it, and :func:`sao.methods.connection_mask` of the
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
them. ``dense`` leaves ECO layers as they are. A layer already SAO-ECO sparse is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn
from torch.nn.utils import prune

from sao.init import delta_orthogonal_, orthogonal_
from sao.methods._base import METHODS, SparsifyMethod, SparsifySettings
from sao.methods.pruning import global_magnitude_masks, magnitude_mask, random_mask
from sao.nn import ECOConv2d, SparseConv2d
from sao.topology import ramanujan, resolve_degree

__all__ = ["PruneMethod", "apply_mask", "eco_kernel_layer", "fresh_orthogonal_copy", "layer_sparsity"]

RULES = ("none", "local-magnitude", "global-magnitude", "random", "sao-mask")


def fresh_orthogonal_copy(module: nn.Module, settings: SparsifySettings) -> nn.Module:
    """A new layer of the same configuration with (Delta-)orthogonal weights and zero bias."""
    w = module.weight
    if isinstance(module, nn.Linear):
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


def eco_kernel_layer(name: str, eco: ECOConv2d) -> nn.Conv2d:
    """The plain ``nn.Conv2d`` whose kernels are pruned for an ECO layer (not yet attached to it).

    A copy of the dense inner ``SparseConv2d`` (same kernel, same function), or the inner conv
    itself if it is a plain (possibly already pruned) ``nn.Conv2d``.

    Raises:
        ValueError: if the layer is SAO-ECO sparse already.
    """
    inner = eco.conv
    if isinstance(inner, SparseConv2d):
        if inner.num_blocks > 1:
            raise ValueError(f"layer {name!r} ({eco}) is SAO-ECO sparse already (sparsity {inner.sparsity:g}); "
                             "pruning baselines start from a dense ECO layer (build the model without "
                             "degree/sparsity)")
        return inner.to_dense().train(inner.training)
    if type(inner) is nn.Conv2d:
        return inner
    raise ValueError(f"layer {name!r} ({eco}): cannot prune an inner {type(inner).__name__}")


def layer_sparsity(module: nn.Module, settings: SparsifySettings) -> float:
    """The sparsity a layer is pruned to: ``settings.sparsity``, or SAO's at ``settings.degree``."""
    if settings.sparsity is not None and settings.degree is None:
        return float(settings.sparsity)
    out, inp = module.weight.shape[:2]
    degree = resolve_degree(out, inp, settings.degree, settings.sparsity)
    return 1.0 - degree / max(out, inp)


def apply_mask(module: nn.Module, mask: Tensor) -> nn.Module:
    """Attach a bool mask with ``prune.custom_from_mask``: ``(out, in)`` (broadcast over kernel taps) or full-shape."""
    mask = mask.to(module.weight.device)
    if mask.dim() == 2:
        mask = mask.view(*mask.shape, *[1] * (module.weight.dim() - 2))
    mask = mask.expand_as(module.weight)
    return prune.custom_from_mask(module, "weight", mask.to(module.weight.dtype))


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

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], settings: SparsifySettings) -> list[nn.Module]:
        for name, module in layers:
            if type(module) is nn.Conv2d and module.groups != 1:
                raise ValueError(f"layer {name!r} ({module}): grouped convolutions cannot be pruned here; exclude it")
        if self.rule == "none":
            return [m if isinstance(m, ECOConv2d) else self._start(m, settings) for _, m in layers]
        # the layers whose weight is pruned: for ECO layers a plain copy of the inner conv, attached below
        new = [eco_kernel_layer(n, m) if isinstance(m, ECOConv2d) else self._start(m, settings) for n, m in layers]
        if not new:
            return new
        pruned = [apply_mask(m, mask) for m, mask in zip(new, self.masks(layers, new, settings), strict=True)]
        return [_attach(module, kernel) for (_, module), kernel in zip(layers, pruned, strict=True)]

    def _start(self, module: nn.Module, settings: SparsifySettings) -> nn.Module:
        """A plain layer to prune: a fresh orthogonal copy (``-S``) or the layer itself (``-T``)."""
        return fresh_orthogonal_copy(module, settings) if self.reinit else module

    def masks(self, layers: list[tuple[str, nn.Module]], new: list[nn.Module],
              settings: SparsifySettings) -> list[Tensor]:
        """The bool ``(out, in)`` connection masks of the ``new`` layers (plain layers to prune) under this rule."""
        if self.rule == "global-magnitude":
            return global_magnitude_masks([m.weight for m in new], _common_sparsity(new, settings))
        if self.rule == "local-magnitude":
            return [magnitude_mask(m.weight, layer_sparsity(m, settings)) for m in new]
        if self.rule == "sao-mask":
            return [ramanujan(*m.weight.shape[:2], degree=settings.degree, sparsity=settings.sparsity,
                              generator=settings.generator).mask() for m in new]
        return [random_mask(m.weight.shape[:2], layer_sparsity(m, settings), settings.generator) for m in new]


def _attach(module: nn.Module, kernel: nn.Module) -> nn.Module:
    """The replacement of ``module``: the pruned ``kernel`` layer, or for an ECO layer the layer holding it."""
    if isinstance(module, ECOConv2d):
        module.conv = kernel
        return module
    return kernel


def _common_sparsity(layers: list[nn.Module], settings: SparsifySettings) -> float:
    """Global pruning needs one sparsity: the given one, or the weighted SAO sparsity at the degree."""
    if settings.degree is None:
        return float(settings.sparsity)
    sizes = [m.weight.shape[:2].numel() for m in layers]
    kept = sum(n * (1 - layer_sparsity(m, settings)) for n, m in zip(sizes, layers, strict=True))
    return 1.0 - kept / sum(sizes)


METHODS.register("dense", PruneMethod("none"))
METHODS.register("lmp-s", PruneMethod("local-magnitude"))
METHODS.register("gmp-s", PruneMethod("global-magnitude"))
METHODS.register("lrp", PruneMethod("random"))
METHODS.register("rg-s", PruneMethod("sao-mask"))
METHODS.register("lmp-t", PruneMethod("local-magnitude", reinit=False))
METHODS.register("gmp-t", PruneMethod("global-magnitude", reinit=False))
METHODS.register("rg-t", PruneMethod("sao-mask", reinit=False))

