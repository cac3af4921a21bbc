"""Tests of the image datasets of ``sao.data`` (CIFAR-10, CIFAR-100, CINIC-10) on small files in their real formats.

The CIFAR folders hold real python pickles (``data`` uint8 ``(n, 3072)``, ``labels`` / ``fine_labels``) read by
torchvision's own code; CINIC-10 is real PNG files in class folders read by ``ImageFolder``. Every image carries
its id in pixel (0, 0) (red = id mod 256, green = id // 256), so splits can be traced back to the files.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import TensorDataset

from sao.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    CINIC10_CLASSES,
    CINIC10_MEAN,
    CINIC10_STD,
    DATASETS,
    MNIST_MEAN,
    MNIST_STD,
    DataOptions,
    Splits,
    cifar_val_size,
    create_splits,
    image_transforms,
    list_datasets,
)

PER_BATCH, N_TEST10 = 20, 30  # CIFAR-10: 5 × 20 = 100 training images, 30 test images
N_TRAIN100, N_TEST100 = 1000, 150  # CIFAR-100: 10 per class


def make_images(ids: np.ndarray, seed: int) -> np.ndarray:
    """Random ``uint8 (n, 3, 32, 32)`` images whose pixel (0, 0) encodes the id (red low byte, green high byte)."""
    images = np.random.default_rng(seed).integers(0, 256, size=(len(ids), 3, 32, 32), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 1, 0, 0] = ids % 256, ids // 256
    return images


def write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """The official row format: 1024 red, then 1024 green, then 1024 blue values, each plane row-major."""
    return images.reshape(len(images), 3 * 32 * 32)


def ids_of(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Recover the ids from normalised ``(n, 3, h, w)`` images (their unaugmented pixel (0, 0))."""
    m, s = torch.tensor(mean[:2]), torch.tensor(std[:2])
    pix = torch.round((x[:, :2, 0, 0] * s + m) * 255).long()
    return pix[:, 0] + 256 * pix[:, 1]


def normalised(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """What the evaluation transform must give for raw ``uint8 (n, 3, 32, 32)`` images."""
    x = torch.from_numpy(images).float() / 255
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def stack(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """All items of a dataset as ``(inputs, labels)`` tensors, in order."""
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.tensor(ys)


# --- files in the real formats ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar10_files(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """``root/cifar-10-batches-py/`` with 5 training batches, the test batch and ``batches.meta``."""
    root = tmp_path_factory.mktemp("c10")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    train = make_images(np.arange(5 * PER_BATCH), seed=1)
    test = make_images(np.arange(5 * PER_BATCH, 5 * PER_BATCH + N_TEST10), seed=2)
    for b in range(5):
        ids = np.arange(b * PER_BATCH, (b + 1) * PER_BATCH)
        write_pickle(folder / f"data_batch_{b + 1}", {"batch_label": f"training batch {b + 1} of 5",
                                                      "labels": (ids % 10).tolist(), "data": cifar_rows(train[ids]),
                                                      "filenames": [f"{i}.png" for i in ids]})
    write_pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": cifar_rows(test),
                                         "labels": (np.arange(N_TEST10) % 10).tolist()})
    write_pickle(folder / "batches.meta", {"label_names": list(CINIC10_CLASSES), "num_cases_per_batch": PER_BATCH,
                                           "num_vis": 3072})
    return root, train, test


