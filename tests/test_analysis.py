"""Tests of sao.analysis on cases with known answers, and of ``sao analyze``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sao.analysis.jacobian import jacobian_rows, jacobian_singular_values
from sao.analysis.reachability import reachability_rows
from sao.analysis.singular_values import layer_singular_values, singular_value_rows
from sao.analysis.spectrum import spectrum_row
from sao.cli import main


def test_spectrum_row_of_complete_bipartite_graph() -> None:
    row = spectrum_row("K35", torch.ones(3, 5, dtype=torch.bool))
    assert row["λ1"] == pytest.approx(math.sqrt(15)) and row["components"] == 1
    assert row["λ2 (with multiplicity)"] == pytest.approx(0.0, abs=1e-9)
    assert row["Ramanujan bound"] == pytest.approx(math.sqrt(4) + math.sqrt(2))
    assert row["Ramanujan (with mult.)"] and row["Ramanujan (distinct, paper)"]


def test_spectrum_row_of_union_of_blocks_and_identity() -> None:
    blocks = torch.block_diag(*[torch.ones(4, 4)] * 8).bool()
    row = spectrum_row("union", blocks)
    assert row["mult(λ1)"] == 8 and row["components"] == 8 and row["λ2 (with multiplicity)"] == pytest.approx(4)
    assert not row["Ramanujan (with mult.)"] and row["Ramanujan (distinct, paper)"]
    eye = spectrum_row("identity", torch.eye(6, dtype=torch.bool))
    assert eye["components"] == 6 and eye["distinct eigenvalues (value×mult.)"] == "1×6; -1×6"


def test_reachability_rows_full_for_sao_and_dense() -> None:
    rows, reach = reachability_rows(("sao", "dense"), width=64, depth=6, degree=4)
    by = {r["method"]: r for r in rows}
    assert by["dense"]["full connectivity at N"] == 1 and by["dense"]["sparsity"] == 0.0
    assert 3 <= by["sao"]["full connectivity at N"] <= 6  # log_4(64) = 3 is the least possible
    assert by["sao"]["sparsity"] == pytest.approx(1 - 4 / 64)
    assert all(r.shape == (64, 64) for r in reach["sao"])


def test_singular_values_known_answers() -> None:
    dense = layer_singular_values("dense", "linear", width=32, degree=None, repeats=2)
    sao = layer_singular_values("sao", "linear", width=32, degree=2, repeats=2)
    assert np.all(dense == 1.0) and np.all(sao == 1.0)  # orthogonal: every σ is exactly 1 after rounding
    relu = layer_singular_values("dense", "relu", width=32, degree=None, repeats=1)
    assert set(np.unique(relu)) <= {0.0, 1.0}  # a 0/1 diagonal times an orthogonal matrix


def test_singular_value_table_ks() -> None:
    rows, _ = singular_value_rows(("dense", "sao", "lrp"), width=64, degree=2, repeats=3)
    by = {(r["method"], r["activation"]): r for r in rows}
    assert by["sao", "linear"]["KS p-value"] == 1.0 and by["sao", "linear"]["same as dense (p > 0.05)"]
    assert by["lrp", "linear"]["KS p-value"] < 1e-6


def test_jacobian_of_shallow_linear_dense_net_is_isometric() -> None:
    sv = jacobian_singular_values("dense", depth=2, gain=1.0, activation="linear")
    # 1024 → 512 → 256 → 256, orthogonal layers: the 256 x 1024 Jacobian has orthonormal rows
    torch.testing.assert_close(sv, torch.ones(256, dtype=torch.float64), atol=1e-10, rtol=0)
    sv = jacobian_singular_values("sao", depth=3, gain=1.0, activation="linear")
    torch.testing.assert_close(sv, torch.ones(256, dtype=torch.float64), atol=1e-10, rtol=0)
    rows = jacobian_rows(("dense", "sao"), depths=(2,))
    assert {r["method"] for r in rows} == {"dense", "sao"}


def test_unknown_method_fails_before_any_work() -> None:
    with pytest.raises(ValueError, match="unknown sparsify method 'nope'"):
        reachability_rows(("sao", "nope"))


@pytest.mark.parametrize("argv", [
    ["spectrum", "--sizes", "16,32", "--degree", "4"],
    ["reachability", "--width", "32", "--depth", "3", "--methods", "sao,lrp"],
    ["singular-values", "--width", "32", "--repeats", "1", "--methods", "dense,sao"],
    ["jacobian", "--depths", "2,3", "--methods", "dense,sao"],
])
def test_cli_analyze_writes_files(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", *argv, "--out", str(tmp_path)]) == 0
    name = argv[0].replace("-", "_")
    for ext in ("csv", "md", "png"):
        assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    with open(tmp_path / f"{name}.csv") as handle:
        assert len(list(csv.DictReader(handle))) >= 2
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files
    assert "done in" in capsys.readouterr().out


def test_cli_analyze_bad_method_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "reachability", "--methods", "sao,nope", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
