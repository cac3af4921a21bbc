"""Tests of the pruning masks, the prune/EOI sparsify methods, FNN-N and the orthogonal model init."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sao
from helpers import gen
from sao.methods import connection_mask
from sao.methods.pruning import global_magnitude_masks, kept_count, magnitude_mask, random_mask
from sao.models import create_model, fnn, list_models, orthogonal_init_
from sao.topology import configuration_model


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.984375, 0.99])
def test_magnitude_mask_keeps_exactly_the_largest(sparsity: float) -> None:
    w = torch.randn(64, 48, generator=gen())
    mask = magnitude_mask(w, sparsity)
    keep = kept_count(w.numel(), sparsity)
    assert int(mask.sum()) == keep
    if 0 < keep < w.numel():
        assert w.abs()[mask].min() >= w.abs()[~mask].max()


def test_magnitude_mask_breaks_ties_by_position() -> None:
    mask = magnitude_mask(torch.ones(2, 4), 0.5)
    assert mask.flatten().tolist() == [True] * 4 + [False] * 4


def test_kernel_level_magnitude_uses_l1_norm() -> None:
    w = torch.zeros(2, 2, 3, 3)
    w[0, 0] = 0.1  # L1 0.9: larger than the single 0.5 tap
    w[1, 1, 1, 1] = 0.5
    w[0, 1, 0, 0] = -0.3
    assert magnitude_mask(w, 0.5).tolist() == [[True, False], [False, True]]


def test_global_magnitude_uses_one_threshold() -> None:
    a, b = torch.full((4, 4), 2.0), torch.full((4, 4), 1.0)
    masks = global_magnitude_masks([a, b], 0.5)
    assert bool(masks[0].all()) and not bool(masks[1].any())


def test_random_mask_exact_count_and_seeded() -> None:
    a, b = random_mask((32, 32), 0.75, gen(1)), random_mask((32, 32), 0.75, gen(1))
    assert int(a.sum()) == 256 and torch.equal(a, b) and not torch.equal(a, random_mask((32, 32), 0.75, gen(2)))


def test_bad_sparsity() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        magnitude_mask(torch.ones(2, 2), 1.0)


@pytest.mark.parametrize(("m", "n", "d"), [(128, 128, 4), (64, 128, 8), (512, 512, 16)])
def test_configuration_model_is_simple_and_biregular(m: int, n: int, d: int) -> None:
    mask = configuration_model(m, n, d, gen())
    assert mask.sum(1).unique().tolist() == [d] and mask.sum(0).unique().tolist() == [m * d // n]
    assert not torch.equal(mask, configuration_model(m, n, d, gen(1)))
    with pytest.raises(ValueError, match="divisible"):
        configuration_model(10, 4, 3)


# ---------------------------------------------------------------- methods

@pytest.mark.parametrize("method", ["lmp-s", "lrp", "eoi"])
@pytest.mark.parametrize("sparsity", [0.5, 0.875, 0.984375])
def test_local_methods_hit_exact_sparsity(method: str, sparsity: float) -> None:
    net = sao.sparsify(fnn(3), method, sparsity=sparsity, generator=gen())
    for i in (2, 4, 6):
        layer = net[i]
        measured = 1 - float((layer.weight != 0).double().mean())
        assert measured == pytest.approx(sparsity, abs=1.0 / layer.weight.numel() + (1e-3 if method == "eoi" else 0))
        assert torch.equal(connection_mask(layer), layer.weight_mask != 0)
    assert type(net[0]) is nn.Linear and not hasattr(net[0], "weight_mask")


def test_gmp_hits_exact_global_sparsity() -> None:
    net = sao.sparsify(fnn(3), "gmp-s", sparsity=0.9, generator=gen())
    kept = sum(int(net[i].weight_mask.sum()) for i in (2, 4, 6))
    total = sum(net[i].weight.numel() for i in (2, 4, 6))
    assert kept == kept_count(total, 0.9)


def test_prune_methods_start_orthogonal_and_keep_mask_in_training() -> None:
    net = sao.sparsify(nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4)), "lmp-s",
                       sparsity=0.75, generator=gen())
    assert torch.allclose(net[1].weight_orig @ net[1].weight_orig.T, torch.eye(32), atol=1e-5)
    mask = net[1].weight_mask.bool()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 16)).square().sum().backward()
        opt.step()
    assert bool((net[1].weight[~mask] == 0).all())


def test_degree_means_sao_sparsity_for_every_method() -> None:
    for method in ("lmp-s", "lrp", "eoi", "sao"):
        net = sao.sparsify(fnn(2), method, degree=4, generator=gen())
        assert 1 - float(connection_mask(net[2]).double().mean()) == pytest.approx(1 - 4 / 512, abs=1e-3)


def test_eoi_method_is_orthogonal_on_convs() -> None:
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3), nn.Conv2d(16, 4, 3))
    sao.sparsify(net, "eoi", sparsity=0.75, generator=gen())
    centre = net[1].weight.detach()[:, :, 1, 1].double()
    assert torch.allclose(centre @ centre.T, torch.eye(16, dtype=torch.float64), atol=1e-5)
    kept = int(connection_mask(net[1]).sum())
    assert 64 <= kept <= 64 + 15  # EOI's guarantee: t <= nnz <= t + min(m, n) - 1


def test_dense_method_is_orthogonal_and_unpruned() -> None:
    net = sao.sparsify(fnn(2), "dense", gain=1.5, generator=gen())
    assert not hasattr(net[2], "weight_mask")
    w = net[2].weight.detach()
    assert torch.allclose(w @ w.T, 2.25 * torch.eye(256), atol=1e-5)
    with pytest.raises(ValueError, match="method 'dense' takes no target"):
        sao.sparsify(fnn(2), "dense", sparsity=0.5)


def test_connection_mask_of_plain_layers() -> None:
    assert bool(connection_mask(nn.Linear(3, 2)).all()) and connection_mask(nn.Conv2d(3, 2, 3)).shape == (2, 3)


# ---------------------------------------------------------------- models

def test_fnn_matches_table1() -> None:
    model = create_model("fnn", depth=5)
    shapes = [tuple(m.weight.shape) for m in model if isinstance(m, nn.Linear)]
    assert shapes == [(512, 1024), (256, 512)] + [(256, 256)] * 4 + [(10, 256)]
    assert "fnn" in list_models()
    with pytest.raises(ValueError, match="activation"):
        fnn(3, activation="gelu")
    with pytest.raises(ValueError, match="depth"):
        fnn(0)


def test_orthogonal_init_of_whole_model() -> None:
    model = orthogonal_init_(nn.Sequential(nn.Linear(8, 16), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 2)), gain=1.1,
                             generator=gen())
    w = model[0].weight.detach()
    assert torch.allclose(w.T @ w, 1.21 * torch.eye(8), atol=1e-5)
    assert float(model[1].weight.detach()[:, :, 0, 0].abs().sum()) == 0.0  # Delta: only the centre tap
    assert float(model[0].bias.detach().abs().sum()) == 0.0


# ---------------------------------------------------------------- -T flavour and RG-S/T

@pytest.mark.parametrize("method", ["lmp-t", "gmp-t", "rg-t"])
def test_t_methods_keep_trained_weights_and_prune_them(method: str) -> None:
    net = fnn(3)
    trained = [net[i].weight.detach().clone() for i in (2, 4, 6)]
    sao.sparsify(net, method, degree=4, generator=gen())
    for i, w in zip((2, 4, 6), trained, strict=True):
        assert torch.equal(net[i].weight_orig, w)  # same weights, now masked
        mask = net[i].weight_mask.bool()
        assert torch.equal(net[i].weight, w * mask)
    kept = sum(int(net[i].weight_mask.sum()) for i in (2, 4, 6))
    assert kept == 3 * 256 * 4  # every row keeps degree-4 many weights (the 256 x 512 layer: 4 of 512)


def test_lmp_t_prunes_the_smallest_trained_weights() -> None:
    net = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 2))
    sao.sparsify(net, "lmp-t", sparsity=0.75)
    w, mask = net[1].weight_orig.detach().abs(), net[1].weight_mask.bool()
    assert int(mask.sum()) == 64 and w[mask].min() >= w[~mask].max()


def test_rg_s_uses_an_sao_topology_as_mask_on_orthogonal_weights() -> None:
    net = sao.sparsify(fnn(2), "rg-s", degree=4, generator=gen())
    mask = connection_mask(net[2])
    assert mask.sum(1).unique().tolist() == [4] and mask.sum(0).unique().tolist() == [2]  # 256 x 512, d = 4
    w = net[2].weight_orig.detach()
    assert torch.allclose(w @ w.T, torch.eye(256), atol=1e-5)  # the dense weights were orthogonal before masking


def test_orthogonal_init_leaves_pruned_and_sparse_layers_alone() -> None:
    net = sao.sparsify(fnn(2), "lmp-s", degree=4, generator=gen())
    with torch.no_grad():
        net[2].bias.fill_(1.0)
    before = net[2].weight_orig.detach().clone()
    orthogonal_init_(net, gain=2.0, generator=gen(1))
    assert torch.equal(net[2].weight_orig, before) and bool((net[2].bias == 1.0).all())
    assert torch.equal(net[2].weight, net[2].weight_orig * net[2].weight_mask)  # the computed weight untouched
    w = net[0].weight.detach()
    assert torch.allclose(w @ w.T, 4.0 * torch.eye(512), atol=1e-4)  # plain layers are re-initialised
