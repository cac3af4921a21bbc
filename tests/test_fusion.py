"""Fused execution equals plain execution, as a property over random ``nn.Sequential`` structures.

For random stacks of sparse and dense layers and every elementwise activation — modules used at
several places, tied layers, hooks, parametrizations, frozen parameters, float32/float64, any batch
shape — :func:`sao.nn.fuse_sparse_chains` in each mode must give the plain ``nn.Sequential``'s
forward, gradients, double backward, Hessian-vector products, forward-mode JVPs and SGD steps
(issue: "Fast paths that are exact or absent", fault kinds 1-4 and 6). A forced mode that cannot be
exact must raise instead. The dispatch rule is tested for its decisions with an injected clock.
"""

from __future__ import annotations

import copy
import itertools
import pickle
import types
from collections import OrderedDict
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.autograd import forward_ad
from torch.nn.utils import parametrize

from helpers import gen
from sao.nn import ELEMENTWISE, FusedSequential, FusedSparseChain, SparseLinear, fuse_sparse_chains, fusion
from sao.nn._chain_kernel import load_chain_kernel
from sao.nn.dispatch import MARGIN, Decision, RouteTimer
from sao.topology import valid_degrees

KERNEL = load_chain_kernel() is not None
MODES = ("auto", "fused", "compiled") if KERNEL else ("auto", "fused")
TOL = {torch.float64: {"atol": 1e-9, "rtol": 1e-9}, torch.float32: {"atol": 2e-4, "rtol": 2e-4}}
ACTIVATIONS = [t for t in ELEMENTWISE if t is not nn.Threshold] + [nn.Softmax]


def _activation(kind: type[nn.Module]) -> nn.Module:
    if kind is nn.Softmax:
        return nn.Softmax(dim=-1)  # not elementwise: a chain must stop at it
    return kind()


class Scale(nn.Module):
    """A parametrization: ``blocks * 0.5``."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * 0.5


class Relabelled(SparseLinear):
    """A subclass that computes something else: fusing it as a SparseLinear would be wrong."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def _shifted_forward(self: SparseLinear, x: torch.Tensor) -> torch.Tensor:
    return SparseLinear.forward(self, x) - 0.5


@dataclass
class Built:
    model: nn.Sequential
    dtype: torch.dtype
    in_features: int
    kernel_only: bool  # every chain activation has a kernel


@st.composite
def structures(draw: st.DrawFn) -> Built:
    """A random ``nn.Sequential``: sparse/dense layers of width 8 or 16, activations, repeats, hooks."""
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    g = gen(draw(st.integers(0, 2**16)))
    width = draw(st.sampled_from([8, 16]))
    start = width
    mods: list[nn.Module] = []
    made: dict[tuple[int, int], list[nn.Module]] = {}
    acts: list[nn.Module] = []
    for _ in range(draw(st.integers(1, 7))):
        out = draw(st.sampled_from([8, 16]))
        reuse = made.get((width, out))
        kind = draw(st.sampled_from(["sparse", "sparse", "sparse", "dense", "subclass"]))
        if reuse and draw(st.booleans()):
            layer = draw(st.sampled_from(reuse))  # the same module object again (a tied layer)
        elif kind == "dense":
            layer = nn.Linear(width, out, dtype=dtype)
        else:
            degree = draw(st.sampled_from(valid_degrees(out, width)))
            cls = Relabelled if kind == "subclass" else SparseLinear
            layer = cls(width, out, degree=degree, bias=draw(st.booleans()), generator=g, dtype=dtype)
            if layer.bias is not None:
                with torch.no_grad():
                    layer.bias.normal_(generator=g)
            extra = draw(st.sampled_from(["none"] * 6 + ["hook", "prehook", "parametrize", "frozen", "forward"]))
            if extra == "hook":
                layer.register_forward_hook(lambda m, i, o: o * 1.5)
            elif extra == "prehook":
                layer.register_forward_pre_hook(lambda m, i: (i[0] + 0.25,))
            elif extra == "parametrize":
                parametrize.register_parametrization(layer, "blocks", Scale())
            elif extra == "frozen":
                layer.requires_grad_(False)
            elif extra == "forward":
                layer.forward = types.MethodType(_shifted_forward, layer)  # bound: deepcopy rebinds it
        made.setdefault((width, out), []).append(layer)
        mods.append(layer)
        width = out
        if acts and draw(st.integers(0, 3)) == 0:
            act = draw(st.sampled_from(acts))  # one activation instance at several places
        else:
            act = _activation(draw(st.sampled_from(ACTIVATIONS)))
            if draw(st.integers(0, 9)) == 0:
                act.register_forward_hook(lambda m, i, o: o + 0.125)
            acts.append(act)
        mods.append(act)
    if draw(st.booleans()):
        mods.append(nn.Linear(width, 3, dtype=dtype))
    model = nn.Sequential(OrderedDict((str(i), m) for i, m in enumerate(mods)))
    kernel_only = all(type(m) in (nn.Tanh, nn.ReLU, nn.Identity) or not isinstance(m, ELEMENTWISE) for m in mods)
    return Built(model, dtype, start, kernel_only)


