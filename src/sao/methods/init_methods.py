"""Sparsify methods that draw fresh sparse layers: SAO, RG-N, RG-U (paper §IV)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sao._random import check_activation
from sao.init.registry import get_layer_init
from sao.methods._base import METHODS, CommonSettings, LayerPlan, SparsifyMethod, SparsifyRequest, degree_plan
from sao.methods._layers import layer_dims
from sao.nn import ECOConv2d, MaskedConv2d, MaskedLinear, SparseConv2d, SparseLinear

__all__ = ["InitMethod", "InitSettings", "RandomGraphSettings"]


@dataclass(frozen=True)
class InitSettings(CommonSettings):
    """The settings of SAO (:class:`InitMethod` with an init that builds the mirrored ReLU construction).

    Attributes:
        backend: ``"blocked"`` (fast, memory ∝ density) or ``"masked"`` (the paper's way), see
            :data:`sao.nn.BACKENDS`.
        activation: the network's activation; ``"relu"`` selects the mirrored SAO construction.
        gain: weight multiplier.

    Raises:
        ValueError, TypeError: as :class:`~sao.methods.CommonSettings`.
    """

    backend: str = "blocked"
    activation: str = "tanh"
    gain: float = 1.0


@dataclass(frozen=True)
class RandomGraphSettings(CommonSettings):
    """The settings of RG-N and RG-U: Gaussian/uniform values on an SAO topology, the same for any activation.

    Attributes:
        backend: as :class:`InitSettings`.
        gain: weight multiplier.

    Raises:
        ValueError, TypeError: as :class:`~sao.methods.CommonSettings`.
    """

    backend: str = "blocked"
    gain: float = 1.0


def _activation(settings: InitSettings | RandomGraphSettings) -> str:
    """The activation the layers are drawn for; RG's settings have none (its draws are the same for any)."""
    return getattr(settings, "activation", "linear")


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d | MaskedConv2d)


@dataclass(frozen=True)
class InitMethod(SparsifyMethod):
    """Replace each layer by a fresh sparse layer drawn with a layer init (SAO, RG-N, RG-U).

    Each layer gets the degree of its plan: the requested one, or with ``strict=False`` the
    nearest valid degree of that layer's shape (:func:`sao.methods.degree_plan`). A dense
    :class:`~sao.nn.ECOConv2d` becomes a new ECO layer of the same configuration whose inner
    ``C x C`` convolution is drawn with ``eco_init`` (SAO-ECO, paper §IV-C).

    Attributes:
        linear_init: :data:`sao.init.registry.LAYER_INITS` name for ``nn.Linear`` layers.
        conv_init: name for ``nn.Conv2d`` layers, or ``None`` if the method has none.
        eco_init: name for the inner convolution of ECO layers, or ``None`` if the method has none.
    """

    linear_init: str
    conv_init: str | None = None
    eco_init: str | None = None

    @property
    def needs_target(self) -> bool:
        return True

    @property
    def settings_type(self) -> type:
        """:class:`InitSettings` where an init builds the mirrored (ReLU) construction, else
        :class:`RandomGraphSettings` (the activation would change nothing)."""
        inits = [(self.linear_init, 0), (self.conv_init, 2)]
        relu_aware = any(get_layer_init(name, dims).mirrored == "for-relu" for name, dims in inits if name)
        return InitSettings if relu_aware else RandomGraphSettings

    def plan_layer(self, name: str, module: nn.Module, request: SparsifyRequest) -> LayerPlan:
        if isinstance(module, ECOConv2d):
            if self.eco_init is None:
                raise ValueError("this method has no ECO form (SAO-ECO is method 'sao')")
            return degree_plan(*layer_dims(module), request, mirrored=False)  # ECO layers are linear maps
        conv = _is_conv(module)
        if conv and self.conv_init is None:
            raise ValueError("this method has no convolution form (it sparsifies nn.Linear layers only)")
        init = get_layer_init(self.conv_init if conv else self.linear_init, 2 if conv else 0)
        if conv:
            init.check_kernel(module.kernel_size)
        mirrored = bool(init.topology_kind(check_activation(_activation(request.settings))))
        return degree_plan(*layer_dims(module), request, mirrored)

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], request: SparsifyRequest) -> list[nn.Module]:
        return [self._replace(module, request.plan(name).degree, request) for name, module in layers]

    def _replace(self, module: nn.Module, degree: int | None, r: SparsifyRequest) -> nn.Module:
        s = r.settings
        if isinstance(module, ECOConv2d):
            return module.redrawn(degree=degree, backend=s.backend, gain=s.gain, generator=r.generator)
        w = module.weight_orig if isinstance(module, MaskedLinear | MaskedConv2d) else module.weight
        common = {"degree": degree, "bias": module.bias is not None, "backend": s.backend,
                  "activation": _activation(s),
                  "gain": s.gain, "generator": r.generator, "device": w.device, "dtype": w.dtype}
        if not _is_conv(module):
            return SparseLinear(module.in_features, module.out_features, init=self.linear_init, **common)
        return SparseConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                            module.padding, module.dilation, padding_mode=module.padding_mode,
                            init=self.conv_init, **common)


METHODS.register("sao", InitMethod("sao", "sao-delta", "sao-eco"))
METHODS.register("rg-n", InitMethod("rg-normal"))
METHODS.register("rg-u", InitMethod("rg-uniform"))
