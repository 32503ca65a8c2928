"""The installed packages live under one namespace: nothing imports a bare generic top-level name.

The repository's folders (allocator/, drivers/, harness/, fixtures/) are installed as
``dbc_harness.<folder>`` (setup.py's package_dir). ``python -m pytest`` puts the checkout on
sys.path, so a stray ``from harness.x import y`` would still run here and break only in an
installed copy: this test reads every module's imports instead of trusting that.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("allocator", "drivers", "harness", "fixtures")


def _python_files() -> list[Path]:
    files = [p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")]
    files += (ROOT / "tests").rglob("*.py")
    return sorted(files)


def test_no_module_imports_a_bare_folder_name() -> None:
    offenders: list[str] = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FOLDERS:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert offenders == []


def test_installed_names_are_namespaced_and_bare_names_are_not_installed() -> None:
    # A fresh interpreter outside the checkout: only what the installation provides.
    code = (
        "import importlib.util as u\n"
        "print([n for n in ('allocator','drivers','harness','fixtures') if u.find_spec(n)])\n"
        "import dbc_harness.allocator, dbc_harness.drivers, dbc_harness.harness.app.cli\n"
        "import dbc_harness.fixtures.plugin\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_console_script_and_pytest_plugin_use_the_namespace() -> None:
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["dbc-harness"] == "dbc_harness.harness.app.entry:main"
    plugins = {e.name: e.value for e in entry_points(group="pytest11")}
    assert plugins["dbc_harness"] == "dbc_harness.fixtures.plugin"
    assert importlib.util.find_spec("dbc_harness.fixtures.plugin") is not None
