"""Paper Tables 8–12: sparse convolutional networks — vanilla CNN-N, CNN-ECO and LipConvNet-N.

One run = one (method, sparsity, depth, seed) of a table. The model is built from
:data:`sao.models.MODELS`, every conv Delta-orthogonal (vanilla CNN; mirrored for ReLU) or ECO/SOC
(CNN-ECO, LipConvNet), then made sparse by the method with the first conv and the classifier
dense (SPEC §2). Vanilla-CNN methods go through :func:`sao.sparsify` (kernel-level pruning for
``lmp-*``/``rg-*``, SAO-Delta for ``sao``); on CNN-ECO and LipConvNet ``sao`` means SAO-ECO, built
into the ECO layers at construction, and the pruning baselines (``lmp-*``, ``gmp-*``, ``lrp``,
``rg-*``) prune whole kernels of the ECO layers only (:mod:`sao.methods.prune_methods`; stem, SOC
layers and classifier stay dense for every method, as in SAO-ECO). Training follows
:mod:`sao.experiments.protocol`.

Settings (SPEC §4): SGD, momentum 0.9, batch 128, lr 0.01 (the paper states it for Table 11 and
not for the others; we use it throughout), weight decay 1e-4 (5e-4 for LipConvNet), ×0.1 at 25 %
and 75 % of the epochs (the paper's 50/150 of 200), cosine with one warm-up epoch for CINIC-10
and CIFAR-100. Presets:

- ``quick`` — minutes on 2 CPU cores: MNIST-5k as 1×32×32 images, no augmentation, shallow
  and narrow models (width 16), 3 epochs at a constant lr; proves the whole path.
- ``cpu`` — the largest honest comparison for a few CPU hours: MNIST-5k images, width 32, the
  table's deepest depth that fits, high sparsity (87.5 % and 96.875 %; width 64 where ReLU's
  mirrored construction needs degree ≥ 2), 10 epochs, cosine lr.
- ``paper`` — the paper's dataset, depths, widths and 200 epochs (``--data-root``; a GPU job).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sao.data import create_splits
from sao.experiments.protocol import TRAINING_DEFAULTS, data_loaders, flush_denormals, train_config, train_with_method
from sao.experiments.runner import Run
from sao.methods import METHODS, eco_methods
from sao.models import MODELS, orthogonal_init_

__all__ = ["CNN_TABLES", "CNNGrid", "CNNTable", "cnn_runs", "run_cnn"]

#: Models whose ``sao`` variant is built into their layers (SAO-ECO), not applied by ``sparsify``;
#: ``sparsify`` prunes their ECO layers with the methods that handle them (``METHODS[m].handles_eco``).
BUILT_IN_SPARSITY = ("cnn_eco", "lipconvnet")


@dataclass(frozen=True)
class CNNGrid:
    """One preset of a table: what varies (methods × sparsities × depths × seeds) and the settings."""

    depths: tuple[int, ...]
    methods: tuple[str, ...]
    sparsities: tuple[float, ...]
    epochs: int
    dataset: str
    width: int = 128
    seeds: tuple[int, ...] = (0,)
    augment: bool = True
    batch_size: int = 128
    schedule: str | None = None  # None: the table's schedule (paper presets); short CPU runs override it


@dataclass(frozen=True)
class CNNTable:
    """A table of the paper: its model, activation, head, schedule, presets and known numbers."""

    title: str
    model: str
    activation: str
    presets: dict[str, CNNGrid]
    head: str = "pool"
    schedule: str = "multistep"
    weight_decay: float = 1e-4
    known: dict[tuple[str, int], float] | None = None


def _quick(methods: tuple[str, ...], depths: tuple[int, ...] = (8,), width: int = 16,
           sparsities: tuple[float, ...] = (0.5, 0.75), epochs: int = 3) -> CNNGrid:
    return CNNGrid(depths, methods, sparsities, epochs=epochs, dataset="mnist5k", width=width, augment=False,
                   schedule="constant")


def _cpu(methods: tuple[str, ...], depths: tuple[int, ...], sparsities: tuple[float, ...] = (0.875, 0.96875),
         width: int = 32) -> CNNGrid:
    return CNNGrid(depths, methods, sparsities, epochs=10, dataset="mnist5k", width=width, augment=False,
                   schedule="cosine")


def _known_t9() -> dict[tuple[str, int], float]:
    """Table 9 (CINIC-10) as the paper's text kept it (SPEC "Known numbers")."""
    depths = (8, 16, 32, 128)
    rows = {"dense": (81.32, 81.23, 81.47, 77.94),
            "sao 50%": (79.78, 80.35, 80.37, 75.87), "lmp-s 50%": (79.54, 80.32, 80.12, 75.97),
            "sao 75%": (77.08, 77.16, 78.83, 73.72), "lmp-s 75%": (76.90, 78.25, 78.03, 10.00),
            "sao 87.5%": (73.57, 75.70, 76.63, 71.05), "lmp-s 87.5%": (72.94, 74.11, 10.00, 10.00),
            "sao 96.875%": (64.66, 66.51, 68.45, 65.48), "lmp-s 96.875%": (10.00,) * 4}
    return {(row, d): v for row, values in rows.items() for d, v in zip(depths, values, strict=True)}


