"""Trace writers: sinks for the :mod:`drivers.tracing` seam that record a session to files.

Producers (the DbC driver, the virtual controller and its debug host, the CLI) call
``sink(kind, **fields)`` (see :mod:`drivers.tracing` for the kinds). The writers here turn that
stream into files people can open:

* :class:`PcapngTraceWriter`: a pcapng capture Wireshark/tshark decode as USB
  (LINKTYPE_USB_LINUX_MMAPPED = 220). Every ``"urb"`` record becomes one usbmon packet: an
  'S' (submit) and a 'C' (complete) per transfer, stalls carry status -EPIPE (-32), and each
  packet has a pcapng comment naming the TRB or event behind it (the record's ``comment``; when a
  producer gives none: for a submit, what it is in DbC terms and the last ``"trb"`` queued on
  that DbC ring, e.g. "host sends 64 bytes to 0x01 (lands on the DbC IN ring; last TRB queued
  there: Normal ...)"; for a completion, the last ``"event"`` seen, marked "after event").
  Other kinds are not USB packets; they go to the JSON-lines file.
* :class:`JsonLinesTraceWriter`: every record of every kind, one JSON object per line
  (``{"ts": seconds, "kind": ..., **fields}``; bytes as hex strings).
* :class:`MemoryTrace`: keeps records in a list (tests, summaries).
* :class:`TeeSink`: fans one record out to several sinks.
* :func:`open_trace`: a writer chosen by file suffix (``.pcapng`` or ``.jsonl``).

Every writer is thread-safe (the virtual controller's thread and the driver's thread both
produce records), a context manager, and idempotent on ``close()``. A malformed record raises
:class:`TraceError` naming the field; nothing already written is lost.

Direction names follow the debug host (USB): ``"in"`` = target -> host (the host's bulk IN, the
DbC's OUT ring), ``"out"`` = host -> target (the host's bulk OUT, the DbC's IN ring).
"""

from __future__ import annotations

import enum
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from harness.trace_pcapng import (
    STATUS_IN_PROGRESS,
    XFER_BULK,
    XFER_CONTROL,
    PcapngFile,
    UsbmonRecord,
)

__all__ = [
    "JsonLinesTraceWriter",
    "MemoryTrace",
    "PcapngTraceWriter",
    "TeeSink",
    "TraceError",
    "TraceRecord",
    "TraceWriter",
    "open_trace",
]

WallClock = Callable[[], float]

#: The kinds drivers.tracing documents (others are accepted and written to JSON as-is).
KNOWN_KINDS = frozenset({"urb", "trb", "event", "mmio", "state"})


class TraceError(ValueError):
    """A trace record or trace file request that cannot be honoured (named field, reason)."""


TraceRecord = dict[str, Any]


