"""Tests of sao.topology: the block-regular construction and its graph facts."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sao.topology import (
    Topology,
    components,
    degree_for_sparsity,
    ramanujan,
    reachability,
    resolve_degree,
    spectrum,
    valid_degrees,
)

FAST = settings(max_examples=60, deadline=None, derandomize=True)


@st.composite
def block_shapes(draw: st.DrawFn, max_side: int = 12) -> tuple[int, int, int]:
    """A valid (m, n, degree) via (g, bm, bn): m = g*bm, n = g*bn, degree = max(bm, bn)."""
    g = draw(st.integers(1, 16))
    bm, bn = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    return g * bm, g * bn, max(bm, bn)


def brute_force_valid(m: int, n: int) -> list[int]:
    big, small = max(m, n), min(m, n)
    return [d for d in range(1, big + 1) if big % d == 0 and (small * d) % big == 0 and 1 <= small * d // big <= d]


@FAST
@given(block_shapes(), st.integers(0, 2**31 - 1))
def test_mask_has_exact_degrees_and_sparsity(shape: tuple[int, int, int], seed: int) -> None:
    m, n, d = shape
    topo = ramanujan(m, n, degree=d, generator=torch.Generator().manual_seed(seed))
    mask = topo.mask()
    r = min(m, n) * d // max(m, n)
    small_axis_degrees = mask.sum(1) if m <= n else mask.sum(0)
    large_axis_degrees = mask.sum(0) if m <= n else mask.sum(1)
    assert small_axis_degrees.unique().tolist() == [d]
    assert large_axis_degrees.unique().tolist() == [r]
    assert int(mask.sum()) == m * n // topo.num_blocks
    assert topo.sparsity == pytest.approx(1 - d / max(m, n), abs=1e-15)
    assert 1 - mask.float().mean().item() == pytest.approx(topo.sparsity, abs=1e-7)
    assert topo.degree == d and topo.row_degree == mask.sum(1)[0] and topo.col_degree == mask.sum(0)[0]


@FAST
@given(st.integers(1, 96), st.integers(1, 96))
def test_valid_degrees_match_the_definition(m: int, n: int) -> None:
    assert valid_degrees(m, n) == brute_force_valid(m, n)


@FAST
@given(st.integers(2, 96), st.integers(2, 96), st.integers(-2, 100), st.booleans())
def test_resolve_degree_takes_exactly_the_valid_degrees(m: int, n: int, degree: int, mirrored: bool) -> None:
    """The check of one degree (no list) agrees with the list, for plain and mirrored topologies."""
    if mirrored and (m % 2 or n % 2):
        return
    if degree in valid_degrees(m, n, mirrored):
        assert resolve_degree(m, n, degree, mirrored=mirrored) == degree
        assert degree_for_sparsity(m, n, 1 - degree / max(m, n), mirrored) == degree
    else:
        with pytest.raises(ValueError, match="not valid"):
            resolve_degree(m, n, degree, mirrored=mirrored)


def test_degrees_of_huge_layers_are_checked_without_listing_every_divisor() -> None:
    """Once ``sao demo --width 9223372036854775807`` hung while its flags were checked (a loop up to the width)."""
    huge = 2**63 - 1
    assert resolve_degree(huge, huge, degree=1) == 1 and resolve_degree(2**62, 2**62, degree=2**31) == 2**31
    assert degree_for_sparsity(2**62, 2**62, 0.5) == 2**61
    assert valid_degrees(2**40, 2**40) == [2**k for k in range(41)]  # square-root time: 2**20 steps
    with pytest.raises(ValueError, match=r"nearest valid: degree=2 \(.*\), degree=4 "):
        resolve_degree(2**40, 2**40, degree=3)


@FAST
@given(block_shapes())
def test_degree_for_sparsity_round_trips(shape: tuple[int, int, int]) -> None:
    m, n, d = shape
    assert degree_for_sparsity(m, n, 1 - d / max(m, n)) == d


@pytest.mark.parametrize("m, n, degree", [(256, 256, 5), (4096, 4096, 3), (300, 200, 7), (10, 4, 4)])
def test_invalid_degree_names_valid_ones(m: int, n: int, degree: int) -> None:
    # how long raising takes is measured by benchmarks/bench_guards.py, not asserted here
    with pytest.raises(ValueError, match=r"nearest valid: degree=\d+"):
        ramanujan(m, n, degree=degree)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "exactly one of"),
    ({"degree": 4, "sparsity": 0.5}, "exactly one of"),
    ({"sparsity": 1.0}, r"in \[0, 1\)"),
    ({"sparsity": -0.1}, r"in \[0, 1\)"),
    ({"sparsity": 0.9}, "nearest valid"),
    ({"degree": 3}, "not valid"),
])
def test_bad_degree_or_sparsity_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_degree(256, 256, **kwargs)


@pytest.mark.parametrize("kwargs", [{"degree": 4.0}, {"degree": True}, {"sparsity": "0.5"}], ids=str)
def test_degree_or_sparsity_of_the_wrong_type(kwargs: dict) -> None:
    with pytest.raises(TypeError, match=r"must be an integer|must be a real number"):
        resolve_degree(256, 256, **kwargs)


@pytest.mark.parametrize(("m", "n"), [(0, 4), (4, -1)])
def test_bad_shapes(m: object, n: object) -> None:
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        valid_degrees(m, n)  # type: ignore[arg-type]


def test_shape_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match=r"m \(out_features\) must be an integer"):
        valid_degrees(3.0, 4)  # type: ignore[arg-type]


def test_same_seed_same_topology_and_different_seed_differs() -> None:
    a, b, c = (ramanujan(64, 128, degree=8, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert torch.equal(a.row_perm, b.row_perm) and torch.equal(a.col_perm, b.col_perm)
    assert not torch.equal(a.mask(), c.mask())


@pytest.mark.parametrize(("m", "n", "d"), [(8, 8, 2), (64, 128, 8), (128, 64, 8), (32, 32, 32)])
def test_mirrored_topology_pairs_nodes(m: int, n: int, d: int) -> None:
    topo = ramanujan(m, n, degree=d, mirrored=True, generator=torch.Generator().manual_seed(0))
    mask = topo.mask()
    assert torch.equal(mask[: m // 2, : n // 2], mask[m // 2:, n // 2:])
    assert torch.equal(mask[: m // 2, : n // 2], mask[: m // 2, n // 2:])
    assert topo.degree == d and topo.mirrored
    assert all(v % 2 == 0 for v in valid_degrees(m, n, mirrored=True))


def test_mirrored_needs_even_sizes_and_degree() -> None:
    with pytest.raises(ValueError, match="even"):
        ramanujan(7, 8, degree=8, mirrored=True)
    with pytest.raises(ValueError, match="not valid"):
        ramanujan(8, 8, degree=1, mirrored=True)


def test_topology_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="must divide"):
        Topology(6, 4, 4, torch.arange(6), torch.arange(4))
    with pytest.raises(ValueError, match="permutation"):
        Topology(4, 4, 2, torch.tensor([0, 0, 1, 2]), torch.arange(4))
    with pytest.raises(ValueError, match="pair"):
        Topology(4, 4, 1, torch.arange(4), torch.tensor([0, 2, 1, 3]), mirrored=True)


def test_blocks_dense_round_trip() -> None:
    topo = ramanujan(12, 18, degree=6, generator=torch.Generator().manual_seed(3))
    blocks = torch.randn(topo.num_blocks, *topo.block_shape, 2)
    dense = topo.blocks_to_dense(blocks)
    assert torch.equal(topo.dense_to_blocks(dense), blocks)
    assert torch.equal(dense.abs().sum(-1) != 0, topo.mask())
    with pytest.raises(ValueError, match="blocks of shape"):
        topo.blocks_to_dense(torch.zeros(1, 2, 3))


# ---------------------------------------------------------------- graph facts

def test_spectrum_of_complete_bipartite_graph() -> None:
    r, d = 3, 5
    eig = spectrum(torch.ones(r, d))
    expected = torch.tensor([math.sqrt(r * d)] + [0.0] * (r + d - 2) + [-math.sqrt(r * d)], dtype=torch.float64)
    torch.testing.assert_close(eig, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize(("m", "n", "d"), [(256, 256, 4), (128, 256, 8), (512, 128, 16)])
def test_sao_layer_is_a_disjoint_union_of_complete_bipartite_graphs(m: int, n: int, d: int) -> None:
    topo = ramanujan(m, n, degree=d, generator=torch.Generator().manual_seed(0))
    g, (bm, bn) = topo.num_blocks, topo.block_shape
    eig = spectrum(topo.mask())
    top = math.sqrt(bm * bn)
    torch.testing.assert_close(eig[:g], torch.full((g,), top, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(eig[g:-g], torch.zeros(m + n - 2 * g, dtype=torch.float64), atol=1e-9, rtol=0)
    comps = components(topo.mask())
    assert comps.count == g
    for b in range(g):  # every block is exactly one component
        assert comps.row_labels[topo.block_rows()[b]].unique().numel() == 1
        assert comps.row_labels[topo.block_rows()[b][0]] == comps.col_labels[topo.block_cols()[b][0]]


def test_components_of_identity_and_empty_rows() -> None:
    assert components(torch.eye(5)).count == 5
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, :2] = True
    assert components(mask).count == 1 + 2 + 2  # one star, two isolated outputs, two isolated inputs


def test_reachability_of_known_chains() -> None:
    eye = torch.eye(6, dtype=torch.bool)
    assert torch.equal(reachability([eye, eye, eye]), eye)
    shift = torch.roll(eye, 1, dims=0)
    steps = reachability([shift, shift], cumulative=True)
    assert torch.equal(steps[0], shift) and torch.equal(steps[1], torch.roll(eye, 2, dims=0))
    band = eye | shift  # each output sees itself and its left neighbour
    reach = reachability([band] * 5)
    assert bool(reach.all())  # after 5 layers the (circular) band covers all 6 inputs
    assert not bool(reachability([band] * 4).all())


def test_reachability_of_sao_stack_becomes_full() -> None:
    gen = torch.Generator().manual_seed(0)
    masks = [ramanujan(256, 256, degree=4, generator=gen).mask() for _ in range(12)]
    steps = reachability(masks, cumulative=True)
    first_full = next(i + 1 for i, r in enumerate(steps) if bool(r.all()))
    assert 4 <= first_full <= 12  # 4 = log_4(256) is the least any degree-4 stack can need


def test_reachability_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="inputs"):
        reachability([torch.ones(4, 3), torch.ones(2, 5)])
    with pytest.raises(ValueError, match="at least one"):
        reachability([])
