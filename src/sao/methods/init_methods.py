"""Sparsify methods that draw fresh sparse layers: SAO, RG-N, RG-U (paper §IV)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sao._random import check_activation
from sao.init.registry import get_layer_init
from sao.methods._base import METHODS, LayerPlan, SparsifyMethod, SparsifySettings, degree_plan
from sao.methods._layers import layer_dims
from sao.nn import MaskedConv2d, MaskedLinear, SparseConv2d, SparseLinear

__all__ = ["InitMethod"]


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d | MaskedConv2d)


@dataclass(frozen=True)
class InitMethod(SparsifyMethod):
    """Replace each layer by a fresh sparse layer drawn with a layer init (SAO, RG-N, RG-U).

    Each layer gets the degree of its plan: the requested one, or with ``strict=False`` the
    nearest valid degree of that layer's shape (:func:`sao.methods.degree_plan`).

    Attributes:
        linear_init: :data:`sao.init.registry.LAYER_INITS` name for ``nn.Linear`` layers.
        conv_init: name for ``nn.Conv2d`` layers, or ``None`` if the method has none.
    """

    linear_init: str
    conv_init: str | None = None

    @property
    def needs_target(self) -> bool:
        return True

    def plan_layer(self, name: str, module: nn.Module, settings: SparsifySettings) -> LayerPlan:
        conv = _is_conv(module)
        if conv and self.conv_init is None:
            raise ValueError("this method has no convolution form (it sparsifies nn.Linear layers only)")
        init = get_layer_init(self.conv_init if conv else self.linear_init, 2 if conv else 0)
        if conv:
            init.check_kernel(module.kernel_size)
        mirrored = bool(init.topology_kind(check_activation(settings.activation)))
        return degree_plan(*layer_dims(module), settings, mirrored)

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], settings: SparsifySettings) -> list[nn.Module]:
        return [self._replace(module, settings.plan(name).degree, settings) for name, module in layers]

    def _replace(self, module: nn.Module, degree: int | None, s: SparsifySettings) -> nn.Module:
        w = module.weight_orig if isinstance(module, MaskedLinear | MaskedConv2d) else module.weight
        common = {"degree": degree, "bias": module.bias is not None, "backend": s.backend, "activation": s.activation,
                  "gain": s.gain, "generator": s.generator, "device": w.device, "dtype": w.dtype}
        if not _is_conv(module):
            return SparseLinear(module.in_features, module.out_features, init=self.linear_init, **common)
        return SparseConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                            module.padding, module.dilation, padding_mode=module.padding_mode,
                            init=self.conv_init, **common)


METHODS.register("sao", InitMethod("sao", "sao-delta"))
METHODS.register("rg-n", InitMethod("rg-normal"))
METHODS.register("rg-u", InitMethod("rg-uniform"))
