"""Colour image datasets for the CNN experiments (paper Tables 8–12): CIFAR-10, CIFAR-100, CINIC-10.

All three are 32 × 32 RGB images read from disk under ``root`` (``--data-root``):

- ``cifar10`` / ``cifar100``: the python-pickle folders ``cifar-10-batches-py/`` and
  ``cifar-100-python/`` (the extracted official archives), read by ``torchvision.datasets``.
  Validation is a fixed stratified :func:`cifar_val_size` (5,000) of the 50,000 training images,
  drawn with ``SPLIT_SEED`` (never a run's seed); the official test set is only ever the test split.
- ``cinic10``: CINIC-10's published layout ``cinic-10/{train,valid,test}/<class>/*.png`` read by
  ``torchvision.datasets.ImageFolder``; CINIC's own ``valid`` split is the validation set.

Training images go through random crop 32 (padding 4), horizontal flip and AutoAugment (CIFAR-10
policy) unless ``augment`` is off, then an optional resize, ``ToTensor`` and per-dataset
normalisation (:func:`image_transforms`); validation and test images are only resized and normalised.
The random draws come from torch's global RNG (in loader worker processes: from per-worker seeds the
loader derives from its seeded generator), so seeding torch reproduces them.

**Integrity.** torchvision checks the MD5 of every extracted CIFAR file against the official one,
which no small test file can match. The readers here are torchvision's ``CIFAR10`` / ``CIFAR100``
with their file lists' checksums set to ``None``, which torchvision's own ``check_integrity`` treats
as "the file exists": the pickle reading is torchvision's, unchanged; a download still verifies the
MD5 of the archive. Instead of checksums the builders check the structure of what was read
(``32 × 32 × 3`` uint8 images, one label in range per image, the class-name count).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from sao.data._mnist import SPLIT_SEED
from sao.data._registry import DATASETS, DataOptions
from sao.data._splits import Splits, stratified_split

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CINIC10_CLASSES",
    "CINIC10_MEAN",
    "CINIC10_STD",
    "NATIVE_SIZE",
    "ImageArrayDataset",
    "cifar10",
    "cifar100",
    "cifar_val_size",
    "cinic10",
    "image_transforms",
]

NATIVE_SIZE = 32  # side length of every image of these datasets

# Per-channel (R, G, B) mean and std of the training images with pixels in [0, 1]. CIFAR-10 and CIFAR-100:
# the values the paper's reference code (kiaraesguerra/SAO, dataloaders/dataloaders.py) normalises with;
# the CIFAR-10 ones are the common exact statistics of its 50,000 training images. CINIC-10: the values
# published in the dataset's README (Darlow et al. 2018, github.com/BayesWatch/cinic-10).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
CINIC10_MEAN = (0.47889522, 0.47227842, 0.43047404)
CINIC10_STD = (0.24205776, 0.23828046, 0.25874835)

#: CINIC-10's class folders: the CIFAR-10 classes, in label order (``ImageFolder`` sorts them by name).
CINIC10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """One image as a vector (module level, so the transform pickles for loader workers)."""
    return x.reshape(-1)


def image_transforms(mean: Sequence[float], std: Sequence[float], *, augment: bool = True,
                     image_size: int | None = None, flatten: bool = False) -> tuple[Callable, Callable]:
    """The ``(train, eval)`` transforms of a 32 × 32 RGB PIL image into a normalised ``float32`` tensor.

    ``train``: ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``,
    ``AutoAugment(AutoAugmentPolicy.CIFAR10)`` (all three only with ``augment``), then the ``eval``
    steps. ``eval``: ``Resize((s, s))`` when ``image_size = s`` differs from 32, ``ToTensor()``,
    ``Normalize(mean, std)``, and a flatten with ``flatten``. Without ``augment`` the two are equal.

    Args:
        mean: per-channel mean of the pixels in ``[0, 1]``.
        std: per-channel std.
        augment: include the random training augmentation. Default ``True``.
        image_size: side length after the augmentation; ``None``: native 32. Default ``None``.
        flatten: return ``(3·s²,)`` vectors rather than ``(3, s, s)`` images. Default ``False``.

    Returns:
        ``(train, eval)``: ``torchvision.transforms.Compose`` objects (picklable).

    >>> from PIL import Image
    >>> train, test = image_transforms(CIFAR10_MEAN, CIFAR10_STD, image_size=36)
    >>> train(Image.new("RGB", (32, 32))).shape, test(Image.new("RGB", (32, 32))).shape
    (torch.Size([3, 36, 36]), torch.Size([3, 36, 36]))
    """
    from torchvision import transforms as T

    def tail() -> list[Any]:
        resize = [] if image_size in (None, NATIVE_SIZE) else [T.Resize((image_size, image_size))]
        return [*resize, T.ToTensor(), T.Normalize(mean, std), *([T.Lambda(_flatten)] if flatten else [])]

    randomised = [T.RandomCrop(NATIVE_SIZE, padding=4), T.RandomHorizontalFlip(),
                  T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)] if augment else []
    return T.Compose(randomised + tail()), T.Compose(tail())


class ImageArrayDataset(Dataset):
    """Images held in memory, each returned as ``(transform(PIL image), label)``.

    Several instances may share one array (train and validation subsets of the same training file
    with different transforms) without copying it. ``__getitem__`` does what torchvision's CIFAR
    datasets do: ``Image.fromarray(data[i])``, then the transform.

    Args:
        data: ``uint8`` images ``(n, h, w, 3)``.
        targets: ``n`` integer labels.
        transform: applied to each PIL image.
        classes: the class names, in label order.
    """

    def __init__(self, data: np.ndarray, targets: np.ndarray, transform: Callable,
                 classes: Sequence[str] = ()) -> None:
        self.data, self.targets, self.transform, self.classes = data, targets, transform, list(classes)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(Image.fromarray(self.data[index])), int(self.targets[index])


@dataclass(frozen=True)
class _Spec:
    """What distinguishes one image dataset: name, title for messages, normalisation, classes."""

    name: str
    title: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int


_CIFAR10 = _Spec("cifar10", "CIFAR-10", CIFAR10_MEAN, CIFAR10_STD, 10)
_CIFAR100 = _Spec("cifar100", "CIFAR-100", CIFAR100_MEAN, CIFAR100_STD, 100)
_CINIC10 = _Spec("cinic10", "CINIC-10", CINIC10_MEAN, CINIC10_STD, 10)


def _need_root(spec: _Spec, root: Path | None, layout: str) -> Path:
    if root is None:
        raise ValueError(f"dataset {spec.name!r} is read from disk: pass root (--data-root) as the folder that "
                         f"holds {layout}")
    return Path(root)


def _shape_and_transforms(spec: _Spec, flatten: bool, options: DataOptions) -> tuple[tuple[int, ...], Callable,
                                                                                        Callable]:
    side = options.image_size or NATIVE_SIZE
    train_tf, eval_tf = image_transforms(spec.mean, spec.std, augment=options.augment,
                                         image_size=options.image_size, flatten=flatten)
    return ((3 * side * side,) if flatten else (3, side, side)), train_tf, eval_tf


# --- CIFAR ------------------------------------------------------------------------------------------------------


@functools.cache
def _cifar_reader(name: str) -> type:
    """torchvision's ``CIFAR10`` / ``CIFAR100`` whose integrity check only requires the files to exist.

    torchvision's ``check_integrity(path, md5)`` returns "file exists" for ``md5=None``; everything else,
    the pickle reading included, is torchvision's own code. ``tgz_md5`` is kept, so a download verifies
    the archive. Built lazily: importing torchvision takes a second or two.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    base = {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]
    return type(f"PresenceChecked{base.__name__}", (base,), {
        "__doc__": f"torchvision's {base.__name__} checking that its files exist instead of their MD5.",
        "train_list": [[file, None] for file, _ in base.train_list],
        "test_list": [[file, None] for file, _ in base.test_list],
        "meta": {**base.meta, "md5": None},
    })


