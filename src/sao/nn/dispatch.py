"""Where a sparse chain or layer runs: the one decision point for fused and compiled execution.

A chain of ``(blocked SparseLinear, elementwise activation)`` pairs inside a
:class:`~sao.nn.FusedSequential` can run three ways, all computing the same function with the same
parameters (up to float rounding):

- ``"plain"``: the modules one by one, exactly as ``nn.Sequential`` runs them;
- ``"fused"``: PyTorch ops, feature-major, one composed gather and one ``bmm`` per layer
  (:func:`sao.nn._chain_kernel.chain_reference`);
- ``"compiled"``: the compiled chain kernel, one call per pass (CPU: C++; CUDA: Triton).

This module decides which, in three steps, each recorded as a :class:`Decision` with its reason:

1. **What the modules are** (checked at every call, since hooks can be added at any time): a module
   joins a chain only if the fused routes reimplement exactly what calling it does — its exact type
   (a subclass or a parametrization, which swaps the class, may compute something else), no forward,
   pre-forward or backward hooks of its own or global ones, no ``forward`` patched on the instance.
2. **What the call is**: under autocast, a ``torch.func`` transform, forward-mode AD or
   ``torch.compile`` the chain runs ``"plain"`` (``"auto"``) — the kernels implement none of them and a
   cost probe cannot run inside them; ``"compiled"`` also needs float32/float64 parameters of the
   input's dtype and device, and a kernel for that device. Higher-order autograd needs no decision: the
   kernels' backward is itself differentiable (it recomputes through PyTorch ops under
   ``create_graph=True``).
3. **What is faster** (``"auto"`` only): a cached micro-benchmark (:class:`RouteTimer`) times every
   route the call allows on a copy of the chain's first :data:`PROBE_LAYERS` layers, forward (and
   backward when gradients are needed), round-robin, on this machine, for this shape, dtype, device,
   batch size (rounded up to a power of two), grad mode and thread count, and keeps the fastest. A
   route other than ``"plain"`` must beat it by :data:`MARGIN`, so the default is never measurably
   slower than running the modules. A micro-benchmark rather than a cost model, because what is
   fastest depends on the block shape, the batch, the thread count and the CPU's vector units in ways
   no small model captures (the compiled kernel is 10x faster than ``"plain"`` for 256-wide degree-4
   blocks and slower for degree-128 ones on the same machine); it costs a few milliseconds, once per
   case per model. The probe's copies have no hooks: the model's parameters, gradients and hooks are
   never touched.

Single sparse layers decide the same way (:class:`RoutedLayer`): a blocked :class:`~sao.nn.SparseConv2d`
between :data:`CONV_ROUTES` (``"plain"`` grouped convolution, ``"dense"`` convolution with the scattered weight,
``"compiled"`` SAO convolution kernel), a blocked :class:`~sao.nn.SparseLinear` between ``"plain"`` and
``"dense"``; they run inside the layer's ``forward``, so its hooks and parametrizations apply on every route.
``"dense"`` multiplies the absent connections' zeros too: for an input holding ±inf or NaN it gives NaN where
the blocked routes do not (as ``to_dense()`` does). Under ``torch.use_deterministic_algorithms(True)`` nothing is
measured (:func:`deterministic_route`). See ``docs/sparse-convolutions.md``.

Modes (:data:`FUSION_MODES`): ``"auto"`` (the default), ``"off"`` (always ``"plain"``) and the forced
routes ``"fused"`` and ``"compiled"``, which raise ``ValueError`` saying why where they cannot run
exactly. A model's mode is its ``fusion`` attribute; :func:`fusion` overrides it for the calls in a
``with`` block; ``TrainConfig(fused=False)`` (``--no-fused``) turns it off for a run.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd import forward_ad
from torch.nn.modules import module as _module_globals

from sao._registry import Registry
from sao.nn import _chain_kernel, _chain_triton, _conv_kernel  # noqa: F401  (they register the built-in backends)
from sao.nn.kernels import CHAIN_KERNELS, CONV_KERNELS, KernelBackend

__all__ = [
    "CONV_ROUTES",
    "FUSION_MODES",
    "KERNELS",
    "MARGIN",
    "PROBE_LAYERS",
    "PRUNE",
    "ROUTES",
    "Decision",
    "RouteTimer",
    "RoutedLayer",
    "batch_bucket",
    "call_blocker",
    "chain_blocker",
    "check_fusion_mode",
    "deterministic_route",
    "fusion",
    "global_hook_blocker",
    "kernel_blocker",
    "module_blocker",
    "parameter_blocker",
    "probe_isolation",
    "resolve_fusion_mode",
    "share_timer",
]

#: The execution modes of a fused model, with what each does.
FUSION_MODES: dict[str, str] = {
    "auto": "the fastest exact route of each chain, measured on this machine (plain where nothing is faster)",
    "off": "every module runs by itself, as in nn.Sequential",
    "fused": "chains run as PyTorch ops, feature-major; ValueError where that cannot be exact",
    "compiled": "chains run through the compiled kernel; ValueError where that cannot be exact",
}
#: The ways a chain can run, from the most to the least general.
ROUTES = ("plain", "fused", "compiled")
#: The ways a blocked :class:`~sao.nn.SparseConv2d` can run: its own PyTorch ops (channel gathers around a
#: grouped convolution), one dense convolution with the scattered weight, or the compiled kernel.
CONV_ROUTES = ("plain", "dense", "compiled")
#: The kernel backends behind each ``"compiled"`` route, by kernel name (:mod:`sao.nn.kernels`).
KERNELS: dict[str, Registry[KernelBackend]] = {"chain": CHAIN_KERNELS, "conv": CONV_KERNELS}
#: Layers of a chain that the cost probe copies and times.
PROBE_LAYERS = 16
#: A route other than ``"plain"`` is chosen only if it takes at most this fraction of ``"plain"``'s time.
MARGIN = 0.9
#: A route whose first timed call takes more than this many times the fastest one is not timed further.
PRUNE = 3.0

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("sao_fusion_override", default=None)


def check_fusion_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`FUSION_MODES`, else ``ValueError`` naming them."""
    if not isinstance(mode, str) or mode not in FUSION_MODES:
        raise ValueError(f"fusion={mode!r} is not a fusion mode; choose from {', '.join(FUSION_MODES)}")
    return mode


