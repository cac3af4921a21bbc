"""``MaskedLinear`` and ``MaskedConv2d``: a dense weight times a fixed mask (the pruning baselines' layers).

The pruning baselines of the paper (§III-E: LMP, GMP, LRP, RG-S/T) and EOI keep a layer's
support fixed by multiplying a dense weight with a fixed 0/1 mask, which is what
:func:`torch.nn.utils.prune.custom_from_mask` does. These layers hold exactly that state, under
the same ``state_dict`` keys — parameter ``weight_orig``, buffer ``weight_mask`` (the full
weight shape, in the weight's dtype) and ``bias`` — and the same parameter order, so
checkpoints (model and optimizer state) of layers pruned with :mod:`torch.nn.utils.prune` load
into them. Unlike ``prune`` they are ordinary modules:
``weight`` is a property computed at each access, ``weight_orig * weight_mask``, instead of a
non-leaf tensor attribute written by a forward pre-hook, so ``copy.deepcopy``, ``pickle`` and
``torch.save(model)`` work, and the weight read outside ``forward`` is never stale.

.. math::

    y = x\\,(W_{orig} \\odot M)^\\top + b, \\qquad
    \\frac{\\partial L}{\\partial W_{orig}} = \\frac{\\partial L}{\\partial W} \\odot M,

so masked weights get exactly zero gradient, and the computed ``weight`` stays exactly zero off
the mask whatever an optimizer (momentum, weight decay) does to ``weight_orig``.

:meth:`MaskedLinear.from_dense` / :meth:`MaskedConv2d.from_dense` wrap an existing layer and
*reuse its Parameter objects*, as ``prune`` does, so a trained layer keeps its identity (an
optimizer's state, tied references); ``to_dense()`` is the inverse, a plain layer holding the
masked weight (what ``prune.remove`` leaves).

Note:
    Layouts as in PyTorch: ``weight_orig`` and ``weight_mask`` are ``(out, in)`` for linear and
    ``(out, in // groups, kh, kw)`` for conv layers; :attr:`mask` is the bool connection mask,
    ``(out, in)`` / ``(out, in // groups)`` (a kernel counts as present if any of its taps is).
    Deferred initialisation works the PyTorch way: build on the ``meta`` device (``device="meta"``
    or ``with torch.device("meta")``), then ``to_empty(device=...)`` and ``reset_parameters()``,
    which redraws ``weight_orig`` and ``bias`` as ``nn.Linear``/``nn.Conv2d`` do and writes the
    mask given at construction (all ones if none; kept on the CPU until then, only for layers
    built on ``meta``) into the ``weight_mask`` buffer — or load a ``state_dict`` instead.
    Until one of the two, the buffer holds whatever ``to_empty`` left, and ``weight``/``forward``
    raise rather than compute with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sao._validation import as_int, as_int_tuple
from sao.nn._conv import conv2d_as
from sao.nn._reparam import reparametrization
from sao.nn._shape import check_features, check_image

__all__ = ["MaskedConv2d", "MaskedLinear", "kernel_connections"]


def kernel_connections(mask: Tensor) -> Tensor:
    """Bool ``(out, in)``: the connections a ``(out, in)`` or ``(out, in, kh, kw)`` weight mask keeps.

    A connection of a convolution (a whole kernel) is present if any of its taps is non-zero.
    """
    return mask.reshape(mask.shape[0], mask.shape[1], -1).ne(0).any(-1)


def _mask_values(mask: Tensor, weight: Tensor) -> Tensor:
    """``mask`` checked and shaped to broadcast to the weight (a connection mask gets trailing 1s), not copied.

    Takes a full-shape mask or a connection mask ``weight.shape[:2]`` (broadcast over kernel taps).
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a tensor, got {type(mask).__name__}")
    shape, connections = tuple(weight.shape), tuple(weight.shape[:2])
    if tuple(mask.shape) == connections and len(shape) > 2:
        mask = mask.reshape(*connections, *[1] * (len(shape) - 2))
    elif tuple(mask.shape) != shape:
        raise ValueError(f"mask must have the weight's shape {shape} or the connection shape {connections}, "
                         f"got {tuple(mask.shape)}")
    if mask.dtype != torch.bool and not mask.is_meta and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must be boolean or hold only 0 and 1")
    return mask


