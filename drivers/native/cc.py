"""Compile C for the native runner, with a cache (tests, the CLI's ``--driver file.c``).

:func:`compile_object` runs ``gcc -c`` on one source with :data:`FREESTANDING` flags (plus your
own) and caches the object under ``~/.cache/dbc-harness/native`` (``DBC_HARNESS_CACHE`` or
``XDG_CACHE_HOME`` move it), keyed by a hash of the source, every ``*.h`` next to it, the
flags, the defines and the compiler's version. Nothing compiled lives in the repository.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dbc_harness.drivers.native.errors import NativeError

#: a kernel-style freestanding compile: no libc, no builtins, no red zone, no stack protector
FREESTANDING: tuple[str, ...] = (
    "-O2",
    "-g",
    "-std=gnu11",
    "-ffreestanding",
    "-fno-builtin",
    "-nostdinc",
    "-fno-pic",
    "-fno-pie",
    "-mno-red-zone",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
)

COMPILE_TIMEOUT_S = 120


class CompileError(NativeError):
    """The compiler is missing or rejected the source (``output``: its messages)."""

    def __init__(self, message: str, output: str = "") -> None:
        self.output = output
        super().__init__(f"{message}\n{output}".rstrip())


def cache_dir() -> Path:
    root = os.environ.get("DBC_HARNESS_CACHE")
    if root:
        return Path(root) / "native"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "dbc-harness" / "native"


_VERSIONS: dict[str, str] = {}


def _compiler_version(cc: str) -> str:
    if cc not in _VERSIONS:
        try:
            out = subprocess.run(
                [cc, "--version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CompileError(f"C compiler {cc!r} not usable: {exc} (.ci/setup installs gcc)") \
                from exc  # fmt: skip
        _VERSIONS[cc] = out.stdout.splitlines()[0] if out.stdout else ""
    return _VERSIONS[cc]


def compile_object(
    source: str | Path,
    *,
    flags: Sequence[str] = FREESTANDING,
    extra_flags: Sequence[str] = (),
    defines: Sequence[str] = (),
    include_dirs: Sequence[str | Path] = (),
    cc: str = "gcc",
    cache: Path | None = None,
    name: str | None = None,
) -> Path:
    """Compile ``source`` (a path, or C text) to an object file and return its cached path.
    ``defines``: ``"NAME"`` or ``"NAME=value"`` (passed as ``-D``)."""
    if shutil.which(cc) is None:
        raise CompileError(f"C compiler {cc!r} not found (.ci/setup installs gcc)")
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                    and source.endswith(".c")):  # fmt: skip
        path = Path(source)
        text = path.read_bytes()
        headers = sorted(path.parent.glob("*.h"))
    else:
        path = None
        text = str(source).encode()
        headers = []
    args = [*flags, *extra_flags, *(f"-D{d}" for d in defines)]
    args += [f"-I{d}" for d in include_dirs]
    if path is not None:
        args.append(f"-I{path.parent}")
    digest = hashlib.sha256()
    for part in (text, "\0".join(args).encode(), _compiler_version(cc).encode()):
        digest.update(part)
        digest.update(b"\0")
    for h in headers:
        digest.update(h.name.encode() + b"\0" + h.read_bytes())
    for d in include_dirs:
        for h in sorted(Path(d).glob("*.h")):
            digest.update(h.name.encode() + b"\0" + h.read_bytes())
    stem = name or (path.stem if path is not None else "snippet")
    out_dir = cache or cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{stem}-{digest.hexdigest()[:20]}.o"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="dbc-native-") as tmp:
        src = path if path is not None else Path(tmp) / f"{stem}.c"
        if path is None:
            src.write_bytes(text)
        obj = Path(tmp) / "out.o"
        try:
            result = subprocess.run(
                [cc, *args, "-c", str(src), "-o", str(obj)],
                capture_output=True,
                text=True,
                timeout=COMPILE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CompileError(f"{cc} took longer than {COMPILE_TIMEOUT_S} s") from exc
        if result.returncode != 0:
            first = next((ln for ln in result.stderr.splitlines() if "error" in ln), "")
            raise CompileError(f"{cc} failed on {src.name}: {first}".rstrip(": "), result.stderr)
        tmp_target = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(obj, tmp_target)
        os.replace(tmp_target, target)  # atomic: parallel tests never see half a file
    return target
