"""Paper Tables 8–12: sparse convolutional networks — vanilla CNN-N, CNN-ECO and LipConvNet-N.

One run = one (method, sparsity, depth, seed) of a table. The model comes from
:data:`sao.models.MODELS`, every conv Delta-orthogonal (vanilla CNN; mirrored for ReLU) or ECO/SOC
(CNN-ECO, LipConvNet), then made sparse by the method with the first conv and the classifier
dense (paper §V-B). On models sparse at construction (CNN-ECO, LipConvNet) ``sao`` means SAO-ECO,
built into the ECO layers, and the pruning baselines prune whole kernels of the ECO layers
(:mod:`sao.methods.prune_methods`). Training follows :mod:`sao.experiments.protocol`.

Settings (paper §V-B): SGD, momentum 0.9, batch 128, lr 0.01 (the paper states it for Table 11
and not for the others; we use it throughout), weight decay 1e-4 (5e-4 for LipConvNet), ×0.1 at
25 % and 75 % of the epochs (the paper's 50/150 of 200), cosine with one warm-up epoch for
CINIC-10 and CIFAR-100. The presets (``sao reproduce table8 --help``):

- ``quick`` — minutes on 2 CPU cores: MNIST-5k as 1×32×32 images, no augmentation, shallow
  and narrow models (width 16), 3 epochs at a constant lr; proves the whole path.
- ``cpu`` — the largest honest comparison for a few CPU hours: MNIST-5k images, width 32, the
  table's deepest depth that fits, high sparsity (87.5 % and 96.875 %; width 64 where ReLU's
  mirrored construction needs degree ≥ 2), 10 epochs, cosine lr.
- ``paper`` — the paper's dataset, depths, widths and 200 epochs (``--data-root``; a GPU job).
"""

from __future__ import annotations

from sao.experiments.config import MethodConfig, ModelConfig, RunConfig
from sao.experiments.spec import EXPERIMENTS, ExperimentSpec, Preset
from sao.training import TrainConfig

__all__ = ["CNN_TABLES", "VANILLA_METHODS"]

VANILLA_METHODS = ("dense", "sao", "lmp-s", "lmp-t", "rg-s", "rg-t")
T9_SPARSITIES = (0.5, 0.75, 0.875, 0.96875)


def _quick(methods: tuple[str, ...], depths: tuple[int, ...] = (8,), width: int = 16,
           sparsities: tuple[float, ...] = (0.5, 0.75), epochs: int = 3) -> Preset:
    return Preset(methods, depths, epochs=epochs, sparsities=sparsities, dataset="mnist5k", width=width,
                  augment=False, schedule="constant", warmup_epochs=0,
                  description=f"minutes on 2 CPU cores: MNIST-5k images, width {width}, {epochs} epochs")


def _cpu(methods: tuple[str, ...], depths: tuple[int, ...], sparsities: tuple[float, ...] = (0.875, 0.96875),
         width: int = 32) -> Preset:
    return Preset(methods, depths, epochs=10, sparsities=sparsities, dataset="mnist5k", width=width, augment=False,
                  schedule="cosine", warmup_epochs=0,
                  description=f"a few CPU hours: MNIST-5k images, width {width}, high sparsity, 10 epochs")


def _paper(depths: tuple[int, ...], methods: tuple[str, ...], sparsities: tuple[float, ...], dataset: str,
           width: int | None = None) -> Preset:
    return Preset(methods, depths, epochs=200, sparsities=sparsities, dataset=dataset, width=width, augment=True,
                  description=f"the paper's grid on {dataset} (--data-root), 200 epochs (a GPU job)")


def _table(name: str, title: str, model: str, activation: str, presets: dict[str, Preset], *, head: str | None = None,
           schedule: str = "multistep", weight_decay: float = 1e-4, width: int = 128,
           known: dict[tuple[str, int], float] | None = None) -> ExperimentSpec:
    """A CNN table: its model and settings (the paper's) and its presets."""
    warmup = 1 if schedule == "cosine" else 0  # CINIC-10 / CIFAR-100 (paper §V-B)
    base = RunConfig(model=ModelConfig(model, width=width, activation=activation, head=head),
                     method=MethodConfig(sparsity=0.5),  # sao train's default target; presets set their own
                     train=TrainConfig(lr=0.01, schedule=schedule, warmup_epochs=warmup, weight_decay=weight_decay),
                     experiment=name)
    return ExperimentSpec(title, base, presets, milestones_at=(0.25, 0.75), known=known or {},
                          dataset=presets["paper"].dataset)


