"""The dataset registry: ``@DATASETS.register("name")`` on a builder, ``create_splits(name, ...)``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sao._registry import Registry
from sao.data._splits import Splits

__all__ = ["DATASETS", "DatasetBuilder", "create_splits", "list_datasets"]

#: A builder takes ``(root, download, flatten)`` and returns the dataset's fixed splits.
DatasetBuilder = Callable[[Path | None, bool, bool], Splits]

DATASETS: Registry[DatasetBuilder] = Registry("dataset", "sao.data.DATASETS")


def create_splits(name: str = "mnist5k", root: str | Path | None = None, download: bool = False,
                  flatten: bool = True) -> Splits:
    """Build the train / validation / test splits of the registered dataset ``name``.

    The splits are fixed: they never depend on a run's seed, so every run of every method
    is scored on the same test digits and tuned on the same validation digits (the
    reference code validated on the test set; we never do). The seed only orders the
    training batches (see :func:`sao.data.loaders`).

    Args:
        name: a registered dataset (``list_datasets()``); default ``"mnist5k"``.
        root: folder holding the files of datasets read from disk (``--data-root``);
            embedded datasets (``mnist5k``) ignore it. Default ``None``.
        download: allow fetching missing files from the internet. Default ``False``.
        flatten: inputs as vectors (``(1024,)`` for MNIST, for FNN-N) rather than images
            (``(1, 32, 32)``). Default ``True``.

    Returns:
        The :class:`Splits`.

    Raises:
        ValueError: ``name`` is not registered (the message lists the registered names).
        FileNotFoundError: the dataset's files are not under ``root`` and ``download`` is off.

    >>> splits = create_splits("mnist5k")
    >>> len(splits.train), len(splits.val), len(splits.test), splits.input_shape
    (3500, 500, 1000, (1024,))
    """
    builder = DATASETS.get(name)
    return builder(None if root is None else Path(root), bool(download), bool(flatten))


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    return DATASETS.names()
