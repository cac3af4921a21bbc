"""The sparsify entry point and the method registry: ``sao.sparsify(model, method="sao", degree=4)``.

:func:`sparsify` finds the weight layers of a model (every ``nn.Linear``, convolution and sao
layer, in ``named_modules`` order; :mod:`sao.methods._layers`), leaves out the excluded ones (by
default the first and the last, as the paper keeps the stem and the classifier dense) and those
it cannot replace faithfully (kinds other than ``nn.Linear``/``nn.Conv2d`` among them), asks a
method from :data:`METHODS` for a per-layer plan (:meth:`SparsifyMethod.plan_layer`: the
degree/sparsity each layer can take) and then for the replacements
(:meth:`SparsifyMethod.sparsify_layers`).

**Adding a method.** :data:`METHODS` maps names to method *objects* (instances, not classes):
subclass :class:`SparsifyMethod`, implement :meth:`~SparsifyMethod.sparsify_layers` (one
replacement module per ``(name, layer)`` pair, in order), register an instance under a name and
pass that name to :func:`sparsify`. The built-in methods (:mod:`sao.methods.init_methods`,
:mod:`sao.methods.prune_methods`, :mod:`sao.methods.eoi_method`) are registered this way.
Optionally override :meth:`~SparsifyMethod.plan_layer` (refuse a layer with ``ValueError``, plan
its degree/sparsity), :attr:`~SparsifyMethod.needs_target` (the method needs ``degree=`` or
``sparsity=``) and :attr:`~SparsifyMethod.settings_type` (the frozen dataclass of the method's
own settings: the keyword arguments :func:`sparsify` takes for it, validated in its
``__post_init__``). A toy method that keeps the connections ``(i, j)`` with ``(i + j) % period == 0``:

    >>> import torch
    >>> from dataclasses import dataclass
    >>> from torch import nn
    >>> import sao
    >>> from sao.methods import METHODS, SparsifyMethod, connection_mask
    >>> from sao.nn import MaskedLinear
    >>> @dataclass(frozen=True)
    ... class StripeSettings:
    ...     period: int = 2
    >>> class Stripes(SparsifyMethod):
    ...     settings_type = StripeSettings
    ...
    ...     def sparsify_layers(self, layers, request):
    ...         period = request.settings.period
    ...         return [MaskedLinear.from_dense(layer, self.mask(*layer.weight.shape, period)) for _, layer in layers]
    ...
    ...     @staticmethod
    ...     def mask(rows, cols, period):
    ...         return (torch.arange(rows)[:, None] + torch.arange(cols)) % period == 0
    >>> method = METHODS.register("stripes", Stripes())
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    >>> net = sao.sparsify(net, "stripes", period=4)
    >>> type(net[1]).__name__, connection_mask(net[1]).float().mean().item()
    ('MaskedLinear', 0.25)
    >>> sao.sparsify(net, "stripes", backend="masked")
    Traceback (most recent call last):
    ...
    TypeError: method 'stripes' takes no setting 'backend'; its settings are period
    >>> METHODS.unregister("stripes") is method  # undo it (here, to leave METHODS as it was)
    True

**Targets a layer cannot hit exactly.** An SAO layer of shape ``(m, n)`` takes only the
degrees ``d = max(m, n) / g`` with ``g`` dividing both sides (paper §IV-A), so e.g. a 64x64
layer can be 87.5 % or 93.75 % sparse but not 90 %. With ``strict=False`` (the default) each
layer takes the nearest achievable degree/sparsity (:func:`sao.topology.nearest_degree`; a tie
goes to the denser layer), the summary reports the deviation and one ``UserWarning`` says how
far off the worst layer is; ``strict=True`` raises instead (the paper presets use it).

**ECO layers** (:class:`~sao.nn.ECOConv2d`: ``cnn_eco``, ``lipconvnet``) are weight layers like
the others. ``"sao"`` makes a dense ECO layer SAO-ECO (paper §IV-C: the SAO topology on the
``C x C`` channels of its inner convolution); the pruning methods prune whole kernels of that
inner convolution (:mod:`sao.methods.prune_methods`); ``rg-n``, ``rg-u`` and ``eoi`` have no ECO
form and skip them (refuse with ``strict=True``). To sparsify the ECO layers only, as the paper
does, pass ``exclude=lambda name, m: not isinstance(m, sao.nn.ECOConv2d)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar, overload

import torch
from torch import Tensor, nn

from sao._random import check_activation, check_generator
from sao._registry import Registry
from sao._validation import as_int, as_real
from sao.methods._layers import (
    EXCLUDE_CHOICES,
    WEIGHT_LAYER_KINDS,
    Exclude,
    LayerSlot,
    find_layers,
    layer_dims,
    target_layers,
    weight_shape,
)
from sao.methods._summary import LayerReport, SparsifySummary
from sao.methods.adapters import Adaptation, Adapted, adapt_layers, adapter_for, restore_unchanged
from sao.nn import BACKENDS, ECOConv2d
from sao.nn.dispatch import share_timer
from sao.nn.masked import kernel_connections
from sao.topology import nearest_degree, resolve_degree

__all__ = ["EXCLUDE_CHOICES", "METHODS", "CommonSettings", "Exclude", "LayerPlan", "NoSettings", "SparsifyMethod",
           "SparsifyRequest", "connection_mask", "degree_plan", "sparsify", "target_layers"]

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class LayerPlan:
    """What one target layer will become, decided before anything is built or drawn.

    Attributes:
        degree: the SAO degree the layer gets (or the degree its pruning sparsity comes from).
        sparsity: the sparsity it is built or pruned to.
        target: the sparsity asked of it (the requested one, or ``1 - degree / max(out, in)``).
        nearest: ``True`` if ``sparsity`` is the nearest achievable instead of the target.
        note: how the plan differs from the request, or how to read the layer's row.
        slack: the method's rounding, in connections: how far the built layer's count of
            present connections may be from ``sparsity`` (1: a kept count, SAO is exact; EOI's
            ``min(out, in)``); a row further off is reported ``"off-target"``.
        pooled: ``sparsity`` holds for the pooled layers together, not for each (GMP's global
            threshold): the check is on their connection-weighted figure, within ``slack``.
    """

    degree: int | None = None
    sparsity: float | None = None
    target: float | None = None
    nearest: bool = False
    note: str = ""
    slack: int = 1
    pooled: bool = False


@dataclass(frozen=True)
class NoSettings:
    """The settings of a method that has none of its own (its :attr:`SparsifyMethod.settings_type`)."""


class CommonSettings:
    """Base of a method's settings dataclass: checks the settings the built-in methods share, where it has them.

    ``backend`` must be one of :data:`sao.nn.BACKENDS`, ``activation`` one the initializers take
    (``"relu"`` selects the mirrored construction), ``gain`` a finite positive real (stored as ``float``).
    A subclass with a ``__post_init__`` of its own calls ``super().__post_init__()``.

    Raises:
        ValueError: an unknown backend or activation, a gain that is not finite and positive.
        TypeError: a gain that is not a real number.
    """

    def __post_init__(self) -> None:
        backend = getattr(self, "backend", BACKENDS[0])
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not supported; choose from {', '.join(BACKENDS)}")
        check_activation(getattr(self, "activation", "linear"))
        if hasattr(self, "gain"):
            object.__setattr__(self, "gain", as_real(self.gain, "gain", low=0.0, low_open=True))


@dataclass(frozen=True)
class SparsifyRequest:
    """What every method receives besides the layers: the target, the method's own settings, the randomness.

    Attributes:
        degree: SAO degree per layer as requested (exclusive with ``sparsity``).
        sparsity: requested fraction of zero weights (kernels) per layer.
        settings: the method's own settings, an instance of its :attr:`SparsifyMethod.settings_type`.
        generator: source of randomness.
        strict: require every target layer to take the request exactly (else: nearest).
        plans: the :class:`LayerPlan` of every target layer, by name (filled by :func:`sparsify`
            from :meth:`SparsifyMethod.plan_layer` before :meth:`SparsifyMethod.sparsify_layers`).
    """

    degree: int | None = None
    sparsity: float | None = None
    settings: Any = field(default_factory=NoSettings)
    generator: torch.Generator | None = None
    strict: bool = False
    plans: Mapping[str, LayerPlan] = field(default_factory=dict, compare=False, repr=False)

    def plan(self, name: str) -> LayerPlan:
        """The plan of the layer called ``name``; the request as given if it has none."""
        found = self.plans.get(name)
        return found if found is not None else LayerPlan(self.degree, self.sparsity, self.sparsity)


def requested_target(m: int, n: int, request: SparsifyRequest) -> float | None:
    """The sparsity asked of an ``(m, n)`` layer: the requested one, or SAO's ``1 - degree / max(m, n)`` (≥ 0)."""
    if request.sparsity is not None:
        return request.sparsity
    return None if request.degree is None else max(0.0, 1.0 - request.degree / max(m, n))


