"""Tests of the sweep report: aggregation over seeds, known numbers, only finished runs, old formats."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from sao.experiments import EXPERIMENTS, DataConfig, MethodConfig, ModelConfig, Run, RunConfig, run_one
from sao.experiments.store import Guard
from sao.reports import aggregate, table_rows, write_report
from sao.reports.sweep import deviations_note, load_results, settings_note, training_curves
from sao.training import TrainConfig


def fake_run(config: dict[str, Any], run_dir: Path, guard: Guard) -> dict[str, Any]:
    cfg = RunConfig.from_dict(config)
    acc = {"sao": 0.9, "gmp-s": 0.1}[cfg.method.name] + 0.01 * cfg.train.seed
    return {"status": "completed", "test_acc": acc, "val_acc": acc, "jacobian_mean": 1.0 + cfg.train.seed,
            "jacobian_var": 0.1 * (1 + cfg.model.depth / 100)}


def make_sweep(out: Path) -> None:
    for method in ("sao", "gmp-s"):
        for depth in (10, 100):
            for seed in (0, 1):
                cfg = RunConfig(ModelConfig("fnn", depth, gain=1.1), MethodConfig(method, degree=4),
                                train=TrainConfig(epochs=1, seed=seed), experiment="table7")
                run_one(Run(cfg.label, cfg.to_dict()), fake_run, out)


def test_table_rows_mean_std_over_seeds(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    results, damaged = load_results(tmp_path)
    assert damaged == [] and len(aggregate(results, "test_acc")["sao", 10]) == 2
    rows = {r["method"]: r for r in table_rows(results, known={("gmp-s", 100): 10.0})}
    assert rows["sao"]["N=10"] == "**90.50 ± 0.71**"  # the best at its depth; no paper number here: no mark
    assert rows["gmp-s"]["N=100"] == "10.50 ± 0.71 [paper 10.00]"
    assert table_rows(results, best=False)[1]["N=10"] == "90.50 ± 0.71"


def test_write_report_files_and_unfinished_and_damaged_runs_are_not_reported(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    partial = tmp_path / "sao-N1000-s0-deadbeef0000"
    partial.mkdir()
    (partial / "config.json").write_text(json.dumps(RunConfig(ModelConfig(depth=1000)).to_dict()))
    broken = tmp_path / "sao-N500-s0-0123456789ab"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps(RunConfig(ModelConfig(depth=500)).to_dict()))
    (broken / "result.json").write_text('{"test_acc": 0.9')  # torn write of another tool
    files = write_report(tmp_path, tmp_path / "report")
    assert {f.name for f in files} >= {"report.md", "report.csv", "jacobian.md", "accuracy_vs_depth.png",
                                        "jacobian_vs_depth.png"}
    text = (tmp_path / "report" / "report.md").read_text()
    assert "N=1000" not in text and "N=500" not in text and "N=100" in text
    assert "Table 7" in text and "Skipped 1 damaged run folder(s): sao-N500-s0-0123456789ab" in text


def test_a_one_seed_sweep_is_reported_with_its_deviations(tmp_path: Path) -> None:
    for method, acc in (("sao", 0.9), ("gmp-s", 0.1)):
        cfg = RunConfig(ModelConfig("fnn", 50, gain=1.1), MethodConfig(method, degree=4), DataConfig(batch_size=32),
                        TrainConfig(epochs=5, lr=0.01), experiment="table7")
        run_one(Run(cfg.label, cfg.to_dict()), lambda c, d, g, acc=acc: {"status": "completed", "test_acc": acc},
                tmp_path)
    write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| sao | **90.00** |" in text and "| gmp-s | 10.00 |" in text and "Table 7" in text
    assert "(one seed)" in text and "± 0.00" not in text and "[paper —]" not in text
    assert ("Deviations from the paper's settings: dataset mnist5k (paper mnist), batch 32 (paper 128), "
            "epochs 5 (paper 100), 1 seed (paper 3).") in text


def test_a_config_of_another_format_is_a_damaged_folder(tmp_path: Path) -> None:
    """A flat config (the format of 0.1, never released) is listed as damaged, not reported."""
    make_sweep(tmp_path)
    folder = tmp_path / "flat-0123456789ab"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"experiment": "table7", "method": "sao", "depth": 10}))
    (folder / "result.json").write_text(json.dumps({"status": "completed", "test_acc": 0.9}))
    results, damaged = load_results(tmp_path)
    assert len(results) == 8 and [p.name for p, _ in damaged] == ["flat-0123456789ab"]


def test_empty_sweep_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no finished runs"):
        write_report(tmp_path)


def test_runs_that_differ_beyond_the_seed_are_never_averaged(tmp_path: Path) -> None:
    """Two folders of one method and depth that differ in a setting (here the weight decay) get a row each."""
    for decay, acc in ((0.0, 0.9), (1e-4, 0.5)):
        cfg = RunConfig(ModelConfig("fnn", 10), train=TrainConfig(epochs=1, weight_decay=decay))
        run_one(Run(cfg.label, cfg.to_dict()), lambda c, d, g, acc=acc: {"status": "completed", "test_acc": acc},
                tmp_path)
    results, _ = load_results(tmp_path)
    rows = {r["method"]: r["N=10"] for r in table_rows(results)}
    assert rows == {"sao (weight decay 0.0001)": "50.00", "sao (weight decay 0)": "**90.00**"}


@pytest.mark.parametrize("bad", [{"depth": 2.0}, {"depth": "10"}, {"lr": "0.1"}, {"model": None}])
def test_configs_with_wrong_types_are_damaged_folders_not_crashes(tmp_path: Path, bad: dict) -> None:
    make_sweep(tmp_path)
    folder = tmp_path / "odd-0123456789ab"
    folder.mkdir()
    config = RunConfig(ModelConfig("fnn", 10), experiment="table7").to_dict()
    for key, value in bad.items():
        part = next((p for p in ("model", "train") if key in config[p]), None)
        (config[part] if part else config)[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    results, damaged = load_results(tmp_path)
    assert len(results) == 8 and [p.name for p, _ in damaged] == ["odd-0123456789ab"]


def curve_run(config: dict[str, Any], run_dir: Path, guard: Guard) -> dict[str, Any]:
    """Writes the metrics lines training would: ``train/`` for SAO, ``dense/`` then ``finetune/`` for GMP-T."""
    cfg = RunConfig.from_dict(config)
    phases = ["dense", "finetune"] if cfg.method.name == "gmp-t" else ["train"]
    for p, phase in enumerate(phases):
        (run_dir / phase).mkdir(parents=True)
        lines = [{"epoch": e, "test_acc": 0.1 * (e + p + 1) + 0.01 * cfg.train.seed, "jacobian_mean": 10.0 ** -e}
                 for e in range(cfg.train.epochs + 1)]
        (run_dir / phase / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {"status": "completed", "test_acc": 0.5, "val_acc": 0.5, "jacobian_mean": 1.0, "jacobian_var": 0.1}


def test_training_curves_follow_every_phase_and_a_moved_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for method in ("sao", "gmp-t"):
        for depth in (10, 100):
            for seed in (0, 1):
                cfg = RunConfig(ModelConfig("fnn", depth), MethodConfig(method, degree=4),
                                train=TrainConfig(epochs=2, seed=seed), experiment="table7")
                run_one(Run(cfg.label, cfg.to_dict()), curve_run, sweep)
    moved = tmp_path / "moved"
    sweep.rename(moved)
    files = write_report(moved)
    assert {"training_curves.md", "training_curves.csv", "training_curves.png"} <= {f.name for f in files}
    rows = training_curves(moved, load_results(moved)[0], 100)
    gmp = [(r["step"], r["phase"], r["test_acc"]) for r in rows if r["method"] == "gmp-t" and r["seed"] == 1]
    assert gmp == [(0, "dense", 11.0), (1, "dense", 21.0), (2, "dense", 31.0),
                   (2, "finetune", 21.0), (3, "finetune", 31.0), (4, "finetune", 41.0)]
    sao = [(r["step"], r["jacobian_mean"]) for r in rows if r["method"] == "sao" and r["seed"] == 0]
    assert sao == [(0, 1.0), (1, 0.1), (2, 0.01)] and len(rows) == 2 * (3 + 6)
    assert "every epoch at N=100" in (moved / "training_curves.md").read_text()


def test_a_setting_identity_leaves_out_at_its_old_value_is_still_a_deviation() -> None:
    t7 = EXPERIMENTS.get("table7")
    paper = t7.runs("paper")[0]
    feature = RunConfig(paper.model, paper.method, DataConfig("mnist", batch_size=paper.data.batch_size,
                                                              normalize="feature"), paper.train, "table7")
    runs = len(t7.runs("paper"))
    assert deviations_note([(c, {}) for c in t7.runs("paper") if c != paper] + [(feature, {})], t7) == (
        f"Deviations from the paper's settings: normalize feature (paper dataset; 1 of {runs} runs).")


def test_a_setting_whose_value_is_none_in_some_runs_varies() -> None:
    """``None`` is a value (``amp none``: no autocast), not "unset": runs with and without amp vary in amp, and the
    deviations say how many runs deviate. Once the settings line said "amp bf16" of a sweep where half the runs
    had none. A method's target stays unset where the method takes none (the dense baseline's degree)."""
    t7 = EXPERIMENTS.get("table7")
    quick = t7.runs("quick")
    results = [(c, {}) for c in quick] + [(dataclasses.replace(c, train=dataclasses.replace(c.train, amp="bf16")), {})
                                          for c in quick]
    settings = settings_note(results).split("; ")
    assert not any(part.startswith("amp") for part in settings[0].split(", ")), settings  # not shared
    assert "amp none, bf16 (by row)" in settings[1:], settings  # at the same depths: the rows say which is which
    assert not any(part.startswith("degree") for part in settings[1:]), settings  # dense's unset degree: no variation
    assert f"amp bf16 (paper none; {len(quick)} of {len(results)} runs)" in deviations_note(results, t7)
    everywhere = [(dataclasses.replace(c, train=dataclasses.replace(c.train, amp="bf16")), {}) for c in quick]
    assert "amp bf16 (paper none)" in deviations_note(everywhere, t7)


def _add_table8_run(out: Path) -> None:
    cfg = RunConfig(ModelConfig("cnn", 2), MethodConfig("sao", sparsity=0.5), train=TrainConfig(epochs=1),
                    experiment="table8")
    run_one(Run(cfg.label, cfg.to_dict()), fake_run, out)


def test_a_report_of_a_table_the_folder_does_not_hold_is_refused_naming_those_it_holds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Once Table 8's title was printed over Table 7's runs."""
    from sao.cli import main

    make_sweep(tmp_path)
    with pytest.raises(ValueError, match=r"holds no finished runs of table8, only runs of table7 \(8 runs\)"):
        write_report(tmp_path, tmp_path / "report", EXPERIMENTS.get("table8"))
    assert not (tmp_path / "report").exists()
    assert main(["report", str(tmp_path), "--experiment", "table8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sao report: error: ") and "table7 (8 runs)" in err


def test_a_report_of_one_table_leaves_out_the_runs_of_others_and_says_how_many(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    _add_table8_run(tmp_path)
    write_report(tmp_path, tmp_path / "t7", EXPERIMENTS.get("table7"))
    text = (tmp_path / "t7" / "report.md").read_text()
    assert text.startswith(f"## {EXPERIMENTS.get('table7').title} ")
    assert "Left out the runs of other tables: table8 (1 run)." in text
    assert "sao 50%" not in text and "cnn" not in text and "| sao |" in text
    write_report(tmp_path, tmp_path / "t8", EXPERIMENTS.get("table8"))
    text = (tmp_path / "t8" / "report.md").read_text()
    assert text.startswith(f"## {EXPERIMENTS.get('table8').title} ") and "sao 50%" in text and "N=10" not in text
    assert "Left out the runs of other tables: table7 (8 runs)." in text
    write_report(tmp_path, tmp_path / "all")  # without a table: every run, and which tables they are of
    text = (tmp_path / "all" / "report.md").read_text()
    assert text.startswith("## Sweep ") and "The runs are of several tables: table7 (8 runs), table8 (1 run)" in text


def test_the_notes_are_the_same_text_in_every_process() -> None:
    """The deviations were listed in a set's order, which changes with the string hash seed of the process: two
    reports of one sweep differed in text. Now in the fields' order."""
    import subprocess
    import sys

    script = ("from sao.experiments import EXPERIMENTS\nfrom sao.reports.sweep import deviations_note, settings_note\n"
              "t = EXPERIMENTS.get('table9')\nr = [(c, {}) for c in t.runs('quick')]\n"
              "print(deviations_note(r, t)); print(settings_note(r))")
    texts = {subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": str(seed)},
                            capture_output=True, text=True, check=True).stdout for seed in range(4)}
    assert len(texts) == 1, texts
    assert "dataset mnist5k (paper cinic10), epochs 3 (paper 200)" in texts.pop()

