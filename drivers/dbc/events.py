"""The one event handler: drains the DbC event ring and dispatches every event.

* Transfer Events: both Endpoint ID schemes (0/1 spec-style and AMD, 2/3 Intel device context
  index) name the ring. Rings complete in order: an event names the oldest TRB in flight, or
  one of the TRBs up to the first with IOC (OUT: completion moderation; IN: a receive buffer
  that is one chained TD, where a Short Packet names the TRB it ended in; see
  :mod:`drivers.dbc.datapath`), and then confirms the TRBs before it, which completed without
  events of their own. A pointer that names no such TRB (zero, outside our rings,
  non-monotonic) and a residual larger than the TRB's length are recorded as
  :class:`DbcDeviceError` and the in-order completion is used instead (the oldest TRB; on the
  OUT ring the first with IOC), so data is neither lost nor duplicated; such a pointer also
  ends that ring's shortcut for good (its pipe's ``pointers`` trust).
* Completion codes: Success, Short Packet (end of a host transfer), Stall Error (kept queued:
  spurious STALL after ClearFeature(ENDPOINT_HALT), or a host halt with the TRB rewritten to
  what was not moved), Babble Detected / USB Transaction / Data Buffer Errors (the endpoint
  halted on the TRB: kept queued and retried after the host clears the halt), TRB Error and
  anything the controller moved past (the message is reported undelivered).
* Port Status Change Events: noted; the driver re-reads DCPORTSC/DCCTRL after the drain.
* DCERDP is written once per drain, after the last consumed event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dbc_harness.drivers.dbc.bringup import DbcContextMemory
from dbc_harness.drivers.dbc.counters import DbcCounters
from dbc_harness.drivers.dbc.datapath import HostToTargetPipe, TargetToHostPipe
from dbc_harness.drivers.dbc.errors import DbcDeviceError, UndeliveredMessage
from dbc_harness.drivers.dbc.registers import DbcRegisters
from dbc_harness.drivers.tracing import TraceSink, null_sink
from dbc_harness.drivers.xhci.registers import DCERDP
from dbc_harness.drivers.xhci.ring import EventRing
from dbc_harness.drivers.xhci.trb import (
    TRANSFER_EVENT,
    TRB_SIZE,
    CompletionCode,
    TRBType,
    render_trb,
    type_and_cycle,
)

log = logging.getLogger("dbc_harness.drivers.dbc")

#: Endpoint IDs naming the DbC OUT ring (target -> host) and IN ring (host -> target) in
#: Transfer Events: spec-style/AMD 0/1 and Intel 2/3 (device context index). Doorbell targets
#: (0/1) are a different numbering space.
OUT_ENDPOINT_IDS = frozenset({0, 2})
IN_ENDPOINT_IDS = frozenset({1, 3})
#: completion codes after which the endpoint halts on the TRB and the driver retries it
RETRY_CODES = frozenset(
    {
        CompletionCode.StallError,
        CompletionCode.BabbleDetectedError,
        CompletionCode.USBTransactionError,
        CompletionCode.DataBufferError,
    }
)
#: give a message up after this many error completions of one TRB (not counting spurious STALLs)
MAX_RETRIES = 8
_SUCCESS = int(CompletionCode.Success)
_SHORT = int(CompletionCode.ShortPacket)
_STALL = int(CompletionCode.StallError)
_TRANSFER_EVENT = int(TRBType.TransferEvent)
_PSC_EVENT = int(TRBType.PortStatusChangeEvent)
#: what the drain reads of every Transfer Event, in _transfer_event's parameter order
_TRANSFER_EVENT_FIELDS = TRANSFER_EVENT.reader(
    "trb_pointer", "completion_code", "trb_transfer_length", "endpoint_id", "ED"
)


def code_name(code: int) -> str:
    try:
        return CompletionCode(code).name
    except ValueError:
        return f"code{code}"


class EventHandler:
    """Drains the event ring; owns no state beyond what it is handed."""

    def __init__(
        self,
        regs: DbcRegisters,
        event_ring: EventRing,
        out_pipe: TargetToHostPipe,
        in_pipe: HostToTargetPipe,
        memory: DbcContextMemory,
        counters: DbcCounters,
        *,
        trace: TraceSink = null_sink,
        on_device_error: Callable[[DbcDeviceError], None],
        on_undelivered: Callable[[UndeliveredMessage], None],
    ) -> None:
        self.regs = regs
        self.event_ring = event_ring
        self.out = out_pipe
        self.inp = in_pipe
        self.memory = memory
        self.counters = counters
        self._trace = trace
        self._tracing = trace is not null_sink
        self._device_error = on_device_error
        self._undelivered = on_undelivered
        #: set by a Port Status Change Event; the driver clears it after re-reading DCPORTSC
        self.port_change = False
        #: DCERDP value with its RsvdP/DESI bits as last written
        self._erdp_template = 0

    # -- the drain -------------------------------------------------------------------------
    def drain(self, max_events: int | None = None, *, write_erdp: bool = True) -> int:
        """Consume every event software owns (Cycle == CCS), then write DCERDP once (not with
        ``write_erdp=False``: the last drain before a re-initialisation, which reads our
        memory only and works when the registers are gone)."""
        ring = self.event_ring
        view = ring.view
        limit = ring.trbs if max_events is None else max_events
        consumed = 0
        read = _TRANSFER_EVENT_FIELDS
        while consumed < limit:
            off = ring.dequeue_index * TRB_SIZE
            trb_type, cycle = type_and_cycle(view, off)
            if cycle != ring.ccs:
                break
            if self._tracing:
                self._trace("event", address=ring.dequeue_pointer, text=render_trb(view, off))
            if trb_type == _TRANSFER_EVENT:
                pointer, code, residual, ep, ed = read(view, off)
                if ep in OUT_ENDPOINT_IDS and not ed:  # the most common event, dispatched here
                    self._out_event(pointer, code, residual)
                else:
                    self._transfer_event(pointer, code, residual, ep, ed)
            elif trb_type == _PSC_EVENT:
                self.port_change = True
            else:
                self._bad(f"unexpected event TRB type {trb_type} at 0x{ring.dequeue_pointer:x}")
            ring.advance()
            consumed += 1
        if consumed:
            self.counters.events += consumed
            if write_erdp:
                self.write_erdp()
        return consumed

    def drain_before_reinit(self) -> bool:
        """Before any re-initialisation (DCE lost, host gone, stop, surprise removal): consume
        every event the controller already wrote, so completed transfers reach ``read()`` and
        confirmed bytes count as delivered. Reads our memory only (no register access).
        Returns True when the ring was full: the controller may then have held completions
        that a reset discards (xHCI 1.2 4.9.4: it never overwrites an unconsumed event), so
        what is in flight cannot be known exactly."""
        ring = self.event_ring
        consumed = self.drain(write_erdp=False)
        return consumed >= ring.trbs - 1

    def write_erdp(self) -> None:
        self.regs.write64(
            self.regs.DCERDP,
            DCERDP.replace(
                self._erdp_template, event_ring_dequeue_pointer=self.event_ring.dequeue_pointer
            ),
        )
        self.counters.erdp_writes += 1

    # -- transfer events -------------------------------------------------------------------
    def _report(self, undelivered: UndeliveredMessage) -> None:
        self.counters.undelivered_messages += 1
        log.warning(
            "DbC message %d not delivered (%d of %d bytes arrived): %s",
            undelivered.message_id, undelivered.delivered, len(undelivered.data),
            undelivered.reason,
        )  # fmt: skip
        self._undelivered(undelivered)

    def _bad(self, message: str) -> None:
        self.counters.device_errors += 1
        n = self.counters.device_errors
        if n <= 10 or n & (n - 1) == 0:  # the first ten, then at powers of two
            log.warning("DbC device error #%d: %s", n, message)
        self._device_error(DbcDeviceError(message))

    def _transfer_event(self, pointer: int, code: int, residual: int, ep: int, ed: int) -> None:
        """One Transfer Event: its TRB Pointer, Completion Code, TRB Transfer Length (the
        residual), Endpoint ID and ED."""
        if ed:
            self._bad(f"Transfer Event with ED = 1 (pointer 0x{pointer:x}): we queue no Event Data")
            return
        if ep in OUT_ENDPOINT_IDS:
            self._out_event(pointer, code, residual)
        elif ep in IN_ENDPOINT_IDS:
            self._in_event(pointer, code, residual)
        else:
            # Unknown endpoint ID: the pointer may still name the ring.
            if self.out.ring.index_of(pointer) is not None:
                self._bad(f"Transfer Event endpoint ID {ep} for an OUT ring TRB")
                self._out_event(pointer, code, residual)
            elif self.inp.ring.index_of(pointer) is not None:
                self._bad(f"Transfer Event endpoint ID {ep} for an IN ring TRB")
                self._in_event(pointer, code, residual)
            else:
                self._bad(f"Transfer Event endpoint ID {ep}, TRB pointer 0x{pointer:x}: no ring")

    def _check(
        self, ring_name: str, expected: int, pointer: int, residual: int, length: int
    ) -> int:
        if pointer != expected:
            self._bad(
                f"{ring_name} ring Transfer Event TRB pointer 0x{pointer:x} is not the oldest "
                f"TRB in flight 0x{expected:x}; completing in ring order"
            )
        if residual > length:
            self._bad(f"{ring_name} ring Transfer Event residual {residual} > TRB length {length}")
            residual = length
        return residual

    def _halted_on(self, which: str, address: int) -> bool:
        """The controller stopped on ``address``: the endpoint context's TR Dequeue Pointer
        (written back on a halt) points at it."""
        return self.memory.endpoint(which)["tr_dequeue_pointer"] == address

    def _out_event(self, pointer: int, code: int, residual: int) -> None:
        out = self.out
        pending = out.pending
        if not pending:
            self._bad(f"OUT ring Transfer Event (pointer 0x{pointer:x}) with nothing in flight")
            return
        t = pending[0]
        address = out.ring.address_of(t.index)
        if pointer == address:
            if not out.pointers.trusted:  # note(True) changes nothing once trusted
                out.pointers.note(True)
        elif not t.ioc:
            # completion moderation: the TRBs before the one named completed silently
            run = out.run_before(pointer)
            out.pointers.note(run >= 0)
            if run < 0:
                run = out.run_to_ioc()
                if run >= len(out.pending):  # pragma: no cover - the last TRB has IOC
                    run = 0
                named = out.ring.address_of(out.pending[run].index)
                self._bad(
                    f"OUT ring Transfer Event TRB pointer 0x{pointer:x} is not a TRB in flight "
                    f"up to the next with IOC 0x{named:x}; completing in ring order"
                )
                pointer = named
            trbs, moved = out.complete_silent(run)
            self.counters.trbs_to_host += trbs
            self.counters.bytes_to_host += moved
            t = out.pending[0]
            address = pointer
        else:
            out.pointers.note(False)
        if t.cancelled:  # a No Op we wrote over a TRB of a failed message
            if pointer != address:
                self._bad(f"OUT ring No Op completion pointer 0x{pointer:x} != 0x{address:x}")
            out.retire_cancelled()
            return
        if pointer != address or residual > t.length:
            residual = self._check("OUT", address, pointer, residual, t.length)
        moved = t.length - residual
        counters = self.counters
        if code == _SUCCESS or code == _SHORT:
            if residual and code == _SUCCESS:
                # Success means the TRB completed: trust the code, record the odd residual.
                self._bad(f"OUT ring Success with residual {residual}: counted as complete")
                moved = t.length
            counters.trbs_to_host += 1
            counters.bytes_to_host += moved
            msg = out.complete_oldest(moved)
            if msg is not None:
                if msg.delivered < msg.length:
                    self._report(msg.report(code_name(code)))
                else:
                    counters.messages_to_host += 1
            return
        name = code_name(code)
        counters.errors[name] += 1
        if code in RETRY_CODES:
            # These codes halt the endpoint on the TRB (4.10.2), which runs again from the TR
            # Dequeue Pointer once the host clears the halt. Not checked against the endpoint
            # context: the host may have cleared the halt before this drain, and the
            # controller then already ran the TRB again (its next event follows this one).
            counters.bytes_to_host += moved
            spurious = code == _STALL and moved == 0 and not t.retries and t.length > 0
            if code == _STALL and moved == 0:
                counters.spurious_stalls += 1
                t.spurious_stalls += 1
            else:
                t.retries += 1
            out.keep_remainder(t, moved)
            out.halted = True  # the poll loop rings the doorbell once DCCTRL.HOT reads 0
            if t.retries > MAX_RETRIES:
                self._report(out.cancel_message_of_oldest(f"{name} after {t.retries} retries"))
                return
            log.info(
                "DbC OUT ring %s on TRB 0x%x (%d of %d bytes moved): kept queued%s",
                name, address, moved, t.length + moved, " (spurious STALL)" if spurious else "",
            )  # fmt: skip
            return
        counters.bytes_to_host += moved
        if self._halted_on("out", address):
            # Halted on a TRB it cannot run (TRB Error): never run it again.
            out.keep_remainder(t, moved)
            out.halted = True
            self._report(out.cancel_message_of_oldest(name))
            return
        # The controller moved past the TRB: the rest of the TD is lost.
        self._report(out.fail_message_of_oldest(name, moved))

    def _in_event(self, pointer: int, code: int, residual: int) -> None:
        inp = self.inp
        t = inp.oldest()
        if t is None:
            self._bad(f"IN ring Transfer Event (pointer 0x{pointer:x}) with nothing posted")
            return
        address = inp.ring.address_of(t.index)
        counters = self.counters
        run = 0
        if pointer != address and (not t.last or t.skipped):
            # TRBs of a TD before the one named were filled without events of their own (no
            # IOC); TRBs skipped after a short packet are done too
            run = max(0, inp.run_before(pointer))
            if run:
                t = inp.pending[run]
                address = pointer
        inp.pointers.note(pointer == address)
        if t.skipped:
            # the event IOC writes for the last TRB of a TD that ended short (4.10.1.1)
            inp.complete_oldest(0, False, run)
            return
        if pointer != address or residual > t.length:
            residual = self._check("IN", address, pointer, residual, t.length)
        received = t.length - residual
        if code == _SUCCESS or code == _SHORT:
            end = code == _SHORT or received < t.length
            trbs, moved = inp.complete_oldest(received, end, run)
            counters.trbs_from_host += trbs + 1
            counters.bytes_from_host += moved + received
            if end:
                counters.transfers_from_host += 1
            return
        if run:
            # an error on a TRB after filled ones: hand those over first
            trbs, moved = inp.complete_filled(run)
            counters.trbs_from_host += trbs
            counters.bytes_from_host += moved
        name = code_name(code)
        counters.errors[name] += 1
        if code in RETRY_CODES:  # halted on the TRB (see the OUT ring's case)
            if code == _STALL:
                if received == 0:
                    counters.spurious_stalls += 1
                counters.bytes_from_host += received
                inp.keep_remainder(t, received)
            # Babble / Transaction / Data Buffer: the host's transfer failed (it saw the error);
            # the buffer's content is not data. Keep the TRB as it is for the next transfer.
            inp.halted = True
            return
        inp.drop_oldest()
