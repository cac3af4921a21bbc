"""The optional packages: one check, one clear error naming the extra to install.

``pip install sao`` gives the library (sao.topology, sao.init, sao.nn, sao.methods, sao.models,
sao.spectral, sao.export) with torch and numpy only. The harness that reproduces the paper (sao.data,
sao.training, sao.analysis, sao.experiments, sao.reports and the ``sao`` commands built on them)
needs the ``experiments`` extra, ``pip install 'sao[experiments]'``: each harness package calls
:func:`require_extra` before importing anything else. sao.export's ONNX side (export, ONNX Runtime)
needs the ``deploy`` extra and checks it before each lazy import. A missing package is therefore one
:class:`MissingExtra` naming the extra rather than a ``ModuleNotFoundError`` from deep inside.

This module imports nothing outside the standard library and nothing of sao (the ground floor in
pyproject.toml's import layers): it imports no optional package, it only looks for them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

__all__ = ["EXTRAS", "MissingExtra", "missing_packages", "require_extra"]

#: Extra name → {import name: distribution name} of the packages it adds (pyproject.toml's
#: ``[project.optional-dependencies]``, checked by tests/test_standalone.py).
EXTRAS: Mapping[str, Mapping[str, str]] = {
    "experiments": {
        "matplotlib": "matplotlib",
        "mlxtend": "mlxtend",
        "PIL": "pillow",
        "scipy": "scipy",
        "torchvision": "torchvision",
        "tqdm": "tqdm",
    },
    "deploy": {
        "onnx": "onnx",
        "onnxruntime": "onnxruntime",
        "onnxscript": "onnxscript",
    },
}


class MissingExtra(ImportError):
    """``feature`` needs the ``extra`` extra, and its packages ``missing`` are not installed.

    Example:
        >>> print(MissingExtra("sao reproduce", "experiments", ("scipy", "tqdm")))
        sao reproduce needs the experiments extra: pip install 'sao[experiments]' (not installed: scipy, tqdm)
    """

    def __init__(self, feature: str, extra: str, missing: tuple[str, ...]) -> None:
        self.feature, self.extra, self.missing = feature, extra, missing
        super().__init__(f"{feature} needs the {extra} extra: pip install 'sao[{extra}]' "
                         f"(not installed: {', '.join(missing)})")


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses the name, or a module without a spec
        return False


def missing_packages(extra: str) -> tuple[str, ...]:
    """The distributions of ``extra`` that are not installed (sorted; empty when all are)."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {sorted(EXTRAS)}")
    return tuple(sorted(dist for module, dist in EXTRAS[extra].items() if not _installed(module)))


def require_extra(feature: str, extra: str = "experiments") -> None:
    """Raise :class:`MissingExtra` if a package of ``extra`` is not installed (no package is imported)."""
    missing = missing_packages(extra)
    if missing:
        raise MissingExtra(feature, extra, missing)
