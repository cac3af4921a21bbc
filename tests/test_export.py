"""sao.export (issue 21): deployable models, operator forms, folded permutations, ONNX files.

Properties: every form of every sparse layer kind computes what the layer computes (random sizes, degrees,
batches, leading dims, coarsened block counts; the self-contained layer too); folding the permutations of random
chains (activations, BatchNorm, dense neighbours) and of residual blocks is exact and leaves one gather per
block-form layer at most; the benchmark's models (small variants) export to ONNX files that ONNX Runtime runs to
float32 rounding at another batch size than the example's; ``export_program`` matches eager; bad forms and a
missing deploy extra fail with clear errors.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sao
from sao._extras import MissingExtra
from sao.export import (
    FORMS,
    FormTimer,
    block_structure,
    deployable,
    export_program,
    form_names,
    layer_spec,
    to_onnx,
)
from sao.export._fold import standalone
from sao.export._onnx import require
from sao.nn import FusedSequential, MaskedConv2d, MaskedLinear, SparseConv2d, SparseLinear, fuse_sparse_chains
from sao.topology import ramanujan, valid_degrees

BLOCK_FORMS = ("grouped", "matmul")
FAST = settings(max_examples=12, deadline=None)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> None:
    a, b = a.detach(), b.detach()
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(1.0, float(b.abs().max()))
    assert float((a - b).abs().max()) <= rtol * scale, float((a - b).abs().max())


def _degree(data: st.DataObject, m: int, n: int) -> int:
    return data.draw(st.sampled_from(valid_degrees(m, n)), label="degree")


@st.composite
def sparse_linears(draw: st.DrawFn) -> nn.Module:
    """A SparseLinear (either backend) or an SAO-masked MaskedLinear, with random sizes and degree."""
    unit = draw(st.sampled_from([1, 2, 3, 4]))
    m, n = unit * draw(st.integers(1, 6)), unit * draw(st.integers(1, 6))
    degree = draw(st.sampled_from(valid_degrees(m, n)))
    bias = draw(st.booleans())
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["blocked", "masked", "masked-linear"]))
    if kind == "masked-linear":
        layer = MaskedLinear(n, m, bias=bias, mask=ramanujan(m, n, degree, generator=generator).mask())
    else:
        layer = SparseLinear(n, m, degree=degree, bias=bias, backend=kind, generator=generator)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=generator))
    return layer


@st.composite
def sparse_convs(draw: st.DrawFn) -> nn.Module:
    unit = draw(st.sampled_from([1, 2, 4]))
    m, n = unit * draw(st.integers(1, 4)), unit * draw(st.integers(1, 4))
    degree = draw(st.sampled_from(valid_degrees(m, n)))
    kernel = draw(st.sampled_from([1, 3]))
    stride = draw(st.sampled_from([1, 2]))
    padding = 0 if kernel == 1 else draw(st.sampled_from([0, 1]))
    mode = "zeros" if kernel == 1 else draw(st.sampled_from(["zeros", "circular"]))
    bias = draw(st.booleans())
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["blocked", "masked", "masked-conv"]))
    if kind == "masked-conv":
        layer = MaskedConv2d(n, m, kernel, stride, padding, bias=bias, padding_mode=mode,
                             mask=ramanujan(m, n, degree, generator=generator).mask())
    else:
        layer = SparseConv2d(n, m, kernel, stride, padding, bias=bias, padding_mode=mode, degree=degree,
                             backend=kind, generator=generator)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=generator))
    return layer


def _forms_for(layer: nn.Module) -> list[str]:
    spec = layer_spec(layer)
    return [name for name in FORMS if FORMS.get(name).unavailable(spec) is None]


# ---------------------------------------------------------------- every form of every layer kind

@FAST
@given(layer=sparse_linears(), batch=st.integers(1, 5), lead=st.sampled_from([(), (3,)]), data=st.data())
def test_linear_forms_equal_the_layer(layer: nn.Module, batch: int, lead: tuple[int, ...], data: st.DataObject) -> None:
    """Each form of a linear layer (whole model, self-contained, coarsened) equals the layer, at any batch."""
    layer.eval()
    x = torch.randn(batch, *lead, layer.in_features)
    example = torch.randn(2, *lead, layer.in_features)
    with torch.no_grad():
        expected = layer(x)
        for form in _forms_for(layer):
            deploy = deployable(nn.Sequential(layer), example, form=form, verbose=False)
            _close(deploy(x), expected)
            spec = layer_spec(layer)
            groups = data.draw(st.sampled_from(spec.coarsenings() or [1]), label="groups")
            lowered = FORMS.get(form).lower(spec, groups if FORMS.get(form).blocked else None)
            _close(standalone(layer, lowered)(x), expected)


@FAST
@given(layer=sparse_convs(), batch=st.integers(1, 3), size=st.integers(3, 7), data=st.data())
def test_conv_forms_equal_the_layer(layer: nn.Module, batch: int, size: int, data: st.DataObject) -> None:
    """Each form a convolution can take equals it (strides, padding modes, 1x1 and 3x3, either backend)."""
    layer.eval()
    x = torch.randn(batch, layer.in_channels, size, size)
    with torch.no_grad():
        expected = layer(x)
        for form in _forms_for(layer):
            deploy = deployable(nn.Sequential(layer), torch.randn(2, layer.in_channels, size, size), form=form,
                                verbose=False)
            _close(deploy(x), expected)
            spec = layer_spec(layer)
            groups = data.draw(st.sampled_from(spec.coarsenings() or [1]), label="groups")
            lowered = FORMS.get(form).lower(spec, groups if FORMS.get(form).blocked else None)
            _close(standalone(layer, lowered)(x), expected)


def test_block_structure_finds_sao_masks_and_refuses_others() -> None:
    topology = ramanujan(12, 8, 3, generator=torch.Generator().manual_seed(0))
    rows, cols, g = block_structure(topology.mask())
    assert g == topology.num_blocks
    assert torch.equal(topology.mask()[rows][:, cols],
                       torch.block_diag(*[torch.ones(12 // g, 8 // g, dtype=torch.bool)] * g))
    mask = topology.mask().clone()
    mask[0, mask[0].nonzero()[0]] = False  # one connection fewer: no longer equal blocks
    assert block_structure(mask) is None
    assert block_structure(torch.ones(3, 5, dtype=torch.bool))[2] == 1


# ---------------------------------------------------------------- folding

@st.composite
def chains(draw: st.DrawFn) -> tuple[nn.Sequential, int]:
    """``Linear → (SparseLinear → activation | BatchNorm1d)… → Linear`` and the number of sparse layers."""
    width = draw(st.sampled_from([8, 12, 16]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    modules: list[nn.Module] = [nn.Linear(5, width), nn.Tanh()]
    count = draw(st.integers(1, 4))
    for _ in range(count):
        modules.append(SparseLinear(width, width, degree=draw(st.sampled_from(valid_degrees(width, width)[:-1])),
                                    generator=generator))
        with torch.no_grad():
            modules[-1].bias.normal_(generator=generator)
        modules.append(draw(st.sampled_from([nn.Tanh, nn.ReLU, nn.GELU, nn.Identity]))())
        if draw(st.booleans()):
            bn = nn.BatchNorm1d(width)
            with torch.no_grad():
                for t in (bn.weight, bn.bias, bn.running_mean):
                    t.normal_(generator=generator)
                bn.running_var.uniform_(0.5, 2.0, generator=generator)
            modules.append(bn)
    modules.append(nn.Linear(width, 3))
    return nn.Sequential(*modules).eval(), count


@FAST
@given(chain=chains(), form=st.sampled_from(BLOCK_FORMS), batch=st.integers(1, 4), fused=st.booleans())
def test_folding_a_chain_is_exact_with_one_gather_per_layer(chain: tuple[nn.Sequential, int], form: str, batch: int,
                                                            fused: bool) -> None:
    """Gathers compose across activations and BatchNorm, the first folds into the dense layer before: at most one
    per sparse layer after the first; the result equals the model (also given as a FusedSequential)."""
    model, count = chain
    x = torch.randn(batch, 5)
    with torch.no_grad():
        expected = model(x)
    given_model = fuse_sparse_chains(model) if fused else model
    deploy = deployable(given_model, torch.randn(3, 5), form=form, verbose=False)
    assert deploy.deploy_report.gathers <= count - 1
    assert not any(isinstance(m, (SparseLinear, FusedSequential)) for m in deploy.modules())
    with torch.no_grad():
        _close(deploy(x), expected)


class _Residual(nn.Module):
    """A ResNet basic block with sparse convolutions and an optional sparse 1x1 downsample."""

    def __init__(self, channels: int, out: int, stride: int, sparsity: float) -> None:
        super().__init__()
        self.conv1 = SparseConv2d(channels, out, 3, stride, 1, bias=False, sparsity=sparsity)
        self.bn1, self.relu = nn.BatchNorm2d(out), nn.ReLU()
        self.conv2 = SparseConv2d(out, out, 3, 1, 1, bias=False, sparsity=sparsity)
        self.bn2 = nn.BatchNorm2d(out)
        self.down = None
        if stride != 1 or channels != out:
            self.down = nn.Sequential(SparseConv2d(channels, out, 1, stride, bias=False, sparsity=sparsity),
                                      nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += identity
        return self.relu(out)


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean):
                    t.normal_(generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
    return model.eval()


@FAST
@given(seed=st.integers(0, 2**16), form=st.sampled_from(["grouped", "dense"]), down=st.booleans())
def test_folding_residual_blocks_is_exact(seed: int, form: str, down: bool) -> None:
    """Residual adds get both operands in one order; BatchNorm parameters follow the permutation."""
    torch.manual_seed(seed)
    model = _randomise_bn(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                        _Residual(8, 16 if down else 8, 2 if down else 1, 0.5),
                                        _Residual(16 if down else 8, 16 if down else 8, 1, 0.75),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16 if down else 8, 4)), seed)
    x = torch.randn(2, 3, 8, 8)
    deploy = deployable(model, x, form=form, verbose=False)
    with torch.no_grad():
        for batch in (1, 2, 3):
            y = torch.randn(batch, 3, 8, 8)
            _close(deploy(y), model(y))
    sparse = 4 + down
    assert deploy.deploy_report.gathers <= (0 if form == "dense" else 2 * sparse)


class _Untraceable(nn.Module):
    """Control flow on a traced value: torch.fx cannot trace its forward (torch.export can)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = SparseLinear(8, 8, degree=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return torch.tanh(self.inner(x))
        return self.inner(x)


@pytest.mark.parametrize("root", [False, True])
def test_untraceable_modules_keep_self_contained_layers(root: bool) -> None:
    model = _Untraceable() if root else nn.Sequential(nn.Linear(4, 8), _Untraceable(), nn.Linear(8, 2))
    x = torch.randn(3, 8 if root else 4)
    deploy = deployable(model, x, form="grouped", verbose=False)
    report = deploy.deploy_report
    assert report.traced is not root and (root or report.opaque == ("1",))
    assert not any(isinstance(m, SparseLinear) for m in deploy.modules())
    with torch.no_grad():
        _close(deploy(x), model.eval()(x))
    _close(export_program(deploy, x).module()(x), model(x))


# ---------------------------------------------------------------- the benchmark's models, small, through ONNX

def _small_models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=10)
    resnet.conv1, resnet.maxpool = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
    vit = torchvision.models.VisionTransformer(image_size=16, patch_size=4, num_layers=1, num_heads=2, hidden_dim=32,
                                               mlp_dim=64, num_classes=10)
    nn.init.normal_(vit.heads.head.weight)  # torchvision zero-initialises it: the output would not see the body
    return {"fnn": (sao.models.fnn(depth=8), (1024,)),
            "cnn": (sao.models.cnn(4, width=32, activation="relu"), (3, 32, 32)),
            "resnet18-cifar": (_randomise_bn(resnet, 1), (3, 16, 16)),
            "vit": (vit, (3, 16, 16))}


