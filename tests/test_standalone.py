"""The library stands alone (issue 20): ``pip install sao`` is torch, numpy and ninja.

:func:`test_library_works_without_the_extras` runs the library in a fresh interpreter where no package of the
extras can be found (``sys.meta_path``'s finders wrapped, as if not installed): ``import sao``, sparsify an MLP and a
CNN, train one step, build a registered model, the topology's graph facts and the spectral module; the harness
packages and the ``sao`` commands built on them then fail with one error naming the extra to install.
The other tests tie pyproject.toml's dependency lines to that cut, and check the numpy connected components
that replaced scipy's against scipy (where installed).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sao._extras import EXTRAS, MissingExtra, missing_packages, require_extra
from sao.topology import components

ROOT = Path(__file__).resolve().parents[1]

#: The import names of every package the extras add (the library must run without any of them).
BLOCKED = ("PIL", "matplotlib", "mlxtend", "onnx", "onnxruntime", "onnxscript", "ray", "scipy", "torchvision", "tqdm",
           "transformers")

#: The harness packages: each must refuse to import without the experiments extra, naming it.
HARNESS = ("sao.data", "sao.training", "sao.analysis", "sao.experiments", "sao.reports")

_SCRIPT = """
import contextlib, importlib, io, sys

BLOCKED = {blocked!r}


class NotInstalled:
    \"\"\"A finder of ``sys.meta_path`` that finds nothing of the extras' packages (and their submodules).

    Every finder is wrapped, so that a blocked package is found by none: ``import scipy`` raises
    ``ModuleNotFoundError`` and ``importlib.util.find_spec("scipy")`` is None, as if not installed
    (torch itself probes optional packages with ``find_spec``).
    \"\"\"

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        find_spec = getattr(self.finder, "find_spec", None)
        return find_spec(name, path, target) if find_spec is not None else None

    def __getattr__(self, attribute):  # invalidate_caches, find_distributions, ...
        return getattr(self.finder, attribute)


assert not [m for m in sys.modules if m.partition(".")[0] in BLOCKED], "loaded before the test began"
sys.meta_path[:] = [NotInstalled(finder) for finder in sys.meta_path]
try:
    import scipy
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("scipy was not blocked")

import torch
from torch import nn

import sao
import sao.models
import sao.spectral
import sao.topology

# An MLP, sparsified with SAO, trains one step.
net = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
net = sao.sparsify(net, "sao", degree=4, generator=torch.Generator().manual_seed(0))
assert isinstance(net[2], sao.nn.SparseLinear), net
x = torch.randn(8, 32, generator=torch.Generator().manual_seed(1))
net(x).square().mean().backward()
assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
w = net[2].weight.detach().double()
assert torch.allclose(w @ w.T, torch.eye(64, dtype=torch.float64), atol=1e-5)  # exactly orthogonal

# Registered models: an FNN-N and a CNN-N, the CNN sparsified (SparseConv2d) and run.
fnn = sao.models.create_model("fnn", depth=4, in_features=32, widths=(64, 64))
assert fnn(torch.randn(2, 32)).shape == (2, 10)
cnn = sao.sparsify(sao.models.create_model("cnn", depth=2, width=16), "sao", degree=4,
                   generator=torch.Generator().manual_seed(0))
assert any(isinstance(m, sao.nn.SparseConv2d) for m in cnn.modules()), cnn
cnn(torch.randn(2, 3, 16, 16)).sum().backward()

# Graph facts of a topology, connected components included.
mask = sao.topology.ramanujan(64, 64, degree=4, generator=torch.Generator().manual_seed(0)).mask()
comps = sao.topology.components(mask)
assert comps.count == 16 and comps.row_labels.shape == (64,) and comps.col_labels.shape == (64,)
assert sao.topology.spectrum(mask).shape == (128,)
assert sao.topology.reachability([mask, mask]).shape == (64, 64)

