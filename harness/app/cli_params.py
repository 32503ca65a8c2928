"""Every option value of ``dbc-harness`` is checked here, before anything is opened or claimed.

One click ``ParamType`` per kind of value: :class:`Seconds` (finite, bounded durations: no NaN,
no infinity, no negative numbers, so every wait has a finite deadline), :class:`ByteCount` and
:class:`ByteCounts` (sizes with a named upper limit), :class:`OutputFile` / :class:`InputFile`
(a regular file that can be written / read: no directories, FIFOs, devices or kernel
pseudo-files, which would block, fill up or lie about their size), :class:`ListenAddress`,
:class:`BusId` and :class:`UsbId`. A refused value raises :class:`ValueRefused` (a
``click.BadParameter``): one ``error:`` line naming the option and the limit, exit code 2.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import click

#: the longest deadline any option accepts (one day): long enough for any bench, and far below
#: what ``threading`` waits accept (``threading.TIMEOUT_MAX``)
MAX_SECONDS = 86_400.0
#: ``--duration`` / ``--hold``: a long unattended export or claim (30 days)
MAX_HOLD_SECONDS = 30 * 86_400.0
#: the largest echo message: the host holds the message and its echo in memory
MAX_ECHO_SIZE = 256 << 20
#: the most bytes ``recv --size`` waits for (1 TiB)
MAX_RECV_SIZE = 1 << 40

#: kernel pseudo-filesystems: their files report size 0 and refuse (or ignore) writes
_PSEUDO_ROOTS = ("/proc", "/sys")
_SUFFIXES = {
    "k": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gib": 1 << 30,
}
_SIZE_RE = re.compile(r"^(0x[0-9a-f]+|[0-9]+)\s*([a-z]*)$", re.IGNORECASE)
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_BUSID_RE = re.compile(r"^[0-9]{1,3}-[0-9]{1,3}(\.[0-9]{1,3}){0,6}$")


class ValueRefused(click.BadParameter):
    """An option or argument value refused before anything was opened (exit code 2)."""


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fmt_seconds(n: float) -> str:
    return f"{int(n)} s" if float(n).is_integer() else f"{n:g} s"


def _fmt_bytes(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


class Seconds(click.ParamType):
    """A duration in seconds: finite, not negative, at most ``maximum``; zero only if allowed."""

    name = "seconds"

    def __init__(self, *, zero_ok: bool = False, maximum: float = MAX_SECONDS) -> None:
        self.zero_ok = zero_ok
        self.maximum = maximum

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, bool):
            raise ValueRefused(f"{value!r} is not a number of seconds", ctx, param)
        try:
            number = float(value) if isinstance(value, int | float) else float(str(value).strip())
        except (ValueError, OverflowError):
            raise ValueRefused(f"{_show(value)} is not a number of seconds", ctx, param) from None
        if math.isnan(number):
            raise ValueRefused(
                "nan is not a number of seconds: every wait needs a finite deadline", ctx, param
            )
        if math.isinf(number):
            raise ValueRefused(
                f"{_show(value)} is infinite: every wait needs a finite deadline "
                f"(at most {_fmt_seconds(self.maximum)})",
                ctx,
                param,
            )
        if number < 0:
            raise ValueRefused(f"{_show(value)} is negative: give seconds >= 0", ctx, param)
        if number == 0 and not self.zero_ok:
            raise ValueRefused("0 s leaves no time at all: give seconds > 0", ctx, param)
        if number > self.maximum:
            raise ValueRefused(
                f"{_show(value)} s is more than the limit of {_fmt_seconds(self.maximum)}",
                ctx,
                param,
            )
        return number


def parse_size(text: str) -> int:
    """``4096``, ``0x1000``, ``4k``/``4KiB``, ``1M``/``1MiB``, ``1G``/``1GiB``; ValueError else."""
    match = _SIZE_RE.match(text.strip())
    if match is None:
        raise ValueError(text)
    digits, suffix = match.groups()
    number = int(digits, 16) if digits[:2].lower() == "0x" else int(digits, 10)  # 010 is 10
    if suffix:
        if suffix.lower() not in _SUFFIXES:
            raise ValueError(text)
        number *= _SUFFIXES[suffix.lower()]
    return number


class ByteCount(click.ParamType):
    """A size in bytes between ``minimum`` and ``maximum`` (``maximum`` named when refused)."""

    name = "bytes"

    def __init__(self, *, minimum: int = 0, maximum: int, why: str = "") -> None:
        self.minimum, self.maximum, self.why = minimum, maximum, why

    def check(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = parse_size(str(value))
            except ValueError:
                raise ValueRefused(
                    f"{_show(value)} is not a size in bytes (e.g. 4096, 0x1000, 64k, 1M)",
                    ctx,
                    param,
                ) from None
        if number < self.minimum:
            raise ValueRefused(
                f"{_show(value)} is less than the minimum of {self.minimum}", ctx, param
            )
        if number > self.maximum:
            why = f" ({self.why})" if self.why else ""
            raise ValueRefused(
                f"{_show(value)} is more than the limit of {_fmt_bytes(self.maximum)}{why}",
                ctx,
                param,
            )
        return number

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        return self.check(value, param, ctx)


class ByteCounts(ByteCount):
    """A comma-separated, non-empty list of :class:`ByteCount` values."""

    name = "bytes,..."

    # a list where ByteCount converts to one int: a narrower parameter type than click's base
    def convert(  # type: ignore[override]
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[int]:
        if isinstance(value, list):
            return [self.check(v, param, ctx) for v in value]
        items = [item.strip() for item in str(value).split(",")]
        if not any(items):
            raise ValueRefused("an empty list: give at least one size, e.g. 1,1024", ctx, param)
        if not all(items):
            raise ValueRefused(
                f"{_show(value)} is not a comma-separated list of sizes (an empty item)",
                ctx,
                param,
            )
        return [self.check(item, param, ctx) for item in items]


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _is_pseudo(path: Path) -> bool:
    try:
        resolved = str(path.resolve())
    except (OSError, RuntimeError):
        return False
    return any(resolved == root or resolved.startswith(root + "/") for root in _PSEUDO_ROOTS)


def _is_devnull(st: os.stat_result) -> bool:
    try:
        null = os.stat(os.devnull)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino)


class _FileParam(click.ParamType):
    name = "file"

    def __init__(self, *, suffixes: tuple[str, ...] = ()) -> None:
        self.suffixes = suffixes

    def _path(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        text = os.fsdecode(value) if isinstance(value, bytes | os.PathLike) else str(value)
        if not text.strip():
            raise ValueRefused("an empty path: give a file name", ctx, param)
        if "\x00" in text:
            raise ValueRefused(f"{_show(text)} contains a NUL byte", ctx, param)
        path = Path(text)
        if self.suffixes and path.suffix.lower() not in self.suffixes:
            raise ValueRefused(
                f"unknown format {path.suffix or '(no suffix)'!r} for {_show(text)}: "
                f"use {' or '.join(self.suffixes)}",
                ctx,
                param,
            )
        return path

    def _stat(
        self, path: Path, param: click.Parameter | None, ctx: click.Context | None
    ) -> os.stat_result | None:
        try:
            return path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:  # ENOTDIR, ENAMETOOLONG, ELOOP, EACCES on a parent
            raise ValueRefused(f"{_show(str(path))}: {exc.strerror}", ctx, param) from None


class OutputFile(_FileParam):
    """A file to write: new, or an existing regular file that can be written, or /dev/null."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = self._path(value, param, ctx)
        st = self._stat(path, param, ctx)
        if st is None:
            parent = path.parent
            if not parent.is_dir():
                raise ValueRefused(
                    f"the directory {_show(str(parent))} does not exist: create it first",
                    ctx,
                    param,
                )
            if _is_pseudo(parent) or not os.access(parent, os.W_OK | os.X_OK):
                raise ValueRefused(
                    f"cannot create {_show(str(path))}: the directory is not writable", ctx, param
                )
            return path
        if _is_devnull(st):
            return path
        if not stat.S_ISREG(st.st_mode):
            raise ValueRefused(
                f"{_show(str(path))} is {_file_kind(st.st_mode)}: give a regular file "
                "(or /dev/null to discard)",
                ctx,
                param,
            )
        if _is_pseudo(path):
            raise ValueRefused(
                f"{_show(str(path))} is a kernel pseudo-file (/proc, /sys): give a regular file",
                ctx,
                param,
            )
        if not os.access(path, os.W_OK):
            raise ValueRefused(f"{_show(str(path))} is not writable", ctx, param)
        return path


