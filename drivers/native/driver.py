""":class:`NativeDbcDriver`: a C DbC driver run under CPU emulation, behind the Python driver's
interface (``start``/``write``/``read``/``flush``/``poll``/``stop``/``state``/``counters``).

The C side implements the data-path ABI of ``reference/dbc.h`` (the reference driver does; for
your own driver it is a thin adapter)::

    int  dbc_init(u64 bar0_phys, unsigned flags, unsigned long wait_us);  /* 0 = scan PCI */
    int  dbc_poll(void);
    long dbc_write(const void *buf, unsigned long len);   /* bytes accepted, 0 = retry */
    long dbc_read(void *buf, unsigned long max);          /* bytes copied, 0 = none yet */
    int  dbc_state(void);                                 /* DBC_STATE_* */
    unsigned long dbc_out_pending(void);                  /* accepted, not yet delivered */
    int  dbc_stop(void);

Optional: a ``struct dbc_stats dbc_stats`` symbol (counters), ``dbc_pci_scan``. The object runs
in a :class:`~dbc_harness.drivers.native.Machine` on the bench's MMIO (BAR0), DMA space and
clock; tests written for :class:`~dbc_harness.drivers.dbc.DbcDriver` see the same errors
(:class:`DbcTimeout`, :class:`DbcDisconnected`, :class:`DbcSurpriseRemoval`...). Every spec
finding the virtual bench records while the C code runs carries its ``file.c:line``
(``Finding.origin``).

Python writes a message into a staging buffer in the machine's scratch memory once and calls
``dbc_write`` until every byte is accepted; ``read()`` calls ``dbc_read`` into the staging
buffer. The driver's own DMA memory is the bench's, mapped zero-copy.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from dbc_harness.allocator import DmaSpace
from dbc_harness.drivers.clock import REAL_CLOCK, Clock
from dbc_harness.drivers.dbc.bringup import find_dbc
from dbc_harness.drivers.dbc.counters import DbcCounters
from dbc_harness.drivers.dbc.errors import (
    DbcBusy,
    DbcConfigError,
    DbcDisconnected,
    DbcDmaError,
    DbcError,
    DbcNotFound,
    DbcStateError,
    DbcSurpriseRemoval,
    DbcTimeout,
    DbcTransferError,
    UndeliveredMessage,
    warn_undelivered_at_stop,
)
from dbc_harness.drivers.dbc.registers import DCR
from dbc_harness.drivers.dbc.state import DbcState
from dbc_harness.drivers.dbc.wait import Deadline
from dbc_harness.drivers.native.build import (
    EXTRA_FLAGS,
    REFERENCE_DIR,
    REFERENCE_ENV,
    build_reference,
)
from dbc_harness.drivers.native.cc import compile_object
from dbc_harness.drivers.native.environment import Environment, load_environment
from dbc_harness.drivers.native.pci_ports import PciConfigSpace
from dbc_harness.drivers.native.runner import Machine, as_signed
from dbc_harness.drivers.origin import current_origin, origin_provider
from dbc_harness.drivers.tracing import TraceSink, null_sink
from dbc_harness.drivers.xhci.registers import DBC_REGS

log = logging.getLogger("dbc_harness.drivers.native")


def resolve_object(spec: str | Path | None) -> Path | None:
    """``None`` or ``"reference"``: the reference driver (compiled now, cached); a ``.c`` file:
    compiled with the freestanding flags and the reference headers (``dbc.h``, ``dbc_env.h``) on
    the include path (cached); anything else: the object file's path."""
    if spec is None or str(spec) == "reference":
        return build_reference()
    path = Path(spec)
    if not path.is_file():
        raise DbcConfigError(f"native driver {str(spec)!r}: no such file")
    if path.suffix == ".c":
        return compile_object(path, extra_flags=EXTRA_FLAGS, include_dirs=[REFERENCE_DIR])
    return path


