"""``FusedSparseChain`` and ``FusedSequential``: chains of blocked ``SparseLinear`` layers run as one step.

Layer by layer, the blocked backend gathers its inputs into block order, multiplies, reorders the
``(g, B, bm)`` product to ``(B, m)`` and gathers the outputs back: three memory passes around
one small batched matmul. In a chain ``SparseLinear → activation → SparseLinear → …`` with
elementwise activations, the output gather of layer ``l`` and the input gather of layer ``l + 1``
compose into one gather by ``row_inverse_l[col_perm_{l+1}]``, and keeping activations
feature-major ``(features, batch)`` makes the product ``blocks @ x`` land directly in that
layout: one row gather and one matmul per layer (the ``"fused"`` route), or one compiled call per
pass (``"compiled"``). Which route a chain takes — or whether it runs its modules one by one
(``"plain"``) — is decided in :mod:`sao.nn.dispatch`, from what the modules are, what the call is and
what is measured to be faster. :class:`FusedSequential` (what :func:`fuse_sparse_chains` returns)
makes all of this an execution detail: it keeps a model's modules, hooks and ``state_dict`` keys.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sao._validation import as_int
from sao.nn._chain_kernel import chain_indices, chain_params, chain_reference
from sao.nn._shape import check_features
from sao.nn.dispatch import (
    PROBE_LAYERS,
    Decision,
    RouteTimer,
    batch_bucket,
    call_blocker,
    chain_blocker,
    check_fusion_mode,
    deterministic_route,
    global_hook_blocker,
    kernel_blocker,
    module_blocker,
    parameter_blocker,
    probe_isolation,
    resolve_fusion_mode,
)
from sao.nn.kernels import CHAIN_KERNELS, checked_output
from sao.nn.linear import SparseLinear

__all__ = ["ELEMENTWISE", "KERNEL_ACTIVATIONS", "ExecutionPlan", "FusedSequential", "FusedSparseChain",
           "fusable_container", "fuse_sparse_chains", "plan_chains"]

#: Activations that act on each feature alone, deterministically (so they commute with feature permutations).
#: Exact types: a subclass may do more. Not here: ``PReLU`` (per-channel weights), ``RReLU`` and dropout (random).
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.Tanh, nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Mish, nn.LeakyReLU, nn.ELU, nn.CELU,
    nn.SELU, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Hardshrink, nn.Softshrink, nn.Softplus, nn.Softsign,
    nn.LogSigmoid, nn.Tanhshrink, nn.Threshold)
#: The activations the compiled chain kernels run, by module type.
KERNEL_ACTIVATIONS: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.Identity: "identity"}
_LAYER_TYPES = (SparseLinear,)


class FusedSparseChain(nn.Module):
    """``act_k(L_k( … act_1(L_1(x)) … ))`` for blocked :class:`SparseLinear` layers ``L_i``, on the fastest exact route.

    Args:
        layers: blocked ``SparseLinear`` layers with ``layers[i].out_features ==
            layers[i + 1].in_features`` (the same layer may appear more than once).
        activations: one elementwise module per layer (see :data:`ELEMENTWISE`), applied after it.
        fusion: one of :data:`sao.nn.dispatch.FUSION_MODES` (keyword only): ``"auto"`` runs each call
            on the fastest route that is exact for it (``"plain"``, ``"fused"`` or ``"compiled"``,
            measured), ``"off"`` the modules one by one, ``"fused"``/``"compiled"`` force a route and
            raise ``ValueError`` where it cannot be exact. :mod:`sao.nn.dispatch` says how.
        timer: the :class:`~sao.nn.dispatch.RouteTimer` that caches measured decisions (keyword only;
            shared by the chains of one :class:`FusedSequential`).

    Every route computes the same function with the same parameters, to float rounding (float64:
    1e-12; float32: ~1e-5 over 1000 layers), with first and higher-order gradients; hooks and
    parametrizations of the modules make the chain run ``"plain"``. ``last_decision`` holds the
    :class:`~sao.nn.dispatch.Decision` of the latest call.

    Shapes:
        input ``(..., layers[0].in_features)`` → output ``(..., layers[-1].out_features)``.

    The layers stay submodules (``self.layers``), so their parameters are shared and trained in place.
    """

    def __init__(self, layers: list[SparseLinear], activations: list[nn.Module], *, fusion: str = "auto",
                 timer: RouteTimer | None = None) -> None:
        super().__init__()
        if not layers or len(layers) != len(activations):
            raise ValueError("give one activation per layer, and at least one layer")
        for i, (layer, act) in enumerate(zip(layers, activations, strict=True)):
            if not isinstance(layer, SparseLinear) or layer.backend != "blocked":
                raise ValueError(f"layers[{i}] must be a SparseLinear with backend='blocked', got {layer}")
            if not isinstance(act, ELEMENTWISE):
                raise ValueError(f"activations[{i}] = {act} is not elementwise; allowed: "
                                 f"{', '.join(t.__name__ for t in ELEMENTWISE)}")
            if i and layers[i - 1].out_features != layer.in_features:
                raise ValueError(f"layers[{i - 1}] has {layers[i - 1].out_features} outputs but layers[{i}] "
                                 f"takes {layer.in_features} inputs")
        self.fusion = check_fusion_mode(fusion)
        self.timer = timer if timer is not None else RouteTimer()
        self.last_decision: Decision | None = None
        self.stale = False  # set when a call finds a module that can no longer be fused (a new hook)
        self._indices: tuple[tuple, tuple] | None = None
        self.layers, self.activations = nn.ModuleList(layers), nn.ModuleList(activations)
        self._order = [m for pair in zip(layers, activations, strict=True) for m in pair]
        self._types = [_LAYER_TYPES, ELEMENTWISE] * len(layers)
        names = tuple(KERNEL_ACTIVATIONS.get(type(act)) for act in activations)
        #: the kernel's activation names, or None if one has no kernel (types are re-checked at every call)
        self._kernel_names: tuple[str, ...] | None = None if None in names else names  # type: ignore[assignment]
        self._signature = (len(layers), *((tuple(layer.blocks.shape), layer.bias is not None, type(act))
                                          for layer, act in zip(layers[:PROBE_LAYERS], activations, strict=False)))

    # ------------------------------------------------------------------ the decision

    def decide(self, x: Tensor) -> Decision:
        """How a call with input ``x`` runs (:mod:`sao.nn.dispatch`); may time the routes once per case.

        Raises:
            ValueError: under a forced mode (``"fused"``, ``"compiled"``) that cannot run this call exactly.
        """
        mode = resolve_fusion_mode(self.fusion)
        if mode == "off":
            return Decision("plain", "fusion='off'")
        blocker = global_hook_blocker()
        if not blocker:
            blocker = chain_blocker(self._order, self._types)
            self.stale = blocker is not None  # the plan is rebuilt around the module at the next call
        if blocker:
            if mode != "auto":
                raise ValueError(f"fusion={mode!r} cannot run this chain exactly: {blocker}; "
                                 "use fusion='auto' (runs it plain) or remove the cause")
            return Decision("plain", blocker)
        # the first layer's blocks stand for all: mixed dtypes or devices fail on every route alike
        mismatch = parameter_blocker(x, self.layers[0].blocks)
        if mismatch:
            if mode != "auto":
                raise ValueError(f"fusion={mode!r}: {mismatch}")
            return Decision("plain", "the input's dtype or device differs from the parameters'")
        if mode == "fused":
            return Decision("fused", "fusion='fused'")
        special = call_blocker(x)
        if special and mode == "auto":
            return Decision("plain", special)
        no_kernel = ("an activation has no kernel (kernels: tanh, relu, identity)" if self._kernel_names is None
                     else kernel_blocker(x))
        if mode == "compiled":
            if special or no_kernel:
                raise ValueError(f"fusion='compiled' cannot run this call exactly: {special or no_kernel}; "
                                 "use fusion='auto' or 'fused'")
            return Decision("compiled", "fusion='compiled'")
        routes = ("plain", "fused") if no_kernel else ("plain", "fused", "compiled")
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(
            p is not None and p.requires_grad for layer in self.layers for p in (layer.blocks, layer.bias)))
        key = (self._signature, x.dtype, x.device, batch_bucket(x.numel() // max(x.shape[-1], 1)), needs_grad,
               torch.get_num_threads(), routes)
        fixed = deterministic_route(routes, ("compiled", "fused"))  # before the cache: it may hold measured ones
        if fixed or key in self.timer.decisions:
            return fixed or self.timer.decisions[key]
        return self.timer.choose(key, self._probe_runs(x, routes, needs_grad), x.device)

    def _probe_runs(self, x: Tensor, routes: tuple[str, ...], needs_grad: bool) -> dict[str, Callable[[], object]]:
        """One call of each route on a copy of the first :data:`~sao.nn.dispatch.PROBE_LAYERS` layers
        (the model's parameters, gradients and tensor hooks are never touched)."""
        k = min(len(self.layers), PROBE_LAYERS)
        layers, acts = copy.deepcopy((list(self.layers[:k]), list(self.activations[:k])))  # keeps ties
        probe = FusedSparseChain(layers, acts, fusion="off")
        xp = x.detach().reshape(-1, x.shape[-1]).requires_grad_(x.requires_grad and needs_grad)
        targets = [t for t in [xp, *probe.parameters()] if t.requires_grad] if needs_grad else []

        def once(route: str) -> None:
            with probe_isolation():
                y = probe.run(xp, route)
                if targets:
                    torch.autograd.grad(y, targets, torch.ones_like(y))

        return {route: (lambda r=route: once(r)) for route in routes}

    # ------------------------------------------------------------------ the routes

    def _chain_indices(self) -> tuple:
        """``(gathers, row_perms, final_inverse)`` (:func:`~sao.nn._chain_kernel.chain_indices`: the composed
        gather ``row_inverse_{l-1}[col_perm_l]`` of every layer), cached while the topology buffers stay the same."""
        if torch._C._are_functorch_transforms_active():  # no data pointers to key on there
            return chain_indices(list(self.layers))
        key = tuple(p for layer in self.layers
                    for p in (layer.topology, layer.col_perm.data_ptr(), layer.row_inverse.data_ptr()))
        # the Topology objects themselves (compared by identity), not their ids: held here, never reused
        if self._indices is None or self._indices[0] != key:
            with torch.inference_mode(False):  # built in inference mode, they could never be saved for backward
                self._indices = (key, chain_indices(list(self.layers)))
        return self._indices[1]

    def run(self, x: Tensor, route: str) -> Tensor:
        """The chain on ``route`` (one of :data:`~sao.nn.dispatch.ROUTES`), without deciding or checking."""
        if route == "plain":
            for module in self._order:
                x = module(x)
            return x
        lead = x.shape[:-1]
        if route == "compiled":
            backend = CHAIN_KERNELS.get(x.device.type)
            y = backend.run(x, list(self.layers), self._kernel_names, self._chain_indices())
            return checked_output(y, (*lead, self.layers[-1].out_features), x, backend,
                                  gradients_wanted=lambda: self._gradients_wanted(x))
        y = chain_reference(x.reshape(-1, x.shape[-1]), chain_params(self.layers), self._chain_indices(),
                            list(self.activations))
        return y.reshape(*lead, y.shape[-1])

    def _gradients_wanted(self, x: Tensor) -> bool:
        """Whether a call on ``x`` builds an autograd graph (``x`` or a parameter requires grad, grad mode on)."""
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def forward(self, x: Tensor) -> Tensor:
        check_features(x, self.layers[0].in_features, "SparseLinear")  # the plain model's error
        self.last_decision = decision = self.decide(x)
        return self.run(x, decision.route)

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state["_indices"] = None  # index tensors are rebuilt for the copy's own buffers
        return state

    def extra_repr(self) -> str:
        return (f"{len(self.layers)} layers, {self.layers[0].in_features} -> {self.layers[-1].out_features}, "
                f"fusion={self.fusion!r}")


def _fuse_blocker(layer: nn.Module, act: nn.Module | None, fusion: str) -> str | None:
    """Why ``(layer, act)`` cannot be a link of a chain, or ``None``.

    Raises:
        ValueError: under a forced mode, if the pair would be a link but for what the modules do
            (hooks, parametrizations, subclasses, a patched ``forward``).
    """
    if act is None:
        return "last module (no activation after it)"
    if layer.backend != "blocked":
        return f"backend={layer.backend!r}"
    if not isinstance(act, ELEMENTWISE):
        return f"followed by {type(act).__name__}, not an elementwise activation"
    blocker = module_blocker(layer, _LAYER_TYPES) or module_blocker(act, ELEMENTWISE)
    if blocker and fusion in ("fused", "compiled"):
        raise ValueError(f"fusion={fusion!r} cannot fuse {type(layer).__name__} -> {type(act).__name__} exactly: "
                         f"{blocker}; use fusion='auto' (runs it plain) or remove the cause")
    return blocker


@dataclass(frozen=True)
class PlanStep:
    """One step of an :class:`ExecutionPlan`: module names, what runs, its route, and why."""

    names: tuple[str, ...]
    what: str
    route: str
    reason: str


@dataclass(frozen=True)
class ExecutionPlan:
    """How a :class:`FusedSequential` runs: its steps in order (``str()`` prints them as a table)."""

    fusion: str
    steps: tuple[PlanStep, ...]

    def __str__(self) -> str:
        rows = [("modules", "what", "route", "why")]
        for step in self.steps:
            names = step.names[0] if len(step.names) == 1 else f"{step.names[0]}..{step.names[-1]}"
            rows.append((names, step.what, step.route, step.reason))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"fusion={self.fusion!r} (the model's setting; a sao.nn.fusion block overrides it per call): "
                 f"{sum(s.what.startswith('chain') for s in self.steps)} chain(s)"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows]
        return "\n".join(lines)


