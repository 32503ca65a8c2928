"""Every CLI input has a clean edge: a bad value of any option of any command (NaN, infinity,
negative or huge numbers, empty or garbage strings, unusable files and devices, bad addresses,
sizes beyond the limit) ends as one ``error:`` line and one ``hint:`` line with a documented exit
code, before anything is opened; click's own usage errors look the same (exit 2); SIGINT,
SIGTERM and SIGHUP at start-up, mid-run and during shutdown end with 130 / 143 / 129, one line,
no traceback, and the bench given back."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from dbc_harness.harness.app import cli_signals
from dbc_harness.harness.app.cli import cli
from dbc_harness.harness.app.cli_errors import ExitCode, explain
from dbc_harness.harness.app.cli_params import parse_size
from dbc_harness.harness.app.cli_signals import Interrupted

USAGE, FAILURE = ExitCode.USAGE, ExitCode.FAILURE
RUN = ("run", "--throughput-mib", "0")

#: (arguments, exit code, text of the error line, text of the hint line); ``{tmp}``, ``{dir}``,
#: ``{file}`` and ``{fifo}`` are a temporary directory, a directory, a regular file and a FIFO
CASES: list[tuple[tuple[str, ...], int, str, str]] = [
    # click's own usage errors, in the same form
    ((), USAGE, "no command given", "dbc-harness COMMAND --help"),
    (("nosuch",), USAGE, "No such command 'nosuch'", "`dbc-harness --help` lists the commands"),
    (("--nosuch",), USAGE, "No such option '--nosuch'", "`dbc-harness --help`"),
    (("run", "--bogus"), USAGE, "No such option '--bogus'", "`dbc-harness run --help`"),
    (("run", "--echo-siz", "1"), USAGE, "Did you mean '--echo-sizes'?", "dbc-harness run --help"),
    (("run", "--echo-sizes"), USAGE, "'--echo-sizes' requires an argument", "dbc-harness run"),
    (("run", "--json=1"), USAGE, "'--json' does not take a value", "dbc-harness run --help"),
    (("info",), USAGE, "Missing argument 'TARGET'", "usage: dbc-harness info [OPTIONS] TARGET"),
    (("trace",), USAGE, "Missing option '--out'", "usage: dbc-harness trace [OPTIONS]"),
    (("bench",), USAGE, "Missing argument 'NAME'", "usage: dbc-harness bench [OPTIONS] NAME"),
    (("bench", "nope"), USAGE, "'nope' is not one of", "dbc-harness bench --help"),
    (("list", "extra"), USAGE, "unexpected extra argument (extra)", "usage: dbc-harness list"),
    (("run", "--mode", "magic"), USAGE, "'magic' is not one of 'auto'", "dbc-harness run --help"),
    (("run", "--throughput-mib", "-1"), USAGE, "not in the range 0<=x<=4096", "run --help"),
    (("run", "--throughput-mib", "1e3"), USAGE, "'1e3' is not a valid integer", "run --help"),
    (("run", "--throughput-mib", "9" * 30), USAGE, "not in the range", "run --help"),
    (("run", "--in-buffer-size", "0"), USAGE, "not in the range 1<=x<=1048576", "run --help"),
    (("trace", "--out", "{tmp}/t.pcapng", "--echo", "0"), USAGE, "1<=x<=10000", "trace --help"),
    (("restore", "--state-dir", "{file}"), USAGE, "is a file", "dbc-harness restore --help"),
    (("recv", "{tmp}/r.bin"), USAGE, "give --size N or --source FILE", "usage: dbc-harness recv"),
    # durations: finite, positive, bounded (every wait has a finite deadline)
    ((*RUN, "--timeout", "nan"), USAGE, "nan is not a number of seconds", "run --help"),
    ((*RUN, "--timeout", "NaN"), USAGE, "finite deadline", "run --help"),
    ((*RUN, "--timeout", "inf"), USAGE, "'inf' is infinite", "run --help"),
    ((*RUN, "--timeout", "-inf"), USAGE, "is infinite", "run --help"),
    ((*RUN, "--timeout", "1e400"), USAGE, "'1e400' is infinite", "run --help"),
    ((*RUN, "--timeout", "-1"), USAGE, "'-1' is negative", "run --help"),
    ((*RUN, "--timeout", "0"), USAGE, "0 s leaves no time at all", "run --help"),
    ((*RUN, "--timeout", "1e9"), USAGE, "more than the limit of 86400 s", "run --help"),
    ((*RUN, "--timeout", ""), USAGE, "'' is not a number of seconds", "run --help"),
    ((*RUN, "--timeout", "10s"), USAGE, "'10s' is not a number of seconds", "run --help"),
    ((*RUN, "--timeout", "\u2603"), USAGE, "is not a number of seconds", "run --help"),
    (("console", "--idle", "nan"), USAGE, "nan is not a number", "console --help"),
    (("console", "--timeout", "-0.5"), USAGE, "'-0.5' is negative", "console --help"),
    (("send", "{file}", "--timeout", "inf"), USAGE, "is infinite", "send --help"),
    (("recv", "{tmp}/r.bin", "--idle", "-5"), USAGE, "'-5' is negative", "recv --help"),
    (("trace", "--out", "{tmp}/t.pcapng", "--timeout", "nan"), USAGE, "nan", "trace --help"),
    (("usbip", "--duration", "nan"), USAGE, "nan is not a number", "usbip --help"),
    (("usbip", "--duration", "-1"), USAGE, "'-1' is negative", "usbip --help"),
    (("usbip", "--timeout", "0"), USAGE, "0 s leaves no time", "usbip --help"),
    (("claim", "0000:00:14.0", "--hold", "inf"), USAGE, "at most 2592000 s", "claim --help"),
    # sizes: bounded, with the limit named
    ((*RUN, "--echo-sizes", "1099511627776"), USAGE, "limit of 256 MiB", "run --help"),
    ((*RUN, "--echo-sizes", "1,268435457"), USAGE, "'268435457' is more than the limit", "run"),
    ((*RUN, "--echo-sizes", ""), USAGE, "an empty list", "run --help"),
    ((*RUN, "--echo-sizes", "1,,2"), USAGE, "an empty item", "run --help"),
    ((*RUN, "--echo-sizes", "0"), USAGE, "less than the minimum of 1", "run --help"),
    ((*RUN, "--echo-sizes", "-5"), USAGE, "'-5' is not a size in bytes", "run --help"),
    ((*RUN, "--echo-sizes", "1.5"), USAGE, "'1.5' is not a size in bytes", "run --help"),
    ((*RUN, "--echo-sizes", "4T"), USAGE, "'4T' is not a size in bytes", "run --help"),
    ((*RUN, "--echo-sizes", "\u00f1"), USAGE, "is not a size in bytes", "run --help"),
    (("recv", "{tmp}/r.bin", "--size", "1099511627777"), USAGE, "limit of 1024 GiB", "recv"),
    (("recv", "{tmp}/r.bin", "--size", "-1"), USAGE, "'-1' is not a size", "recv --help"),
    # files: regular files only (no device that fills up, FIFO that blocks, pseudo-file)
    (("recv", "/dev/full", "--size", "10"), USAGE, "'/dev/full' is a character device", "recv"),
    (("recv", "/proc/version", "--size", "10"), USAGE, "kernel pseudo-file", "recv --help"),
    (("recv", "{dir}", "--size", "10"), USAGE, "is a directory", "recv --help"),
    (("recv", "{fifo}", "--size", "10"), USAGE, "is a FIFO", "recv --help"),
    (("recv", "{tmp}/no/such/r.bin", "--size", "1"), USAGE, "does not exist: create", "recv"),
    (("recv", "{file}/r.bin", "--size", "1"), USAGE, "Not a directory", "recv --help"),
    (("recv", "", "--size", "10"), USAGE, "an empty path", "recv --help"),
    (("recv", "{file}", "--source", "{file}"), USAGE, "would be emptied", "recv --help"),
    (("recv", "{tmp}/r.bin", "--source", "/dev/zero"), USAGE, "a character device", "recv"),
    (("send", "{dir}"), USAGE, "is a directory", "send --help"),
    (("send", "/dev/zero"), USAGE, "'/dev/zero' is a character device", "send --help"),
    (("send", "{fifo}"), USAGE, "is a FIFO", "send --help"),
    (("send", "/proc/version"), USAGE, "its size is unknown", "send --help"),
    (("send", "{tmp}/missing.bin"), USAGE, "does not exist", "send --help"),
    (("send", "a\x00b"), USAGE, "contains a NUL byte", "send --help"),
    ((*RUN, "--trace", "{dir}"), USAGE, "is a directory", "run --help"),
    ((*RUN, "--trace", "/dev/full"), USAGE, "a character device", "run --help"),
    ((*RUN, "--trace", "{tmp}/x.txt"), USAGE, "unknown trace format '.txt'", ".pcapng or .jsonl"),
    (
        ("trace", "--out", "{tmp}/t.pcapng", "--jsonl", "{tmp}/t.pcapng"),
        USAGE,
        "is also --out",
        "trace --help",
    ),
    (("trace", "--out", "/proc/version"), USAGE, "kernel pseudo-file", "trace --help"),
    (("usbip", "--trace", "{fifo}"), USAGE, "is a FIFO", "usbip --help"),
    # addresses and identities
    (("usbip", "--listen", "127.0.0.1:99999"), USAGE, "'99999' is not a TCP port", "usbip"),
    (("usbip", "--listen", "127.0.0.1:-1"), USAGE, "'-1' is not a TCP port", "usbip --help"),
    (("usbip", "--listen", "127.0.0.1:\u0663"), USAGE, "is not a TCP port", "usbip --help"),
    (("usbip", "--listen", "nonsense"), USAGE, "expected HOST:PORT", "usbip --help"),
    (("usbip", "--listen", ":3240"), USAGE, "expected HOST:PORT", "usbip --help"),
    (("usbip", "--listen", "\u00fcn\u00efcode:3240"), USAGE, "nor a host name", "usbip"),
    (("usbip", "--listen", "[::1:3240"), USAGE, "neither an IP address", "usbip --help"),
    (("usbip", "--listen", "0.0.0.0:3240"), FAILURE, "no authentication", "--allow-remote"),
    (("usbip", "--busid", ""), USAGE, "'' is not a bus ID", "usbip --help"),
    (("usbip", "--busid", "1-1\u00e9"), USAGE, "is not a bus ID", "usbip --help"),
    (("usbip", "--id", "10000:1"), USAGE, "expected VID:PID in hex", "usbip --help"),
    (("usbip", "--id", ":"), USAGE, "expected VID:PID", "usbip --help"),
    (("usbip", "--serial", "x" * 200), USAGE, "at most 126", "identity"),
    # benches and targets
    ((*RUN, "--bench", ""), USAGE, "unknown bench ''", "hw:BDF"),
    ((*RUN, "--bench", "hw:"), USAGE, "unknown bench 'hw:'", "hw:BDF"),
    ((*RUN, "--bench", "hw:\u2603"), USAGE, "is not a PCI address", "0000:00:14.0"),
    (("info", ""), USAGE, "'' is not a PCI address", "0000:00:14.0"),
    ((*RUN, "--quirk", ""), USAGE, "no quirk named ''", "fields of fixtures.virtual.Quirks"),
    ((*RUN, "--quirk", "dcst_er_lag_us=nan"), USAGE, "'nan' is not a number", "Quirks"),
    ((*RUN, "--quirk", "dcst_er_lag_us=-1"), USAGE, "must be >= 0", "Quirks"),
    (("console",), USAGE, "standard input", "usage: dbc-harness console"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("edges")
    (tmp / "dir").mkdir()
    (tmp / "file.bin").write_bytes(b"0123456789")
    os.mkfifo(tmp / "fifo")
    return {"tmp": str(tmp), "dir": str(tmp / "dir"), "file": str(tmp / "file.bin"),
            "fifo": str(tmp / "fifo")}  # fmt: skip


def assert_clean_edge(code: int, stderr: str, want: int, message: str, hint: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert code == want, stderr
    assert len(lines) == 2, stderr
    assert lines[0].startswith("error: ") and message in lines[0], stderr
    assert lines[1].startswith("hint: ") and hint in lines[1], stderr
    assert "this is a bug" not in stderr


@pytest.mark.parametrize(
    ("args", "code", "message", "hint"), CASES, ids=[" ".join(c[0])[:60] for c in CASES]
)
def test_bad_input_is_one_error_line_one_hint_and_a_documented_code(
    args: tuple[str, ...], code: int, message: str, hint: str, places: dict[str, str]
) -> None:
    argv = [a.format(**places) for a in args]
    before = {t.name for t in threading.enumerate()}
    result = CliRunner().invoke(cli, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert_clean_edge(result.exit_code, result.stderr, code, message, hint)
    left = {t.name for t in threading.enumerate()} - before
    assert not {n for n in left if n.startswith("dbc-")}, left  # nothing left running


def test_a_port_in_use_names_the_address_and_says_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["usbip", "--listen", f"127.0.0.1:{port}", "--duration", "0.1"]
        )
    assert_clean_edge(
        result.exit_code, result.stderr, ExitCode.BUSY, "Address already in use", "--listen port"
    )


@pytest.mark.parametrize(
    ("err", "code", "message", "hint"),
    [
        (errno.ENOSPC, FAILURE, "No space left on device (ENOSPC)", "full"),
        (errno.EROFS, USAGE, "(EROFS)", "read-only"),
        (errno.EIO, FAILURE, "(EIO)", "regular file"),
        (errno.EADDRNOTAVAIL, USAGE, "(EADDRNOTAVAIL)", "127.0.0.1"),
        (errno.ENXIO, FAILURE, "(ENXIO)", "check it"),
    ],
)
def test_operating_system_errors_are_named_not_reported_as_bugs(
    err: int, code: int, message: str, hint: str
) -> None:
    explained = explain(OSError(err, os.strerror(err), "/some/file"))
    assert explained.code == code
    assert explained.message.startswith("/some/file: ") and message in explained.message
    assert hint in explained.hint and "bug" not in explained.hint


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("010", 10), ("0x1000", 4096), ("64k", 65536), ("1MiB", 1 << 20),
     ("2 G", 2 << 30)],
)  # fmt: skip
def test_sizes_take_decimal_hex_and_binary_suffixes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_large_echoes_move_with_flow_control() -> None:
    """32 MiB (beyond what the rings and the target buffer hold) echoes whole on a healthy
    bench: the host reads while it sends, and the deadline is on progress, not on size."""
    result = CliRunner().invoke(cli, ["run", "--json", *RUN[1:], "--echo-sizes", "32M,1"])
    assert result.exit_code == 0, result.stderr
    assert '"ok": true' in result.stdout


def test_trace_jsonl_is_described_as_json_lines_not_a_capture(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    result = CliRunner().invoke(cli, ["trace", "--out", str(out), "--echo", "1"])
    assert result.exit_code == 0, result.stderr
    assert "tshark" not in result.stdout and "JSON lines" in result.stdout
    assert out.stat().st_size > 0


# ---------------------------------------------------------------------------------- signals

ENTRY = [sys.executable, "-c", "from dbc_harness.harness.app.entry import main; main()"]
#: a run whose echo lasts seconds, so a signal lands in the middle of it
LONG_RUN = ["run", "--echo-sizes", "128M", "--throughput-mib", "0"]
#: an export that runs until a signal stops it (the documented normal end: exit 0)
EXPORT = ["usbip", "--listen", "127.0.0.1:0"]
#: the same CLI with a bench whose close takes a second (a window to signal during shutdown)
SLOW_CLOSE = [
    sys.executable,
    "-c",
    "import sys, time\n"
    "from dbc_harness.harness.app import cli_signals\n"
    "cli_signals.install()\n"
    "from dbc_harness.fixtures.bench import VirtualBench\n"
    "close = VirtualBench.close\n"
    "def slow(self):\n"
    "    print('closing slowly', flush=True); time.sleep(1.0); close(self)\n"
    "    print('bench closed', flush=True)\n"
    "VirtualBench.close = slow\n"
    "from dbc_harness.harness.app.cli import main\n"
    "sys.argv[1:] = ['run', '--echo-sizes', '1', '--throughput-mib', '0']\n"
    "main()\n",
]


def _catches(pid: int, sig: int) -> bool:
    """Whether the process has a handler for ``sig`` yet (SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    match = re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.MULTILINE)
    return bool(match and int(match.group(1), 16) >> (sig - 1) & 1)