def degree_plan(m: int, n: int, request: SparsifyRequest, mirrored: bool = False) -> LayerPlan:
    """The plan of an ``(m, n)`` layer built on an SAO topology: the exact degree, else the nearest valid one.

    Raises:
        ValueError: with ``request.strict`` if the request is not achievable exactly (the
            message names the nearest valid values); always if no degree exists at all (the
            mirrored ReLU variant on odd sizes).
    """
    larger, target = max(m, n), requested_target(m, n, request)
    try:
        d = resolve_degree(m, n, request.degree, request.sparsity, mirrored)
        return LayerPlan(d, 1.0 - d / larger, target)
    except ValueError:
        if request.strict:
            raise
    d = nearest_degree(m, n, degree=request.degree, sparsity=request.sparsity, mirrored=mirrored)
    asked = f"degree={request.degree}" if request.sparsity is None else f"sparsity={request.sparsity:g}"
    kind = " (mirrored)" if mirrored else ""
    return LayerPlan(d, 1.0 - d / larger, target, True, f"{asked} not achievable for {m}x{n}{kind}; nearest valid "
                                                         f"degree {d}")


class SparsifyMethod:
    """A way to sparsify a list of layers; override :meth:`sparsify_layers` (and :meth:`plan_layer`).

    A method declares what it takes: :attr:`needs_target` (a ``degree=`` or ``sparsity=``) and
    :attr:`settings_type`, the frozen dataclass of its own settings, whose fields are the
    keyword arguments :func:`sparsify` accepts for it (``backend``, ``gain``, a method's own
    hyperparameters); anything else is a ``TypeError`` naming what it takes.
    """

    @property
    def needs_target(self) -> bool:
        """Whether the method needs ``degree=`` or ``sparsity=``; a method that does not takes neither."""
        return False

    @property
    def keeps_parameters(self) -> bool:
        """Whether the method keeps a layer's own Parameters (prunes them in place) instead of drawing new ones."""
        return False

    @property
    def settings_type(self) -> type:
        """The frozen dataclass of the method's own settings (default: :class:`NoSettings`)."""
        return NoSettings

    def settings(self, **values: Any) -> Any:
        """The method's settings from keyword arguments (defaults for those not given), validated.

        Raises:
            TypeError: a setting the method does not take (the message names the ones it takes),
                or a value of the wrong type (the settings' own check).
            ValueError: a value out of range (the settings' own check).
        """
        kind = self.settings_type
        known = [f.name for f in fields(kind)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            takes = f"its settings are {', '.join(known)}" if known else "it takes no settings"
            raise TypeError(f"{self.describe()} takes no setting {', '.join(map(repr, unknown))}; {takes}")
        return kind(**values)

    def offered(self, **values: Any) -> dict[str, Any]:
        """The ``values`` this method takes as settings (the fields of :attr:`settings_type`), the rest dropped.

        For code that holds settings for many methods at once (an experiment's gain and activation):
        ``sparsify(model, name, **METHODS.get(name).offered(gain=1.1, activation="tanh"))``.
        """
        taken = {f.name for f in fields(self.settings_type)}
        return {k: v for k, v in values.items() if k in taken}

    def describe(self) -> str:
        """How messages name the method: its registered name(s), else its class."""
        names = [n for n in METHODS.names() if METHODS.get(n) is self]
        return f"method {names[0]!r}" if names else type(self).__name__

    def plan_layer(self, name: str, module: nn.Module, request: SparsifyRequest) -> LayerPlan:
        """What ``module`` will become under ``request`` (nearest achievable unless ``request.strict``).

        Called for every target layer before :meth:`sparsify_layers`, without drawing random
        numbers. The default takes the request as it is.

        Raises:
            ValueError: if the method cannot build this layer (:func:`sparsify` then skips it, or
                raises with ``strict=True``).
        """
        return LayerPlan(request.degree, request.sparsity, requested_target(*layer_dims(module), request))

    def sparsify_layers(self, layers: list[tuple[str, nn.Module]], request: SparsifyRequest) -> list[nn.Module]:
        """Return one replacement module per ``(name, module)``, in order (``request.plan(name)`` says what)."""
        raise NotImplementedError


METHODS: Registry[SparsifyMethod] = Registry("sparsify method", "sao.methods.METHODS")


def _target(degree: int | None, sparsity: float | None, chosen: SparsifyMethod) -> tuple[int | None, float | None]:
    """Validate the target (these errors do not depend on ``strict``)."""
    degree = None if degree is None else as_int(degree, "degree", minimum=1)
    sparsity = None if sparsity is None else as_real(sparsity, "sparsity", low=0.0, high=1.0, high_open=True)
    if degree is not None and sparsity is not None:
        raise ValueError(f"give at most one of degree= or sparsity= (got degree={degree}, sparsity={sparsity})")
    given = degree is not None or sparsity is not None
    if chosen.needs_target and not given:
        raise ValueError(f"{chosen.describe()} needs degree= or sparsity=")
    if given and not chosen.needs_target:
        raise ValueError(f"{chosen.describe()} takes no target; drop degree=/sparsity=")
    return degree, sparsity


def _measured(module: nn.Module) -> float | None:
    """Fraction of absent connections of ``module`` (``None`` if it has no connection mask)."""
    try:
        mask = connection_mask(module)
    except (ValueError, AttributeError, RuntimeError):  # no weight, or an uninitialised (lazy) one
        return None
    if mask.numel() == 0 or mask.is_meta:  # a meta layer has no values to measure
        return None
    return 1.0 - float(mask.double().mean())


def _shape(module: nn.Module) -> tuple[int, ...]:
    """The weight shape for the summary; ``()`` where it is not known yet (lazy modules)."""
    try:
        return weight_shape(module)
    except (ValueError, RuntimeError, AttributeError):  # no weight: an adaptable module left as it is
        return ()


def _planned(plan: LayerPlan) -> float | None:
    """The sparsity the method was asked to build (the nearest achievable one, where it differs from the target)."""
    return plan.sparsity if plan.sparsity is not None else plan.target


def _off_target(rows: list[LayerReport], plans: Mapping[str, LayerPlan],
                before: Mapping[str, float | None]) -> list[LayerReport]:
    """``rows``, each sparsified row further from its plan than the method's rounding marked ``"off-target"``.

    A row is checked on its own, pooled rows (GMP) together: the connection-weighted measured
    sparsity may differ from the planned one by ``slack`` connections of the rows checked. The
    usual cause is a layer that was sparser already (a ``-t`` method keeps a masked layer's mask
    and ANDs the new one with it, as repeated :mod:`torch.nn.utils.prune` calls do); the reason
    says so, with the figures.
    """
    def checkable(r: LayerReport) -> bool:
        return r.name in plans and r.sparsity is not None and _planned(plans[r.name]) is not None and r.connections > 0

    rows = list(rows)
    todo = [i for i, r in enumerate(rows) if checkable(r)]
    pooled = [i for i in todo if plans[rows[i].name].pooled]
    for group in ([pooled] if pooled else []) + [[i] for i in todo if i not in pooled]:
        total = sum(rows[i].connections for i in group)
        measured = sum(rows[i].sparsity * rows[i].connections for i in group) / total
        planned = sum(_planned(plans[rows[i].name]) * rows[i].connections for i in group) / total
        slack = max(plans[rows[i].name].slack for i in group)
        if abs(measured - planned) * total <= slack + 1e-9 * total:  # 1e-9: float noise of the weighted sums
            continue
        together = plans[rows[group[0]].name].pooled
        head = (f"the {len(group)} pooled layers are {measured:.4f} sparse together for a planned {planned:.4f}; "
                if together else "")
        for i in group:
            r, own = rows[i], _planned(plans[rows[i].name])
            was = before.get(r.name)
            if was is not None and (was - own) * r.connections > plans[r.name].slack:
                why = (f"kept the layer's existing mask (ANDed with the new one): already {was:.4f} sparse; prune a "
                       "dense layer (e.g. layer.to_dense()) to reach the target")
            elif together:
                why = f"this layer is {r.sparsity:.4f} sparse under the one global threshold"
            else:
                why = (f"measured {r.sparsity:.4f} is further from the planned {own:.4f} than the method's "
                       f"rounding ({plans[r.name].slack} connection(s) of {r.connections:,})")
            reason = head + why + (f"; {r.reason}" if r.reason and not together else "")  # GMP's note: in head
            rows[i] = replace(r, status="off-target", reason=reason)
    return rows


def _report(slot: LayerSlot, shape: tuple[int, ...], now: nn.Module, status: str, reason: str,
            method: str | None = None, plan: LayerPlan | None = None) -> LayerReport:
    connections = shape[0] * shape[1] if len(shape) >= 2 else 0
    return LayerReport(slot.name, type(slot.module).__name__, shape, method, None if plan is None else plan.degree,
                       None if plan is None else plan.target, _measured(now), status, reason, connections,
                       slot.names[1:])


@overload
def sparsify(model: M, method: str = ..., *, degree: int | None = ..., sparsity: float | None = ...,
             exclude: Exclude = ..., generator: torch.Generator | None = ..., strict: bool = ...,
             return_summary: Literal[False] = ..., verbose: bool = ..., **settings: Any) -> M: ...


@overload
def sparsify(model: M, method: str = ..., *, degree: int | None = ..., sparsity: float | None = ...,
             exclude: Exclude = ..., generator: torch.Generator | None = ..., strict: bool = ...,
             return_summary: Literal[True], verbose: bool = ..., **settings: Any) -> tuple[M, SparsifySummary]: ...


def sparsify(model: M, method: str = "sao", *, degree: int | None = None, sparsity: float | None = None,
             exclude: Exclude = "first_last", generator: torch.Generator | None = None, strict: bool = False,
             return_summary: bool = False, verbose: bool = False, **settings: Any) -> M | tuple[M, SparsifySummary]:
    """Replace the ``nn.Linear``/``nn.Conv2d`` layers of ``model`` by sparse ones, in place.

    With ``method="sao"`` every target layer becomes a :class:`~sao.nn.SparseLinear`
    (sparse orthogonal, paper §IV-C) or :class:`~sao.nn.SparseConv2d` (SAO-Delta) with the
    given degree or sparsity; ``"rg-n"``/``"rg-u"`` use Gaussian/uniform values on the same kind
    of topology; the pruning baselines (§III-E) and ``"eoi"`` give
    :class:`~sao.nn.MaskedLinear`/:class:`~sao.nn.MaskedConv2d` layers. Weights are drawn afresh
    (this is sparsity *before* training; biases start at zero), except for the ``-t`` methods,
    which prune the layers as they are (their Parameters are kept).

    **Adapted modules.** Modules with a layer adapter (:mod:`sao.methods.adapters`:
    ``nn.MultiheadAttention``, GPT-2's ``Conv1D``) are first put into their standard form (a
    :class:`~sao.nn.SparseMultiheadAttention` with ``nn.Linear`` projections ``q_proj``, ``k_proj``,
    ``v_proj``, ``out_proj``; an ``nn.Linear``), whose layers are then weight layers like any
    other; where none of them changed, the original module is put back. On an error the model is
    left as it was.

    **Which layers.** The weight layers in ``named_modules`` order — every ``nn.Linear`` and
    convolution (``Conv1d``/``Conv3d``/transposed ones included) and sao's own layers
    (:mod:`sao.methods._layers`) — minus ``exclude`` (the first and the last by default,
    counted over all of them). Left as they are, each with its reason in the summary:

    - subclasses of ``nn.Linear``/``nn.Conv2d`` (their owner may read ``.weight`` without calling
      their ``forward``, or they may compute something else): never replaced, with or without
      ``strict``;
    - kinds sao does not sparsify (``nn.Conv1d``, ``nn.Conv3d``, ``nn.ConvTranspose*d``, SOC
      layers), and layers already sparse (:class:`~sao.nn.SparseLinear`,
      :class:`~sao.nn.SparseConv2d`; sparsify builds from dense layers, so a second call with
      another degree does not change them);
    - layers pruned with :mod:`torch.nn.utils.prune` (or with a weight otherwise computed by a
      hook: ``weight_norm``, ``parametrize``), whose hook a replacement would drop: call
      ``prune.remove(module, "weight")`` first, or load the layer's ``state_dict`` into a
      :class:`~sao.nn.MaskedLinear`/:class:`~sao.nn.MaskedConv2d`;
    - grouped and depthwise convolutions (MobileNet, ResNeXt, EfficientNet);
    - layers whose weight/bias Parameter is shared with another module;
    - layers the method cannot build (no convolution form for ``rg-n``/``rg-u``, even kernels
      for SAO-Delta/Delta-orthogonal/EOI-Delta, odd sizes for the mirrored ReLU variant).

    With ``strict=True`` all but the first raise ``ValueError`` instead. A layer *module* used at
    several places (tied) gets one replacement, placed at every place, so the tie is kept. A
    replacement keeps the training mode (``.training``) of the layer it replaces.

    **Targets a layer cannot hit exactly** (module docstring): by default each layer takes the
    nearest achievable degree/sparsity; ``strict=True`` raises instead. Magnitude/random
    pruning hits any sparsity up to the rounding of the kept count, EOI up to a few extra
    non-zeros (``min(out, in) - 1`` at most); the summary reports what was achieved.

    **Summary.** Returns ``model`` (so ``sparsify(net, ...) is net``); with
    ``return_summary=True`` returns ``(model, summary)``, a :class:`SparsifySummary` with one
    row per weight layer (name, kind, shape, method, degree, target, sparsity measured from the
    new layer's connection mask, status, reason) and the overall sparsity of the sparsified
    layers weighted by connections; ``verbose=True`` prints it. If a layer took a nearest
    target, a layer ended further from its plan than the method's rounding (``"off-target"``,
    e.g. a masked layer pruned again by a ``-t`` method keeps its sparser mask) or a layer not
    excluded was skipped, one ``UserWarning`` says so; for skipped layers it gives the
    ``exclude=[...]`` list that keeps them dense without a warning.

    An :class:`~sao.nn.ECOConv2d` is a weight layer like the others (module docstring): ``"sao"``
    makes a dense one SAO-ECO, the pruning methods prune whole kernels of its inner ``C x C``
    convolution (:mod:`sao.methods.prune_methods`), and the methods without an ECO form skip it.

    Args:
        model: the model to change.
        method: a name in :data:`METHODS` (``sao.methods.METHODS.names()``).
        degree: SAO degree of every target layer (exclusive with ``sparsity``); an integer.
        sparsity: fraction of zero weights per target layer, in ``[0, 1)``. A method that needs no
            target (``"dense"``) takes neither.
        exclude: layers to keep dense: ``"first_last"`` (default), ``"first"``, ``"last"``,
            ``"none"``, a predicate ``(name, module) -> bool``, or a collection of layer names,
            which keeps *exactly* those dense — it replaces ``"first_last"``, so name the first
            and last layers too if they should stay dense (:func:`target_layers`).
        generator: source of randomness for every layer, drawn in module order.
        strict: raise instead of taking the nearest achievable target or skipping a layer
            (subclasses are skipped either way; an ``"off-target"`` row is only reported).
        return_summary: also return the :class:`SparsifySummary`.
        verbose: print the summary.
        **settings: the method's own settings, the fields of its
            :attr:`~SparsifyMethod.settings_type` (``sao``: ``backend``
            (``"blocked"``, fast, memory ∝ density, or ``"masked"``, the paper's way),
            ``activation`` (``"relu"`` selects the mirrored SAO construction) and ``gain``;
            ``rg-n``/``rg-u``: ``backend`` and ``gain``; the ``-s`` pruning methods, ``dense`` and
            ``eoi``: ``activation`` (the mirrored Delta-orthogonal redraw of convolutions) and
            ``gain``; the ``-t`` methods: none).

    Returns:
        ``model``, changed in place; ``(model, summary)`` with ``return_summary=True``.

    Raises:
        ValueError: on an unknown method/backend/activation/exclude choice, both or (for a
            method that needs one) neither of ``degree``/``sparsity`` (or either for one that
            takes no target), a value out of range, a model that is itself a weight layer, or with
            ``strict=True`` a layer that cannot take the request (the message names the layer
            and the valid values).
        TypeError: a model that is not an ``nn.Module``, a non-bool ``strict``, a ``generator`` that is
            not a ``torch.Generator`` (for every method, also one that draws nothing), a setting the
            method does not take (the message names those it takes),
            ``degree`` not an integer or ``sparsity``/``gain`` not a real number.

    Example:
        >>> net = nn.Sequential(nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10))
        >>> net = sparsify(net, degree=4, generator=torch.Generator().manual_seed(0))
        >>> type(net[2]).__name__, net[2].sparsity
        ('SparseLinear', 0.984375)
        >>> net = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))
        >>> with warnings.catch_warnings(record=True) as caught:  # 0.9 is not achievable for 64x64: one warning
        ...     net, summary = sparsify(net, sparsity=0.9, return_summary=True,
        ...                             generator=torch.Generator().manual_seed(0))
        >>> row = summary.layers[1]
        >>> row.name, row.degree, row.target, row.sparsity, row.status, len(caught)
        ('2', 8, 0.9, 0.875, 'nearest', 1)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be True or False, got {strict!r}")
    check_generator(generator)  # for every method, also those that draw nothing from it
    chosen = METHODS.get(method)
    degree, sparsity = _target(degree, sparsity, chosen)
    request = SparsifyRequest(degree, sparsity, chosen.settings(**settings), generator, strict)
    if isinstance(model, WEIGHT_LAYER_KINDS) or adapter_for(model) is not None:
        raise ValueError(f"sparsify changes the layers inside a model, and this model is itself a weight layer "
                         f"({type(model).__name__}); wrap it: sao.sparsify(nn.ModuleList([layer]), ..., "
                         "exclude='none')[0] (or build a sao.nn layer directly: SparseLinear, SparseConv2d, "
                         "SparseMultiheadAttention)")
    adaptation = adapt_layers(model)
    try:
        summary = _sparsify_adapted(model, chosen, request, exclude, method, adaptation)
    except BaseException:
        restore_unchanged(model, adaptation, everything=True)
        raise
    kept = restore_unchanged(model, adaptation)
    messages = [m for m in (summary.warning(), _copied_parameters(chosen, kept)) if m is not None]
    if not messages and not summary.sparsified:
        messages.append(f"sparsify({method!r}) changed no layer: the model has no weight layer sparsify could "
                        "change, or every one is excluded (see return_summary=True; exclude='first_last' keeps the "
                        "first and last dense)")
    for message in messages:
        warnings.warn(message, UserWarning, stacklevel=2)
    if verbose:
        print(summary)
    return (model, summary) if return_summary else model


def _copied_parameters(chosen: SparsifyMethod, kept: list[Adapted]) -> str | None:
    """The warning for a method that keeps a layer's Parameters (``-t``) applied to adapted modules, whose
    layers hold copies: an optimizer built before sparsify would silently stop training them."""
    if not kept or not chosen.keeps_parameters:
        return None
    names = ", ".join(repr(a.names[0]) for a in kept[:3]) + (" …" if len(kept) > 3 else "")
    return (f"{chosen.describe()} keeps each layer's trained Parameters, but the layers of the {len(kept)} adapted "
            f"module(s) {names} ({type(kept[0].original).__name__}: sao.methods.adapters) are copies of them: build "
            "the optimizer after sparsify (one built before does not hold them)")


def _sparsify_adapted(model: nn.Module, chosen: SparsifyMethod, request: SparsifyRequest, exclude: Exclude,
                      method: str, adaptation: Adaptation) -> SparsifySummary:
    """Plan and replace the weight layers of ``model`` (adaptable modules already in standard form); the summary."""
    slots = find_layers(model, exclude, adaptation)
    # a standard form that is itself the layer (Conv1D → nn.Linear) is reported as the kind the model holds
    kinds = {id(a.standard): type(a.original).__name__ for a in adaptation.adapted}
    plans, refused = _plans(slots, chosen, request, method)
    shapes = {id(s.module): _shape(s.module) for s in slots}
    targets = [s for s in slots if s.name in plans]
    # what a layer that may be sparse already (masked, ECO) was; -t methods change those in place
    before = {s.name: _measured(s.module) for s in targets if type(s.module) not in (nn.Linear, nn.Conv2d)}
    new = chosen.sparsify_layers([(s.name, s.module) for s in targets], replace(request, plans=plans))
    for slot, module in zip(targets, new, strict=True):
        if module is not slot.module:
            module.train(slot.module.training)
        for name in slot.names:
            model.set_submodule(name, module)
    share_timer(model)  # layers of one shape measure their routes once (sao.nn.dispatch)
    rows = []
    for slot in slots:
        now, shape = model.get_submodule(slot.name), shapes[id(slot.module)]
        if slot.name in plans:
            plan = plans[slot.name]
            status = "nearest" if plan.nearest else "applied"
            row = _report(slot, shape, now, status, plan.note, method, plan)
        elif slot.name in refused:
            row = _report(slot, shape, now, "skipped", refused[slot.name])
        else:
            row = _report(slot, shape, now, slot.role, slot.reason)
        rows.append(replace(row, kind=kinds.get(id(slot.module), row.kind)))
    rows = _off_target(rows, plans, before)
    degree, sparsity = request.degree, request.sparsity
    asked = f"degree={degree}" if degree is not None else (f"sparsity={sparsity:g}" if sparsity is not None else "")
    return SparsifySummary(method, asked, bool(request.strict), tuple(rows))


def _plans(slots: list[LayerSlot], chosen: SparsifyMethod, request: SparsifyRequest,
           method: str) -> tuple[dict[str, LayerPlan], dict[str, str]]:
    """The method's plan of each target, and why it refused the others (``strict`` raises instead)."""
    plans: dict[str, LayerPlan] = {}
    refused: dict[str, str] = {}
    for slot in slots:
        where = f"layer {slot.name!r} ({type(slot.module).__name__})"
        if slot.role == "skipped" and request.strict and slot.refused_when_strict:
            raise ValueError(f"{where}: {slot.reason}; name it in exclude= (with the first and last layers: a list "
                             "replaces exclude='first_last') or pass strict=False")
        if slot.role != "target":
            continue
        try:
            plans[slot.name] = chosen.plan_layer(slot.name, slot.module, request)
        except ValueError as err:
            if request.strict:
                raise ValueError(f"{where}: {err}") from None
            refused[slot.name] = f"{method!r} cannot build this layer: {err}"
    return plans, refused


def connection_mask(module: nn.Module) -> Tensor:
    """Bool ``(out, in)`` mask of the connections a layer has (kernels, for convolutions).

    Works for :mod:`sao.nn` sparse and masked layers (their ``mask``), layers pruned with
    :mod:`torch.nn.utils.prune` (a connection exists if any of its kernel taps is unmasked)
    and plain dense layers (all ``True``). For an :class:`~sao.nn.ECOConv2d` it is the ``C x C``
    mask of its inner convolution (SAO-ECO topology or pruning mask; all ``True`` when dense).
    """
    if isinstance(module, ECOConv2d):
        return connection_mask(module.conv)
    mask = getattr(module, "mask", None)
    if isinstance(mask, Tensor):
        return mask
    pruned = getattr(module, "weight_mask", None)
    if isinstance(pruned, Tensor):
        return kernel_connections(pruned)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() < 2:
        raise ValueError(f"{type(module).__name__} has no (out, in[, k, k]) weight")
    return torch.ones(weight.shape[:2], dtype=torch.bool, device=weight.device)
