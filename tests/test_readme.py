"""The README: its Python examples run as written (a user copies them first), its benchmarks list
is complete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dbc_harness.harness.benchmarks import BENCHMARKS

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


def test_readme_names_every_benchmark() -> None:
    # The command table and the Benchmarks section both list what `dbc-harness bench` runs.
    text = README.read_text()
    table = next(line for line in text.splitlines() if "dbc-harness bench NAME" in line)
    section = text.split("## Benchmarks", 1)[1].split("\n## ", 1)[0]
    missing = [n for n in BENCHMARKS if f"`{n}`" not in table or f"`{n}`" not in section]
    assert missing == []