def _known(depths: tuple[int, ...], rows: dict[str, tuple[float, ...]]) -> dict[tuple[str, int], float]:
    return {(row, d): v for row, values in rows.items() for d, v in zip(depths, values, strict=True)}


#: Table 9 (CINIC-10) as the paper's text kept it.
KNOWN_T9 = _known((8, 16, 32, 128), {
    "dense": (81.32, 81.23, 81.47, 77.94),
    "sao 50%": (79.78, 80.35, 80.37, 75.87), "lmp-s 50%": (79.54, 80.32, 80.12, 75.97),
    "sao 75%": (77.08, 77.16, 78.83, 73.72), "lmp-s 75%": (76.90, 78.25, 78.03, 10.00),
    "sao 87.5%": (73.57, 75.70, 76.63, 71.05), "lmp-s 87.5%": (72.94, 74.11, 10.00, 10.00),
    "sao 96.875%": (64.66, 66.51, 68.45, 65.48), "lmp-s 96.875%": (10.00,) * 4})

#: Table 11 (CIFAR-10, LipConvNet-N) as the paper's text kept it.
KNOWN_T11 = _known((5, 10, 15), {
    "dense": (80.15, 78.75, 79.04),
    "lmp-s 50%": (79.04, 79.10, 78.68), "lmp-t 50%": (79.36, 79.37, 79.08),
    "rg-s 50%": (78.38, 78.56, 74.13), "rg-t 50%": (79.84, 79.73, 79.20), "sao 50%": (78.81, 78.44, 77.35),
    "lmp-t 87.5%": (75.46, 10.0, 10.0), "rg-t 87.5%": (77.19, 10.0, 10.0), "sao 87.5%": (76.77, 75.24, 75.26),
    "lmp-t 93.75%": (73.27, 10.0, 10.0), "sao 93.75%": (75.86, 73.44, 73.53),
    "lmp-t 96.875%": (70.80, 10.0, 10.0), "sao 96.875%": (73.39, 72.51, 72.00),
    "sao 98.4375%": (72.45, 70.01, 70.79)})

CNN_TABLES: dict[str, ExperimentSpec] = {
    "table8": _table("table8", "Table 8: vanilla CNN-N on CIFAR-10", "cnn", "relu", {
        "quick": _quick(("dense", "sao", "lmp-s", "rg-s")),
        "cpu": _cpu(("dense", "sao", "lmp-s"), depths=(32, 128), width=64),
        "paper": _paper((32, 128, 256, 512, 768), VANILLA_METHODS, (0.5, 0.96875), "cifar10")}, head="pool"),
    "table9": _table("table9", "Table 9: vanilla CNN-N on CINIC-10", "cnn", "relu", {
        "quick": _quick(("dense", "sao", "lmp-s")),
        "cpu": _cpu(("dense", "sao", "lmp-s"), depths=(32,), width=64),
        "paper": _paper((8, 16, 32, 128), ("dense", "sao", "lmp-s"), T9_SPARSITIES, "cinic10")},
        head="conv", schedule="cosine", known=KNOWN_T9),
    "table10": _table("table10", "Table 10: vanilla CNN-N on CIFAR-100", "cnn", "relu", {
        "quick": _quick(("dense", "sao")),
        "cpu": _cpu(("dense", "sao"), depths=(8, 16, 32), width=64),
        "paper": _paper((8, 16, 32), ("dense", "sao"), T9_SPARSITIES, "cifar100")},
        head="conv", schedule="cosine"),
    "table11": _table("table11", "Table 11: LipConvNet-N on CIFAR-10", "lipconvnet", "maxmin", {
        "quick": _quick(("dense", "sao", "lmp-s"), depths=(5,), width=16, sparsities=(0.5,), epochs=2),
        "cpu": _cpu(("dense", "sao", "lmp-s", "lmp-t"), depths=(5, 10), width=16),
        "paper": _paper((5, 10, 15), ("dense", "lmp-s", "lmp-t", "rg-s", "rg-t", "sao"),
                        (0.5, 0.875, 0.9375, 0.96875, 0.984375), "cifar10", width=32)},
        weight_decay=5e-4, width=32, known=KNOWN_T11),
    "table12": _table("table12", "Table 12: CNN-ECO on CINIC-10", "cnn_eco", "relu", {
        "quick": _quick(("dense", "sao")),
        "cpu": _cpu(("dense", "sao"), depths=(8, 16)),
        "paper": _paper((8, 16, 32, 128), ("dense", "sao"), T9_SPARSITIES, "cinic10")},
        schedule="cosine"),
}
for _name, _spec in CNN_TABLES.items():
    EXPERIMENTS.register(_name, _spec)