def _known_t11() -> dict[tuple[str, int], float]:
    """Table 11 (CIFAR-10, LipConvNet-N) as the paper's text kept it (SPEC "Known numbers")."""
    depths = (5, 10, 15)
    rows = {"dense": (80.15, 78.75, 79.04),
            "lmp-s 50%": (79.04, 79.10, 78.68), "lmp-t 50%": (79.36, 79.37, 79.08),
            "rg-s 50%": (78.38, 78.56, 74.13), "rg-t 50%": (79.84, 79.73, 79.20), "sao 50%": (78.81, 78.44, 77.35),
            "lmp-t 87.5%": (75.46, 10.0, 10.0), "rg-t 87.5%": (77.19, 10.0, 10.0), "sao 87.5%": (76.77, 75.24, 75.26),
            "lmp-t 93.75%": (73.27, 10.0, 10.0), "sao 93.75%": (75.86, 73.44, 73.53),
            "lmp-t 96.875%": (70.80, 10.0, 10.0), "sao 96.875%": (73.39, 72.51, 72.00),
            "sao 98.4375%": (72.45, 70.01, 70.79)}
    return {(row, d): v for row, values in rows.items() for d, v in zip(depths, values, strict=True)}


VANILLA_METHODS = ("dense", "sao", "lmp-s", "lmp-t", "rg-s", "rg-t")
T9_SPARSITIES = (0.5, 0.75, 0.875, 0.96875)

CNN_TABLES: dict[str, CNNTable] = {
    "table8": CNNTable(
        "Table 8: vanilla CNN-N on CIFAR-10", "cnn", "relu", {
            "quick": _quick(("dense", "sao", "lmp-s", "rg-s")),
            "cpu": _cpu(("dense", "sao", "lmp-s"), depths=(32, 128), width=64),
            "paper": CNNGrid((32, 128, 256, 512, 768), VANILLA_METHODS, (0.5, 0.96875), 200, "cifar10")}),
    "table9": CNNTable(
        "Table 9: vanilla CNN-N on CINIC-10", "cnn", "relu", {
            "quick": _quick(("dense", "sao", "lmp-s")),
            "cpu": _cpu(("dense", "sao", "lmp-s"), depths=(32,), width=64),
            "paper": CNNGrid((8, 16, 32, 128), ("dense", "sao", "lmp-s"), T9_SPARSITIES, 200, "cinic10")},
        head="conv", schedule="cosine", known=_known_t9()),
    "table10": CNNTable(
        "Table 10: vanilla CNN-N on CIFAR-100", "cnn", "relu", {
            "quick": _quick(("dense", "sao")),
            "cpu": _cpu(("dense", "sao"), depths=(8, 16, 32), width=64),
            "paper": CNNGrid((8, 16, 32), ("dense", "sao"), T9_SPARSITIES, 200, "cifar100")},
        head="conv", schedule="cosine"),
    "table11": CNNTable(
        "Table 11: LipConvNet-N on CIFAR-10", "lipconvnet", "maxmin", {
            "quick": _quick(("dense", "sao", "lmp-s"), depths=(5,), width=16, sparsities=(0.5,), epochs=2),
            "cpu": _cpu(("dense", "sao", "lmp-s", "lmp-t"), depths=(5, 10), width=16),
            "paper": CNNGrid((5, 10, 15), ("dense", "lmp-s", "lmp-t", "rg-s", "rg-t", "sao"),
                             (0.5, 0.875, 0.9375, 0.96875, 0.984375), 200, "cifar10", width=32)},
        weight_decay=5e-4, known=_known_t11()),
    "table12": CNNTable(
        "Table 12: CNN-ECO on CINIC-10", "cnn_eco", "relu", {
            "quick": _quick(("dense", "sao")),
            "cpu": _cpu(("dense", "sao"), depths=(8, 16)),
            "paper": CNNGrid((8, 16, 32, 128), ("dense", "sao"), T9_SPARSITIES, 200, "cinic10")},
        schedule="cosine"),
}


