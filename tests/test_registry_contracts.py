"""Contracts every registry entry keeps, parametrized over the registries (issue 12 part 8).

Models (:data:`sao.models.MODELS`): each :class:`~sao.models.ModelInfo` is what code above the
models relies on to build and feed a model without branching on its name, so its metadata must
agree with its builder, and ``build`` must take exactly the choices listed.

Methods (:data:`sao.methods.METHODS`) on a 64-wide Linear/Tanh MLP and a 16-channel 3×3 CNN:
with ``strict=True`` a request is met exactly or refused (never silently approximated), what the
summary reports is what the layers hold, and the phase the harness gives a method
(:func:`sao.experiments.method_phase`) agrees with what the method does to the weights.
tests/test_method_contract.py covers the non-strict ``sparsity=`` side (masked gradients, copies, a second
sparsify) on other networks; this file does not repeat it.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import sao
from helpers import gen, method_settings, target_for
from sao.experiments import method_phase
from sao.experiments.protocol import AFTER_TRAINING, AT_INIT, NEVER
from sao.methods import METHODS, PruneMethod, SparsifySummary, connection_mask
from sao.methods.pruning import kept_count
from sao.models import MODELS, ModelInfo

NUM_CLASSES = 7  # not the builders' default of 10, so a head that ignores num_classes shows
SMALL_WIDTH = 4  # even (LipConvNet's MaxMin pairs channels), and small enough to keep every model fast


# --------------------------------------------------------------------------- models


def build(info: ModelInfo, **kwargs) -> nn.Module:
    """``info`` at its smallest registered depth and registered input, small width (if it has one).

    Builders without a generator draw from torch's global generator: seeded here, so a model does not depend on
    the tests run before (a 4-wide ReLU CNN can start with every unit dead).
    """
    if info.width_arg is not None:
        kwargs.setdefault("width", SMALL_WIDTH)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return info.build(min(info.depths), input_shape=info.input_shape, num_classes=NUM_CLASSES,
                          generator=gen(0), **kwargs)


def assert_forward_backward(net: nn.Module, input_shape: tuple[int, ...]) -> None:
    """A batch of 2 gives ``(2, NUM_CLASSES)`` finite logits, and gradients reach the input and every parameter."""
    x = torch.randn(2, *input_shape, generator=gen(1), requires_grad=True)
    out = net(x)
    assert out.shape == (2, NUM_CLASSES)
    assert bool(out.isfinite().all())
    nn.functional.cross_entropy(out, torch.tensor([0, NUM_CLASSES - 1])).backward()
    assert x.grad is not None and bool(x.grad.isfinite().all()) and bool(x.grad.ne(0).any())
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and bool(p.grad.isfinite().all()), name


def layer_sparsities(net: nn.Module) -> dict[str, float]:
    """The connection sparsity of every weight layer (``connection_mask``; kernels for convolutions)."""
    found = {}
    for name, module in net.named_modules():
        try:
            mask = connection_mask(module)
        except ValueError:  # no (out, in[, k, k]) weight: containers, activations, norms
            continue
        found[name] = 1.0 - float(mask.double().mean())
    return found


MODEL_NAMES = sorted(MODELS.names())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_metadata_agrees_with_the_builder(name: str) -> None:
    info = MODELS.get(name)
    params = inspect.signature(info.builder).parameters
    assert info.arguments == frozenset(params)
    assert next(iter(params)) == "depth"
    assert {"num_classes", "in_channels" if info.takes_images else "in_features"} <= info.arguments
    # the input: vectors (features,) or images (C, H, W); image_size, when set, is H = W
    assert len(info.input_shape) in (1, 3) and all(isinstance(s, int) and s > 0 for s in info.input_shape)
    if info.image_size is not None:
        assert info.takes_images and info.input_shape[1:] == (info.image_size, info.image_size)
    # the width: a parameter with a positive integer default, or fixed widths
    if info.width_arg is None:
        assert info.default_width is None and "width" not in info.arguments
    else:
        assert info.width_arg in info.arguments
        default = params[info.width_arg].default
        assert isinstance(default, int) and default > 0 and info.default_width == default
        assert default > SMALL_WIDTH  # the tests below do build a smaller model than the default
    # the choices: the first listed is the builder's default; one fixed activation has no argument
    assert info.activations and len(set(info.activations)) == len(info.activations)
    if "activation" in info.arguments:
        assert params["activation"].default == info.activations[0]
    else:
        assert len(info.activations) == 1
    if info.heads:
        assert len(set(info.heads)) == len(info.heads) and params["head"].default == info.heads[0]
    else:
        assert "head" not in info.arguments
    # every model is built dense: sparsity is sparsify's business (SAO-ECO included)
    assert not ({"degree", "sparsity"} & info.arguments)
    assert "sparse_at_construction" not in {f.name for f in dataclasses.fields(ModelInfo)}
    assert info.depths and list(info.depths) == sorted(set(info.depths)) and min(info.depths) >= 1
    assert info.description.strip() and "\n" not in info.description


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_builds_small_and_trains(name: str) -> None:
    info = MODELS.get(name)
    net = build(info)
    if info.width_arg is not None:  # the width reaches the builder: twice as wide, more parameters
        wider = build(info, width=2 * SMALL_WIDTH)
        assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in wider.parameters())
    assert_forward_backward(net, info.input_shape)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_takes_every_listed_choice(name: str) -> None:
    info = MODELS.get(name)
    if "activation" in info.arguments:
        for activation in info.activations:
            assert_forward_backward(build(info, activation=activation), info.input_shape)
    else:  # a fixed activation (LipConvNet's MaxMin) is listed for information; build refuses to set it
        with pytest.raises(ValueError, match="takes no activation"):
            build(info, activation=info.activations[0])
    for head in info.heads:
        assert_forward_backward(build(info, head=head), info.input_shape)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_refuses_what_it_does_not_list(name: str) -> None:
    info = MODELS.get(name)
    with pytest.raises(ValueError, match="head"):
        build(info, head="no-such-head" if info.heads else "pool")
    with pytest.raises(ValueError, match="activation"):
        build(info, activation="no-such-activation")
    if info.width_arg is None:
        with pytest.raises(ValueError, match="takes no width"):
            info.build(min(info.depths), input_shape=info.input_shape, num_classes=NUM_CLASSES, width=SMALL_WIDTH)
    else:
        with pytest.raises(ValueError, match=info.width_arg):
            build(info, width=0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_is_built_dense_and_made_sparse_by_sparsify(name: str) -> None:
    """No model takes a target (``build`` and the builder refuse one); ``sao.sparsify(net, "sao")`` makes any of
    them sparse,
    ECO layers included (SAO-ECO), each sparsified layer at its plan, and the network still trains."""
    info = MODELS.get(name)
    for request in ({"sparsity": 0.5}, {"degree": 2}):
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            build(info, **request)
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            info.builder(min(info.depths), **request)
    net = build(info)
    dense = layer_sparsities(net)
    assert dense and not any(dense.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nearest degrees of odd-sized layers, skipped SOC layers
        net, summary = sao.sparsify(net, "sao", sparsity=0.5, generator=gen(2), return_summary=True)
    assert summary.sparsified and not summary.off_target
    half = layer_sparsities(net)
    for row in summary.sparsified:
        expected = 0.5 if row.status == "applied" else 1 - row.degree / max(row.shape[:2])
        assert half[row.name] == pytest.approx(expected, abs=1e-12), row
    eco = [row for row in summary.layers if row.kind == "ECOConv2d"]
    assert all(row.status == "applied" and half[row.name] == 0.5 for row in eco), eco
    assert_forward_backward(net, info.input_shape)


# --------------------------------------------------------------------------- methods


def mlp() -> nn.Sequential:
    """A 64-wide Linear/Tanh MLP: its two 64x64 hidden layers are the targets."""
    return nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                         nn.Linear(64, 10))


def cnn() -> nn.Sequential:
    """A 16-channel stack of 3x3 convolutions: its three 16x16 convolutions are the targets."""
    body = [m for _ in range(3) for m in (nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())]
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), *body, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10))


#: network: (builder, input of one example, activation, number of target layers, the requests: all exact)
NETS: dict[str, tuple[Callable[[], nn.Sequential], tuple[int, ...], str, int, dict[str, dict]]] = {
    "mlp": (mlp, (16,), "tanh", 2, {"degree": {"degree": 8}, "sparsity": {"sparsity": 0.75}}),
    "cnn": (cnn, (3, 8, 8), "relu", 3, {"degree": {"degree": 4}, "sparsity": {"sparsity": 0.5}}),
}
METHOD_CASES = [(net, method, request) for net in NETS for method in sorted(METHODS.names())
                for request in ("degree", "sparsity")]


def dense(net: str, seed: int = 0) -> nn.Sequential:
    """The dense starting network (what ``-t`` methods prune), the same for the same seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return NETS[net][0]()


