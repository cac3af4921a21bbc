"""Datasets for the experiments: a registry of fixed train / validation / test splits.

``create_splits(name)`` builds a registered dataset's :class:`Splits`; ``loaders(splits, ...)``
(or ``splits.loaders(...)``) makes the seeded data loaders. Registering a dataset is one
decorator on a builder ``(root, download, flatten) -> Splits``::

    @sao.data.DATASETS.register("my-data")
    def my_data(root, download, flatten): ...
"""

from sao.data._mnist import (  # registers "mnist5k" and "mnist"
    MNIST_MEAN,
    MNIST_STD,
    SPLIT_SEED,
    mnist,
    mnist5k,
    mnist_val_size,
    preprocess_mnist,
)
from sao.data._registry import DATASETS, DatasetBuilder, create_splits, list_datasets
from sao.data._splits import ShardedBatchSampler, Splits, loaders, stratified_split

__all__ = [
    "DATASETS",
    "MNIST_MEAN",
    "MNIST_STD",
    "SPLIT_SEED",
    "DatasetBuilder",
    "ShardedBatchSampler",
    "Splits",
    "create_splits",
    "list_datasets",
    "loaders",
    "mnist",
    "mnist5k",
    "mnist_val_size",
    "preprocess_mnist",
    "stratified_split",
]
