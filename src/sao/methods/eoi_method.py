"""EOI as a sparsify method (Nowak et al., ICML 2024): exact sparse orthogonal, random support.

Each target layer is rebuilt as a plain ``nn.Linear`` holding an EOI matrix, or an
``nn.Conv2d`` holding an EOI matrix at the centre tap (the Delta construction), and masked
with its exact support as a :class:`~sao.nn.MaskedLinear`/:class:`~sao.nn.MaskedConv2d`
(broadcast over the kernel taps for convolutions), so training keeps it fixed. The density is
``1 - sparsity``, or SAO's ``degree / max(out, in)`` when a degree is given, so comparisons
are at equal sparsity (with ``strict=False`` a degree the layer cannot take becomes its nearest
valid degree). EOI reaches any density down to that of the padded identity,
``1 / max(out, in)``; with ``strict=False`` a sparser request takes that one. EOI's support is
irregular, so it has no blocked backend.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from sao.init.eoi import eoi_delta_with_mask_, eoi_target_nonzeros, eoi_with_mask_
from sao.methods._base import METHODS, LayerPlan, SparsifyMethod, SparsifyRequest, degree_plan
from sao.methods._layers import layer_dims
from sao.methods.prune_methods import RedrawSettings, apply_mask, check_fresh_copy, fresh_orthogonal_copy
from sao.nn import ECOConv2d

__all__ = ["EOIMethod"]


@dataclass(frozen=True)
class EOIMethod(SparsifyMethod):
    """Replace each layer by an EOI-initialised layer with its exact support as a fixed mask."""

    @property
    def needs_target(self) -> bool:
        return True

    @property
    def settings_type(self) -> type:
        return RedrawSettings  # EOI-Delta's kernel is the centre tap: the activation only checks the channels

    def plan_layer(self, name: str, module: nn.Module, request: SparsifyRequest) -> LayerPlan:
        if isinstance(module, ECOConv2d):
            raise ValueError("EOI has no ECO form (SAO-ECO is method 'sao')")
        check_fresh_copy(module, request)  # EOI-Delta needs a centre tap, as the Delta redraw before it
        m, n = layer_dims(module)
        if request.degree is not None:
            plan = degree_plan(m, n, request)
        else:
            plan = LayerPlan(None, request.sparsity, request.sparsity)
        plan = replace(plan, slack=min(m, n))  # EOI: ceil(density·m·n) non-zeros, plus up to min(m, n) - 1
        try:
            eoi_target_nonzeros(m, n, sparsity=plan.sparsity)
        except ValueError:
            if request.strict:
                raise
            sparsest = 1.0 - 1.0 / max(m, n)
            return replace(plan, sparsity=sparsest, nearest=True,
                           note=f"sparsity={plan.sparsity:g} is beyond EOI's sparsest {m}x{n} matrix (the padded "
                                f"identity), {sparsest:.4f}")
        return plan

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], request: SparsifyRequest) -> list[nn.Module]:
        return [self._replace(module, request.plan(name).sparsity, request) for name, module in layers]

    @staticmethod
    def _replace(module: nn.Module, sparsity: float, request: SparsifyRequest) -> nn.Module:
        new = fresh_orthogonal_copy(module, request)  # same configuration; the weight is redrawn below
        init = eoi_with_mask_ if isinstance(new, nn.Linear) else eoi_delta_with_mask_
        _, mask = init(new.weight, sparsity=sparsity, gain=request.settings.gain, generator=request.generator)
        return apply_mask(new, mask)


METHODS.register("eoi", EOIMethod())
