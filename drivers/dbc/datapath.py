"""Transfer bookkeeping for both DbC pipes: DMA buffers, TRBs in flight, ordering, back-pressure.

Directions are named from both sides to avoid guessing (xHCI 1.2 section 7.6.3: the DbC's OUT
ring carries the target's output, as in Linux's xhci-dbgcap.c, which queues writes on BULK_OUT):

* :class:`TargetToHostPipe` drives the DbC **OUT** transfer ring (endpoint context at +64,
  EP Type 2 Bulk OUT, doorbell target 0). ``write()`` data goes here; the debug host reads it
  with a USB **IN** transfer.
* :class:`HostToTargetPipe` drives the DbC **IN** transfer ring (endpoint context at +128,
  EP Type 6 Bulk IN, doorbell target 1): buffers kept posted for what the debug host sends with
  a USB **OUT** transfer; ``read()`` drains them.

Message boundaries: one ``write()`` is one TD (Normal TRBs of at most 64 KiB, chained with CH,
never crossing a 64 KiB line because every buffer is a pool block that does not); separate
writes are never merged into one TRB or TD.

Every TRB carries IOC, so each completion event releases exactly one TRB, in ring order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from dbc_harness.allocator import DmaBuffer, DmaError, DmaPool, DmaSpace, UseAfterFree
from dbc_harness.drivers.dbc.errors import DbcDmaError, UndeliveredMessage
from dbc_harness.drivers.dbc.rings import allocate_transfer_ring
from dbc_harness.drivers.tracing import TraceSink
from dbc_harness.drivers.xhci.contexts import DBC_MAX_PACKET_SIZE
from dbc_harness.drivers.xhci.trb import TRB_SIZE, render_trb

#: a Normal TRB moves at most 64 KiB and its buffer must not cross a 64 KiB line (table 6-1)
TRB_MAX_BYTES = 0x10000
LINE_64K = 0x10000
#: blocks for small messages (no 64 KiB line can be crossed inside a pool block either)
SMALL_BLOCK = 2048


class BlockCache:
    """Fixed-size DMA blocks from a :class:`DmaPool`, recycled without re-zeroing."""

    def __init__(self, dma: DmaSpace, size: int, *, limit: int | None) -> None:
        self.size = size
        try:
            self.pool: DmaPool = dma.pool(
                size, align=min(size, 4096), boundary=LINE_64K, limit=limit
            )
        except DmaError as exc:
            raise DbcDmaError(f"cannot create a pool of {size}-byte DMA blocks: {exc}") from exc
        self._idle: list[DmaBuffer] = []
        self._all: list[DmaBuffer] = []

    def get(self) -> DmaBuffer:
        if self._idle:
            return self._idle.pop()
        try:
            buf = self.pool.alloc()
        except DmaError as exc:
            raise DbcDmaError(f"out of DMA blocks of {self.size} bytes: {exc}") from exc
        self._all.append(buf)
        return buf

    def put(self, buf: DmaBuffer) -> None:
        self._idle.append(buf)

    @property
    def allocated(self) -> int:
        return len(self._all)

    def close(self) -> None:
        """Free every block and the pool (the DMA space is left with nothing of ours). A
        :class:`UseAfterFree` the sanitizer finds meanwhile is raised once all of it is given
        back; other allocator errors (the space already closed) are not ours to report."""
        found: UseAfterFree | None = None
        for buf in self._all:
            if not buf.freed:
                try:
                    self.pool.free(buf)
                except UseAfterFree as exc:
                    found = found or exc
                except DmaError:
                    pass
        self._all.clear()
        self._idle.clear()
        try:
            self.pool.close()
        except UseAfterFree as exc:
            found = found or exc
        except DmaError:
            pass
        if found is not None:
            raise found


# -- target -> host (DbC OUT ring) ---------------------------------------------------------


@dataclass(eq=False)
class OutMessage:
    """One ``write()``: one TD on the OUT ring."""

    message_id: int
    data: memoryview
    #: bytes confirmed by completion events (a prefix of ``data``)
    delivered: int = 0
    #: bytes handed to TRBs so far (the rest waits in the backlog)
    queued: int = 0
    done: bool = False
    #: end the host's transfer with a zero-length TD (length is a non-zero multiple of 1024)
    zlp: bool = False
    #: ``threading.get_ident()`` of the thread whose ``write()`` accepted it (0: unknown)
    writer: int = 0
    #: ``len(data)`` (bytes of the message), kept once: ``data`` never changes
    length: int = field(init=False)

    def __post_init__(self) -> None:
        self.length = len(self.data)

    def report(self, reason: str, delivered_max: int = -1) -> UndeliveredMessage:
        """The :class:`UndeliveredMessage` for this message (``delivered`` as confirmed)."""
        return UndeliveredMessage(
            self.message_id, bytes(self.data), self.delivered, reason, delivered_max, self.writer
        )


@dataclass(eq=False, slots=True)
class OutTrb:
    """One Normal TRB on the OUT ring and the block behind it."""

    index: int
    cycle: int
    block: DmaBuffer
    cache: BlockCache
    message: OutMessage
    #: message offset and length of the bytes this TRB (still) has to move
    offset: int
    length: int
    last: bool
    #: where in the block the bytes still to move start (non-zero after a partial halt)
    block_offset: int = 0
    retries: int = 0
    spurious_stalls: int = 0
    #: turned into a No Op: its completion moves nothing
    cancelled: bool = False


class TargetToHostPipe:
    """``write()`` data -> DbC OUT ring (doorbell target 0) -> debug host's USB IN transfer."""

    doorbell_target = 0

    def __init__(
        self,
        dma: DmaSpace,
        ring_trbs: int,
        *,
        limit: int | None,
        max_bytes_in_flight: int,
        zlp: bool = False,
    ) -> None:
        self.ring = allocate_transfer_ring(dma, ring_trbs, limit=limit, name="OUT")
        #: follow messages that are a non-zero multiple of 1024 bytes with a zero-length TD
        self.zlp = zlp
        self.small = BlockCache(dma, SMALL_BLOCK, limit=limit)
        self.large = BlockCache(dma, TRB_MAX_BYTES, limit=limit)
        self.max_bytes_in_flight = max_bytes_in_flight
        self.pending: deque[OutTrb] = deque()
        #: messages accepted but not fully queued (at most one: write() waits for it)
        self.backlog: deque[OutMessage] = deque()
        self.bytes_in_flight = 0
        #: DCCTRL.HOT seen set: hold the pipe until it clears
        self.halted = False
        self.next_id = 1
        #: trace sink for "trb" records (None: not tracing)
        self.trace: TraceSink | None = None

    # -- producer --------------------------------------------------------------------------
    def has_room(self) -> bool:
        return self.ring.free_slots > 0 and self.bytes_in_flight < self.max_bytes_in_flight

    def accept(self, data: bytes | bytearray | memoryview, writer: int = 0) -> OutMessage:
        """Accept one message (its TRBs are queued by :meth:`pump`); ``writer``: the thread."""
        view = memoryview(data).cast("B")
        if not isinstance(data, bytes):
            view = memoryview(bytes(view))  # the caller may reuse its buffer
        msg = OutMessage(self.next_id, view, writer=writer)
        msg.zlp = self.zlp and msg.length > 0 and msg.length % DBC_MAX_PACKET_SIZE == 0
        self.next_id += 1
        self.backlog.append(msg)
        return msg

    def queue_small(self, data: bytes | bytearray | memoryview, writer: int = 0) -> int:
        """Accept and queue a message of 1..SMALL_BLOCK bytes as one Normal TRB in one step
        (what :meth:`accept` then :meth:`pump` do, without the backlog round trip); returns
        its message id. 0, with nothing accepted, when it does not qualify: the backlog is not
        empty, no room, a zero-length TD would have to follow it, or tracing is on."""
        length = len(data)
        if (
            self.backlog
            or not 0 < length <= SMALL_BLOCK
            or (self.zlp and length % DBC_MAX_PACKET_SIZE == 0)
            or self.trace is not None
            or not self.has_room()
        ):
            return 0
        if isinstance(data, memoryview) and (data.ndim != 1 or data.itemsize != 1):
            return 0  # not bytes-shaped: the general path casts it
        view = memoryview(data if isinstance(data, bytes) else bytes(data))
        msg = OutMessage(self.next_id, view, queued=length, writer=writer)
        self.next_id += 1
        cache = self.small
        block = cache.get()
        block.view[:length] = view
        index, cycle = self.ring.enqueue_normal(block.device_address, length, chain=False)
        self.pending.append(OutTrb(index, cycle, block, cache, msg, 0, length, True))
        self.bytes_in_flight += length
        return msg.message_id

    def pump(self) -> int:
        """Queue backlog chunks while there is room. Returns the number of TRBs queued."""
        queued = 0
        ring = self.ring
        backlog = self.backlog
        pending = self.pending
        while backlog and self.has_room():
            msg = backlog[0]
            offset = msg.queued
            msg_length = msg.length
            if msg_length and offset >= msg_length:
                length = 0  # every byte queued: the zero-length TD that ends the transfer
                zlp_trb = True
            else:
                length = min(TRB_MAX_BYTES, msg_length - offset)
                zlp_trb = False
            cache = self.small if length <= SMALL_BLOCK else self.large
            block = cache.get()
            if length:
                block.view[:length] = msg.data[offset : offset + length]
            data_done = offset + length >= msg_length
            last = data_done and (zlp_trb or not msg.zlp)
            index, cycle = ring.enqueue_normal(block.device_address, length, chain=not data_done)
            pending.append(OutTrb(index, cycle, block, cache, msg, offset, length, last))
            if self.trace is not None:
                self.trace(
                    "trb",
                    ring="OUT",
                    address=ring.address_of(index),
                    text=render_trb(ring.view, index * TRB_SIZE),
                )
            self.bytes_in_flight += length
            msg.queued = offset + length
            queued += 1
            if last:
                backlog.popleft()
        return queued

    @property
    def idle(self) -> bool:
        return not self.pending and not self.backlog

    # -- completions -----------------------------------------------------------------------
    def oldest(self) -> OutTrb | None:
        return self.pending[0] if self.pending else None

    def complete_oldest(self, transferred: int) -> OutMessage | None:
        """The oldest TRB moved ``transferred`` of its bytes (Success). Returns the message if
        this was its last TRB."""
        t = self.pending.popleft()
        self._retire(t)
        msg = t.message
        msg.delivered = t.offset + transferred
        if t.last:
            msg.done = True
            return msg
        return None

    def keep_remainder(self, t: OutTrb, transferred: int) -> None:
        """The controller halted on ``t`` after moving ``transferred`` bytes: rewrite it in place
        to the part not yet moved so that resuming neither loses nor repeats bytes."""
        if transferred:
            t.offset += transferred
            t.block_offset += transferred
            t.length -= transferred
            self.bytes_in_flight -= transferred
            t.message.delivered = t.offset
            self.ring.rewrite_normal(
                t.index,
                t.cycle,
                t.block.device_address + t.block_offset,
                t.length,
                chain=not t.last,
                isp=False,
            )

    def fail_message_of_oldest(self, reason: str, transferred: int) -> UndeliveredMessage:
        """The controller gave up on the oldest TRB and moved past its TD: release the TRB and
        the rest of its TD, drop the unqueued rest, and report what did not arrive."""
        t = self.pending.popleft()
        self._retire(t)
        msg = t.message
        msg.delivered = t.offset + transferred
        while self.pending and self.pending[0].message is msg:
            self._retire(self.pending.popleft())
        if self.backlog and self.backlog[0] is msg:
            self.backlog.popleft()
        msg.done = True
        return msg.report(reason)

    def cancel_message_of_oldest(self, reason: str) -> UndeliveredMessage:
        """The controller is halted on the oldest TRB and must not run it again (TRB Error,
        retries exhausted): turn it and the rest of its TD into No Op TRBs (they complete,
        IOC set, once the endpoint runs again), drop the unqueued rest, report the message."""
        first = self.pending[0]
        msg = first.message
        for t in self.pending:
            if t.message is not msg:
                break
            if not t.cancelled:
                self.ring.cancel(self.ring.address_of(t.index))
                t.cancelled = True
        if self.backlog and self.backlog[0] is msg:
            self.backlog.popleft()
        msg.done = True
        return msg.report(reason)

    def retire_cancelled(self) -> None:
        """A No Op the driver wrote in place of the oldest TRB completed."""
        self._retire(self.pending.popleft())

    def _retire(self, t: OutTrb) -> None:
        self.ring.release()
        self.bytes_in_flight -= t.length
        t.cache.put(t.block)

    # -- disconnect ------------------------------------------------------------------------
    def flush(self, reason: str, *, events_lost: bool = False) -> list[UndeliveredMessage]:
        """Forget everything in flight (the ring is re-initialised by the caller) and report
        every message not fully delivered, in write order (a message already reported, e.g.
        cancelled after a TRB Error, is not reported again).

        Call it only after consuming every event the controller wrote. ``delivered`` is then
        what the events confirmed. The oldest TRB in flight may have been partly (or wholly,
        its event not yet written) taken by the host when it went away: unless the pipe was
        halted (the halt's Stall event gave its residue), its message's ``delivered_max``
        reaches that TRB's end. TRBs after it did not start (a TRB starts after the one
        before it completed, whose event would have been consumed). ``events_lost``: the
        event ring was full, so the controller may have held completions that are gone
        (reset): every queued byte may have arrived."""
        out: list[UndeliveredMessage] = []
        seen: set[int] = set()
        oldest = self.pending[0] if self.pending else None
        uncertain = oldest is not None and not oldest.cancelled and not self.halted
        for t in self.pending:
            msg = t.message
            if msg.message_id not in seen:
                seen.add(msg.message_id)
                if not msg.done:
                    if events_lost:
                        top = msg.queued
                    elif uncertain and t is oldest:
                        top = t.offset + t.length
                    else:
                        top = -1
                    out.append(msg.report(reason, top))
                    msg.done = True
            t.cache.put(t.block)
        for msg in self.backlog:
            if msg.message_id not in seen:
                seen.add(msg.message_id)
                if not msg.done:
                    out.append(msg.report(reason, msg.queued if events_lost else -1))
                    msg.done = True
        self.pending.clear()
        self.backlog.clear()
        self.bytes_in_flight = 0
        self.halted = False
        self.ring.reset()
        return out

    def close(self, dma: DmaSpace) -> None:
        self.pending.clear()
        self.backlog.clear()
        try:
            self.small.close()
        finally:
            try:
                self.large.close()
            finally:
                self.ring.free()


