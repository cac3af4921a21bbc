"""Experiment grids: run directories named by config hash, atomic results, resume and skip."""

from sao.experiments.runner import Run, config_hash, finished_results, is_finished, read_result, run_grid, run_one

__all__ = ["Run", "config_hash", "finished_results", "is_finished", "read_result", "run_grid", "run_one"]