@contextlib.contextmanager
def fusion(mode: str) -> Iterator[None]:
    """Run every fused model called inside the block in ``mode`` (one of :data:`FUSION_MODES`).

    Like ``torch.no_grad``, it applies to the current thread (context) only.

    Example:
        >>> from sao.nn import FusedSequential, SparseLinear
        >>> net = FusedSequential(SparseLinear(8, 8, degree=2), nn.Tanh(), SparseLinear(8, 8, degree=2), nn.Tanh())
        >>> with fusion("off"):
        ...     y = net(torch.randn(3, 8))     # the modules one by one
    """
    token = _override.set(check_fusion_mode(mode))
    try:
        yield
    finally:
        _override.reset(token)


def resolve_fusion_mode(mode: str) -> str:
    """The mode a call runs in: the innermost :func:`fusion` block's, else the model's own ``mode``."""
    override = _override.get()
    return override if override is not None else mode


@dataclass(frozen=True)
class Decision:
    """How one call of a chain runs, and why.

    Attributes:
        route: one of :data:`ROUTES`.
        reason: why (the blocker, the forced mode, or the measured comparison).
        seconds: the probe's time per call of each route it timed (empty if none was timed).
    """

    route: str
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.route} ({self.reason})"


def global_hook_blocker() -> str | None:
    """Why no module may be skipped now — global module hooks are registered — or ``None``."""
    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
             "_global_backward_pre_hooks")
    found = [n.strip("_") for n in names if getattr(_module_globals, n, None)]
    return f"global module hooks are registered ({', '.join(found)})" if found else None