def _full_mask(mask: Tensor | None, weight: Tensor) -> Tensor:
    """``mask`` as a fresh 0/1 tensor of the weight's shape, dtype and device (all ones if ``None``)."""
    if mask is None:
        return torch.ones_like(weight, memory_format=torch.contiguous_format)
    mask = _mask_values(mask, weight)
    return mask.to(device=weight.device, dtype=weight.dtype).expand(weight.shape).clone(
        memory_format=torch.contiguous_format)


def _check_dense(layer: nn.Module, kind: type[nn.Module]) -> None:
    """Raise unless ``layer`` is exactly a ``kind`` holding its own ``weight``/``bias`` Parameters.

    Raises:
        ValueError: if its weight is computed (:mod:`torch.nn.utils.prune`, ``weight_norm``,
            ``parametrize``): wrapping it would drop that hook; the message says what to do first.
        TypeError: if ``layer`` is not exactly a ``kind``.
    """
    why = reparametrization(layer) if isinstance(layer, kind) else None
    if why is not None:
        raise ValueError(f"from_dense cannot wrap this {type(layer).__name__}, {why}")
    if type(layer) is not kind:
        raise TypeError(f"from_dense takes an nn.{kind.__name__}, got {type(layer).__name__}")


class _MaskedLayer(nn.Module):
    """What :class:`MaskedLinear` and :class:`MaskedConv2d` share (not used directly)."""

    weight_orig: nn.Parameter
    weight_mask: Tensor
    bias: nn.Parameter | None
    _pending_mask: Tensor | None = None  # class default: layers pickled before it existed load as "nothing pending"

    def _bind(self, weight: nn.Parameter, bias: nn.Parameter | None, mask: Tensor | None) -> None:
        """Hold ``weight``/``bias`` (the same Parameter objects) and a copy of ``mask`` as the buffer.

        Registered in the order ``prune`` leaves them (``bias``, then ``weight_orig``), so the
        parameter order, and with it an optimizer's saved state, matches a pruned layer's.
        """
        self.register_parameter("bias", bias)
        self.register_parameter("weight_orig", weight)
        self.register_buffer("weight_mask", _full_mask(mask, weight))
        # Built on meta, the buffer holds no values: keep the mask (a CPU copy, or all ones) for
        # reset_parameters() after to_empty(). None: nothing pending (no memory for other layers).
        # A mask given on meta has no values either: it stays pending until load_state_dict().
        self._pending_mask = None
        if self.weight_mask.is_meta:
            given = torch.ones((), dtype=torch.bool, device="cpu") if mask is None else _mask_values(mask, weight)
            self._pending_mask = given.detach() if given.is_meta else given.detach().to("cpu", copy=True)

    def _check_values(self) -> None:
        """Raise if the mask buffer was materialised by ``to_empty`` but not yet written."""
        pending = self._pending_mask
        if pending is not None and not self.weight_mask.is_meta:
            todo = ("load_state_dict() (its mask was given on the meta device, without values)" if pending.is_meta
                    else "reset_parameters() (writes the mask given at construction) or load_state_dict()")
            raise RuntimeError(f"{type(self).__name__} was built on the meta device and its weight_mask holds no "
                               f"values yet: after to_empty() call {todo}")

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        if prefix + "weight_mask" in state_dict:  # the checkpoint's mask replaces the pending one
            self._pending_mask = None

    @property
    def weight(self) -> Tensor:
        """The masked weight ``weight_orig * weight_mask`` (differentiable; exactly zero off the mask)."""
        self._check_values()
        return self.weight_orig * self.weight_mask

    @property
    def mask(self) -> Tensor:
        """Bool ``(out, in)`` mask of the connections present (kernels, for convolutions)."""
        self._check_values()
        return kernel_connections(self.weight_mask)

    @property
    def sparsity(self) -> float:
        """Fraction of absent connections (whole kernels, for convolutions)."""
        mask = self.mask
        return 0.0 if mask.numel() == 0 else 1.0 - float(mask.double().mean())

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Redraw ``weight_orig`` and ``bias`` as ``nn.Linear``/``nn.Conv2d`` do; the mask is kept.

        After ``to_empty()`` of a layer built on the ``meta`` device it also writes the mask given
        at construction (all ones if none) into ``weight_mask`` (module docstring).
        """
        pending = self._pending_mask
        if pending is not None and not pending.is_meta and not self.weight_mask.is_meta:
            self.weight_mask.copy_(pending)
            self._pending_mask = None
        nn.init.kaiming_uniform_(self.weight_orig, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight_orig[0].numel() if self.weight_orig.shape[0] else 0
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @torch.no_grad()
    def _copy_into(self, dense: nn.Module) -> nn.Module:
        dense.weight.copy_(self.weight)
        if self.bias is not None:
            dense.bias.copy_(self.bias)
        return dense.train(self.training)

    def _sparsity_repr(self) -> str:
        unknown = self.weight_mask.is_meta or self._pending_mask is not None
        return "sparsity=?" if unknown else f"sparsity={self.sparsity:.4%}"


class MaskedLinear(_MaskedLayer):
    """A linear layer ``y = x (W_orig ⊙ M)ᵀ + b`` with a fixed 0/1 mask ``M`` (paper §III-E).

    Args:
        in_features, out_features, bias, device, dtype: as in :class:`torch.nn.Linear`
            (``weight_orig`` and ``bias`` are initialised as there).
        mask: bool or 0/1 ``(out_features, in_features)`` tensor; ``None`` keeps every weight.

    Attributes:
        weight_orig: the dense parameter ``(out, in)``; ``weight_mask``: the fixed buffer
            (same shape, weight dtype); ``weight``: their product; ``mask``: bool ``(out, in)``.

    Shapes:
        input ``(*, in_features)`` → output ``(*, out_features)``, as :class:`torch.nn.Linear`.

    Raises:
        sao.nn.InputShapeError: (``forward``) for an input ``nn.Linear`` refuses.

    Example:
        >>> dense = nn.Linear(4, 2)
        >>> layer = MaskedLinear.from_dense(dense, torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]]).bool())
        >>> layer.weight_orig is dense.weight, layer.sparsity, (layer.weight != 0).sum().item()
        (True, 0.5, 4)
        >>> torch.equal(layer.to_dense()(torch.ones(3, 4)), layer(torch.ones(3, 4)))
        True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, mask: Tensor | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        in_features, out_features = as_int(in_features, "in_features", minimum=0), as_int(out_features,
                                                                                          "out_features", minimum=0)
        dense = nn.Linear(in_features, out_features, bias, device=device, dtype=dtype)
        self.in_features, self.out_features = dense.in_features, dense.out_features
        self._bind(dense.weight, dense.bias, mask)

    @classmethod
    def from_dense(cls, layer: nn.Linear, mask: Tensor | None = None) -> MaskedLinear:
        """Mask an existing ``nn.Linear``, reusing its ``weight`` and ``bias`` Parameters (as ``prune`` does).

        Raises:
            ValueError: if ``layer`` is pruned with :mod:`torch.nn.utils.prune` (or its weight is
                otherwise computed by a hook): the message says how to undo that first.
            TypeError: if ``layer`` is not exactly an ``nn.Linear``.
        """
        _check_dense(layer, nn.Linear)
        new = cls(layer.in_features, layer.out_features, layer.bias is not None, device="meta")
        new._bind(layer.weight, layer.bias, mask)
        return new.train(layer.training)

    def forward(self, x: Tensor) -> Tensor:
        check_features(x, self.in_features, "MaskedLinear")
        return F.linear(x, self.weight, self.bias)

    def to_dense(self) -> nn.Linear:
        """A plain :class:`torch.nn.Linear` holding the masked weight (a copy), like ``prune.remove``."""
        w = self.weight_orig
        return self._copy_into(nn.Linear(self.in_features, self.out_features, self.bias is not None,
                                         device=w.device, dtype=w.dtype))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{self._sparsity_repr()}")