def _input(built: Built, lead: tuple[int, ...], requires_grad: bool = True, strided: bool = False) -> torch.Tensor:
    if strided:  # features first in memory: a non-contiguous (*lead, in) view, as nn.Linear accepts
        x = torch.randn(built.in_features, *lead, dtype=built.dtype, generator=gen(5)).movedim(0, -1)
    else:
        x = torch.randn(*lead, built.in_features, dtype=built.dtype, generator=gen(5))
    return x.requires_grad_(requires_grad)


def _forced_refuses(built: Built, mode: str) -> bool:
    """Whether a forced ``mode`` must refuse the model: a pair that would be fused but for a hook, a
    parametrization, a subclass or a patched forward (read from the "auto" plan's reasons)."""
    if mode == "auto":
        return False
    reasons = [step.reason for step in fuse_sparse_chains(built.model).plan().steps]
    return any(r.startswith("not fused:") and any(k in r for k in ("hooks", "parametrized", "exact type", "instance"))
               for r in reasons)


def _chains_need_kernel_error(fused: FusedSequential, built: Built, mode: str) -> bool:
    has_chain = any(isinstance(s, FusedSparseChain) for s in fused.steps())
    return mode == "compiled" and has_chain and not built.kernel_only


def _fused_or_refusal(built: Built, mode: str) -> FusedSequential | None:
    """The fused model, or ``None`` after checking that a forced mode refuses it loudly."""
    if _forced_refuses(built, mode):
        with pytest.raises(ValueError, match=f"fusion={mode!r} cannot fuse"):
            fuse_sparse_chains(built.model, fusion=mode).steps()
        return None
    return fuse_sparse_chains(built.model, fusion=mode)


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _close(a: torch.Tensor | None, b: torch.Tensor | None, dtype: torch.dtype) -> None:
    if a is None or b is None:
        assert (a is None and b is None) or torch.count_nonzero(a if a is not None else b) == 0
        return
    tol = TOL[dtype]
    # float32 rounding is relative to the tensor's scale: a second-order gradient sums terms of mixed sign, so a
    # small entry can carry the rounding of its large neighbours (both sides are as far from float64)
    scale = float(b.detach().abs().max()) if b.numel() else 0.0
    torch.testing.assert_close(a, b, rtol=tol["rtol"], atol=max(tol["atol"], tol["rtol"] * scale))


@settings(max_examples=150)
@given(built=structures(), mode=st.sampled_from(MODES),
       lead=st.sampled_from([(), (0,), (1,), (3,), (2, 3)]), strided=st.booleans())
