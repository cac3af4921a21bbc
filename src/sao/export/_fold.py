"""Tracing a model and folding the permutations of its sparse layers away (the heart of :func:`deployable`).

The model is traced with :mod:`torch.fx` (sparse layers are leaves; a submodule whose ``forward`` cannot be
traced symbolically stays whole, *opaque*). Every value of the traced graph then carries a **state**: the
permutation its feature axis is in (``index``: position ``k`` holds canonical feature ``index[k]``), whether it
is in the feature-major ``(1, F, N)`` layout of the linear block forms, and whether a dense producer can
still choose its order for free (*flex*). Walking the graph once, in order:

- a **block form** (:data:`sao.export.FORMS` ``"grouped"``/``"matmul"``) takes its inputs in block order
  (``col_perm``): from any state that is one gather, the composition of the producer's order and ``col_perm``
  (none at all if the producer is flexible: a dense layer then writes its rows in that order); it leaves its
  outputs in block order (``row_perm``): the scatter back is not done;
- **elementwise** modules and functions (activations, dropout in eval) and **per-channel** ones (eval
  ``BatchNorm`` with its parameters permuted, ``LayerNorm`` over the features, pooling, a ``Flatten`` of 1x1
  maps) pass the state through; feature-major values stay feature-major through elementwise ones;
- **dense** ``nn.Linear``/``nn.Conv2d`` (and sparse layers in the ``"dense"`` form) fold the input order into
  their columns and become flexible producers: their rows (and the per-channel parameters after them) are
  permuted when a consumer asks for an order;
- **binary** elementwise ops (residual adds) need both operands in one state: a flexible operand is reordered,
  else one gather makes the second match the first;
- **anything else** (the output, reshapes, attention, unknown functions) gets canonical inputs.

So a chain ``SparseLinear → tanh → SparseLinear → …`` in a block form is one gather and one block product per
layer, feature-major from the first to the last, with the first gather folded into the dense layer before it
and the last scatter into the dense layer after it. Everything stays exact: a permutation moves values, never
rounds them.
"""

from __future__ import annotations

import copy
import operator
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from sao.export._forms import Lowered
from sao.export._modules import FromFeatureMajor, Gather, Standalone, ToFeatureMajor
from sao.export._spec import layer_kind
from sao.nn import ELEMENTWISE, FusedSequential, FusedSparseChain

__all__ = ["Traced", "fold", "standalone", "trace", "unfuse"]


# ---------------------------------------------------------------- preparing and tracing

def unfuse(model: nn.Module) -> nn.Module:
    """``model`` with every :class:`~sao.nn.FusedSequential` as the ``nn.Sequential`` of its modules and every
    :class:`~sao.nn.FusedSparseChain` as ``nn.Sequential(layer, activation, …)`` (same modules; in place where
    nested, the root returned anew if it is one)."""
    def plain(module: nn.Module) -> nn.Module:
        if isinstance(module, FusedSparseChain):
            return nn.Sequential(*[m for pair in zip(module.layers, module.activations, strict=True) for m in pair])
        if isinstance(module, FusedSequential):
            return nn.Sequential(OrderedDict(module._modules.items()))
        return module

    for name, module in list(model.named_modules()):
        if name and plain(module) is not module:
            model.set_submodule(name, plain(module))
    return plain(model)


class _Tracer(fx.Tracer):
    """Sparse layers are leaves; a module whose ``forward`` fails to trace symbolically becomes a leaf too."""

    def __init__(self) -> None:
        super().__init__()
        self.opaque: dict[int, nn.Module] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (layer_kind(m) is not None or id(m) in self.opaque
                or super().is_leaf_module(m, module_qualified_name))

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        if not self.is_leaf_module(m, self.path_of_module(m)):
            stack, calls = OrderedDict(self.module_stack), dict(self.num_calls)
            try:
                return super().call_module(m, forward, args, kwargs)
            except Exception:  # any failure to trace: the module runs whole, as it is
                self.module_stack.clear()
                self.module_stack.update(stack)
                self.num_calls.clear()
                self.num_calls.update(calls)
                self.opaque[id(m)] = m
        return super().call_module(m, forward, args, kwargs)


@dataclass
class Traced:
    """A traced model: ``module`` (``None`` if even the root could not be traced: ``why``), the submodules kept
    whole (``opaque``, by qualified name)."""

    module: fx.GraphModule | None
    opaque: dict[str, nn.Module]
    why: str | None = None