class MaskedConv2d(_MaskedLayer):
    """A 2-D convolution with weight ``W_orig ⊙ M`` for a fixed 0/1 mask ``M`` (kernel-level pruning, §III-E).

    Everything :class:`torch.nn.Conv2d` takes (stride, padding including ``"same"``/``"valid"``,
    dilation, groups, every ``padding_mode``) works the same way.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype: as in :class:`torch.nn.Conv2d` (``weight_orig`` and
            ``bias`` are initialised as there).
        mask: bool or 0/1 tensor of the weight's shape ``(out, in // groups, kh, kw)``, or a
            connection mask ``(out, in // groups)`` applied to whole kernels; ``None`` keeps all.

    Shapes:
        input ``(B, C_in, H, W)`` or unbatched ``(C_in, H, W)``, output as :class:`torch.nn.Conv2d`.

    Raises:
        sao.nn.InputShapeError: (``forward``) for an input ``nn.Conv2d`` refuses.

    Example:
        >>> conv = nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")
        >>> masked = MaskedConv2d.from_dense(conv, torch.eye(2, dtype=torch.bool))
        >>> masked.mask.tolist(), masked.sparsity, masked(torch.randn(1, 2, 5, 5)).shape
        ([[True, False], [False, True]], 0.5, torch.Size([1, 2, 5, 5]))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", mask: Tensor | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        in_channels, out_channels = as_int(in_channels, "in_channels", minimum=0), as_int(out_channels,
                                                                                          "out_channels", minimum=0)
        kernel_size = as_int_tuple(kernel_size, "kernel_size", 2, minimum=1)
        stride = as_int_tuple(stride, "stride", 2, minimum=1)
        dilation = as_int_tuple(dilation, "dilation", 2, minimum=1)
        if not isinstance(padding, str):
            padding = as_int_tuple(padding, "padding", 2, minimum=0)
        groups = as_int(groups, "groups", minimum=1)
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device=device, dtype=dtype)
        self._configure(conv)
        self._bind(conv.weight, conv.bias, mask)

    def _configure(self, conv: nn.Conv2d) -> None:
        """Take the hyper-parameters of ``conv`` (resolved and validated by ``nn.Conv2d`` itself)."""
        self.in_channels, self.out_channels, self.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.padding_mode = conv.padding_mode
        self._reversed_padding_repeated_twice = conv._reversed_padding_repeated_twice

    @classmethod
    def from_dense(cls, layer: nn.Conv2d, mask: Tensor | None = None) -> MaskedConv2d:
        """Mask an existing ``nn.Conv2d``, reusing its ``weight`` and ``bias`` Parameters (as ``prune`` does).

        Raises:
            ValueError: if ``layer`` is pruned with :mod:`torch.nn.utils.prune` (or its weight is
                otherwise computed by a hook): the message says how to undo that first.
            TypeError: if ``layer`` is not exactly an ``nn.Conv2d``.
        """
        _check_dense(layer, nn.Conv2d)
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                  layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode, device="meta")
        new._bind(layer.weight, layer.bias, mask)
        return new.train(layer.training)

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, self.in_channels, "MaskedConv2d")
        return conv2d_as(self, x, self.weight, self.bias, self.groups)

    def to_dense(self) -> nn.Conv2d:
        """A plain :class:`torch.nn.Conv2d` holding the masked weight (a copy), like ``prune.remove``."""
        w = self.weight_orig
        return self._copy_into(nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                         self.padding, self.dilation, self.groups, self.bias is not None,
                                         self.padding_mode, device=w.device, dtype=w.dtype))

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return f"{s}, {self._sparsity_repr()}"