def plan_chains(modules: list[nn.Module] | list[tuple[str, nn.Module]], min_layers: int = 2, *,
                fusion: str = "auto", timer: RouteTimer | None = None) -> list[nn.Module]:
    """The modules of a sequence with every run of at least ``min_layers`` ``(blocked SparseLinear,
    elementwise activation)`` pairs (matching sizes, no hooks, exact types) replaced by one :class:`FusedSparseChain`.

    ``modules`` may repeat a module (it is used at each place). The chains share the layers'
    parameters; the other modules are returned as they are.
    """
    named = [m if isinstance(m, tuple) else (str(i), m) for i, m in enumerate(modules)]
    return [step for step, _ in _plan(named, min_layers, fusion, timer or RouteTimer())]


def _plan(named: list[tuple[str, nn.Module]], min_layers: int, fusion: str,
          timer: RouteTimer) -> list[tuple[nn.Module, PlanStep]]:
    """:func:`plan_chains` with a :class:`PlanStep` for each step."""
    out: list[tuple[nn.Module, PlanStep]] = []
    run: list[tuple[str, SparseLinear, str, nn.Module]] = []

    def single(name: str, module: nn.Module, reason: str = "") -> None:
        out.append((module, PlanStep((name,), type(module).__name__, "plain", reason)))

    def flush() -> None:
        if len(run) >= min_layers:
            chain = FusedSparseChain([r[1] for r in run], [r[3] for r in run], fusion=fusion, timer=timer)
            names = tuple(n for r in run for n in (r[0], r[2]))
            out.append((chain, PlanStep(names, f"chain of {len(run)} SparseLinear", "auto", "")))
        else:
            for name, layer, act_name, act in run:
                single(name, layer, f"chain of {len(run)} < min_layers={min_layers}")
                single(act_name, act)
        run.clear()

    i = 0
    while i < len(named):
        name, layer = named[i]
        act_name, act = named[i + 1] if i + 1 < len(named) else ("", None)
        if not isinstance(layer, SparseLinear) or fusion == "off":
            flush()
            single(name, layer, "fusion='off'" if fusion == "off" and isinstance(layer, SparseLinear) else "")
            i += 1
            continue
        blocker = _fuse_blocker(layer, act, fusion)
        if blocker is None and (not run or run[-1][1].out_features == layer.in_features):
            run.append((name, layer, act_name, act))
            i += 2
            continue
        flush()
        if blocker is None:
            continue  # size mismatch with the previous run: start a new run at this layer
        single(name, layer, f"not fused: {blocker}")
        i += 1
    flush()
    return out