def run(net: str, method: str, request: str, *, strict: bool, seed: int = 0) -> tuple[nn.Module, SparsifySummary]:
    _, _, activation, _, requests = NETS[net]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the non-strict run may warn (nearest targets, skipped layers)
        return sao.sparsify(dense(net, seed), method, **method_settings(method, activation=activation),
                            strict=strict, generator=gen(seed), return_summary=True,
                            **target_for(method, **requests[request]))


def measured(layer: nn.Module) -> tuple[int, int]:
    """(connections kept, connections) of a layer, read off its weights: a kernel counts if any tap is non-zero."""
    w = layer.weight.detach()
    present = w.ne(0) if w.dim() == 2 else w.ne(0).flatten(2).any(-1)
    assert torch.equal(present, connection_mask(layer))  # masked connections hold zeros, kept ones do not
    return int(present.sum()), present.numel()


@pytest.mark.parametrize(("net", "method", "request_kind"), METHOD_CASES)
def test_strict_sparsify_is_exact_or_refuses(net: str, method: str, request_kind: str) -> None:
    """``strict=True``: every target layer takes the request exactly, or sparsify raises, naming the layer.

    Which one is read off the non-strict run: a layer it skipped or gave a nearest target must
    make the strict run raise; otherwise the strict run reports every target ``applied``, its
    reported sparsity equals the measured one, the network trains, and the same seed gives the
    same weights.
    """
    _, input_shape, _, n_targets, _ = NETS[net]
    _, lenient = run(net, method, request_kind, strict=False)
    refused = lenient.skipped + lenient.nearest
    if refused:
        with pytest.raises(ValueError, match=f"layer '{refused[0].name}'"):
            run(net, method, request_kind, strict=True)
        return
    model, summary = run(net, method, request_kind, strict=True)
    assert summary.strict and len(summary.sparsified) == n_targets
    assert all(r.status == "applied" for r in summary.sparsified) and not summary.nearest and not summary.off_target
    kept = total = 0
    for row in summary.sparsified:
        layer = model.get_submodule(row.name)
        k, n = measured(layer)
        assert row.sparsity == pytest.approx(1 - k / n, abs=1e-12), row  # reported = measured from the weights
        assert row.sparsity == pytest.approx(1 - float(connection_mask(layer).double().mean()), abs=1e-12), row
        assert row.target == (0.0 if method == "dense" else 1 - row.degree / max(row.shape[:2])
                              if request_kind == "degree" else NETS[net][4]["sparsity"]["sparsity"]), row
        if method == "eoi":  # EOI's guarantee: t <= nnz <= t + min(m, n) - 1
            assert kept_count(n, row.target) <= k <= kept_count(n, row.target) + min(row.shape[:2]) - 1, row
        elif not pooled(method):
            assert row.sparsity == row.target, row
        kept, total = kept + k, total + n
    assert summary.sparsity == pytest.approx(1 - kept / total, abs=1e-12)
    if pooled(method):  # one threshold over the layers: only their total is at the target
        assert kept == kept_count(total, summary.sparsified[0].target)
    assert_trains(model, input_shape)
    again, _ = run(net, method, request_kind, strict=True)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def pooled(method: str) -> bool:
    chosen = METHODS.get(method)
    return isinstance(chosen, PruneMethod) and chosen.rule is not None and chosen.rule.pooled