def test_fused_equals_plain_forward_and_gradients(built: Built, mode: str, lead: tuple[int, ...],
                                                  strided: bool) -> None:
    """Forward, first-order gradients and a gradient penalty's second-order gradients, fused vs plain."""
    plain = built.model
    fused = _fused_or_refusal(built, mode)
    if fused is None:
        return
    x = _input(built, lead, strided=strided)
    if _chains_need_kernel_error(fused, built, mode):
        with pytest.raises(ValueError, match="no kernel"):
            fused(x)
        return
    y_ref, y = plain(x), fused(x)
    _close(y, y_ref, built.dtype)
    params = _params(plain)
    targets = [x, *params]
    g_ref = torch.autograd.grad(y_ref.tanh().sum(), targets, create_graph=True, allow_unused=True)
    g = torch.autograd.grad(y.tanh().sum(), targets, create_graph=True, allow_unused=True)
    for a, b in zip(g, g_ref, strict=True):
        _close(a, b, built.dtype)
    penalty_ref = sum(t.square().sum() for t in g_ref if t is not None and t.requires_grad)
    penalty = sum(t.square().sum() for t in g if t is not None and t.requires_grad)
    if isinstance(penalty_ref, torch.Tensor):  # double backward: d(|grad|²)/d(x, params)
        try:
            gg_ref = torch.autograd.grad(penalty_ref, targets, allow_unused=True)
        except RuntimeError as exc:  # an activation without a second derivative: the fused model fails alike
            with pytest.raises(RuntimeError, match="not implemented"):
                torch.autograd.grad(penalty, targets, allow_unused=True)
            assert "not implemented" in str(exc)
            return
        gg = torch.autograd.grad(penalty, targets, allow_unused=True)
        for a, b in zip(gg, gg_ref, strict=True):
            _close(a, b, built.dtype)


@settings(max_examples=80)
@given(built=structures(), mode=st.sampled_from(MODES), frozen=st.booleans())
def test_fused_equals_plain_hvp_and_forward_mode(built: Built, mode: str, frozen: bool) -> None:
    """``torch.autograd.functional.hvp`` and forward-mode JVPs (with frozen parameters too), fused vs plain."""
    plain = built.model
    if frozen:
        plain.requires_grad_(False)
    fused = _fused_or_refusal(built, mode)
    x = _input(built, (2,), requires_grad=False)
    v = torch.randn_like(x)
    if fused is None or _chains_need_kernel_error(fused, built, mode):
        return

    def scalar(model: nn.Module) -> object:
        return lambda inp: model(inp).tanh().sum()

    try:
        _, hv_ref = torch.autograd.functional.hvp(scalar(plain), x, v)
    except RuntimeError:  # an activation without a second derivative: the fused model fails alike
        with pytest.raises(RuntimeError, match="not implemented"):
            torch.autograd.functional.hvp(scalar(fused), x, v)
    else:
        _, hv = torch.autograd.functional.hvp(scalar(fused), x, v)
        _close(hv, hv_ref, built.dtype)
    tangents = []
    for model in (plain, fused):
        with forward_ad.dual_level():
            if mode == "compiled" and model is fused and any(isinstance(s, FusedSparseChain) for s in fused.steps()):
                with pytest.raises(ValueError, match="forward-mode AD"):
                    model(forward_ad.make_dual(x, v))
                return
            tangents.append(forward_ad.unpack_dual(model(forward_ad.make_dual(x, v))).tangent)
    assert tangents[0] is not None and tangents[1] is not None  # never "no tangent" (read as zero)
    _close(tangents[1], tangents[0], built.dtype)


@settings(max_examples=40)
@given(built=structures(), mode=st.sampled_from(MODES))
def test_sgd_steps_fused_equal_plain(built: Built, mode: str) -> None:
    """Three SGD steps (momentum, weight decay) on a fused copy and a plain copy end with the same weights."""
    plain = built.model
    twin = copy.deepcopy(plain)  # ties and shared modules are kept by deepcopy
    fused = _fused_or_refusal(Built(twin, built.dtype, built.in_features, built.kernel_only), mode)
    if fused is None or _chains_need_kernel_error(fused, built, mode) or not _params(plain):
        return
    opts = [torch.optim.SGD(_params(m), lr=0.05, momentum=0.9, weight_decay=1e-3) for m in (plain, twin)]
    for step in range(3):
        x = torch.randn(4, built.in_features, dtype=built.dtype, generator=gen(step))
        for model, opt in zip((plain, fused), opts, strict=True):
            opt.zero_grad()
            model(x).tanh().sum().backward()
            opt.step()
    for a, b in zip(twin.state_dict().values(), plain.state_dict().values(), strict=True):
        _close(a, b, built.dtype)


