"""The paper's training protocol, one run function for every table: data, model, method, training.

:func:`run_experiment` reads a :class:`~sao.experiments.RunConfig`, loads the data the model
takes (:class:`sao.models.ModelInfo`), builds and orthogonally initialises the model, and applies
the method by its phase (:data:`METHOD_PHASES`, paper Fig. 1):

- at initialisation (SAO, RG-N/U, EOI, ``-S`` pruning; every method not registered otherwise):
  the method sparsifies the initialised model, which trains ``epochs`` (in ``run_dir/train``);
- after training (``-T`` pruning): the dense model trains ``epochs`` (``run_dir/dense``), is
  pruned, and fine-tunes ``epochs`` more (``run_dir/finetune``);
- never (the dense baseline): the initialised model trains as it is (``run_dir/train``).

On a model with ECO layers only the ECO layers are sparsified (:func:`sparsify_exclude`): SAO-ECO
(paper §IV-C) leaves the stem, the SOC layers and the classifier dense, and every method is
compared on the same layers.

Every phase is a resumable :func:`sao.training.train` call, so an interrupted run continues where
it stopped. The result adds to the training summary the Jacobian spectrum at the start and end of
the last phase and the sparsity measured from the weights (:func:`measured_sparsity`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from sao._random import ACTIVATIONS
from sao._registry import Registry
from sao.data import Splits, create_splits, loaders
from sao.experiments.config import RunConfig
from sao.methods import METHODS, Exclude, connection_mask, sparsify
from sao.models import model_info, orthogonal_init_
from sao.nn import ECOConv2d
from sao.training import TrainConfig, read_metrics, resolve_device, train
from sao.training.distributed import world

__all__ = [
    "AFTER_TRAINING",
    "AT_INIT",
    "METHOD_PHASES",
    "NEVER",
    "build_model",
    "data_loaders",
    "flush_denormals",
    "init_activation",
    "load_splits",
    "measured_sparsity",
    "method_phase",
    "method_settings",
    "run_experiment",
    "sparsify_exclude",
    "train_with_method",
    "training_history",
]

#: The phase folders of a run, in the order they train (at-init methods: ``train`` only).
PHASES = ("dense", "finetune", "train")

#: A method's phase (paper Fig. 1): sparsify the freshly built model, then train it.
AT_INIT = "at-init"
#: Train the model dense, sparsify (prune) the trained layers, then fine-tune (paper §III-E).
AFTER_TRAINING = "after-training"
#: Never: the dense baseline trains the initialised model as it is.
NEVER = "never"
#: When the protocol applies each method (:func:`method_phase`); a method not registered here applies at init.
METHOD_PHASES: Registry[str] = Registry("method phase", "sao.experiments.METHOD_PHASES")
for _name in ("lmp-t", "gmp-t", "rg-t"):
    METHOD_PHASES.register(_name, AFTER_TRAINING)
METHOD_PHASES.register("dense", NEVER)
del _name


def method_phase(method: str) -> str:
    """When the protocol applies ``method``: :data:`AT_INIT` (default), :data:`AFTER_TRAINING` or :data:`NEVER`.

    Raises:
        ValueError: ``method`` is not a registered sparsify method (the message lists them).
    """
    METHODS.get(method)
    return METHOD_PHASES.get(method) if method in METHOD_PHASES else AT_INIT


def load_splits(config: RunConfig) -> Splits:
    """The run's dataset, shaped for its model (flat vectors or images, resized where the model needs it).

    Raises:
        FileNotFoundError: the dataset's files are not under ``config.data.root``.
    """
    info = model_info(config.model.name)
    return create_splits(config.data.name, root=config.data.root, flatten=not info.takes_images,
                         augment=config.data.augment, image_size=info.image_size,
                         normalize=config.data.normalize)


def data_loaders(splits: Splits, config: RunConfig) -> dict[str, DataLoader]:
    """Train/val/test loaders of a run: seeded, pinned for CUDA, sharded in a data-parallel group."""
    batches = loaders(splits, config.data.batch_size, config.train.seed, device=resolve_device(config.train.device),
                      shard=world())
    return dict(zip(("train", "val", "test"), batches, strict=True))


def _weight_sparsity(modules: list[nn.Module]) -> float:
    zeros = sum(int((m.weight == 0).sum()) for m in modules)
    return zeros / sum(m.weight.numel() for m in modules)


def measured_sparsity(model: nn.Module) -> dict[str, float]:
    """Sparsity measured from the model: zero weights in the sparsified layers (all, least and most
    sparse layer), in the dense layers and overall, and the fraction of missing connections
    (whole kernels, for convolutions; :func:`sao.methods.connection_mask`) of the least and most
    sparse sparsified layer."""
    layers = [m for m in model.modules() if isinstance(getattr(m, "weight", None), torch.Tensor)
              and m.weight.dim() >= 2]
    sparse = [m for m in layers if not bool(connection_mask(m).all())]
    dense = [m for m in layers if m not in sparse]
    per_layer = [_weight_sparsity([m]) for m in sparse]
    connections = [1.0 - connection_mask(m).double().mean().item() for m in sparse]
    return {"connection_sparsity_min": min(connections, default=0.0),
            "connection_sparsity_max": max(connections, default=0.0),
            "sparsity_sparse_layers": _weight_sparsity(sparse) if sparse else 0.0,
            "sparsity_sparse_layers_min": min(per_layer, default=0.0),
            "sparsity_sparse_layers_max": max(per_layer, default=0.0),
            "sparsity_dense_layers": _weight_sparsity(dense) if dense else 0.0,
            "sparsity_overall": _weight_sparsity(layers)}


def _jacobian_summary(metrics_dir: Path) -> dict[str, float | None]:
    lines = [r for r in read_metrics(metrics_dir / "metrics.jsonl") if r.get("jacobian_mean") is not None]
    return {"jacobian_mean_init": lines[0]["jacobian_mean"] if lines else None,
            "jacobian_var_init": lines[0]["jacobian_var"] if lines else None,
            "jacobian_mean": lines[-1]["jacobian_mean"] if lines else None,
            "jacobian_var": lines[-1]["jacobian_var"] if lines else None}


def training_history(run_dir: Path) -> list[dict[str, Any]]:
    """Every epoch line a run wrote (``metrics.jsonl`` of each phase), in training order.

    Each line gets ``phase`` (``"train"``, or ``"dense"`` then ``"finetune"`` for an after-training
    method) and ``step``: epochs trained so far counting all phases (the fine-tuning's epoch 0 — just
    pruned — has the dense phase's last ``step``). A run not started yet has none.
    """
    history: list[dict[str, Any]] = []
    for phase in PHASES:
        offset = history[-1]["step"] if history else 0
        history += [{**row, "phase": phase, "step": offset + row["epoch"]}
                    for row in read_metrics(Path(run_dir) / phase / "metrics.jsonl")]
    return history


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush subnormal floats to zero inside the block (usable as a decorator); restored to off after.

    Collapsed (pruned) networks carry subnormal activations, which are 10-100x slower on CPUs;
    flushing them changes no result worth having (they are below 1e-38). The flag is global to
    the process, so it is switched off again on exit instead of leaking into later code.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def init_activation(activation: str) -> str:
    """The activation the initialisers are built for: MaxMin (LipConvNet) is norm-preserving, like tanh's regime."""
    return activation if activation in ACTIVATIONS else "tanh"


def build_model(config: RunConfig, input_shape: tuple[int, ...], num_classes: int,
                generator: torch.Generator) -> nn.Module:
    """The run's dense model for inputs of ``input_shape``, orthogonally initialised with its gain (§III-C, §III-D)."""
    cfg, info = config.model, model_info(config.model.name)
    model = info.build(cfg.depth, input_shape=input_shape, num_classes=num_classes, width=cfg.width,
                       activation=cfg.activation if "activation" in info.arguments else None, head=cfg.head,
                       generator=generator)
    return orthogonal_init_(model, gain=cfg.gain, activation=init_activation(cfg.activation), generator=generator)


def sparsify_exclude(model: nn.Module) -> Exclude:
    """The layers the protocol keeps dense: on a model with ECO layers every other layer (SAO-ECO's stem, SOC
    layers and classifier), else the first and the last (paper §III)."""
    if any(isinstance(m, ECOConv2d) for m in model.modules()):
        return _not_eco
    return "first_last"


def _not_eco(name: str, module: nn.Module) -> bool:
    return not isinstance(module, ECOConv2d)


def method_settings(config: RunConfig) -> dict[str, Any]:
    """The settings the run gives its method (fields of its :attr:`~sao.methods.SparsifyMethod.settings_type`).

    A setting goes only to a method that takes it (:meth:`~sao.methods.SparsifyMethod.offered`): the
    model's ``gain`` and the activation the initialisers are built for (:func:`init_activation`); the rest
    keep the method's defaults.
    """
    return METHODS.get(config.method.name).offered(gain=config.model.gain,
                                                   activation=init_activation(config.model.activation))


@flush_denormals()
def run_experiment(config: RunConfig | Mapping[str, Any], run_dir: Path,
                   guard: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train one run (a :class:`RunConfig`, or a stored one: :meth:`RunConfig.to_dict`) in ``run_dir``, resumably,
    calling ``guard`` (the run store's lease check, see :data:`sao.experiments.store.RunFunction`) before each
    file it writes.

    Returns the training summary, the Jacobian summary and :func:`measured_sparsity`; a run whose
    dense phase diverged returns that phase's summary with ``phase="dense"``.

    Raises:
        ValueError: an invalid config (before any data is loaded).
    """
    cfg = (config if isinstance(config, RunConfig) else RunConfig.from_dict(config)).resolved()
    splits = load_splits(cfg)
    data = data_loaders(splits, cfg)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    model = build_model(cfg, tuple(splits.input_shape), splits.num_classes, generator)
    method = cfg.method

    def apply(net: nn.Module) -> None:
        sparsify(net, method.name, degree=method.degree, sparsity=method.sparsity, exclude=sparsify_exclude(net),
                 generator=generator, strict=True, **method_settings(cfg))

    return train_with_method(model, method_phase(method.name), apply, data, cfg.train, Path(run_dir), guard)


def train_with_method(model: nn.Module, phase: str, apply: Callable[[nn.Module], object],
                      data: dict[str, DataLoader], cfg: TrainConfig, run_dir: Path,
                      guard: Callable[[], None] | None = None) -> dict[str, Any]:
    """Sparsify ``model`` with ``apply`` at ``phase`` (:data:`METHOD_PHASES`) and train it, resumably.

    :data:`NEVER` trains the model as it is; :data:`AFTER_TRAINING` trains dense first, then
    applies and fine-tunes (module docstring). Returns the training summary (without
    ``run_dir``), the Jacobian summary and :func:`measured_sparsity`; a run whose dense phase
    diverged returns that phase's summary with ``phase="dense"``.
    """
    if phase == AFTER_TRAINING:
        dense = train(model, data, cfg, Path(run_dir) / PHASES[0], progress=False, guard=guard)
        if dense["status"] == "diverged":
            return {**dense, "phase": "dense", **measured_sparsity(model)}
        apply(model)
        metrics_dir = Path(run_dir) / PHASES[1]
    else:
        if phase == AT_INIT:
            apply(model)
        # a subfolder: train() writes its own config.json, which must not replace the run's
        metrics_dir = Path(run_dir) / PHASES[2]
    result = train(model, data, cfg, metrics_dir, progress=False, guard=guard)
    result = {k: v for k, v in result.items() if k != "run_dir"}
    return {**result, **_jacobian_summary(metrics_dir), **measured_sparsity(model)}
