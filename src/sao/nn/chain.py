"""``FusedSparseChain``: run a stack of blocked ``SparseLinear`` layers feature-major, one gather each.

Layer by layer, the blocked backend gathers its inputs into block order, multiplies, reorders the
``(g, B, bm)`` product to ``(B, m)`` and gathers the outputs back: three memory passes around
one small batched matmul. In a chain ``SparseLinear → activation → SparseLinear → …`` with
elementwise activations, the output gather of layer ``l`` and the input gather of layer ``l + 1``
compose into one gather by ``row_inverse_l[col_perm_{l+1}]``, and keeping activations
feature-major ``(features, batch)`` makes the product ``blocks @ x`` land directly in that
layout. The chain then costs one row gather and one matmul per layer (a transpose at each end).
It computes exactly the function of the layers it wraps and shares their parameters.
:class:`FusedSequential` (what :func:`fuse_sparse_chains` returns) makes this an execution detail:
it keeps a model's modules and ``state_dict`` keys and runs its chains fused.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from sao._validation import as_int
from sao.nn._chain_kernel import chain_indices, load_chain_kernel, sparse_chain
from sao.nn._chain_triton import sparse_chain_triton, triton_chain_available
from sao.nn._shape import check_features
from sao.nn.linear import SparseLinear

__all__ = ["ELEMENTWISE", "KERNEL_ACTIVATIONS", "FusedSequential", "FusedSparseChain", "fuse_sparse_chains",
           "plan_chains"]

#: Activations that act on each feature alone (so they commute with feature permutations).
ELEMENTWISE: tuple[type[nn.Module], ...] = (nn.Tanh, nn.ReLU, nn.Identity, nn.Sigmoid, nn.GELU, nn.SiLU,
                                            nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Softplus)
#: The activations the compiled chain kernel runs, by module type.
KERNEL_ACTIVATIONS: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.Identity: "identity"}


class FusedSparseChain(nn.Module):
    """``act_k(L_k( … act_1(L_1(x)) … ))`` for blocked :class:`SparseLinear` layers ``L_i``.

    Args:
        layers: blocked ``SparseLinear`` layers with ``layers[i].out_features ==
            layers[i + 1].in_features``.
        activations: one elementwise module per layer (see :data:`ELEMENTWISE`), applied after it.

        compiled: run through a compiled chain kernel where it applies — on the CPU the C++ one
            (:mod:`sao.nn._chain_kernel`), on CUDA the Triton one (:mod:`sao.nn._chain_triton`) —:
            float32/float64, activations ``Tanh``/``ReLU``/``Identity``, no autocast and no
            ``torch.func`` transform. Elsewhere (and with ``compiled=False``) the PyTorch path
            runs. Both compute the same function (float64: to 1e-12; float32: to ~1e-5 over 1000
            layers); the kernel's backward is not twice differentiable (use ``compiled=False`` for
            double backward).

    Shapes:
        input ``(..., layers[0].in_features)`` → output ``(..., layers[-1].out_features)``.

    The layers stay submodules (``self.layers``), so their parameters are shared and trained in place.
    """

    def __init__(self, layers: list[SparseLinear], activations: list[nn.Module], compiled: bool = True) -> None:
        super().__init__()
        self.compiled = bool(compiled)
        self._indices: tuple[tuple, tuple] | None = None
        if not layers or len(layers) != len(activations):
            raise ValueError("give one activation per layer, and at least one layer")
        for i, (layer, act) in enumerate(zip(layers, activations, strict=True)):
            if not isinstance(layer, SparseLinear) or layer.backend != "blocked":
                raise ValueError(f"layers[{i}] must be a SparseLinear with backend='blocked', got {layer}")
            if type(act) not in ELEMENTWISE:
                raise ValueError(f"activations[{i}] = {act} is not elementwise; allowed: "
                                 f"{', '.join(t.__name__ for t in ELEMENTWISE)}")
            if i and layers[i - 1].out_features != layer.in_features:
                raise ValueError(f"layers[{i - 1}] has {layers[i - 1].out_features} outputs but layers[{i}] "
                                 f"takes {layer.in_features} inputs")
        self.layers, self.activations = nn.ModuleList(layers), nn.ModuleList(activations)

    def _kernel(self, x: Tensor) -> tuple[Callable[..., Tensor], tuple[str, ...]] | None:
        """The compiled chain function for this call (CPU: C++; CUDA: Triton) and the activation names, or ``None``."""
        if not self.compiled or x.dtype not in (torch.float32, torch.float64):
            return None
        if torch.is_autocast_enabled(x.device.type) or torch._C._are_functorch_transforms_active():
            return None
        names = tuple(KERNEL_ACTIVATIONS.get(type(act)) for act in self.activations)
        if None in names or any(layer.blocks.dtype != x.dtype or layer.blocks.device != x.device
                                for layer in self.layers):
            return None
        if x.device.type == "cpu":
            return (sparse_chain, names) if load_chain_kernel() is not None else None
        if x.device.type == "cuda" and triton_chain_available(x.device):
            return sparse_chain_triton, names
        return None

    def _chain_indices(self) -> tuple:
        """``(gathers, row_perms, final_inverse)`` (:func:`~sao.nn._chain_kernel.chain_indices`: the composed
        gather ``row_inverse_{l-1}[col_perm_l]`` of every layer), cached while the topology buffers stay the same."""
        if torch._C._are_functorch_transforms_active():  # no data pointers to key on there
            return chain_indices(list(self.layers))
        key = tuple(p for layer in self.layers
                    for p in (layer.topology, layer.col_perm.data_ptr(), layer.row_inverse.data_ptr()))
        # the Topology objects themselves (compared by identity), not their ids: held here, never reused
        if self._indices is None or self._indices[0] != key:
            self._indices = (key, chain_indices(list(self.layers)))
        return self._indices[1]

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state["_indices"] = None  # index tensors are rebuilt for the copy's own buffers
        return state

    def forward(self, x: Tensor) -> Tensor:
        check_features(x, self.layers[0].in_features, "FusedSparseChain")
        kernel = self._kernel(x)
        if kernel is not None:
            run, names = kernel
            return run(x, list(self.layers), names, self._chain_indices())
        lead = x.shape[:-1]
        h = x.reshape(-1, x.shape[-1]).t()  # (features, batch)
        batch = h.shape[1]
        gathers = self._chain_indices()[0]
        for layer, act, gather in zip(self.layers, self.activations, gathers, strict=True):
            g, bm, bn = layer.blocks.shape
            xs = h.index_select(0, gather).view(g, bn, batch)
            if layer.bias is None:
                z = torch.bmm(layer.blocks, xs)
            else:
                z = torch.baddbmm(layer.bias.index_select(0, layer.row_perm).view(g, bm, 1), layer.blocks, xs)
            h = act(z.view(g * bm, batch))
        return h.index_select(0, self.layers[-1].row_inverse).t().reshape(*lead, self.layers[-1].out_features)

    def extra_repr(self) -> str:
        return f"{len(self.layers)} layers, {self.layers[0].in_features} -> {self.layers[-1].out_features}"


def _fusable(layer: nn.Module, act: nn.Module | None) -> bool:
    return isinstance(layer, SparseLinear) and layer.backend == "blocked" and type(act) in ELEMENTWISE


def plan_chains(modules: list[nn.Module], min_layers: int = 2, compiled: bool = True) -> list[nn.Module]:
    """The modules of a sequence with every run of at least ``min_layers`` ``(blocked SparseLinear,
    elementwise activation)`` pairs (matching sizes) replaced by one :class:`FusedSparseChain`.

    The chains share the layers' parameters; the other modules are returned as they are.
    """
    out: list[nn.Module] = []
    run: list[tuple[SparseLinear, nn.Module]] = []

    def flush() -> None:
        if len(run) >= min_layers:
            out.append(FusedSparseChain([p[0] for p in run], [p[1] for p in run], compiled))
        else:
            out.extend(m for pair in run for m in pair)
        run.clear()

    i = 0
    while i < len(modules):
        layer, act = modules[i], modules[i + 1] if i + 1 < len(modules) else None
        if _fusable(layer, act) and (not run or run[-1][0].out_features == layer.in_features):
            run.append((layer, act))
            i += 2
            continue
        flush()
        if _fusable(layer, act):
            continue  # size mismatch with the previous run: start a new run at this layer
        out.append(layer)
        i += 1
    flush()
    return out


class FusedSequential(nn.Sequential):
    """An ``nn.Sequential`` that runs its chains of blocked :class:`SparseLinear` layers fused.

    It holds exactly the modules it was given, under the same names, so its ``state_dict``,
    checkpoints and ``load_state_dict`` are those of the plain ``nn.Sequential``: fusion is an
    execution detail. At each call the runs of ``(blocked SparseLinear, elementwise
    activation)`` pairs (at least ``min_layers`` of them) execute as one
    :class:`FusedSparseChain` (:func:`plan_chains`); the plan is rebuilt when a module is
    replaced, and is not a submodule.

    Args:
        *args: modules, or one ``OrderedDict`` of named modules, as for ``nn.Sequential``.
        min_layers: shortest run that is fused (keyword only).
        compiled: let the chains use the compiled CPU kernel (keyword only; see :class:`FusedSparseChain`).

    Example:
        >>> from sao.nn import SparseLinear
        >>> plain = nn.Sequential(SparseLinear(8, 8, degree=2), nn.Tanh(), SparseLinear(8, 8, degree=2), nn.Tanh())
        >>> fused = FusedSequential(*plain)
        >>> list(fused.state_dict()) == list(plain.state_dict())
        True
    """

    def __init__(self, *args: nn.Module, min_layers: int = 2, compiled: bool = True) -> None:
        super().__init__(*args)
        self.min_layers = as_int(min_layers, "min_layers", minimum=1)
        self.compiled = bool(compiled)
        self._plan: tuple[tuple[int, ...], list[nn.Module]] | None = None

    def steps(self) -> list[nn.Module]:
        """The modules a call runs: the plan of :func:`plan_chains`, cached while the modules stay the same."""
        key = tuple(id(m) for m in self._modules.values())
        if self._plan is None or self._plan[0] != key:
            self._plan = (key, plan_chains(list(self._modules.values()), self.min_layers, self.compiled))
        return self._plan[1]

    def forward(self, x: Tensor) -> Tensor:
        for step in self.steps():
            x = step(x)
        return x

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state["_plan"] = None  # rebuilt on the first call (a copy's modules are new objects)
        return state

    def extra_repr(self) -> str:
        chains = sum(isinstance(s, FusedSparseChain) for s in self.steps())
        return f"min_layers={self.min_layers}, {chains} fused chain{'s' * (chains != 1)}"


def fuse_sparse_chains(model: nn.Sequential, min_layers: int = 2, compiled: bool = True) -> FusedSequential:
    """``model``'s modules (shared, not copied) in a :class:`FusedSequential`: the runs of at least
    ``min_layers`` ``(blocked SparseLinear, elementwise activation)`` pairs execute as one
    :class:`FusedSparseChain` each.

    The result computes the same function with the same parameters, and its ``state_dict`` keys
    are ``model``'s: checkpoints of either load into the other. With ``compiled=True`` the chains
    run through a compiled kernel where it applies (see :class:`FusedSparseChain`); it is not
    twice differentiable, so for gradient penalties or other double backward pass
    ``compiled=False`` (otherwise the second backward raises "trying to differentiate twice").
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"fuse_sparse_chains takes an nn.Sequential, got {type(model).__name__}")
    return FusedSequential(OrderedDict(model.named_children()), min_layers=min_layers, compiled=compiled)
