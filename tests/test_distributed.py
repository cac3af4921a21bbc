"""Data-parallel training (gloo, 2 CPU processes), sharded batches, the run store in a process group, mixed
precision, torchrun CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers import gen
from sao.data import ShardedBatchSampler, Splits, loaders
from sao.experiments import LeaseLost, Run, RunClaimed, RunStore, run_one
from sao.experiments.store import Guard
from sao.methods import sparsify
from sao.models import fnn, orthogonal_init_
from sao.training import TrainConfig, load_checkpoint, read_metrics, train
from sao.training.distributed import broadcast_object

FEATURES, CLASSES = 1024, 10
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def _splits() -> Splits:
    g = gen(5)
    centres = torch.randn(CLASSES, FEATURES, generator=g)
    y = torch.randint(0, CLASSES, (192,), generator=g)
    x = 0.05 * centres[y] + torch.randn(192, FEATURES, generator=g)  # hard enough to leave errors
    data = TensorDataset(x, y)
    return Splits("toy", data, TensorDataset(x[:64], y[:64]), TensorDataset(x[64:128], y[64:128]), CLASSES,
                  (FEATURES,))


def _model(method: str) -> nn.Module:
    model = orthogonal_init_(fnn(3), generator=gen(1))  # the same start in every process
    if method != "dense":
        sparsify(model, method, degree=4, generator=gen(0))
    return model


CFG = TrainConfig(epochs=2, lr=0.05, device="cpu", isometry_probe=4, seed=3)
BATCH = 32  # the global batch


def _run(rank: int, world_size: int, rendezvous: str, method: str, out: str) -> None:
    """One rank of a data-parallel run (also the world-of-one reference when ``world_size == 1``)."""
    torch.set_num_threads(1)
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        splits = _splits()
        train_loader, val, test = loaders(splits, BATCH, seed=11, shard=(rank, world_size))
        if world_size > 1:  # an unsharded loader is refused instead of silently training on W x the batch
            whole = loaders(splits, BATCH, seed=11)[0]
            with pytest.raises(ValueError, match="must be sharded"):
                train(_model(method), {"train": whole, "val": val}, CFG, Path(out) / "refused", progress=False)
        result = train(_model(method), {"train": train_loader, "val": val, "test": test}, CFG, out, progress=False)
        Path(out, f"result-{rank}.json").write_text(json.dumps(result))
    finally:
        if world_size > 1:
            dist.destroy_process_group()


@pytest.mark.parametrize("method", ["sao", "gmp-s"])
def test_world_size_two_matches_world_size_one(tmp_path: Path, method: str) -> None:
    """Same global batch and seed: 2 gloo processes end with the weights and accuracy of 1 process."""
    one, two = tmp_path / "one", tmp_path / "two"
    _run(0, 1, "", method, str(one))
    mp.spawn(_run, args=(2, str(tmp_path / "rendezvous"), method, str(two)), nprocs=2, join=True)
    w1 = load_checkpoint(one / "checkpoint.pt")["model"]
    w2 = load_checkpoint(two / "checkpoint.pt")["model"]
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-5, atol=1e-6, msg=key)
    assert w2  # the comparison covered something
    r1 = json.loads((one / "result-0.json").read_text())
    results = [json.loads((two / f"result-{r}.json").read_text()) for r in (0, 1)]
    for r2 in results:  # every rank returns the same summary; accuracies are those of one process
        assert (r2["status"], r2["epochs_run"], r2["val_acc"], r2["test_acc"]) == \
            (r1["status"], r1["epochs_run"], r1["val_acc"], r1["test_acc"])
    rows1, rows2 = read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    assert [r["epoch"] for r in rows2] == [0, 1, 2]  # only rank 0 wrote: no duplicated lines
    for a, b in zip(rows1[1:], rows2[1:], strict=True):  # train loss/accuracy summed over both ranks
        assert b["train_acc"] == a["train_acc"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)


def _ranked_run(config: dict, run_dir: Path, guard: Guard) -> dict:
    """A run function that notes which rank called it and returns that rank."""
    rank = dist.get_rank()
    with open(run_dir / f"rank-{rank}.txt", "a") as handle:
        handle.write("called\n")
    return {"rank": rank}


def _run_one_in_group(rank: int, world_size: int, rendezvous: str, out: str) -> None:
    """``run_one`` of a free run (twice) and of a run claimed elsewhere, on every rank of a gloo group."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        seen: dict = {"object": broadcast_object({"from": rank}), "results": []}
        for run in (Run("free", {"x": 1}), Run("free", {"x": 1}), Run("held", {"x": 2})):
            try:
                seen["results"].append(run_one(run, _ranked_run, Path(out), log=lambda _: None))
            except RunClaimed as err:
                seen["results"].append(str(err.holder))
        Path(out, f"seen-{rank}.json").write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()


