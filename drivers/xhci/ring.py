"""The one producer ring and the one event-ring consumer (xHCI 1.2 section 4.9), over allocator
buffers, plus numpy views for whole-ring scans. Used by the DbC driver (its OUT/IN transfer rings
and event ring), the generic host path (command ring, interrupter 0's event ring) and the minimal
register-level DbC producer of the virtual bench.

:class:`ProducerRing` (4.9.2): one segment of ``trbs`` TRBs; TRBs 0..trbs-2 carry work and TRB
trbs-1 is a Link TRB with Toggle Cycle (TC) pointing back to the segment start. Every TRB is
written dwords 0-2 first and dword 3 (with the Cycle bit = the Producer Cycle State, PCS) last,
so a consumer never sees a half-written TRB with a valid Cycle bit. Passing the Link TRB hands it
to the consumer with the current PCS (CH following the TD, 4.11.5.1) and toggles PCS.

At most ``trbs - 2`` TRBs are in flight (:attr:`ProducerRing.max_in_flight`): one transfer slot
always stays free. With every slot in flight, the completion of the TRB before the Link TRB
would let the next lap's TRB and the Link's new Cycle bit be written before the controller has
followed the Link (it may be parked there, e.g. on a full event ring): it then sees the next
lap's Cycle bit, takes the ring for empty and never moves again. With one slot free, the Link is
only rewritten after a completion from the next lap, i.e. after the controller passed it.

Three ways to produce, one ring:

* ``enqueue(layout, tag=, **fields) -> address`` and ``complete(address) -> [tags]``: generic
  (command rings, tests); ``RingFull`` when no slot is free.
* ``enqueue_normal(address, length, chain=, isp=, ioc=) -> (index, cycle)`` and ``release(count)``:
  the DbC data path's Normal TRBs (IOC set unless the caller moderates completions: TRBs
  complete in ring order, so one event can stand for the TRBs before it); the caller checked
  :attr:`free_slots`.
* ``put(raw) -> address``: a prebuilt TRB, no accounting (a producer that tracks completions
  itself, or a test that writes what a driver never would).

:class:`EventRing` (4.9.4): one segment plus a one-entry Event Ring Segment Table (ERST).
Consumer Cycle State (CCS) starts at 1; while the TRB at the dequeue index has C == CCS it is
software's; on wrap CCS flips. :attr:`EventRing.dequeue_pointer` is the value for ERDP/DCERDP.

Placement (spec table 6-1): segments 64-byte aligned and never crossing a 64 KiB boundary.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
from dbc_harness.allocator.space import DmaBuffer, DmaSpace
from dbc_harness.drivers.xhci.contexts import ERST_ENTRY
from dbc_harness.drivers.xhci.errors import RingError, RingFull
from dbc_harness.drivers.xhci.layout import Layout
from dbc_harness.drivers.xhci.trb import (
    CYCLE_DWORD_OFFSET,
    CYCLE_MASK,
    GENERIC_TRB,
    LINK,
    NO_OP,
    NORMAL,
    TRB_SIZE,
    TRBType,
    cycle_of,
    decode_trb,
)

__all__ = [
    "MAX_SEGMENT_TRBS",
    "MIN_EVENT_RING_TRBS",
    "MIN_PRODUCER_RING_TRBS",
    "SEGMENT_ALIGN",
    "SEGMENT_BOUNDARY",
    "TRB_DTYPE",
    "EventRing",
    "ProducerRing",
    "cycle_bits",
    "find_cycle_flip",
    "trb_array",
]

#: spec table 6-1: ring segments 64-byte aligned and never crossing a 64 KiB boundary
SEGMENT_ALIGN = 64
SEGMENT_BOUNDARY = 0x1_0000
#: one work TRB in flight needs a Link TRB and the one slot that always stays free
MIN_PRODUCER_RING_TRBS = 3
#: spec table 6-1: Event Ring Segment Size 16..4096
MIN_EVENT_RING_TRBS = 16
MAX_SEGMENT_TRBS = 4096

#: numpy structured dtype of one TRB, derived from the common TRB layout (parameter, status,
#: dword3 = control).
TRB_DTYPE = GENERIC_TRB.numpy_dtype()
_C = GENERIC_TRB.fields["C"]
_CONTROL_WORD = next(name for name, off, _ in GENERIC_TRB.words if off == _C.byte_offset)
_CUT = CYCLE_DWORD_OFFSET
_U32 = struct.Struct("<I")
#: the Chain bit (CH) and Interrupt On Completion (IOC) in dword 3 of a transfer TRB (6.4.1.1)
_CH_MASK = 1 << NORMAL.fields["CH"].dword_shift
_IOC_SHIFT = NORMAL.fields["IOC"].dword_shift


def trb_array(view: memoryview | bytearray | bytes | np.ndarray) -> np.ndarray:
    """A zero-copy numpy structured view (``TRB_DTYPE``) of a ring's memory."""
    return np.frombuffer(view, dtype=TRB_DTYPE)