def module_blocker(module: nn.Module, types: Sequence[type]) -> str | None:
    """Why calling ``module`` may do more than its type's ``forward`` (so no fused route can replace it), or ``None``.

    Args:
        module: a module a fused route would reimplement.
        types: the exact types the fused route reimplements.
    """
    kind = type(module)
    if _runs_as_its_type(module, types):
        return None
    if kind not in types:
        parametrized = getattr(module, "parametrizations", None) is not None
        return (f"{kind.__name__} is parametrized" if parametrized
                else f"{kind.__name__} is not one of {', '.join(t.__name__ for t in types)} (exact type)")
    hooks = [name for name in _HOOKS if getattr(module, name)]
    if hooks:
        return f"{kind.__name__} has {', '.join(h.strip('_').replace('_', ' ') for h in hooks)}"
    return f"{kind.__name__} has a forward set on the instance"


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _runs_as_its_type(module: nn.Module, types: Sequence[type]) -> bool:
    """Whether calling ``module`` is exactly its type's ``forward``: one of ``types``, no hooks, no instance
    ``forward`` (attribute reads only: it runs for every module of a chain at every call)."""
    return type(module) in types and not (module._forward_hooks or module._forward_pre_hooks
                                          or module._backward_hooks or module._backward_pre_hooks
                                          or "forward" in module.__dict__)


def chain_blocker(modules: Sequence[nn.Module], types: Sequence[Sequence[type]]) -> str | None:
    """The first reason (:func:`module_blocker`) why ``modules`` cannot run fused, or ``None``.

    ``types[i]`` is what ``modules[i]`` must be; checked at every call, so it is kept to attribute reads.
    """
    for i, (module, allowed) in enumerate(zip(modules, types, strict=True)):
        if not _runs_as_its_type(module, allowed):
            return f"module {i} of the chain: {module_blocker(module, allowed)}"
    return None


def call_blocker(x: Tensor) -> str | None:
    """Why this call must run ``"plain"`` under ``"auto"`` (and cannot run ``"compiled"``), or ``None``.

    Devices other than CPU and CUDA (``meta``, …), autocast, ``torch.func`` transforms, forward-mode AD,
    ``torch.compile`` and ``torch.jit.trace`` (and the ONNX export built on it): the kernels implement none
    of them, and the cost probe cannot run inside them.
    """
    if x.is_cpu:  # attribute reads: this runs at every call of every fast-path module
        device_type = "cpu"
    elif x.is_cuda:
        device_type = "cuda"
    else:
        return f"no fast route for device type {x.device.type!r} (cpu, cuda)"
    if torch.is_autocast_enabled(device_type):
        return "autocast is enabled"
    if torch._C._are_functorch_transforms_active():
        return "a torch.func transform is active"
    level = getattr(forward_ad, "_current_level", None)  # -1 outside every dual_level
    if (level >= 0) if level is not None else forward_ad.unpack_dual(x).tangent is not None:
        return "forward-mode AD is active"
    if torch.compiler.is_compiling():
        return "torch.compile is tracing"
    if torch.jit.is_tracing():  # torch.jit.trace and the ONNX exporter record PyTorch ops, not the kernels
        return "torch.jit tracing (export) is active"
    return None


def kernel_blocker(x: Tensor, kernel: str = "chain") -> str | None:
    """Why the compiled ``kernel`` (a name in :data:`KERNELS`) cannot take ``x`` (its dtype, no backend for its
    device type, the backend unavailable), or ``None``.

    Besides this, the compiled route needs :func:`call_blocker` to pass and parameters of ``x``'s dtype
    and device. May build the backend's kernel (once per process).
    """
    backends = KERNELS[kernel]
    if x.dtype not in (torch.float32, torch.float64):
        return f"the kernel takes float32/float64, the input is {x.dtype}"
    if x.device.type not in backends:
        return (f"no {kernel} kernel backend for device type {x.device.type!r} (registered: "
                f"{', '.join(backends.names())}; sao.nn.kernels)")
    why = backends.get(x.device.type).unavailable(x.device)
    return None if why is None else f"the {x.device.type} {kernel} kernel backend is unavailable: {why}"