def cnn_runs(table: str, preset: str, data_root: str | None = None, device: str = "auto") -> list[Run]:
    """The runs of ``table`` under ``preset``; ``dense`` runs once per depth (no sparsity)."""
    if table not in CNN_TABLES:
        raise ValueError(f"table={table!r} is not known; choose from {', '.join(CNN_TABLES)}")
    spec = CNN_TABLES[table]
    if preset not in spec.presets:
        raise ValueError(f"preset={preset!r} is not known; choose from {', '.join(spec.presets)}")
    grid = spec.presets[preset]
    schedule = grid.schedule or spec.schedule
    warmup = 1 if spec.schedule == "cosine" and grid.schedule is None else 0  # CINIC-10 / CIFAR-100 (SPEC §4)
    runs = []
    for method in grid.methods:
        METHODS.get(method)
        for sparsity in (None,) if method == "dense" else grid.sparsities:
            for depth in grid.depths:
                for seed in grid.seeds:
                    config = {"experiment": table, "model": spec.model, "method": method, "sparsity": sparsity,
                              "depth": depth, "width": grid.width, "activation": spec.activation, "head": spec.head,
                              "seed": seed, "epochs": grid.epochs, "dataset": grid.dataset, "data_root": data_root,
                              "augment": grid.augment, "batch_size": grid.batch_size, "lr": 0.01, "gain": 1.0,
                              "schedule": schedule, "warmup_epochs": warmup,
                              "milestones": [grid.epochs // 4, 3 * grid.epochs // 4],
                              "weight_decay": spec.weight_decay, "device": device}
                    tag = "" if sparsity is None else f"-{100 * sparsity:g}"
                    runs.append(Run(f"{method}{tag}-N{depth}-s{seed}", config))
    return runs


def _build_model(config: dict[str, Any], num_classes: int, in_channels: int, gen: torch.Generator) -> torch.nn.Module:
    name = config["model"]
    sparse = config["method"] == "sao" and name in BUILT_IN_SPARSITY
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_channels": in_channels}
    if name == "cnn":
        kwargs |= {"width": config["width"], "activation": config["activation"], "head": config["head"]}
    elif name == "cnn_eco":
        kwargs |= {"width": config["width"], "activation": config["activation"], "generator": gen}
    else:  # an optional config key "soc_bound" selects the SOC scaling (default "certified")
        kwargs |= {"init_channels": config["width"], "generator": gen,
                   "soc_bound": config.get("soc_bound", "certified")}
    if sparse:
        kwargs["sparsity"] = config["sparsity"]
    model = MODELS.get(name)(config["depth"], **kwargs)
    return orthogonal_init_(model, gain=config["gain"], activation=_init_activation(config), generator=gen)


def _init_activation(config: dict[str, Any]) -> str:
    """The activation the initialisers are built for: MaxMin (LipConvNet) is norm-preserving, like tanh's regime."""
    return config["activation"] if config["activation"] in ("tanh", "relu") else "tanh"


@flush_denormals()
def run_cnn(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train one run of Tables 8–12 in ``run_dir`` (resumable) and return its result."""
    model_name, method = config["model"], config["method"]
    # checked here too (sparsify would refuse as well) so a bad run fails before any data is loaded
    if model_name in BUILT_IN_SPARSITY and method != "sao" and not METHODS.get(method).handles_eco:
        raise ValueError(f"method={method!r} is not available for {model_name} (its ECO layers take 'sao' = "
                         f"SAO-ECO, built at construction, or the kernel pruning methods {', '.join(eco_methods())})")
    image_size = 36 if model_name == "cnn_eco" else None
    splits = create_splits(config["dataset"], root=config["data_root"], flatten=False, augment=config["augment"],
                           image_size=image_size)
    gen = torch.Generator().manual_seed(config["seed"])
    model = _build_model(config, splits.num_classes, splits.input_shape[0], gen)
    applied = "dense" if method == "sao" and model_name in BUILT_IN_SPARSITY else method
    settings = {"sparsity": config["sparsity"], "gain": config["gain"], "activation": _init_activation(config),
                "generator": gen}
    defaults = {**TRAINING_DEFAULTS, "weight_decay": config["weight_decay"]}
    return train_with_method(model, applied, settings, data_loaders(splits, config), train_config(config, defaults),
                             Path(run_dir))