def assert_trains(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    x = torch.randn(2, *input_shape, generator=gen(1), requires_grad=True)
    out = model(x)
    assert out.shape == (2, 10) and bool(out.isfinite().all())
    nn.functional.cross_entropy(out, torch.tensor([0, 9])).backward()
    assert x.grad is not None and bool(x.grad.ne(0).any())
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and bool(p.grad.isfinite().all()), name


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_phase_says_what_happens_to_the_weights(net: str, method: str) -> None:
    """The harness's phase of a method agrees with what the method does: an after-training method prunes the
    layers as they are (the surviving weights and the biases are the trained ones); an at-init method draws the
    target layers afresh, and so does the dense baseline (never applied by the protocol; sparsify redraws its
    layers orthogonal)."""
    phase = method_phase(method)
    assert phase in (AT_INIT, AFTER_TRAINING, NEVER)
    assert (phase == NEVER) == (not METHODS.get(method).needs_target)
    before = dense(net)
    model, summary = run(net, method, "degree", strict=False)
    rows = summary.sparsified
    if not rows:  # a method without this network's layer kind (rg-n/rg-u and convolutions)
        assert summary.skipped
        return
    for row in rows:
        new, old = model.get_submodule(row.name), before.get_submodule(row.name)
        kept = connection_mask(new)
        if new.weight.dim() == 4:
            kept = kept[:, :, None, None].expand_as(new.weight)
        same_weights = torch.equal(new.weight.detach()[kept], old.weight.detach()[kept])
        if phase == AFTER_TRAINING:
            assert same_weights and torch.equal(new.bias.detach(), old.bias.detach()), row.name
        else:
            assert not same_weights, row.name


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_a_target_is_required_exactly_when_the_method_says_so(method: str) -> None:
    chosen = METHODS.get(method)
    if chosen.needs_target:
        with pytest.raises(ValueError, match="needs degree= or sparsity="):
            sao.sparsify(mlp(), method, generator=gen(0))
    else:
        for request in ({"degree": 8}, {"sparsity": 0.75}):
            with pytest.raises(ValueError, match="takes no target"):
                sao.sparsify(mlp(), method, generator=gen(0), **request)
        model, summary = sao.sparsify(mlp(), method, generator=gen(0), strict=True, return_summary=True)
        assert len(summary.sparsified) == NETS["mlp"][3] and summary.sparsity == 0.0
        assert_trains(model, NETS["mlp"][1])