def _in_place(node: fx.Node) -> bool:
    """Whether ``node`` is an in-place op (a method or function whose name ends in one ``_``, an
    ``operator.i*``, a call with ``inplace=True``, a module with ``inplace=True`` such as ``nn.ReLU(inplace=True)``):
    its result may be unused while its effect is not."""
    if node.op == "call_module":
        owner = node.graph.owning_module
        module = owner.get_submodule(node.target) if owner is not None else None
        return getattr(module, "inplace", False) is True
    if node.op not in ("call_method", "call_function"):
        return False
    if node.kwargs.get("inplace") is True or node.target in _IN_PLACE_OPERATORS:
        return True
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return name.endswith("_") and not name.endswith("__")


_IN_PLACE_OPERATORS = frozenset({operator.iadd, operator.isub, operator.imul, operator.itruediv,
                                 operator.ifloordiv, operator.imod, operator.ipow, operator.iand, operator.ior,
                                 operator.ixor, operator.ilshift, operator.irshift, operator.imatmul})
#: ops whose result shares its input's storage (a later in-place op on the input shows through)
_VIEW_METHODS = frozenset({"view", "view_as", "reshape", "reshape_as", "transpose", "permute", "t", "narrow",
                           "select", "unflatten", "flatten", "squeeze", "unsqueeze", "expand", "expand_as",
                           "split", "chunk", "unbind", "as_strided", "diagonal", "movedim", "swapaxes",
                           "detach", "__getitem__", "contiguous"})


def _dead_code(graph: fx.Graph) -> None:
    """Remove the unused nodes of ``graph``, never an in-place op (fx counts one with no users as dead)."""
    graph.eliminate_dead_code(is_impure_node=lambda n: n.is_impure() or _in_place(n))


def _check_aliasing(graph: fx.Graph) -> None:
    """Refuse a graph where an in-place op changes a tensor that another node views (the folded graph may copy
    the value — a gather, a layout change — so the view would not see the change).

    Raises:
        ValueError: naming the op, suggesting its out-of-place form.
    """
    order = {n: k for k, n in enumerate(graph.nodes)}
    for node in graph.nodes:
        if not _in_place(node) or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        target = node.args[0]
        op = _name(node)
        views = [user for user in target.users if order[user] < order[node] and _is_view(user)]
        if _is_view(target):
            views.append(target)
        if views:
            if node.op == "call_module" or node.kwargs.get("inplace") is True:
                out_of_place = f"{op} with inplace=False"
            elif op.startswith("i") and node.op == "call_function":
                out_of_place = op[1:]
            else:
                out_of_place = op.rstrip("_")
            raise ValueError(f"sao.export cannot deploy the in-place op {op!r} on {target.name!r}: "
                             f"{views[0].name!r} ({_name(views[0])!r}) views the same tensor, and the deployable "
                             f"graph may copy it; use the out-of-place {out_of_place!r} in the model's forward")


def _name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))


def _is_view(node: fx.Node) -> bool:
    """Whether ``node`` may view its first argument (an indexing of a tuple is no view)."""
    if node.op not in ("call_method", "call_function"):
        return False
    if _name(node) == "getitem":
        return bool(node.args) and _meta_shape(node.args[0]) is not None
    return _name(node) in _VIEW_METHODS


def trace(model: nn.Module, example: Tensor) -> Traced:
    """Trace ``model`` (sparse layers as leaves) and record every value's shape on ``example``.

    Raises:
        ValueError: if an in-place op changes a tensor that another value views (see :func:`_check_aliasing`).
    """
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as err:  # the root itself cannot be traced: every layer self-contained
        return Traced(None, {"": model}, f"{type(err).__name__}: {err}")
    module = fx.GraphModule(model, graph)
    _dead_code(module.graph)
    module.recompile()
    with torch.no_grad():
        ShapeProp(module).propagate(example)
    _check_aliasing(module.graph)
    names = {id(m): n for n, m in model.named_modules()}
    return Traced(module, {names[i]: m for i, m in tracer.opaque.items() if i in names})


# ---------------------------------------------------------------- states

def _inverse(perm: Tensor) -> Tensor:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    return inv


def _is_identity(perm: Tensor) -> bool:
    return torch.equal(perm, torch.arange(perm.numel()))


