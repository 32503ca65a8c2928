"""The type checker is part of the test run: mypy, strict on allocator and drivers, clean elsewhere.

The check itself (how the ``dbc_harness.*`` names are laid out for mypy, which files) is
``tests/typecheck.py``, which also runs it by hand; the configuration is ``[tool.mypy]`` in
pyproject.toml. mypy's incremental cache lives under ``~/.cache/dbc-harness/mypy``, so a warm run
takes seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.typecheck import FOLDERS, ROOT, run


def test_mypy_reports_no_errors() -> None:
    proc = run()
    assert proc.returncode == 0, f"mypy found errors:\n{proc.stdout}{proc.stderr}"
    assert "Success: no issues found" in proc.stdout


_IGNORE = re.compile(r"#\s*type:\s*ignore\[[^\]]*\]")
_TOOL_COMMENTS = re.compile(r"#\s*(fmt:|noqa)[^#]*")


def unjustified_ignores(root: Path = ROOT) -> list[str]:
    """``type: ignore[code]`` comments that do not say why: a justification is a comment after
    the ignore on the same line, or a comment line right above it."""
    found = []
    for folder in (*FOLDERS, "tests"):
        for path in sorted((root / folder).rglob("*.py")):
            lines = path.read_text().splitlines()
            for i, line in enumerate(lines):
                m = _IGNORE.search(line)
                if m is None:
                    continue
                after = _TOOL_COMMENTS.sub("", line[m.end() :]).strip()
                above = lines[i - 1].strip() if i else ""
                if not after.startswith("#") and not above.startswith("#"):
                    found.append(f"{path.relative_to(root)}:{i + 1}: {line.strip()}")
    return found


def test_every_type_ignore_says_why() -> None:
    assert unjustified_ignores() == []
