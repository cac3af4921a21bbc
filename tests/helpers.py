"""Small helpers shared by the test modules (``from helpers import ...``)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn


def gen(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def assert_semi_orthogonal(w: torch.Tensor, gain: float = 1.0, atol: float = 1e-10) -> None:
    """``W Wᵀ = gain² I`` (``m <= n``) or ``Wᵀ W = gain² I`` (``m > n``) to ``atol``."""
    m, n = w.shape
    gram = w @ w.T if m <= n else w.T @ w
    torch.testing.assert_close(gram, gain**2 * torch.eye(min(m, n), dtype=w.dtype), atol=atol, rtol=0)


def mlp() -> nn.Sequential:
    """A small tanh MLP ``16 → 32 → 32 → 64 → 10`` (three hidden Linear layers of different shapes)."""
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 64), nn.Tanh(),
                         nn.Linear(64, 10))


def small_cnn() -> nn.Sequential:
    """A small ReLU CNN on ``(3, H, W)`` images: three 3×3 convs (one strided), pool, linear head."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10))


#: The activation module of each name the compiled chain kernels take.
CHAIN_MODULES = {"tanh": nn.Tanh, "relu": nn.ReLU, "identity": nn.Identity}


def make_chain(sizes: list[int], degrees: list[int], acts: list[str], bias: bool, dtype: torch.dtype, *,
               seed: int = 0, device: str = "cpu") -> tuple[list, nn.Sequential]:
    """Blocked layers ``sizes[i] -> sizes[i + 1]`` (ReLU layers mirrored), random biases, and their unfused stack."""
    from sao.nn import SparseLinear

    g = gen(seed)
    layers = []
    for n, m, d, a in zip(sizes, sizes[1:], degrees, acts, strict=False):
        layer = SparseLinear(n, m, degree=d, bias=bias, activation="relu" if a == "relu" else "tanh", generator=g,
                             dtype=dtype)
        if bias:
            with torch.no_grad():
                layer.bias.normal_(generator=g)
        layers.append(layer.to(device))
    return layers, nn.Sequential(*[mod for layer, a in zip(layers, acts, strict=True)
                                   for mod in (layer, CHAIN_MODULES[a]())])


def tiny_run(table: str, method: str, *, depth: int, sparsity: float | None = None, epochs: int = 1,
             batch_size: int = 256, width: int | None = None, seed: int = 0) -> Any:
    """A fast run of ``table``'s quick preset: ``method`` at ``depth``, one epoch on MNIST-5k, on the CPU."""
    import dataclasses

    from sao.experiments import EXPERIMENTS, MethodConfig, Run
    from sao.methods import METHODS

    spec = EXPERIMENTS.get(table)
    base = spec.runs("quick", train={"device": "cpu"})[0]
    if not METHODS.get(method).needs_target:  # the dense baseline takes no target
        target = MethodConfig(method)
    elif sparsity is not None:
        target = MethodConfig(method, sparsity=sparsity)
    else:  # the table's own target (Table 7: degree 4)
        target = dataclasses.replace(spec.base.method, name=method)
    config = dataclasses.replace(
        base, model=dataclasses.replace(base.model, depth=depth, **({} if width is None else {"width": width})),
        method=target, data=dataclasses.replace(base.data, batch_size=batch_size),
        train=dataclasses.replace(base.train, epochs=epochs, seed=seed)).resolved()
    return Run(config.label, config.to_dict())


def method_settings(method: str, **offered: Any) -> dict[str, Any]:
    """The settings among ``offered`` that ``method`` takes (the fields of its ``settings_type``).

    A method refuses settings it does not take (``TypeError``); a test that offers e.g. ``backend=``
    or ``gain=`` to every method passes each only what it takes.
    """
    from sao.methods import METHODS

    return METHODS.get(method).offered(**offered)


def target_for(method: str, **target: Any) -> dict[str, Any]:
    """``target`` (``degree=``/``sparsity=``) if ``method`` takes one, else nothing (the dense baseline)."""
    from sao.methods import METHODS

    return target if METHODS.get(method).needs_target else {}


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` inside the block: sparse layers take a fixed route instead
    of a measured one (:func:`sao.nn.dispatch.deterministic_route`), so two copies of a model compute bit for bit
    alike."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def run_interpreted(script: str) -> dict[str, Any]:
    """Run the test file ``script`` as a script under ``TRITON_INTERPRET=1`` (the interpreter is chosen when a
    kernel is decorated, so it never runs in the pytest process); its :func:`report_checks` line as a dict."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the interpreter run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def report_checks(checks: dict[str, Callable[[], object]]) -> None:
    """Script mode of a Triton test file: run every check, print ``{name: error or null}`` as one JSON line
    (``{"unavailable": why}`` if triton cannot be imported)."""
    try:
        import triton  # noqa: F401
    except Exception as exc:  # any import failure means "skip"
        print(json.dumps({"unavailable": f"triton cannot be imported: {type(exc).__name__}: {exc}"}))
        return
    torch.set_num_threads(1)
    results: dict[str, str | None] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = None
        except Exception as exc:  # reported per check, asserted in pytest
            results[name] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(results))


def assert_round_trips(net: nn.Module, other: nn.Module, x: torch.Tensor, expected: torch.Tensor) -> None:
    """``other`` (another draw of ``net``'s architecture) loads ``net``'s ``state_dict`` and a ``torch.save``/
    ``torch.load`` copy of ``net`` is made; both compute ``expected`` on ``x`` bit for bit."""
    other.load_state_dict(net.state_dict())
    torch.testing.assert_close(other(x), expected, rtol=0, atol=0)
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf, weights_only=False)(x), expected, rtol=0, atol=0)


def assert_trains_like(model: nn.Module, x: torch.Tensor, mode: str, twin_mode: str = "off", steps: int = 2,
                       **tolerance: float) -> nn.Module:
    """Train ``model`` under ``fusion(mode)`` and a deep copy under ``fusion(twin_mode)`` for ``steps`` SGD steps on
    ``mean(model(x)²)``; assert their parameters stay equal (``tolerance`` for ``assert_close``); the twin."""
    from sao.nn import fusion

    twin = copy.deepcopy(model)
    for m, m_mode in ((model, mode), (twin, twin_mode)):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(steps):
            opt.zero_grad()
            with fusion(m_mode):
                m(x).square().mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, **tolerance)
    return twin


def copied(module: nn.Module, how: str) -> nn.Module:
    """A copy of ``module`` made the way ``how`` says: ``"pickle"``, ``"deepcopy"`` or ``"torch.save"`` (and load)."""
    if how == "pickle":
        return pickle.loads(pickle.dumps(module))
    if how == "deepcopy":
        return copy.deepcopy(module)
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)
