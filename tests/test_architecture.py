"""The package's layering as a checked contract (issue 12 part 5).

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``): the layers ``sao.cli`` → ... →
``sao.topology`` → the ground floor of top-level private modules, no subpackage imported by the
ground floor, no private module (``sao.x._y``) imported from outside its package, no cycles; and
the cut between the two products (issue 20): the library (sao.topology, sao.spectral, sao.init,
sao.nn, sao.methods, sao.models, the ground floor, and ``import sao``) imports no module of the
harness and none of the extras' packages (matplotlib, scipy, ...).
CI runs only ``pytest``, so :func:`test_import_contracts` runs ``lint-imports`` on them; the other
tests make sure the contracts can fail (mutated copies of the package), that the cut names every
module of ``sao`` on one side, and check, with grimp directly, that the package-level import graph
has no cycle. TYPE_CHECKING imports count throughout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter (the 'test' extra) needs Python 3.11+")
grimp = pytest.importorskip("grimp")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "sao"

#: Runs import-linter's own entry point (what the ``lint-imports`` command runs) without caching, so that nothing
#: is written into the repository: ``python -c _LINT CONFIG [CONTRACT_ID ...]``.
_LINT = ("import sys; from importlinter.cli import lint_imports; "
         "sys.exit(lint_imports(config_filename=sys.argv[1], limit_to_contracts=tuple(sys.argv[2:]), "
         "no_cache=True, no_logo=True))")


def _lint_imports(config: Path, *contracts: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath is not None else None
    return subprocess.run([sys.executable, "-c", _LINT, str(config), *contracts], cwd=config.parent, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_import_contracts() -> None:
    """``lint-imports`` keeps every contract of pyproject.toml on the real package."""
    result = _lint_imports(ROOT / "pyproject.toml")
    output = result.stdout + result.stderr
    if result.returncode != 0 or "0 broken" not in output:
        pytest.fail(f"import contracts broken (lint-imports exit {result.returncode}):\n{output}", pytrace=False)


# --- the contracts can fail: lint a copy of the package with one bad import added --------------------------------

#: name: (module file relative to src/sao, source to append, contract that must break, what its report must say).
_MUTATIONS = {
    "upward-import": ("nn/linear.py", "import sao.methods", "layers", "sao.nn.linear -> sao.methods"),
    "upward-type-checking-import": ("topology/_graph.py",
                                    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sao.models",
                                    "layers", "sao.topology._graph -> sao.models"),
    "ground-floor-imports-subpackage": ("_validation.py", "import sao.spectral", "ground-floor",
                                        "sao._validation -> sao.spectral"),
    "foreign-private-module": ("models/fnn.py", "from sao.nn import _sparse", "private-modules",
                               "sao.models.fnn -> sao.nn._sparse"),
    "cycle": ("topology/__init__.py", "import sao.init", "acyclic", ".topology -> .init"),
    "library-imports-harness": ("models/fnn.py", "def _data():\n    import sao.data", "library-standalone",
                                "sao.models.fnn -> sao.data"),
    "library-imports-harness-floor": ("spectral.py", "import sao._files", "library-standalone",
                                      "sao.spectral -> sao._files"),
    "library-imports-extra-package": ("topology/_graph.py", "import scipy.sparse.csgraph", "library-dependencies",
                                      "sao.topology._graph -> scipy"),
    "library-imports-extra-package-lazily": ("nn/linear.py", "def _plot():\n    import matplotlib.pyplot",
                                             "library-dependencies", "sao.nn.linear -> matplotlib"),
    "library-imports-transformers": ("methods/adapters.py", "def _conv1d():\n    import transformers.pytorch_utils",
                                     "library-dependencies", "sao.methods.adapters -> transformers"),
    "deploy-package-outside-export": ("nn/linear.py", "def _proto():\n    import onnx", "deploy-in-export",
                                      "sao.nn.linear -> onnx"),
    "root-imports-harness": ("__init__.py", "import sao.analysis.spectrum", "root-is-library",
                             "sao -> sao.analysis.spectrum"),
    "root-imports-extra-package": ("__init__.py", "import typing\nif typing.TYPE_CHECKING:\n    import tqdm",
                                   "root-is-library", "sao -> tqdm"),
}


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine copy of ``src/sao`` (sources only) and of pyproject.toml."""
    base = tmp_path_factory.mktemp("arch")
    shutil.copytree(ROOT / "src" / PACKAGE, base / "src" / PACKAGE,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "csrc"))
    shutil.copy(ROOT / "pyproject.toml", base / "pyproject.toml")
    return base


@pytest.mark.parametrize("mutation", sorted(_MUTATIONS))
def test_contracts_catch_bad_imports(mutation: str, package_copy: Path, tmp_path: Path) -> None:
    """Each kind of bad import, added to a copy of the package, breaks the contract meant to catch it."""
    relative, line, contract, report = _MUTATIONS[mutation]
    work = tmp_path / "w"
    shutil.copytree(package_copy, work)
    target = work / "src" / PACKAGE / relative
    target.write_text(target.read_text() + "\n" + line + "\n")
    # A check of the copy, not of the installed package: grimp finds ``sao`` through PYTHONPATH first.
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('sao').origin)"],
                           env={"PYTHONPATH": str(work / "src"), "PATH": ""}, capture_output=True, text=True,
                           check=True)
    assert probe.stdout.strip().startswith(str(work)), probe.stdout
    result = _lint_imports(work / "pyproject.toml", contract, pythonpath=work / "src")
    assert result.returncode == 1, (f"contract {contract!r} kept with {line!r} added to {relative}:\n"
                                    f"{result.stdout}{result.stderr}")
    assert report in result.stdout, result.stdout + result.stderr  # the added import, not one already there


