"""Fixed train / validation / test splits, stratified index selection and the data loaders."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sao._validation import as_int

__all__ = ["ShardedBatchSampler", "Splits", "loaders", "stratified_split"]


@dataclass(frozen=True)
class Splits:
    """A dataset cut into fixed train, validation and test parts.

    Attributes:
        name: the registered dataset name.
        train: training examples (shuffled by :func:`loaders`).
        val: validation examples, taken from the training data; tune and select on these.
        test: held-out examples, reported only, never tuned or selected on.
        num_classes: number of labels (labels are ``int64`` in ``0 … num_classes − 1``).
        input_shape: shape of one input, e.g. ``(1024,)`` or ``(1, 32, 32)``.
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]

    def loaders(self, batch_size: int, seed: int, device: torch.device | str | None = None,
                num_workers: int = 0, shard: tuple[int, int] = (0, 1)) -> tuple[DataLoader, DataLoader, DataLoader]:
        """Train / val / test loaders; see :func:`loaders`."""
        return loaders(self, batch_size, seed, device=device, num_workers=num_workers, shard=shard)


class ShardedBatchSampler(Sampler[list[int]]):
    """Rank ``rank``'s share of each shuffled global batch, for data-parallel training.

    Every epoch draws one permutation of ``range(size)`` from ``generator`` — the same draws, in
    the same order, as ``DataLoader(shuffle=True, generator=generator)`` makes, so with
    ``world_size=1`` the batches are exactly those of the ordinary loader. Global batch ``i`` is
    positions ``[i·B, (i+1)·B)`` of the permutation; rank ``r`` of ``W`` gets every ``W``-th of them
    starting at ``r``. The ranks' shares are disjoint and together form the global batch, so
    averaging their gradients reproduces single-process training with batch ``B``.

    Raises:
        TypeError: a size, rank or world size that is not an integer.
        ValueError: ``batch_size`` not a multiple of ``world_size`` (unequal shares would weigh
            examples unequally), a bad rank, or a last batch too small to give every rank an example.
    """

    def __init__(self, size: int, batch_size: int, generator: torch.Generator, rank: int = 0,
                 world_size: int = 1) -> None:
        size, batch_size = as_int(size, "size", minimum=0), as_int(batch_size, "batch_size", minimum=1)
        rank, world_size = as_int(rank, "rank"), as_int(world_size, "world_size", minimum=1)
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} must be a multiple of the world size {world_size} "
                             "(each process takes an equal share of every batch)")
        if 0 < size % batch_size < world_size:
            raise ValueError(f"the last batch of {size % batch_size} example(s) cannot be shared by "
                             f"{world_size} processes; choose another batch size")
        self.size, self.batch_size, self.generator = size, batch_size, generator
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=self.generator).tolist()
        torch.randperm(self.size, generator=self.generator)  # RandomSampler draws (and drops) a second one
        for start in range(0, self.size, self.batch_size):
            yield order[start:start + self.batch_size][self.rank::self.world_size]


