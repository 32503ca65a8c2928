"""DbC ring memory: one-segment transfer rings (producer side) and the event ring (consumer side).

Layouts come from :mod:`drivers.xhci.trb`; this module only keeps indices and cycle states:

* :class:`TransferRing`: ``trbs`` slots, the last one a Link TRB with Toggle Cycle pointing back
  to the start. Every TRB is written with its Cycle bit last (dwords 0-2, then dword 3), so the
  controller never sees half a TRB. ``in_flight`` counts slots handed to the controller and not
  yet released by a completion; at most ``trbs - 2`` are (one transfer slot always stays free,
  see :attr:`TransferRing.max_in_flight`).
* :class:`EventRing`: one segment plus its one-entry Event Ring Segment Table (ERST). The
  consumer cycle state starts at 1; :meth:`EventRing.pending` tells whether the TRB at the
  dequeue index belongs to software.
"""

from __future__ import annotations

from dbc_harness.allocator import DmaBuffer, DmaError, DmaSpace
from dbc_harness.drivers.dbc.errors import DbcConfigError, DbcDmaError
from dbc_harness.drivers.xhci import trb
from dbc_harness.drivers.xhci.contexts import ERST_ENTRY

TRB_SIZE = trb.TRB_SIZE
#: spec table 6-1: ring segments 64-byte aligned and never crossing a 64 KiB boundary
SEGMENT_ALIGN = 64
SEGMENT_BOUNDARY = 0x10000
MIN_RING_TRBS = 16
MAX_RING_TRBS = 4096


def _alloc(dma: DmaSpace, size: int, align: int, boundary: int, limit: int | None) -> DmaBuffer:
    try:
        return dma.alloc(size, align=align, boundary=boundary, limit=limit)
    except DmaError as exc:
        raise DbcDmaError(f"cannot allocate {size} bytes of DMA memory: {exc}") from exc


def _normal_trb(address: int, length: int, chain: bool, isp: bool, cycle: int) -> bytes:
    """The Normal TRB every transfer of ours uses (IOC always set: one event per TRB)."""
    return trb.NORMAL.build(
        data_buffer_pointer=address,
        trb_transfer_length=length,
        CH=int(chain),
        ISP=int(isp),
        IOC=1,
        C=cycle,
    )


def check_ring_size(trbs: int, what: str) -> None:
    if not isinstance(trbs, int) or not MIN_RING_TRBS <= trbs <= MAX_RING_TRBS:
        raise DbcConfigError(
            f"{what} must be {MIN_RING_TRBS}..{MAX_RING_TRBS} TRBs (one segment), got {trbs!r}"
        )