class _DoorbellWitness:
    """BAR0 as the bench gives it, remembering which native line last wrote the doorbell.

    A virtual controller runs what a doorbell handed over when time passes; between native
    calls that happens in Python (the driver's waits), where no native code is running. A
    finding raised then (a bad TRB on a ring) is attributed to the doorbell write that handed
    the ring over: :meth:`origin` is what :func:`origin_provider` answers during those waits.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.doorbell_offset: int | None = None
        self.doorbell_origin: str | None = None
        for name in ("read8", "read16", "write8", "write16", "size"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))

    def read32(self, offset: int) -> int:
        return int(self._inner.read32(offset))

    def read64(self, offset: int) -> int:
        return int(self._inner.read64(offset))

    def write32(self, offset: int, value: int) -> None:
        if offset == self.doorbell_offset:
            self.doorbell_origin = current_origin()
        self._inner.write32(offset, value)

    def write64(self, offset: int, value: int) -> None:
        self._inner.write64(offset, value)

    def origin(self) -> str | None:
        if self.doorbell_origin is None:
            return None
        return f"{self.doorbell_origin}, the doorbell that handed the ring over"


# dbc.h
F_PORT_RESET = 1 << 0
F_MMIO64 = 1 << 1
F_TAKEOVER = 1 << 2
STATES = (
    DbcState.DISABLED,
    DbcState.INITIALIZED,
    DbcState.ENABLED,
    DbcState.CONNECTED,
    DbcState.CONFIGURED,
    DbcState.REMOVED,
)
ENODEV, EBUSY, ETIMEDOUT, ENOMEM, ENOTCONN, ECONNRESET, EREMOVED, EINVAL, EIO = range(1, 10)
ERROR_NAMES = {
    ENODEV: "DBC_ENODEV",
    EBUSY: "DBC_EBUSY",
    ETIMEDOUT: "DBC_ETIMEDOUT",
    ENOMEM: "DBC_ENOMEM",
    ENOTCONN: "DBC_ENOTCONN",
    ECONNRESET: "DBC_ECONNRESET",
    EREMOVED: "DBC_EREMOVED",
    EINVAL: "DBC_EINVAL",
    EIO: "DBC_EIO",
}
#: struct dbc_stats (reference/dbc.c), u64 each, in order
STATS_FIELDS = (
    "events", "doorbells", "erdp_writes", "bytes_out", "bytes_in", "trbs_out", "trbs_in",
    "lost_bytes", "device_errors", "disconnects", "port_resets", "dce_lost", "halts_cleared",
    "root_port_resets", "event_ring_full",
)  # fmt: skip
_STATS = struct.Struct(f"<{len(STATS_FIELDS)}Q")
#: BAR0's physical address in the emulated machine when nobody chooses one
DEFAULT_BAR_PHYS = 0xF000_0000
#: scratch memory staging write()/read() data
STAGING = 1 << 20


class NativeDbcDriver:
    """A native DbC driver (``obj``: path of an x86-64 object implementing the ABI; default:
    the reference driver, compiled now) on ``mmio``/``dma``/``clock``.

    Options: ``env`` (an :class:`Environment` or the path of an ENV.py; default: the
    reference driver's), ``pci`` (a PCI configuration space for ``scan_pci``), ``scan_pci``
    (``dbc_init(0, ...)``: the C code finds the xHCI itself through ports 0xCF8/0xCFC),
    ``bar_phys`` (where BAR0 sits in the machine's physical address space), ``port_reset``,
    ``mmio64``, ``takeover`` (dbc.h flags), ``entry`` (the init function's name), ``on_state(old,
    new)`` (called on every state change the driver reports), ``machine``
    (more :class:`Machine` options: budgets...).
    """

    def __init__(
        self,
        mmio: Any,
        dma: DmaSpace,
        *,
        obj: str | Path | None = None,
        env: Environment | str | Path | None = None,
        clock: Clock = REAL_CLOCK,
        trace: TraceSink = null_sink,
        pci: PciConfigSpace | None = None,
        scan_pci: bool = False,
        bar_phys: int | None = None,
        port_reset: bool = False,
        mmio64: bool = False,
        takeover: bool = False,
        entry: str = "dbc_init",
        on_state: Callable[[DbcState, DbcState], None] | None = None,
        machine: dict[str, Any] | None = None,
    ) -> None:
        if scan_pci and pci is None:
            raise DbcConfigError("scan_pci needs a PCI configuration space (pci=...)")
        if env is None:
            env = REFERENCE_ENV
        if not isinstance(env, Environment):
            env = load_environment(env)
        self.obj = Path(obj) if obj is not None else build_reference()
        self.env = env
        self.mmio = _DoorbellWitness(mmio)
        self.dma = dma
        self.clock = clock
        self.trace = trace
        self.scan_pci = scan_pci
        self.entry = entry
        self.on_state = on_state
        self.flags = (
            (F_PORT_RESET if port_reset else 0)
            | (F_MMIO64 if mmio64 else 0)
            | (F_TAKEOVER if takeover else 0)
        )
        options: dict[str, Any] = {
            "instructions": 500_000_000,
            "virtual_time": 120.0,
            "wall_time": 120.0,
        }
        options.update(machine or {})
        self.machine = Machine(
            self.obj,
            env,
            mmio=self.mmio,
            dma=dma,
            clock=clock,
            pci=pci,
            bar_phys=bar_phys if bar_phys is not None else DEFAULT_BAR_PHYS,
            scratch_size=STAGING + (1 << 20),
            name="dbc",
            **options,
        )
        m = self.machine
        self._staging = m.alloc(STAGING, 4096)
        self._stats_addr = m.symbol("dbc_stats") if m.has_symbol("dbc_stats") else None
        # an object built against an older struct dbc_stats has fewer counters: the rest read 0
        size = m.image.symbols["dbc_stats"].size if self._stats_addr is not None else 0
        self._stats_count = min(len(STATS_FIELDS), size // 8) if size else len(STATS_FIELDS)
        self._lock = threading.RLock()
        self._state = DbcState.DISABLED
        self.state_history: list[tuple[DbcState, DbcState, str]] = []
        self._removed: DbcSurpriseRemoval | None = None
        #: messages accepted and not confirmed: (id, data, end offset in the accepted stream)
        self._pending: deque[tuple[int, bytes, int]] = deque()
        self._accepted = 0  # bytes accepted by dbc_write, ever
        self._lost_seen = 0
        self._recoveries_seen = 0
        self._full_seen = 0  # struct dbc_stats event_ring_full
        self._undelivered: list[UndeliveredMessage] = []
        self._next_id = 1
        self.device_errors: list[DbcError] = []
        self.messages_to_host = 0

    @classmethod
    def on_bench(
        cls,
        bench: Any,
        obj: str | Path | None = None,
        env: Environment | str | Path | None = None,
        **options: Any,
    ) -> NativeDbcDriver:
        """A driver on ``bench``'s MMIO, DMA space, clock and trace (and its PCI configuration
        space, if it has one). ``obj``: see :func:`resolve_object`."""
        options.setdefault("clock", bench.clock)
        options.setdefault("trace", bench.trace)
        pci = getattr(bench, "pci", None)
        if pci is not None:
            options.setdefault("pci", pci)
        return cls(bench.mmio, bench.dma, obj=resolve_object(obj), env=env, **options)

    # ------------------------------------------------------------------ plumbing
    def _call(self, name: str, *args: int, **budgets: Any) -> int:
        return self.machine.call(name, *args, **budgets)

    def _sync_state(self, reason: str) -> DbcState:
        code = self._call("dbc_state") & 0xFF
        new = STATES[code] if code < len(STATES) else DbcState.DISABLED
        old = self._state
        if new is not old:
            self._state = new
            if len(self.state_history) < 10_000:
                self.state_history.append((old, new, reason))
            self.trace("state", old=old.name, new=new.name, reason=reason)
            if self.on_state is not None:
                self.on_state(old, new)
        return new

    def _stats(self) -> dict[str, int]:
        if self._stats_addr is None:
            return dict.fromkeys(STATS_FIELDS, 0)
        raw = self.machine.read(self._stats_addr, 8 * self._stats_count)
        raw += bytes(_STATS.size - len(raw))
        return dict(zip(STATS_FIELDS, _STATS.unpack(raw), strict=True))

    def _events_lost(self, stats: dict[str, int]) -> bool:
        """The C driver found its event ring full before a re-initialisation since the last
        look: completions the controller held were discarded (xHCI 1.2 4.9.4), so bytes it
        counts lost may have arrived (the reports say so: ``delivered_max``)."""
        full = stats["event_ring_full"]
        changed = full != self._full_seen
        self._full_seen = full
        return changed

    def _account(self) -> None:
        """Retire delivered messages; turn bytes the C driver reports lost into
        UndeliveredMessage records (a reset drops the tail of what was accepted)."""
        pending_bytes = self._call("dbc_out_pending")
        delivered_upto = self._accepted - pending_bytes
        stats = self._stats()
        lost = stats["lost_bytes"] - self._lost_seen
        recoveries = sum(stats[k] for k in ("disconnects", "port_resets", "dce_lost"))
        if recoveries != self._recoveries_seen:
            self._recoveries_seen = recoveries
            reason = "disconnect: the debug host went away (unplug, port reset or DbC reset)"
        else:
            reason = "transfer error: the controller moved past a failed TRB"
        if lost > 0:
            self._lost_seen = stats["lost_bytes"]
            events_lost = self._events_lost(stats)  # kept for stop() when nothing is lost yet
            lost_from = self._accepted - pending_bytes - lost
            keep: deque[tuple[int, bytes, int]] = deque()
            for msg_id, data, end in self._pending:
                start = end - len(data)
                if end > lost_from and start < delivered_upto:
                    got = max(0, lost_from - start)
                    # every accepted byte was on the OUT ring: any of it may have gone out
                    most = len(data) if events_lost else -1
                    self._undelivered.append(UndeliveredMessage(msg_id, data, got, reason, most))
                elif end > delivered_upto:
                    keep.append((msg_id, data, end))
            self._pending = keep
        while self._pending and self._pending[0][2] <= delivered_upto:
            self._pending.popleft()
            self.messages_to_host += 1

    def _raise_undelivered(self) -> None:
        if self._undelivered:
            items = tuple(self._undelivered)
            self._undelivered = []
            if any(m.reason.startswith("disconnect") for m in items):
                raise DbcDisconnected("the debug host went away with messages in flight", items)
            raise DbcTransferError("transfers failed on the wire", items)

    def take_undelivered(self) -> tuple[UndeliveredMessage, ...]:
        items = tuple(self._undelivered)
        self._undelivered = []
        return items

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> DbcState:
        return self._state

    @property
    def configured(self) -> bool:
        return self._state is DbcState.CONFIGURED

    @property
    def counters(self) -> DbcCounters:
        s = self._stats()
        c = DbcCounters(
            bytes_to_host=s["bytes_out"],
            bytes_from_host=s["bytes_in"],
            trbs_to_host=s["trbs_out"],
            trbs_from_host=s["trbs_in"],
            messages_to_host=self.messages_to_host,
            events=s["events"],
            erdp_writes=s["erdp_writes"],
            doorbells=s["doorbells"],
            device_errors=s["device_errors"],
        )
        for key, field in (
            ("disconnect", "disconnects"),
            ("port_reset", "port_resets"),
            ("dce_lost", "dce_lost"),
            ("halt_cleared", "halts_cleared"),
            ("root_port_reset", "root_port_resets"),
        ):
            if s[field]:
                c.recoveries[key] = s[field]
        return c

    @property
    def log(self) -> list[str]:
        """Lines the C code logged through its environment."""
        return self.machine.log

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: float = 5.0) -> None:
        """``dbc_init`` (the C code waits, deadline ``timeout``, for the host to configure
        it). DbcNotFound / DbcBusy / DbcTimeout as the Python driver."""
        with self._lock:
            if self._state is not DbcState.DISABLED:
                raise DbcStateError(f"start() in state {self._state.name}; stop() first")
            bar = 0 if self.scan_pci else (self.machine.bar_phys or DEFAULT_BAR_PHYS)
            wait_us = max(1, int(timeout * 1e6))
            err = as_signed(
                self.machine.call(self.entry, bar, self.flags, wait_us,
                                  virtual_time=timeout + 5.0),
                32,
            )  # fmt: skip
            state = self._sync_state(f"{self.entry}() returned {err}")
            if err == 0:
                self._find_doorbell()
                self._check_configured(state, timeout)
                return
            code = -err
            if code == ENODEV:
                raise DbcNotFound(f"{self.entry}(): no xHCI / no Debug Capability (DBC_ENODEV)")
            if code == EBUSY:
                raise DbcBusy(
                    f"{self.entry}(): DCCTRL.DCE is already set (firmware or another driver "
                    "owns the DbC); pass takeover=True"
                )
            if code == ETIMEDOUT:
                raise DbcTimeout("DCR (host configured)", timeout)
            if code == EREMOVED:
                raise DbcSurpriseRemoval(f"{self.entry}(): registers read all ones")
            if code == ENOMEM:
                raise DbcDmaError(f"{self.entry}(): the DMA allocator failed")
            raise DbcError(f"{self.entry}() returned {ERROR_NAMES.get(code, err)}")

    def _check_configured(self, state: DbcState, timeout: float) -> None:
        """The ABI says ``dbc_init`` returns 0 only once the host configured the DbC (with a
        wait): trust neither the driver's word alone nor a success the controller contradicts.
        DCCTRL.DCR is read from Python (the harness's own read, not the driver's)."""
        dcr = 0
        if self.mmio.doorbell_offset is not None:
            base = self.mmio.doorbell_offset - DBC_REGS.offset("DCDB")
            dcctrl = self.mmio.read32(base + DBC_REGS.offset("DCCTRL"))
            dcr = dcctrl & DCR
        if state is not DbcState.CONFIGURED or not dcr:
            self._call("dbc_stop")
            self._sync_state("start() refused a success the DbC contradicts")
            raise DbcTimeout(
                f"DCR (host configured): {self.entry}() returned 0 but the driver reports "
                f"{state.name} and DCCTRL.DCR = {int(bool(dcr))}",
                timeout,
            )

    def _find_doorbell(self) -> None:
        """DCDB's BAR0 offset (the capability walk, from Python) for :class:`_DoorbellWitness`."""
        try:
            self.mmio.doorbell_offset = find_dbc(self.mmio) + 4
        except DbcError:
            self.mmio.doorbell_offset = None

    def _pause(self, deadline: Deadline) -> None:
        """Let time pass between native calls; findings then name the last doorbell."""
        with origin_provider(self.mmio.origin):
            deadline.pause()

    def poll(self) -> int:
        """``dbc_poll`` once: events consumed. DbcSurpriseRemoval once the controller is gone."""
        with self._lock:
            if self._removed is not None:
                raise self._removed
            if self._state is DbcState.DISABLED:
                raise DbcStateError("poll() in state DISABLED")
            r = as_signed(self._call("dbc_poll"), 32)
            self._sync_state("dbc_poll()")
            if r == -EREMOVED:
                self._removed = DbcSurpriseRemoval("DCCTRL read 0xFFFFFFFF: the controller is gone")
                self._account()
                raise self._removed
            self._account()
            return max(r, 0)

    def stop(self, timeout: float = 1.0) -> tuple[UndeliveredMessage, ...]:
        """``dbc_stop``: DCE = 0, every DMA buffer freed. Returns what was not delivered."""
        with self._lock:
            if self._state is DbcState.DISABLED:
                return self.take_undelivered()
            if self._pending:
                self._account()
            err = as_signed(self._call("dbc_stop", virtual_time=timeout + 1.0), 32)
            if err == -ETIMEDOUT:
                raise DbcTimeout("DCCTRL.DCE to read 0 after clearing it", timeout)
            # dbc_stop consumed the events written before DCE cleared: read the count after
            delivered_upto = self._accepted - self._call("dbc_out_pending")
            events_lost = self._events_lost(self._stats())
            # the reason DbcDriver gives: what cut the messages off (a removal the C ABI
            # reports as DBC_EREMOVED, else the stop itself)
            if self._removed is not None:
                reason = f"surprise removal: {self._removed}"
            else:
                reason = "disconnect: driver stopped"
            for msg_id, data, end in self._pending:
                if end <= delivered_upto:
                    self.messages_to_host += 1  # confirmed by an event dbc_stop consumed
                    continue
                got = max(0, delivered_upto - (end - len(data)))
                most = len(data) if events_lost else -1  # see _account
                self._undelivered.append(UndeliveredMessage(msg_id, data, got, reason, most))
            self._pending.clear()
            self._removed = None
            self._sync_state("dbc_stop()")
            return self.take_undelivered()

    def close(self) -> None:
        """stop() if needed, then release the emulated machine. Messages stop() reports
        undelivered stay available from take_undelivered() (and are logged), as with
        DbcDriver's context manager: leaving a with block never drops a report."""
        try:
            lost = self.stop()
            self._undelivered[:0] = lost
            warn_undelivered_at_stop(log, lost)
        finally:
            self.machine.close()

    def __enter__(self) -> NativeDbcDriver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ data path
    def write(self, data: bytes | bytearray | memoryview, timeout: float = 5.0) -> int:
        """One message to the debug host; returns its id once every byte was accepted."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DbcConfigError(f"write() takes bytes-like data, got {type(data).__name__}")
        payload = bytes(data)
        deadline = Deadline(self.clock, timeout)
        done = 0
        staged = -1  # offset of payload the staging buffer holds
        first = True
        with self._lock:
            self._raise_undelivered()
            msg_id = self._next_id
            self._next_id += 1
        while True:
            with self._lock:
                if self._removed is not None:
                    raise self._removed
                if self._state is DbcState.DISABLED:
                    raise DbcStateError("write() in state DISABLED: start() first")
                if staged < 0 or done >= staged + STAGING:
                    chunk = payload[done : done + STAGING]
                    self.machine.write(self._staging, chunk)
                    staged = done
                length = min(len(payload) - done, staged + STAGING - done)
                n = as_signed(self._call("dbc_write", self._staging + (done - staged), length), 64)
                if n > 0 or (n == 0 and not payload and first and self.configured):
                    first = False
                    if done == 0:
                        self._pending.append((msg_id, payload, self._accepted + len(payload)))
                    self._accepted += max(n, 0)
                    done += max(n, 0)
                    if done >= len(payload):
                        return msg_id
                    deadline.progressed()
                    continue
                if n in (-ECONNRESET, -EIO):
                    self._account()
                    self._raise_undelivered()
                    continue
                if n == -EREMOVED:
                    self.poll()
                if self.poll():
                    deadline.progressed()
                if deadline.expired():
                    what = (
                        "room on the OUT ring (target -> host)"
                        if self.configured
                        else f"the debug host to configure the DbC (state {self._state.name})"
                    )
                    raise DbcTimeout(what, timeout)
            self._pause(deadline)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until the controller confirmed every accepted byte."""
        deadline = Deadline(self.clock, timeout)
        while True:
            with self._lock:
                if self._state is DbcState.DISABLED:
                    raise DbcStateError("flush() in state DISABLED")
                if self.poll():
                    deadline.progressed()
                self._raise_undelivered()
                if not self._call("dbc_out_pending"):
                    return
                if deadline.expired():
                    raise DbcTimeout("the debug host to read every queued message", timeout)
            self._pause(deadline)

    def read(self, max_bytes: int = 65536, timeout: float = 1.0) -> bytes:
        """Up to ``max_bytes`` bytes from the debug host; DbcTimeout if none came in time."""
        if max_bytes <= 0:
            return b""
        want = min(max_bytes, STAGING)
        deadline = Deadline(self.clock, timeout)
        while True:
            with self._lock:
                if self._state is DbcState.DISABLED:
                    raise DbcStateError("read in state DISABLED: start() first")
                n = as_signed(self._call("dbc_read", self._staging, want), 64)
                if n <= 0:
                    try:
                        if self.poll():
                            deadline.progressed()
                    except DbcSurpriseRemoval:
                        # dbc_poll consumed what completed before the removal: hand it
                        # back first, the removal once nothing is left
                        n = as_signed(self._call("dbc_read", self._staging, want), 64)
                        if n > 0:
                            return self.machine.read(self._staging, n)
                        raise
                    n = as_signed(self._call("dbc_read", self._staging, want), 64)
                if n > 0:
                    return self.machine.read(self._staging, n)
                if deadline.expired():
                    raise DbcTimeout("data from the debug host", timeout)
            self._pause(deadline)

    def read_into(self, buffer: bytearray | memoryview, timeout: float = 1.0) -> int:
        """Like :meth:`read` with ``max_bytes = len(buffer)``, into the caller's writable
        ``buffer``. Returns the number of bytes stored; DbcTimeout if none came in time."""
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        data = self.read(len(view), timeout)
        view[: len(data)] = data
        return len(data)

    def iter_read(self, max_bytes: int = 65536, idle_timeout: float = 1.0) -> Iterator[bytes]:
        while True:
            try:
                yield self.read(max_bytes, idle_timeout)
            except DbcTimeout:
                return

    def __repr__(self) -> str:
        return f"NativeDbcDriver({self.obj.name}, state={self._state.name})"
