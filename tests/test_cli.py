"""Tests of the ``sao`` command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from sao.cli import build_parser, main
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
    assert err.count("\n") == 0 and err.startswith("sao demo: error: argument --degree: degree=3 is not valid")
    assert "degree=4" in err


@pytest.mark.parametrize("argv", [["demo", "--depth", "0"], ["demo", "--width", "x"], ["nope"], []])
def test_bad_flags_exit_nonzero(argv: list[str]) -> None:
    assert main(argv) == 2


def test_module_entry_point_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "sao", "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "demo" in proc.stdout


def test_every_command_is_one_module_with_help() -> None:
    from sao.cli import COMMANDS

    assert set(COMMANDS) == {"analyze", "demo", "report", "reproduce", "train"}
    text = build_parser().format_help()
    assert all(name in text for name in COMMANDS)
    proc = subprocess.run([sys.executable, "-m", "sao.cli", "train", "--help"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0 and "--weight-decay" in proc.stdout and "(default: 0.0001)" in proc.stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["report", "no-such-sweep"], "argument sweep: no such folder: 'no-such-sweep'"),
    (["reproduce", "table7", "--preset", "huge"], "preset='huge' is not known; choose from quick, cpu, paper"),
    (["reproduce", "table7", "--address", "auto"], "argument --address: only for --launcher ray"),
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


@pytest.mark.parametrize("error", [MemoryError(), torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                                                "can't allocate memory: you tried to allocate 8 bytes.")])
def test_running_out_of_memory_is_one_line_exit_1(error: BaseException, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Sizes too large for the machine are not a bug: one line naming it, no traceback (once 31 lines)."""
    import sao.cli.reproduce as reproduce

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(reproduce, "run_grid", out_of_memory)
    assert main(["reproduce", "table7", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sao reproduce: out of memory") and "enforce" not in err, err


def test_a_size_no_memory_holds_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "reachability", "--width", "1000000000", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory: DefaultCPUAllocator: can't allocate memory" in err, err
    assert main(["demo", "--width", str(2**63 - 1), "--degree", "1"]) == 1  # once: a hang while checking --degree
    assert "out of memory: Storage size calculation overflowed" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["train", "--model", "nope"], ["train", "--depth", "2.5"], ["reproduce"],
                                  ["report"], ["nope"]])