@dataclass(eq=False)
class Flex:
    """A value whose order a dense producer still chooses: permuting ``producer``'s output rows (and the
    parameters of the per-channel ``followers`` after it) reorders the value without a gather."""

    producer: nn.Module
    followers: list[tuple[nn.Module, Callable[[nn.Module, Tensor], None]]] = field(default_factory=list)

    def reorder(self, p: Tensor) -> None:
        """New position ``k`` takes what position ``p[k]`` held."""
        _permute_rows(self.producer, p)
        for module, permute in self.followers:
            permute(module, p)

    def then(self, module: nn.Module, permute: Callable[[nn.Module, Tensor], None]) -> Flex:
        return Flex(self.producer, [*self.followers, (module, permute)])


@dataclass(frozen=True, eq=False)
class Value:
    """A value of the new graph and its state (see the module docstring)."""

    node: fx.Node
    rank: int | None = None
    index: Tensor | None = None
    axis: int = -1
    major: fx.Node | None = None
    flex: Flex | None = None

    @property
    def plain(self) -> bool:
        """Canonical: no permutation, not feature-major."""
        return self.index is None and self.major is None


@torch.no_grad()
def _permute_rows(module: nn.Module, p: Tensor) -> None:
    module.weight.data = module.weight.data[p].contiguous()
    if module.bias is not None:
        module.bias.data = module.bias.data[p].contiguous()


@torch.no_grad()
def _permute_columns(module: nn.Module, index: Tensor) -> None:
    module.weight.data = module.weight.data[:, index].contiguous()


def _permute_params(names: tuple[str, ...]) -> Callable[[nn.Module, Tensor], None]:
    """A function permuting the tensors ``names`` of a module along their first axis."""
    @torch.no_grad()
    def permute(module: nn.Module, p: Tensor) -> None:
        for name in names:
            tensor = getattr(module, name, None)
            if isinstance(tensor, Tensor):
                tensor.data = tensor.data[p].contiguous()
    return permute


# ---------------------------------------------------------------- what each kind of node does to a state

@dataclass(frozen=True)
class PerChannel:
    """A module acting on each feature alone: on axis ``axis(rank)``; ``permute`` its parameters; whether it
    also runs on the feature-major layout (``major_ok``)."""

    axis: Callable[[int], int]
    permute: Callable[[nn.Module, Tensor], None] | None
    major_ok: bool = False
    applies: Callable[[nn.Module], bool] = lambda m: True


_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
#: per-channel modules by exact type
PER_CHANNEL: dict[type[nn.Module], PerChannel] = {
    nn.BatchNorm1d: PerChannel(lambda r: 1, _permute_params(_BN_PARAMS), major_ok=True,
                               applies=lambda m: not m.training),
    nn.BatchNorm2d: PerChannel(lambda r: 1, _permute_params(_BN_PARAMS), applies=lambda m: not m.training),
    nn.LayerNorm: PerChannel(lambda r: r - 1, _permute_params(("weight", "bias")),
                             applies=lambda m: len(m.normalized_shape) == 1),
    nn.AdaptiveAvgPool2d: PerChannel(lambda r: 1, None),
    nn.AdaptiveMaxPool2d: PerChannel(lambda r: 1, None, applies=lambda m: not m.return_indices),
    nn.AvgPool2d: PerChannel(lambda r: 1, None),
    nn.MaxPool2d: PerChannel(lambda r: 1, None, applies=lambda m: not m.return_indices),
}

#: elementwise modules (exact types; dropout is the identity in eval mode)
ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (*ELEMENTWISE, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                                                    nn.AlphaDropout)
#: elementwise functions and tensor methods of one tensor (its first argument)
ELEMENTWISE_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset({
    F.relu, torch.relu, F.relu6, torch.tanh, F.tanh, torch.sigmoid, F.sigmoid, F.gelu, F.silu, F.mish, F.elu,
    F.leaky_relu, F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus, F.dropout, operator.neg, torch.neg,
    torch.abs, torch.exp})
ELEMENTWISE_METHODS: frozenset[str] = frozenset({"relu", "relu_", "tanh", "tanh_", "sigmoid", "sigmoid_", "neg",
                                                  "abs", "exp", "contiguous", "clone"})
#: elementwise functions and methods of two operands (broadcast)
BINARY_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset({
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul, operator.truediv,
    torch.add, torch.sub, torch.mul})