def cifar_val_size(n_train: int) -> int:
    """Validation size for ``n_train`` CIFAR training images: ``min(5000, n_train // 10)``.

    5,000 of the official 50,000, and the same 1/10 share for smaller files (e.g. 10 of 100).
    """
    return min(5000, n_train // 10)


def _read_cifar(spec: _Spec, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images ``uint8 (n, 32, 32, 3)``, labels ``int64 (n,)`` and class names of one CIFAR file set."""
    reader = _cifar_reader(spec.name)
    try:
        ds = reader(str(root), train=train, download=download)
    except RuntimeError:  # torchvision's "Dataset not found or corrupted" (here: a file is missing)
        if download:
            raise
        files = [f for f, _ in reader.train_list + reader.test_list] + [reader.meta["filename"]]
        folder = root / reader.base_folder
        raise FileNotFoundError(f"{spec.title} files not found under {folder}: --data-root must be a folder "
                                f"containing {reader.base_folder}/{{{', '.join(files)}}} (the extracted "
                                f"{reader.filename}); or allow downloading them (download=True)") from None
    data, targets = np.ascontiguousarray(ds.data), np.asarray(ds.targets, dtype=np.int64)
    if data.dtype != np.uint8 or data.shape[1:] != (NATIVE_SIZE, NATIVE_SIZE, 3) or len(targets) != len(data):
        raise ValueError(f"{spec.title} files under {root / reader.base_folder} hold {data.dtype} images of shape "
                         f"{data.shape[1:]} and {len(targets)} labels for {len(data)} images; expected uint8 "
                         "32 × 32 × 3 images with one label each")
    labels_ok = len(targets) == 0 or (targets.min() >= 0 and targets.max() < spec.num_classes)
    if len(ds.classes) != spec.num_classes or not labels_ok:
        span = f"[{targets.min()}, {targets.max()}]" if len(targets) else "none"
        raise ValueError(f"{spec.title} files under {root / reader.base_folder} name {len(ds.classes)} classes, "
                         f"labels {span}; expected {spec.num_classes} classes, labels in [0, {spec.num_classes - 1}]")
    return data, targets, list(ds.classes)


def _cifar(spec: _Spec, root: Path | None, download: bool, flatten: bool, options: DataOptions | None) -> Splits:
    options = options or DataOptions()
    folder = _cifar_reader(spec.name).base_folder
    root = _need_root(spec, root, f"{folder}/")
    train_x, train_y, classes = _read_cifar(spec, root, True, download)
    test_x, test_y, _ = _read_cifar(spec, root, False, download)
    shape, train_tf, eval_tf = _shape_and_transforms(spec, flatten, options)
    val, train = stratified_split(torch.from_numpy(train_y), cifar_val_size(len(train_y)),
                                  torch.Generator().manual_seed(SPLIT_SEED))
    # Two views of the same in-memory training images: augmented for training, plain for validation.
    train_set = Subset(ImageArrayDataset(train_x, train_y, train_tf, classes), train.tolist())
    val_set = Subset(ImageArrayDataset(train_x, train_y, eval_tf, classes), val.tolist())
    test_set = ImageArrayDataset(test_x, test_y, eval_tf, classes)
    return Splits(spec.name, train_set, val_set, test_set, spec.num_classes, shape)


@DATASETS.register("cifar10")
def cifar10(root: Path | None = None, download: bool = False, flatten: bool = True,
            options: DataOptions | None = None) -> Splits:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10``, read from ``root/cifar-10-batches-py/``.

    Splits: test = the official 10,000 test images, in file order; validation = a stratified
    :func:`cifar_val_size` (5,000, 500 per class) of the 50,000 training images, fixed by ``SPLIT_SEED``;
    train = the other 45,000. Train and validation are disjoint and together the whole training file.

    Args:
        root: folder holding ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` (``--data-root``).
        download: fetch and extract the archive into ``root`` when files are missing. Default ``False``.
        flatten: inputs ``(3072,)`` rather than ``(3, 32, 32)``. Default ``True`` (pass ``False`` for CNNs).
        options: ``augment`` the training split (:func:`image_transforms`), ``image_size``. Default ``None``:
            ``DataOptions()``.

    Returns:
        The :class:`Splits`, named ``"cifar10"``: items ``(float32 image, int label)``, 10 classes.

    Raises:
        ValueError: ``root`` is ``None``, or the files do not hold CIFAR-10-shaped data.
        FileNotFoundError: a file is missing and ``download`` is off.
    """
    return _cifar(_CIFAR10, root, download, flatten, options)


@DATASETS.register("cifar100")
def cifar100(root: Path | None = None, download: bool = False, flatten: bool = True,
             options: DataOptions | None = None) -> Splits:
    """CIFAR-100 (fine labels) through ``torchvision.datasets.CIFAR100``, read from ``root/cifar-100-python/``.

    Splits: test = the official 10,000 test images, in file order; validation = a stratified
    :func:`cifar_val_size` (5,000, 50 per class) of the 50,000 training images, fixed by ``SPLIT_SEED``;
    train = the other 45,000.

    Args:
        root: folder holding ``cifar-100-python/{train, test, meta}`` (``--data-root``).
        download: fetch and extract the archive into ``root`` when files are missing. Default ``False``.
        flatten: inputs ``(3072,)`` rather than ``(3, 32, 32)``. Default ``True`` (pass ``False`` for CNNs).
        options: ``augment`` the training split (:func:`image_transforms`), ``image_size``. Default ``None``:
            ``DataOptions()``.

    Returns:
        The :class:`Splits`, named ``"cifar100"``: items ``(float32 image, int label)``, 100 classes.

    Raises:
        ValueError: ``root`` is ``None``, or the files do not hold CIFAR-100-shaped data.
        FileNotFoundError: a file is missing and ``download`` is off.
    """
    return _cifar(_CIFAR100, root, download, flatten, options)


# --- CINIC-10 ---------------------------------------------------------------------------------------------------

_CINIC_SPLITS = ("train", "valid", "test")
_CINIC_LAYOUT = "cinic-10/{train,valid,test}/<class>/*.png"


def _cinic_folder(root: Path) -> Path:
    """``root/cinic-10`` or ``root`` itself, whichever holds the three split folders."""
    for folder in (root / "cinic-10", root):
        if all((folder / split).is_dir() for split in _CINIC_SPLITS):
            return folder
    raise FileNotFoundError(f"CINIC-10 not found under {root}: --data-root must be a folder containing "
                            f"{_CINIC_LAYOUT} (CINIC-10's published layout), or that cinic-10 folder itself. "
                            "CINIC-10 is not downloaded automatically: extract CINIC-10.tar.gz from "
                            "github.com/BayesWatch/cinic-10 into a folder named cinic-10")


@DATASETS.register("cinic10")
def cinic10(root: Path | None = None, download: bool = False, flatten: bool = True,
            options: DataOptions | None = None) -> Splits:
    """CINIC-10 through ``torchvision.datasets.ImageFolder``, read from ``root/cinic-10/{train,valid,test}/``.

    Splits are CINIC-10's own: train (90,000 images), valid (90,000; the validation split) and test
    (90,000), each with the 10 CIFAR-10 class folders (labels in :data:`CINIC10_CLASSES` order).

    Args:
        root: folder holding ``cinic-10/`` (``--data-root``), or the ``cinic-10`` folder itself.
        download: ignored: CINIC-10 is never downloaded (there is no torchvision downloader).
        flatten: inputs ``(3072,)`` rather than ``(3, 32, 32)``. Default ``True`` (pass ``False`` for CNNs).
        options: ``augment`` the training split (:func:`image_transforms`), ``image_size``. Default ``None``:
            ``DataOptions()``.

    Returns:
        The :class:`Splits`, named ``"cinic10"``: items ``(float32 image, int label)``, 10 classes.

    Raises:
        ValueError: ``root`` is ``None``; class folders other than the CIFAR-10 classes; images not 32 × 32.
        FileNotFoundError: the split folders are missing, or a class folder holds no image.
    """
    from torchvision.datasets import ImageFolder

    options = options or DataOptions()
    folder = _cinic_folder(_need_root(_CINIC10, root, _CINIC_LAYOUT))
    shape, train_tf, eval_tf = _shape_and_transforms(_CINIC10, flatten, options)
    sets = {split: ImageFolder(str(folder / split), transform=train_tf if split == "train" else eval_tf)
            for split in _CINIC_SPLITS}
    for split, ds in sets.items():
        if tuple(ds.classes) != CINIC10_CLASSES:
            raise ValueError(f"CINIC-10 {split} folder {folder / split} has the class folders {ds.classes}; "
                             f"expected {list(CINIC10_CLASSES)}")
        with Image.open(ds.samples[0][0]) as first:
            if first.size != (NATIVE_SIZE, NATIVE_SIZE):
                raise ValueError(f"CINIC-10 images are 32 × 32; {ds.samples[0][0]} is {first.size[0]} × "
                                 f"{first.size[1]}")
    return Splits("cinic10", sets["train"], sets["valid"], sets["test"], 10, shape)