class TraceWriter:
    """Base of the file writers: a trace sink with a lock, ``close()`` and context manager."""

    def __init__(self, clock: WallClock = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.closed = False
        self.records = 0

    def __call__(self, kind: str, /, **fields: Any) -> None:
        if not isinstance(kind, str) or not kind:
            raise TraceError(f"trace record kind must be a non-empty string, got {kind!r}")
        ts = fields.pop("ts", None)
        when = float(ts) if ts is not None else self._clock()
        with self._lock:
            if self.closed:
                raise TraceError(f"trace record {kind!r} after the trace was closed")
            self._write(kind, when, fields)
            self.records += 1

    def _write(self, kind: str, when: float, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _as_bytes(value: Any, field: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TraceError(f"urb field {field!r} must be bytes, got {type(value).__name__}")


class PcapngTraceWriter(TraceWriter):
    """Writes ``"urb"`` records as usbmon packets into a pcapng file (LINKTYPE 220).

    ``urb`` fields used: ``stage`` ("S"/"C"/"E"), ``direction`` ("in" = target -> host,
    "out" = host -> target), ``endpoint`` (default 0x81 for "in", 0x01 for "out"), ``data``,
    ``length`` (requested length on an IN submit; defaults to ``len(data)``), ``status``
    (default -115 on 'S', 0 on 'C'; -32 = stall), ``urb_id`` (pairs S with C; when missing, a
    'C' pairs with the oldest open 'S' of the same endpoint), ``setup`` (8 bytes, control),
    ``comment``, ``devnum``/``busnum`` (defaults from the constructor).
    """

    def __init__(
        self,
        target: str | Path | IO[bytes],
        *,
        snaplen: int = 262_144,
        devnum: int = 1,
        busnum: int = 1,
        clock: WallClock = time.time,
    ) -> None:
        super().__init__(clock)
        try:
            stream = open(target, "wb") if isinstance(target, str | Path) else target
        except OSError as exc:
            raise TraceError(f"cannot create capture {target}: {exc.strerror}") from exc
        try:
            self._file = PcapngFile(stream, snaplen=snaplen)
        except ValueError as exc:
            stream.close()
            raise TraceError(str(exc)) from exc
        self.path = Path(target) if isinstance(target, str | Path) else None
        self.devnum = devnum
        self.busnum = busnum
        self.packets = 0
        self._next_id = 1
        self._open: defaultdict[int, deque[int]] = defaultdict(deque)
        self._ids: dict[Any, int] = {}
        #: last TRB queued per DbC ring ("OUT"/"IN"; "" when a record names no ring)
        self._last_trb: dict[str, str] = {}
        self._last_event: str | None = None

    def _urb_id(self, stage: str, epnum: int, given: Any) -> int:
        if given is not None:
            if isinstance(given, int) and not isinstance(given, bool):
                return given
            if given not in self._ids:
                self._ids[given] = self._new_id()
            return self._ids[given]
        if stage == "S":
            urb_id = self._new_id()
            self._open[epnum].append(urb_id)
            return urb_id
        queue = self._open[epnum]
        return queue.popleft() if queue else self._new_id()

    def _new_id(self) -> int:
        urb_id = self._next_id
        self._next_id += 1
        return urb_id

    def _write(self, kind: str, when: float, fields: dict[str, Any]) -> None:
        if kind == "trb":
            text = str(fields.get("text", ""))
            if text:
                self._last_trb[str(fields.get("ring", "")).upper()] = text
            return
        if kind == "event":
            self._last_event = str(fields.get("text", "")) or None
            return
        if kind != "urb":
            return
        stage = fields.get("stage")
        if stage not in ("S", "C", "E"):
            raise TraceError(f"urb field 'stage' must be 'S', 'C' or 'E', got {stage!r}")
        direction = fields.get("direction")
        if direction not in ("in", "out"):
            raise TraceError(f"urb field 'direction' must be 'in' or 'out', got {direction!r}")
        endpoint = fields.get("endpoint")
        epnum = (0x81 if direction == "in" else 0x01) if endpoint is None else int(endpoint)
        if direction == "in":
            epnum |= 0x80
        data = fields.get("data")
        payload = None if data is None else _as_bytes(data, "data")
        if not payload and (stage == "S") == (direction == "in"):
            payload = None  # an IN submit or OUT completion carries no data (usbmon '<' / '>')
        setup = fields.get("setup")
        setup_bytes = None if setup is None else _as_bytes(setup, "setup")
        if setup_bytes is not None and len(setup_bytes) != 8:
            raise TraceError(f"urb field 'setup' must be 8 bytes, got {len(setup_bytes)}")
        length = fields.get("length")
        if length is None:
            length = 0 if payload is None else len(payload)
        status = fields.get("status")
        if status is None:
            status = STATUS_IN_PROGRESS if stage == "S" else 0
        xfer_type = fields.get("xfer_type")
        if xfer_type is None:
            xfer_type = XFER_CONTROL if setup_bytes is not None or epnum & 0x7F == 0 else XFER_BULK
        comment = fields.get("comment") or self._default_comment(stage, direction, epnum, length)
        record = UsbmonRecord(
            urb_id=self._urb_id(stage, epnum, fields.get("urb_id")),
            event=stage,
            xfer_type=int(xfer_type),
            epnum=epnum,
            devnum=int(fields.get("devnum", self.devnum)),
            busnum=int(fields.get("busnum", self.busnum)),
            ts_usec_total=max(0, round(when * 1_000_000)),
            status=int(status),
            length=int(length),
            data=payload,
            setup=setup_bytes,
        )
        self._file.write(record, str(comment) if comment else None)
        self.packets += 1

    def _default_comment(self, stage: str, direction: str, epnum: int, length: int) -> str:
        """For a record without ``comment``: what the packet is in DbC terms, plus the last TRB
        queued on that DbC ring (submits) or the last event seen (completions)."""
        ring = "OUT" if direction == "in" else "IN"  # host IN drains the DbC OUT ring
        if stage == "S":
            if direction == "in":
                text = f"host requests up to {length} bytes from 0x{epnum:02x} (DbC OUT ring"
            else:
                text = f"host sends {length} bytes to 0x{epnum:02x} (lands on the DbC IN ring"
            last = self._last_trb.get(ring) or self._last_trb.get("")
            return text + (f"; last TRB queued there: {last})" if last else ")")
        if self._last_event:
            return f"after event: {self._last_event}"
        verb = "from" if direction == "in" else "to"
        return f"{length} bytes {verb} 0x{epnum:02x} (DbC {ring} ring)"

    def flush(self) -> None:
        with self._lock:
            if not self.closed:
                self._file.flush()

    def _close(self) -> None:
        self._file.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


class JsonLinesTraceWriter(TraceWriter):
    """Every record, one JSON object per line: ``{"ts": ..., "kind": ..., **fields}``."""

    def __init__(self, target: str | Path | IO[str], *, clock: WallClock = time.time) -> None:
        super().__init__(clock)
        try:
            self._stream = (
                open(target, "w", encoding="utf-8") if isinstance(target, str | Path) else target
            )
        except OSError as exc:
            raise TraceError(f"cannot create trace {target}: {exc.strerror}") from exc
        self.path = Path(target) if isinstance(target, str | Path) else None

    def _write(self, kind: str, when: float, fields: dict[str, Any]) -> None:
        line = json.dumps({"ts": when, "kind": kind, **fields}, default=_json_default)
        self._stream.write(line + "\n")

    def flush(self) -> None:
        with self._lock:
            if not self.closed:
                self._stream.flush()

    def _close(self) -> None:
        self._stream.close()


class MemoryTrace:
    """A sink that keeps ``(kind, fields)`` records in memory, with a bound (oldest dropped
    first, and counted in ``dropped``, when ``limit`` is set)."""

    def __init__(self, limit: int | None = None) -> None:
        self.records: deque[tuple[str, TraceRecord]] = deque(maxlen=limit)
        self.dropped = 0
        self._lock = threading.Lock()

    def __call__(self, kind: str, /, **fields: Any) -> None:
        with self._lock:
            if self.records.maxlen is not None and len(self.records) == self.records.maxlen:
                self.dropped += 1
            self.records.append((kind, fields))

    def of_kind(self, kind: str) -> list[TraceRecord]:
        with self._lock:
            return [f for k, f in self.records if k == kind]

    def replay(self, sink: Callable[..., None]) -> None:
        """Send every kept record to another sink (e.g. a file writer after a failure)."""
        with self._lock:
            records = list(self.records)
        for kind, fields in records:
            sink(kind, **fields)


class TeeSink:
    """Sends each record to every sink, in order. A failing sink does not starve the others:
    all are called, then the first error is raised."""

    def __init__(self, sinks: Iterable[Callable[..., None]]) -> None:
        self.sinks = list(sinks)

    def __call__(self, kind: str, /, **fields: Any) -> None:
        first: BaseException | None = None
        for sink in self.sinks:
            try:
                sink(kind, **fields)
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first


def open_trace(path: str | Path, **options: Any) -> TraceWriter:
    """A writer for ``path`` by suffix: ``.pcapng`` (usbmon capture) or ``.jsonl``/``.json``."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".pcapng":
        return PcapngTraceWriter(p, **options)
    if suffix in (".jsonl", ".json"):
        return JsonLinesTraceWriter(p, **options)
    raise TraceError(
        f"unknown trace format {suffix or '(no suffix)'!r} for {p}: use .pcapng or .jsonl"
    )
