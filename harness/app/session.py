"""The main job behind ``dbc-harness run`` and ``trace``: bring-up, echo, throughput, summary.

One session: open a bench (:func:`fixtures.bench.open_bench`), make a DbC driver, ``start()`` it
while every state transition is reported live, then through the debug host's pyusb device

* **echo**: the host sends a message (USB OUT, host -> target: it lands on the DbC's IN ring);
  a target-side responder thread ``read()``\\ s it and ``write()``\\ s it back (DbC OUT ring,
  target -> host); the host reads it (USB IN) and compares;
* **throughput**: ``target_to_host`` (driver writes 1 MiB messages, host reads) and
  ``host_to_target`` (host writes, driver reads), each in MB/s;

then stop the driver and close the bench (everything given back), whatever happened.

Directions are named from the target: ``target_to_host`` = the DbC's OUT ring = the host's bulk
IN endpoint; ``host_to_target`` = the host's bulk OUT endpoint = the DbC's IN ring.
"""

from __future__ import annotations

import array
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from dbc_harness.drivers.dbc import DbcConfigError, DbcTimeout, DbcUndelivered
from dbc_harness.drivers.dbc_api import DbcDriverApi, TargetStream
from dbc_harness.drivers.tracing import TraceSink, null_sink
from dbc_harness.drivers.xhci.contexts import DBC_MAX_PACKET_SIZE
from dbc_harness.fixtures.bench import HostUnavailable, PipeStalled, open_bench
from dbc_harness.fixtures.trace import open_trace
from dbc_harness.fixtures.virtual.parts import PartError
from dbc_harness.fixtures.virtual.quirk_options import QuirkError, parse_quirks
from dbc_harness.harness.app.cli_errors import ExitCode
from dbc_harness.harness.app.cli_signals import guarded
from dbc_harness.harness.app.kernel_run import run_in_kernel_bench
from dbc_harness.harness.app.options import SessionOptions
from dbc_harness.harness.app.views import session_table
from rich.markup import escape as esc

if TYPE_CHECKING:
    from dbc_harness.fixtures.bench import Bench, DebugHostPipe

#: message size of the throughput checks
THROUGHPUT_MESSAGE = 1 << 20
#: the Python driver's settings in the main job (what a user after throughput would pick):
#: 64 KiB receive buffers on the IN ring (one TRB and one event per 64 KiB instead of per packet;
#: the host's zero-length packets keep message boundaries), 64 of them posted (4 MiB in flight),
#: rings of 1024 TRBs
DEFAULT_IN_BUFFER_SIZE = 64 << 10
DEFAULT_IN_BUFFERS = 64
DEFAULT_RING_TRBS = 1024


class CheckFailed(Exception):
    """An echo or throughput check saw wrong data (the message says which and where)."""


@dataclass
class EchoResult:
    size: int
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class SessionResult:
    bench: dict[str, str] = field(default_factory=dict)
    transitions: list[tuple[float, str, str]] = field(default_factory=list)
    final_state: str = ""
    echo: list[EchoResult] = field(default_factory=list)
    throughput_MBps: dict[str, float] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    skipped: str = ""
    trace_path: str | None = None
    elapsed: float = 0.0
    restored: bool = False

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.echo) and not self.findings

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def _counters_dict(counters: Any) -> dict[str, Any]:
    if counters is None:
        return {}
    if isinstance(counters, dict):
        return dict(counters)
    if hasattr(counters, "as_dict"):
        return dict(counters.as_dict())
    try:
        return asdict(counters)
    except TypeError:
        return {k: v for k, v in vars(counters).items() if not k.startswith("_")}


def read_chunk(driver: TargetStream, max_bytes: int, timeout: float) -> bytes:
    try:
        return bytes(driver.read(max_bytes, timeout=timeout))
    except DbcTimeout:
        return b""