class TransferRing:
    """Producer side of a one-segment transfer ring (the DbC's OUT or IN ring)."""

    def __init__(self, dma: DmaSpace, trbs: int, *, limit: int | None, name: str) -> None:
        check_ring_size(trbs, f"{name} ring size")
        self.name = name
        self.trbs = trbs
        self.buffer = _alloc(dma, trbs * TRB_SIZE, SEGMENT_ALIGN, SEGMENT_BOUNDARY, limit)
        self.base = self.buffer.device_address
        self.view = self.buffer.view
        #: TRB slots usable for transfers (all but the Link TRB)
        self.capacity = trbs - 1
        #: TRBs handed over at once: one slot always stays free ("a ring is full when enqueue
        #: + 1 == dequeue"). With every slot in flight, the completion of the TRB before the
        #: Link TRB lets the next lap's TRB and the Link's new Cycle bit be written before the
        #: controller has followed the Link (it may be parked there, e.g. on a full event ring):
        #: it then sees the next lap's Cycle bit, takes the ring for empty and never moves again.
        #: With one slot free, the Link is only rewritten after a completion from the next lap,
        #: i.e. after the controller passed it.
        self.max_in_flight = trbs - 2
        self.enqueue_index = 0
        #: Producer Cycle State: the Cycle bit value that hands a TRB to the controller
        self.pcs = 1
        self.in_flight = 0
        self.reset()

    # -- set-up ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty ring: zeroed TRBs, the Link TRB (Toggle Cycle) at the end, PCS = 1."""
        self.view[:] = bytes(len(self.view))
        self.enqueue_index = 0
        self.pcs = 1
        self.in_flight = 0
        self._write_link(cycle=0, chain=0)

    def _write_link(self, *, cycle: int, chain: int) -> None:
        raw = trb.LINK.build(ring_segment_pointer=self.base, TC=1, CH=chain, C=cycle)
        self._store(self.capacity, raw)

    def _store(self, index: int, raw: bytes) -> None:
        """Write one TRB: dwords 0-2 first, then dword 3 (which holds the Cycle bit)."""
        off = index * TRB_SIZE
        cut = trb.CYCLE_DWORD_OFFSET
        self.view[off : off + cut] = raw[:cut]
        self.view[off + cut : off + TRB_SIZE] = raw[cut:]

    # -- producer --------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return self.max_in_flight - self.in_flight

    @property
    def dequeue_pointer(self) -> int:
        """TR Dequeue Pointer for the endpoint context of an empty ring (the enqueue point)."""
        return self.base + self.enqueue_index * TRB_SIZE

    def enqueue_normal(
        self, address: int, length: int, *, chain: bool, isp: bool = False
    ) -> tuple[int, int]:
        """Queue one Normal TRB (IOC set) handing it to the controller.

        Returns (slot index, Cycle bit it was written with). The caller checked ``free_slots``.
        """
        slot = index = self.enqueue_index
        cycle = self.pcs
        self._store(index, _normal_trb(address, length, chain, isp, cycle))
        self.in_flight += 1
        index += 1
        if index == self.capacity:
            # Hand the Link TRB over too (CH follows the TD so a chain may cross it).
            self._write_link(cycle=cycle, chain=int(chain))
            self.pcs ^= 1
            index = 0
        self.enqueue_index = index
        return slot, cycle

    def rewrite_normal(
        self, index: int, cycle: int, address: int, length: int, *, chain: bool, isp: bool
    ) -> None:
        """Rewrite a Normal TRB the controller halted on (e.g. to the part not yet moved)."""
        self._store(index, _normal_trb(address, length, chain, isp, cycle))

    def cancel(self, index: int, cycle: int) -> None:
        """Turn a queued TRB into a No Op (IOC set so its slot is still released in order)."""
        self._store(index, trb.NO_OP.build(IOC=1, C=cycle))

    def release(self, count: int = 1) -> None:
        self.in_flight -= count
        if self.in_flight < 0:  # pragma: no cover - bookkeeping bug guard
            self.in_flight = 0

    # -- addresses -------------------------------------------------------------------------
    def address_of(self, index: int) -> int:
        return self.base + index * TRB_SIZE

    def index_of(self, address: int) -> int | None:
        """Slot index of a TRB address inside this ring (never the Link TRB), else None."""
        offset = address - self.base
        if offset < 0 or offset % TRB_SIZE or offset >= self.capacity * TRB_SIZE:
            return None
        return offset // TRB_SIZE

    def free(self, dma: DmaSpace) -> None:
        if not self.buffer.freed:
            dma.free(self.buffer)


class EventRing:
    """Consumer side of the DbC event ring: one segment and its ERST."""

    def __init__(self, dma: DmaSpace, trbs: int, *, limit: int | None) -> None:
        check_ring_size(trbs, "event ring size")
        self.trbs = trbs
        self.segment = _alloc(dma, trbs * TRB_SIZE, SEGMENT_ALIGN, SEGMENT_BOUNDARY, limit)
        self.erst = _alloc(dma, ERST_ENTRY.size, 64, 4096, limit)
        self.base = self.segment.device_address
        self.view = self.segment.view
        self.dequeue_index = 0
        #: Consumer Cycle State
        self.ccs = 1
        self.reset()

    def reset(self) -> None:
        """Zero the segment (every TRB owned by the producer), CCS = 1, dequeue at the start,
        and (re)write the ERST entry."""
        self.view[:] = bytes(len(self.view))
        self.dequeue_index = 0
        self.ccs = 1
        ERST_ENTRY.pack_into(
            self.erst.view, 0, ring_segment_base_address=self.base, ring_segment_size=self.trbs
        )

    @property
    def erst_address(self) -> int:
        return self.erst.device_address

    @property
    def dequeue_pointer(self) -> int:
        """The address DCERDP must hold: the next TRB software will read."""
        return self.base + self.dequeue_index * TRB_SIZE

    def pending(self) -> bool:
        """True when the TRB at the dequeue index is software's (Cycle == CCS)."""
        return trb.cycle_of(self.view, self.dequeue_index * TRB_SIZE) == self.ccs

    def offset(self) -> int:
        return self.dequeue_index * TRB_SIZE

    def advance(self) -> None:
        index = self.dequeue_index + 1
        if index == self.trbs:
            index = 0
            self.ccs ^= 1
        self.dequeue_index = index

    def free(self, dma: DmaSpace) -> None:
        for buf in (self.segment, self.erst):
            if not buf.freed:
                dma.free(buf)
