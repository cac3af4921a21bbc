"""Tests of ``sao.data``: the fixed MNIST-5k splits, full MNIST read from real IDX files, the loaders."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from sao.data import (
    DATASETS,
    MNIST_MEAN,
    MNIST_STD,
    STD_FLOOR,
    ImageArrayDataset,
    Splits,
    create_splits,
    list_datasets,
    loaders,
    mnist_val_size,
    preprocess_mnist,
    standardize_features,
    stratified_split,
)

BLACK = -MNIST_MEAN / MNIST_STD  # a black pixel after preprocessing


def tensors(ds: TensorDataset) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = ds.tensors
    return x, y


@pytest.fixture(scope="module")
def mnist5k() -> Splits:
    return create_splits("mnist5k")


# --- registry -------------------------------------------------------------------------------

def test_registry_lists_the_mnist_datasets():
    assert {"mnist5k", "mnist"} <= set(list_datasets())


def test_unknown_dataset_raises_listing_the_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar-99'.*mnist, mnist5k"):
        create_splits("cifar-99")


def test_registering_a_dataset_is_one_decorator():
    @DATASETS.register("toy-for-test")
    def toy(root, download, flatten, options):
        ds = TensorDataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
        return Splits("toy-for-test", ds, ds, ds, 1, (2,))
    try:
        assert create_splits("toy-for-test").name == "toy-for-test"
    finally:
        DATASETS._items.pop("toy-for-test")


# --- MNIST-5k -------------------------------------------------------------------------------

def test_mnist5k_sizes_shapes_and_labels(mnist5k):
    assert (mnist5k.name, mnist5k.num_classes, mnist5k.input_shape) == ("mnist5k", 10, (1024,))
    for ds, n in ((mnist5k.train, 3500), (mnist5k.val, 500), (mnist5k.test, 1000)):
        x, y = tensors(ds)
        assert x.shape == (n, 1024) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.min() == 0 and y.max() == 9


@pytest.mark.parametrize(("part", "per_class"), [("train", 350), ("val", 50), ("test", 100)])
def test_mnist5k_splits_are_stratified(mnist5k, part, per_class):
    _, y = tensors(getattr(mnist5k, part))
    assert torch.bincount(y, minlength=10).tolist() == [per_class] * 10


def test_mnist5k_splits_are_disjoint(mnist5k):
    x = torch.cat([tensors(getattr(mnist5k, p))[0] for p in ("train", "val", "test")])
    assert len(torch.unique(x, dim=0)) == 5000  # every digit once: no row shared between splits


def test_mnist5k_splits_are_fixed(mnist5k):
    again = create_splits("mnist5k")
    for p in ("train", "val", "test"):
        for a, b in zip(tensors(getattr(mnist5k, p)), tensors(getattr(again, p)), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_mnist5k_image_shape_matches_flat(mnist5k):
    img = create_splits("mnist5k", flatten=False)
    assert img.input_shape == (1, 32, 32)
    x_img, y_img = tensors(img.test)
    x, y = tensors(mnist5k.test)
    assert x_img.shape == (1000, 1, 32, 32)
    torch.testing.assert_close(x_img.reshape(1000, 1024), x, rtol=0, atol=0)
    assert torch.equal(y_img, y)


def test_mnist5k_border_is_black_and_normalised(mnist5k):
    x = tensors(mnist5k.train)[0].reshape(-1, 32, 32)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    torch.testing.assert_close(x[:, border], torch.full_like(x[:, border], BLACK), rtol=0, atol=1e-6)
    # Pixels are in [black, white] and about zero-mean / unit-std over the digit (MNIST statistics).
    white = (1 - MNIST_MEAN) / MNIST_STD
    assert x.min() >= BLACK - 1e-6 and x.max() <= white + 1e-6
    inner = x[:, 2:30, 2:30]
    assert abs(inner.mean().item()) < 0.1 and abs(inner.std().item() - 1) < 0.1


def test_preprocess_known_values():
    raw = torch.zeros(1, 28, 28, dtype=torch.uint8)
    raw[0, 0, 0], raw[0, 27, 27] = 255, 51
    out = preprocess_mnist(raw, flatten=False)[0, 0]
    assert out[2, 2].item() == pytest.approx((1 - MNIST_MEAN) / MNIST_STD, abs=1e-6)
    assert out[29, 29].item() == pytest.approx((0.2 - MNIST_MEAN) / MNIST_STD, abs=1e-6)
    assert out[0, 0].item() == pytest.approx(BLACK, abs=1e-6)
    torch.testing.assert_close(preprocess_mnist(raw.reshape(1, 784)), out.reshape(1, 1024), rtol=0, atol=0)


def test_preprocess_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"images must have shape .*got \(3, 32, 32\)"):
        preprocess_mnist(torch.zeros(3, 32, 32))


# --- stratified_split -----------------------------------------------------------------------

def test_stratified_split_proportional_and_exact():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    picked, rest = stratified_split(labels, 15, torch.Generator().manual_seed(0))
    # exact shares 7.5, 4.5, 3.0 → floors 7, 4, 3 (14); the one left goes to the tie's smaller label.
    assert torch.bincount(labels[picked]).tolist() == [8, 4, 3]
    assert torch.equal(torch.sort(torch.cat([picked, rest])).values, torch.arange(100))


def test_stratified_split_is_seeded():
    labels = torch.arange(100) % 10
    a = stratified_split(labels, 30, torch.Generator().manual_seed(1))[0]
    b = stratified_split(labels, 30, torch.Generator().manual_seed(1))[0]
    c = stratified_split(labels, 30, torch.Generator().manual_seed(2))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("size", [-1, 11])
def test_stratified_split_rejects_bad_size(size):
    with pytest.raises(ValueError, match=r"size must be an integer in \[0, 10\]"):
        stratified_split(torch.zeros(10, dtype=torch.long), size, torch.Generator())


# --- loaders --------------------------------------------------------------------------------

def order(loader) -> torch.Tensor:
    return torch.cat([x[:, 0] for x, _ in loader])


@pytest.fixture(scope="module")
def toy() -> Splits:
    ds = TensorDataset(torch.arange(100.0).unsqueeze(1), torch.arange(100) % 10)
    return Splits("toy", ds, ds, ds, 10, (1,))


def test_train_loader_shuffles_reproducibly(toy):
    a, b, c = (loaders(toy, 16, seed)[0] for seed in (0, 0, 1))
    first = order(a)
    assert torch.equal(first, order(b)) and not torch.equal(first, order(c))
    assert not torch.equal(first, torch.arange(100.0))
    assert torch.equal(torch.sort(first).values, torch.arange(100.0))
    assert not torch.equal(first, order(a)), "each epoch gets a new order"
    assert torch.equal(order(toy.loaders(16, 0)[0]), first), "the method matches the function"


def test_val_and_test_loaders_keep_order(toy):
    _, val, test = loaders(toy, 16, seed=3)
    assert torch.equal(order(val), torch.arange(100.0)) and torch.equal(order(test), torch.arange(100.0))


def test_pin_memory_only_for_cuda(toy):
    assert not any(dl.pin_memory for dl in loaders(toy, 8, 0, device="cpu"))
    assert all(dl.pin_memory for dl in loaders(toy, 8, 0, device=torch.device("cuda")))


@pytest.mark.parametrize(("kw", "match"), [({"batch_size": 0}, "batch_size"), ({"num_workers": -1}, "num_workers")])
def test_loaders_reject_bad_arguments(toy, kw, match):
    args = {"batch_size": 8, "seed": 0} | kw
    with pytest.raises(ValueError, match=match):
        loaders(toy, **args)


def test_mnist5k_loaders_batch_shapes(mnist5k):
    train, val, test = mnist5k.loaders(batch_size=256, seed=0)
    x, y = next(iter(train))
    assert x.shape == (256, 1024) and y.shape == (256,) and y.dtype == torch.int64
    assert (len(train), len(val), len(test)) == (14, 2, 4)


# --- full MNIST from real IDX files ---------------------------------------------------------

N_TRAIN, N_TEST = 240, 50


def write_idx(path: Path, array: torch.Tensor) -> None:
    """Write a uint8 array in the big-endian IDX format (magic 0x0000 08 ndim, then the dims)."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.to(torch.uint8).contiguous().numpy().tobytes())


