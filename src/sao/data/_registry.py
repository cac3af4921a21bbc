"""The dataset registry: ``@DATASETS.register("name")`` on a builder, ``create_splits(name, ...)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sao._registry import Registry
from sao._validation import as_int
from sao.data._splits import Splits

__all__ = ["DATASETS", "DataOptions", "DatasetBuilder", "create_splits", "list_datasets"]


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
                  flatten: bool = True, *, augment: bool = True, image_size: int | None = None) -> Splits:
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

    Returns:
        The :class:`Splits`.

    Raises:
        ValueError: ``name`` is not registered (the message lists the registered names), or a bad
            ``image_size``.
        FileNotFoundError: the dataset's files are not under ``root`` and ``download`` is off.

    >>> splits = create_splits("mnist5k")
    >>> len(splits.train), len(splits.val), len(splits.test), splits.input_shape
    (3500, 500, 1000, (1024,))
    """
    builder = DATASETS.get(name)
    options = DataOptions(augment=bool(augment), image_size=image_size)
    return builder(None if root is None else Path(root), bool(download), bool(flatten), options)


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    return DATASETS.names()
