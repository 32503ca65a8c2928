"""The facade: :class:`DbcDriver`, a user-space xHCI Debug Capability driver.

It runs on anything with the MMIO seam (``read32/write32/read64/write64`` on BAR0 offsets) and a
DMA space from :mod:`allocator`: the virtual bench, the QEMU kernel bench and real hardware.
Every wait has a deadline measured on the ``clock`` seam, so on a deterministic virtual bench the
same code advances virtual time.

Life cycle::

    drv = DbcDriver(mmio, dma)          # nothing touched yet
    drv.start(timeout=5.0)              # bring-up; returns when the host configured us
    msg_id = drv.write(b"hello")        # target -> host (DbC OUT ring)
    data = drv.read(4096, timeout=1.0)  # host -> target (DbC IN ring)
    drv.flush(timeout=1.0)              # every accepted write delivered
    drv.stop()                          # DCE = 0, every DMA buffer freed

Recovery (unplug/replug, host port reset, DCR dropping, DCE dropping by itself) happens inside
:meth:`poll`, which every blocking call runs; the caller never restarts the driver. One poll:
read DCCTRL (all ones: surprise removal; DCE = 0: bring-up again), drain the event ring
(:mod:`~drivers.dbc.events`), follow the link (:class:`~drivers.dbc.recovery.LinkFollower`),
queue waiting writes and re-prime the IN ring (:mod:`~drivers.dbc.datapath`). What was in
flight when the host went away is reported by the next ``write()``/``flush()`` as
:class:`~drivers.dbc.errors.DbcDisconnected` (with the undelivered messages), never dropped.

Zero loss, exact accounting: before ANY re-initialisation (DCE dropping by itself, the host
going away or resetting the port, ``stop()``, surprise removal) the driver consumes every event
the controller already wrote to the event ring (our memory: read even when the registers are
gone), so data the host sent that completed reaches ``read()`` and bytes the host confirmed
count as delivered. :class:`~drivers.dbc.errors.UndeliveredMessage` says how much arrived:
``delivered`` exactly when the controller told us (``exact``), else the range
``delivered..delivered_max`` (a TRB the host was reading when it went away).

Threading contract (enforced):

* any number of writer threads: each ``write()`` is one message, accepted atomically; a
  writer's undelivered messages are raised in that writer's thread only (``write()``,
  ``flush()``; ``UndeliveredMessage.writer`` names the thread); ``flush()`` waits for every
  writer's messages and raises the caller's;
* one reader thread at a time (``read()``, ``read_message()``, ``iter_read()``): a second
  concurrent reader gets :class:`~drivers.dbc.errors.DbcConcurrentUse`;
* ``poll()`` from any thread; every call holds one lock except while it sleeps between polls;
* ``stop()`` from another thread: it takes the lock between two polls of the blocked calls,
  disables the DbC and returns every message not yet reported (all writers'); the blocked
  ``read()``/``write()``/``flush()`` then raise :class:`~drivers.dbc.errors.DbcStateError`
  ("stopped"). Received data not read before ``stop()`` is discarded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from functools import partial
from threading import get_ident
from types import TracebackType
from typing import TypeVar

from dbc_harness.allocator import DmaSpace
from dbc_harness.drivers.clock import REAL_CLOCK, Clock
from dbc_harness.drivers.dbc import bringup
from dbc_harness.drivers.dbc.bringup import DbcContextMemory
from dbc_harness.drivers.dbc.counters import DbcCounters
from dbc_harness.drivers.dbc.datapath import (
    TRB_MAX_BYTES,
    HostToTargetPipe,
    RxQueue,
    TargetToHostPipe,
)
from dbc_harness.drivers.dbc.errors import (
    DbcBusy,
    DbcConcurrentUse,
    DbcConfigError,
    DbcDeviceError,
    DbcDisconnected,
    DbcError,
    DbcNotFound,
    DbcStateError,
    DbcSurpriseRemoval,
    DbcTimeout,
    DbcTransferError,
    UndeliveredMessage,
    warn_undelivered_at_stop,
)
from dbc_harness.drivers.dbc.events import EventHandler
from dbc_harness.drivers.dbc.identity import DbcIdentity
from dbc_harness.drivers.dbc.recovery import LinkFollower, reinit_pipes
from dbc_harness.drivers.dbc.registers import DCE, DbcRegisters
from dbc_harness.drivers.dbc.rings import allocate_event_ring, check_ring_size
from dbc_harness.drivers.dbc.state import DbcState, StateCallback, StateMachine
from dbc_harness.drivers.dbc.wait import Deadline
from dbc_harness.drivers.mmio import Mmio
from dbc_harness.drivers.tracing import TraceSink, null_sink
from dbc_harness.drivers.xhci.contexts import DBC_MAX_PACKET_SIZE
from dbc_harness.drivers.xhci.registers import DCCTRL, DCDB, DCID, XECP_ID_DEBUG_CAPABILITY
from dbc_harness.drivers.xhci.ring import EventRing

log = logging.getLogger("dbc_harness.drivers.dbc")
#: what a receive call hands back (bytes, or a count stored into the caller's buffer)
_T = TypeVar("_T")

_RUNNING = (DbcState.ENABLED, DbcState.CONNECTED, DbcState.CONFIGURED)
#: states poll() accepts once start() has begun (INITIALIZED: re-bring-up after a reset)
_POLLABLE = (DbcState.INITIALIZED, *_RUNNING)
#: largest receive buffer (``in_buffer_size``): one TD of 16 chained 64 KiB TRBs
IN_BUFFER_MAX = 1 << 20
#: write() polls (drains completions, follows DCCTRL/DCPORTSC) at least once per this many
#: writes (a power of two), once per HALF_FULL_POLL_EVERY writes while the OUT ring is half
#: full, and always before it waits for room. A poll that finds no event costs about as much
#: as a small write (a DCCTRL read and the DCPORTSC follow); polling on every write past half
#: full, when the host reads more slowly than the target writes, took ~0.45 empty polls per
#: 64-byte message (bench dbc).
POLL_EVERY_WRITES = 64
POLL_EVERY_WRITES_MASK = POLL_EVERY_WRITES - 1
HALF_FULL_POLL_EVERY = 32
HALF_FULL_POLL_MASK = HALF_FULL_POLL_EVERY - 1


class DbcDriver:
    """A DbC driver over one controller's BAR0 (``mmio``) and a DMA space (``dma``).

    Options:

    * ``identity``: VID/PID/bcdDevice/protocol/strings (default 1d6b:0010: Linux ``usb_debug``
      binds it);
    * ``dbc_offset``: BAR0 offset of the DbC (None: walk the extended capability list);
    * ``port_reset``: the reset of the not-connected USB3 root ports after DCE that some parts
      need before the debug host sees the DbC (xHCI 1.2 7.6.4 step 6). ``None`` (default): the
      driver decides: at once when ``pci_vendor_id`` is Intel's (as Linux's early printk
      driver, drivers/usb/early/xhci-dbc.c xdbc_start(), does by vendor ID), otherwise once if
      DCPORTSC.CCS is still 0 ``PORT_RESET_AFTER`` seconds after DCE (Xen resets on every
      vendor; waiting first leaves parts that connect by themselves untouched), logged and
      counted in ``counters.recoveries["root_port_reset"]``. ``True``: always, right after DCE;
      ``False``: never;
    * ``pci_vendor_id``: the controller's PCI Vendor ID when the caller knows its PCI function
      (the benches fill it in); None: unknown;
    * ``mmio64``: True writes each 64-bit register (DCERSTBA, DCERDP, DCCP) with one qword
      access; the default False writes it as two dword writes, low then high, which every part
      takes (Linux's xhci does the same on every part: some cannot take a 64-bit access);
    * ``ring_trbs``: size of the OUT and IN transfer rings (16..4096 TRBs, one segment);
      ``event_ring_trbs``: default twice ``ring_trbs`` (at most 4096);
    * ``in_buffers`` / ``in_buffer_size``: receive buffers kept posted on the IN ring (default
      min(64, ring_trbs // 2), fewer when the ring cannot hold that many) and their size (a
      multiple of 1024, at most :data:`IN_BUFFER_MAX` = 1 MiB; above 64 KiB a buffer is one TD
      of chained TRBs, 64 KiB each, with one event when it fills). The default 1024, like
      Linux, completes every packet at once; larger buffers cost fewer events, but a host
      transfer that is a multiple of 1024 bytes and not of the buffer size is only handed over
      when the host ends it with a zero-length packet or sends more;
    * ``max_bytes_in_flight``: target -> host back-pressure (default 4 MiB: 64 TRBs of 64 KiB
      and, with completion moderation, 4 events in flight; on the virtual bench 8 and 16 MiB
      moved 7 % and 35 % less per second, the blocks no longer staying in the CPU's caches,
      and 4 MiB is still 9 ms of a SuperSpeed link); ``rx_limit``: received bytes held
      before the IN ring stops being re-primed (host -> target back-pressure);
    * ``takeover``: disable a DbC someone else left enabled instead of raising DbcBusy;
    * ``on_state(old, new)``: called on every state transition;
    * ``raise_device_errors``: poll() raises DbcDeviceError after a drain that saw a bad
      controller-supplied value (by default they are counted and kept in ``device_errors``);
    * ``zlp``: follow a message that is a non-zero multiple of 1024 bytes with a zero-length
      TD, so the host's read ends exactly at the message boundary (off by default, like Linux:
      a console stream does not need it).
    """

    def __init__(
        self,
        mmio: Mmio,
        dma: DmaSpace,
        *,
        identity: DbcIdentity | None = None,
        clock: Clock = REAL_CLOCK,
        trace: TraceSink = null_sink,
        dbc_offset: int | None = None,
        port_reset: bool | None = None,
        pci_vendor_id: int | None = None,
        mmio64: bool = False,
        ring_trbs: int = 256,
        event_ring_trbs: int | None = None,
        in_buffers: int | None = None,
        in_buffer_size: int = DBC_MAX_PACKET_SIZE,
        max_bytes_in_flight: int = 4 << 20,
        rx_limit: int = 16 << 20,
        takeover: bool = False,
        on_state: StateCallback | None = None,
        raise_device_errors: bool = False,
        zlp: bool = False,
    ) -> None:
        check_ring_size(ring_trbs, "ring_trbs")
        if event_ring_trbs is None:
            event_ring_trbs = min(4096, 2 * ring_trbs)
        check_ring_size(event_ring_trbs, "event_ring_trbs")
        if in_buffers is None:
            in_buffers = min(64, ring_trbs // 2)
        if not isinstance(in_buffers, int) or not 1 <= in_buffers <= ring_trbs - 2:
            raise DbcConfigError(
                f"in_buffers must be 1..{ring_trbs - 2} (a ring of {ring_trbs} TRBs keeps one "
                f"for the Link TRB and one free), got {in_buffers!r}"
            )
        if (
            not isinstance(in_buffer_size, int)
            or not DBC_MAX_PACKET_SIZE <= in_buffer_size <= IN_BUFFER_MAX
            or in_buffer_size % DBC_MAX_PACKET_SIZE
        ):
            raise DbcConfigError(
                f"in_buffer_size must be a multiple of {DBC_MAX_PACKET_SIZE} up to "
                f"{IN_BUFFER_MAX}, got {in_buffer_size!r}"
            )
        trbs_per_buffer = -(-in_buffer_size // TRB_MAX_BYTES)
        if trbs_per_buffer > ring_trbs - 2:
            raise DbcConfigError(
                f"in_buffer_size {in_buffer_size} needs {trbs_per_buffer} TRBs of 64 KiB: "
                f"more than a ring of {ring_trbs} TRBs holds ({ring_trbs - 2})"
            )
        if max_bytes_in_flight < TRB_MAX_BYTES:
            raise DbcConfigError(f"max_bytes_in_flight must be >= {TRB_MAX_BYTES}")
        if rx_limit < 1:
            raise DbcConfigError("rx_limit must be >= 1")
        self.mmio = mmio
        self.dma = dma
        self.identity = identity if identity is not None else DbcIdentity()
        self.clock = clock
        self.trace = trace
        self.dbc_offset = dbc_offset
        self.port_reset = port_reset
        self.pci_vendor_id = pci_vendor_id
        self.mmio64 = mmio64
        #: clock time by which DCPORTSC.CCS must be 1 before the root ports are reset once
        #: (``port_reset=None`` on a part not known to need it), or None
        self._connect_by: float | None = None
        self.ring_trbs = ring_trbs
        self.event_ring_trbs = event_ring_trbs
        self.in_buffers = in_buffers
        self.in_buffer_size = in_buffer_size
        self.max_bytes_in_flight = max_bytes_in_flight
        self.rx_limit = rx_limit
        self.takeover = takeover
        self.raise_device_errors = raise_device_errors
        self.zlp = zlp
        self.counters = DbcCounters()
        #: bad controller-supplied values seen (newest last, at most 1000 kept)
        self.device_errors: list[DbcDeviceError] = []
        self._sm = StateMachine(on_state=on_state, trace=trace)
        self._regs: DbcRegisters | None = None
        self._event_ring: EventRing | None = None
        self._out: TargetToHostPipe | None = None
        self._in: HostToTargetPipe | None = None
        self._memory: DbcContextMemory | None = None
        self._events: EventHandler | None = None
        self._follower: LinkFollower | None = None
        #: DCDB values for DB Target 0 (OUT ring) and 1 (IN ring), RsvdP bits as read
        self._doorbell_values = (0, 0)
        #: messages not delivered, not yet reported by write()/flush(): (kind, message)
        self._undelivered: list[tuple[str, UndeliveredMessage]] = []
        self._new_device_errors: list[DbcDeviceError] = []
        self._removed: DbcSurpriseRemoval | None = None
        self._writes = 0
        #: the thread inside read()/read_message() (one reader at a time), or None
        self._reader: int | None = None
        #: see the threading contract in the module docstring: every public call holds this
        #: lock except while it sleeps between polls
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> DbcState:
        return self._sm.state

    @property
    def state_history(self) -> list[tuple[DbcState, DbcState, str]]:
        return self._sm.history

    @property
    def configured(self) -> bool:
        return self._sm.state is DbcState.CONFIGURED

    # ------------------------------------------------------------------ bring-up
    def find_dbc(self) -> int:
        """BAR0 offset of the DbC register block: ``dbc_offset`` (checked: DCID must read
        Capability ID 0x0A) or the extended capability walk. DbcNotFound when there is none."""
        if self.dbc_offset is None:
            self.dbc_offset = bringup.find_dbc(self.mmio)
            return self.dbc_offset
        dcid = self.mmio.read32(self.dbc_offset)
        if dcid == 0xFFFF_FFFF:
            raise DbcSurpriseRemoval("DCID read 0xFFFFFFFF: the controller is gone")
        cap_id = DCID.get(dcid, "capability_id")
        if cap_id != XECP_ID_DEBUG_CAPABILITY:
            raise DbcNotFound(
                f"no DbC at BAR0+0x{self.dbc_offset:x}: DCID Capability ID is 0x{cap_id:02x}, "
                "not 0x0A"
            )
        return self.dbc_offset

    def start(self, timeout: float = 5.0) -> None:
        """Bring the DbC up (reference sequence) and wait until the debug host configured it.

        DbcBusy if DCE is already set and ``takeover`` is False; DbcTimeout if no host
        configures us within ``timeout`` (everything is undone: DCE = 0, memory freed).
        """
        with self._lock:
            self._start(timeout)

    def _start(self, timeout: float) -> None:
        if self._sm.state is not DbcState.DISABLED:
            raise DbcStateError(f"start() in state {self._sm.state.name}; stop() first")
        deadline = Deadline(self.clock, timeout)
        base = self.find_dbc()
        handoff = bringup.bios_handoff(self.mmio, self.clock, min(1.0, deadline.remaining()))
        if handoff == "timeout":  # the firmware never let go: going on, as Linux does
            self.counters.recoveries["bios_handoff_timeout"] += 1
        regs = DbcRegisters(self.mmio, base, mmio64=self.mmio64, trace=self.trace)
        limit = bringup.address_limit(self.mmio)
        ctrl = regs.dcctrl()
        if DCCTRL.get(ctrl, "DCE"):
            if not self.takeover:
                raise DbcBusy(
                    f"DCCTRL.DCE is already set at BAR0+0x{base:x} (firmware or another driver "
                    "owns the DbC); pass takeover=True to disable it and take over"
                )
            log.warning("DbC already enabled (DCCTRL=0x%08x): taking over", ctrl)
            self.counters.recoveries["takeover"] += 1
        bringup.disable(regs, self.clock, deadline.remaining())
        self._regs = regs
        try:
            self._allocate(limit)
            template = regs.read32(regs.DCDB)
            self._doorbell_values = (
                DCDB.replace(template, db_target=0),
                DCDB.replace(template, db_target=1),
            )
            self._program_and_enable(deadline.remaining())
            self._wait(
                deadline, lambda: self._sm.state is DbcState.CONFIGURED, "DCR (host configured)"
            )
        except BaseException:
            self._teardown(quiet=True)
            raise

    def _allocate(self, limit: int | None) -> None:
        dma = self.dma
        self._event_ring = allocate_event_ring(dma, self.event_ring_trbs, limit=limit)
        self._out = TargetToHostPipe(
            dma,
            self.ring_trbs,
            limit=limit,
            max_bytes_in_flight=self.max_bytes_in_flight,
            zlp=self.zlp,
        )
        self._in = HostToTargetPipe(
            dma,
            self.ring_trbs,
            limit=limit,
            buffers=self.in_buffers,
            buffer_size=self.in_buffer_size,
            rx_limit=self.rx_limit,
        )
        self._memory = DbcContextMemory(dma, limit=limit)
        if self.trace is not null_sink:
            self._out.trace = self._in.trace = self.trace
        assert self._regs is not None
        self._events = EventHandler(
            self._regs,
            self._event_ring,
            self._out,
            self._in,
            self._memory,
            self.counters,
            trace=self.trace,
            on_device_error=self._on_device_error,
            on_undelivered=lambda m: self._undelivered.append(("transfer", m)),
        )
        self._follower = LinkFollower(
            self._regs,
            self._events,
            self._out,
            self._in,
            self._memory,
            self._sm,
            self.counters,
            doorbell=self._doorbell,
            undelivered=lambda msgs: self._collect_undelivered("disconnect", msgs),
            device_error=self._on_device_error,
        )

    def _program_and_enable(self, timeout: float, *, events_lost: bool = False) -> None:
        """Steps 3-6 of the bring-up: (re)initialise rings and contexts, program the
        registers, set DCE, optionally reset USB3 root ports. Used by start() and after the
        DbC was reset under us (the caller consumed the events it wrote first)."""
        regs, ev, memory, follower = self._regs, self._event_ring, self._memory, self._follower
        assert regs is not None and ev is not None and memory is not None
        assert self._out is not None and self._in is not None and follower is not None
        ev.reset()
        follower.max_burst = DCCTRL.get(regs.dcctrl(), "debug_max_burst")
        memory.fill_info(self.identity)
        self._collect_undelivered(
            "disconnect",
            reinit_pipes(
                self._out, self._in, memory, follower.max_burst, "DbC re-initialised",
                events_lost=events_lost,
            ),
        )  # fmt: skip
        bringup.program(regs, ev, memory, self.identity)
        self._sm.to(DbcState.INITIALIZED, "rings, contexts and registers programmed")
        bringup.enable(regs, self.clock, timeout)
        self._sm.to(DbcState.ENABLED, "DCE = 1")
        self._connect_by = None
        if self.port_reset or (
            self.port_reset is None and self.pci_vendor_id == bringup.PCI_VENDOR_ID_INTEL
        ):
            why = "asked to" if self.port_reset else "Intel part (PCI vendor ID 0x8086)"
            self._reset_root_ports(min(timeout, 0.5), why)
        elif self.port_reset is None:
            self._connect_by = self.clock.monotonic() + bringup.PORT_RESET_AFTER

    def _reset_root_ports(self, timeout: float, why: str) -> None:
        ports = bringup.reset_usb3_ports(self.mmio, self.clock, timeout)
        log.info("DbC: reset the not-connected USB3 root ports %s after DCE (%s)", ports, why)

    def _no_connection_yet(self) -> None:
        """``port_reset=None``: DCPORTSC.CCS still 0 ``PORT_RESET_AFTER`` after DCE: reset the
        not-connected USB3 root ports once (some hosts only see the DbC after it)."""
        if self._sm.state is not DbcState.ENABLED:  # CCS came: nothing to do
            self._connect_by = None
        elif self._connect_by is not None and self.clock.monotonic() >= self._connect_by:
            self._connect_by = None
            self.counters.recoveries["root_port_reset"] += 1
            self._reset_root_ports(
                0.5, f"DCPORTSC.CCS still 0 {bringup.PORT_RESET_AFTER * 1000:g} ms after DCE"
            )

    # ------------------------------------------------------------------ the poll loop
    def poll(self) -> int:
        """Drain the event ring once, follow DCCTRL/DCPORTSC (connect, configure, disconnect,
        halts, DCE lost), re-prime the IN ring and queue waiting writes. Returns the number of
        events consumed. Raises DbcSurpriseRemoval once the controller is gone."""
        with self._lock:
            if self._removed is not None:
                raise self._removed
            if self._sm.state not in _POLLABLE or self._events is None:
                raise DbcStateError(f"poll() in state {self._sm.state.name}")
            try:
                return self._service()
            except DbcSurpriseRemoval as exc:
                self._surprise_removal(exc)
                raise

    def _surprise_removal(self, exc: DbcSurpriseRemoval) -> None:
        """The controller is gone: consume what it wrote before it went (completed transfers
        stay readable, confirmed bytes count as delivered), report what was in flight."""
        self._removed = exc
        events, out = self._events, self._out
        if events is not None and out is not None:
            events_lost = events.drain_before_reinit()
            self._collect_undelivered(
                "disconnect", out.flush(f"surprise removal: {exc}", events_lost=events_lost)
            )
        self._sm.to(DbcState.REMOVED, str(exc))

    def _service(self) -> int:
        regs, events, follower = self._regs, self._events, self._follower
        out, inp = self._out, self._in
        assert regs is not None and events is not None and follower is not None
        assert out is not None and inp is not None
        ctrl = regs.dcctrl()
        if not ctrl & DCE:
            self._dce_lost(ctrl)
            return 0
        sm = self._sm
        if sm.state is DbcState.INITIALIZED:
            sm.to(DbcState.ENABLED, "DCE = 1")
        consumed = events.drain()
        follower.follow(ctrl)
        if self._connect_by is not None:
            self._no_connection_yet()
        if sm.state is DbcState.CONFIGURED:
            if out.backlog and out.pump() and not out.halted:
                self._doorbell(0)
            if inp.prime() and not inp.halted:
                self._doorbell(1)
        if self._new_device_errors:
            errors = self._new_device_errors
            self._new_device_errors = []
            if self.raise_device_errors:
                raise errors[0]
        return consumed

    def _dce_lost(self, ctrl: int) -> None:
        """DCE reads 0 though we set it: the controller was reset under us (HCRST). Report
        what was in flight and run the whole bring-up again (retried on the next poll if the
        controller does not take DCE yet)."""
        events_lost = False
        if self._sm.state is not DbcState.INITIALIZED:
            log.warning("DbC: DCE dropped by itself (DCCTRL=0x%08x): re-running the bring-up", ctrl)
            self.counters.recoveries["dce_lost"] += 1
            # what the controller wrote before it was reset is still in our memory
            assert self._events is not None
            events_lost = self._events.drain_before_reinit()
            self._sm.to(DbcState.INITIALIZED, "DCE dropped by itself (controller reset)")
        try:
            self._program_and_enable(0.1, events_lost=events_lost)
        except DbcTimeout as exc:
            log.info("DbC: controller not ready for DCE yet (%s); retrying on the next poll", exc)

    def _doorbell(self, target: int) -> None:
        regs = self._regs
        assert regs is not None
        regs.write32(regs.DCDB, self._doorbell_values[target])
        self.counters.doorbells += 1

    def _on_device_error(self, err: DbcDeviceError) -> None:
        if len(self.device_errors) >= 1000:
            del self.device_errors[0]
        self.device_errors.append(err)
        self._new_device_errors.append(err)

    def _collect_undelivered(self, kind: str, messages: list[UndeliveredMessage]) -> None:
        for m in messages:
            self.counters.undelivered_messages += 1
            self._undelivered.append((kind, m))

    # ------------------------------------------------------------------ waiting
    def _wait(self, deadline: Deadline, ready: Callable[[], bool], what: str) -> None:
        """Poll until ``ready()`` is true; DbcTimeout naming ``what`` at the deadline."""
        while True:
            if self.poll():
                deadline.progressed()
            if ready():
                return
            if deadline.expired():
                raise DbcTimeout(what, deadline.timeout)
            deadline.pause()

    def _take_mine(self) -> list[tuple[str, UndeliveredMessage]]:
        """Remove and return the calling thread's undelivered reports (writer 0: anyone's)."""
        me = get_ident()
        mine = [(k, m) for k, m in self._undelivered if m.writer == me or not m.writer]
        if mine:
            self._undelivered = [
                (k, m) for k, m in self._undelivered if m.writer != me and m.writer
            ]
        return mine

    def _raise_undelivered(self) -> None:
        if not self._undelivered:
            return
        items = self._take_mine()
        if not items:
            return
        messages = tuple(m for _, m in items)
        if any(kind == "disconnect" for kind, _ in items):
            raise DbcDisconnected("the debug host went away with messages in flight", messages)
        raise DbcTransferError("transfers failed on the wire", messages)

    def _removal_error(self) -> DbcSurpriseRemoval:
        """The surprise removal, carrying the calling thread's undelivered messages."""
        assert self._removed is not None
        mine = tuple(m for _, m in self._take_mine())
        return DbcSurpriseRemoval(str(self._removed), mine)

    def take_undelivered(self) -> tuple[UndeliveredMessage, ...]:
        """Messages reported undelivered and not yet raised, of every writer thread (clears
        them)."""
        items = self._undelivered
        self._undelivered = []
        return tuple(m for _, m in items)

    def _stopped(self, call: str) -> DbcStateError:
        return DbcStateError(
            f"{call} in state {self._sm.state.name}: start() first, or the driver was stopped "
            "(stop() may have been called from another thread)"
        )

    # ------------------------------------------------------------------ data path
    def write(self, data: bytes | bytearray | memoryview, timeout: float = 5.0) -> int:
        """Send one message to the debug host (one TD; never merged with another write).

        Waits (up to ``timeout``) for the DbC to be configured and for room on the OUT ring;
        returns the message id once accepted (delivery is asynchronous: :meth:`flush`).
        Raises DbcDisconnected/DbcTransferError first if earlier messages were not delivered,
        DbcTimeout if the message could not be accepted in time (then nothing was accepted).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DbcConfigError(f"write() takes bytes-like data, got {type(data).__name__}")
        deadline: Deadline | None = None
        while True:
            with self._lock:
                if self._removed is not None:
                    raise self._removal_error()
                if self._undelivered:
                    self._raise_undelivered()
                out = self._out
                if out is None:
                    raise self._stopped("write()")
                configured = self._sm.state is DbcState.CONFIGURED
                if deadline is None:
                    writes = self._writes = self._writes + 1
                    # Drain completions (and notice host changes) every POLL_EVERY_WRITES
                    # writes, every HALF_FULL_POLL_EVERY while the ring is half full, before
                    # waiting for room; otherwise queue without a register read.
                    need_poll = (
                        not configured
                        or bool(out.backlog)
                        or not writes & POLL_EVERY_WRITES_MASK
                        or (
                            not writes & HALF_FULL_POLL_MASK
                            and out.ring.free_slots < out.ring.max_in_flight // 2
                        )
                    )
                else:
                    need_poll = True
                if need_poll:
                    if self.poll() and deadline is not None:
                        deadline.progressed()
                    self._raise_undelivered()
                    configured = self._sm.state is DbcState.CONFIGURED
                if configured and not out.halted:
                    message_id = out.queue_small(data, get_ident())
                    if message_id:
                        self._doorbell(0)
                        return message_id
                if configured and not out.backlog and out.has_room():
                    msg = out.accept(data, get_ident())
                    if out.pump() and not out.halted:
                        self._doorbell(0)
                    return msg.message_id
                if deadline is None:
                    deadline = Deadline(self.clock, timeout)
                    if not need_poll:
                        continue  # no room: poll (at once) before the first pause
                elif deadline.expired():
                    what = (
                        "room on the OUT ring (target -> host)"
                        if configured
                        else f"the debug host to configure the DbC (state {self._sm.state.name})"
                    )
                    raise DbcTimeout(what, timeout)
            deadline.pause()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every accepted message was delivered. DbcDisconnected/DbcTransferError
        with the messages that were not; DbcTimeout when the host does not read in time."""
        deadline = Deadline(self.clock, timeout)
        while True:
            with self._lock:
                if self._removed is not None:
                    raise self._removal_error()
                out = self._out
                if out is None:
                    raise self._stopped("flush()")
                if self.poll():
                    deadline.progressed()
                self._raise_undelivered()
                if out.idle:
                    return
                if deadline.expired():
                    raise DbcTimeout("the debug host to read every queued message", timeout)
            deadline.pause()

    def read(self, max_bytes: int = 65536, timeout: float = 1.0) -> bytes:
        """Up to ``max_bytes`` bytes the debug host sent (across its transfers, in order).
        Returns as soon as at least one byte is there; DbcTimeout if none came in time."""
        if max_bytes <= 0:
            return b""
        return self._receive(lambda rx: rx.has_data(), lambda rx: rx.take(max_bytes), timeout,
                             "data from the debug host")  # fmt: skip

    def read_into(self, buffer: bytearray | memoryview, timeout: float = 1.0) -> int:
        """Like :meth:`read` with ``max_bytes = len(buffer)``, into the caller's writable
        ``buffer`` (reused from call to call: no new bytes object per read). Returns the number
        of bytes stored; DbcTimeout if none came in time."""
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        return self._receive(lambda rx: rx.has_data(), lambda rx: rx.take_into(view), timeout,
                             "data from the debug host")  # fmt: skip

    def read_message(self, timeout: float = 1.0) -> bytes:
        """One host transfer: the bytes up to its end (a short packet, possibly zero-length).
        With receive buffers larger than 1024 bytes, a transfer that is a multiple of 1024
        bytes ends only with the host's zero-length packet."""
        return self._receive(lambda rx: rx.has_message(), lambda rx: rx.take_message(), timeout,
                             "a complete transfer from the debug host")  # fmt: skip

    def _receive(
        self,
        ready: Callable[[RxQueue], bool],
        take: Callable[[RxQueue], _T],
        timeout: float,
        what: str,
    ) -> _T:
        deadline = Deadline(self.clock, timeout)
        me = get_ident()
        with self._lock:
            if self._reader is not None and self._reader != me:
                raise DbcConcurrentUse(
                    "read() while another thread is reading: the driver has one reader at a time"
                )
            self._reader = me
        try:
            while True:
                with self._lock:
                    inp = self._in
                    if inp is None:
                        raise self._stopped("read()")
                    rx = inp.rx
                    if not ready(rx) and self._removed is None and self.poll():
                        deadline.progressed()
                    if ready(rx):
                        # after a surprise removal too: what had completed is handed back
                        data = take(rx)
                        if self._removed is None:
                            self._reprime()
                        return data
                    if self._removed is not None:
                        raise self._removal_error()
                    if deadline.expired():
                        raise DbcTimeout(what, timeout)
                deadline.pause()
        finally:
            self._reader = None

    def iter_read(self, max_bytes: int = 65536, idle_timeout: float = 1.0) -> Iterator[bytes]:
        """Yield received data as it arrives; stops after ``idle_timeout`` without data."""
        while True:
            try:
                yield self.read(max_bytes, idle_timeout)
            except DbcTimeout:
                return

    def _reprime(self) -> None:
        inp = self._in
        if inp is not None and self._sm.state is DbcState.CONFIGURED:
            if inp.prime() and not inp.halted:
                self._doorbell(1)

    @property
    def pending_read_bytes(self) -> int:
        """Received bytes not yet taken by read()."""
        return self._in.rx.size if self._in is not None else 0

    # ------------------------------------------------------------------ stop
    def stop(self, timeout: float = 1.0) -> tuple[UndeliveredMessage, ...]:
        """Disable the DbC (DCCTRL = 0), wait for DCE to read 0, free every DMA buffer.
        Returns the messages that were accepted but not delivered (nothing is dropped
        silently). Idempotent. After a surprise removal no register is touched."""
        with self._lock:
            return self._stop(timeout)

    def _stop(self, timeout: float) -> tuple[UndeliveredMessage, ...]:
        if self._regs is None:
            return self.take_undelivered()
        removed = self._removed is not None
        error: DbcError | None = None
        if not removed:
            try:
                bringup.disable(self._regs, self.clock, timeout)
            except DbcSurpriseRemoval:
                removed = True
            except DbcTimeout as exc:
                error = exc
        if error is not None:
            # DCE did not clear: the controller may still use our memory, keep it.
            raise error
        events_lost = False
        if self._events is not None and not removed:
            # DCE = 0: the controller writes nothing more; consume what it wrote
            events_lost = self._events.drain_before_reinit()
        self._teardown(quiet=False, events_lost=events_lost)
        return self.take_undelivered()

    def _teardown(self, *, quiet: bool, events_lost: bool = False) -> None:
        """Free every DMA buffer (after DCE = 0) and go back to DISABLED."""
        if self._regs is not None and quiet and self._removed is None:
            try:
                self._regs.write32(self._regs.DCCTRL, 0)
            except DbcError:
                pass
        if self._out is not None:
            self._collect_undelivered(
                "disconnect", self._out.flush("driver stopped", events_lost=events_lost)
            )
        # Every part is given back even when one release raises (e.g. the allocator's sanitizer
        # reporting a UseAfterFree while a pipe frees its blocks): the first error is raised once
        # everything is released and the driver is DISABLED.
        releases: list[Callable[[], object]] = []
        if self._out is not None:
            releases.append(partial(self._out.close, self.dma))
        if self._in is not None:
            releases.append(partial(self._in.close, self.dma))
        if self._event_ring is not None:
            releases.append(self._event_ring.free)
        if self._memory is not None:
            releases.append(partial(self._memory.free, self.dma))
        first_error: Exception | None = None
        for release in releases:
            try:
                release()
            except Exception as exc:
                first_error = first_error or exc
        self._out = self._in = None
        self._event_ring = None
        self._memory = None
        self._events = None
        self._follower = None
        self._regs = None
        if self._sm.state is not DbcState.DISABLED:
            self._sm.to(DbcState.DISABLED, "stopped")
        self._removed = None
        if first_error is not None:
            raise first_error

    def __enter__(self) -> DbcDriver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """stop(); messages it reports undelivered stay available from take_undelivered()
        (and are logged), so leaving the block never drops data silently."""
        lost = self.stop()
        warn_undelivered_at_stop(log, lost)
        self._undelivered.extend(("disconnect", m) for m in lost)

    def __repr__(self) -> str:
        where = f"0x{self.dbc_offset:x}" if self.dbc_offset is not None else "?"
        return f"DbcDriver(dbc@{where}, state={self._sm.state.name})"
