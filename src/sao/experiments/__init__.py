"""Experiments: typed run configs, the tables of the paper as specs, one run function, the run store.

From the ground up: :mod:`~sao.experiments.store` (run folders, config hash, results, claims),
:mod:`~sao.experiments.launchers` (local processes, Ray), :mod:`~sao.experiments.runner`
(:func:`run_grid`); :mod:`~sao.experiments.config` (:class:`RunConfig` and its parts),
:mod:`~sao.experiments.spec` (:class:`ExperimentSpec`, :class:`Preset`, :data:`EXPERIMENTS`),
:mod:`~sao.experiments.protocol` (:func:`run_experiment`, the paper's protocol for every table), and
the tables themselves, :mod:`~sao.experiments.table7` and :mod:`~sao.experiments.cnn` (Tables 8–12).
"""

from sao._extras import require_extra

require_extra(__name__)  # the experiments extra, before any module that needs it

from sao.experiments import cnn, table7  # registers the tables
from sao.experiments.config import DataConfig, MethodConfig, ModelConfig, RunConfig, execution_settings, identity
from sao.experiments.launchers import LAUNCHERS, LaunchOptions
from sao.experiments.protocol import METHOD_PHASES, measured_sparsity, method_phase, run_experiment
from sao.experiments.runner import FailedRuns, run_grid
from sao.experiments.spec import EXPERIMENTS, ExperimentSpec, Preset, experiment_for_model
from sao.experiments.store import (
    LeaseLost,
    Run,
    RunClaimed,
    RunStore,
    config_hash,
    finished_results,
    is_finished,
    read_result,
    run_one,
)

__all__ = [
    "EXPERIMENTS",
    "LAUNCHERS",
    "METHOD_PHASES",
    "DataConfig",
    "ExperimentSpec",
    "FailedRuns",
    "LaunchOptions",
    "LeaseLost",
    "MethodConfig",
    "ModelConfig",
    "Preset",
    "Run",
    "RunClaimed",
    "RunConfig",
    "RunStore",
    "cnn",
    "config_hash",
    "execution_settings",
    "experiment_for_model",
    "finished_results",
    "identity",
    "is_finished",
    "measured_sparsity",
    "method_phase",
    "read_result",
    "run_experiment",
    "run_grid",
    "run_one",
    "table7",
]
