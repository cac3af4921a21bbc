"""Datasets for the experiments: a registry of fixed train / validation / test splits.

``create_splits(name)`` builds a registered dataset's :class:`Splits`; ``loaders(splits, ...)``
(or ``splits.loaders(...)``) makes the seeded data loaders. Registering a dataset is one
decorator on a builder ``(root, download, flatten) -> Splits``, or
``(root, download, flatten, options) -> Splits`` to honour :class:`DataOptions`
(``create_splits(..., augment=, image_size=)``)::

    @sao.data.DATASETS.register("my-data")
    def my_data(root, download, flatten, options): ...

Registered: ``mnist5k`` (embedded, default), ``mnist``, ``cifar10``, ``cifar100``, ``cinic10``.
"""

from sao._extras import require_extra

require_extra(__name__)  # the experiments extra, before any module that needs it

from sao.data._images import (  # registers "cifar10", "cifar100" and "cinic10"
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    CINIC10_CLASSES,
    CINIC10_MEAN,
    CINIC10_STD,
    ImageArrayDataset,
    cifar10,
    cifar100,
    cifar_val_size,
    cinic10,
    image_transforms,
)
from sao.data._mnist import (  # registers "mnist5k" and "mnist"
    MNIST_MEAN,
    MNIST_STD,
    SPLIT_SEED,
    mnist,
    mnist5k,
    mnist_val_size,
    preprocess_mnist,
    resize_images,
)
from sao.data._registry import (
    DATASETS,
    NORMALIZATIONS,
    STD_FLOOR,
    DataOptions,
    DatasetBuilder,
    create_splits,
    list_datasets,
    standardize_features,
)
from sao.data._splits import ShardedBatchSampler, Splits, loaders, stratified_split

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CINIC10_CLASSES",
    "CINIC10_MEAN",
    "CINIC10_STD",
    "DATASETS",
    "MNIST_MEAN",
    "MNIST_STD",
    "NORMALIZATIONS",
    "SPLIT_SEED",
    "STD_FLOOR",
    "DataOptions",
    "DatasetBuilder",
    "ImageArrayDataset",
    "ShardedBatchSampler",
    "Splits",
    "cifar10",
    "cifar100",
    "cifar_val_size",
    "cinic10",
    "create_splits",
    "image_transforms",
    "list_datasets",
    "loaders",
    "mnist",
    "mnist5k",
    "mnist_val_size",
    "preprocess_mnist",
    "resize_images",
    "standardize_features",
    "stratified_split",
]
