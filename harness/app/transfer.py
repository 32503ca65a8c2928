"""``dbc-harness send FILE`` / ``recv FILE``: move a file through the DbC, from the target's side.

* ``send``: ``target_to_host``. The driver writes FILE (the DbC's OUT ring); the debug host reads
  it with bulk IN. On the virtual bench a host reader receives it and checks its SHA-256.
* ``recv``: ``host_to_target``. The driver reads into FILE what the debug host sends with bulk
  OUT (the DbC's IN ring), until ``size`` bytes arrived or the far end was quiet for ``idle``
  seconds after its last byte (``timeout`` seconds before the first). On the virtual bench the
  host sends ``source`` (a file), or ``size`` bytes of a pattern.

Both report progress through a callback ``progress(done, total)`` and return a
:class:`TransferResult` with the rate. Every wait has a deadline.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbc_harness.drivers.tracing import TraceSink, null_sink
from dbc_harness.drivers.xhci.contexts import DBC_MAX_PACKET_SIZE
from dbc_harness.fixtures.bench import VirtualBench, open_bench
from dbc_harness.harness.app.cli_signals import guarded
from dbc_harness.harness.app.session import read_chunk

if TYPE_CHECKING:
    from dbc_harness.fixtures.bench import DebugHostPipe

#: bytes per ``write()`` (a message; the driver splits it into TRBs)
CHUNK = 1 << 20

Progress = Callable[[int, int | None], None]


class TransferFailed(Exception):
    """The debug host saw different bytes than the target sent (or the reverse)."""


@dataclass
class TransferResult:
    direction: str
    bytes: int
    seconds: float
    verified: str = ""

    @property
    def MBps(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


class _HostReader(threading.Thread):
    """Virtual bench: the debug host reads ``total`` bytes and hashes them."""

    def __init__(self, pipe: DebugHostPipe, total: int, deadline: float) -> None:
        super().__init__(name="dbc-host-reader", daemon=True)
        self.pipe, self.total, self.deadline = pipe, total, deadline
        self.digest = hashlib.sha256()
        self.count = 0
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            while self.count < self.total and time.monotonic() < self.deadline:
                want = min(
                    -(-(self.total - self.count) // DBC_MAX_PACKET_SIZE) * DBC_MAX_PACKET_SIZE,
                    CHUNK,
                )
                data = self.pipe.recv(want, timeout=0.2)
                self.digest.update(data)
                self.count += len(data)
        except BaseException as exc:
            self.error = exc


def send_file(
    bench_spec: str,
    path: Path,
    *,
    timeout: float = 10.0,
    progress: Progress | None = None,
    trace: TraceSink = null_sink,
    **claim: Any,
) -> TransferResult:
    total = path.stat().st_size
    with (
        guarded(lambda: open_bench(bench_spec, trace=trace, **claim)) as bench,
        path.open("rb") as src,
    ):
        driver = bench.make_driver()
        driver.start(timeout=timeout)
        reader = None
        budget = timeout + total / 5e6
        if isinstance(bench, VirtualBench):
            pipe = bench.host_pipe(timeout=timeout)
            reader = _HostReader(pipe, total, time.monotonic() + budget)
        digest = hashlib.sha256()
        done = 0
        t0 = time.monotonic()
        while chunk := src.read(CHUNK):
            driver.write(chunk, timeout=timeout)
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
        driver.flush(timeout=budget)
        verified = ""
        if reader is not None:
            reader.join(timeout=budget)
            if reader.error is not None:
                raise reader.error
            if reader.count != total or reader.digest.digest() != digest.digest():
                raise TransferFailed(
                    f"the debug host received {reader.count} of {total} bytes"
                    + ("" if reader.count != total else " with a different SHA-256")
                )
            verified = f"debug host received all {total} bytes, SHA-256 {digest.hexdigest()[:16]}"
        seconds = time.monotonic() - t0
        driver.stop(timeout=timeout)
    return TransferResult("target_to_host", total, seconds, verified)


def _host_source(source: Path | None, size: int | None) -> tuple[Callable[[], bytes], int]:
    if source is not None:
        stream = source.open("rb")

        def read() -> bytes:
            chunk = stream.read(CHUNK)
            if not chunk:  # end of file
                stream.close()
            return chunk

        return read, source.stat().st_size
    if size is None:
        raise TransferFailed("on the virtual bench give --size N or --source FILE to send")
    block = bytes(range(256)) * (CHUNK // 256)
    left = [size]

    def pattern() -> bytes:
        n = min(CHUNK, left[0])
        left[0] -= n
        return block[:n]

    return pattern, size


def recv_file(
    bench_spec: str,
    path: Path,
    *,
    size: int | None = None,
    source: Path | None = None,
    timeout: float = 10.0,
    idle: float = 2.0,
    progress: Progress | None = None,
    trace: TraceSink = null_sink,
    **claim: Any,
) -> TransferResult:
    with (
        guarded(lambda: open_bench(bench_spec, trace=trace, **claim)) as bench,
        path.open("wb") as dst,
    ):
        driver = bench.make_driver()
        driver.start(timeout=timeout)
        sender: threading.Thread | None = None
        errors: list[BaseException] = []
        expected = hashlib.sha256()
        if isinstance(bench, VirtualBench):
            pipe = bench.host_pipe(timeout=timeout)
            produce, size = _host_source(source, size)

            def send() -> None:
                try:
                    while data := produce():
                        expected.update(data)
                        pipe.send(data, timeout=timeout)
                except BaseException as exc:
                    errors.append(exc)

            sender = threading.Thread(target=send, name="dbc-host-sender", daemon=True)
            sender.start()
        got = hashlib.sha256()
        done = 0
        t0 = time.monotonic()
        last = t0
        while size is None or done < size:
            data = read_chunk(driver, CHUNK, 0.1)
            now = time.monotonic()
            if data:
                dst.write(data)
                got.update(data)
                done += len(data)
                last = now
                if progress:
                    progress(done, size)
            elif errors or (now - last >= idle if done else now - t0 >= timeout):
                break  # quiet for ``idle`` after the last byte (``timeout`` before the first)
        seconds = max(last - t0, 1e-9)
        verified = ""
        if sender is not None:
            sender.join(timeout=timeout)
            if errors:
                raise errors[0]
            if done != size or got.digest() != expected.digest():
                raise TransferFailed(f"the target received {done} of {size} bytes (or different)")
            verified = f"all {done} bytes the debug host sent, SHA-256 {got.hexdigest()[:16]}"
        driver.stop(timeout=timeout)
    return TransferResult("host_to_target", done, seconds, verified)
