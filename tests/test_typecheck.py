"""The type checker is part of the test run: mypy, strict on allocator and drivers, clean elsewhere.

The check itself (how the ``dbc_harness.*`` names are laid out for mypy, which files) is
``tests/typecheck.py``, which also runs it by hand; the configuration is ``[tool.mypy]`` in
pyproject.toml. mypy's incremental cache lives under ``~/.cache/dbc-harness/mypy``, so a warm run
takes seconds.
"""

from __future__ import annotations

from tests.typecheck import run


def test_mypy_reports_no_errors() -> None:
    proc = run()
    assert proc.returncode == 0, f"mypy found errors:\n{proc.stdout}{proc.stderr}"
    assert "Success: no issues found" in proc.stdout