def deterministic_route(routes: Sequence[str], preferred: Sequence[str]) -> Decision | None:
    """Under ``torch.use_deterministic_algorithms(True)``, the first of ``preferred`` among ``routes``, unmeasured;
    else ``None`` (measure).

    A measured choice depends on timing noise, so two runs (or two copies of a model) could take routes that
    differ in float rounding; deterministic mode fixes the route instead, as PyTorch turns off
    ``cudnn.benchmark``'s timing-based choice there. Every route is itself deterministic for a fixed thread count.
    """
    if not torch.are_deterministic_algorithms_enabled():
        return None
    route = next(r for r in preferred if r in routes)
    return Decision(route, "deterministic algorithms are enabled: a fixed route, not measured")


def parameter_blocker(x: Tensor, parameter: Tensor) -> str | None:
    """Why ``x`` cannot meet ``parameter`` on a fused or compiled route (another dtype or device), or ``None``.

    Every route fails alike on such a call, so it runs ``"plain"`` (which raises PyTorch's own error).
    """
    if x.dtype != parameter.dtype or x.device != parameter.device:
        return (f"the input is {x.dtype} on {x.device}, the parameters {parameter.dtype} on {parameter.device}; "
                "give an input like the parameters")
    return None


@contextlib.contextmanager
def probe_isolation() -> Iterator[None]:
    """Run a cost probe out of the caller's sight: identity saved-tensor hooks on top of the caller's (a
    non-reentrant checkpoint or ``save_on_cpu`` around the call must not see the probe's tensors)."""
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        yield


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RouteTimer:
    """Cached micro-benchmark of a chain's or a layer's routes: the fastest exact route per case.

    A case is whatever the caller's key says (shapes, dtype, device, batch bucket, grad mode, threads).
    Each route is run once to warm up, then timed ``rounds`` times round-robin; its time is the minimum. A route
    other than ``"plain"`` whose first timed call takes more than :data:`PRUNE` times the fastest one is not
    timed again. The fastest route wins if it takes at most :data:`MARGIN` of
    ``"plain"``'s time, else ``"plain"``.

    Not a submodule and not saved: a copy or an unpickled model measures again (it may be on another
    machine). One timer may serve several modules (:func:`share_timer`) if their keys say what differs.

    Args:
        rounds: timed calls per route (after one warm-up call).
        clock: seconds now (``time.perf_counter``; tests inject their own).
    """

    def __init__(self, rounds: int = 2, clock: Callable[[], float] = time.perf_counter) -> None:
        self.rounds, self.clock = rounds, clock
        self.decisions: dict[tuple, Decision] = {}

    def choose(self, key: tuple, runs: dict[str, Callable[[], object]], device: torch.device,
               margin: float = MARGIN) -> Decision:
        """The cached decision for ``key``, else time ``runs`` (route → one call; must include ``"plain"``);
        a route other than ``"plain"`` wins only at ``margin`` times ``"plain"``'s time or less."""
        if key in self.decisions:
            return self.decisions[key]
        for run in runs.values():  # warm-up: may build a kernel, a cache, oneDNN's primitives
            self._time(run, device)
        best = {route: self._time(run, device) for route, run in runs.items()}
        live = {r: run for r, run in runs.items() if r == "plain" or best[r] <= PRUNE * min(best.values())}
        for _ in range(self.rounds - 1):
            for route, run in live.items():
                best[route] = min(best[route], self._time(run, device))
        fastest = min(best, key=best.__getitem__)
        plain = best["plain"]
        summary = ", ".join(f"{r} {best[r] * 1e3:.3g} ms" for r in runs)
        if fastest != "plain" and best[fastest] <= margin * plain:
            decision = Decision(fastest, f"measured {plain / best[fastest]:.2f}x plain: {summary}", best)
        else:
            decision = Decision("plain", f"measured, nothing {1 / margin:.2f}x faster: {summary}", best)
        self.decisions[key] = decision
        return decision

    def _time(self, run: Callable[[], object], device: torch.device) -> float:
        _sync(device)
        began = self.clock()
        run()
        _sync(device)
        return self.clock() - began

    def __getstate__(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "clock": time.perf_counter, "decisions": {}}

    def __deepcopy__(self, memo: dict) -> RouteTimer:
        return RouteTimer(self.rounds, self.clock)