# Singular values of a convolution.
kernel = torch.randn(4, 4, 3, 3, dtype=torch.float64)
assert sao.spectral.conv_singular_values(kernel, 8).numel() == 4 * 64

# A deployable model runs in PyTorch alone; the ONNX side names the deploy extra.
import sao.export

deploy = sao.export.deployable(net.eval(), x, form="grouped", verbose=False)
assert torch.allclose(deploy(x), net(x), atol=1e-5)
sao.export.export_program(deploy, x)
try:
    sao.export.to_onnx(net, x, "never-written.onnx", form="dense")
except ImportError as err:
    assert type(err).__name__ == "MissingExtra", repr(err)
    message = "needs the deploy extra: pip install 'sao[deploy]' (not installed: onnx, onnxruntime, onnxscript)"
    assert message in str(err), str(err)
else:
    raise AssertionError("to_onnx ran without the deploy extra")

# The library pulled in no harness module.
harness = {harness!r}
loaded = sorted(m for m in sys.modules if m.startswith(harness) or m in ("sao._files", "sao.cli"))
assert not loaded, loaded

# Each harness package (and any module in it) refuses with one error naming the extra.
for name in harness + ("sao.analysis.spectrum", "sao.experiments.table7"):
    try:
        importlib.import_module(name)
    except ImportError as err:
        assert type(err).__name__ == "MissingExtra", (name, repr(err))
        assert "needs the experiments extra: pip install 'sao[experiments]'" in str(err), str(err)
    else:
        raise AssertionError(f"{{name}} imported without the experiments extra")

# The sao command: its help lists every command, the experiment commands say what to install, demo runs.
from sao.cli import build_parser, main

assert "reproduce" in build_parser().format_help()
for argv in (["reproduce", "table7", "--preset", "quick"], ["train", "--help"], ["analyze", "spectrum"]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    assert status == 2, (argv, status)
    assert err.getvalue().startswith(f"sao {{argv[0]}} needs the experiments extra: pip install 'sao[experiments]'"), \\
        err.getvalue()
out = io.StringIO()
with contextlib.redirect_stdout(out):
    assert main(["demo", "--depth", "8", "--width", "64"]) == 0
assert out.getvalue(), "sao demo printed nothing"

assert not [m for m in sys.modules if m.partition(".")[0] in BLOCKED]
print("standalone ok")
"""


def test_library_works_without_the_extras() -> None:
    """The library runs with none of the extras' packages; the harness names the extra to install."""
    script = _SCRIPT.format(blocked=BLOCKED, harness=HARNESS)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, check=False)
    assert result.returncode == 0 and "standalone ok" in result.stdout, (
        f"exit {result.returncode}\n{result.stdout}\n{textwrap.indent(result.stderr[-6000:], '  ')}")


def test_require_extra_names_the_extra_and_the_missing_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """``require_extra`` passes with the extra installed and otherwise raises one ImportError naming it."""
    assert missing_packages("experiments") == ()  # the test extra includes the experiments extra
    require_extra("sao.reports")
    monkeypatch.setattr("sao._extras._installed", lambda name: name not in ("scipy", "PIL"))
    with pytest.raises(MissingExtra) as info:
        require_extra("sao.analysis")
    assert isinstance(info.value, ImportError)
    assert str(info.value) == ("sao.analysis needs the experiments extra: pip install 'sao[experiments]' "
                               "(not installed: pillow, scipy)")
    with pytest.raises(ValueError, match="unknown extra 'plots'"):
        missing_packages("plots")


# --- pyproject.toml's dependency lines ---------------------------------------------------------------------------