def fake_digits(n: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits that carry their id ``offset + i`` in pixels (0, 0) and (0, 1) (base 256) and ``255 − id mod 256`` in
    pixel (27, 27)."""
    ids = torch.arange(offset, offset + n)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 0, 0], images[:, 0, 1] = (ids % 256).to(torch.uint8), (ids // 256).to(torch.uint8)
    images[:, 27, 27] = (255 - ids % 256).to(torch.uint8)
    images[:, 10:18, 12] = 200  # a stroke
    return images, ids % 10


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, (images, labels) in (("train", fake_digits(N_TRAIN, 0)), ("t10k", fake_digits(N_TEST, N_TRAIN))):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    assert (raw / "train-images-idx3-ubyte").read_bytes()[:4] == b"\x00\x00\x08\x03"  # magic 2051
    assert (raw / "train-labels-idx1-ubyte").read_bytes()[:4] == b"\x00\x00\x08\x01"  # magic 2049
    return root


def ids_of(x: torch.Tensor) -> torch.Tensor:
    """Recover each digit's id from its preprocessed pixels (0, 0) and (0, 1), at (2, 2:4) of the padded image."""
    pixels = torch.round((x.reshape(-1, 32, 32)[:, 2, 2:4] * MNIST_STD + MNIST_MEAN) * 255).long()
    return pixels[:, 0] + 256 * pixels[:, 1]


def test_mnist_val_size_scales_one_twelfth():
    assert [mnist_val_size(n) for n in (60000, 120000, 240, 11)] == [5000, 5000, 20, 0]


def test_full_mnist_reads_idx_files(mnist_root):
    splits = create_splits("mnist", root=mnist_root)
    assert (splits.name, splits.num_classes, splits.input_shape) == ("mnist", 10, (1024,))
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    assert sizes == [N_TRAIN - N_TRAIN // 12, N_TRAIN // 12, N_TEST]
    ids = {}
    for part in ("train", "val", "test"):
        x, y = tensors(getattr(splits, part))
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        ids[part] = ids_of(x)
        assert torch.equal(y, ids[part] % 10), "labels travel with their images"
        # The known pixel (27, 27) = 255 − id survives scaling, padding and normalisation.
        expected = ((255 - ids[part] % 256).float() / 255 - MNIST_MEAN) / MNIST_STD
        torch.testing.assert_close(x.reshape(-1, 32, 32)[:, 29, 29], expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(x.reshape(-1, 32, 32)[:, 14, 14], torch.full((len(x),), (200 / 255 - MNIST_MEAN)
                                                                                / MNIST_STD), rtol=0, atol=1e-5)
    assert torch.equal(ids["test"], torch.arange(N_TRAIN, N_TRAIN + N_TEST)), "test = the official test file, in order"
    train_ids = torch.cat([ids["train"], ids["val"]])
    assert torch.equal(torch.sort(train_ids).values, torch.arange(N_TRAIN)), "val and train partition the train file"
    assert torch.bincount(ids["val"] % 10, minlength=10).tolist() == [2] * 10, "val is stratified"
    again = create_splits("mnist", root=str(mnist_root))
    assert torch.equal(ids_of(tensors(again.val)[0]), ids["val"]), "the validation split is fixed"


def test_full_mnist_as_images(mnist_root):
    splits = create_splits("mnist", root=mnist_root, flatten=False)
    assert splits.input_shape == (1, 32, 32) and tensors(splits.test)[0].shape == (N_TEST, 1, 32, 32)


def test_full_mnist_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MNIST files not found under .*--data-root.*download"):
        create_splits("mnist", root=tmp_path)


def test_full_mnist_needs_a_root():
    with pytest.raises(ValueError, match="--data-root"):
        create_splits("mnist")


def test_feature_standardisation_uses_the_training_split_only() -> None:
    plain, standard = create_splits("mnist5k"), create_splits("mnist5k", normalize="feature")
    x = plain.train.tensors[0].double()
    mean, std = x.mean(0), x.std(0)
    train = standard.train.tensors[0].double()
    varying, floor = std > 0, STD_FLOOR * std[std > 0].median()
    assert torch.allclose(train.mean(0), torch.zeros_like(mean), atol=1e-5)
    unit = std >= floor
    assert torch.allclose(train[:, unit].std(0), torch.ones(int(unit.sum()), dtype=torch.float64), atol=1e-5)
    rare = varying & ~unit  # pixels lit in a few training images: divided by the floor, std below 1
    assert rare.any() and (train[:, rare].std(0) < 1).all()
    assert not varying.all() and (train[:, ~varying] == 0).all()  # MNIST's border pixels are constant
    for part in ("val", "test"):  # the training statistics, not their own
        raw, got = getattr(plain, part).tensors[0].double(), getattr(standard, part).tensors[0].double()
        expected = torch.where(varying, (raw - mean) / torch.where(varying, std.clamp(min=floor), 1.0), 0.0)
        assert got.abs().max() < 50
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.equal(getattr(plain, part).tensors[1], getattr(standard, part).tensors[1])
    assert standard.train.tensors[0].dtype == torch.float32 and standard.input_shape == plain.input_shape


def test_normalisation_errors_name_the_choices() -> None:
    with pytest.raises(ValueError, match="normalize='pixel' is not known; choose from dataset, feature"):
        create_splits("mnist5k", normalize="pixel")
    made_on_the_fly = Splits("images", *(ImageArrayDataset(np.zeros((2, 32, 32, 3), np.uint8), np.arange(2),
                                                           transform=lambda image: image) for _ in range(3)),
                             2, (3, 32, 32))
    with pytest.raises(ValueError, match="normalize='feature' needs a dataset held in tensors"):
        standardize_features(made_on_the_fly)