def cycle_bits(trbs: np.ndarray) -> np.ndarray:
    """The Cycle bit of every TRB of a :func:`trb_array` view, as uint32 0/1."""
    control: np.ndarray = trbs[_CONTROL_WORD]
    return (control >> _C.shift) & 1


def find_cycle_flip(trbs: np.ndarray, cycle: int, start: int = 0) -> int | None:
    """Index of the first TRB at or after ``start`` whose Cycle bit differs from ``cycle`` (for
    a consumer with CCS = ``cycle``: the first TRB not yet written), None if there is none."""
    control: np.ndarray = trbs[_CONTROL_WORD][start:]
    if control.size == 0:
        return None
    mismatch = ((control & _C.mask) != 0) != bool(cycle)
    i = int(mismatch.argmax())
    if not mismatch[i]:
        return None
    return start + i


def _release(view: memoryview) -> None:
    try:
        view.release()
    except BufferError:
        pass  # a caller still holds an array() view; the memory goes when it lets go


def _check_segment(buf: DmaBuffer, trbs: int, what: str) -> None:
    if buf.size < trbs * TRB_SIZE:
        raise RingError(f"{what}: buffer of {buf.size} bytes cannot hold {trbs} TRBs")
    if buf.device_address % SEGMENT_ALIGN:
        raise RingError(f"{what}: segment 0x{buf.device_address:x} is not 64-byte aligned")
    end = buf.device_address + trbs * TRB_SIZE - 1
    if buf.device_address // SEGMENT_BOUNDARY != end // SEGMENT_BOUNDARY:
        raise RingError(f"{what}: segment 0x{buf.device_address:x}..0x{end:x} crosses 64 KiB")


def _check_producer_size(trbs: int, what: str) -> None:
    if not MIN_PRODUCER_RING_TRBS <= trbs <= MAX_SEGMENT_TRBS:
        raise RingError(
            f"{what}: a ring needs {MIN_PRODUCER_RING_TRBS}..{MAX_SEGMENT_TRBS} TRBs, got {trbs}"
        )


def _check_event_size(trbs: int) -> None:
    if not MIN_EVENT_RING_TRBS <= trbs <= MAX_SEGMENT_TRBS:
        raise RingError(
            f"event ring segment size {trbs} outside {MIN_EVENT_RING_TRBS}..{MAX_SEGMENT_TRBS}"
        )