def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement (``"Torch>=2.4; ..."`` → ``"torch"``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _extras_of(requirement: str) -> set[str]:
    """The extras a requirement asks for (``"sao[experiments,ray]"`` → ``{"experiments", "ray"}``)."""
    match = re.match(r"\s*[A-Za-z0-9._-]+\s*\[([^\]]*)\]", requirement)
    return {e.strip() for e in match.group(1).split(",")} if match else set()


def test_core_dependencies_are_torch_numpy_and_ninja() -> None:
    """``pip install sao`` installs the library's packages only: torch, numpy and ninja (the kernel's build)."""
    assert sorted(_name(r) for r in _pyproject()["project"]["dependencies"]) == ["ninja", "numpy", "torch"]


def test_extras_match_the_import_time_check() -> None:
    """The experiments and deploy extras are what ``sao._extras`` checks; ray and test build on experiments; test
    has everything."""
    extras = _pyproject()["project"]["optional-dependencies"]
    for name, packages in EXTRAS.items():
        assert {_name(r) for r in extras[name]} == set(packages.values()), name
    for name in ("ray", "test"):
        own = [r for r in extras[name] if _name(r) == "sao"]
        assert own and "experiments" in set().union(*map(_extras_of, own)), (name, extras[name])
    assert "ray" in {_name(r) for r in extras["ray"]}
    test_extras = set().union(*(_extras_of(r) for r in extras["test"] if _name(r) == "sao"))
    assert test_extras == set(extras) - {"test"}, test_extras  # `pip install -e ".[test]"` installs every extra
    assert set(BLOCKED) >= {module for packages in EXTRAS.values() for module in packages} | {"ray", "transformers"}


# --- connected components without scipy ---------------------------------------------------------------------------

def _scipy_components(mask: torch.Tensor) -> tuple[int, list[int]]:
    """scipy's connected components of the bipartite graph of ``mask`` (what sao.topology used before)."""
    np = pytest.importorskip("numpy")
    sparse = pytest.importorskip("scipy.sparse")
    csgraph = pytest.importorskip("scipy.sparse.csgraph")
    rows, cols = mask.shape
    biadj = sparse.coo_matrix(mask.numpy().astype(np.int8))
    adjacency = (sparse.bmat([[None, biadj], [biadj.T, None]], format="csr") if rows and cols
                 else sparse.csr_matrix((rows + cols,) * 2))
    count, labels = csgraph.connected_components(adjacency, directed=False)
    return int(count), labels.tolist()


@st.composite
def masks(draw: st.DrawFn) -> torch.Tensor:
    """Random ``(m, n)`` 0/1 masks, 0 ≤ m, n ≤ 12, sparse to dense."""
    rows, cols = draw(st.integers(0, 12)), draw(st.integers(0, 12))
    density = draw(st.sampled_from([0.0, 0.05, 0.15, 0.3, 0.6, 1.0]))
    bits = draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=rows * cols, max_size=rows * cols))
    return (torch.tensor(bits, dtype=torch.float64).reshape(rows, cols) < density).to(torch.int64)


@given(masks())
def test_components_match_scipy(mask: torch.Tensor) -> None:
    """Same count and the same labels (numbered by lowest node id, outputs first) as scipy's csgraph."""
    count, labels = _scipy_components(mask)
    got = components(mask)
    assert got.count == count
    assert got.row_labels.tolist() + got.col_labels.tolist() == labels
    assert got.row_labels.dtype == got.col_labels.dtype == torch.int64


def test_components_of_a_path_and_of_sao_layers() -> None:
    """A long path is one component; an SAO layer of degree d on (m, n) has max(m, n) / d components."""
    path = torch.zeros(300, 300, dtype=torch.bool)
    i = torch.arange(300)
    path[i, i] = True
    path[i[1:], i[:-1]] = True
    assert components(path).count == 1
    from sao.topology import ramanujan

    for m, n, d in ((64, 256, 16), (256, 64, 16), (128, 128, 4)):
        c = components(ramanujan(m, n, degree=d, generator=torch.Generator().manual_seed(0)).mask())
        assert c.count == max(m, n) // d
        assert torch.bincount(torch.cat([c.row_labels, c.col_labels])).tolist() == [(m + n) * d // max(m, n)] * c.count
