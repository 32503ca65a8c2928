"""Runs the type checker (mypy) over the installed packages and the tests, as the test run does.

By hand: ``.venv/bin/python tests/typecheck.py`` (exit status and output are mypy's; extra
arguments go to mypy). ``tests/test_typecheck.py`` runs the same check inside
``python -m pytest``.

The installed names are ``dbc_harness.<folder>``, mapped from the repository's folders by
setup.py's ``package_dir``; mypy cannot follow setuptools' editable finder to them. So this
lays out ``dbc_harness/<folder>`` as symlinks to the folders in a stable directory under the
user's cache (stable, so mypy's incremental cache stays valid: a warm run takes seconds) and
points ``MYPYPATH`` at it. ``dbc_harness`` itself is a namespace package (no ``__init__.py``),
as installed. The configuration (strict on allocator and drivers, a clean baseline for the
rest) is ``[tool.mypy]`` in pyproject.toml. Paths in mypy's output are mapped back to the
repository's folders.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("allocator", "drivers", "harness", "fixtures")
# Checked besides the package: the tests, named ``tests.*`` from the checkout's root, and the
# guest tests, which import their conftest and helpers by bare name (their folder is a MYPYPATH
# base of its own, as it is the rootdir inside the QEMU guest).
GUEST_TESTS = ROOT / "tests" / "guest"


def cache_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dbc-harness" / "mypy"


def package_tree(cache: Path) -> Path:
    """``<cache>/tree-<checkout>/`` holding ``dbc_harness/<folder>`` -> ``ROOT/<folder>``."""
    key = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    tree = cache / f"tree-{key}"
    pkg = tree / "dbc_harness"
    pkg.mkdir(parents=True, exist_ok=True)
    for folder in FOLDERS:
        link = pkg / folder
        target = ROOT / folder
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        tmp = pkg / f".{folder}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)  # atomic: a concurrent run sees the old or the new link
    return tree


def test_files() -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "tests").rglob("*.py"))]


def command(cache: Path, tree: Path, extra: list[str]) -> list[str]:
    # mypy takes either ``-p`` or files: the package goes as its directory in the tree, whose
    # modules mypy names from the MYPYPATH base (explicit_package_bases), dbc_harness.<folder>.*
    return [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(cache / "cache"),
        str(tree / "dbc_harness"),
        *test_files(),
        *extra,
    ]


def run(extra: list[str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Runs mypy; returns the finished process with its output mapped to repository paths."""
    cache = cache_home()
    tree = package_tree(cache)
    env = dict(os.environ, MYPYPATH=os.pathsep.join([str(tree), str(ROOT), str(GUEST_TESTS)]))
    proc = subprocess.run(
        command(cache, tree, extra or []),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    prefix = f"{tree / 'dbc_harness'}{os.sep}"
    proc.stdout = proc.stdout.replace(prefix, "")
    proc.stderr = proc.stderr.replace(prefix, "")
    return proc


def main(argv: list[str]) -> int:
    proc = run(argv)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