class ProducerRing:
    """A one-segment transfer or command ring; software produces, the controller consumes.

    ``buffer``: at least ``trbs * 16`` bytes, 64-byte aligned, not crossing 64 KiB. ``name`` is
    for messages and traces (e.g. ``"OUT"`` for the DbC OUT ring: target -> host data, doorbell
    target 0; ``"IN"`` for the IN ring: host -> target data, doorbell target 1).
    """

    def __init__(self, buffer: DmaBuffer, trbs: int | None = None, *, name: str = "ring") -> None:
        n = trbs if trbs is not None else buffer.size // TRB_SIZE
        _check_producer_size(n, name)
        _check_segment(buffer, n, name)
        self.name = name
        self.buffer = buffer
        self.trbs = n
        self.base: int = buffer.device_address
        #: the segment's memory (zero-copy)
        self.view = buffer.view[: n * TRB_SIZE]
        #: TRB slots usable for work (all but the Link TRB); also the Link TRB's index
        self.slots = n - 1
        #: TRBs handed over at once: one slot always stays free (module docstring)
        self.max_in_flight = n - 2
        self._owned_space: DmaSpace | None = None
        self.reset()

    @classmethod
    def allocate(
        cls, space: DmaSpace, trbs: int = 256, *, name: str = "ring", limit: int | None = None
    ) -> ProducerRing:
        """A ring in a fresh buffer from ``space`` (below ``limit`` if given; freed by
        :meth:`free`). The allocator's DmaError passes through."""
        _check_producer_size(trbs, name)
        buf = space.alloc(
            trbs * TRB_SIZE, align=SEGMENT_ALIGN, boundary=SEGMENT_BOUNDARY, limit=limit
        )
        ring = cls(buf, trbs, name=name)
        ring._owned_space = space
        return ring

    def free(self) -> None:
        """Give the buffer back if :meth:`allocate` took it. Idempotent."""
        if self._owned_space is not None and not self.buffer.freed:
            _release(self.view)
            self._owned_space.free(self.buffer)
        self._owned_space = None

    # -- state ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Zero the segment, PCS = 1, nothing in flight, Link TRB (TC = 1, C = 0) at the end.
        Use after a disconnect, together with re-initialising the endpoint context."""
        self.view[:] = bytes(len(self.view))
        #: Producer Cycle State: the Cycle bit value that hands a TRB to the controller
        self.pcs = 1
        self.enqueue_index = 0
        #: oldest TRB in flight
        self.dequeue_index = 0
        self.in_flight = 0
        self._tags: list[Any] = [None] * self.trbs
        self._store(self.slots, LINK.build(ring_segment_pointer=self.base, TC=1, CH=0, C=0))

    def _store(self, index: int, raw: bytes) -> None:
        """Write one TRB: dwords 0-2 first, then dword 3 (which holds the Cycle bit)."""
        off = index * TRB_SIZE
        self.view[off : off + _CUT] = raw[:_CUT]
        self.view[off + _CUT : off + TRB_SIZE] = raw[_CUT:TRB_SIZE]

    def _hand_over_link(self, chain: int) -> None:
        """The enqueue index reached the Link TRB: give it to the consumer with the current PCS
        and CH following the TD (4.11.5.1; its other fields stay as written), toggle PCS."""
        off = self.slots * TRB_SIZE + _CUT
        control = int.from_bytes(self.view[off : off + 4], "little")
        control = (control & ~(CYCLE_MASK | _CH_MASK)) | (_CH_MASK if chain else 0) | self.pcs
        self.view[off : off + 4] = control.to_bytes(4, "little")
        self.pcs ^= 1
        self.enqueue_index = 0

    @property
    def free_slots(self) -> int:
        return self.max_in_flight - self.in_flight

    @property
    def enqueue_pointer(self) -> int:
        """Device address of the next TRB to be written."""
        return self.base + self.enqueue_index * TRB_SIZE

    @property
    def dequeue_pointer(self) -> int:
        """Device address of the oldest TRB in flight (the enqueue pointer when none is): what
        an endpoint context's TR Dequeue Pointer should hold, with DCS = the cycle bit of that
        TRB (:attr:`dequeue_cycle_state`)."""
        return self.base + self.dequeue_index * TRB_SIZE

    @property
    def dequeue_cycle_state(self) -> int:
        """Cycle state the consumer needs at :attr:`dequeue_pointer` (DCS)."""
        if self.in_flight == 0:
            return self.pcs
        return cycle_of(self.view, self.dequeue_index * TRB_SIZE)

    @property
    def link_address(self) -> int:
        return self.base + self.slots * TRB_SIZE

    def address_of(self, index: int) -> int:
        return self.base + index * TRB_SIZE

    def index_of(self, address: int) -> int | None:
        """Slot index of a work TRB of this ring (never the Link TRB), else None."""
        offset = address - self.base
        if offset < 0 or offset % TRB_SIZE or offset >= self.slots * TRB_SIZE:
            return None
        return offset // TRB_SIZE

    # -- producing -----------------------------------------------------------------------
    def put(self, raw: bytes) -> int:
        """Write one prebuilt TRB with its Cycle bit replaced by PCS (the consumer owns it from
        then on) and return its device address. No accounting: :attr:`in_flight` is left alone
        and nothing stops the producer from overrunning the consumer."""
        i = self.enqueue_index
        off = i * TRB_SIZE
        control = (int.from_bytes(raw[_CUT:TRB_SIZE], "little") & ~CYCLE_MASK) | self.pcs
        self.view[off : off + _CUT] = raw[:_CUT]
        self.view[off + _CUT : off + TRB_SIZE] = control.to_bytes(4, "little")
        if i + 1 == self.slots:
            self._hand_over_link(control & _CH_MASK)
        else:
            self.enqueue_index = i + 1
        return self.base + off

    def enqueue(self, layout: Layout, tag: Any = None, **fields: int) -> int:
        """Write one TRB (its Cycle bit is set to PCS, any ``C`` given is ignored) and return
        its device address. ``tag`` is handed back by :meth:`complete`. RingFull when no slot
        is free."""
        if self.in_flight >= self.max_in_flight:
            raise RingFull(f"{self.name}: all {self.max_in_flight} TRBs are in flight")
        fields["C"] = self.pcs
        i = self.enqueue_index
        self._store(i, layout.build(**fields))
        self._tags[i] = tag
        self.in_flight += 1
        if i + 1 == self.slots:
            self._hand_over_link(fields.get("CH", 0))
        else:
            self.enqueue_index = i + 1
        return self.base + i * TRB_SIZE

    def enqueue_normal(
        self, address: int, length: int, *, chain: bool, isp: bool = False, ioc: bool = True
    ) -> tuple[int, int]:
        """Queue one Normal TRB (IOC set unless ``ioc=False``: then its completion writes no
        event unless it ends short or in error, 6.4.1.1), handing it to the controller.
        Returns (slot index, Cycle bit it was written with); release it with :meth:`release`.
        The caller checked :attr:`free_slots`."""
        index = self.enqueue_index
        cycle = self.pcs
        head, control = _normal_trb_c0(address, length, chain, isp, ioc)
        # dwords 0-2 first, then dword 3 with the Cycle bit
        off = index * TRB_SIZE
        self.view[off : off + _CUT] = head
        _U32.pack_into(self.view, off + _CUT, control | cycle)
        self.in_flight += 1
        if index + 1 == self.slots:
            self._hand_over_link(chain)
        else:
            self.enqueue_index = index + 1
        return index, cycle

    def rewrite_normal(
        self,
        index: int,
        cycle: int,
        address: int,
        length: int,
        *,
        chain: bool,
        isp: bool,
        ioc: bool = True,
    ) -> None:
        """Rewrite a Normal TRB the controller halted on (e.g. to the part not yet moved)."""
        self._store(index, _normal_trb(address, length, chain, isp, cycle, ioc))

    def cancel(self, address: int) -> None:
        """Turn an in-flight TRB into a No Op in place, keeping its Cycle bit and IOC (the
        consumer still completes it, in order). RingError when it is not in flight."""
        i = self.index_of(address)
        if i is None or (i - self.dequeue_index) % self.slots >= self.in_flight:
            raise RingError(f"{self.name}: 0x{address:x} is not in flight")
        off = i * TRB_SIZE + _CUT
        control = int.from_bytes(self.view[off : off + 4], "little")
        self._store(i, NO_OP.build(IOC=(control >> _IOC_SHIFT) & 1, C=control & CYCLE_MASK))

    # -- completing ----------------------------------------------------------------------
    def release(self, count: int = 1) -> None:
        """The ``count`` oldest TRBs in flight completed (in ring order)."""
        if count > self.in_flight:  # pragma: no cover - bookkeeping bug guard
            count = self.in_flight
        self.in_flight -= count
        self.dequeue_index = (self.dequeue_index + count) % self.slots

    def complete(self, trb_address: int) -> list[Any]:
        """The consumer finished every in-flight TRB up to and including ``trb_address``:
        release those slots and return their tags, oldest first. RingError when the address is
        not a TRB in flight (zero, foreign, Link TRB, already completed)."""
        i = self.index_of(trb_address)
        if i is None:
            if trb_address == self.link_address:
                raise RingError(f"{self.name}: 0x{trb_address:x} is the Link TRB")
            raise RingError(f"{self.name}: 0x{trb_address:x} is not a TRB of this ring")
        distance = (i - self.dequeue_index) % self.slots
        if distance >= self.in_flight:
            raise RingError(
                f"{self.name}: 0x{trb_address:x} is not in flight "
                f"({self.in_flight} TRBs from index {self.dequeue_index})"
            )
        released: list[Any] = []
        j = self.dequeue_index
        for _ in range(distance + 1):
            released.append(self._tags[j])
            self._tags[j] = None
            j = j + 1 if j + 1 < self.slots else 0
        self.dequeue_index = j
        self.in_flight -= distance + 1
        return released

    def in_flight_addresses(self) -> list[int]:
        """Device addresses of the TRBs in flight, oldest first."""
        j = self.dequeue_index
        return [self.base + ((j + k) % self.slots) * TRB_SIZE for k in range(self.in_flight)]

    def array(self) -> np.ndarray:
        """numpy structured view of the whole segment (Link TRB included)."""
        return trb_array(self.view)

    def __repr__(self) -> str:
        return (
            f"ProducerRing({self.name!r}, 0x{self.base:x}, {self.trbs} TRBs, "
            f"enq={self.enqueue_index}, PCS={self.pcs}, in_flight={self.in_flight})"
        )


def _normal_trb(
    address: int, length: int, chain: bool, isp: bool, cycle: int, ioc: bool = True
) -> bytes:
    """The Normal TRB of the DbC data path."""
    return NORMAL.build(
        data_buffer_pointer=address,
        trb_transfer_length=length,
        CH=int(chain),
        ISP=int(isp),
        IOC=int(ioc),
        C=cycle,
    )


#: Normal TRBs the data path built before, by (address, length, chain, isp, ioc), with C = 0:
#: receive buffers and DMA blocks are reused, so the same few hundred TRBs recur; the Cycle
#: bit is set when the TRB is stored. Bounded: cleared when it holds _NORMAL_CACHE_MAX.
_normal_cache: dict[tuple[int, int, bool, bool, bool], tuple[bytes, int]] = {}
_NORMAL_CACHE_MAX = 8192


def _normal_trb_c0(
    address: int, length: int, chain: bool, isp: bool, ioc: bool = True
) -> tuple[bytes, int]:
    """(dwords 0-2, dword 3 with C = 0) of that Normal TRB."""
    key = (address, length, chain, isp, ioc)
    hit = _normal_cache.get(key)
    if hit is None:
        if len(_normal_cache) >= _NORMAL_CACHE_MAX:
            _normal_cache.clear()
        raw = _normal_trb(address, length, chain, isp, 0, ioc)
        hit = _normal_cache[key] = (raw[:_CUT], _U32.unpack_from(raw, _CUT)[0])
    return hit


class EventRing:
    """A one-segment event ring with its one-entry ERST; software consumes.

    Registers to program: ERSTSZ/DCERSTSZ = :attr:`erst_size` (1), ERSTBA/DCERSTBA =
    :attr:`erst_address`, ERDP/DCERDP = :attr:`dequeue_pointer` (initially the segment start,
    and after every drain).

    Two ways to consume: ``pop()``/``drain()`` decode each event; the DbC's event handler reads
    the TRB at :meth:`offset` itself while :meth:`ready`, then :meth:`advance`.
    """

    def __init__(self, segment: DmaBuffer, erst: DmaBuffer, trbs: int | None = None) -> None:
        n = trbs if trbs is not None else segment.size // TRB_SIZE
        _check_event_size(n)
        _check_segment(segment, n, "event ring")
        if erst.size < ERST_ENTRY.size or erst.device_address % SEGMENT_ALIGN:
            raise RingError("ERST buffer must be >= 16 bytes and 64-byte aligned")
        self.segment = segment
        self.erst = erst
        self.trbs = n
        self.base: int = segment.device_address
        self.erst_address: int = erst.device_address
        self.erst_size = 1
        #: the segment's memory (zero-copy)
        self.view = segment.view[: n * TRB_SIZE]
        self._owned_space: DmaSpace | None = None
        self.reset()

    @classmethod
    def allocate(cls, space: DmaSpace, trbs: int = 256, *, limit: int | None = None) -> EventRing:
        """Segment and ERST in fresh buffers from ``space`` (below ``limit`` if given; freed by
        :meth:`free`). The allocator's DmaError passes through."""
        _check_event_size(trbs)
        seg = space.alloc(
            trbs * TRB_SIZE, align=SEGMENT_ALIGN, boundary=SEGMENT_BOUNDARY, limit=limit
        )
        try:
            erst = space.alloc(
                SEGMENT_ALIGN, align=SEGMENT_ALIGN, boundary=SEGMENT_BOUNDARY, limit=limit
            )
        except BaseException:
            space.free(seg)
            raise
        ring = cls(seg, erst, trbs)
        ring._owned_space = space
        return ring

    def free(self) -> None:
        """Give both buffers back if :meth:`allocate` took them. Idempotent."""
        if self._owned_space is not None:
            _release(self.view)
            for buf in (self.segment, self.erst):
                if not buf.freed:
                    self._owned_space.free(buf)
        self._owned_space = None

    def reset(self) -> None:
        """Zero the segment (every TRB owned by the producer), write the ERST entry, CCS = 1,
        dequeue at the segment start."""
        self.view[:] = bytes(len(self.view))
        ERST_ENTRY.pack_into(
            self.erst.view, 0, ring_segment_base_address=self.base, ring_segment_size=self.trbs
        )
        #: Consumer Cycle State
        self.ccs = 1
        self.dequeue_index = 0

    @property
    def dequeue_pointer(self) -> int:
        """Device address of the next unread event TRB (the value for ERDP/DCERDP)."""
        return self.base + self.dequeue_index * TRB_SIZE

    def address_of(self, index: int) -> int:
        if not 0 <= index < self.trbs:
            raise RingError(f"event TRB index {index} outside 0..{self.trbs - 1}")
        return self.base + index * TRB_SIZE

    def index_of(self, address: int) -> int:
        offset = address - self.base
        if offset < 0 or offset >= self.trbs * TRB_SIZE or offset % TRB_SIZE:
            raise RingError(f"0x{address:x} is not a TRB of this event ring")
        return offset // TRB_SIZE

    # -- consuming -----------------------------------------------------------------------
    def ready(self) -> bool:
        """True when the TRB at the dequeue index belongs to software (C == CCS)."""
        return cycle_of(self.view, self.dequeue_index * TRB_SIZE) == self.ccs

    def offset(self) -> int:
        """Byte offset in :attr:`view` of the TRB at the dequeue index."""
        return self.dequeue_index * TRB_SIZE

    def advance(self) -> None:
        """Consume the TRB at the dequeue index (CCS flips on wrap)."""
        index = self.dequeue_index + 1
        if index == self.trbs:
            index = 0
            self.ccs ^= 1
        self.dequeue_index = index

    def pop(self) -> tuple[int, TRBType | int, dict[str, int]] | None:
        """Consume one event: ``(address, TRB Type, fields)``, or None when none is ready."""
        if not self.ready():
            return None
        o = self.dequeue_index * TRB_SIZE
        trb_type, fields = decode_trb(self.view, o)
        self.advance()
        return self.base + o, trb_type, fields

    def drain(self, limit: int | None = None) -> list[tuple[int, TRBType | int, dict[str, int]]]:
        """Consume every ready event (at most ``limit``; at most one ring's worth)."""
        out: list[tuple[int, TRBType | int, dict[str, int]]] = []
        bound = self.trbs if limit is None else min(limit, self.trbs)
        while len(out) < bound:
            ev = self.pop()
            if ev is None:
                break
            out.append(ev)
        return out

    def discard(self) -> int:
        """Consume every ready event without decoding it (at most one ring's worth); returns
        how many."""
        view, index, ccs, trbs = self.view, self.dequeue_index, self.ccs, self.trbs
        n = 0
        while n < trbs and cycle_of(view, index * TRB_SIZE) == ccs:
            n += 1
            index += 1
            if index == trbs:
                index = 0
                ccs ^= 1
        self.dequeue_index, self.ccs = index, ccs
        return n

    def pending(self) -> int:
        """How many events are ready, by a vectorised scan (no consumption)."""
        arr = self.array()
        flip = find_cycle_flip(arr, self.ccs, self.dequeue_index)
        if flip is not None:
            return flip - self.dequeue_index
        head = self.trbs - self.dequeue_index
        wrapped = find_cycle_flip(arr[: self.dequeue_index], self.ccs ^ 1)
        return head + (self.dequeue_index if wrapped is None else wrapped)

    def __iter__(self) -> Iterator[tuple[int, TRBType | int, dict[str, int]]]:
        return iter(self.drain())

    def array(self) -> np.ndarray:
        """numpy structured view of the segment."""
        return trb_array(self.view)

    def __repr__(self) -> str:
        return (
            f"EventRing(0x{self.base:x}, {self.trbs} TRBs, deq={self.dequeue_index}, "
            f"CCS={self.ccs})"
        )
