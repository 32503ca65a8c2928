"""``dbc-harness console``: an interactive byte console over the DbC, from the target's side.

This process runs the DbC driver (the target). What you type (stdin) is written to the debug host
(``target_to_host``: the DbC's OUT ring); what the debug host sends (``host_to_target``: the
DbC's IN ring) is printed on stdout, byte for byte. On a real bench the far end is a person or a
program on the debug host (e.g. ``screen /dev/ttyUSB0`` with Linux's ``usb_debug``). On the
virtual bench there is nobody at the far end, so a **host echo peer** (pyusb on the virtual debug
host) sends back everything it receives: each line you type comes back.

Ends on end of input (after the far end has been quiet for ``idle`` seconds, or once the echo
peer has returned everything), on Ctrl-C, or when the driver fails. Every wait has a deadline.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from dbc_harness.drivers.tracing import TraceSink, null_sink
from dbc_harness.fixtures.bench import VirtualBench, open_bench
from dbc_harness.harness.app.cli_signals import guarded
from dbc_harness.harness.app.session import read_chunk

if TYPE_CHECKING:
    from dbc_harness.fixtures.bench import DebugHostPipe


@dataclass
class ConsoleResult:
    sent: int = 0
    received: int = 0
    seconds: float = 0.0


class HostEchoPeer:
    """On the debug host: read what the target sent (bulk IN) and send it back (bulk OUT)."""

    def __init__(self, pipe: DebugHostPipe) -> None:
        self.pipe = pipe
        self.error: BaseException | None = None
        self.echoed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbc-host-echo", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self.pipe.recv(1 << 16, timeout=0.05)
                if data:
                    self.pipe.send(data, timeout=5.0)
                    self.echoed += len(data)
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def _stdin_reader(fd: int, chunks: queue.Queue[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        chunks.put(data)
        if not data:
            return


def run_console(
    bench_spec: str,
    *,
    stdin_fd: int,
    stdout: BinaryIO,
    timeout: float = 10.0,
    idle: float = 0.5,
    trace: TraceSink = null_sink,
    on_ready: Callable[[], None] | None = None,
    **claim: Any,
) -> ConsoleResult:
    """Run the console until end of input (see the module docstring). ``on_ready`` is called
    once the DbC is CONFIGURED (and the echo peer runs), before any input is read."""
    result = ConsoleResult()
    t0 = time.monotonic()
    with guarded(lambda: open_bench(bench_spec, trace=trace, **claim)) as bench:
        driver = bench.make_driver()
        driver.start(timeout=timeout)
        peer: HostEchoPeer | None = None
        if isinstance(bench, VirtualBench):
            peer = HostEchoPeer(bench.host_pipe(timeout=timeout))
        if on_ready is not None:
            on_ready()
        chunks: queue.Queue[bytes] = queue.Queue()
        threading.Thread(
            target=_stdin_reader, args=(stdin_fd, chunks), name="stdin", daemon=True
        ).start()
        eof_at: float | None = None
        last_rx = time.monotonic()
        try:
            while True:
                try:
                    data = chunks.get_nowait()
                except queue.Empty:
                    data = None
                if data is not None:
                    if data:
                        driver.write(data, timeout=timeout)
                        result.sent += len(data)
                    elif eof_at is None:
                        eof_at = time.monotonic()
                got = read_chunk(driver, 1 << 16, 0.02)
                if got:
                    stdout.write(got)
                    stdout.flush()
                    result.received += len(got)
                    last_rx = time.monotonic()
                if peer is not None and peer.error is not None:
                    raise peer.error
                if eof_at is not None:
                    now = time.monotonic()
                    if peer is not None and result.received >= result.sent:
                        break
                    if now - max(last_rx, eof_at) >= idle or now - eof_at >= timeout:
                        break
        finally:
            if peer is not None:
                peer.close()
        driver.stop(timeout=timeout)
    result.seconds = time.monotonic() - t0
    return result
