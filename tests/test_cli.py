"""Tests of the ``sao`` command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from sao.cli import main
from sao.experiments.store import Guard


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


def test_every_command_is_one_module_with_help() -> None:
    from sao.cli import COMMANDS, build_parser

    assert set(COMMANDS) == {"analyze", "demo", "report", "reproduce", "train"}
    text = build_parser().format_help()
    assert all(name in text for name in COMMANDS)
    proc = subprocess.run([sys.executable, "-m", "sao.cli", "train", "--help"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0 and "--weight-decay" in proc.stdout and "(default: 0.0001)" in proc.stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["report", "no-such-sweep"], "no sweep folder no-such-sweep"),
    (["reproduce", "table7", "--preset", "huge"], "preset='huge' is not known; choose from quick, cpu, paper"),
    (["reproduce", "table7", "--address", "auto"], "--address need --launcher ray"),
    (["train", "--dataset", "mnist", "--data-root", "no-such-folder", "--depth", "2", "--epochs", "1"],
     "no-such-folder"),
])
def test_user_errors_are_one_line_and_exit_2(argv: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and err.startswith(f"sao {argv[0]}: error: ")


def _half_fails(config: dict[str, Any], run_dir: Path, guard: Guard) -> dict[str, Any]:
    if config["method"]["name"] == "gmp-s":
        raise RuntimeError("boom")
    return {"status": "completed", "test_acc": 0.5, "val_acc": 0.5}


def test_a_grid_with_failed_runs_exits_1_naming_them(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import sao.cli.reproduce as reproduce

    monkeypatch.setattr(reproduce, "run_experiment", _half_fails)
    assert main(["reproduce", "table7", "--preset", "quick", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sao reproduce: 2 run(s) failed") and "gmp-s-N50-s0" in err and "gmp-s-N1000-s0" in err


def test_programming_errors_keep_their_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sao.cli.reproduce as reproduce

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("a bug")

    monkeypatch.setattr(reproduce, "run_grid", broken)
    with pytest.raises(TypeError, match="a bug"):
        main(["reproduce", "table7", "--out", str(tmp_path)])


@pytest.mark.parametrize("argv", [["train", "--model", "nope"], ["train", "--depth", "2.5"], ["reproduce"],
                                  ["report"], ["nope"]])
def test_argument_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err and "error:" in err and err.endswith("--help)")


def test_missing_data_fails_once_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The paper preset without --data-root: one line, exit 2, no run folder made."""
    assert main(["reproduce", "table7", "--preset", "paper", "--out", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "MNIST" in err
    assert not (tmp_path / "sweep").exists() or not any((tmp_path / "sweep").iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", [["train", "--depth", "2", "--epochs", "1"], ["reproduce", "table7"]])
def test_a_cuda_device_on_a_machine_without_one_is_a_user_error(command: list[str], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_fails_at_start_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Degree 3 does not divide the 256-wide layers: the run fails when sparsifying, before any training."""
    assert main(["train", "--depth", "2", "--epochs", "1", "--degree", "3", "--device", "cpu",
                 "--out", str(tmp_path)]) == 2
    assert "degree=3 is not valid" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_reproduce_help_lists_every_preset_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    from sao.experiments import EXPERIMENTS

    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # descriptions wrap
    for name in EXPERIMENTS:
        for preset, p in EXPERIMENTS.get(name).presets.items():
            assert f"{name} {preset} {' '.join(p.description.split())}" in text
