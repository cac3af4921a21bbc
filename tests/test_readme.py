"""The README's Python examples run as written (keeps the documentation true)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str) -> None:
    exec(compile(code, str(README), "exec"), {})


def test_your_own_model_shows_what_the_summary_prints(capsys: pytest.CaptureFixture[str]) -> None:
    """The table in "Your own model" is the real output, with rows left out but none changed."""
    section = README.read_text().split("## Your own model", 1)[1]
    code, shown = re.findall(r"```(?:python)?\n(.*?)```", section, flags=re.S)[:2]
    with pytest.warns(UserWarning, match="19 of 19 sparsified layers"):
        exec(compile(code, str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert all(line in printed for line in shown.splitlines())
    assert shown.splitlines()[0] == printed[0] and shown.splitlines()[-1] == printed[-1]