class FusedSequential(nn.Sequential):
    """An ``nn.Sequential`` that runs its chains of blocked :class:`SparseLinear` layers fused, where exact and faster.

    It holds exactly the modules it was given, under the same names and in the same order (a module
    used at several places runs at each), so its ``state_dict``, checkpoints and ``load_state_dict``
    are those of the plain ``nn.Sequential``: fusion is an execution detail. At each call the runs of
    ``(blocked SparseLinear, elementwise activation)`` pairs (at least ``min_layers`` of them, without
    hooks or parametrizations) execute as one :class:`FusedSparseChain` (:func:`plan_chains`), whose
    route :mod:`sao.nn.dispatch` decides. The plan is rebuilt when a module or a setting changes;
    :meth:`plan` shows it. Slicing keeps the settings; copies and pickles keep them and measure again.

    Args:
        *args: modules, or one ``OrderedDict`` of named modules, as for ``nn.Sequential``.
        min_layers: shortest run that is fused (keyword only).
        fusion: one of :data:`sao.nn.dispatch.FUSION_MODES` (keyword only; default ``"auto"``).

    Example:
        >>> from sao.nn import SparseLinear
        >>> plain = nn.Sequential(SparseLinear(8, 8, degree=2), nn.Tanh(), SparseLinear(8, 8, degree=2), nn.Tanh())
        >>> fused = FusedSequential(*plain)
        >>> list(fused.state_dict()) == list(plain.state_dict())
        True
    """

    def __init__(self, *args: nn.Module, min_layers: int = 2, fusion: str = "auto") -> None:
        super().__init__(*args)
        self._plan: tuple[tuple, list[tuple[nn.Module, PlanStep]]] | None = None
        self.min_layers, self.fusion = min_layers, fusion
        self.timer = RouteTimer()

    @property
    def min_layers(self) -> int:
        """Shortest run of layers that is fused."""
        return self._min_layers

    @min_layers.setter
    def min_layers(self, value: int) -> None:
        self._min_layers = as_int(value, "min_layers", minimum=1)

    @property
    def fusion(self) -> str:
        """The execution mode (:data:`sao.nn.dispatch.FUSION_MODES`); takes effect at the next call."""
        return self._fusion

    @fusion.setter
    def fusion(self, value: str) -> None:
        self._fusion = check_fusion_mode(value)

    def _steps(self) -> list[tuple[nn.Module, PlanStep]]:
        key = (tuple(id(m) for m in self._modules.values()), self._min_layers, self._fusion)
        stale = self._plan is not None and any(getattr(m, "stale", False) for m, _ in self._plan[1])
        if self._plan is None or self._plan[0] != key or stale:
            self._plan = (key, _plan(list(self._modules.items()), self._min_layers, self._fusion, self.timer))
        return self._plan[1]

    def steps(self) -> list[nn.Module]:
        """The modules a call runs: the plan of :func:`plan_chains`, cached while modules and settings stay the same."""
        return [module for module, _ in self._steps()]

    def plan(self) -> ExecutionPlan:
        """What runs where and why: each chain with the route of its latest call, each unfused layer with the reason."""
        steps = []
        for module, step in self._steps():
            if isinstance(module, FusedSparseChain):
                last = module.last_decision
                step = PlanStep(step.names, step.what, last.route if last else "not run yet",
                                last.reason if last else f"decided at the first call (fusion={self.fusion!r})")
            steps.append(step)
        return ExecutionPlan(self.fusion, tuple(steps))

    def forward(self, x: Tensor) -> Tensor:
        for module, _ in self._steps():
            # a chain is called without Module.__call__: it is not one of the model's modules, so (global)
            # hooks must not see it; its own modules run through __call__ whenever it runs them plain
            x = module.forward(x) if isinstance(module, FusedSparseChain) else module(x)
        return x

    def __getitem__(self, idx: slice | int) -> nn.Module:
        if not isinstance(idx, slice):
            return super().__getitem__(idx)
        part = FusedSequential(OrderedDict(list(self._modules.items())[idx]), min_layers=self.min_layers,
                               fusion=self.fusion)
        part.timer = self.timer  # same machine, same cases
        return part

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state["_plan"] = None  # rebuilt on the first call (a copy's modules are new objects)
        return state

    def extra_repr(self) -> str:
        chains = sum(isinstance(s, FusedSparseChain) for s in self.steps())
        return f"min_layers={self.min_layers}, fusion={self.fusion!r}, {chains} fused chain{'s' * (chains != 1)}"


