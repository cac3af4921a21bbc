"""Model-zoo speed: models made sparse with ``sao.sparsify`` (defaults) vs their masked and dense twins.

Models, random weights, no downloads (inputs CIFAR-shaped, 3x32x32, or 1024 features for the FNN):
``resnet18-cifar`` (torchvision ResNet-18, 3x3 stride-1 stem, no max-pool), ``cnn8``/``cnn32``
(``sao.models.cnn(N, width=128, activation="relu")``), ``vgg11``, ``mobilenet_v2`` (torchvision,
10 classes), ``fnn1000`` (``sao.models.fnn(depth=1000)``) and ``vit-small`` (torchvision
``VisionTransformer``, 32x32 images, 4x4 patches, 6 layers, 6 heads, width 384, MLP 1536).

For each model and sparsity the variants are built as a new user would, from the same seed:

- ``dense``: the architecture untouched (PyTorch's/torchvision's default init);
- ``sao``: ``sao.sparsify(model, sparsity=s)`` with its defaults (method ``"sao"``, ``backend="blocked"``,
  first and last weight layers kept dense, ``activation="tanh"``; ``return_summary=True`` only to record
  what it did);
  An exact ``nn.Sequential`` (``fnn1000``) then runs as ``sao``'s ``train()`` runs it:
  ``sao.nn.fuse_sparse_chains(model)`` (same modules and parameters; its chains of ``SparseLinear`` layers on
  their fastest exact route). A plain stack of 1000 small layers called one by one pays PyTorch's per-call
  overhead 1000 times, which no sparsity repays at width 256 (0.79-0.94x dense at sparsity 0.5 measured);
- ``masked``: ``sao.sparsify(model, sparsity=s, backend="masked")`` (the same weights, dense weight x mask);
- ``sao-off``: the ``sao`` model run inside ``with sao.nn.fusion("off"):``;
- ``sparseprop`` (CNNs only, if ``import sparseprop`` works; it builds from source and is no dependency of
  sao: ``pip install pybind11 && pip install --no-build-isolation sparseprop``): every ``SparseConv2d``/
  ``SparseLinear`` of the ``sao`` model replaced by ``sparseprop.modules.SparseConv2d.from_dense``/
  ``SparseLinear.from_dense`` of its ``to_dense()`` twin. SparseProp stores the *non-zero* weights, and an
  SAO-Delta kernel is non-zero only at its centre tap, so the zero taps inside the kernel support
  (``layer.mask``) are first set to ``1e-30``: the peer then has the same trainable support as ``sao`` and
  computes the same function.
  SparseProp uses OpenMP through the ``libgomp`` that torch loads, so ``--threads`` applies to it too.
  Its batch-vectorised convolution (``from_dense``'s default) gave wrong results at batch 1 and 4 (right at
  8, 16, 64; sparseprop 0.1.14), so a batch that is not a multiple of 8 uses its ``vectorizing_over_on=True``
  kernels, which were right at batch 1 for stride-1 convolutions only (stride 2 always takes the other):
  every SparseProp output is checked against ``sao`` and a wrong one is marked ``✗``. Its outputs are
  views made inside a custom autograd Function, which autograd forbids to modify in place, so the peer's
  in-place activations (VGG's ``ReLU(inplace=True)``) are switched to out-of-place.

Modes (``--modes``): ``train`` = one SGD step (``zero_grad(set_to_none=True)``, forward, cross-entropy on
random labels, backward, SGD with momentum 0.9), batch ``--batch-size``, train mode; ``infer1``/``infer64``
= forward under ``torch.inference_mode()`` in eval mode at batch 1 / ``--batch-size``. All float32. The
variants of one row are timed round-robin (``_common.measure_interleaved`` via ``measure_uncontended``), so
their ratios are fair under load; ``other procs`` is how many cores other processes used meanwhile
(⚠ above 0.2; ``--retries`` re-measures such rows, 0 by default: on a shared machine another process
on one of the cores can slow a multi-threaded step several-fold, and not every variant alike).

Columns: ``dense / sao`` etc. are time ratios (above 1: ``sao`` is faster). ``FLOPs`` is dense
multiply-adds / sparse multiply-adds of the whole model per sample: the dense total is counted with
``torch.utils.flop_counter.FlopCounterMode`` on the dense model (attention included), each sparsified
layer's dense share with forward hooks, and that share is scaled by the layer's density ``1 - .sparsity``.
``bound`` is what the dense model would gain if every sparsified layer ran at its FLOP ratio and nothing
else changed: ``T_dense / (T_dense - Σ t_l + Σ t_l / r_l)``. ``t_l`` is measured **in isolation**: a forward
hook records each sparsified layer's input shape in the dense model; a copy of the dense layer is timed on
a random input of that shape (``train``: forward + ``backward`` of a random output gradient, the input
requiring grad, parameter grads reset to ``None``; ``infer*``: forward under inference mode), layers of
equal configuration and input shape timed once, round-robin with the dense step itself in one
``measure_interleaved`` call (so ``t_l / T_dense`` is fair under load). ``layers %`` is ``Σ t_l / T_dense``:
near or above 100 % the isolated times overstate what the layers take inside the model, and the part
outside them is then taken as 0. The profile is taken once per model and mode (it does not depend on the
sparsity); as it serves every sparsity, it is re-measured while other processes interfere (``--profile-retries``,
default 2, 20 s apart; the attempt with the least interference is kept, its ``other procs`` is in the JSON).

``--profile MODEL:SPARSITY[:MODE]`` prints instead where the ``sao`` model's time goes (``torch.profiler``, self
CPU time per op over a few steps, grouped: the compiled convolution's forward and backward, other
convolutions, gathers, normalisation, activations, pooling, copies, the optimizer, the rest) next to the
dense model's: where a target is out of reach, this says where the time goes.

Run ``python benchmarks/bench_models.py [--quick] [--models cnn8 vgg11] [--sparsities 0.5 0.96875]
[--modes train,infer1,infer64] [--batch-size 64] [--threads 2] [--no-sparseprop] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import sao
from _common import (
    add_timing_args,
    fmt_other_load,
    fmt_time,
    machine_info,
    markdown_table,
    measure_uncontended,
    print_header,
    set_threads,
    write_json,
)
from sao.methods.adapters import adapt_layers
from sao.models import cnn, fnn
from sao.nn import SparseConv2d, SparseLinear, fusable_container, fuse_sparse_chains, fusion

DEFAULT_JSON = "benchmarks/results_models.json"
VARIANTS = ("dense", "masked", "sao", "sao-off", "sparseprop")
MODES = ("train", "infer1", "infer64")
SPARSEPROP_FILL = 1e-30  # stands in for a zero weight inside the SAO support (SparseProp drops exact zeros)
SPARSEPROP_TOL = 1e-3  # max|Δlogits| / max|logits of sao| above which a SparseProp output counts as wrong


def _resnet18_cifar() -> nn.Module:
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _vgg11() -> nn.Module:
    import torchvision

    return torchvision.models.vgg11(num_classes=10)


def _mobilenet_v2() -> nn.Module:
    import torchvision

    return torchvision.models.mobilenet_v2(num_classes=10)


def _vit_small() -> nn.Module:
    import torchvision

    return torchvision.models.VisionTransformer(image_size=32, patch_size=4, num_layers=6, num_heads=6,
                                                hidden_dim=384, mlp_dim=1536, num_classes=10)


IMAGE = (3, 32, 32)
# name -> (builder, shape of one input sample, SparseProp peer measured)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], bool]] = {
    "resnet18-cifar": (_resnet18_cifar, IMAGE, True),
    "cnn8": (lambda: cnn(8, width=128, activation="relu"), IMAGE, True),
    "cnn32": (lambda: cnn(32, width=128, activation="relu"), IMAGE, True),
    "vgg11": (_vgg11, IMAGE, True),
    "mobilenet_v2": (_mobilenet_v2, IMAGE, True),
    "fnn1000": (lambda: fnn(depth=1000), (1024,), False),
    "vit-small": (_vit_small, IMAGE, False),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- building the variants

def build(name: str, seed: int, sparsity: float | None = None, backend: str = "blocked"
          ) -> tuple[nn.Module, Any, list[str]]:
    """``name`` from ``seed``; with ``sparsity``, made sparse by ``sao.sparsify`` (its summary and warnings too)."""
    torch.manual_seed(seed)
    model = MODELS[name][0]()
    if sparsity is None:
        return model, None, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, summary = sao.sparsify(model, sparsity=sparsity, backend=backend, return_summary=True)
    if backend == "blocked" and fusable_container(model) is None:
        model = fuse_sparse_chains(model)  # as sao's train() runs an exact nn.Sequential (FNN-1000): chains fused
    return model, summary, [str(w.message) for w in caught]


def sparse_layers(model: nn.Module) -> dict[str, SparseConv2d | SparseLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (SparseConv2d, SparseLinear))}


def _sparseprop_ok(layer: nn.Module) -> bool:
    """Whether SparseProp's convolution can run ``layer`` (square kernel, equal stride 1 or 2, plain padding)."""
    if isinstance(layer, SparseLinear):
        return True
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    return (k[0] == k[1] and s[0] == s[1] and s[0] in (1, 2) and isinstance(p, tuple) and p[0] == p[1]
            and tuple(layer.dilation) == (1, 1) and layer.padding_mode == "zeros")