BINARY_METHODS: frozenset[str] = frozenset({"add", "add_", "sub", "sub_", "mul", "mul_"})
FLATTEN_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset({torch.flatten})


def _meta_shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


# ---------------------------------------------------------------- the pass

class _Folder:
    """One pass over a traced graph, building the deployable graph (see the module docstring)."""

    def __init__(self, traced: fx.GraphModule, lowered: Mapping[str, Lowered]) -> None:
        self.old = traced
        self.modules = dict(traced.named_modules())
        self.lowered = lowered
        self.graph = fx.Graph()
        self.env: dict[fx.Node, Value] = {}
        self.names: set[str] = set(self.modules)
        self.gathers = 0

    # ------------------------------------------------------------ building blocks

    def _add(self, module: nn.Module, hint: str) -> str:
        base = hint.replace(".", "_") or "module"
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        self.old.add_module(name, module)
        return name

    def _call(self, module: nn.Module, args: tuple, hint: str) -> fx.Node:
        return self.graph.call_module(self._add(module, hint), args)

    def _reorder(self, v: Value, target: Tensor, axis: int) -> Value:
        """``v`` with its feature axis ``axis`` in order ``target`` (canonical feature at each position)."""
        if v.index is not None and v.axis != axis:
            v = self._canonical(v)
        p = target if v.index is None else _inverse(v.index)[target]
        index = None if _is_identity(target) else target
        if _is_identity(p):
            return replace(v, index=index, axis=axis)
        if v.flex is not None:
            v.flex.reorder(p)
            return replace(v, index=index, axis=axis)
        self.gathers += 1
        # a feature axis counted from the end (when the rank is known) also holds for an unbatched input
        at = 1 if v.major is not None else (axis - v.rank if v.rank is not None and axis >= 0 else axis)
        node = self._call(Gather(at, p), (v.node,), "gather")
        return Value(node, v.rank, index, axis, v.major)

    def _exit_major(self, v: Value) -> Value:
        if v.major is None:
            return v
        node = self._call(FromFeatureMajor(v.rank), (v.node, v.major), "from_feature_major")
        return replace(v, node=node, major=None)

    def _enter_major(self, v: Value) -> Value:
        if v.major is not None:
            return v
        return replace(v, node=self._call(ToFeatureMajor(), (v.node,), "to_feature_major"), major=v.node)

    def _leave_major(self, v: Value, like: Value) -> Value:
        """Feature-major ``v`` in ``like``'s order (gathered while rows are contiguous), out of that layout."""
        axis = v.rank - 1
        if like.index is not None and like.axis != axis:
            return self._canonical(v)
        if like.index is not None:
            v = self._reorder(v, like.index, axis)
        elif v.index is not None:
            v = self._reorder(v, torch.arange(v.index.numel()), axis)
        return self._exit_major(v)

    def _canonical(self, v: Value) -> Value:
        if v.index is not None:
            v = self._reorder(v, torch.arange(v.index.numel()), v.axis)
        return self._exit_major(v)

    def _arg(self, old: Any) -> Any:
        """The canonical new value of an old argument (a gather where needed, at this point of the graph: a copy
        made here sees what in-place ops did to the value before, as the original argument does)."""
        if not isinstance(old, fx.Node):
            return old
        return self._canonical(self.env[old]).node

    def _copy(self, node: fx.Node, first: fx.Node | None = None) -> fx.Node:
        """``node`` copied into the new graph, arguments canonical (but ``first`` for its first argument)."""
        mapping = {n: self._arg(n) for n in node.all_input_nodes if first is None or n is not node.args[0]}
        if first is not None:
            mapping[node.args[0]] = first
        return self.graph.node_copy(node, lambda n: mapping[n])

    def _single_use(self, node: fx.Node) -> bool:
        return len(node.users) == 1

    def _rank(self, node: fx.Node) -> int | None:
        shape = _meta_shape(node)
        return None if shape is None else len(shape)

    # ------------------------------------------------------------ handlers

    def _handler(self, node: fx.Node) -> Callable[[fx.Node], Value]:
        if node.op == "call_module":
            module = self.modules[node.target]
            if node.target in self.lowered:
                return self._sparse
            if type(module) in (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear):
                return self._dense
            if type(module) is nn.Conv2d and module.groups == 1:
                return self._dense
            rule = PER_CHANNEL.get(type(module))
            if rule is not None and rule.applies(module):
                return self._per_channel
            if type(module) in ELEMENTWISE_MODULES and not node.kwargs and len(node.args) == 1:
                return self._elementwise
            if type(module) is nn.Flatten:
                return self._flatten
        elif node.op == "call_function":
            if node.target in ELEMENTWISE_FUNCTIONS:
                return self._elementwise
            if node.target in BINARY_FUNCTIONS:
                return self._binary
            if node.target in FLATTEN_FUNCTIONS:
                return self._flatten
        elif node.op == "call_method":
            if node.target in ELEMENTWISE_METHODS:
                return self._elementwise
            if node.target in BINARY_METHODS:
                return self._binary
            if node.target == "flatten":
                return self._flatten
        return self._other

    def _other(self, node: fx.Node) -> Value:
        return Value(self._copy(node), self._rank(node))

    def _elementwise(self, node: fx.Node) -> Value:
        if not isinstance(node.args[0], fx.Node) or any(isinstance(a, fx.Node) for a in (*node.args[1:],
                                                                                         *node.kwargs.values())):
            return self._other(node)
        v = self.env[node.args[0]]
        flex = v.flex if self._single_use(node.args[0]) and self._single_use(node) else None
        return replace(v, node=self._copy(node, first=v.node), flex=flex)

    def _dense(self, node: fx.Node, lowered: Lowered | None = None) -> Value:
        """A dense ``nn.Linear``/``nn.Conv2d`` (an own copy): input order folded into its columns, flexible rows."""
        rank = self._rank(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if len(node.args) != 1 or node.kwargs or rank is None:
            return self._other(node) if lowered is None else self._standalone(node, lowered)
        module = copy.deepcopy(self.modules[node.target] if lowered is None else lowered.core)
        v = self.env[node.args[0]]
        axis = rank - 1 if isinstance(module, nn.Linear) else 1
        if isinstance(module, nn.Conv2d) and rank != 4:
            v = self._canonical(v)
        v = self._exit_major(v)
        if v.index is not None and v.axis != axis:
            v = self._canonical(v)
        if v.index is not None:
            _permute_columns(module, v.index)
        out = self._call(module, (v.node,), str(node.target))
        return Value(out, self._rank(node), axis=axis, flex=Flex(module) if self._single_use(node) else None)

    def _sparse(self, node: fx.Node) -> Value:
        lowered = self.lowered[node.target]
        if lowered.in_order is None:
            return self._dense(node, lowered)
        rank = self._rank(node.args[0])
        if len(node.args) != 1 or node.kwargs or rank is None or (not lowered.feature_major and rank != 4):
            return self._standalone(node, lowered)
        v = self.env[node.args[0]]
        axis = rank - 1 if lowered.feature_major else 1
        if lowered.feature_major:
            if v.index is not None and v.axis != axis:
                v = self._canonical(v)
            v = self._enter_major(v)
        v = self._reorder(v, lowered.in_order, axis)
        out = self._call(copy.deepcopy(lowered.core), (v.node,), f"{node.target}.{lowered.form}")
        index = None if _is_identity(lowered.out_order) else lowered.out_order
        return Value(out, self._rank(node), index, axis, v.major)

    def _standalone(self, node: fx.Node, lowered: Lowered) -> Value:
        module = standalone(self.modules[node.target], lowered)
        mapping = {n: self._arg(n) for n in node.all_input_nodes}
        args = fx.node.map_arg(node.args, lambda n: mapping[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: mapping[n])
        out = self.graph.call_module(self._add(module, f"{node.target}.{lowered.form}"), args, kwargs)
        return Value(out, self._rank(node))

    def _per_channel(self, node: fx.Node) -> Value:
        module = self.modules[node.target]
        rule = PER_CHANNEL[type(module)]
        rank = self._rank(node.args[0])
        if len(node.args) != 1 or node.kwargs or rank is None:
            return self._other(node)
        v = self.env[node.args[0]]
        axis = rule.axis(rank)
        if v.major is not None and not rule.major_ok:
            v = self._exit_major(v)
        if v.index is not None and v.axis != axis:
            v = self._canonical(v)
        keep_flex = v.flex is not None and self._single_use(node.args[0]) and self._single_use(node)
        own = module
        if rule.permute is not None and (v.index is not None or keep_flex):
            own = copy.deepcopy(module)
            if v.index is not None:
                rule.permute(own, v.index)
        out = self._call(own, (v.node,), str(node.target)) if own is not module else self._copy(node, first=v.node)
        flex = None
        if keep_flex:
            flex = v.flex.then(own, rule.permute) if rule.permute is not None else v.flex
        return Value(out, self._rank(node), v.index, axis, v.major, flex)

    def _flatten(self, node: fx.Node) -> Value:
        """A flatten that keeps the feature axis (all the dims it merges into it are 1) passes the state."""
        if node.op == "call_module":
            module = self.modules[node.target]
            start, end = module.start_dim, module.end_dim
        else:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        source = node.args[0]
        shape = _meta_shape(source)
        if shape is None or not isinstance(start, int) or not isinstance(end, int):
            return self._other(node)
        v = self.env[source]
        rank = len(shape)
        start, end = start % rank, end % rank
        axis = v.axis if v.index is not None else 1
        if v.major is not None or axis != start or any(shape[d] != 1 for d in range(start + 1, end + 1)):
            return self._other(node)
        flex = v.flex if self._single_use(source) and self._single_use(node) else None
        return Value(self._copy(node, first=v.node), self._rank(node), v.index, start, None, flex)

    def _binary(self, node: fx.Node) -> Value:
        operands = [a for a in node.args if isinstance(a, fx.Node)]
        shapes = {_meta_shape(a) for a in operands}
        if len(operands) != 2 or len(node.args) != 2 or node.kwargs or len(shapes) != 1 or None in shapes:
            return self._other(node)
        a, b = (self.env[n] for n in operands)
        if a.plain and b.plain:
            return self._other(node)
        if (a.major is None) != (b.major is None):  # the feature-major one leaves its layout in the other's order
            a, b = (self._leave_major(a, b), b) if a.major is not None else (a, self._leave_major(b, a))
        if a.index is not None and b.index is not None and a.axis != b.axis:
            a, b = self._canonical(a), self._canonical(b)
        axis = a.axis if a.index is not None else b.axis
        size = _meta_shape(node)[axis]
        if b.flex is None and a.flex is not None:  # the flexible operand takes the other's order, for free
            a = self._reorder(a, torch.arange(size) if b.index is None else b.index, axis)
        else:
            b = self._reorder(b, torch.arange(size) if a.index is None else a.index, axis)
        mapping = {operands[0]: a.node, operands[1]: b.node}
        out = self.graph.node_copy(node, lambda n: mapping[n])
        return Value(out, self._rank(node), a.index, axis, a.major)

    # ------------------------------------------------------------ the walk

    def run(self) -> fx.GraphModule:
        for node in self.old.graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                self.env[node] = Value(self.graph.node_copy(node, lambda n: n), self._rank(node))
            elif node.op == "output":
                self.graph.node_copy(node, self._arg)
            else:
                self.env[node] = self._handler(node)(node)
                if _in_place(node) and node.args and isinstance(node.args[0], fx.Node):
                    # later users of the changed tensor read the value the op changed (maybe a copy of it)
                    self.env[node.args[0]] = self.env[node]
        module = fx.GraphModule(self.old, self.graph)
        _dead_code(module.graph)
        module.delete_all_unused_submodules()
        module.recompile()
        return module


def fold(traced: fx.GraphModule, lowered: Mapping[str, Lowered]) -> tuple[fx.GraphModule, int]:
    """The deployable graph of ``traced`` with the sparse layers named in ``lowered`` in their forms, and the
    number of gathers it runs."""
    folder = _Folder(traced, lowered)
    return folder.run(), folder.gathers


def standalone(layer: nn.Module, lowered: Lowered) -> nn.Module:
    """``layer`` as one self-contained module in its form (canonical order in and out)."""
    core = copy.deepcopy(lowered.core)
    if lowered.in_order is None:
        return core
    in_index = None if _is_identity(lowered.in_order) else lowered.in_order
    out_index = None if _is_identity(lowered.out_order) else _inverse(lowered.out_order)
    with torch.no_grad():
        dense = layer_kind(layer).spec(layer).dense
    return Standalone(core, in_index, out_index, lowered.feature_major, dense.weight, dense.bias,
                      layer_kind(layer).kind)