def fusable_container(model: nn.Module) -> str | None:
    """Why ``model`` cannot be run as a :class:`FusedSequential` with the same result, or ``None``."""
    if type(model) not in (nn.Sequential, FusedSequential):
        return (f"{type(model).__name__} is not an nn.Sequential (exact type: a subclass may run its "
                "modules differently)")
    if "forward" in model.__dict__:
        return "its forward is set on the instance"
    return None


def fuse_sparse_chains(model: nn.Sequential, min_layers: int = 2, *, fusion: str = "auto") -> FusedSequential:
    """``model``'s modules (shared, not copied) in a :class:`FusedSequential`, which runs its chains of
    ``(blocked SparseLinear, elementwise activation)`` pairs fused where that is exact and faster.

    The result computes the same function with the same parameters, to float rounding, with first and
    higher-order gradients (:mod:`sao.nn.dispatch` says how each chain's route is chosen and shows
    it in :meth:`FusedSequential.plan`). It shares ``model``'s modules — a module used at several
    places stays so — and its hooks (registering one on either registers it on both), and its
    ``state_dict`` keys are ``model``'s: checkpoints of either load into the other.

    Args:
        model: exactly an ``nn.Sequential`` (or a :class:`FusedSequential`).
        min_layers: shortest run of layers that is fused.
        fusion: one of :data:`sao.nn.dispatch.FUSION_MODES` (keyword only).

    Raises:
        TypeError: if ``model`` is not exactly an ``nn.Sequential`` or has its ``forward`` replaced
            (its function may not be its modules in order).
    """
    blocker = fusable_container(model) if isinstance(model, nn.Module) else f"{type(model).__name__} is not a module"
    if blocker:
        raise TypeError(f"fuse_sparse_chains takes an nn.Sequential that runs its modules in order: {blocker}")
    fused = FusedSequential(OrderedDict(model._modules.items()), min_layers=min_layers, fusion=fusion)
    for name, value in vars(model).items():  # the same hook dicts: the container's hooks run, now and later
        if "hook" in name:
            object.__setattr__(fused, name, value)
    fused.train(model.training)
    return fused