def _signal_run(phase: str, sig: int) -> tuple[str, int, int, str, str]:
    argv = {"shutdown": SLOW_CLOSE, "usbip export": [*ENTRY, *EXPORT]}.get(
        phase, [*ENTRY, *LONG_RUN]
    )
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    try:
        assert proc.stdout is not None
        if phase == "start-up":  # as soon as the handlers are in (SIGTERM: Python leaves it
            # alone, unlike SIGINT), before anything is opened
            deadline = time.monotonic() + 30
            while not _catches(proc.pid, signal.SIGTERM) and time.monotonic() < deadline:
                time.sleep(0.005)
        else:
            marker = {
                "mid-run": "> echo of",
                "shutdown": "closing slowly",
                "usbip export": "usbip attach",
            }[phase]
            for line in proc.stdout:
                if marker in line:
                    break
        proc.send_signal(sig)
        if phase == "shutdown":  # a second signal while giving back: still no traceback
            time.sleep(0.2)
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    try:  # nothing of the session (process group) outlives it
        os.killpg(proc.pid, 0)
        stray = True
    except ProcessLookupError:
        stray = False
    assert not stray, f"{phase} {sig}: processes left in the session"
    return phase, sig, proc.returncode, out, err


def test_signals_at_start_up_mid_run_and_shutdown_end_cleanly(tmp_path: Path) -> None:
    cases = [
        *(("start-up", s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)),
        *(("mid-run", s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)),
        ("shutdown", signal.SIGINT),
        ("shutdown", signal.SIGTERM),
        ("usbip export", signal.SIGTERM),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: _signal_run(*c), cases))
    for phase, sig, code, out, err in results:
        name = signal.Signals(sig).name
        if phase == "usbip export":  # stopping an export is its normal end
            assert code == 0 and "stopped: imports 0" in out, (out, err)
            assert "Traceback" not in err and "error:" not in err, err
            continue
        lines = [line for line in err.splitlines() if line.strip()]
        assert "Traceback" not in err, (phase, name, err)
        assert code == 128 + sig, (phase, name, code, err)
        assert len(lines) == 1 and lines[0].startswith(f"interrupted by {name}"), (phase, err)
        if phase == "shutdown":
            assert "bench closed" in out, (phase, name, out)  # cleanup finished first
    # nothing left claimed anywhere
    restore = CliRunner().invoke(cli, ["restore", "--json"])
    assert restore.exit_code == 0 and restore.stdout.strip() == "[]", restore.output