# ---------------------------------------------------------------------------------------------------------
# One test per fault kind, on a fixed model


def _stack(depth: int = 3, width: int = 16, degree: int = 4, act: type[nn.Module] = nn.Tanh,
           seed: int = 0) -> list[nn.Module]:
    g = gen(seed)
    mods: list[nn.Module] = []
    for _ in range(depth):
        mods += [SparseLinear(width, width, degree=degree, generator=g, dtype=torch.float64), act()]
    return mods


def _x(batch: int = 4, width: int = 16) -> torch.Tensor:
    return torch.randn(batch, width, dtype=torch.float64, generator=gen(1), requires_grad=True)


@pytest.mark.parametrize("mode", MODES)
def test_repeated_modules_run_at_every_place(mode: str) -> None:
    """Fault 1: one ReLU instance and one tied layer at several places; a model without sparse layers too."""
    layer, relu = SparseLinear(16, 16, degree=4, generator=gen(), dtype=torch.float64), nn.ReLU()
    plain = nn.Sequential(layer, relu, layer, relu, layer, relu)
    fused = fuse_sparse_chains(plain, fusion=mode)
    assert len(fused) == 6 and list(fused.state_dict()) == list(plain.state_dict())
    x = _x()
    torch.testing.assert_close(fused(x), plain(x), atol=1e-12, rtol=0)
    (g_ref,), (g,) = (torch.autograd.grad(m(x).sum(), [layer.blocks]) for m in (plain, fused))
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=0)
    dense_relu = nn.ReLU()
    dense = nn.Sequential(nn.Linear(16, 16, dtype=torch.float64), dense_relu, nn.Linear(16, 16, dtype=torch.float64),
                          dense_relu)
    dense[2] = dense[0]
    torch.testing.assert_close(fuse_sparse_chains(dense, fusion=mode)(x), dense(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_a_tied_layer_gets_the_sum_of_its_uses_under_create_graph(mode: str) -> None:
    """A layer used twice in one chain passes the same parameter in two slots of the chain's autograd Function;
    its differentiable backward (create_graph=True) gave each slot the gradient of both uses (2x)."""
    a, b = (SparseLinear(16, 16, degree=d, bias=False, generator=gen(i), dtype=torch.float64)
            for i, d in ((0, 4), (1, 8)))
    plain = nn.Sequential(a, nn.Tanh(), b, nn.Tanh(), a, nn.Tanh())
    fused = fuse_sparse_chains(plain, fusion=mode)
    x = _x(batch=3)
    grads = [torch.autograd.grad(m(x).square().sum(), [x, a.blocks, b.blocks], create_graph=True)
             for m in (plain, fused)]
    for g, g_ref in zip(*grads, strict=True):
        torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=0)
    (second,), (second_ref,) = (torch.autograd.grad(g[1].square().sum(), x, retain_graph=True) for g in grads[::-1])
    torch.testing.assert_close(second, second_ref, atol=1e-10, rtol=0)


@pytest.mark.skipif(not KERNEL, reason="the compiled chain kernel cannot be built here")
def test_higher_order_autograd_through_the_compiled_kernel() -> None:
    """Fault 2: gradient penalty, Hessian and forward-mode AD with frozen parameters through the kernel."""
    plain = nn.Sequential(*_stack())
    fused = fuse_sparse_chains(plain)  # auto
    x = _x(batch=3)
    blocks = plain[0].blocks
    with fusion("compiled"):
        (g,) = torch.autograd.grad(fused(x).square().sum(), x, create_graph=True)
        assert fused.steps()[0].last_decision.route == "compiled"
        (gg,) = torch.autograd.grad(g.square().sum(), blocks)
        h = torch.autograd.functional.hessian(lambda inp: fused(inp).square().sum(), x.detach()[0])
    (g_ref,) = torch.autograd.grad(plain(x).square().sum(), x, create_graph=True)
    (gg_ref,) = torch.autograd.grad(g_ref.square().sum(), blocks)
    h_ref = torch.autograd.functional.hessian(lambda inp: plain(inp).square().sum(), x.detach()[0])
    assert gg.abs().sum() > 0
    torch.testing.assert_close(gg, gg_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)
    plain.requires_grad_(False)
    v = torch.randn(3, 16, dtype=torch.float64, generator=gen(2))
    with forward_ad.dual_level():
        t_ref = forward_ad.unpack_dual(plain(forward_ad.make_dual(x.detach(), v))).tangent
        t = forward_ad.unpack_dual(fused(forward_ad.make_dual(x.detach(), v))).tangent
    assert fused.steps()[0].last_decision.reason == "forward-mode AD is active"
    torch.testing.assert_close(t, t_ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_module_hooks_are_honoured(mode: str) -> None:
    """Fault 3: forward hooks and pre-hooks of layers and activations, weight_norm, global hooks, container hooks;
    registered before or after the first call."""
    plain = nn.Sequential(*_stack(depth=4))
    fused = fuse_sparse_chains(plain, fusion=mode)
    x = _x()
    fused(x)  # plan built and a route taken before any hook exists
    handle = plain[3].register_forward_hook(lambda m, i, o: o * 2)
    if mode == "auto":
        torch.testing.assert_close(fused(x), plain(x), atol=1e-12, rtol=0)
        assert len(fused.steps()) == 5  # re-planned around the hooked activation: 0, 1, 2, 3, chain(4..7)
    else:
        with pytest.raises(ValueError, match="forward hooks"):
            fused(x)
    handle.remove()
    calls = []
    handle = plain[0].register_forward_pre_hook(lambda m, i: calls.append(1))
    if mode == "auto":
        torch.testing.assert_close(fuse_sparse_chains(plain, fusion=mode)(x), plain(x), atol=1e-12, rtol=0)
        assert calls == [1, 1]
    else:
        with pytest.raises(ValueError, match="forward pre hooks"):
            fuse_sparse_chains(plain, fusion=mode)(x)
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: o + 1 if isinstance(m, nn.Tanh) else o)
    try:
        fresh = fuse_sparse_chains(plain, fusion="auto")
        torch.testing.assert_close(fresh(x), plain(x), atol=1e-12, rtol=0)
        assert fresh.steps()[0].last_decision.reason.startswith("global module hooks")
    finally:
        handle.remove()
    seen = []
    plain.register_forward_hook(lambda m, i, o: seen.append(m))
    fused = fuse_sparse_chains(plain, fusion=mode)
    fused(x)
    assert seen == [fused]  # the container's hooks are shared with the fused view


def test_weight_norm_and_parametrizations_are_not_fused() -> None:
    """Fault 3: hook-based weight_norm and parametrizations: the layer runs as itself; forced modes refuse."""
    plain = nn.Sequential(*_stack())
    torch.nn.utils.weight_norm(plain[2], name="blocks")
    parametrize.register_parametrization(plain[4], "blocks", Scale())
    fused = fuse_sparse_chains(plain)
    x = _x()
    torch.testing.assert_close(fused(x), plain(x), atol=1e-12, rtol=0)
    reasons = [s.reason for s in fused.plan().steps]
    assert any("forward pre hooks" in r for r in reasons) and any("parametrized" in r for r in reasons)
    with pytest.raises(ValueError, match="fusion='fused' cannot fuse SparseLinear -> Tanh exactly: SparseLinear has"):
        fuse_sparse_chains(plain, fusion="fused")(x)


@pytest.mark.parametrize("mode", MODES)
def test_settings_survive_slicing_copies_and_changes(mode: str) -> None:
    """Fault 4: slicing, indexing, deepcopy and pickling keep ``fusion`` and ``min_layers``; a change after the
    first call takes effect at the next."""
    fused = FusedSequential(*_stack(depth=4), min_layers=3, fusion=mode)
    x = _x()
    fused(x)
    for other in (fused[2:], fused[:6], copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
        assert (other.fusion, other.min_layers) == (mode, 3)
    assert sum(isinstance(s, FusedSparseChain) for s in fused[2:].steps()) == 1
    assert not any(isinstance(s, FusedSparseChain) for s in fused[:4].steps())  # 2 layers < min_layers
    fused.fusion = "off"
    fused(x)
    assert not any(isinstance(s, FusedSparseChain) for s in fused.steps())
    fused.fusion = mode
    fused.min_layers = 2
    fused(x)
    assert fused.steps()[0].last_decision is not None and len(fused.steps()) == 1
    with pytest.raises(ValueError, match="auto, off, fused, compiled"):
        fused.fusion = "fast"


@pytest.mark.parametrize("mode", MODES)
def test_strided_parameters_are_accepted(mode: str) -> None:
    """Fault 6: blocks, biases and permutations loaded with ``assign=True`` from strided tensors."""
    plain = nn.Sequential(*_stack())
    fused = fuse_sparse_chains(plain, fusion=mode)
    x = _x()
    expected = plain(x)
    state = {k: (v.transpose(-1, -2).contiguous().transpose(-1, -2) if v.dim() == 3 else
                 torch.stack([v, v], 1)[:, 0]) for k, v in plain.state_dict().items()}
    assert not state["0.blocks"].is_contiguous() and not state["0.row_perm"].is_contiguous()
    plain.load_state_dict(state, assign=True)
    torch.testing.assert_close(fused(x), expected, atol=1e-12, rtol=0)
    (g,) = torch.autograd.grad(fused(x).sum(), plain[0].blocks)
    assert g.shape == plain[0].blocks.shape


def test_train_default_path_equals_plain(tmp_path) -> None:
    """``train()`` with its default (fused, auto) path and with ``fused=False`` end with the same weights, on a
    model that shares one activation and ties two layers."""
    from torch.utils.data import DataLoader, TensorDataset

    from sao.training import TrainConfig, train

    def model() -> nn.Sequential:
        torch.manual_seed(0)
        layer, act = SparseLinear(16, 16, degree=4, generator=gen(3)), nn.Tanh()
        return nn.Sequential(nn.Linear(8, 16), act, layer, act, layer, act,
                             SparseLinear(16, 16, degree=2, generator=gen(4)), act, nn.Linear(16, 4))

    data = TensorDataset(torch.randn(64, 8, generator=gen(6)), torch.randint(0, 4, (64,), generator=gen(7)))
    results = []
    for fused in (True, False):
        net = model()
        loaders = {"train": DataLoader(data, batch_size=16, shuffle=True, generator=gen(8)),
                   "val": DataLoader(data, batch_size=32)}
        train(net, loaders, TrainConfig(epochs=2, lr=0.05, isometry_probe=0, fused=fused, device="cpu"),
              tmp_path / str(fused))
        results.append(net.state_dict())
    for a, b in zip(*(r.values() for r in results), strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


# ---------------------------------------------------------------------------------------------------------
# The dispatch rule's decisions


def test_dispatch_decisions_for_call_kinds() -> None:
    """Which route for which call: autocast, torch.func, forward AD run plain under "auto"; forced modes refuse."""
    plain = nn.Sequential(*_stack())
    fused = fuse_sparse_chains(plain)
    chain_of = lambda model: model.steps()[0]  # noqa: E731
    x = _x()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused(x.float().double())
    assert chain_of(fused).last_decision.route == "plain"
    torch.func.jacrev(fused)(x.detach()[0])
    assert chain_of(fused).last_decision.reason == "a torch.func transform is active"
    with fusion("off"):
        fused(x)
    assert chain_of(fused).last_decision == Decision("plain", "fusion='off'")
    if KERNEL:
        forced = fuse_sparse_chains(plain, fusion="compiled")
        for context, message in ((torch.autocast("cpu", dtype=torch.bfloat16), "autocast"),
                                 (forward_ad.dual_level(), None)):
            with context:
                inp = x if message else forward_ad.make_dual(x.detach(), torch.ones_like(x))
                with pytest.raises(ValueError, match=message or "forward-mode AD"):
                    forced(inp)
        with pytest.raises(ValueError, match="float32/float64"):
            fuse_sparse_chains(copy.deepcopy(plain).half(), fusion="compiled")(x.detach().half())


def test_dispatch_keeps_unfusable_modules_out_of_chains() -> None:
    """The plan: subclasses, instance forwards, masked layers, non-elementwise activations and short runs."""
    mods = _stack(depth=6)
    mods[2] = Relabelled(16, 16, degree=4, generator=gen(), dtype=torch.float64)
    mods[6].forward = types.MethodType(_shifted_forward, mods[6])
    mods[8] = SparseLinear(16, 16, degree=4, backend="masked", generator=gen(), dtype=torch.float64)
    mods[11] = nn.Softmax(dim=-1)
    plain = nn.Sequential(*mods)
    fused = fuse_sparse_chains(plain)
    x = _x()
    torch.testing.assert_close(fused(x), plain(x), atol=1e-12, rtol=0)
    text = str(fused.plan())
    for reason in ("exact type", "forward set on the instance", "backend='masked'", "Softmax", "min_layers"):
        assert reason in text, text
    assert not any(isinstance(s, FusedSparseChain) for s in fused.steps())
    with pytest.raises(TypeError, match="exact type"):
        fuse_sparse_chains(type("MySequential", (nn.Sequential,), {})(*_stack()))


class FakeClock:
    """A clock that each route advances by its own fixed cost: the timer's rule without real timings."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def runner(self, cost: float) -> object:
        def run() -> None:
            self.now += cost
        return run


@pytest.mark.parametrize(("costs", "expected"), [
    ({"plain": 1.0, "fused": 0.5, "compiled": 0.1}, "compiled"),
    ({"plain": 1.0, "fused": 0.5, "compiled": 2.0}, "fused"),
    ({"plain": 1.0, "fused": 1.2, "compiled": 3.0}, "plain"),
    ({"plain": 1.0, "fused": MARGIN + 0.05, "compiled": 0.97}, "plain"),  # within the margin: stay plain
])
def test_route_timer_rule(costs: dict[str, float], expected: str) -> None:
    clock = FakeClock()
    timer = RouteTimer(clock=clock)
    runs = {r: clock.runner(c) for r, c in costs.items()}
    decision = timer.choose(("case",), runs, torch.device("cpu"))
    assert decision.route == expected and decision.seconds == pytest.approx(costs)
    assert timer.choose(("case",), {r: clock.runner(9.0) for r in costs}, torch.device("cpu")) is decision  # cached


def test_route_decisions_are_per_case() -> None:
    """Grad mode, batch bucket and thread count are separate cases; the model's parameters are not touched."""
    plain = nn.Sequential(*_stack())
    fused = fuse_sparse_chains(plain)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    x = _x(batch=5)
    fused(x).sum().backward()
    grads = [p.grad.clone() for p in plain.parameters()]
    with torch.no_grad():
        fused(x)
    fused(_x(batch=70))
    keys = list(fused.timer.decisions)
    assert len(keys) == 3 and {k[4] for k in keys} == {True, False} and {k[3] for k in keys} == {8, 128}
    for a, b in zip(plain.state_dict().values(), before.values(), strict=True):
        assert torch.equal(a, b)
    assert all(torch.equal(p.grad, g) for p, g in zip(plain.parameters(), grads, strict=True))
    assert all(itertools.starmap(torch.equal, zip(plain.state_dict().values(), before.values(), strict=True)))


# ---------------------------------------------------------------------------------------------------------
# Found by a review that tried to break the fast path


@pytest.mark.parametrize("mode", ["auto", "fused"])
def test_first_call_in_inference_mode_does_not_poison_later_training(mode: str) -> None:
    """Index tensors cached during an ``inference_mode`` call must still be savable for backward later."""
    plain = nn.Sequential(*_stack(act=nn.GELU))  # GELU: no kernel, so "auto" may take "fused"
    fused = fuse_sparse_chains(plain, fusion=mode)
    x = _x()
    with torch.inference_mode():
        fused(x.detach())
    (g,), (g_ref,) = (torch.autograd.grad(m(x).sum(), [x]) for m in (fused, plain))
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=0)


def test_cost_probe_is_invisible_to_saved_tensor_hooks_and_checkpoint() -> None:
    """The probe runs under identity saved-tensor hooks: non-reentrant checkpoint and save_on_cpu see only the
    model's own tensors, the same number at the first call (which probes) and later."""
    from torch.utils.checkpoint import checkpoint

    plain = nn.Sequential(*_stack())
    x = _x()
    counts = []
    for _ in range(2):
        fused = fuse_sparse_chains(plain)
        packed: list[int] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, packed=packed: packed.append(1) or t, lambda t: t):
            fused(x)
            fused(x)
        counts.append(len(packed))
    assert counts[0] == counts[1] and counts[0] % 2 == 0
    fresh = fuse_sparse_chains(plain)
    (g,) = torch.autograd.grad(checkpoint(fresh, x, use_reentrant=False).sum(), x)
    (g_ref,) = torch.autograd.grad(plain(x).sum(), x)
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=0)