def to_sparseprop(model: nn.Module) -> tuple[nn.Module, int, int] | None:
    """A copy of the ``sao`` model with its sparse layers as SparseProp modules (``None`` without SparseProp).

    Returns ``(peer, converted, kept)``: layers SparseProp cannot run stay ``sao`` layers (``kept``).
    """
    try:
        from sparseprop.modules import SparseConv2d as PeerConv2d
        from sparseprop.modules import SparseLinear as PeerLinear
    except ImportError:
        return None
    peer = copy.deepcopy(model)
    converted = kept = 0
    for name, layer in sparse_layers(peer).items():
        if not _sparseprop_ok(layer):
            kept += 1
            continue
        dense = layer.to_dense()
        with torch.no_grad():
            support = layer.mask.to(torch.bool)
            if dense.weight.dim() == 4:
                support = support[:, :, None, None].expand_as(dense.weight)
            dense.weight.copy_(torch.where(support & (dense.weight == 0), SPARSEPROP_FILL, dense.weight))
        new = (PeerConv2d if isinstance(layer, SparseConv2d) else PeerLinear).from_dense(dense)
        peer.set_submodule(name, new)
        converted += 1
    for m in peer.modules():  # SparseProp's outputs are views made in a custom Function: no in-place op on them
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    return peer, converted, kept


