"""The Python examples of the documents in ``docs/`` run as written (keeps them true)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCKS = [(path, code) for path in sorted(DOCS.glob("*.md"))
          for code in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)]


def test_the_extension_guide_has_an_example_for_each_extension() -> None:
    """A method, a model, a table, a kernel backend and a layer adapter: one runnable example each."""
    guide = (DOCS / "extending.md").read_text()
    sections = re.split(r"^## ", guide, flags=re.M)[1:]
    examples = {s.splitlines()[0].split(":")[0]: len(re.findall(r"```python\n", s)) for s in sections}
    wanted = ("A method", "A model", "A table", "A kernel backend", "A layer adapter")
    assert {k: examples.get(k) for k in wanted} == dict.fromkeys(wanted, 1)
    assert sum(path.name == "extending.md" for path, _ in BLOCKS) == 5


@pytest.mark.parametrize(("path", "code"), BLOCKS, ids=[f"{p.stem}-{i}" for i, (p, _) in enumerate(BLOCKS)])
def test_docs_example_runs(path: Path, code: str) -> None:
    exec(compile(code, str(path), "exec"), {})