# --- the cut between library and harness names every module of sao ----------------------------------------------

def _contracts() -> dict[str, dict]:
    import tomllib  # Python 3.11+, as import-linter (this module is skipped without it)

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def test_the_cut_is_exhaustive() -> None:
    """Every child of ``sao`` is on one side of the cut: library (source) or harness (forbidden); the library's
    contracts have the same sources; ``import sao`` is held to the same; the extras' packages are all forbidden (the
    deploy extra's outside sao.export); the ground floor may import no module above it."""
    from sao._extras import EXTRAS

    contracts = _contracts()
    library = set(contracts["library-standalone"]["source_modules"])
    harness = set(contracts["library-standalone"]["forbidden_modules"])
    children = {package_of(m) for m in real_graph().modules} - {PACKAGE, f"{PACKAGE}.__main__"}
    assert not library & harness
    assert library | harness == children, sorted(children ^ (library | harness))
    assert set(contracts["library-dependencies"]["source_modules"]) == library
    externals = set(contracts["library-dependencies"]["forbidden_modules"])
    assert externals >= set(EXTRAS["experiments"]) | {"ray", "transformers"}
    deploy = set(contracts["deploy-in-export"]["forbidden_modules"])
    assert deploy == set(EXTRAS["deploy"]) and set(EXTRAS) == {"experiments", "deploy"}
    assert set(contracts["deploy-in-export"]["source_modules"]) == library - {f"{PACKAGE}.export"}
    root = set(contracts["root-is-library"]["forbidden_modules"])
    assert root >= harness | externals | deploy
    ground = set(contracts["ground-floor"]["source_modules"])
    assert set(contracts["ground-floor"]["forbidden_modules"]) == children - ground  # every module above it
    assert {f"{module}.**" for module in harness if (ROOT / "src" / Path(*module.split("."))).is_dir()} <= root


# --- no cycles between subpackages, with grimp directly ------------------------------------------------------------

def package_of(module: str) -> str:
    """The child of ``sao`` that ``module`` belongs to (``sao.nn.linear`` → ``sao.nn``); ``sao`` for the root."""
    return ".".join(module.split(".")[:2])


def package_graph(graph) -> dict[str, set[str]]:
    """Which children of ``sao`` (subpackages and top-level modules, and the root) import which."""
    edges: dict[str, set[str]] = {package_of(m): set() for m in graph.modules}
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            a, b = package_of(importer), package_of(imported)
            if a != b:
                edges[a].add(b)
    return edges


def strongly_connected_components(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the strongly connected components of ``edges``, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def test_strongly_connected_components_finds_cycles() -> None:
    """The cycle finder itself: a 3-cycle with a tail and a 2-cycle, and an acyclic graph."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e", "d"}}
    cycles = sorted(c for c in strongly_connected_components(edges) if len(c) > 1)
    assert cycles == [["a", "b", "c"], ["e", "f"]]
    assert all(len(c) == 1 for c in strongly_connected_components({"a": {"b"}, "b": {"c"}, "c": set()}))


def package_cycles(graph) -> list[str]:
    """Each cycle between the children of ``sao``, with the imports that make it (module -> module, line)."""
    edges = package_graph(graph)
    lines = []
    for cycle in (c for c in strongly_connected_components(edges) if len(c) > 1):
        lines.append(f"cycle between {', '.join(cycle)}:")
        for importer in sorted(m for m in graph.modules if package_of(m) in cycle):
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if package_of(imported) in cycle and package_of(imported) != package_of(importer):
                    for detail in graph.get_import_details(importer=importer, imported=imported):
                        lines.append(f"  {importer} -> {imported} (l.{detail['line_number']}: "
                                     f"{detail['line_contents']})")
    return lines


def real_graph():
    """sao's import graph, TYPE_CHECKING imports included, built afresh (no cache written)."""
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=False, cache_dir=None)


def test_no_import_cycles_between_subpackages() -> None:
    """The graph of ``sao``'s children (subpackages, top-level modules and the root) has no cycle."""
    graph = real_graph()
    edges = package_graph(graph)
    assert {"sao.nn", "sao.methods", "sao.cli", "sao._validation"} <= set(edges)  # the graph is the real one
    assert "sao.nn" in edges["sao.methods"]
    cycles = package_cycles(graph)
    assert not cycles, "\n".join(cycles)


def test_a_cycle_would_be_found() -> None:
    """One import from sao.topology (deep inside) up to sao.init closes a cycle, and the report names it."""
    graph = real_graph()
    graph.add_import(importer="sao.topology._graph", imported="sao.init.linear", line_number=1,
                     line_contents="import sao.init.linear")
    cycles = package_cycles(graph)
    assert cycles and cycles[0] == "cycle between sao.init, sao.topology:"
    assert "  sao.topology._graph -> sao.init.linear (l.1: import sao.init.linear)" in cycles
