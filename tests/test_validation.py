"""Argument validation in PyTorch's manner (issue 10, part 3), checked generically.

* Every public function that takes an integer accepts any integral type (numpy integers, 0-d
  integer arrays and tensors) with the same result as the plain ``int``, and refuses strings,
  floats (``4.0`` too, as ``torch.empty(4.0)`` does), ``bool`` and 1-element 1-d tensors with
  a ``TypeError``.
* Every real argument (sparsity, density, gain, …) accepts numpy scalars and 0-d tensors, and
  refuses strings such as ``"0.5"`` and ``bool`` (``TypeError``), NaN and infinities (``ValueError``).
* Every initializer of :mod:`sao.init` refuses integer, bool and complex tensors with a
  ``TypeError`` naming the dtype, and leaves empty tensors alone, as :func:`torch.nn.init.orthogonal_`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import sao.init
from sao.data import DataOptions, Splits, loaders, stratified_split
from sao.data._splits import ShardedBatchSampler
from sao.experiments.config import DataConfig, MethodConfig, ModelConfig
from sao.experiments.launchers import LaunchOptions
from sao.experiments.table7 import lr_for_depth
from sao.init import (
    delta_orthogonal_,
    eco_,
    eoi_,
    eoi_delta_,
    eoi_delta_with_mask_,
    eoi_with_mask_,
    orthogonal_,
    ramanujan_normal_,
    ramanujan_uniform_,
    sao_,
    sao_delta_,
    sao_eco_,
)
from sao.init.eco import eco_frequency_index
from sao.init.eoi import eoi_target_nonzeros
from sao.models import cnn, cnn_eco, fnn, lipconvnet
from sao.models.lipconvnet import eco_kernel_size
from sao.spectral import conv_singular_values, operator_singular_values
from sao.topology import (
    Topology,
    configuration_model,
    degree_for_sparsity,
    nearest_degree,
    ramanujan,
    resolve_degree,
    valid_degrees,
)
from sao.training import TrainConfig, lr_factor, probe_batch


def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def canonical(value: Any) -> Any:
    """A comparable form of a result: tensors as (dtype, list), modules by repr, topologies by fields."""
    if isinstance(value, torch.Tensor):
        return str(value.dtype), tuple(value.shape), value.tolist()
    if isinstance(value, torch.nn.Module):
        return repr(value)
    if isinstance(value, Topology):
        return canonical((value.out_features, value.in_features, value.num_blocks, value.row_perm, value.col_perm))
    if isinstance(value, tuple | list):
        return type(value).__name__, [canonical(v) for v in value]
    if dataclasses.is_dataclass(value):
        return canonical([getattr(value, f.name) for f in dataclasses.fields(value)])
    if isinstance(value, Splits):
        return canonical([value.train, value.val, value.test])
    if isinstance(value, TensorDataset):
        return canonical(list(value.tensors))
    return type(value).__name__, value  # an np.int64 in a result would differ from the int


TOY = TensorDataset(torch.arange(10.0).unsqueeze(1), torch.tensor([0, 1] * 5))
TOY_SPLITS = Splits("toy", TOY, TOY, TOY, 2, (1,))


def batches(loader_triple: tuple) -> list:
    return [[x.flatten().tolist() for x, _ in loader] for loader in loader_triple]


def delta_weight() -> torch.Tensor:
    w = torch.zeros(2, 2, 3, 3)
    w[:, :, 1, 1] = torch.eye(2)
    return w


# (id, function of the integer, a valid plain value)
INT_CASES: list[tuple[str, Callable[[Any], Any], int]] = [
    ("valid_degrees-m", lambda v: valid_degrees(v, 8), 8),
    ("valid_degrees-n", lambda v: valid_degrees(6, v, mirrored=True), 4),
    ("resolve_degree-degree", lambda v: resolve_degree(8, 8, degree=v), 4),
    ("resolve_degree-m", lambda v: resolve_degree(v, 8, degree=4), 8),
    ("degree_for_sparsity-n", lambda v: degree_for_sparsity(8, v, 0.5), 8),
    ("nearest_degree-degree", lambda v: nearest_degree(64, 64, degree=v), 3),
    ("nearest_degree-m", lambda v: nearest_degree(v, 64, sparsity=0.9), 64),
    ("ramanujan-degree", lambda v: ramanujan(16, 8, degree=v, generator=gen()), 4),
    ("ramanujan-n", lambda v: ramanujan(16, v, degree=4, generator=gen()), 8),
    ("Topology-num_blocks", lambda v: Topology(4, 4, v, torch.arange(4), torch.arange(4)), 2),
    ("configuration_model-row_degree", lambda v: configuration_model(16, 16, v, gen()), 4),
    ("configuration_model-m", lambda v: configuration_model(v, 16, 4, gen()), 16),
    ("sao_-degree", lambda v: sao_(torch.empty(16, 8), degree=v, generator=gen()), 4),
    ("ramanujan_normal_-degree", lambda v: ramanujan_normal_(torch.empty(8, 8), degree=v, generator=gen()), 2),
    ("ramanujan_uniform_-degree", lambda v: ramanujan_uniform_(torch.empty(8, 8), degree=v, generator=gen()), 2),
    ("sao_delta_-degree", lambda v: sao_delta_(torch.empty(8, 8, 3, 3), degree=v, generator=gen()), 4),
    ("sao_eco_-degree", lambda v: sao_eco_(torch.empty(8, 8, 3, 3), degree=v, generator=gen()), 4),
    ("eco_frequency_index-k", eco_frequency_index, 3),
    ("eoi_target_nonzeros-m", lambda v: eoi_target_nonzeros(v, 8, density=0.5), 8),
    ("fnn-depth", lambda v: fnn(depth=v, in_features=8, widths=(4, 4)), 2),
    ("fnn-in_features", lambda v: fnn(depth=1, in_features=v, widths=(4, 4)), 8),
    ("fnn-num_classes", lambda v: fnn(depth=1, in_features=8, num_classes=v, widths=(4, 4)), 3),
    ("fnn-widths", lambda v: fnn(depth=1, in_features=8, widths=(v, 4)), 6),
    ("cnn-depth", lambda v: cnn(depth=v, width=2), 2),
    ("cnn-width", lambda v: cnn(depth=2, width=v), 4),
    ("cnn_eco-depth", lambda v: cnn_eco(depth=v, width=2, generator=gen()), 2),
    ("lipconvnet-depth", lambda v: lipconvnet(depth=v, init_channels=2, generator=gen()), 5),
    ("lipconvnet-init_channels", lambda v: lipconvnet(depth=5, init_channels=v, generator=gen()), 2),
    ("eco_kernel_size-side", eco_kernel_size, 8),
    ("lr_for_depth-depth", lr_for_depth, 100),
    ("TrainConfig-epochs", lambda v: TrainConfig(epochs=v), 3),
    ("TrainConfig-seed", lambda v: TrainConfig(seed=v), 2),
    ("ModelConfig-depth", lambda v: ModelConfig(depth=v), 3),
    ("ModelConfig-width", lambda v: ModelConfig("cnn", width=v), 8),
    ("MethodConfig-degree", lambda v: MethodConfig(degree=v), 4),
    ("DataConfig-batch_size", lambda v: DataConfig(batch_size=v), 32),
    ("TrainConfig-milestones", lambda v: TrainConfig(milestones=(v, 9)), 4),
    ("lr_factor-epoch", lambda v: lr_factor(v, TrainConfig(schedule="multistep", milestones=(5,), warmup_epochs=1)),
     5),
    ("probe_batch-size", lambda v: probe_batch(loaders(TOY_SPLITS, 4, seed=0)[1], v), 3),
    ("LaunchOptions-workers", lambda v: LaunchOptions(workers=v), 2),
    ("LaunchOptions-max_retries", lambda v: LaunchOptions(max_retries=v), 3),
    ("DataOptions-image_size", lambda v: DataOptions(image_size=v), 36),
    ("loaders-batch_size", lambda v: batches(loaders(TOY_SPLITS, v, seed=0)), 4),
    ("loaders-seed", lambda v: batches(loaders(TOY_SPLITS, 4, seed=v)), 3),
    ("loaders-num_workers", lambda v: batches(loaders(TOY_SPLITS, 4, seed=0, num_workers=v)), 0),
    ("stratified_split-size", lambda v: stratified_split(torch.tensor([0, 1] * 5), v, gen()), 3),
    ("ShardedBatchSampler-world_size", lambda v: list(ShardedBatchSampler(8, 4, gen(), 1, v)), 2),
    ("conv_singular_values-input_size", lambda v: conv_singular_values(delta_weight(), v), 4),
    ("conv_singular_values-dilation", lambda v: conv_singular_values(delta_weight(), 4, dilation=v), 2),
    ("operator_singular_values-input_shape", lambda v: operator_singular_values(lambda x: 2 * x, (1, v)), 3),
]

ACCEPTED_INTS = {
    "np.int64": np.int64,
    "np.int32": np.int32,
    "0-d-tensor": torch.tensor,
    "0-d-ndarray": np.array,
}
REFUSED_INTS = {
    "str": str,
    "integral-float": float,
    "float": lambda v: v + 0.5,
    "bool": lambda v: True,
    "1-d-tensor": lambda v: torch.tensor([v]),
}


@pytest.mark.parametrize("kind", list(ACCEPTED_INTS))
@pytest.mark.parametrize(("fn", "value"), [pytest.param(fn, v, id=name) for name, fn, v in INT_CASES])
def test_integer_types_are_accepted_with_the_same_result(fn: Callable, value: int, kind: str) -> None:
    assert canonical(fn(ACCEPTED_INTS[kind](value))) == canonical(fn(value))


@pytest.mark.parametrize("kind", list(REFUSED_INTS))
@pytest.mark.parametrize(("fn", "value"), [pytest.param(fn, v, id=name) for name, fn, v in INT_CASES])
def test_non_integers_are_a_type_error(fn: Callable, value: int, kind: str) -> None:
    with pytest.raises(TypeError, match="must be an integer"):
        fn(REFUSED_INTS[kind](value))


# (id, function of the real number, a valid plain value exact in float32)
REAL_CASES: list[tuple[str, Callable[[Any], Any], float]] = [
    ("degree_for_sparsity-sparsity", lambda v: degree_for_sparsity(8, 8, v), 0.5),
    ("resolve_degree-sparsity", lambda v: resolve_degree(8, 8, sparsity=v), 0.75),
    ("nearest_degree-sparsity", lambda v: nearest_degree(64, 64, sparsity=v), 0.875),
    ("ramanujan-sparsity", lambda v: ramanujan(16, 8, sparsity=v, generator=gen()), 0.75),
    ("orthogonal_-gain", lambda v: orthogonal_(torch.empty(4, 6), gain=v, generator=gen()), 1.5),
    ("sao_-sparsity", lambda v: sao_(torch.empty(8, 8), sparsity=v, generator=gen()), 0.5),
    ("sao_-gain", lambda v: sao_(torch.empty(8, 8), degree=4, gain=v, generator=gen()), 1.5),
    ("ramanujan_normal_-gain", lambda v: ramanujan_normal_(torch.empty(8, 8), degree=4, gain=v, generator=gen()),
     1.5),
    ("ramanujan_uniform_-sparsity", lambda v: ramanujan_uniform_(torch.empty(8, 8), sparsity=v, generator=gen()),
     0.5),
    ("delta_orthogonal_-gain", lambda v: delta_orthogonal_(torch.empty(4, 4, 3, 3), gain=v, generator=gen()), 1.5),
    ("sao_delta_-sparsity", lambda v: sao_delta_(torch.empty(8, 8, 3, 3), sparsity=v, generator=gen()), 0.5),
    ("eco_-gain", lambda v: eco_(torch.empty(4, 4, 3, 3), gain=v, generator=gen()), 1.5),
    ("sao_eco_-sparsity", lambda v: sao_eco_(torch.empty(8, 8, 3, 3), sparsity=v, generator=gen()), 0.5),
    ("eoi_-density", lambda v: eoi_(torch.empty(8, 8), density=v, generator=gen()), 0.5),
    ("eoi_with_mask_-sparsity", lambda v: eoi_with_mask_(torch.empty(8, 8), sparsity=v, generator=gen()), 0.75),
    ("eoi_-gain", lambda v: eoi_(torch.empty(8, 8), density=0.5, gain=v, generator=gen()), 1.5),
    ("eoi_delta_-density", lambda v: eoi_delta_(torch.empty(8, 8, 3, 3), density=v, generator=gen()), 0.5),
    ("eoi_target_nonzeros-density", lambda v: eoi_target_nonzeros(8, 8, density=v), 0.25),
    ("TrainConfig-lr", lambda v: TrainConfig(lr=v), 0.25),
    ("TrainConfig-momentum", lambda v: TrainConfig(momentum=v), 0.5),
    ("ModelConfig-gain", lambda v: ModelConfig(gain=v), 1.5),
    ("MethodConfig-sparsity", lambda v: MethodConfig(sparsity=v), 0.5),
    ("LaunchOptions-gpus_per_run", lambda v: LaunchOptions(gpus_per_run=v), 0.5),
]

ACCEPTED_REALS = {
    "np.float32": np.float32,
    "np.float64": np.float64,
    "0-d-tensor": torch.tensor,
    "0-d-ndarray": np.array,
}
REFUSED_REALS = {
    "str": (str, TypeError),
    "bool": (lambda v: True, TypeError),
    "1-d-tensor": (lambda v: torch.tensor([v]), TypeError),
    "complex": (complex, TypeError),
    "nan": (lambda v: float("nan"), ValueError),
    "inf": (lambda v: float("inf"), ValueError),
}


@pytest.mark.parametrize("kind", list(ACCEPTED_REALS))
@pytest.mark.parametrize(("fn", "value"), [pytest.param(fn, v, id=name) for name, fn, v in REAL_CASES])
def test_real_types_are_accepted_with_the_same_result(fn: Callable, value: float, kind: str) -> None:
    assert canonical(fn(ACCEPTED_REALS[kind](value))) == canonical(fn(value))


@pytest.mark.parametrize("kind", list(REFUSED_REALS))
@pytest.mark.parametrize(("fn", "value"), [pytest.param(fn, v, id=name) for name, fn, v in REAL_CASES])
def test_non_reals_are_refused(fn: Callable, value: float, kind: str) -> None:
    make, error = REFUSED_REALS[kind]
    with pytest.raises(error, match="must be a real number" if error is TypeError else "must be a finite number"):
        fn(make(value))


def test_integer_out_of_range_names_argument_value_and_choices() -> None:
    with pytest.raises(ValueError, match=r"degree=3 is not valid for a 8x8 layer.*all valid: \[1, 2, 4, 8\]"):
        resolve_degree(8, 8, degree=np.int64(3))
    with pytest.raises(ValueError, match=r"depth must be an integer >= 1, got 0"):
        fnn(depth=torch.tensor(0))


# ---------------------------------------------------------------- initializers and their tensors

# every public initializer of sao.init, called with valid arguments for a 2-D or 4-D weight
INITIALIZERS: dict[str, tuple[Callable[[torch.Tensor], Any], int]] = {
    "orthogonal_": (lambda t: orthogonal_(t, generator=gen()), 2),
    "sao_": (lambda t: sao_(t, degree=4, generator=gen()), 2),
    "ramanujan_normal_": (lambda t: ramanujan_normal_(t, degree=4, generator=gen()), 2),
    "ramanujan_uniform_": (lambda t: ramanujan_uniform_(t, degree=4, generator=gen()), 2),
    "eoi_": (lambda t: eoi_(t, density=0.5, generator=gen()), 2),
    "eoi_with_mask_": (lambda t: eoi_with_mask_(t, density=0.5, generator=gen()), 2),
    "delta_orthogonal_": (lambda t: delta_orthogonal_(t, generator=gen()), 4),
    "sao_delta_": (lambda t: sao_delta_(t, degree=4, generator=gen()), 4),
    "eco_": (lambda t: eco_(t, generator=gen()), 4),
    "sao_eco_": (lambda t: sao_eco_(t, degree=4, generator=gen()), 4),
    "eoi_delta_": (lambda t: eoi_delta_(t, density=0.5, generator=gen()), 4),
    "eoi_delta_with_mask_": (lambda t: eoi_delta_with_mask_(t, density=0.5, generator=gen()), 4),
}
SHAPES = {2: (8, 8), 4: (8, 8, 3, 3)}
EMPTY_SHAPES = {2: [(0, 4), (4, 0), (0, 0)], 4: [(0, 4, 3, 3), (4, 0, 3, 3), (4, 4, 0, 0), (4, 4, 0, 3)]}


def test_every_public_initializer_is_covered() -> None:
    assert set(INITIALIZERS) == set(sao.init.__all__)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64],
                         ids=str)
@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_initializers_refuse_non_floating_tensors(name: str, dtype: torch.dtype) -> None:
    init, dims = INITIALIZERS[name]
    tensor = torch.ones(SHAPES[dims], dtype=dtype)
    with pytest.raises(TypeError, match=rf"needs a floating-point tensor .*got dtype {re.escape(str(dtype))}"):
        init(tensor)
    assert bool((tensor == 1).all()), "nothing was written"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_initializers_fill_floating_tensors(name: str, dtype: torch.dtype) -> None:
    init, dims = INITIALIZERS[name]
    out = init(torch.zeros(SHAPES[dims], dtype=dtype))
    weight = out[0] if isinstance(out, tuple) else out
    assert weight.dtype == dtype and bool(weight.ne(0).any())


@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_initializers_refuse_non_tensors(name: str) -> None:
    init, dims = INITIALIZERS[name]
    with pytest.raises(TypeError, match=r"expects a torch\.Tensor, got list"):
        init(torch.zeros(SHAPES[dims]).tolist())


@pytest.mark.parametrize(("name", "shape"), [pytest.param(name, shape, id=f"{name}-{shape}")
                                             for name, (_, dims) in INITIALIZERS.items()
                                             for shape in EMPTY_SHAPES[dims]])
def test_empty_tensors_are_returned_unchanged_as_by_torch(name: str, shape: tuple[int, ...]) -> None:
    assert torch.nn.init.orthogonal_(torch.empty(shape)).shape == shape  # torch: a no-op, no error
    tensor = torch.empty(shape, dtype=torch.float64)
    out = INITIALIZERS[name][0](tensor)
    if name.endswith("_with_mask_"):
        out, mask = out
        assert mask.dtype == torch.bool and mask.shape == shape
    assert out is tensor and out.shape == shape and out.dtype == torch.float64


def test_checks_run_in_torch_order_dims_then_dtype_then_empty() -> None:
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        orthogonal_(torch.zeros(3, dtype=torch.int64))  # torch.nn.init.orthogonal_ raises ValueError here too
    with pytest.raises(ValueError, match="Only tensors with 2 or more dimensions"):
        torch.nn.init.orthogonal_(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"dtype torch\.int64"):
        orthogonal_(torch.zeros(0, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="must be a real number"):
        sao_(torch.empty(0, 4), degree=4, gain="1")  # shape-free arguments are still checked


@pytest.mark.parametrize(("bounds", "words"), [
    ({"low": 0.0, "low_open": True}, "in (0, inf)"),
    ({"low": 0.0}, "in [0, inf)"),
    ({"high": 1.0}, "in (-inf, 1]"),
    ({"high": 1.0, "high_open": True}, "in (-inf, 1)"),
    ({}, "in (-inf, inf)"),
    ({"low": 0.0, "high": 1.0, "high_open": True}, "in [0, 1)"),
])
def test_a_range_names_its_infinite_ends_open(bounds: dict, words: str) -> None:
    """Infinities are refused, so an unbounded end is open: once ``gain=inf`` was refused as outside ``(0, inf]``."""
    from sao._validation import as_real

    for value in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValueError, match=re.escape(f"gain must be a finite number {words}, got {value!r}")):
            as_real(value, "gain", **bounds)
