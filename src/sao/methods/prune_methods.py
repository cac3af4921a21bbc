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
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.utils import prune

from sao.init import delta_orthogonal_, orthogonal_
from sao.methods._base import METHODS, SparsifyMethod, SparsifySettings
from sao.methods.pruning import global_magnitude_masks, magnitude_mask, random_mask
from sao.topology import ramanujan, resolve_degree

__all__ = ["PruneMethod", "apply_mask", "fresh_orthogonal_copy", "layer_sparsity"]

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
            keeping their trained weights; fine-tune afterwards).
    """

    rule: str
    reinit: bool = True

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule={self.rule!r} is not supported; choose from {', '.join(RULES)}")

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], settings: SparsifySettings) -> list[nn.Module]:
        for name, module in layers:
            if type(module) is nn.Conv2d and module.groups != 1:
                raise ValueError(f"layer {name!r} ({module}): grouped convolutions cannot be pruned here; exclude it")
        new = [fresh_orthogonal_copy(m, settings) if self.reinit else m for _, m in layers]
        if self.rule == "none" or not new:
            return new
        return [apply_mask(m, mask) for m, mask in zip(new, self.masks(layers, new, settings), strict=True)]

    def masks(self, layers: list[tuple[str, nn.Module]], new: list[nn.Module],
              settings: SparsifySettings) -> list[Tensor]:
        """The bool ``(out, in)`` connection masks of the ``new`` layers under this rule."""
        if self.rule == "global-magnitude":
            return global_magnitude_masks([m.weight for m in new], _common_sparsity(layers, settings))
        if self.rule == "local-magnitude":
            return [magnitude_mask(m.weight, layer_sparsity(m, settings)) for m in new]
        if self.rule == "sao-mask":
            return [ramanujan(*m.weight.shape[:2], degree=settings.degree, sparsity=settings.sparsity,
                              generator=settings.generator).mask() for m in new]
        return [random_mask(m.weight.shape[:2], layer_sparsity(m, settings), settings.generator) for m in new]


def _common_sparsity(layers: list[tuple[str, nn.Module]], settings: SparsifySettings) -> float:
    """Global pruning needs one sparsity: the given one, or the weighted SAO sparsity at the degree."""
    if settings.degree is None:
        return float(settings.sparsity)
    sizes = [m.weight.shape[:2].numel() for _, m in layers]
    kept = sum(n * (1 - layer_sparsity(m, settings)) for n, (_, m) in zip(sizes, layers, strict=True))
    return 1.0 - kept / sum(sizes)


METHODS.register("dense", PruneMethod("none"))
METHODS.register("lmp-s", PruneMethod("local-magnitude"))
METHODS.register("gmp-s", PruneMethod("global-magnitude"))
METHODS.register("lrp", PruneMethod("random"))
METHODS.register("rg-s", PruneMethod("sao-mask"))
METHODS.register("lmp-t", PruneMethod("local-magnitude", reinit=False))
METHODS.register("gmp-t", PruneMethod("global-magnitude", reinit=False))
METHODS.register("rg-t", PruneMethod("sao-mask", reinit=False))

