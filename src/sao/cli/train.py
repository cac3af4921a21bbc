"""``sao train``: one run of any registered model and method, resumable; data-parallel under ``torchrun``.

Its flags are the fields of the run config (:mod:`sao.cli._flags`); what is not given comes from
the experiment the run belongs to (``--experiment``, default: the first table whose runs use the
model — ``fnn`` → Table 7), and else from the dataclasses' defaults. Without ``--lr`` the
experiment's learning-rate rule applies (Table 7: the paper's lr by depth).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from sao.cli._flags import add_config_flags, apply_flags, check_device, given
from sao.cli._lease import add_lease_flags, lease_settings, run_store
from sao.cli._types import Folder
from sao.experiments import (
    EXPERIMENTS,
    ModelConfig,
    Run,
    RunConfig,
    experiment_for_model,
    run_experiment,
    run_one,
)
from sao.training.distributed import init_from_env, is_main_process, shutdown

__all__ = ["HELP", "add_arguments", "resolve", "run", "run_config"]

HELP = "train one run of any registered model and method (resumable; data-parallel under torchrun)"

#: Result fields printed at the end.
SUMMARY = ("status", "epochs_run", "val_acc", "test_acc", "best_val_acc", "jacobian_mean", "jacobian_var",
           "sparsity_sparse_layers", "sparsity_overall", "seconds", "run_dir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", choices=EXPERIMENTS.names(), default=None,
                        help="take the settings of this table (default: the first table whose runs use --model)")
    home = experiment_for_model(ModelConfig().name)
    add_config_flags(parser, defaults=_base(home) if home else None,
                     note=f"Defaults shown: --model {ModelConfig().name} ({home}); another model or --experiment "
                          "takes that table's settings.")
    parser.add_argument("--out", type=Folder(), default=Path("runs/train"),
                        help="parent folder of the run folder (default runs/train)")
    add_lease_flags(parser)


def resolve(args: argparse.Namespace) -> None:
    """``args.config``: the run config of the flags (:func:`run_config`), on a device this machine has;
    ``args.lease``: the run store's lease settings."""
    args.lease = lease_settings(args)
    args.config = run_config(args)
    check_device(args.config.train.device)


def run_config(args: argparse.Namespace) -> RunConfig:
    """The resolved run config of the command line (module docstring)."""
    model = getattr(args, "model.name", None)
    if model is None:  # --experiment alone picks its model
        model = EXPERIMENTS.get(args.experiment).base.model.name if args.experiment else ModelConfig().name
    name = args.experiment or experiment_for_model(model)
    spec = EXPERIMENTS.get(name) if name is not None else None
    base = _base(name) if name is not None else RunConfig(model=ModelConfig(model))
    if base.model.name != model:
        raise ValueError(f"experiment {name!r} runs model {base.model.name!r}, not {model!r}; "
                         "drop --experiment or --model")
    config = apply_flags(base, args)
    if spec is not None:  # the table's rules for what depends on the depth and the epochs, unless given
        rules = {k: v for k, v in spec.rules(config.model.depth, config.train.epochs).items()
                 if not given(args, f"train.{k}")}
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, **rules))
    return dataclasses.replace(config, experiment=name).resolved()


def _base(experiment: str) -> RunConfig:
    """The settings ``sao train`` starts from for ``experiment``: its base, the model's defaults filled in."""
    spec = EXPERIMENTS.get(experiment)
    base = spec.base.resolved()
    return dataclasses.replace(base, train=dataclasses.replace(
        base.train, **spec.rules(base.model.depth, base.train.epochs)))


def run(args: argparse.Namespace) -> int:
    """One run; under ``torchrun`` a data-parallel one (``--batch-size`` is the global batch)."""
    config = args.config
    init_from_env(config.train.device)
    main = is_main_process()  # asked before the group is gone
    try:
        store = run_store(args, args.out)
        run = Run(f"{config.model.name}-{config.label}", config.to_dict())  # one folder may hold several models
        result: dict[str, Any] = run_one(run, run_experiment, store)
    finally:
        shutdown()
    if main:
        for key in SUMMARY:
            print(f"{key:>24}: {result.get(key)}")
    return 0