@pytest.fixture(scope="module")
def cifar100_files(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """``root/cifar-100-python/{train, test, meta}`` with fine and coarse labels."""
    root = tmp_path_factory.mktemp("c100")
    folder = root / "cifar-100-python"
    folder.mkdir()
    train = make_images(np.arange(N_TRAIN100), seed=3)
    test = make_images(np.arange(N_TRAIN100, N_TRAIN100 + N_TEST100), seed=4)
    for name, images, n in (("train", train, N_TRAIN100), ("test", test, N_TEST100)):
        fine = np.arange(n) % 100
        write_pickle(folder / name, {"data": cifar_rows(images), "fine_labels": fine.tolist(),
                                     "coarse_labels": (fine // 5).tolist(),
                                     "filenames": [f"{i}.png" for i in range(n)]})
    write_pickle(folder / "meta", {"fine_label_names": [f"class{c:02d}" for c in range(100)],
                                   "coarse_label_names": [f"super{c:02d}" for c in range(20)]})
    return root, train, test


CINIC_COUNTS = {"train": 3, "valid": 2, "test": 2}  # images per class in each split


@pytest.fixture(scope="module")
def cinic_files(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """``root/cinic-10/{train,valid,test}/<class>/<id>.png``; returns the images of each split in ImageFolder order."""
    root = tmp_path_factory.mktemp("cinic")
    images, next_id = {}, 0
    for s, (split, per_class) in enumerate(CINIC_COUNTS.items()):
        n = per_class * 10
        ids = np.arange(next_id, next_id + n)
        next_id += n
        imgs = make_images(ids, seed=10 + s)
        for i, img in enumerate(imgs):
            folder = root / "cinic-10" / split / CINIC10_CLASSES[i // per_class]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"cifar10-{split}-{ids[i]:05d}.png")
        images[split] = imgs  # class-major, names sorted within a class: ImageFolder's order
    return root, images


@pytest.fixture(scope="module")
def cifar10_plain(cifar10_files) -> Splits:
    return create_splits("cifar10", root=cifar10_files[0], flatten=False, augment=False)


# --- registry and options -----------------------------------------------------------------------------------------


def test_image_datasets_are_registered():
    assert {"cifar10", "cifar100", "cinic10", "mnist5k", "mnist"} <= set(list_datasets())


@pytest.mark.parametrize("size", [0, -3])
def test_bad_image_size_is_rejected(size):
    with pytest.raises(ValueError, match=r"image_size must be None .* or an integer >= 1"):
        DataOptions(image_size=size)


@pytest.mark.parametrize("size", [2.5, True, "36"])
def test_non_integer_image_size_is_a_type_error(size):
    with pytest.raises(TypeError, match="image_size must be an integer"):
        DataOptions(image_size=size)


def test_builders_with_options_receive_them():
    seen = []

    @DATASETS.register("toy-options")
    def toy(root, download, flatten, options):
        seen.append(options)
        ds = TensorDataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
        return Splits("toy-options", ds, ds, ds, 1, (2,))
    try:
        create_splits("toy-options", augment=False, image_size=40)
        assert seen == [DataOptions(augment=False, image_size=40)]
    finally:
        DATASETS._items.pop("toy-options")


# --- CIFAR-10 -----------------------------------------------------------------------------------------------------


def test_cifar10_sizes_shapes_and_labels(cifar10_plain):
    s = cifar10_plain
    assert (s.name, s.num_classes, s.input_shape) == ("cifar10", 10, (3, 32, 32))
    n_train = 5 * PER_BATCH
    assert cifar_val_size(n_train) == 10 and cifar_val_size(50_000) == 5000
    assert (len(s.train), len(s.val), len(s.test)) == (n_train - 10, 10, N_TEST10)
    for part in (s.train, s.val, s.test):
        x, y = stack(part)
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
        assert y.dtype == torch.int64 and y.min() >= 0 and y.max() <= 9


def test_cifar10_splits_trace_back_to_the_files(cifar10_files, cifar10_plain):
    _, train_imgs, test_imgs = cifar10_files
    ids = {}
    for part in ("train", "val", "test"):
        x, y = stack(getattr(cifar10_plain, part))
        ids[part] = ids_of(x, CIFAR10_MEAN, CIFAR10_STD)
        assert torch.equal(y, ids[part] % 10), "labels travel with their images"
    n_train = 5 * PER_BATCH
    assert torch.equal(ids["test"], torch.arange(n_train, n_train + N_TEST10)), "test = the test file, in order"
    assert torch.equal(torch.sort(torch.cat([ids["train"], ids["val"]])).values, torch.arange(n_train)), \
        "train and val partition the training files"
    assert torch.bincount(ids["val"] % 10, minlength=10).tolist() == [1] * 10, "val is stratified"
    # Without augmentation an image is exactly its file's pixels, scaled to [0, 1] and normalised.
    torch.testing.assert_close(stack(cifar10_plain.test)[0], normalised(test_imgs, CIFAR10_MEAN, CIFAR10_STD),
                               rtol=0, atol=1e-6)
    val_x = stack(cifar10_plain.val)[0]
    torch.testing.assert_close(val_x, normalised(train_imgs[ids["val"].numpy()], CIFAR10_MEAN, CIFAR10_STD),
                               rtol=0, atol=1e-6)


def test_cifar10_validation_split_is_fixed(cifar10_files, cifar10_plain):
    torch.manual_seed(123)  # a run's seed must not move the split
    again = create_splits("cifar10", root=str(cifar10_files[0]), flatten=False, augment=True)
    assert again.val.indices == cifar10_plain.val.indices and again.train.indices == cifar10_plain.train.indices


def test_cifar10_augmentation_is_random_and_seeded(cifar10_files, cifar10_plain):
    aug = create_splits("cifar10", root=cifar10_files[0], flatten=False)
    steps = [type(t).__name__ for t in aug.train.dataset.transform.transforms]
    assert steps == ["RandomCrop", "RandomHorizontalFlip", "AutoAugment", "ToTensor", "Normalize"]
    assert aug.train.dataset.transform.transforms[0].padding == 4
    assert str(aug.train.dataset.transform.transforms[2].policy) == "AutoAugmentPolicy.CIFAR10"

    def draws(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return torch.stack([aug.train[i][0] for i in range(8)])

    first = draws(0)
    assert torch.equal(first, draws(0)), "the same torch seed gives the same augmentation"
    assert not torch.equal(first, draws(1))
    plain = torch.stack([cifar10_plain.train[i][0] for i in range(8)])
    assert not torch.equal(first, plain), "training images are augmented"
    # Validation and test stay unaugmented even with augment=True.
    torch.testing.assert_close(stack(aug.val)[0], stack(cifar10_plain.val)[0], rtol=0, atol=0)
    torch.testing.assert_close(stack(aug.test)[0], stack(cifar10_plain.test)[0], rtol=0, atol=0)


def test_cifar10_resized_to_36(cifar10_files):
    s = create_splits("cifar10", root=cifar10_files[0], flatten=False, image_size=36)
    assert s.input_shape == (3, 36, 36)
    assert [type(t).__name__ for t in s.train.dataset.transform.transforms][2:4] == ["AutoAugment", "Resize"]
    for part in (s.train, s.val, s.test):
        x, _ = part[0]
        assert x.shape == (3, 36, 36) and torch.isfinite(x).all()


def test_cifar10_flattened(cifar10_files, cifar10_plain):
    s = create_splits("cifar10", root=cifar10_files[0], augment=False)
    assert s.input_shape == (3072,)
    torch.testing.assert_close(s.test[3][0], cifar10_plain.test[3][0].reshape(-1), rtol=0, atol=0)


def test_cifar10_loaders(cifar10_files):
    s = create_splits("cifar10", root=cifar10_files[0], flatten=False, image_size=36)
    train, val, test = s.loaders(batch_size=32, seed=0)
    x, y = next(iter(train))
    assert x.shape == (32, 3, 36, 36) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert (len(train), len(val), len(test)) == (3, 1, 1)
    assert sum(len(yb) for _, yb in test) == N_TEST10


def test_cifar10_loader_workers_reproduce_the_augmentation(cifar10_files):
    """Worker processes get the (picklable) dataset and per-worker seeds from the seeded loader generator."""
    s = create_splits("cifar10", root=cifar10_files[0], flatten=False)
    a, b = (next(iter(s.loaders(batch_size=16, seed=7, num_workers=1)[0]))[0] for _ in range(2))
    assert torch.equal(a, b)
    copy = pickle.loads(pickle.dumps(s.train))  # what spawn / forkserver workers receive
    torch.manual_seed(0)
    x = s.train[0][0]
    torch.manual_seed(0)
    assert torch.equal(copy[0][0], x)


# --- CIFAR-100 ----------------------------------------------------------------------------------------------------


def test_cifar100_reads_fine_labels(cifar100_files):
    root, train_imgs, test_imgs = cifar100_files
    s = create_splits("cifar100", root=root, flatten=False, augment=False)
    assert (s.name, s.num_classes, s.input_shape) == ("cifar100", 100, (3, 32, 32))
    assert (len(s.train), len(s.val), len(s.test)) == (900, 100, N_TEST100)
    x, y = stack(s.val)
    ids = ids_of(x, CIFAR100_MEAN, CIFAR100_STD)
    assert torch.equal(y, ids % 100) and torch.bincount(y, minlength=100).tolist() == [1] * 100
    torch.testing.assert_close(x, normalised(train_imgs[ids.numpy()], CIFAR100_MEAN, CIFAR100_STD), rtol=0, atol=1e-6)
    xt, yt = stack(s.test)
    torch.testing.assert_close(xt, normalised(test_imgs, CIFAR100_MEAN, CIFAR100_STD), rtol=0, atol=1e-6)
    assert torch.equal(yt, torch.arange(N_TEST100) % 100) and yt.max() == 99
    train_ids = ids_of(stack(s.train)[0], CIFAR100_MEAN, CIFAR100_STD)
    assert not set(train_ids.tolist()) & set(ids.tolist()), "train and val are disjoint"


def test_cifar100_loaders(cifar100_files):
    s = create_splits("cifar100", root=cifar100_files[0], flatten=False, image_size=36)
    x, y = next(iter(s.loaders(batch_size=64, seed=0)[0]))
    assert x.shape == (64, 3, 36, 36) and y.min() >= 0 and y.max() <= 99


# --- CINIC-10 -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("inside", [False, True], ids=["root-holds-cinic-10", "root-is-cinic-10"])
def test_cinic10_reads_the_image_folders(cinic_files, inside):
    root, images = cinic_files
    s = create_splits("cinic10", root=root / "cinic-10" if inside else root, flatten=False, augment=False)
    assert (s.name, s.num_classes, s.input_shape) == ("cinic10", 10, (3, 32, 32))
    assert [len(s.train), len(s.val), len(s.test)] == [10 * n for n in CINIC_COUNTS.values()]
    assert s.val.root.endswith("valid"), "CINIC's own valid split is the validation set"
    for split, part in (("train", s.train), ("valid", s.val), ("test", s.test)):
        x, y = stack(part)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(y, torch.arange(len(y)) // CINIC_COUNTS[split]), "labels follow the class folders"
        torch.testing.assert_close(x, normalised(images[split], CINIC10_MEAN, CINIC10_STD), rtol=0, atol=1e-6)


def test_cinic10_augmented_resized_and_loaded(cinic_files):
    s = create_splits("cinic10", root=cinic_files[0], flatten=False, image_size=36)
    assert s.input_shape == (3, 36, 36)
    torch.manual_seed(0)
    a = s.train[5][0]
    torch.manual_seed(0)
    assert torch.equal(a, s.train[5][0]) and a.shape == (3, 36, 36)
    train, val, test = s.loaders(batch_size=8, seed=0)
    x, y = next(iter(train))
    assert x.shape == (8, 3, 36, 36) and y.dtype == torch.int64
    assert sum(len(yb) for _, yb in val) == 20 and sum(len(yb) for _, yb in test) == 20


def test_cinic10_rejects_other_class_folders(cinic_files, tmp_path):
    for split in CINIC_COUNTS:
        folder = tmp_path / split / "airplane"
        folder.mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(folder / "a.png")
    with pytest.raises(ValueError, match=r"class folders \['airplane'\]; expected \['airplane', 'automobile'"):
        create_splits("cinic10", root=tmp_path)


# --- missing files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "layout"), [
    ("cifar10", r"cifar-10-batches-py/\{data_batch_1, .*test_batch, batches.meta\}"),
    ("cifar100", r"cifar-100-python/\{train, test, meta\}"),
    ("cinic10", r"cinic-10/\{train,valid,test\}/<class>/\*.png"),
])
def test_missing_folders_say_what_to_do(tmp_path, name, layout):
    with pytest.raises(FileNotFoundError, match=rf"--data-root must be a folder containing {layout}"):
        create_splits(name, root=tmp_path)


def test_a_missing_cifar_file_is_reported(cifar10_files, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in (cifar10_files[0] / "cifar-10-batches-py").iterdir():
        if f.name != "test_batch":
            (folder / f.name).write_bytes(f.read_bytes())
    with pytest.raises(FileNotFoundError, match="CIFAR-10 files not found"):
        create_splits("cifar10", root=tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "cinic10"])
def test_image_datasets_need_a_root(name):
    with pytest.raises(ValueError, match="--data-root"):
        create_splits(name)


# --- transforms and MNIST options ---------------------------------------------------------------------------------


@given(st.integers(8, 48), st.booleans(), st.booleans())
def test_transform_output_shape(size, augment, flatten):
    train, test = image_transforms(CIFAR10_MEAN, CIFAR10_STD, augment=augment, image_size=size, flatten=flatten)
    img = Image.new("RGB", (32, 32), (10, 200, 30))
    shape = (3 * size * size,) if flatten else (3, size, size)
    assert train(img).shape == shape and test(img).shape == shape


def test_mnist5k_image_size():
    native = create_splits("mnist5k", flatten=False)
    same = create_splits("mnist5k", flatten=False, image_size=32)
    torch.testing.assert_close(same.test.tensors[0], native.test.tensors[0], rtol=0, atol=0)
    big = create_splits("mnist5k", flatten=False, image_size=36, augment=False)
    assert big.input_shape == (1, 36, 36) and big.test.tensors[0].shape == (1000, 1, 36, 36)
    black = -MNIST_MEAN / MNIST_STD
    x = big.train.tensors[0]
    torch.testing.assert_close(x[:, :, 0, :], torch.full_like(x[:, :, 0, :], black), rtol=0, atol=1e-5)
    assert create_splits("mnist5k", image_size=36).input_shape == (36 * 36,)