def test_argument_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "error:" in err and err.endswith("--help)")


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

    assert main(["reproduce", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # descriptions wrap
    for name in EXPERIMENTS:
        for preset, p in EXPERIMENTS.get(name).presets.items():
            assert f"{name} {preset} {' '.join(p.description.split())}" in text


# --- every flag of every command is checked where it is parsed ------------------------------------------------------

Command = tuple[str, ...]


def _commands(parser: argparse.ArgumentParser | None = None, prefix: Command = ()) -> Iterator[tuple[Command, Any]]:
    """Every command of the ``sao`` parser, sub-commands included (``("analyze", "spectrum")``), with its parser."""
    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _commands(sub, (*prefix, name))


COMMANDS = dict(_commands())


def _command_line(command: Command, folder: Path) -> list[str]:
    """``command`` with a valid value for each positional argument: its first choice, else ``folder``."""
    positionals = [a for a in COMMANDS[command]._actions if not a.option_strings]
    return [*command, *(next(iter(a.choices)) if a.choices else str(folder) for a in positionals)]


def _numbers(action: argparse.Action) -> tuple[Any, ...] | None:
    """The numbers the flag's type makes of "1" or "0.5" (a list type: its entries); ``None``: it takes no numbers."""
    for text in ("1", "0.5"):
        try:
            value = action.type(text)
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            continue
        values = value if isinstance(value, tuple) else (value,)
        return values if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) else None
    return None


NUMERIC_FLAGS = [(command, action.option_strings[0]) for command, parser in COMMANDS.items()
                 for action in parser._actions if action.option_strings and action.type is not None
                 and _numbers(action) is not None]


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line on stderr of parsing ``argv``, which must fail with exit status 2 and no traceback."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)  # parsing only: a value let through never runs anything
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    return err


def test_the_walk_finds_every_command_and_numeric_flag() -> None:
    assert set(COMMANDS) == {("demo",), ("train",), ("reproduce",), ("report",), ("analyze", "spectrum"),
                             ("analyze", "reachability"), ("analyze", "singular-values"), ("analyze", "jacobian")}
    flags = {flag for _, flag in NUMERIC_FLAGS}
    assert {"--depth", "--width", "--seed", "--lr", "--sparsity", "--milestones", "--workers", "--gpus-per-run",
            "--sizes", "--depths", "--repeats", "--gain"} <= flags
    assert "--out" not in flags and "--methods" not in flags and "--device" not in flags


@pytest.mark.parametrize(("command", "flag"), NUMERIC_FLAGS, ids=[f"{' '.join(c)} {f}" for c, f in NUMERIC_FLAGS])
def test_every_numeric_flag_refuses_bad_numbers_in_one_line_naming_it(command: Command, flag: str, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Negative, non-numbers, NaN, infinities (1e400 too), and for integers fractions and numbers beyond 64 bits:
    exit 2, one line naming the flag; 0 is refused the same way where it is not allowed."""
    action = COMMANDS[command]._option_string_actions[flag]
    integer = all(isinstance(v, int) for v in _numbers(action))
    line = _command_line(command, tmp_path)
    for bad in ("-1", "x", "", "nan", "inf", "-inf", "1e400", *((str(2**64), "1.5") if integer else ())):
        err = _refused([*line, flag, bad], capsys)
        assert f"argument {flag}" in err or f", {flag}" in err, (bad, err)
    try:
        build_parser().parse_args([*line, flag, "0"])
    except SystemExit:
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"argument {flag}" in err and "Traceback" not in err, err


@pytest.mark.parametrize(("argv", "message"), [
    (["analyze", "reachability", "--width", "0"], "argument --width: must be an integer >= 1, got '0'"),
    (["analyze", "reachability", "--width", "-4"], "argument --width: must be an integer >= 1, got '-4'"),
    (["analyze", "spectrum", "--seed", "9" * 20], "argument --seed: must be an integer in [0, 4294967295]"),
    (["demo", "--seed", str(2**32)], "argument --seed: must be an integer in [0, 4294967295]"),
    (["train", "--seed", str(2**63)], "argument --seed: must be an integer in [0, 4294967295]"),
    (["analyze", "singular-values", "--sparsity", "nan"], "argument --sparsity: must be a finite number in [0, 1)"),
    (["train", "--lr", "nan"], "argument --lr: must be a finite number, got 'nan'"),
    (["train", "--depth", "0"], "argument --depth: depth must be an integer >= 1, got 0"),
    (["train", "--lr", "-0.1"], "argument --lr: "),
    (["train", "--width", "64"], "argument --width: model 'fnn' takes no width"),
    (["train", "--momentum", "0", "--nesterov"], "arguments --momentum, --nesterov: "),
    (["reproduce", "table7", "--device", "gpu"], "argument --device: "),
    (["reproduce", "table7", "--workers", "0"], "argument --workers: workers must be an integer >= 1, got 0"),
    (["reproduce", "table7", "--launcher", "ray", "--gpus-per-run", "1.5"], "argument --gpus-per-run: "),
    (["reproduce", "table7", "--launcher", "ray", "--workers", "2"], "argument --workers: only for --launcher local"),
])
def test_bad_values_are_one_line_naming_the_flag_before_anything_runs(argv: list[str], message: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A value alone (its type) or with the others (the settings they make, blamed on the flags that cause it)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sao {' '.join(argv[:2 if argv[0] == 'analyze' else 1])}: "
                                                   "error: ") and message in err, err


def test_the_seed_range_is_what_training_seeds_take() -> None:
    """0 .. 2**32 - 1: numpy's legacy seeding (done by every training run) takes no more; torch takes more."""
    import numpy as np

    args = build_parser().parse_args(["train", "--seed", str(2**32 - 1), "--depth", "2"])
    np.random.seed(getattr(args, "train.seed"))
    torch.manual_seed(args.config.train.seed)


def test_every_output_folder_refuses_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--out`` naming a file (or a folder below one) is one line, exit 2, before any run (once 8 tracebacks)."""
    afile = tmp_path / "afile"
    afile.write_text("")
    with_out = [command for command, parser in COMMANDS.items() if "--out" in parser._option_string_actions]
    assert {command[0] for command in with_out} == {"train", "reproduce", "report", "analyze"}
    for command in with_out:
        for out in (afile, afile / "below"):
            err = _refused([*_command_line(command, tmp_path), "--out", str(out)], capsys)
            assert f"argument --out: '{afile}' is a file, not a folder" in err, err
    assert main(["reproduce", "table7", "--out", str(afile)]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and afile.read_text() == ""


def test_an_input_folder_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("")
    assert "argument sweep: no such folder" in _refused(["report", str(tmp_path / "missing")], capsys)
    assert "argument sweep: is not a folder" in _refused(["report", str(tmp_path / "afile")], capsys)
    for command in (["train", "--depth", "2"], ["reproduce", "table7", "--preset", "quick"]):  # once: ignored
        err = _refused([*command, "--data-root", str(tmp_path / "afile"), "--out", str(tmp_path / "o")], capsys)
        assert f"argument --data-root: '{tmp_path / 'afile'}' is a file, not a folder" in err, err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no folder can be made")
def test_an_output_folder_that_cannot_be_made_is_one_line_before_any_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Once every run of the grid failed on it, each with its traceback, and the sweep exited 1."""
    out = "/proc/sao-no-such-folder/sweep"
    assert main(["reproduce", "table7", "--preset", "quick", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sao reproduce: error: ") and "sao-no-such-folder" in err, err


def test_errors_of_the_console_command_are_one_line() -> None:
    """The installed command (``python -m sao``): once a ZeroDivisionError traceback."""
    proc = subprocess.run([sys.executable, "-m", "sao", "analyze", "reachability", "--width", "0"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "argument --width" in proc.stderr, proc.stderr
    assert main(["--version"]) == 0


def test_a_method_without_a_target_drops_the_tables_target() -> None:
    """``--method dense`` on Table 7 (degree 4): the baseline takes no degree, so the table's is dropped."""
    from sao.experiments import MethodConfig

    assert build_parser().parse_args(["train", "--method", "dense"]).config.method == MethodConfig("dense")
    assert build_parser().parse_args(["train", "--method", "gmp-s"]).config.method == MethodConfig("gmp-s", degree=4)
    assert main(["train", "--method", "dense", "--degree", "4"]) == 2


def test_the_lease_flags_reach_the_run_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``--stale-after``/``--heartbeat`` set the claims' timing of ``sao reproduce`` and ``sao train`` (once only
    the Python API could, though docs/run-store.md asks NFS users to choose them); checked together, named."""
    import sao.cli.reproduce as reproduce
    import sao.cli.train as train
    from sao.experiments import RunStore

    stores: list[RunStore] = []

    def capture(*args: object, store: RunStore, **kwargs: object) -> None:
        stores.append(store)
        raise KeyboardInterrupt  # stop before training anything

    monkeypatch.setattr(reproduce, "run_grid", capture)
    monkeypatch.setattr(train, "run_one", lambda run, fn, store: capture(store=store))
    for command in (["reproduce", "table7"], ["train", "--depth", "2"]):
        assert main([*command, "--stale-after", "300", "--heartbeat", "20", "--out", str(tmp_path)]) == 130
        assert main([*command, "--out", str(tmp_path)]) == 130
    defaults = RunStore(tmp_path)
    assert [(s.stale_after, s.heartbeat) for s in stores] == [(300.0, 20.0), (defaults.stale_after,
                                                                               defaults.heartbeat)] * 2
    capsys.readouterr()
    err = _refused(["reproduce", "table7", "--stale-after", "20", "--heartbeat", "30"], capsys)
    assert "arguments --stale-after, --heartbeat: --stale-after (20 s) must be longer than --heartbeat (30 s)" in err
    assert ("argument --heartbeat: --stale-after (120 s, the default) must be longer than --heartbeat (200 s)"
            in _refused(["train", "--heartbeat", "200"], capsys))

