"""Sparsify methods that draw fresh sparse layers: SAO, RG-N, RG-U (paper §IV)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sao.methods._base import METHODS, SparsifyMethod, SparsifySettings
from sao.nn import SparseConv2d, SparseLinear

__all__ = ["InitMethod"]


@dataclass(frozen=True)
class InitMethod(SparsifyMethod):
    """Replace each layer by a fresh sparse layer drawn with a layer init (SAO, RG-N, RG-U).

    Attributes:
        linear_init: :data:`sao.init.registry.LAYER_INITS` name for ``nn.Linear`` layers.
        conv_init: name for ``nn.Conv2d`` layers, or ``None`` if the method has none.
    """

    linear_init: str
    conv_init: str | None = None

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], settings: SparsifySettings) -> list[nn.Module]:
        return [self._replace(name, module, settings) for name, module in layers]

    def _replace(self, name: str, module: nn.Module, s: SparsifySettings) -> nn.Module:
        common = {"degree": s.degree, "sparsity": s.sparsity, "bias": module.bias is not None, "backend": s.backend,
                  "activation": s.activation, "gain": s.gain, "generator": s.generator,
                  "device": module.weight.device, "dtype": module.weight.dtype}
        try:
            if isinstance(module, nn.Linear):
                return SparseLinear(module.in_features, module.out_features, init=self.linear_init, **common)
            if self.conv_init is None:
                raise ValueError("this method has no convolution form; exclude the conv layers")
            if module.groups != 1:
                raise ValueError(f"grouped convolutions (groups={module.groups}) cannot be sparsified; exclude it")
            return SparseConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                module.padding, module.dilation, padding_mode=module.padding_mode,
                                init=self.conv_init, **common)
        except ValueError as err:
            raise ValueError(f"layer {name!r} ({module}): {err}") from None


METHODS.register("sao", InitMethod("sao", "sao-delta"))
METHODS.register("rg-n", InitMethod("rg-normal"))
METHODS.register("rg-u", InitMethod("rg-uniform"))
