"""The public entry points: :func:`deployable`, :func:`to_onnx`, :func:`export_program`, and their record."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx, nn

from sao._atomic import atomic_write_bytes
from sao.export._fold import ELEMENTWISE_MODULES, fold, standalone, trace, unfuse
from sao.export._forms import AUTO, FORMS, Lowered, check_form
from sao.export._measure import Candidate, FormTimer
from sao.export._onnx import batch_dim, export_proto, exportable_example, ort_session
from sao.export._spec import LayerSpec, layer_kind

__all__ = ["DeployReport", "LayerChoice", "deployable", "export_program", "to_onnx"]

RTOL, ATOL = 1e-3, 1e-5


@dataclass(frozen=True)
class LayerChoice:
    """The form one sparse layer got.

    Attributes:
        name: the layer's qualified name in the model.
        kind: ``"linear"`` or ``"conv"``; ``shape``: ``out x in`` (``x kh x kw``); ``num_blocks``: its ``g``
            (1 without a block form).
        form: ``"dense"``, ``"grouped"`` or ``"matmul"``; ``groups``: the blocks it multiplies (``g`` or fewer,
            merged; 1 for ``"dense"``).
        input_shape: the shape of its input on the example (``()`` if it was not called).
        times: ``form="auto"``: seconds per call of every candidate measured (by label, ``"grouped/8"``), on the
            layer's input at the requested batch size; empty for a forced form.
    """

    name: str
    kind: str
    shape: str
    num_blocks: int
    form: str
    groups: int
    input_shape: tuple[int, ...] = ()
    times: Mapping[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return Candidate(self.form, self.groups).label


@dataclass(frozen=True)
class DeployReport:
    """What :func:`deployable` did (``str()`` prints it as a table).

    Attributes:
        form: the ``form=`` asked; ``batch_size``/``threads``: what ``"auto"`` measured with.
        layers: one :class:`LayerChoice` per sparse layer.
        gathers: feature gathers left in the traced graph after folding (block forms need one per layer in a
            chain; 0 when every layer is dense); ``traced``: whether the model was traced (else every layer is
            self-contained, with its own gathers); ``opaque``: submodules run whole (their sparse layers
            self-contained).
        max_error: max |deployable − model| on the example (float32 rounding), ``onnx_error`` the same for the
            ONNX Runtime session of the written file (:func:`to_onnx`), ``path`` that file.
    """

    form: str
    batch_size: int
    threads: int
    layers: tuple[LayerChoice, ...]
    gathers: int
    traced: bool
    opaque: tuple[str, ...] = ()
    max_error: float | None = None
    onnx_error: float | None = None
    path: str | None = None

    def forms(self) -> dict[str, int]:
        """How many layers got each form label."""
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.label] = counts.get(layer.label, 0) + 1
        return counts

    def __str__(self) -> str:
        head = (f"sao.export: form={self.form!r} (batch {self.batch_size}, {self.threads} thread"
                f"{'s' * (self.threads != 1)}): {len(self.layers)} sparse layers, {self.gathers} gathers"
                f"{'' if self.traced else ' (not traced: layers self-contained)'}")
        lines = [head]
        if self.opaque:
            lines.append(f"  run whole (not traced): {', '.join(self.opaque)}")
        groups: dict[tuple, list[LayerChoice]] = {}
        for layer in self.layers:
            key = (layer.kind, layer.shape, layer.num_blocks, layer.label, layer.input_shape[1:])
            groups.setdefault(key, []).append(layer)
        for (kind, shape, g, label, inputs), members in groups.items():
            times = ", ".join(f"{k} {v * 1e6:.1f} µs"
                              for k, v in sorted(members[0].times.items(), key=lambda kv: kv[1]))
            lines.append(f"  {len(members):4d} x {kind} {shape} g={g} on (B, {', '.join(map(str, inputs))}): "
                         f"{label}" + (f"  [{times}]" if times else ""))
        if self.max_error is not None:
            lines.append(f"  max |deployable - model| on the example: {self.max_error:.3g}")
        if self.onnx_error is not None:
            lines.append(f"  max |onnxruntime - deployable| on the example: {self.onnx_error:.3g} ({self.path})")
        return "\n".join(lines)


# ---------------------------------------------------------------- helpers

def _check_example(example: object) -> Tensor:
    if not isinstance(example, Tensor) or example.dim() < 2 or example.shape[0] < 1:
        raise TypeError("example_input must be a batched tensor (batch on dim 0), got "
                        f"{getattr(example, 'shape', type(example).__name__)}")
    return example.detach()


def _check_not_meta(model: nn.Module, example: Tensor) -> None:
    """Raise a ``ValueError`` if ``model`` (a parameter or buffer) or ``example`` is on the meta device."""
    tensors = [example, *model.parameters(), *model.buffers()]
    if any(t.is_meta for t in tensors):
        raise ValueError("a model on the meta device has no values to deploy; materialize it first "
                         "(e.g. model.to_empty(device='cpu') and load its weights) and pass a real example_input")


def _check_ort_dtypes(deploy: nn.Module) -> None:
    """Raise a ``ValueError`` before exporting if ``deploy`` holds a float64 convolution (ONNX Runtime's CPU
    provider has no float64 ``Conv``: the ``"grouped"`` form, or a dense convolution)."""
    for name, module in deploy.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd) and module.weight.dtype == torch.float64:
            raise ValueError(f"ONNX Runtime (CPU) has no torch.float64 Conv kernel, and {name or 'the model'} is a "
                             f"float64 {type(module).__name__}: use form='matmul' or 'dense' for linear layers, "
                             "or convert the model to float32")


def _check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _shape_of(spec: LayerSpec, module: nn.Module) -> str:
    weight = spec.dense.weight
    return "x".join(str(s) for s in (weight.shape[0], spec.in_features, *weight.shape[2:]))


@dataclass
class _Site:
    """A sparse layer of the model: its module, input shape (at the example's batch) and following activation."""

    name: str
    module: nn.Module
    spec: LayerSpec
    shape: tuple[int, ...] | None = None
    activation: nn.Module | None = None
    standalone: bool = True  # not a node of the traced graph: runs self-contained


def _sites(model: nn.Module, example: Tensor, traced: fx.GraphModule | None) -> dict[int, _Site]:
    """Every sparse layer (by module identity), with the shape of its first input on ``example``."""
    sites: dict[int, _Site] = {}
    for name, module in model.named_modules():
        kind = layer_kind(module)
        if kind is not None and id(module) not in sites:
            sites[id(module)] = _Site(name, module, kind.spec(module))
    handles = [site.module.register_forward_pre_hook(
        lambda m, args, site=site: setattr(site, "shape", site.shape or tuple(args[0].shape)))
        for site in sites.values()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    if traced is not None:
        modules = dict(traced.named_modules())
        for node in traced.graph.nodes:
            if node.op == "call_module" and id(modules[node.target]) in sites:
                sites[id(modules[node.target])].standalone = False
            if node.op == "call_module" and id(modules[node.target]) in sites and len(node.users) == 1:
                user = next(iter(node.users))
                follower = modules.get(user.target) if user.op == "call_module" else None
                if type(follower) in ELEMENTWISE_MODULES:
                    sites[id(modules[node.target])].activation = copy.deepcopy(follower)
    return sites


def _forced(site: _Site, form: str) -> Lowered:
    chosen = FORMS.get(form)
    why = chosen.unavailable(site.spec)
    if why is not None:
        valid = [name for name in FORMS if FORMS.get(name).unavailable(site.spec) is None]
        raise ValueError(f"form={form!r} cannot run {site.name or 'the model'} "
                         f"({type(site.module).__name__} {_shape_of(site.spec, site.module)}): {why}; "
                         f"forms it can take: {', '.join([AUTO, *valid])}")
    return chosen.lower(site.spec)


def _measured_shape(seen: tuple[int, ...], batch_size: int, example_batch: int) -> tuple[int, ...]:
    """The input shape a layer is measured at: the one it saw on the example, its first dim scaled by
    ``batch_size / example_batch`` where it is a multiple of the example's batch (rows ``L·B`` of attention's
    projections become ``L·batch_size``), else as seen."""
    first = seen[0]
    if first % example_batch == 0:
        first = first // example_batch * batch_size
    return (first, *seen[1:])


def _choose(sites: dict[int, _Site], form: str, batch_size: int, timer: FormTimer | None,
            example_batch: int | None = None) -> tuple[dict[int, Lowered], list[LayerChoice]]:
    def signature(site: _Site) -> tuple:
        return FormTimer.signature(site.spec, site.shape or (), site.activation, site.standalone)

    counts: dict[tuple, int] = {}
    for site in sites.values():
        counts[signature(site)] = counts.get(signature(site), 0) + 1
    lowered: dict[int, Lowered] = {}
    choices: list[LayerChoice] = []
    for key, site in sites.items():
        times: dict[str, float] = {}
        if form != AUTO:
            result = _forced(site, form)
        elif site.shape is None:  # never called on the example: nothing to measure
            result = FORMS.get("dense").lower(site.spec)
        else:
            shape = _measured_shape(site.shape, batch_size, example_batch or batch_size)
            times = timer.measure(site.name, site.spec, shape, site.activation, counts[signature(site)],
                                  site.standalone)
            best = min(times, key=times.get)
            form_name, _, groups = best.partition("/")
            result = FORMS.get(form_name).lower(site.spec, int(groups) if groups else None)
        lowered[key] = result
        choices.append(LayerChoice(site.name, site.spec.kind, _shape_of(site.spec, site.module),
                                   site.spec.num_blocks, result.form, result.groups, site.shape or (), times))
    return lowered, choices


def _replace_inside(container: nn.Module, sites: dict[int, _Site], lowered: dict[int, Lowered]) -> nn.Module:
    """``container`` with every sparse layer inside it self-contained in its form (the root too)."""
    if id(container) in lowered:
        return standalone(container, lowered[id(container)])
    for name, module in list(container.named_modules()):
        if name and id(module) in lowered:
            container.set_submodule(name, standalone(module, lowered[id(module)]))
    return container


def _tensors(output: Any) -> list[Tensor]:
    """The tensors of a model's output (a tensor, or tuples, lists and dicts of them)."""
    return [t for t in torch.utils._pytree.tree_leaves(output) if isinstance(t, Tensor)]


def _max_error(a: Any, b: Any) -> float:
    pairs = list(zip(_tensors(a), _tensors(b), strict=True))
    return max((float((x.float() - y.float()).abs().max()) for x, y in pairs if x.numel()), default=0.0)


def _check_close(error: float, reference: Any, what: str) -> None:
    scale = max((float(t.abs().max()) for t in _tensors(reference) if t.numel()), default=0.0)
    if not error <= ATOL + RTOL * scale:  # also catches NaN
        raise RuntimeError(f"{what} differs from the model by {error:.3g} (output scale {scale:.3g}): a bug in "
                           "sao.export; please report it with the model")


# ---------------------------------------------------------------- the API

def deployable(model: nn.Module, example_input: Tensor, *, form: str = AUTO, batch_size: int | None = None,
               threads: int = 1, timer: FormTimer | None = None, verbose: bool = True,
               check: bool = True) -> nn.Module:
    """A copy of ``model`` (in eval mode) in plain, export-friendly PyTorch ops, each sparse layer in an operator
    form, with the permutations between layers folded away.

    Every :data:`~sao.export.LAYER_KINDS` layer (:class:`~sao.nn.SparseLinear`, :class:`~sao.nn.SparseConv2d`,
    either backend; :class:`~sao.nn.MaskedLinear`, :class:`~sao.nn.MaskedConv2d`; those inside
    :class:`~sao.nn.FusedSequential`/:class:`~sao.nn.FusedSparseChain` and in any container) takes the form
    ``form`` (:data:`~sao.export.FORMS`): ``"dense"``, ``"grouped"``, ``"matmul"``, or ``"auto"`` — for each
    layer shape, the candidate ONNX Runtime runs fastest, measured (see :mod:`sao.export._measure`). The model
    is traced with ``torch.fx`` and the gathers between layers are composed, pushed through elementwise and
    per-channel modules and folded into dense neighbours (:mod:`sao.export._fold`); where it cannot be traced,
    the layers run self-contained. No custom autograd Function, compiled kernel or dispatch timer remains.

    Args:
        model: any module holding sparse layers (not changed).
        example_input: a batched input (batch on dim 0); the layers' input shapes come from one call on it.
        form: ``"auto"`` (default) or a form name, for every layer.
        batch_size: the batch ``"auto"`` measures at (default: the example's): each layer at the input shape it
            saw on the example, its first dim scaled by ``batch_size`` / the example's batch where a multiple of it.
        threads: ONNX Runtime intra-op threads ``"auto"`` measures with.
        timer: a :class:`~sao.export.FormTimer` to reuse measurements across calls (default: a new one).
        verbose: print ``"auto"``'s measurements as they come (stderr).
        check: compare the result with ``model`` on the example (``RuntimeError`` beyond float32 rounding).

    Returns:
        The deployable module (a ``torch.fx.GraphModule`` where traced), with the :class:`DeployReport` as its
        ``deploy_report`` attribute.

    Raises:
        ValueError: for an unknown form (naming the valid ones), a form a layer cannot take (naming the layer
            and its valid forms), a bad ``batch_size``/``threads``, a model or example on the meta device, an
            in-place op on a tensor another value views (naming the op).
        TypeError: if ``example_input`` is not a batched tensor.
        MissingExtra: ``form="auto"`` without the deploy extra (``pip install 'sao[deploy]'``).
    """
    form = check_form(form)
    example = _check_example(example_input)
    _check_not_meta(model, example)
    batch_size = _check_int(example.shape[0] if batch_size is None else batch_size, "batch_size")
    threads = _check_int(threads, "threads")
    prepared = unfuse(copy.deepcopy(model)).eval()
    with torch.no_grad():
        reference = prepared(example)
    traced = trace(prepared, example)
    sites = _sites(prepared, example, traced.module)
    if form == AUTO and sites:
        timer = timer or FormTimer(threads=threads, verbose=verbose)
        if timer.threads != threads:
            timer = replace(timer, threads=threads, cache={})
    lowered, choices = _choose(sites, form, batch_size, timer, example.shape[0])
    for module in traced.opaque.values():
        _replace_inside(module, sites, lowered)
    if traced.module is not None:
        by_name = {node.target: lowered[id(traced.module.get_submodule(node.target))]
                   for node in traced.module.graph.nodes
                   if node.op == "call_module" and id(traced.module.get_submodule(node.target)) in lowered}
        result, gathers = fold(traced.module, by_name)
    else:
        result = _replace_inside(prepared, sites, lowered)
        gathers = sum(2 for choice in choices if choice.form != "dense")
    parameter = next(prepared.parameters(), None)
    if parameter is not None:  # the gathers' indices are built on the CPU
        result.to(parameter.device)
    result.eval()
    error = None
    if check:
        with torch.no_grad():
            error = _max_error(result(example), reference)
        _check_close(error, reference, "the deployable model")
    result.deploy_report = DeployReport(form, batch_size, threads, tuple(choices), gathers,
                                        traced.module is not None, tuple(sorted(traced.opaque)), error)
    return result


def _deployed(model: nn.Module, example: Tensor, options: dict[str, Any]) -> nn.Module:
    """``model`` itself if it is already deployable (has a :class:`DeployReport`), else :func:`deployable`."""
    if isinstance(getattr(model, "deploy_report", None), DeployReport):
        return model
    return deployable(model, example, **options)


def export_program(model: nn.Module, example_input: Tensor, *, dynamic_batch: bool = True,
                   **options: Any) -> torch.export.ExportedProgram:
    """``torch.export.export`` of :func:`deployable` ``(model, example_input, **options)`` (or of ``model`` itself
    if it is already deployable), with a dynamic batch dimension unless ``dynamic_batch=False``.

    Raises:
        as :func:`deployable`.
    """
    example = _check_example(example_input)
    deploy = _deployed(model, example, options)
    example = exportable_example(example) if dynamic_batch else example
    return torch.export.export(deploy, (example,), dynamic_shapes=(batch_dim(example),) if dynamic_batch else None)


def to_onnx(model: nn.Module, example_input: Tensor, path: str | Path, *, dynamic_batch: bool = True,
            optimize: bool = True, check: bool = True, **options: Any) -> DeployReport:
    """Write :func:`deployable` ``(model, example_input, **options)`` (or ``model`` itself if already deployable)
    as an ONNX file at ``path``: input ``"input"``, output ``"output"`` (a model returning several tensors: outputs
    ``"output0"``, ``"output1"``, … in the order of its flattened output), a dynamic batch dimension. The file's
    mode follows the umask, as a file ``open()`` creates.

    Exported with ``torch.onnx.export(..., dynamo=True)`` and its ONNX optimizer (``optimize``), written
    atomically (a temporary file in the same folder, then renamed). With ``check``, the file's ONNX Runtime
    output on the example is compared with the deployable model's.

    Returns:
        The :class:`DeployReport` (with ``path`` and ``onnx_error``).

    Raises:
        MissingExtra: without the deploy extra (``pip install 'sao[deploy]'``).
        RuntimeError: if the check fails.
        FileNotFoundError: if the folder of ``path`` does not exist (naming it).
        ValueError: if the deployable model holds a float64 convolution (ONNX Runtime has no float64 ``Conv``).
        as :func:`deployable`.
    """
    example = _check_example(example_input)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {str(path.parent)!r} of the ONNX file does not exist")
    deploy = _deployed(model, example, {**options, "check": check})
    _check_ort_dtypes(deploy)
    with torch.no_grad():
        expected = deploy(example)
    outputs = len(_tensors(expected))
    proto = export_proto(deploy, example, dynamic_batch=dynamic_batch, optimize=optimize, outputs=outputs)
    atomic_write_bytes(path, proto.SerializeToString())
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)  # as open() would create it (the temporary file is private)
    report = deploy.deploy_report
    onnx_error = None
    if check:
        session = ort_session(path)
        feed = {session.get_inputs()[0].name: example.cpu().numpy()}
        got = [torch.from_numpy(a) for a in session.run(None, feed)]
        onnx_error = _max_error(got, expected)
        _check_close(onnx_error, expected, "the ONNX Runtime session of the written file")
    return replace(report, path=str(path), onnx_error=onnx_error)