def test_global_hooks_see_only_the_models_modules() -> None:
    """A chain is an execution detail: global forward hooks fire on the model's modules only."""
    plain = nn.Sequential(*_stack())
    fused = fuse_sparse_chains(plain)
    x = _x()
    seen: list[str] = []
    handle = nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(type(m).__name__) or (o + 1 if isinstance(m, nn.Tanh) else o))
    try:
        y_ref, n_ref = plain(x), len(seen)
        seen_ref, seen[:] = seen[:n_ref], []
        y = fused(x)
    finally:
        handle.remove()
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    assert seen[:-1] == seen_ref[:-1] and "FusedSparseChain" not in seen


def test_meta_device_and_foreign_dtypes() -> None:
    """Meta tensors run plain under "auto" (a clear error when forced); an input of another dtype than the
    parameters fails as in the plain model under "auto", with a ValueError when forced."""
    plain = nn.Sequential(*_stack()).to("meta")
    x = torch.empty(3, 16, dtype=torch.float64, device="meta")
    assert fuse_sparse_chains(plain)(x).shape == plain(x).shape
    with pytest.raises(ValueError, match="device type 'meta'"):
        fuse_sparse_chains(plain, fusion="compiled")(x)
    cpu = nn.Sequential(*_stack())
    with pytest.raises(RuntimeError) as plain_error:
        cpu(_x().float())
    with pytest.raises(RuntimeError) as auto_error:
        fuse_sparse_chains(cpu)(_x().float())
    assert str(auto_error.value) == str(plain_error.value)
    with pytest.raises(ValueError, match="give an input like the parameters"):
        fuse_sparse_chains(cpu, fusion="fused")(_x().float())


@pytest.mark.parametrize("mode", MODES)
def test_wrong_input_size_gives_the_plain_models_error(mode: str) -> None:
    plain = nn.Sequential(*_stack())
    x = torch.randn(2, 10, dtype=torch.float64)
    with pytest.raises(ValueError) as plain_error:
        plain(x)
    with pytest.raises(ValueError) as fused_error:
        fuse_sparse_chains(plain, fusion=mode)(x)
    assert str(fused_error.value) == str(plain_error.value)
