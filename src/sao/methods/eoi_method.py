"""EOI as a sparsify method (Nowak et al., ICML 2024): exact sparse orthogonal, random support.

Each target layer is rebuilt as a plain ``nn.Linear`` holding an EOI matrix, or an
``nn.Conv2d`` holding an EOI matrix at the centre tap (the Delta construction); the exact
support is attached with :func:`torch.nn.utils.prune.custom_from_mask` (broadcast over the
kernel taps for convolutions), so training keeps it fixed. The density is ``1 - sparsity``,
or SAO's ``degree / max(out, in)`` when a degree is given, so comparisons are at equal
sparsity. EOI's support is irregular, so it has no blocked backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sao.init.eoi import eoi_delta_with_mask_, eoi_with_mask_
from sao.methods._base import METHODS, SparsifyMethod, SparsifySettings
from sao.methods.prune_methods import apply_mask, fresh_orthogonal_copy, layer_sparsity

__all__ = ["EOIMethod"]


@dataclass(frozen=True)
class EOIMethod(SparsifyMethod):
    """Replace each layer by an EOI-initialised layer with its exact support as a fixed mask."""

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], settings: SparsifySettings) -> list[nn.Module]:
        return [self._replace(name, module, settings) for name, module in layers]

    @staticmethod
    def _replace(name: str, module: nn.Module, settings: SparsifySettings) -> nn.Module:
        try:
            if isinstance(module, nn.Conv2d) and module.groups != 1:
                raise ValueError(f"grouped convolutions (groups={module.groups}) cannot take EOI; exclude it")
            new = fresh_orthogonal_copy(module, settings)  # same configuration; the weight is redrawn below
            init = eoi_with_mask_ if isinstance(new, nn.Linear) else eoi_delta_with_mask_
            _, mask = init(new.weight, sparsity=layer_sparsity(module, settings), gain=settings.gain,
                           generator=settings.generator)
        except ValueError as err:
            raise ValueError(f"layer {name!r} ({module}): {err}") from None
        return apply_mask(new, mask)


METHODS.register("eoi", EOIMethod())