def test_run_one_in_a_process_group_claims_on_rank_0_and_every_rank_decides_alike(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert broadcast_object([1, 2]) == [1, 2]  # a world of one: the object itself
    with RunStore(out).claim(Run("held", {"x": 2}), log=lambda _: None) as claim:
        mp.spawn(_run_one_in_group, args=(2, str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    seen = [json.loads((out / f"seen-{rank}.json").read_text()) for rank in (0, 1)]
    assert [s["object"] for s in seen] == [{"from": 0}] * 2  # rank 0's object on both ranks
    for rank, s in enumerate(seen):
        first, again, refused = s["results"]
        assert first["rank"] == rank  # every rank trained and returns its own result ...
        assert again["rank"] == 0  # ... and then every rank skips, with the stored (rank 0's) result
        assert refused == str(claim.owner)  # every rank refuses a run claimed elsewhere
    free = Run("free", {"x": 1}).directory(out)
    assert json.loads((free / "result.json").read_text())["rank"] == 0
    assert [(free / f"rank-{rank}.txt").read_text() for rank in (0, 1)] == ["called\n"] * 2
    assert not (Run("held", {"x": 2}).directory(out) / "config.json").exists()


def _losing_run(config: dict, run_dir: Path, guard: Guard) -> dict:
    """Trains on every rank; after epoch 1 rank 0's claim is taken over (moved away, as by a driver that found it
    stale)."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    train_loader, val, _ = loaders(_splits(), BATCH, seed=11, shard=(rank, world_size))

    def take_over(row: dict) -> None:
        if row["epoch"] == 1 and rank == 0:
            (claim,) = (run_dir / ".claim").iterdir()
            claim.rename(run_dir / "taken")

    return train(_model("sao"), {"train": train_loader, "val": val}, CFG, run_dir / "train", progress=False,
                 on_epoch_end=take_over, guard=guard)


def _lose_the_lease_in_group(rank: int, world_size: int, rendezvous: str, out: str) -> None:
    """``run_one`` of a run whose lease rank 0 loses while every rank trains; each rank notes how it ended."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))  # a rank left waiting fails the test instead of hanging
    try:
        try:
            run_one(Run("lost", {"x": 3}), _losing_run, Path(out), log=lambda _: None)
            outcome = "trained"
        except LeaseLost as err:
            outcome = err.why
        Path(out, f"lost-{rank}.json").write_text(json.dumps(outcome))
    finally:
        dist.destroy_process_group()


def test_a_lease_lost_on_rank_0_stops_every_rank_before_the_next_write(tmp_path: Path) -> None:
    """Only rank 0 holds the lease; its verdict reaches every rank at each write, so none trains on or waits."""
    out = tmp_path / "out"
    mp.spawn(_lose_the_lease_in_group, args=(2, str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    outcomes = [json.loads((out / f"lost-{rank}.json").read_text()) for rank in (0, 1)]
    assert outcomes == ["its claim is gone: another driver took it over"] * 2
    run_dir = Run("lost", {"x": 3}).directory(out)
    assert [row["epoch"] for row in read_metrics(run_dir / "train" / "metrics.jsonl")] == [0, 1]
    assert load_checkpoint(run_dir / "train" / "checkpoint.pt")["epoch"] == 1
    assert not (run_dir / "result.json").exists()


def _batches(loader: DataLoader, epochs: int) -> list[list[int]]:
    return [batch[0].flatten().long().tolist() for _ in range(epochs) for batch in loader]


@given(size=st.integers(1, 90), batch=st.integers(1, 40))
def test_world_of_one_shards_like_an_ordinary_shuffled_loader(size: int, batch: int) -> None:
    data = TensorDataset(torch.arange(size).float().unsqueeze(1))
    plain = DataLoader(data, batch_size=batch, shuffle=True, generator=gen(4))
    g = gen(4)  # one generator for sampler and loader, as sao.data.loaders builds it
    sharded = DataLoader(data, batch_sampler=ShardedBatchSampler(size, batch, g), generator=g)
    assert _batches(sharded, 3) == _batches(plain, 3)


@given(size=st.integers(1, 90), share=st.integers(1, 8), world_size=st.sampled_from([2, 3, 4]))
def test_shares_partition_every_global_batch(size: int, share: int, world_size: int) -> None:
    batch = share * world_size
    if 0 < size % batch < world_size:
        with pytest.raises(ValueError, match="last batch"):
            ShardedBatchSampler(size, batch, gen(0), 0, world_size)
        return
    whole = list(ShardedBatchSampler(size, batch, gen(9)))
    shares = [list(ShardedBatchSampler(size, batch, gen(9), r, world_size)) for r in range(world_size)]
    assert all(len(s) == len(whole) for s in shares)
    for i, global_batch in enumerate(whole):
        parts = [s[i] for s in shares]
        assert sorted(i for part in parts for i in part) == sorted(global_batch)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize(("args", "match"), [((10, 6, 0, 4), "multiple of the world size"),
                                             ((10, 4, 2, 2), "rank"), ((9, 4, 0, 2), "last batch")])
def test_sharding_errors(args: tuple[int, int, int, int], match: str) -> None:
    size, batch, rank, world_size = args
    with pytest.raises(ValueError, match=match):
        ShardedBatchSampler(size, batch, gen(0), rank, world_size)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_and_resumes_exactly(tmp_path: Path, amp: str, device: str) -> None:
    cfg = TrainConfig(epochs=2, lr=0.05, device=device, isometry_probe=4, amp=amp,
                      max_grad_norm=5.0)

    def run(out: Path, stop_after: int | None = None) -> dict:
        train_loader, val, _ = loaders(_splits(), BATCH, seed=2, device=device)

        def stop(row: dict) -> None:
            if row["epoch"] == stop_after:
                raise KeyboardInterrupt

        return train(_model("sao"), {"train": train_loader, "val": val}, cfg, out, progress=False, on_epoch_end=stop)

    full = run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", stop_after=1)
    resumed = run(tmp_path / "cut")
    assert full["status"] == "completed" and full["val_acc"] > 0.5  # it learns at reduced precision
    saved = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    assert bool(saved["scaler"]) == (amp == "fp16")  # the fp16 loss scale is part of the state
    for key, value in saved["model"].items():
        torch.testing.assert_close(load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["model"][key], value,
                                   rtol=0, atol=0, msg=key)
    assert resumed["val_acc"] == full["val_acc"]


def test_amp_choice_is_checked() -> None:
    with pytest.raises(ValueError, match="bf16, fp16"):
        TrainConfig(amp="fp8")


def _cli(args: list[str], launcher: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *launcher, "-m", "sao.cli", "train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_torchrun_two_processes_match_one(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 -m sao.cli train`` = plain ``sao train``, and only rank 0 prints."""
    args = ["--method", "sao", "--depth", "2", "--epochs", "1", "--device", "cpu", "--batch-size", "250",
            "--lr", "0.01"]
    one = _cli([*args, "--out", str(tmp_path / "one")], [], tmp_path)
    two = _cli([*args, "--out", str(tmp_path / "two")],
               ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"], tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("test_acc") == 1
    (run1,), (run2,) = (list((tmp_path / d).iterdir()) for d in ("one", "two"))
    assert run1.name == run2.name  # same config, same hashed run directory
    r1, r2 = (json.loads((r / "result.json").read_text()) for r in (run1, run2))
    assert r2["test_acc"] == pytest.approx(r1["test_acc"], abs=2e-3)  # float order may flip a borderline example
    w1 = load_checkpoint(run1 / "train" / "checkpoint.pt")["model"]
    w2 = load_checkpoint(run2 / "train" / "checkpoint.pt")["model"]
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-5, msg=key)
    assert json.loads((run2 / "train" / "config.json").read_text())["world_size"] == 2
