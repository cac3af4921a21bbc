"""The dataset registry: ``@DATASETS.register("name")`` on a builder, ``create_splits(name, ...)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from sao._registry import Registry
from sao._validation import as_int
from sao.data._splits import Splits

__all__ = ["DATASETS", "NORMALIZATIONS", "STD_FLOOR", "DataOptions", "DatasetBuilder", "create_splits", "list_datasets",
           "standardize_features"]

#: How inputs are normalised: ``"dataset"``, the dataset's own statistics (MNIST: the global pixel
#: mean and std; CIFAR / CINIC: per channel), or ``"feature"``, every input feature to mean 0 and
#: std 1 over the training split (:func:`standardize_features`).
NORMALIZATIONS = ("dataset", "feature")

#: :func:`standardize_features` divides by at least this fraction of the median feature std.
STD_FLOOR = 0.1


@dataclass(frozen=True)
class DataOptions:
    """Options of a dataset's inputs beyond ``flatten``, the fourth argument of every builder.

    Attributes:
        augment: apply the dataset's training augmentation, if it has one (CIFAR / CINIC: random
            crop, flip, AutoAugment). Only the training split is ever augmented. Default ``True``.
        image_size: resize the images to ``image_size × image_size`` (after any augmentation);
            ``None`` keeps the native size (32 for every registered dataset). Default ``None``.

    Raises:
        TypeError: ``image_size`` is neither ``None`` nor an integer (``int``, numpy integer or
            0-d integer tensor; stored as ``int``).
        ValueError: ``image_size`` is below 1.
    """

    augment: bool = True
    image_size: int | None = None

    def __post_init__(self) -> None:
        if self.image_size is not None:
            size = as_int(self.image_size, "image_size")
            if size < 1:
                raise ValueError(f"image_size must be None (native size) or an integer >= 1, got {size!r}")
            object.__setattr__(self, "image_size", size)


#: A builder takes ``(root, download, flatten, options)`` and returns the dataset's fixed splits;
#: ``options`` is a :class:`DataOptions` (a builder without augmentation or resizing may ignore it).
DatasetBuilder = Callable[[Path | None, bool, bool, DataOptions], Splits]

DATASETS: Registry[DatasetBuilder] = Registry("dataset", "sao.data.DATASETS")


def create_splits(name: str = "mnist5k", root: str | Path | None = None, download: bool = False,
                  flatten: bool = True, *, augment: bool = True, image_size: int | None = None,
                  normalize: str = "dataset") -> Splits:
    """Build the train / validation / test splits of the registered dataset ``name``.

    The splits are fixed: they never depend on a run's seed, so every run of every method
    is scored on the same test examples and tuned on the same validation examples (the
    reference code validated on the test set; we never do). The seed only orders the
    training batches (see :func:`sao.data.loaders`) and, with augmentation, draws the random
    transformations from torch's RNG.

    Args:
        name: a registered dataset (``list_datasets()``); default ``"mnist5k"``.
        root: folder holding the files of datasets read from disk (``--data-root``);
            embedded datasets (``mnist5k``) ignore it. Default ``None``.
        download: allow fetching missing files from the internet. Default ``False``.
        flatten: inputs as vectors (``(1024,)`` for MNIST, for FNN-N) rather than images
            (``(1, 32, 32)``; ``(3, 32, 32)`` for CIFAR / CINIC — pass ``False`` for CNNs). Default ``True``.
        augment: apply the dataset's training augmentation, if it has one (keyword only;
            see :class:`DataOptions`). Default ``True``.
        image_size: resize images to this side length, e.g. 36 for CNN-ECO (keyword only).
            Default ``None``: native size.
        normalize: one of :data:`NORMALIZATIONS` (keyword only). Default ``"dataset"``.

    Returns:
        The :class:`Splits`.

    Raises:
        ValueError: ``name`` is not registered (the message lists the registered names), a bad
            ``image_size`` or ``normalize``, or ``normalize="feature"`` for a dataset whose examples
            are made on the fly (the image datasets: their transforms normalise per channel).
        FileNotFoundError: the dataset's files are not under ``root`` and ``download`` is off.

    >>> splits = create_splits("mnist5k")
    >>> len(splits.train), len(splits.val), len(splits.test), splits.input_shape
    (3500, 500, 1000, (1024,))
    """
    builder = DATASETS.get(name)
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r} is not known; choose from {', '.join(NORMALIZATIONS)}")
    options = DataOptions(augment=bool(augment), image_size=image_size)
    splits = builder(None if root is None else Path(root), bool(download), bool(flatten), options)
    return standardize_features(splits) if normalize == "feature" else splits


def standardize_features(splits: Splits) -> Splits:
    """``splits`` with every input feature shifted and scaled to mean 0, std 1 over the training split.

    The statistics come from the training examples only and are applied to all three splits; a
    feature constant in the training data (MNIST's border pixels) becomes 0 everywhere. A feature
    almost constant there (a pixel lit in one training image) is divided by a floor instead of its
    std, :data:`STD_FLOOR` times the median std of the varying features, so it cannot turn into an
    input in the thousands at test time (MNIST-5k: at most 45 instead of 5,500).

    Raises:
        ValueError: a split is not a ``TensorDataset`` of ``(inputs, labels)`` (datasets whose
            examples are made on the fly by transforms, such as the image datasets).

    >>> s = standardize_features(create_splits("mnist5k"))
    >>> x = s.train.tensors[0]
    >>> round(x.mean().item(), 6), round(x.std(0).max().item(), 4), x[:, 0].abs().max().item(), x.abs().max() < 50
    (0.0, 1.0, 0.0, tensor(True))
    """
    parts = (splits.train, splits.val, splits.test)
    if not all(isinstance(p, TensorDataset) and len(p.tensors) == 2 for p in parts):
        raise ValueError(f"normalize='feature' needs a dataset held in tensors (mnist5k, mnist); {splits.name!r} makes "
                         "its examples on the fly — use normalize='dataset'")
    x = splits.train.tensors[0].to(torch.float64)
    mean, std = x.mean(0), x.std(0)
    varying = std > 0
    floor = STD_FLOOR * std[varying].median() if varying.any() else 0.0
    scale = torch.where(varying, 1.0 / torch.clamp(std, min=floor), torch.zeros_like(std))

    def standardized(part: TensorDataset) -> TensorDataset:
        inputs, labels = part.tensors
        return TensorDataset(((inputs.to(torch.float64) - mean) * scale).to(inputs.dtype), labels)

    return Splits(splits.name, *(standardized(p) for p in parts), splits.num_classes, splits.input_shape)


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    return DATASETS.names()
