"""``form="auto"``: the operator form ONNX Runtime runs fastest, measured per layer shape.

For a sparse layer every candidate — ``"dense"`` and each block form (:data:`sao.export.FORMS`) at each block
count it can run with (the layer's ``g``, ``g/2``, … down to 2: :meth:`LayerSpec.coarsenings`) — is built as
it runs in the deployable model (a linear block form with its gather and, conservatively, its own transposes
into and out of the feature-major layout; a convolution with its channel gather; the activation that follows
the layer, which ONNX Runtime fuses into ``Conv``/``Gemm``), exported with the same exporter, and timed in an
ONNX Runtime session with the requested thread count on an input of the requested batch size.

So that weights come from the level of the memory hierarchy they come from in the model, a candidate is timed
as distinct copies of the layer, as many as the model has layers of that shape (:func:`copies_for`: at most
:data:`MAX_COPIES`, and no more than :data:`FOOTPRINT_BYTES` of the candidate's weights in all, which is beyond
the last-level cache of usual CPUs): chained where the layer keeps its input's shape, else side by side and
summed. The time per copy is the median over runs divided by the number of copies. Candidates are measured once
per shape signature, batch size and thread count, and exported once per shape signature (:class:`FormTimer`
caches both; pass one timer to several calls to share them).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sao.export._forms import FORMS, ort_unavailable
from sao.export._modules import FromFeatureMajor, Gather, ToFeatureMajor
from sao.export._onnx import export_proto, ort_session, require
from sao.export._spec import LayerSpec

__all__ = ["FOOTPRINT_BYTES", "MAX_COPIES", "Candidate", "FormTimer", "candidates", "copies_for"]

MAX_COPIES = 1024
#: weight bytes the copies of one candidate span at most (beyond the last-level cache of usual CPUs)
FOOTPRINT_BYTES = 64 << 20
MIN_RUNS, MAX_RUNS, MIN_TIME_S = 5, 200, 0.1


@dataclass(frozen=True)
class Candidate:
    """One way to run a layer: a form and, for a block form, its number of blocks."""

    form: str
    groups: int = 1

    @property
    def label(self) -> str:
        return self.form if not FORMS.get(self.form).blocked else f"{self.form}/{self.groups}"


def candidates(spec: LayerSpec) -> list[Candidate]:
    """Every candidate for ``spec``: ``dense``, then each available block form at each of its block counts (but
    the forms ONNX Runtime cannot run in the layer's dtype, see :func:`~sao.export._forms.ort_unavailable`)."""
    found = [Candidate("dense")]
    for name in FORMS:
        form = FORMS.get(name)
        if form.blocked and form.unavailable(spec) is None and ort_unavailable(name, spec) is None:
            found += [Candidate(name, g) for g in spec.coarsenings()]
    return found


def copies_for(module: nn.Module, count: int) -> int:
    """How many copies of the candidate ``module`` time a layer the model holds ``count`` times (module docstring)."""
    weight_bytes = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    return max(1, min(count, MAX_COPIES, math.ceil(FOOTPRINT_BYTES / max(weight_bytes, 1))))


class _FeatureMajorCandidate(nn.Module):
    """A linear block form as a lone layer: into the feature-major layout, gather, block product, activation
    (and the gather back, for a self-contained layer), back to the input's layout."""

    def __init__(self, body: nn.Module, rank: int) -> None:
        super().__init__()
        self.enter, self.body, self.exit = ToFeatureMajor(), body, FromFeatureMajor(rank)

    def forward(self, x: Tensor) -> Tensor:
        return self.exit(self.body(self.enter(x)), x)


def _candidate_module(spec: LayerSpec, candidate: Candidate, activation: nn.Module | None, rank: int,
                      generator: torch.Generator, standalone: bool) -> nn.Module:
    lowered = FORMS.get(candidate.form).lower(spec, candidate.groups if candidate.form != "dense" else None)
    act = activation if activation is not None else nn.Identity()
    if lowered.in_order is None:
        return nn.Sequential(lowered.core, act).eval()
    body = [Gather(1, torch.randperm(spec.in_features, generator=generator)), lowered.core, act]
    if standalone:
        body.append(Gather(1, torch.randperm(spec.out_features, generator=generator)))
    if lowered.feature_major:
        return _FeatureMajorCandidate(nn.Sequential(*body), rank).eval()
    return nn.Sequential(*body).eval()


class _Together(nn.Module):
    """Every candidate on one input (one export for all; each is cut out of the ONNX graph afterwards)."""

    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        self.candidates = nn.ModuleList(modules)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(module(x) for module in self.candidates)


def _exported(modules: list[nn.Module], x: Tensor) -> list[Any]:
    """The ONNX model of each module in ``modules``, from one export of them all."""
    onnx = require("onnx")
    if len(modules) == 1:
        return [export_proto(modules[0], x)]
    whole = export_proto(_Together(modules).eval(), x, outputs=len(modules))
    extractor = onnx.utils.Extractor(whole)
    return [extractor.extract_model([whole.graph.input[0].name], [output.name]) for output in whole.graph.output]


def replicate(proto: Any, copies: int, chain: bool) -> Any:
    """``copies`` renamed copies of the one-input, one-output ONNX model ``proto``: chained (each copy's output
    is the next one's input) or side by side on the same input with a ``Sum`` of their outputs.

    Each copy's floating-point weights are scaled by a different factor ``1 + i·2⁻²⁰``: ONNX Runtime shares
    initializers of equal content, which would keep one copy of the weights in the cache for all.
    """
    onnx = require("onnx")
    from onnx import numpy_helper

    graph = proto.graph
    source, sink = graph.input[0].name, graph.output[0].name
    nodes, initializers, outputs, previous = [], [], [], source
    for i in range(copies):
        names = {source: previous if chain else source, "": ""}

        def rename(name: str, i: int = i, names: dict[str, str] = names) -> str:
            return names.setdefault(name, f"c{i}/{name}")

        for tensor in graph.initializer:
            values = numpy_helper.to_array(tensor)
            if i and values.dtype.kind == "f":
                values = values * values.dtype.type(1 + i * 2.0**-20)
            initializers.append(numpy_helper.from_array(values, rename(tensor.name)))
        for node in graph.node:
            copied = onnx.NodeProto()
            copied.CopyFrom(node)
            copied.input[:] = [rename(n) for n in node.input]
            copied.output[:] = [rename(n) for n in node.output]
            copied.name = f"c{i}/{node.name}"
            nodes.append(copied)
        previous = rename(sink)
        outputs.append(previous)
    if not chain:
        nodes.append(onnx.helper.make_node("Sum", outputs, ["total"]))
        previous = "total"
    out = onnx.helper.make_tensor_value_info(previous, graph.output[0].type.tensor_type.elem_type, None)
    new = onnx.helper.make_graph(nodes, "copies", list(graph.input), [out], initializers)
    model = onnx.helper.make_model(new, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    model.functions.extend(proto.functions)
    return model


def _time(session: Any, x: Tensor) -> float:
    """Median seconds of one run of ``session`` on ``x`` (after a warm-up run), over at least :data:`MIN_RUNS`
    runs and :data:`MIN_TIME_S` seconds."""
    feed = {session.get_inputs()[0].name: x.numpy()}
    session.run(None, feed)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < MIN_RUNS or (time.perf_counter() - started < MIN_TIME_S and len(times) < MAX_RUNS):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass
class FormTimer:
    """Measures and caches the candidates' times (seconds per layer call) per shape signature.

    Args:
        threads: ONNX Runtime intra-op threads of the timing sessions.
        verbose: print progress to stderr.
        seed: the random gathers of the candidates.
    """

    threads: int = 1
    verbose: bool = True
    seed: int = 0
    cache: dict[tuple, dict[str, float]] = field(default_factory=dict)
    exported: dict[tuple, Any] = field(default_factory=dict, repr=False)
    log: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr, flush=True))

    @staticmethod
    def signature(spec: LayerSpec, shape: tuple[int, ...], activation: nn.Module | None,
                  standalone: bool = False) -> tuple:
        """What a layer's candidates depend on: kind, sizes, blocks, bias, convolution settings, the input shape
        without its batch, the activation after it, whether it runs self-contained (gathers back its outputs), the
        dtype."""
        dense = spec.dense
        conv = ((tuple(dense.kernel_size), tuple(dense.stride), str(dense.padding), tuple(dense.dilation),
                 dense.padding_mode) if spec.kind == "conv" else ())
        return (spec.kind, spec.in_features, spec.out_features, spec.num_blocks, spec.bias is not None, conv,
                tuple(shape[1:]), type(activation).__name__, standalone, str(dense.weight.dtype))

    def measure(self, name: str, spec: LayerSpec, shape: tuple[int, ...], activation: nn.Module | None,
                count: int = 1, standalone: bool = False) -> dict[str, float]:
        """Seconds per call of each candidate (by label) for ``spec`` on inputs of ``shape`` (batch included),
        for a model holding ``count`` layers of this signature; ``standalone``: the layer runs self-contained
        (inside a module that cannot be traced), so a block form also gathers its outputs back."""
        signature = self.signature(spec, shape, activation, standalone)
        key = (*signature, shape[0], count, self.threads)
        if key in self.cache:
            return self.cache[key]
        generator = torch.Generator().manual_seed(self.seed)
        x = torch.randn(shape, generator=generator).to(spec.dense.weight.dtype)  # the model's dtype
        if signature not in self.exported:
            built = {c: _candidate_module(spec, c, activation, len(shape), generator, standalone)
                     for c in candidates(spec)}
            with torch.no_grad():
                chains = {c: tuple(module(x).shape) == tuple(shape) for c, module in built.items()}
            protos = _exported(list(built.values()), x)
            self.exported[signature] = {c: (proto, chains[c], module) for (c, module), proto in
                                        zip(built.items(), protos, strict=True)}
        times: dict[str, float] = {}
        for candidate, (proto, chain, module) in self.exported[signature].items():
            copies = copies_for(module, count)
            times[candidate.label] = _time(ort_session(replicate(proto, copies, chain), self.threads), x) / copies
            if self.verbose:
                self.log(f"[sao.export] {name}: {candidate.label:<12} {times[candidate.label] * 1e6:9.1f} µs "
                         f"(batch {shape[0]}, {copies} cop{'ies' if copies > 1 else 'y'}, "
                         f"{'chained' if chain else 'summed'})")
        self.cache[key] = times
        return times
