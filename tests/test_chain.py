"""FusedSparseChain computes exactly what its blocked SparseLinear layers compute, forward and backward."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from torch import nn

import sao
from helpers import deterministic, gen
from sao.nn import FusedSparseChain, SparseLinear, fuse_sparse_chains
from sao.nn._chain_kernel import sparse_chain


def chain_model(bias: bool, act: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    g = gen(3)
    sizes = [(32, 64, 8), (64, 64, 8), (64, 16, 4)]
    layers: list[nn.Module] = [nn.Linear(8, 32, dtype=torch.float64), nn.Tanh()]
    for n, m, d in sizes:
        layers += [SparseLinear(n, m, degree=d, bias=bias, generator=g, dtype=torch.float64), act()]
    layers.append(nn.Linear(16, 3, dtype=torch.float64))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, SparseLinear) and layer.bias is not None:
                layer.bias.normal_(generator=g)
    return model


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU])
def test_fused_chain_equals_layers(bias: bool, act: type[nn.Module]) -> None:
    model = chain_model(bias, act)
    fused = fuse_sparse_chains(model)
    assert sum(isinstance(m, FusedSparseChain) for m in fused.steps()) == 1 and len(fused.steps()) == 4
    x = torch.randn(5, 2, 8, dtype=torch.float64, generator=gen(1), requires_grad=True)
    y_ref, y = model(x), fused(x)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    grads_ref = torch.autograd.grad(y_ref.square().sum(), [x, *model.parameters()])
    grads = torch.autograd.grad(y.square().sum(), [x, *model.parameters()])  # same Parameter objects
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_fused_chain_on_sparsified_fnn() -> None:
    from sao.models import fnn

    model = sao.sparsify(fnn(4).double(), degree=4, generator=gen())
    fused = fuse_sparse_chains(model)
    assert any(isinstance(m, FusedSparseChain) for m in fused.steps())
    x = torch.randn(3, 1024, dtype=torch.float64)
    torch.testing.assert_close(fused(x), model(x), atol=1e-12, rtol=0)


def test_fused_chain_errors() -> None:
    with pytest.raises(ValueError, match="backend='blocked'"):
        FusedSparseChain([SparseLinear(8, 8, degree=2, backend="masked")], [nn.Tanh()])
    with pytest.raises(ValueError, match="not elementwise"):
        FusedSparseChain([SparseLinear(8, 8, degree=2)], [nn.Softmax(dim=-1)])
    with pytest.raises(ValueError, match="outputs but"):
        FusedSparseChain([SparseLinear(8, 8, degree=2), SparseLinear(16, 8, degree=2)], [nn.Tanh(), nn.Tanh()])


def test_fusion_keeps_the_state_dict_keys_and_checkpoints() -> None:
    """Fusion is an execution detail: same keys, and checkpoints move both ways."""
    model = chain_model(bias=True)
    fused = fuse_sparse_chains(model)
    assert list(fused.state_dict()) == list(model.state_dict())
    other = chain_model(bias=True)
    for layer in other:
        if isinstance(layer, SparseLinear):
            layer.reset_parameters(gen(8))
    fused.load_state_dict(other.state_dict())
    x = torch.randn(4, 8, dtype=torch.float64, generator=gen(2))
    torch.testing.assert_close(fused(x), other(x), atol=1e-12, rtol=0)
    model_again = chain_model(bias=True)
    model_again.load_state_dict(fused.state_dict())
    torch.testing.assert_close(model_again(x), other(x), atol=1e-12, rtol=0)


def test_fused_sequential_replans_when_a_module_is_replaced_and_copies() -> None:
    import copy
    import pickle

    fused = fuse_sparse_chains(chain_model(bias=False))
    x = torch.randn(3, 8, dtype=torch.float64, generator=gen(4))
    before = fused(x)
    assert len(fused.steps()) == 4  # Linear, Tanh, one chain of three layers, Linear
    fused[3] = nn.Softmax(dim=-1)  # not elementwise: the chain now starts after it
    assert len(fused.steps()) == 6 and isinstance(fused.steps()[3], nn.Softmax)
    assert len(fused.steps()[4].layers) == 2
    torch.testing.assert_close(fused(x), nn.Sequential(*fused)(x), atol=1e-12, rtol=0)
    assert not torch.equal(fused(x), before)
    for clone in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
        with deterministic():  # bit for bit: both on the same routes
            torch.testing.assert_close(clone(x), fused(x), atol=0, rtol=0)
        assert all(s is not t for s, t in zip(clone.steps(), fused.steps(), strict=True))


def test_fuse_sparse_chains_takes_a_sequential() -> None:
    with pytest.raises(TypeError, match=r"nn\.Sequential"):
        fuse_sparse_chains(SparseLinear(8, 8, degree=2))  # type: ignore[arg-type]


def _kernel_or_skip() -> None:
    from sao.nn._chain_kernel import load_chain_kernel

    if load_chain_kernel() is None:
        pytest.skip("the compiled chain kernel cannot be built here")


@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU, nn.Identity])
def test_compiled_and_pytorch_paths_agree(act: type[nn.Module]) -> None:
    """``fusion="compiled"`` runs the C++ kernel on the CPU; ``fusion="fused"`` the PyTorch path; same numbers."""
    _kernel_or_skip()
    model = chain_model(bias=True, act=act)
    fast, slow = fuse_sparse_chains(model, fusion="compiled"), fuse_sparse_chains(model, fusion="fused")
    x = torch.randn(6, 8, dtype=torch.float64, generator=gen(7), requires_grad=True)
    with mock.patch("sao.nn._chain_kernel.sparse_chain", wraps=sparse_chain) as kernel:  # the cpu backend calls it
        y_slow = slow(x)
        assert kernel.call_count == 0
        y_fast = fast(x)
        assert kernel.call_count == 1
    torch.testing.assert_close(y_fast, y_slow, atol=1e-12, rtol=0)
    g_fast = torch.autograd.grad(y_fast.square().sum(), [x, *model.parameters()])
    g_slow = torch.autograd.grad(y_slow.square().sum(), [x, *model.parameters()])
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_compiled_path_falls_back_where_it_does_not_apply() -> None:
    """torch.func transforms and activations without a kernel run plain under "auto"; a gradient penalty through
    the compiled kernel is that of the layers (its backward is differentiable)."""
    _kernel_or_skip()
    model = chain_model(bias=False)
    fused = fuse_sparse_chains(model)
    x = torch.randn(8, dtype=torch.float64, generator=gen(8))
    torch.testing.assert_close(torch.func.jacrev(fused)(x), torch.func.jacrev(model)(x), atol=1e-12, rtol=0)
    assert fused.steps()[2].last_decision.route == "plain"
    gelu = fuse_sparse_chains(chain_model(bias=False, act=nn.GELU), fusion="compiled")
    with pytest.raises(ValueError, match="no kernel"):
        gelu(x[None])
    compiled = fuse_sparse_chains(model, fusion="compiled")
    blocks, xb = model[2].blocks, x[None].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(compiled(xb).square().sum(), xb, create_graph=True)  # a gradient penalty
    (gg,) = torch.autograd.grad(g.square().sum(), blocks)
    (g_ref,) = torch.autograd.grad(model(xb).square().sum(), xb, create_graph=True)
    (gg_ref,) = torch.autograd.grad(g_ref.square().sum(), blocks)
    torch.testing.assert_close(gg, gg_ref, atol=1e-10, rtol=0)


def test_compiled_chain_matches_the_masked_twin_and_keeps_zeros_under_sgd() -> None:
    """The kernel against the paper's masked layers (same seeds, same weights): outputs, every gradient, and
    after SGD steps with momentum and weight decay the two still agree (the masked zeros stay zero)."""
    _kernel_or_skip()

    def stack(backend: str) -> nn.Sequential:
        g = gen(11)
        return nn.Sequential(*[m for _ in range(3) for m in (SparseLinear(16, 16, degree=4, backend=backend,
                                                                          generator=g, dtype=torch.float64),
                                                             nn.Tanh())])

    blocked, masked = stack("blocked"), stack("masked")
    fused = fuse_sparse_chains(blocked)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3) for m in (blocked, masked)]
    for step in range(3):
        x = torch.randn(5, 16, dtype=torch.float64, generator=gen(20 + step))
        for opt in opts:
            opt.zero_grad()
        ya, yb = fused(x), masked(x)
        torch.testing.assert_close(ya, yb, atol=1e-12, rtol=0)
        ya.square().sum().backward()
        yb.square().sum().backward()
        for a, b in zip(blocked[::2], masked[::2], strict=True):
            torch.testing.assert_close(a.topology.blocks_to_dense(a.blocks.grad), b.weight_orig.grad * b.weight_mask,
                                       atol=1e-12, rtol=0)
            torch.testing.assert_close(a.bias.grad, b.bias.grad, atol=1e-12, rtol=0)
        for opt in opts:
            opt.step()
    for a, b in zip(blocked[::2], masked[::2], strict=True):
        assert (b.weight.detach()[~b.mask] == 0).all()
        torch.testing.assert_close(a.weight, b.weight, atol=1e-12, rtol=0)
