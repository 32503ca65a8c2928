"""Rings over allocator buffers (xHCI 1.2 section 4.9): a producer ring for transfer and command
TRBs, a consumer ring for events, and numpy views for whole-ring scans.

:class:`ProducerRing` (4.9.2): one segment of ``n`` TRBs; TRBs 0..n-2 carry work and TRB n-1 is
a Link TRB with Toggle Cycle (TC) pointing back to the segment start. ``enqueue`` writes dwords
0-2 first and dword 3 (with the Cycle bit = the Producer Cycle State) last, as one 32-bit store,
so a consumer never sees a half-written TRB with a valid cycle bit. Free slots are released when
the consumer reports completion up to a TRB address (``complete``), in ring order.

:class:`EventRing` (4.9.4): one segment plus a one-entry Event Ring Segment Table (ERST).
Consumer Cycle State (CCS) starts at 1; while the TRB at the dequeue index has C == CCS it is
consumed; on wrap CCS flips. ``dequeue_pointer`` is the device address to write to ERDP/DCERDP
(always inside the segment).

Placement (spec table 6-1): segments 64-byte aligned and never crossing a 64 KiB boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from dbc_harness.allocator.space import DmaBuffer, DmaSpace
from dbc_harness.drivers.xhci.contexts import ERST_ENTRY
from dbc_harness.drivers.xhci.errors import RingError, RingFull
from dbc_harness.drivers.xhci.layout import Layout
from dbc_harness.drivers.xhci.trb import (
    GENERIC_TRB,
    LINK,
    NO_OP,
    TRB_LAYOUTS,
    TRB_SIZE,
    TRBType,
    cycle_of,
)

__all__ = ["TRB_DTYPE", "EventRing", "ProducerRing", "cycle_bits", "find_cycle_flip", "trb_array"]

SEGMENT_ALIGN = 64
SEGMENT_BOUNDARY = 0x1_0000
MIN_EVENT_RING_TRBS = 16
MAX_SEGMENT_TRBS = 4096

#: numpy structured dtype of one TRB, derived from the common TRB layout (parameter, status,
#: dword3 = control).
TRB_DTYPE = GENERIC_TRB.numpy_dtype()
_C = GENERIC_TRB.fields["C"]
_TYPE = GENERIC_TRB.fields["trb_type"]
_CONTROL_WORD = next(name for name, off, _ in GENERIC_TRB.words if off == _C.byte_offset)
_CONTROL_DWORD_INDEX = _C.byte_offset // 4
_KNOWN_TYPES = {int(t): t for t in TRBType}


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


class ProducerRing:
    """A one-segment transfer or command ring; software produces, the controller consumes.

    ``buffer``: at least ``trbs * 16`` bytes, 64-byte aligned, not crossing 64 KiB. ``name`` is
    for messages and traces (e.g. ``"out"`` for the DbC OUT ring: target -> host data, doorbell
    target 0; ``"in"`` for the IN ring: host -> target data, doorbell target 1).
    """

    def __init__(self, buffer: DmaBuffer, trbs: int | None = None, *, name: str = "ring") -> None:
        n = trbs if trbs is not None else buffer.size // TRB_SIZE
        if not 2 <= n <= MAX_SEGMENT_TRBS:
            raise RingError(f"{name}: a ring needs 2..{MAX_SEGMENT_TRBS} TRBs, got {n}")
        _check_segment(buffer, n, name)
        self.name = name
        self.buffer = buffer
        self.trbs = n
        self.base: int = buffer.device_address
        self._view = buffer.view[: n * TRB_SIZE]
        self._dwords = np.frombuffer(self._view, dtype="<u4")
        self._owned_space: DmaSpace | None = None
        self.reset()

    @classmethod
    def allocate(cls, space: DmaSpace, trbs: int = 256, *, name: str = "ring") -> ProducerRing:
        """A ring in a fresh buffer from ``space`` (freed by :meth:`free`)."""
        if not 2 <= trbs <= MAX_SEGMENT_TRBS:
            raise RingError(f"{name}: a ring needs 2..{MAX_SEGMENT_TRBS} TRBs, got {trbs}")
        buf = space.alloc(trbs * TRB_SIZE, align=SEGMENT_ALIGN, boundary=SEGMENT_BOUNDARY)
        ring = cls(buf, trbs, name=name)
        ring._owned_space = space
        return ring

    def free(self) -> None:
        """Give the buffer back if :meth:`allocate` took it. Idempotent."""
        if self._owned_space is not None and not self.buffer.freed:
            self._dwords = np.zeros(0, dtype="<u4")
            _release(self._view)
            self._owned_space.free(self.buffer)
        self._owned_space = None

    # -- state ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Zero the segment, PCS = 1, nothing in flight, Link TRB (TC = 1, C = 0) at the end.
        Use after a disconnect, together with re-initialising the endpoint context."""
        self._view[:] = bytes(len(self._view))
        self.cycle_state = 1  # Producer Cycle State (PCS)
        self.enqueue_index = 0
        self.dequeue_index = 0  # oldest TRB in flight
        self.in_flight = 0
        self._tags: list[Any] = [None] * self.trbs
        self._write_link(cycle=0, chain=0)

    @property
    def capacity(self) -> int:
        """TRBs that can be in flight at once (the Link TRB is not one)."""
        return self.trbs - 1

    @property
    def free_slots(self) -> int:
        return self.capacity - self.in_flight

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
            return self.cycle_state
        return cycle_of(self._view, self.dequeue_index * TRB_SIZE)

    @property
    def link_address(self) -> int:
        return self.base + (self.trbs - 1) * TRB_SIZE

    def address_of(self, index: int) -> int:
        if not 0 <= index < self.trbs:
            raise RingError(f"{self.name}: TRB index {index} outside 0..{self.trbs - 1}")
        return self.base + index * TRB_SIZE

    def index_of(self, address: int) -> int:
        offset = address - self.base
        if offset < 0 or offset >= self.trbs * TRB_SIZE or offset % TRB_SIZE:
            raise RingError(f"{self.name}: 0x{address:x} is not a TRB of this ring")
        return offset // TRB_SIZE

    # -- producing -----------------------------------------------------------------------
    def enqueue(self, layout: Layout, tag: Any = None, **fields: int) -> int:
        """Write one TRB (its Cycle bit is set to PCS, any ``C`` given is ignored) and return
        its device address. ``tag`` is handed back by :meth:`complete`. RingFull when no slot
        is free."""
        if self.in_flight >= self.capacity:
            raise RingFull(f"{self.name}: all {self.capacity} TRBs are in flight")
        fields["C"] = self.cycle_state
        trb = layout.build(**fields)
        i = self.enqueue_index
        o = i * TRB_SIZE
        self._view[o : o + 12] = trb[:12]
        # dword 3 (Cycle bit) last, one aligned 32-bit store
        self._dwords[i * 4 + _CONTROL_DWORD_INDEX] = int.from_bytes(trb[12:16], "little")
        self._tags[i] = tag
        self.in_flight += 1
        i += 1
        if i == self.trbs - 1:
            # hand the Link TRB to the consumer with the current PCS, then toggle (4.11.5.1)
            self._write_link(cycle=self.cycle_state, chain=fields.get("CH", 0))
            self.cycle_state ^= 1
            i = 0
        self.enqueue_index = i
        return self.base + o

    def _write_link(self, *, cycle: int, chain: int) -> None:
        trb = LINK.build(ring_segment_pointer=self.base, TC=1, CH=chain, C=cycle)
        o = (self.trbs - 1) * TRB_SIZE
        self._view[o : o + 12] = trb[:12]
        self._dwords[(self.trbs - 1) * 4 + _CONTROL_DWORD_INDEX] = int.from_bytes(
            trb[12:16], "little"
        )

    def complete(self, trb_address: int) -> list[Any]:
        """The consumer finished every in-flight TRB up to and including ``trb_address``:
        release those slots and return their tags, oldest first. RingError when the address is
        not a TRB in flight (zero, foreign, Link TRB, already completed)."""
        i = self.index_of(trb_address)
        if i == self.trbs - 1:
            raise RingError(f"{self.name}: 0x{trb_address:x} is the Link TRB")
        distance = (i - self.dequeue_index) % self.capacity
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
            j += 1
            if j == self.capacity:
                j = 0
        self.dequeue_index = j
        self.in_flight -= distance + 1
        return released

    def in_flight_addresses(self) -> list[int]:
        """Device addresses of the TRBs in flight, oldest first."""
        out = []
        j = self.dequeue_index
        for _ in range(self.in_flight):
            out.append(self.base + j * TRB_SIZE)
            j = (j + 1) % self.capacity
        return out

    def cancel(self, trb_address: int) -> None:
        """Turn an in-flight TRB into a No Op in place (keeps its Cycle bit and slot; the
        consumer still completes it)."""
        i = self.index_of(trb_address)
        if trb_address not in self.in_flight_addresses():
            raise RingError(f"{self.name}: 0x{trb_address:x} is not in flight")
        o = i * TRB_SIZE
        old = GENERIC_TRB.parse(self._view, o)
        trb = NO_OP.build(C=old["C"])
        self._view[o : o + 12] = trb[:12]
        self._dwords[i * 4 + _CONTROL_DWORD_INDEX] = int.from_bytes(trb[12:16], "little")

    def array(self) -> np.ndarray:
        """numpy structured view of the whole segment (Link TRB included)."""
        return trb_array(self._view)

    def __repr__(self) -> str:
        return (
            f"ProducerRing({self.name!r}, 0x{self.base:x}, {self.trbs} TRBs, "
            f"enq={self.enqueue_index}, PCS={self.cycle_state}, in_flight={self.in_flight})"
        )