# -- host -> target (DbC IN ring) ----------------------------------------------------------


@dataclass(eq=False, slots=True)
class InTrb:
    """One posted receive buffer on the IN ring."""

    index: int
    cycle: int
    block: DmaBuffer
    #: offset inside the block where this TRB starts (non-zero only after a partial stall)
    offset: int
    length: int


class RxQueue:
    """Received data in arrival order, with end-of-transfer marks (short packets).

    Entries are zero-copy views into the DMA blocks that received them; a block goes back to
    its pipe (to be posted again) once ``take``/``take_message`` consumed all of it, so data is
    copied exactly once, from DMA memory into the bytes returned to the caller.
    """

    def __init__(self) -> None:
        #: (data view, block to give back once consumed or None, ends a transfer)
        self._chunks: deque[tuple[memoryview, DmaBuffer | None, bool]] = deque()
        self.size = 0
        self._messages = 0
        self.freed: list[DmaBuffer] = []

    def push(self, data: memoryview, block: DmaBuffer | None, end: bool) -> None:
        self._chunks.append((data, block, end))
        self.size += len(data)
        if end:
            self._messages += 1

    def has_data(self) -> bool:
        return self.size > 0

    def has_message(self) -> bool:
        return self._messages > 0

    def _pop(self) -> tuple[memoryview, bool]:
        data, block, end = self._chunks.popleft()
        if block is not None:
            self.freed.append(block)
        if end:
            self._messages -= 1
        return data, end

    def take(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes across transfers (zero-length transfers are skipped)."""
        parts: list[memoryview] = []
        need = max_bytes
        chunks = self._chunks
        while chunks and need > 0:
            data, block, end = chunks[0]
            if len(data) <= need:
                self._pop()
                parts.append(data)
                need -= len(data)
            else:
                parts.append(data[:need])
                chunks[0] = (data[need:], block, end)
                need = 0
        while chunks and not len(chunks[0][0]):  # zero-length transfers carry no bytes
            self._pop()
        out = parts[0].tobytes() if len(parts) == 1 else b"".join(parts)
        self.size -= len(out)
        return out

    def take_into(self, out: memoryview) -> int:
        """Like :meth:`take` (``len(out)`` bytes at most) into ``out``: no bytes object is made
        (a fresh megabyte buffer per read costs more than copying into a reused one). Returns
        the number of bytes stored."""
        need = len(out)
        got = 0
        chunks = self._chunks
        while chunks and got < need:
            data, block, end = chunks[0]
            n = len(data)
            if n <= need - got:
                self._pop()
                out[got : got + n] = data
                got += n
            else:
                n = need - got
                out[got:need] = data[:n]
                chunks[0] = (data[n:], block, end)
                got = need
        while chunks and not len(chunks[0][0]):  # zero-length transfers carry no bytes
            self._pop()
        self.size -= got
        return got

    def take_message(self) -> bytes:
        """Everything up to and including the next end-of-transfer mark."""
        parts: list[memoryview] = []
        while self._chunks:
            data, end = self._pop()
            parts.append(data)
            if end:
                break
        out = b"".join(parts)
        self.size -= len(out)
        return out


class HostToTargetPipe:
    """Debug host's USB OUT transfer -> buffers posted on the DbC IN ring (doorbell target 1)
    -> :class:`RxQueue` -> ``read()``."""

    doorbell_target = 1

    def __init__(
        self,
        dma: DmaSpace,
        ring_trbs: int,
        *,
        limit: int | None,
        buffers: int,
        buffer_size: int,
        rx_limit: int,
    ) -> None:
        self.ring = allocate_transfer_ring(dma, ring_trbs, limit=limit, name="IN")
        self.blocks = BlockCache(dma, buffer_size, limit=limit)
        self.buffer_size = buffer_size
        self.buffers = min(buffers, self.ring.max_in_flight)
        self.rx = RxQueue()
        self.rx_limit = rx_limit
        self.pending: deque[InTrb] = deque()
        #: blocks neither posted nor holding unread data
        self.parked: list[DmaBuffer] = []
        #: DCCTRL.HIT seen set: hold the pipe until it clears
        self.halted = False
        #: trace sink for "trb" records (None: not tracing)
        self.trace: TraceSink | None = None

    def prime(self) -> int:
        """Post receive buffers up to ``buffers`` (none while more than ``rx_limit`` received
        bytes wait to be read: host -> target back-pressure). Returns the number of TRBs
        queued (ring the doorbell if > 0)."""
        rx = self.rx
        if rx.freed:
            self.parked.extend(rx.freed)
            rx.freed.clear()
        posted = 0
        while len(self.pending) < self.buffers and rx.size < self.rx_limit:
            block = self.parked.pop() if self.parked else self.blocks.get()
            self._post(block)
            posted += 1
        return posted

    def _post(self, block: DmaBuffer) -> None:
        index, cycle = self.ring.enqueue_normal(
            block.device_address, self.buffer_size, chain=False, isp=True
        )
        self.pending.append(InTrb(index, cycle, block, 0, self.buffer_size))
        if self.trace is not None:
            ring = self.ring
            self.trace(
                "trb",
                ring="IN",
                address=ring.address_of(index),
                text=render_trb(ring.view, index * TRB_SIZE),
            )

    def oldest(self) -> InTrb | None:
        return self.pending[0] if self.pending else None

    def complete_oldest(self, received: int, end: bool) -> None:
        """The oldest buffer received ``received`` bytes; ``end`` for a short packet. Its data
        stays in the block until read; the block is posted again after that."""
        t = self.pending.popleft()
        self.ring.release()
        if received or end:
            self.rx.push(t.block.view[t.offset : t.offset + received], t.block, end)
        else:
            self.parked.append(t.block)

    def keep_remainder(self, t: InTrb, received: int) -> bytes:
        """Halted after ``received`` bytes: hand them over, rewrite the TRB to the rest."""
        if not received:
            return b""
        data = bytes(t.block.view[t.offset : t.offset + received])
        self.rx.push(memoryview(data), None, False)
        t.offset += received
        t.length -= received
        self.ring.rewrite_normal(
            t.index, t.cycle, t.block.device_address + t.offset, t.length, chain=False, isp=True
        )
        return data

    def drop_oldest(self) -> None:
        """The controller moved past the oldest buffer with an error: its data is unusable."""
        t = self.pending.popleft()
        self.ring.release()
        self.parked.append(t.block)

    def flush(self) -> None:
        """Forget posted buffers (the ring is re-initialised); received data stays readable."""
        for t in self.pending:
            self.parked.append(t.block)
        self.pending.clear()
        self.halted = False
        self.ring.reset()

    def close(self, dma: DmaSpace) -> None:
        self.pending.clear()
        self.parked.clear()
        self.rx = RxQueue()  # drop views into blocks before they are freed
        try:
            self.blocks.close()
        finally:
            self.ring.free()