@pytest.fixture(scope="module")
def small_models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    models = _small_models()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers that take the nearest achievable sparsity
        return {name: (sao.sparsify(model, sparsity=0.875).eval(), shape) for name, (model, shape) in models.items()}


@pytest.mark.parametrize("name", ["fnn", "cnn", "resnet18-cifar", "vit"])
def test_models_export_to_onnx_and_match_eager(name: str, small_models: dict, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from sao.export import ort_session
    from sao.export._onnx import run_session

    model, shape = small_models[name]
    example = torch.randn(2, *shape)
    report = to_onnx(model, example, tmp_path / f"{name}.onnx", form="grouped", verbose=False)
    assert report.layers and all(c.form == "grouped" for c in report.layers)
    x = torch.randn(5, *shape)  # another batch than the example's: the batch dimension is dynamic
    with torch.no_grad():
        expected = model(x)
    _close(run_session(ort_session(report.path), x), expected, rtol=1e-4)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left


def test_export_program_matches_eager(small_models: dict) -> None:
    model, shape = small_models["cnn"]
    program = export_program(model, torch.randn(2, *shape), form="grouped", verbose=False)
    x = torch.randn(4, *shape)
    with torch.no_grad():
        _close(program.module()(x), model(x), rtol=1e-4)


def test_auto_measures_and_picks_a_candidate(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny layer: every candidate is timed in ONNX Runtime, the fastest taken, the times recorded."""
    pytest.importorskip("onnxruntime")
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), SparseLinear(16, 16, degree=8), nn.Tanh(), nn.Linear(16, 2))
    timer = FormTimer(threads=1)
    x = torch.randn(2, 4)
    report = to_onnx(model, x, tmp_path / "auto.onnx", timer=timer, batch_size=3)
    (choice,) = report.layers
    assert set(choice.times) == {"dense", "grouped/2", "matmul/2"} and report.batch_size == 3
    assert choice.label == min(choice.times, key=choice.times.get)
    assert "[sao.export]" in capsys.readouterr().err
    again = deployable(model, x, timer=timer, batch_size=3, verbose=False)  # cached: measured once
    assert again.deploy_report.layers[0].times == choice.times


# ---------------------------------------------------------------- errors

def test_unknown_forms_name_the_valid_ones() -> None:
    model = nn.Sequential(SparseLinear(8, 8, degree=2))
    for bad in ("sparse", "Dense", 3, None):
        with pytest.raises(ValueError, match="choose from auto, dense, grouped, matmul"):
            deployable(model, torch.randn(2, 8), form=bad)
    assert form_names() == ["auto", "dense", "grouped", "matmul"]


def test_a_form_a_layer_cannot_take_names_the_layer_and_its_forms() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 8, 1), SparseConv2d(8, 8, 3, padding=1, degree=2))
    with pytest.raises(ValueError, match=r"form='matmul' cannot run 1 .*3x3.*forms it can take: auto, dense, grouped"):
        deployable(conv, torch.randn(2, 3, 6, 6), form="matmul")
    masked = MaskedLinear(8, 8, mask=torch.rand(8, 8, generator=torch.Generator().manual_seed(0)) > 0.5)
    with pytest.raises(ValueError, match=r"not an SAO block topology.*forms it can take: auto, dense$"):
        deployable(nn.Sequential(masked), torch.randn(2, 8), form="grouped")
    with pytest.raises(TypeError, match="batched tensor"):
        deployable(conv, torch.randn(3, 6, 6)[0, 0, 0])
    with pytest.raises(ValueError, match="threads"):
        deployable(conv, torch.randn(2, 3, 6, 6), threads=0)


def test_without_the_deploy_extra(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """PyTorch-only paths work; the ONNX ones raise one ImportError naming the extra."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)
    model = nn.Sequential(SparseLinear(8, 8, degree=2))
    x = torch.randn(2, 8)
    deploy = deployable(model, x, form="grouped", verbose=False)
    export_program(deploy, x)
    for call in (lambda: to_onnx(model, x, tmp_path / "m.onnx", form="dense"),
                 lambda: deployable(model, x, verbose=False), lambda: require("onnxruntime")):
        with pytest.raises(MissingExtra, match=r"needs the deploy extra: pip install 'sao\[deploy\]' \(not installed: "
                                               r"onnx, onnxruntime, onnxscript\)"):
            call()


class _InPlace(nn.Module):
    """``h = b(tanh(a(x)))``, an in-place op on ``h`` whose result is unused, then ``o(h)``."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op, self.a, self.b, self.o = op, nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b(torch.tanh(self.a(x)))
        if self.op == "clamp_":
            h.clamp_(min=0)
        elif self.op == "mul_":
            h.mul_(2)
        elif self.op == "add_":
            h.add_(h)
        elif self.op == "relu_":
            torch.relu_(h)
        elif self.op == "sigmoid_":
            h.sigmoid_()
        elif self.op == "inplace=True":
            torch.nn.functional.relu(h, inplace=True)
        elif self.op == "ReLU(inplace=True)":
            self.act(h)
        return self.o(h)


@pytest.mark.parametrize("op", ["clamp_", "mul_", "add_", "relu_", "sigmoid_", "inplace=True",
                                "ReLU(inplace=True)"])
@pytest.mark.parametrize("form", BLOCK_FORMS)
def test_in_place_ops_with_unused_results_are_kept(op: str, form: str) -> None:
    torch.manual_seed(0)
    model = sao.sparsify(_InPlace(op), sparsity=0.75).eval()
    x = torch.randn(8, 64)
    deploy = deployable(model, x, form=form, check=False)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), model(x))


class _ViewThenInPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.o = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b(torch.relu(self.a(x)))
        v = h[:, :32]
        h.relu_()
        return self.o(torch.cat([v, h[:, 32:]], 1))


def test_in_place_op_on_a_viewed_tensor_is_refused() -> None:
    model = sao.sparsify(_ViewThenInPlace(), sparsity=0.75).eval()
    with pytest.raises(ValueError, match=r"in-place op 'relu_'.*out-of-place 'relu'"):
        deployable(model, torch.randn(8, 64), form="grouped", check=False)


@pytest.mark.parametrize("form", [*BLOCK_FORMS, "dense"])
def test_an_unbatched_input_keeps_the_eager_shape(form: str) -> None:
    torch.manual_seed(0)
    model = sao.sparsify(sao.models.fnn(depth=4), sparsity=0.875).eval()
    deploy = deployable(model, torch.randn(8, 1024), form=form)
    x = torch.randn(1024)
    with torch.no_grad():
        assert deploy(x).shape == model(x).shape == (10,)
        torch.testing.assert_close(deploy(x), model(x))


def test_a_model_on_the_meta_device_is_refused() -> None:
    layers = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8))
    model = sao.sparsify(layers, sparsity=0.75).to("meta")
    with pytest.raises(ValueError, match="meta device has no values to deploy; materialize it first"):
        deployable(model, torch.randn(4, 32, device="meta"), form="grouped")
    with pytest.raises(ValueError, match="meta device"):
        deployable(model, torch.randn(4, 32), form="grouped")


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32)
        self.o1, self.o2 = nn.Linear(32, 4), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.c(torch.relu(self.b(torch.relu(self.a(x)))))
        return self.o1(h), self.o2(torch.tanh(h))


def test_to_onnx_writes_every_output_of_a_tuple(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = sao.sparsify(_TwoHeads(), sparsity=0.75).eval()
    path = tmp_path / "two.onnx"
    report = to_onnx(model, torch.randn(8, 32), path, form="grouped", verbose=False)
    assert report.onnx_error is not None
    from sao.export import ort_session

    session = ort_session(path)
    assert [o.name for o in session.get_outputs()] == ["output0", "output1"]
    x = torch.randn(5, 32)
    got = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        for a, b in zip(got, model(x), strict=True):
            torch.testing.assert_close(torch.from_numpy(a), b, rtol=1e-4, atol=1e-5)


def test_to_onnx_file_mode_follows_the_umask_and_a_missing_folder_is_refused(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    import os

    model = sao.sparsify(_TwoHeads(), sparsity=0.75).eval()
    with pytest.raises(FileNotFoundError, match="nope"):
        to_onnx(model, torch.randn(4, 32), tmp_path / "nope" / "m.onnx", form="dense", verbose=False)
    assert not (tmp_path / "nope").exists()
    old = os.umask(0o022)
    try:
        to_onnx(model, torch.randn(4, 32), tmp_path / "m.onnx", form="dense", verbose=False)
    finally:
        os.umask(old)
    assert (tmp_path / "m.onnx").stat().st_mode & 0o777 == 0o644


def test_float64_models_auto_measures_in_their_dtype_and_grouped_onnx_is_refused(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = sao.sparsify(_TwoHeads(), sparsity=0.75).eval().double()
    x = torch.randn(8, 32, dtype=torch.float64)
    deploy = deployable(model, x, verbose=False)  # "auto": measured in float64, no grouped candidate
    assert all(layer.form != "grouped" for layer in deploy.deploy_report.layers)
    report = to_onnx(deploy, x, tmp_path / "a.onnx")
    assert report.onnx_error is not None
    with pytest.raises(ValueError, match=r"no torch.float64 Conv kernel.*form='matmul' or 'dense'"):
        to_onnx(model, x, tmp_path / "g.onnx", form="grouped", verbose=False)
    assert not (tmp_path / "g.onnx").exists()


class _Rows(nn.Module):
    """Layers on ``(B·L, E)`` rows, as attention's projections run."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x.reshape(-1, 32)))))).reshape(x.shape)


class _RecordingTimer(FormTimer):
    def measure(self, name, spec, shape, activation, count=1, standalone=False) -> dict[str, float]:
        self.cache.setdefault("shapes", []).append(tuple(shape))
        return {"dense": 1.0}


@pytest.mark.parametrize(("batch_size", "rows"), [(None, 32), (8, 64)])
def test_auto_measures_layers_at_the_rows_they_run_on(batch_size: int | None, rows: int) -> None:
    model = sao.sparsify(_Rows(), sparsity=0.75).eval()
    timer = _RecordingTimer(verbose=False)
    deployable(model, torch.randn(4, 8, 32), batch_size=batch_size, timer=timer)
    assert timer.cache["shapes"] and set(timer.cache["shapes"]) == {(rows, 32)}