def loaders(splits: Splits, batch_size: int, seed: int, device: torch.device | str | None = None,
            num_workers: int = 0, shard: tuple[int, int] = (0, 1)) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Make the train, validation and test loaders of ``splits``.

    The training loader reshuffles every epoch from its own ``torch.Generator`` seeded with
    ``seed``: the same seed gives the same sequence of batches, independent of the global RNG.
    Validation and test loaders keep the dataset order. With ``shard=(rank, world_size)`` and
    ``world_size > 1`` the training loader yields this rank's share of each global batch of
    ``batch_size`` (:class:`ShardedBatchSampler`); validation and test stay whole on every rank.

    Args:
        splits: the splits to load.
        batch_size: examples per batch (≥ 1), for all three loaders.
        seed: seed of the training-order generator.
        device: where the batches will go; memory is pinned only for a CUDA device. Default ``None`` (CPU).
        num_workers: loader worker processes (≥ 0). Default ``0``.
        shard: ``(rank, world_size)`` of data-parallel training (see :mod:`sao.training.distributed`).

    Returns:
        ``(train, val, test)`` loaders; the last training batch may be smaller.

    Raises:
        TypeError: ``batch_size``, ``seed``, ``num_workers`` or an entry of ``shard`` is not an
            integer (``int``, numpy integer or 0-d integer tensor), or ``shard`` is not a pair.
        ValueError: ``batch_size < 1``, ``num_workers < 0`` or a shard that cannot split the batches.

    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> ds = TensorDataset(torch.arange(6.0).unsqueeze(1), torch.zeros(6, dtype=torch.long))
    >>> train, val, test = loaders(Splits("toy", ds, ds, ds, 1, (1,)), batch_size=4, seed=0)
    >>> [len(x) for x, _ in train], next(iter(val))[0].flatten().tolist()
    ([4, 2], [0.0, 1.0, 2.0, 3.0])
    """
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    num_workers = as_int(num_workers, "num_workers", minimum=0)
    seed = as_int(seed, "seed")
    if not isinstance(shard, tuple | list) or len(shard) != 2:
        raise TypeError(f"shard must be a pair (rank, world_size), got {shard!r}")
    rank, world_size = as_int(shard[0], "shard rank"), as_int(shard[1], "shard world_size")
    pin = device is not None and torch.device(device).type == "cuda"
    common = {"batch_size": batch_size, "num_workers": num_workers, "pin_memory": pin}
    generator = torch.Generator().manual_seed(seed)
    if world_size > 1:
        sampler = ShardedBatchSampler(len(splits.train), batch_size, generator, rank, world_size)  # type: ignore[arg-type]
        train = DataLoader(splits.train, batch_sampler=sampler, generator=generator, num_workers=num_workers,
                           pin_memory=pin)
    else:
        train = DataLoader(splits.train, shuffle=True, generator=generator, **common)
    val = DataLoader(splits.val, shuffle=False, **common)
    test = DataLoader(splits.test, shuffle=False, **common)
    return train, val, test


def stratified_split(labels: torch.Tensor, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``size`` indices with each class in proportion to its share of ``labels``.

    Class ``c`` with ``n_c`` of the ``n`` examples gets ``⌊size · n_c / n⌋`` picks; the
    remaining picks go one each to the classes with the largest fractional parts (ties to
    the smaller label), so the total is exactly ``size`` and each class is within one of
    its exact share. Within a class the picks are a ``generator``-random subset.

    Args:
        labels: 1-D integer labels.
        size: how many to pick, ``0 ≤ size ≤ len(labels)``.
        generator: source of the random choice within each class.

    Returns:
        ``(picked, rest)``: sorted ``int64`` indices into ``labels``, disjoint, covering all.

    Raises:
        TypeError: ``size`` is not an integer.
        ValueError: ``labels`` is not 1-D or ``size`` is out of range.

    >>> picked, rest = stratified_split(torch.tensor([0, 0, 0, 0, 1, 1]), 3, torch.Generator().manual_seed(0))
    >>> len(picked), len(rest)
    (3, 3)
    """
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    n = labels.numel()
    size = as_int(size, "size")
    if not 0 <= size <= n:
        raise ValueError(f"size must be an integer in [0, {n}], got {size!r}")
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * size / max(n, 1)
    quota = exact.floor().long()
    short = size - int(quota.sum())
    # Largest remainder first; the stable sort keeps ties in label order.
    order = torch.sort(exact - quota, descending=True, stable=True).indices
    quota[order[:short]] += 1
    picked = []
    for c, k in zip(classes.tolist(), quota.tolist(), strict=True):
        members = torch.nonzero(labels == c).flatten()
        picked.append(members[torch.randperm(members.numel(), generator=generator)[:k]])
    chosen = torch.zeros(n, dtype=torch.bool)
    if picked:
        chosen[torch.cat(picked)] = True
    return torch.nonzero(chosen).flatten(), torch.nonzero(~chosen).flatten()