class Resource:
    """A bench stand-in that records its life and lets a 'signal' land while it opens/closes."""

    def __init__(self, events: list[str], signal_in: str = "") -> None:
        self.events, self.signal_in = events, signal_in
        self._signal_here("open")
        events.append("opened")

    def _signal_here(self, where: str) -> None:
        if self.signal_in == where:  # what the handler does when SIGTERM arrives right here
            cli_signals._on_signal(signal.SIGTERM, None)

    def __enter__(self) -> Resource:
        return self

    def __exit__(self, *exc: object) -> None:
        self._signal_here("close")
        self._signal_here("close")  # and a second one while giving back
        self.events.append("closed")


@pytest.fixture
def signals_state() -> Iterator[None]:
    cli_signals.reset()
    yield
    cli_signals.reset()


@pytest.mark.parametrize("where", ["open", "close"])
def test_a_signal_while_opening_or_closing_waits_until_that_is_done(
    where: str, signals_state: None
) -> None:
    events: list[str] = []
    with pytest.raises(Interrupted) as caught:
        with cli_signals.guarded(lambda: Resource(events, signal_in=where)):
            events.append("used")
    assert caught.value.exit_code == 143
    # a signal in open: the resource is fully opened, then closed, never used
    assert events == (["opened", "closed"] if where == "open" else ["opened", "used", "closed"])
    assert cli_signals.received() is not None


def test_after_hold_a_signal_is_only_recorded(signals_state: None) -> None:
    cli_signals.hold()
    cli_signals._on_signal(signal.SIGHUP, None)  # no exception
    late = cli_signals.received()
    assert late is not None and late.exit_code == 129


def test_a_claims_own_signal_exit_is_reported_like_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """harness.binding.claim's handler ends SIGTERM with SystemExit(143) while it holds a
    controller (after giving it back): the same one line as our own handler."""
    import click

    @click.command("held")
    def held() -> None:
        raise SystemExit(128 + signal.SIGTERM)

    monkeypatch.setitem(cli.commands, "held", held)
    result = CliRunner().invoke(cli, ["held"])
    assert result.exit_code == 143
    assert result.stderr == "interrupted by SIGTERM: everything taken was given back\n"
