"""The README's Python examples run as written (a user copies them first)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ("pytester",)

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_the_examples() -> None:
    assert len(BLOCKS) == 2


def test_plain_python_example_runs() -> None:
    exec(compile(BLOCKS[1], "README.md", "exec"), {})


def test_fixture_example_passes_under_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_readme_example=BLOCKS[0])
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    # the hardware example skips cleanly here (no --xhci), the virtual ones pass
    result.assert_outcomes(passed=2, skipped=1)
