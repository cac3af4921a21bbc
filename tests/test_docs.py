"""The Python examples of the documents in ``docs/`` run as written (keeps them true)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCKS = [(path, code) for path in sorted(DOCS.glob("*.md"))
          for code in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)]


def test_the_extension_guide_has_its_three_examples() -> None:
    assert sum(path.name == "extending.md" for path, _ in BLOCKS) == 3


@pytest.mark.parametrize(("path", "code"), BLOCKS, ids=[f"{p.stem}-{i}" for i, (p, _) in enumerate(BLOCKS)])
def test_docs_example_runs(path: Path, code: str) -> None:
    exec(compile(code, str(path), "exec"), {})