class InputFile(_FileParam):
    """A regular file to read (its size is known up front; no FIFO or device that never ends)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = self._path(value, param, ctx)
        st = self._stat(path, param, ctx)
        if st is None:
            raise ValueRefused(f"{_show(str(path))} does not exist", ctx, param)
        if not stat.S_ISREG(st.st_mode):
            raise ValueRefused(
                f"{_show(str(path))} is {_file_kind(st.st_mode)}: give a regular file "
                "(its size must be known before sending)",
                ctx,
                param,
            )
        if _is_pseudo(path):
            raise ValueRefused(
                f"{_show(str(path))} is a kernel pseudo-file (/proc, /sys; its size is unknown): "
                "copy it to a regular file first",
                ctx,
                param,
            )
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ValueRefused(f"{_show(str(path))}: {exc.strerror}", ctx, param) from None
        return path


def same_file(a: Path, b: Path) -> bool:
    """True when both paths name one existing file (or one path not created yet)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.absolute() == b.absolute()


class ListenAddress(click.ParamType):
    """``HOST:PORT`` (``[::1]:3240`` for IPv6): an IP address or a host name, port 0..65535
    (0: any free port). Nothing is resolved or bound here."""

    name = "host:port"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port:
            raise ValueRefused(
                f"expected HOST:PORT (e.g. 127.0.0.1:3240), got {_show(text)}", ctx, param
            )
        if not port.isascii() or not port.isdigit() or int(port) > 65535:
            raise ValueRefused(
                f"port {_show(port)} is not a TCP port (0..65535; 0 picks a free one)", ctx, param
            )
        bracketed = host.startswith("[") and host.endswith("]")
        host = host[1:-1] if bracketed else host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if bracketed or not _HOSTNAME_RE.match(host):
                raise ValueRefused(
                    f"{_show(host)} is neither an IP address nor a host name", ctx, param
                ) from None
        return host, int(port)


class BusId(click.ParamType):
    """A USB/IP bus ID like ``1-1`` or ``2-1.4`` (ASCII, at most 31 bytes)."""

    name = "busid"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not _BUSID_RE.match(text) or len(text) > 31:
            raise ValueRefused(
                f"{_show(text)} is not a bus ID (BUS-PORT[.PORT...], e.g. 1-1 or 2-1.4)",
                ctx,
                param,
            )
        return text


class UsbId(click.ParamType):
    """``VID:PID`` in hex, each 16 bits."""

    name = "vid:pid"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        vid, sep, pid = text.partition(":")
        ok = sep and all(
            0 < len(part) <= 4 and all(c in "0123456789abcdefABCDEF" for c in part)
            for part in (vid, pid)
        )
        if not ok:
            raise ValueRefused(
                f"expected VID:PID in hex, 16 bits each (e.g. 1d6b:0010), got {_show(text)}",
                ctx,
                param,
            )
        return int(vid, 16), int(pid, 16)
