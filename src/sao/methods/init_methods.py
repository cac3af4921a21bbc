"""Sparsify methods that draw fresh sparse layers: SAO, RG-N, RG-U (paper §IV)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sao._random import check_activation
from sao._validation import as_real
from sao.init.registry import get_layer_init
from sao.methods._base import METHODS, LayerPlan, SparsifyMethod, SparsifyRequest, degree_plan
from sao.methods._layers import layer_dims
from sao.nn import BACKENDS, ECOConv2d, MaskedConv2d, MaskedLinear, SparseConv2d, SparseLinear

__all__ = ["InitMethod", "InitSettings", "RandomGraphSettings"]


@dataclass(frozen=True)
class InitSettings:
    """The settings of SAO, RG-N and RG-U (:class:`InitMethod`).

    Attributes:
        backend: ``"blocked"`` (fast, memory ∝ density) or ``"masked"`` (the paper's way), see
            :data:`sao.nn.BACKENDS`.
        activation: the network's activation; ``"relu"`` selects the mirrored SAO construction.
        gain: weight multiplier.

    Raises:
        ValueError: an unknown backend or activation, a gain that is not finite and positive.
        TypeError: a gain that is not a real number.
    """

    backend: str = "blocked"
    activation: str = "tanh"
    gain: float = 1.0

    def __post_init__(self) -> None:
        _check_backend_and_gain(self)
        check_activation(self.activation)


@dataclass(frozen=True)
class RandomGraphSettings:
    """The settings of RG-N and RG-U: Gaussian/uniform values on an SAO topology, the same for any activation.

    Attributes:
        backend: as :class:`InitSettings`.
        gain: weight multiplier.

    Raises:
        ValueError: an unknown backend, a gain that is not finite and positive.
        TypeError: a gain that is not a real number.
    """

    backend: str = "blocked"
    gain: float = 1.0

    def __post_init__(self) -> None:
        _check_backend_and_gain(self)


def _check_backend_and_gain(settings: InitSettings | RandomGraphSettings) -> None:
    if settings.backend not in BACKENDS:
        raise ValueError(f"backend={settings.backend!r} is not supported; choose from {', '.join(BACKENDS)}")
    object.__setattr__(settings, "gain", as_real(settings.gain, "gain", low=0.0, low_open=True))


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
        mirrored = bool(init.topology_kind(check_activation(getattr(request.settings, "activation", "linear"))))
        return degree_plan(*layer_dims(module), request, mirrored)

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], request: SparsifyRequest) -> list[nn.Module]:
        return [self._replace(module, request.plan(name).degree, request) for name, module in layers]

    def _replace(self, module: nn.Module, degree: int | None, r: SparsifyRequest) -> nn.Module:
        s = r.settings
        if isinstance(module, ECOConv2d):
            return module.redrawn(degree=degree, backend=s.backend, gain=s.gain, generator=r.generator)
        w = module.weight_orig if isinstance(module, MaskedLinear | MaskedConv2d) else module.weight
        common = {"degree": degree, "bias": module.bias is not None, "backend": s.backend,
                  "activation": getattr(s, "activation", "linear"),
                  "gain": s.gain, "generator": r.generator, "device": w.device, "dtype": w.dtype}
        if not _is_conv(module):
            return SparseLinear(module.in_features, module.out_features, init=self.linear_init, **common)
        return SparseConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                            module.padding, module.dilation, padding_mode=module.padding_mode,
                            init=self.conv_init, **common)


METHODS.register("sao", InitMethod("sao", "sao-delta", "sao-eco"))
METHODS.register("rg-n", InitMethod("rg-normal"))
METHODS.register("rg-u", InitMethod("rg-uniform"))