class EventRing:
    """A one-segment event ring with its one-entry ERST; software consumes.

    Registers to program: ERSTSZ/DCERSTSZ = :attr:`erst_size` (1), ERSTBA/DCERSTBA =
    :attr:`erst_address`, ERDP/DCERDP = :attr:`dequeue_pointer` (initially the segment start,
    and after every drain).
    """

    def __init__(self, segment: DmaBuffer, erst: DmaBuffer, trbs: int | None = None) -> None:
        n = trbs if trbs is not None else segment.size // TRB_SIZE
        if not MIN_EVENT_RING_TRBS <= n <= MAX_SEGMENT_TRBS:
            raise RingError(
                f"event ring segment size {n} outside {MIN_EVENT_RING_TRBS}..{MAX_SEGMENT_TRBS}"
            )
        _check_segment(segment, n, "event ring")
        if erst.size < ERST_ENTRY.size or erst.device_address % SEGMENT_ALIGN:
            raise RingError("ERST buffer must be >= 16 bytes and 64-byte aligned")
        self.segment = segment
        self.erst = erst
        self.trbs = n
        self.base: int = segment.device_address
        self.erst_address: int = erst.device_address
        self.erst_size = 1
        self._view = segment.view[: n * TRB_SIZE]
        self._array = trb_array(self._view)
        self._owned_space: DmaSpace | None = None
        self.reset()

    @classmethod
    def allocate(cls, space: DmaSpace, trbs: int = 256) -> EventRing:
        """Segment and ERST in fresh buffers from ``space`` (freed by :meth:`free`)."""
        if not MIN_EVENT_RING_TRBS <= trbs <= MAX_SEGMENT_TRBS:
            raise RingError(f"event ring segment size {trbs} outside 16..4096")
        seg = space.alloc(trbs * TRB_SIZE, align=SEGMENT_ALIGN, boundary=SEGMENT_BOUNDARY)
        try:
            erst = space.alloc(SEGMENT_ALIGN, align=SEGMENT_ALIGN, boundary=SEGMENT_BOUNDARY)
        except BaseException:
            space.free(seg)
            raise
        ring = cls(seg, erst, trbs)
        ring._owned_space = space
        return ring

    def free(self) -> None:
        """Give both buffers back if :meth:`allocate` took them. Idempotent."""
        if self._owned_space is not None:
            self._array = np.zeros(0, dtype=TRB_DTYPE)
            _release(self._view)
            for buf in (self.segment, self.erst):
                if not buf.freed:
                    self._owned_space.free(buf)
        self._owned_space = None

    def reset(self) -> None:
        """Zero the segment, write the ERST entry, CCS = 1, dequeue at the segment start."""
        self._view[:] = bytes(len(self._view))
        ERST_ENTRY.pack_into(
            self.erst.view, 0, ring_segment_base_address=self.base, ring_segment_size=self.trbs
        )
        self.cycle_state = 1  # Consumer Cycle State (CCS)
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

    def ready(self) -> bool:
        """True when the TRB at the dequeue index belongs to software (C == CCS)."""
        control = int(self._array[_CONTROL_WORD][self.dequeue_index])
        return ((control >> _C.shift) & 1) == self.cycle_state

    def pop(self) -> tuple[int, TRBType | int, dict[str, int]] | None:
        """Consume one event: ``(address, TRB Type, fields)``, or None when none is ready."""
        i = self.dequeue_index
        control = int(self._array[_CONTROL_WORD][i])
        if ((control >> _C.shift) & 1) != self.cycle_state:
            return None
        o = i * TRB_SIZE
        trb_type = (control >> _TYPE.shift) & ((1 << _TYPE.width) - 1)
        layout = TRB_LAYOUTS.get(trb_type, GENERIC_TRB)
        fields = layout.parse(self._view, o)
        i += 1
        if i == self.trbs:
            i = 0
            self.cycle_state ^= 1
        self.dequeue_index = i
        return self.base + o, _KNOWN_TYPES.get(trb_type, trb_type), fields

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

    def pending(self) -> int:
        """How many events are ready, by a vectorised scan (no consumption)."""
        flip = find_cycle_flip(self._array, self.cycle_state, self.dequeue_index)
        if flip is not None:
            return flip - self.dequeue_index
        head = self.trbs - self.dequeue_index
        wrapped = find_cycle_flip(self._array[: self.dequeue_index], self.cycle_state ^ 1)
        return head + (self.dequeue_index if wrapped is None else wrapped)

    def __iter__(self) -> Iterator[tuple[int, TRBType | int, dict[str, int]]]:
        return iter(self.drain())

    def array(self) -> np.ndarray:
        return self._array

    def __repr__(self) -> str:
        return (
            f"EventRing(0x{self.base:x}, {self.trbs} TRBs, deq={self.dequeue_index}, "
            f"CCS={self.cycle_state})"
        )