def set_sparseprop_over_on(peer: nn.Module, on: bool) -> None:
    """Switch SparseProp's convolutions between batch-vectorised (``False``) and output-vectorised kernels."""
    for m in peer.modules():
        if hasattr(m, "set_vectorizing_over_on"):
            m.set_vectorizing_over_on(on)


# ---------------------------------------------------------------- what is timed

def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return step


def infer(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model(x)
    return run


def fusion_off(fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        with fusion("off"):
            fn()
    return run


def mode_fn(mode: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    return train_step(model, x, y) if mode == "train" else infer(model, x)


def set_mode(models: list[nn.Module | None], mode: str) -> None:
    for m in models:
        if m is not None:
            m.train(mode == "train")


def batch_of(mode: str, args: argparse.Namespace) -> int:
    return 1 if mode == "infer1" else args.batch_size


def data(shape: tuple[int, ...], batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(batch, *shape, generator=gen), torch.randint(0, 10, (batch,), generator=gen)


# ---------------------------------------------------------------- FLOPs and the bound

def macs_per_sample(dense: nn.Module, shape: tuple[int, ...]) -> tuple[float, dict[str, float]]:
    """Multiply-adds of one forward of ``dense`` on one sample: the total and each Conv2d/Linear's share."""
    per_layer: dict[str, float] = {}

    def hook(name: str):
        def record(m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1]
                per_layer[name] = per_layer.get(name, 0.0) + out.numel() * (m.in_channels // m.groups) * k
            else:
                per_layer[name] = per_layer.get(name, 0.0) + out.numel() * m.in_features
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in dense.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = dense.training
    dense.eval()
    try:
        # grad mode on: nn.MultiheadAttention then takes its composite path; the math attention backend: its
        # matmuls are counted (FlopCounterMode counts none of the CPU flash attention kernel's)
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
            dense(torch.randn(1, *shape))
    finally:
        dense.train(was_training)
        for h in handles:
            h.remove()
    return counter.get_total_flops() / 2, per_layer


def standard_form(dense: nn.Module) -> nn.Module:
    """A copy of ``dense`` whose adaptable modules are in the standard form sparsify sees (attention with its
    four projections as ``nn.Linear`` layers: ``sao.methods.adapters``), so its layers have the sparse model's names."""
    copied = copy.deepcopy(dense)
    adapt_layers(copied)
    return copied


def flop_ratio(total: float, per_layer: dict[str, float], densities: dict[str, float]) -> float:
    return total / (total - sum(per_layer[n] * (1.0 - d) for n, d in densities.items()))


def _signature(m: nn.Module, shape: tuple[int, ...]) -> tuple:
    if isinstance(m, nn.Conv2d):
        return ("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                m.bias is not None, shape)
    return ("linear", m.in_features, m.out_features, m.bias is not None, shape)


def layer_fn(layer: nn.Module, shape: tuple[int, ...], mode: str) -> Callable[[], None]:
    """The dense layer's forward (+ backward for ``train``) on a random input of ``shape``."""
    x = torch.randn(shape)
    if mode != "train":
        def run_infer() -> None:
            with torch.inference_mode():
                layer(x)
        return run_infer
    x.requires_grad_(True)
    with torch.no_grad():
        g = torch.randn_like(layer(x))
    params = list(layer.parameters())

    def run_train() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        layer(x).backward(g)
    return run_train


def layer_profile(dense: nn.Module, dense_fn: Callable[[], None], x: torch.Tensor, names: set[str], mode: str,
                  args: argparse.Namespace) -> dict[str, Any]:
    """Time of the dense step and, in isolation, of each layer in ``names`` (see the module docstring)."""
    shapes: dict[str, tuple[int, ...]] = {}
    modules = dict(dense.named_modules())

    def hook(name: str):
        def record(_m: nn.Module, inp: tuple[torch.Tensor, ...], _out: Any) -> None:
            shapes.setdefault(name, tuple(inp[0].shape))
        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            dense(x)
    finally:
        for h in handles:
            h.remove()
    groups: dict[tuple, list[str]] = {}
    for n in sorted(shapes):
        groups.setdefault(_signature(modules[n], shapes[n]), []).append(n)
    fns: dict[str, Callable[[], None]] = {"dense": dense_fn}
    for i, (sig, members) in enumerate(groups.items()):
        fns[f"layer{i}"] = layer_fn(copy.deepcopy(modules[members[0]]), sig[-1], mode)
    times, other, _ = measure_uncontended(fns, warmup=args.warmup, repeats=args.repeats,
                                          max_total_s=args.max_case_s * 2, retries=args.profile_retries,
                                          wait_s=args.retry_wait_s)
    layer_s = {n: times[f"layer{i}"].median for i, members in enumerate(groups.values()) for n in members}
    return {"dense_s": times["dense"].median, "layer_s": layer_s, "other": other, "signatures": len(groups),
            "missing": sorted(names - set(shapes))}


def bound(profile: dict[str, Any], densities: dict[str, float]) -> tuple[float, float]:
    """``(bound ratio, layers' share of T_dense)`` for the sparsified layers' ``densities``."""
    total_s = profile["dense_s"]
    t = {n: profile["layer_s"][n] for n in densities if n in profile["layer_s"]}
    summed = sum(t.values())
    scaled = sum(t_l * densities[n] for n, t_l in t.items())  # t_l / r_l, r_l = 1 / density of layer l
    rest = max(0.0, total_s - summed)
    return total_s / (rest + scaled), summed / total_s


# ---------------------------------------------------------------- one model

def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def check_outputs(models: dict[str, nn.Module], x: torch.Tensor) -> dict[str, float]:
    """max|Δlogits| of each variant against ``sao`` on ``x`` (eval mode, inference mode), and max|logits| of
    ``sao`` (``scale``) and ``dense`` (``dense_scale``)."""
    outs = {}
    for name, m in models.items():
        was = m.training
        m.eval()
        with torch.inference_mode():
            if name == "sao-off":
                with fusion("off"):
                    outs[name] = models["sao"](x)
            else:
                outs[name] = m(x)
        m.train(was)
    diffs = {name: max_diff(out, outs["sao"]) for name, out in outs.items() if name not in ("sao", "dense")}
    return diffs | {"scale": outs["sao"].abs().max().item(), "dense_scale": outs["dense"].abs().max().item()}


def run_model(name: str, args: argparse.Namespace, rows: list[dict], info_rows: list[dict],
              profile_rows: list[dict], on_row: Callable[[], None]) -> None:
    _, shape, peer_wanted = MODELS[name]
    started = time.perf_counter()
    dense, _, _ = build(name, args.seed)
    standard = standard_form(dense)  # the dense model with the sparse model's layer names (attention projections)
    flops = macs_per_sample(standard, shape)
    profiles: dict[str, dict[str, Any]] = {}
    inputs = {mode: data(shape, batch_of(mode, args), args.seed) for mode in args.modes}
    for sparsity in args.sparsities:
        log(f"[{name}] sparsity {sparsity:g}: building")
        t0 = time.perf_counter()
        sparse, summary, warns = build(name, args.seed, sparsity)
        masked, _, _ = build(name, args.seed, sparsity, backend="masked")
        build_s = time.perf_counter() - t0
        layers = sparse_layers(sparse)
        densities = {n: 1.0 - float(m.sparsity) for n, m in layers.items()}
        peer = None
        peer_info = "not measured"
        if peer_wanted and not args.no_sparseprop:
            made = to_sparseprop(sparse)
            if made is None:
                peer_info = "not installed"
            else:
                peer, converted, kept = made
                peer_info = f"{converted} layers converted, {kept} kept as sao"
        statuses: dict[str, int] = {}
        for r in summary.layers:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        fr = flop_ratio(flops[0], flops[1], densities)
        info_rows.append({"model": name, "sparsity": sparsity, "statuses": statuses,
                          "overall_sparsity": summary.sparsity,
                          "sparse_layers": len(layers), "dense_params": sum(p.numel() for p in dense.parameters()),
                          "sao_params": sum(p.numel() for p in sparse.parameters()),
                          "dense_macs_per_sample": flops[0], "flop_ratio": fr, "warnings": warns,
                          "sparseprop": peer_info, "build_s": build_s,
                          "kinds_left_dense": sorted({r.kind for r in summary.layers if r.status == "skipped"})})
        if warns:
            log(f"[{name}] sparsify warned: {warns[0][:300]}")
        variants = {"dense": dense, "masked": masked, "sao": sparse, "sao-off": sparse}
        if peer is not None:
            variants["sparseprop"] = peer
        checks = {}  # before any training step changes the weights
        for mode in args.modes:
            if peer is not None:
                set_sparseprop_over_on(peer, batch_of(mode, args) % 8 != 0)
            checks[mode] = check_outputs(variants, inputs[mode][0])
        for mode in args.modes:
            x, y = inputs[mode]
            batch = x.shape[0]
            set_mode([dense, sparse, masked, peer], mode)
            if peer is not None:
                set_sparseprop_over_on(peer, batch % 8 != 0)
            diffs = checks[mode]
            fns = {v: mode_fn(mode, m, x, y) for v, m in variants.items() if v != "sao-off"}
            fns["sao-off"] = fusion_off(fns["sao"])
            fns = {v: fns[v] for v in VARIANTS if v in fns}
            if mode not in profiles or not set(densities) <= set(profiles[mode]["layer_s"]):
                log(f"[{name}] {mode}: profiling the dense layers")
                wanted = set(densities) | set(profiles.get(mode, {}).get("layer_s", {}))
                profiles[mode] = layer_profile(standard, fns["dense"], x, wanted, mode, args)
                p = profiles[mode]
                profile_rows.append({"model": name, "mode": mode, "batch": batch, "dense_s": p["dense_s"],
                                     "layer_s": p["layer_s"], "signatures": p["signatures"],
                                     "other_cores": p["other"], "missing": p["missing"]})
            bound_ratio, share = bound(profiles[mode], densities)
            log(f"[{name}] sparsity {sparsity:g}, {mode} (batch {batch}): timing {', '.join(fns)}")
            times, other, attempts = measure_uncontended(fns, warmup=args.warmup, repeats=args.repeats,
                                                         max_total_s=args.max_case_s, retries=args.retries,
                                                         wait_s=args.retry_wait_s)
            med = {v: m.median for v, m in times.items()}
            peer_ok = None
            if "sparseprop" in diffs:
                peer_ok = diffs["sparseprop"] <= SPARSEPROP_TOL * diffs["scale"] or diffs["sparseprop"] == 0
            row = {"model": name, "sparsity": sparsity, "mode": mode, "batch": batch,
                   **{f"{v}_s": t for v, t in med.items()}, **{f"{v}_iqr_s": m.iqr for v, m in times.items()},
                   "repeats": times["dense"].repeats,
                   "dense_over_sao": med["dense"] / med["sao"], "masked_over_sao": med["masked"] / med["sao"],
                   "dense_over_sao_off": med["dense"] / med["sao-off"],
                   "masked_over_sao_off": med["masked"] / med["sao-off"],
                   "sao_off_over_sao": med["sao-off"] / med["sao"],
                   "dense_over_sparseprop": med["dense"] / med["sparseprop"] if "sparseprop" in med else None,
                   "sparseprop_correct": peer_ok, "flop_ratio": fr, "bound_ratio": bound_ratio,
                   "layers_share_of_dense": share, "max_abs_diff_vs_sao": diffs, "other_cores": other,
                   "attempts": attempts}
            rows.append(row)
            log(f"[{name}] sparsity {sparsity:g}, {mode}: dense {fmt_time(med['dense'])}, "
                + ", ".join(f"dense/{v} {med['dense'] / t:.2f}" for v, t in med.items() if v != "dense")
                + f"; FLOPs {fr:.2f}, bound {bound_ratio:.2f}, other procs {fmt_other_load(other)}")
            del fns
            on_row()
        del sparse, masked, peer, layers, variants
        gc.collect()
    log(f"[{name}] done in {time.perf_counter() - started:.0f} s")
    del dense
    gc.collect()


# ---------------------------------------------------------------- output

def ratio(value: float | None, ok: bool | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" + (" ✗" if ok is False else "")


def print_tables(rows: list[dict], info_rows: list[dict], args: argparse.Namespace) -> None:
    if info_rows:
        print("## What sparsify did\n")
        table = [[r["model"], f"{r['sparsity']:g}", r["sparse_layers"],
                  ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items())),
                  "—" if r["overall_sparsity"] is None else f"{r['overall_sparsity']:.4f}",
                  f"{r['dense_macs_per_sample'] / 1e6:.1f} M", f"{r['flop_ratio']:.2f}",
                  f"{r['dense_params'] / 1e6:.2f} M / {r['sao_params'] / 1e6:.2f} M", r["sparseprop"]]
                 for r in info_rows]
        print(markdown_table(["model", "sparsity", "sparse layers", "summary rows", "achieved", "dense MACs/sample",
                              "FLOPs", "params dense / sao", "SparseProp"], table, align="lrrlrrrrl"))
        print()
    for mode in args.modes:
        picked = [r for r in rows if r["mode"] == mode]
        if not picked:
            continue
        what = (f"train step (fwd + cross-entropy + bwd + SGD momentum), batch {args.batch_size}" if mode == "train"
                else f"inference (eval, inference_mode), batch {picked[0]['batch']}")
        print(f"## {mode}: {what}\n")
        table = [[r["model"], f"{r['sparsity']:g}", fmt_time(r["dense_s"]), ratio(r["dense_over_sao"]),
                  ratio(r["masked_over_sao"]), ratio(r["dense_over_sao_off"]),
                  ratio(r["dense_over_sparseprop"], r["sparseprop_correct"]), ratio(r["flop_ratio"]),
                  ratio(r["bound_ratio"]), f"{100 * r['layers_share_of_dense']:.0f} %",
                  fmt_other_load(r["other_cores"])]
                 for r in picked]
        print(markdown_table(["model", "sparsity", "dense", "dense / sao", "masked / sao", "dense / sao (fusion off)",
                              "dense / SparseProp", "FLOPs", "bound", "layers %", "other procs"], table,
                             align="lrrrrrrrrrr"))
        print()


#: Op-name prefixes (lower case) grouped in ``--profile``'s table, in order; the first match wins.
PROFILE_GROUPS = (
    ("compiled conv, backward", ("sparseconvfunctionbackward",)),
    ("compiled conv, forward", ("sparseconvfunction",)),
    ("convolution (oneDNN: dense or grouped)", ("aten::mkldnn_convolution", "aten::convolution_backward",
                                                "aten::_convolution", "aten::convolution", "aten::conv2d")),
    ("matmul / linear", ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::linear")),
    ("gather / scatter (index_select, index_add)", ("aten::index_select", "aten::index_add", "aten::index")),
    ("batch norm", ("aten::native_batch_norm", "aten::batch_norm", "aten::_batch_norm")),
    ("activations", ("aten::relu", "aten::threshold", "aten::tanh", "aten::clamp", "aten::hardtanh")),
    ("pooling", ("aten::max_pool", "aten::avg_pool", "aten::adaptive", "aten::max_pool2d_with_indices")),
    ("elementwise add/mul, copies, fills", ("aten::add", "aten::mul", "aten::copy_", "aten::fill_", "aten::zero_",
                                            "aten::empty", "aten::clone", "aten::contiguous")),
    ("optimizer", ("optimizer.step", "aten::_foreach", "aten::lerp")),
)


def _group(key: str) -> str:
    low = key.lower()
    for label, prefixes in PROFILE_GROUPS:
        if low.startswith(prefixes):
            return label
    return "other"


def profile_model(spec: str, args: argparse.Namespace) -> None:
    """``--profile MODEL:SPARSITY[:MODE]``: where the sparse step's time goes, against the dense step's."""
    from torch.profiler import ProfilerActivity, profile

    name, sparsity, *rest = spec.split(":")
    mode = rest[0] if rest else "train"
    if name not in MODELS or mode not in MODES:
        raise SystemExit(f"--profile {spec}: give MODEL:SPARSITY[:MODE], MODEL one of {', '.join(MODELS)}, "
                         f"MODE one of {', '.join(MODES)}")
    batch = batch_of(mode, args)
    shares: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    for variant, sp in (("dense", None), ("sao", float(sparsity))):
        model, _, _ = build(name, 0, sp)
        set_mode([model], mode)
        x, y = data(MODELS[name][1], batch, 1)
        fn = mode_fn(mode, model, x, y)
        for _ in range(3):  # warm-up: the route probes, oneDNN primitives
            fn()
        steps = 5
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                fn()
        groups: dict[str, float] = {}
        for event in prof.key_averages():
            groups[_group(event.key)] = groups.get(_group(event.key), 0.0) + event.self_cpu_time_total / 1e6 / steps
        shares[variant], totals[variant] = groups, sum(groups.values())
    labels = [label for label, _ in PROFILE_GROUPS] + ["other"]
    rows = [[label, fmt_time(shares["dense"].get(label, 0.0)), fmt_time(shares["sao"].get(label, 0.0)),
             f"{100 * shares['sao'].get(label, 0.0) / totals['sao']:.0f} %"] for label in labels
            if shares["dense"].get(label, 0.0) + shares["sao"].get(label, 0.0) > 0]
    rows.append(["total (self CPU time per step; the profiler's own cost inflates it)", fmt_time(totals["dense"]),
                 fmt_time(totals["sao"]), "100 %"])
    print(f"### Profile: {name} at sparsity {sparsity}, {mode}, batch {batch}, {args.threads} threads\n")
    print(markdown_table(["op group", "dense", "sao", "sao share"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.875, 0.96875])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    parser.add_argument("--no-sparseprop", action="store_true", help="skip the SparseProp peer")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up, short cases (a smoke run)")
    add_timing_args(parser, repeats=5, warmup=2, max_case_s=20.0)
    parser.add_argument("--profile", metavar="MODEL:SPARSITY[:MODE]", action="append", default=[],
                        help="print where the sao model's step time goes (torch.profiler) instead of the tables")
    parser.add_argument("--profile-retries", type=int, default=2,
                        help="re-measure a model's layer profile up to this many times while other processes interfere")
    parser.set_defaults(threads=2, json=DEFAULT_JSON, retries=0)
    args = parser.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in args.modes if m not in MODES]:
        parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    if args.quick:
        args.repeats, args.warmup, args.max_case_s, args.retries, args.profile_retries = 3, 1, 3.0, 0, 0
    threads = set_threads(args.threads)
    if args.profile:
        for spec in args.profile:
            profile_model(spec, args)
        return
    info = {**machine_info(), "threads": threads, "sao_path": sao.__file__}
    try:
        import sparseprop  # noqa: F401

        info["sparseprop"] = "installed"
    except ImportError:
        info["sparseprop"] = "not installed"
    print_header("Model zoo: sao.sparsify (defaults) vs masked vs dense, float32, CPU", info, [
        f"sao imported from {info['sao_path']}",
        f"threads: {threads}; batch {args.batch_size}; sparsities {', '.join(f'{s:g}' for s in args.sparsities)}",
        "ratios are time of the variant named first / time of the second (above 1: the second is faster); "
        "all variants of a row timed round-robin",
        f"SparseProp: {info['sparseprop']}; CNNs only; ✗ = its output differs from sao's (see docstring)",
        "FLOPs = dense / sparse multiply-adds of the whole model; bound = dense gain if every sparsified layer "
        "ran at its FLOP ratio (layer times measured in isolation, `layers %` = their share of the dense time)",
    ])
    rows: list[dict] = []
    info_rows: list[dict] = []
    profile_rows: list[dict] = []

    def save() -> None:
        if args.json:
            write_json(args.json, info, [{"section": "timing", **r} for r in rows]
                       + [{"section": "models", **r} for r in info_rows]
                       + [{"section": "profile", **r} for r in profile_rows], vars(args))

    started = time.perf_counter()
    for name in args.models:
        run_model(name, args, rows, info_rows, profile_rows, save)
    info["total_s"] = time.perf_counter() - started
    save()
    print_tables(rows, info_rows, args)
    print(f"(total {info['total_s'] / 60:.1f} min" + (f"; rows written to {args.json})" if args.json else ")"))


if __name__ == "__main__":
    main()