class TargetEcho:
    """The target-side responder of the echo check: reads what the host sent and writes it
    back, message by message, in a thread (stopped by :meth:`close`, bounded join). A write
    waits at most ``timeout`` seconds for the host to take the data (the host reads while it
    sends, so a large echo keeps moving)."""

    def __init__(self, driver: TargetStream, timeout: float = 10.0) -> None:
        self.driver = driver
        self.timeout = timeout
        self.error: BaseException | None = None
        self.echoed = 0
        #: messages the driver reported undelivered (DbcUndelivered), as (message id, bytes)
        self.undelivered: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbc-target-echo", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = read_chunk(self.driver, 1 << 20, 0.05)
                if not data:
                    continue
                try:
                    self.driver.write(data, timeout=self.timeout)
                except DbcUndelivered as exc:  # an earlier echo was lost: reported, not fatal
                    lost = [(m.message_id, len(m.undelivered_bytes)) for m in exc.undelivered]
                    self.undelivered.extend(lost)
                    self.driver.write(data, timeout=self.timeout)
                self.echoed += len(data)
        except BaseException as exc:  # reported by the host side
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def _request_size(remaining: int) -> int:
    """A target -> host request: whole max-packet multiples, at most one throughput message."""
    return min(-(-remaining // DBC_MAX_PACKET_SIZE) * DBC_MAX_PACKET_SIZE, THROUGHPUT_MESSAGE)


class _EchoReader(threading.Thread):
    """The debug host reads the echo *while* it is still sending the message: a message larger
    than what the rings and the target can hold only moves when both directions do. Gives up
    after ``timeout`` seconds without a byte (a deadline on progress, not on size). A stalled
    IN pipe is cleared as a host would, and the message read again from its start."""

    #: one host read waits at most this long, so :meth:`stop` is seen promptly
    SLICE = 0.25

    def __init__(self, pipe: DebugHostPipe, size: int, timeout: float) -> None:
        super().__init__(name="dbc-host-echo-reader", daemon=True)
        self.pipe, self.size, self.timeout = pipe, size, timeout
        self.got = bytearray()
        self.recovered = ""
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        last = time.monotonic()
        try:
            while len(self.got) < self.size and not self._halt.is_set():
                if time.monotonic() - last > self.timeout:
                    return  # no progress for ``timeout`` s: the result names what arrived
                try:
                    data = self.pipe.recv(_request_size(self.size - len(self.got)), self.SLICE)
                except PipeStalled as exc:
                    if exc.direction != "in":
                        raise
                    self.pipe.clear_halt(exc.direction)  # the target may send it again
                    self.recovered = f" after {exc} and clear_halt"
                    self.got.clear()
                    data = b""
                    last = time.monotonic()
                if data:
                    self.got += data
                    last = time.monotonic()
        except BaseException as exc:  # reported by run_echo
            self.error = exc

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=self.SLICE * 4 + 1.0)


def _pattern(size: int, seed: int) -> bytes:
    block = bytes((i * 131 + seed * 17 + 1) & 0xFF for i in range(256))
    return (block * (size // 256 + 1))[:size]


def run_echo(
    pipe: DebugHostPipe, sizes: list[int], timeout: float, zlp: bool = False
) -> list[EchoResult]:
    """Each size: host sends a pattern (in 1 MiB pieces, reading the echo back meanwhile),
    compares. Every wait is bounded by ``timeout`` seconds *without progress*, so a large
    message takes as long as it needs and a stuck one fails in ``timeout`` s. When a pipe
    stalls the host clears the halt (as a real host would) and reads again: a message that
    then arrives whole passes with a note (the driver recovered), anything else fails."""
    results: list[EchoResult] = []
    for i, size in enumerate(sizes):
        payload = _pattern(size, i)
        t0 = time.monotonic()
        reader = _EchoReader(pipe, size, timeout)
        recovered = ""
        try:
            for start in range(0, size, THROUGHPUT_MESSAGE):
                piece = payload[start : start + THROUGHPUT_MESSAGE]
                last_piece = start + len(piece) >= size
                pipe.send(piece, timeout=timeout, zlp=zlp and last_piece)
                if reader.error is not None or not reader.is_alive():
                    break
            while reader.is_alive():  # it ends on the whole echo, or ``timeout`` s idle
                reader.join(timeout=_EchoReader.SLICE)
        except PipeStalled as exc:  # the DbC halted the OUT endpoint: clear it as a host would
            pipe.clear_halt(exc.direction)
            recovered = f" after {exc} and clear_halt"
            reader.got.clear()  # the message was cut: it cannot come back whole
        finally:
            reader.stop()
        if reader.error is not None:
            raise reader.error
        recovered = recovered or reader.recovered
        back = bytes(reader.got)
        seconds = time.monotonic() - t0
        if back == payload:
            detail = f"delivered{recovered}" if recovered else ""
            results.append(EchoResult(size, True, seconds, detail))
        else:
            first = next(
                (j for j, (a, b) in enumerate(zip(back, payload, strict=False)) if a != b),
                min(len(back), len(payload)),
            )
            detail = f"got {len(back)} of {size} bytes, first difference at byte {first}"
            results.append(EchoResult(size, False, seconds, detail + recovered))
    return results


class _Repeated:
    """``message`` repeated without end. :meth:`matches` compares received bytes with bytes
    ``offset .. offset + len(data)`` of it (at most ``len(message)``) in place, through numpy
    views of the message written twice: no slice or copy of a megabyte per check (fresh
    megabyte buffers cost more than the transfer itself)."""

    def __init__(self, message: bytes) -> None:
        self.size = len(message)
        self._twice = np.frombuffer(message + message, dtype=np.uint8)

    def matches(self, offset: int, data: bytes | bytearray | memoryview | array.array[int]) -> bool:
        got = np.frombuffer(data, dtype=np.uint8)
        start = offset % self.size
        return bool(np.array_equal(got, self._twice[start : start + len(got)]))


def measure_target_to_host(
    driver: DbcDriverApi, pipe: DebugHostPipe, total: int, timeout: float
) -> float:
    """Driver writes ``total`` bytes (1 MiB messages) and flushes; the host reads them into one
    reused buffer and checks them piece by piece (memory stays at one message however large
    ``total`` is). MB/s."""
    message = _pattern(THROUGHPUT_MESSAGE, 99)
    expected = _Repeated(message)
    buffer = array.array("B", bytes(THROUGHPUT_MESSAGE))
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            sent = 0
            while sent < total:
                n = min(THROUGHPUT_MESSAGE, total - sent)
                driver.write(message if n == len(message) else message[:n], timeout=timeout)
                sent += n
            # the last writes may still wait for ring room: a polled driver moves them only
            # while someone calls it
            driver.flush(timeout=timeout)
        except BaseException as exc:
            errors.append(exc)

    t0 = time.monotonic()
    deadline = t0 + timeout
    producer = threading.Thread(target=produce, name="dbc-target-writer", daemon=True)
    producer.start()
    got = 0
    same = True
    while got < total and not errors:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        want = _request_size(total - got)
        into = buffer if want == len(buffer) else array.array("B", bytes(want))
        n = pipe.recv_into(into, timeout=min(left, 1.0))
        same = same and expected.matches(got, memoryview(into)[:n])
        got += n
    elapsed = time.monotonic() - t0
    producer.join(timeout=max(0.1, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    if got != total:
        raise CheckFailed(f"target_to_host: host got {got} of {total} bytes")
    if not same:
        raise CheckFailed("target_to_host: the host received different bytes than were written")
    return total / elapsed / 1e6


def measure_host_to_target(
    driver: TargetStream, pipe: DebugHostPipe, total: int, timeout: float, zlp: bool = False
) -> float:
    """The host writes ``total`` bytes; the driver reads and checks them piece by piece. MB/s."""
    message = _pattern(THROUGHPUT_MESSAGE, 7)
    expected = _Repeated(message)
    received = [0]
    same = [True]
    errors: list[BaseException] = []
    t0 = time.monotonic()
    deadline = t0 + timeout

    def consume() -> None:
        try:
            while received[0] < total and time.monotonic() < deadline:
                data = read_chunk(driver, 1 << 20, 0.1)
                same[0] = same[0] and expected.matches(received[0], data)
                received[0] += len(data)
        except BaseException as exc:
            errors.append(exc)

    consumer = threading.Thread(target=consume, name="dbc-target-reader", daemon=True)
    consumer.start()
    sent = 0
    while sent < total:
        n = min(THROUGHPUT_MESSAGE, total - sent)
        pipe.send(message[:n], timeout=timeout, zlp=zlp)
        sent += n
    consumer.join(timeout=max(0.1, deadline - time.monotonic()))
    elapsed = time.monotonic() - t0
    if errors:
        raise errors[0]
    if received[0] != total:
        raise CheckFailed(f"host_to_target: target got {received[0]} of {total} bytes")
    if not same[0]:
        raise CheckFailed("host_to_target: the target received different bytes than were sent")
    return total / elapsed / 1e6


StateReporter = Callable[[float, str, str], None]


def run_session(
    options: SessionOptions,
    *,
    on_state: StateReporter | None = None,
    on_step: Callable[[str], None] | None = None,
    trace: TraceSink = null_sink,
) -> SessionResult:
    """Run one session; the bench is closed (everything restored) before this returns."""
    result = SessionResult()
    t0 = time.monotonic()
    step = on_step or (lambda text: None)

    bringup_t0 = [t0]

    def state_changed(old: Any, new: Any) -> None:
        when = time.monotonic() - bringup_t0[0]
        names = (getattr(old, "name", str(old)), getattr(new, "name", str(new)))
        result.transitions.append((when, *names))
        if on_state is not None:
            on_state(when, *names)

    bench_options: dict[str, Any]
    if options.bench == "virtual":  # VirtualXhci options
        bench_options = {"strict": not options.lenient}
        if options.quirks:
            bench_options["quirks"] = parse_quirks(options.quirks)
        if options.part:
            bench_options["part"] = options.part
    else:  # claim options
        if options.part:
            raise PartError("--part applies to the virtual bench only")
        if options.quirks:
            raise QuirkError("--quirk applies to the virtual bench only")
        bench_options = {
            "mode": options.claim_mode,
            "unsafe": options.unsafe,
            "force": options.force,
        }
    step(f"opening the {options.bench} bench")
    # opening and closing are never cut in half by a signal (cli_signals.guarded)
    with guarded(lambda: open_bench(options.bench, trace=trace, **bench_options)) as bench:
        try:
            _session_body(bench, options, result, step, state_changed, bringup_t0)
        finally:
            result.findings = [str(f) for f in bench.findings()]
            step("giving everything back")
    result.restored = bench.closed
    result.elapsed = time.monotonic() - t0
    return result


def _session_body(
    bench: Bench,
    options: SessionOptions,
    result: SessionResult,
    step: Callable[[str], None],
    state_changed: Callable[[Any, Any], None],
    bringup_t0: list[float],
) -> None:
    """Bring-up, echo, throughput and stop on an open bench (closed by the caller)."""
    result.bench = bench.describe()
    driver_options: dict[str, Any] = {
        "in_buffer_size": options.in_buffer_size or DEFAULT_IN_BUFFER_SIZE,
        "in_buffers": DEFAULT_IN_BUFFERS,
        "ring_trbs": DEFAULT_RING_TRBS,
    }
    driver: DbcDriverApi
    if options.native_driver:
        driver = _native_driver(bench, options, state_changed)
        result.bench["driver"] = f"native {Path(getattr(driver, 'obj', '?')).name} (emulated CPU)"
    else:
        driver = bench.make_driver(
            on_state=state_changed,
            takeover=options.takeover,
            # without --port-reset the driver decides (PCI vendor ID, or no CCS in time); 64-bit
            # registers are two dword writes by default (--mmio32 says so explicitly)
            port_reset=options.port_reset or None,
            **driver_options,
        )
    step("bringing the DbC up")
    bringup_t0[0] = time.monotonic()
    driver.start(timeout=options.timeout)
    try:
        step("opening the debug host's pipes")
        pipe: DebugHostPipe | None = bench.host_pipe(timeout=options.timeout)
    except HostUnavailable as exc:
        result.skipped = str(exc)
        pipe = None
    # receive buffers larger than a packet only complete on a short packet: the host ends
    # packet-multiple messages with a zero-length packet, so every message keeps its boundary
    # (with 1 KiB buffers the ZLP completes one buffer with nothing: harmless)
    zlp = True
    if pipe is not None:
        result.bench["debug host"] = pipe.via + (" (ZLP after packet multiples)" if zlp else "")
        if options.echo_sizes:
            step(f"echo of {len(options.echo_sizes)} messages")
            echo = TargetEcho(driver, options.timeout)
            try:
                result.echo = run_echo(pipe, options.echo_sizes, options.timeout, zlp)
            finally:
                echo.close()
            if echo.error is not None:
                raise echo.error
        if options.throughput_bytes:
            budget = options.timeout + options.throughput_bytes / 5e6
            mib = options.throughput_bytes >> 20
            step(f"throughput target_to_host, {mib} MiB")
            result.throughput_MBps["target_to_host"] = round(
                measure_target_to_host(driver, pipe, options.throughput_bytes, budget), 1
            )
            step(f"throughput host_to_target, {mib} MiB")
            result.throughput_MBps["host_to_target"] = round(
                measure_host_to_target(driver, pipe, options.throughput_bytes, budget, zlp), 1
            )
    result.counters = _counters_dict(getattr(driver, "counters", None))
    step("stopping the DbC")
    driver.stop(timeout=options.timeout)
    result.final_state = getattr(driver.state, "name", str(driver.state))
    close = getattr(driver, "close", None)
    if close is not None:  # a native driver's emulated machine
        close()


def _native_driver(
    bench: Bench, options: SessionOptions, state_changed: Callable[[Any, Any], None]
) -> DbcDriverApi:
    """The C driver of ``--driver`` on ``bench`` (README "Bring your own driver")."""
    # deferred: unicorn + capstone (the native driver's CPU emulation) are heavy, rarely needed
    from dbc_harness.drivers.native.driver import NativeDbcDriver

    if options.in_buffer_size is not None:
        raise DbcConfigError(
            "--in-buffer-size applies to the Python driver (a C driver sizes its own buffers)"
        )
    return NativeDbcDriver.on_bench(
        bench,
        options.native_driver,
        options.native_env,
        entry=options.native_entry,
        on_state=state_changed,
        takeover=options.takeover,
        port_reset=options.port_reset,
    )


def run_command(options: SessionOptions, *, out: Any, as_json: bool) -> ExitCode:
    """``dbc-harness run``: live transitions on ``out``, summary table (or JSON on stdout)."""

    if options.quirks and options.bench != "virtual":
        raise QuirkError("--quirk applies to the virtual bench only")
    if options.bench == "qemu" and os.environ.get("DBC_HARNESS_GUEST") != "1":
        return run_in_kernel_bench(options, out=out, as_json=as_json)

    writer = open_trace(options.trace_path) if options.trace_path else None
    try:

        def on_state(when: float, old: str, new: str) -> None:
            out.print(f"  [dim]{when:8.3f} s[/]  state {esc(old)} -> [bold]{esc(new)}[/]")

        def on_step(text: str) -> None:
            out.print(f"[cyan]>[/] {esc(text)}")

        result = run_session(options, on_state=on_state, on_step=on_step, trace=writer or null_sink)
    finally:
        if writer is not None:
            writer.close()
    if options.trace_path:
        result.trace_path = str(options.trace_path)
    if as_json:
        print(json.dumps(result.as_dict(), sort_keys=True, default=str))
    else:
        out.print(session_table(result))
    return ExitCode.OK if result.ok else ExitCode.CHECK_FAILED