def share_timer(model: nn.Module, timer: RouteTimer | None = None) -> RouteTimer:
    """Give every module of ``model`` that measures its routes (it has a ``timer``: blocked
    :class:`~sao.nn.SparseConv2d`, :class:`~sao.nn.FusedSequential`) one timer, so layers of the same shape
    are measured once (their cases name their shapes); returns it. :func:`sao.sparsify` does this."""
    timer = timer if timer is not None else RouteTimer()
    for module in model.modules():
        if isinstance(getattr(module, "timer", None), RouteTimer):
            module.timer = timer
    return timer


def batch_bucket(batch: int) -> int:
    """``batch`` rounded up to a power of two (the timer's cases share a bucket)."""
    return 1 << max(0, batch - 1).bit_length()


class RoutedLayer:
    """Per-call route choice for one sparse layer (mixed into blocked :class:`~sao.nn.SparseConv2d` and
    :class:`~sao.nn.SparseLinear`): the same three steps as a chain's, for a single layer.

    The layer's ``fusion`` attribute (one of :data:`FUSION_MODES`) and ``timer`` (a :class:`RouteTimer`)
    drive :meth:`decide`; ``last_decision`` keeps the last call's. Subclasses set :attr:`ROUTE_NAMES` (all
    routes, ``"plain"`` first), :attr:`KERNEL` (the name in :data:`KERNELS` behind ``"compiled"``, or
    ``None``), :attr:`FEATURE_DIMS` (trailing input dims of one sample) and implement :meth:`run` and
    :meth:`route_signature`. The routes run inside the layer's ``forward``, so its hooks and
    parametrizations apply on every route.
    """

    ROUTE_NAMES: tuple[str, ...] = ("plain",)
    KERNEL: str | None = None
    FEATURE_DIMS = 1
    #: Deterministic mode's route order (:func:`deterministic_route`).
    DETERMINISTIC: tuple[str, ...] = ("compiled", "plain")
    last_decision: Decision | None = None
    _last_case: tuple | None = None  # (the last call's kind, its decision, the timer): repeated calls skip the rest

    timer: RouteTimer
    blocks: Tensor
    bias: Tensor | None
    row_perm: Tensor
    col_perm: Tensor
    _scatter: Callable[[Tensor], Tensor]  # the dense weight of given blocks (SparseLayerBase)

    @property
    def fusion(self) -> str:
        """The layer's mode, one of :data:`FUSION_MODES` (``ValueError`` on assignment of anything else)."""
        return self._fusion

    @fusion.setter
    def fusion(self, mode: str) -> None:
        self._fusion = check_fusion_mode(mode)

    def dense_weight(self, blocks: Tensor) -> Tensor:
        """The dense weight of ``blocks`` (the ``"dense"`` route's), scattered by the layer's permutations.

        Built on every call: a kept copy could not see a change made through ``.data`` (weight clipping, a
        hand-written EMA), which moves neither the version counter nor the storage, so it would compute with
        stale weights; the scatter is one pass over the weight, and the route is measured with it.
        """
        return self._scatter(blocks)

    def run(self, x: Tensor, route: str, blocks: Tensor, bias: Tensor | None) -> Tensor:
        """The layer on ``route`` with these ``blocks`` and ``bias``, without deciding or checking."""
        raise NotImplementedError

    def route_signature(self) -> tuple:
        """What distinguishes this layer's cases from another's in a shared timer (its shape and settings)."""
        raise NotImplementedError

    def decide(self, x: Tensor) -> Decision:
        """How a call with input ``x`` runs; may time the routes once per case.

        Raises:
            ValueError: under ``fusion="compiled"`` where the kernel cannot run this call exactly.
        """
        mode = resolve_fusion_mode(self.fusion)
        if mode in ("off", "fused") or (mode == "compiled" and self.KERNEL is None):
            return Decision("plain", f"fusion={mode!r}")
        blocks = self.blocks
        unfit = parameter_blocker(x, blocks) or call_blocker(x)
        if mode == "compiled":
            blocker = unfit or kernel_blocker(x, self.KERNEL)
            if blocker:
                raise ValueError(f"fusion='compiled' cannot run this call exactly: {blocker}; use fusion='auto'")
            return Decision("compiled", "fusion='compiled'")
        if unfit:
            return Decision("plain", unfit)
        bias = self.bias
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or blocks.requires_grad
                                                  or (bias is not None and bias.requires_grad))
        kind = (x.shape, x.dtype, x.device, needs_grad, torch.get_num_threads(), x.stride(),
                torch.are_deterministic_algorithms_enabled())
        cached, timer = self._last_case, self.timer
        if cached is not None and cached[0] == kind and cached[2] is timer:  # the same kind of call as the last
            return cached[1]
        routes = self.ROUTE_NAMES
        if "compiled" in routes and (self.KERNEL is None or kernel_blocker(x, self.KERNEL)):
            routes = tuple(r for r in routes if r != "compiled")
        sample = math.prod(x.shape[-self.FEATURE_DIMS:])
        case = (self.route_signature(), tuple(x.shape[-self.FEATURE_DIMS:]), batch_bucket(x.numel() // max(sample, 1)),
                x.dtype, x.device, needs_grad, torch.get_num_threads(),
                x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(), routes)
        # deterministic mode first: the cache may hold measured decisions
        decision = deterministic_route(routes, self.DETERMINISTIC) or timer.decisions.get(case)
        if decision is None:
            # every route of a layer is as exact as "plain" (no hooks or module identity at stake): the fastest wins
            decision = timer.choose(case, self._probe_runs(x, routes, needs_grad), x.device, margin=1.0)
        self._last_case = (kind, decision, timer)
        return decision

    def _probe_runs(self, x: Tensor, routes: tuple[str, ...], needs_grad: bool) -> dict[str, Callable[[], object]]:
        """One call of each route on detached copies of the input and parameters (the layer's gradients and
        hooks are never touched)."""
        def leaf(t: Tensor | None) -> Tensor | None:  # without gradients the layer's own tensors are safe to use
            if t is None or not needs_grad:
                return t
            return t.detach().requires_grad_(t.requires_grad)

        xp, blocks, bias = leaf(x), leaf(self.blocks), leaf(self.bias)
        targets = [t for t in (xp, blocks, bias) if t is not None and t.requires_grad] if needs_grad else []

        def once(route: str) -> None:
            with probe_isolation():
                y = self.run(xp, route, blocks, bias)
                if targets:
                    torch.autograd.grad(y, targets, torch.ones_like(y))

        return {route: (lambda r=route: once(r)) for route in routes}

    def _routed_forward(self, x: Tensor) -> Tensor:
        self.last_decision = decision = self.decide(x)
        return self.run(x, decision.route, self.blocks, self.bias)

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())  # type: ignore[misc]
        state.pop("_last_case", None)  # a copy (maybe on another machine) measures again
        return state
