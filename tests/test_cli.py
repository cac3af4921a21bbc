"""Tests of the ``sao`` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sao.cli import main


def test_demo_prints_verified_properties(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--depth", "8", "--width", "64", "--degree", "4"]) == 0
    out = capsys.readouterr().out
    assert "8 layers of 64x64, degree 4 (93.7500% sparse)" in out
    assert "every row and column has degree [4]" in out
    assert "16 connected components" in out
    orthogonality = float(out.split("over all layers (float64): ")[1].split()[0])
    assert orthogonality < 1e-12


def test_demo_rejects_invalid_degree_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--width", "64", "--degree", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sao demo: error: degree=3 is not valid") and "degree=4" in err


@pytest.mark.parametrize("argv", [["demo", "--depth", "0"], ["demo", "--width", "x"], ["nope"], []])
def test_bad_flags_exit_nonzero(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_module_entry_point_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "sao", "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "demo" in proc.stdout
