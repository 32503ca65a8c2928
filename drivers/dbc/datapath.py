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

Completion moderation (OUT ring): the last TRB of every TD carries IOC, and within a long TD
every :attr:`TargetToHostPipe.ioc_every`-th TRB; the others complete without an event of their
own (xHCI 1.2 6.4.1.1: IOC; a Short Packet or an error still writes one, naming its TRB). TRBs
complete in ring order, so an event naming a TRB confirms every TRB queued before it: one event
per MiB of a long message instead of sixteen, for the driver and the controller alike. The
price: when the host goes away mid-message, what it took is known to that MiB (the
``delivered``/``delivered_max`` range of :class:`UndeliveredMessage`), not to one TRB. The
IN ring keeps IOC on every receive buffer: a host transfer that fills a buffer exactly ends
without a short packet, and only IOC tells the driver its bytes arrived. Receive buffers above
64 KiB are one TD of chained TRBs (ISP on each, IOC on the last).

Both need the TRB Pointer of every Transfer Event: an event that names no TRB could stand for
any TRB of its run (a Short Packet in which TRB of a chained TD? an error on which TRB of a
moderated run?). So neither starts at once: each pipe posts one TRB per TD with IOC until
:data:`TRUST_AFTER` events in a row named exactly the TRB they should, and goes back to that for
good at the first one that does not (a part with the event pointer erratum never leaves it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

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
#: Transfer Events in a row with an exact TRB Pointer before a pipe moderates completions
#: (OUT) or chains receive buffers (IN); one wrong pointer ends it for good. The pointer errata
#: the virtual bench models (zero pointers, pointers that go back) show in the first two events
TRUST_AFTER = 4
#: most OUT ring TRBs of one TD between two that carry IOC (1 MiB of 64 KiB TRBs). Measured on
#: the virtual bench (``bench dbc``'s 1 MiB messages, same run): 4 -> 4,300 MB/s, 8 -> 4,590,
#: 16 -> 4,690 against a floor of 6,000-6,500 (an event costs the driver and the controller
#: ~8 us). Reports after a disconnect stay within 1 MiB (a Linux host's bulk URB completes
#: once per URB, whatever its size)
IOC_EVERY_TRBS = 16


class PointerTrust:
    """Whether Transfer Event TRB Pointers can be relied on to say which TRB an event is for
    (see the module docstring): after :data:`TRUST_AFTER` exact ones in a row, until the first
    wrong one."""

    __slots__ = ("_exact", "distrusted", "trusted")

    def __init__(self) -> None:
        self._exact = 0
        self.trusted = False
        #: a wrong pointer was seen: never trusted again
        self.distrusted = False

    def note(self, exact: bool) -> None:
        if not exact:
            self.trusted = False
            self.distrusted = True
        elif not self.trusted and not self.distrusted:
            self._exact += 1
            self.trusted = self._exact >= TRUST_AFTER


class BlockCache:
    """Fixed-size DMA blocks from a :class:`DmaPool`, recycled without re-zeroing."""

    def __init__(self, dma: DmaSpace, size: int, *, limit: int | None) -> None:
        self.size = size
        # a block larger than 64 KiB starts on a 64 KiB line: its TRBs split it at the lines
        align, boundary = (min(size, 4096), LINE_64K) if size <= LINE_64K else (LINE_64K, 0)
        try:
            self.pool: DmaPool = dma.pool(size, align=align, boundary=boundary, limit=limit)
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


@dataclass(eq=False, slots=True)
class OutMessage:
    """One ``write()``: one TD on the OUT ring."""

    message_id: int
    data: memoryview
    #: ``len(data)`` (bytes of the message), kept once: ``data`` never changes
    length: int
    #: ``threading.get_ident()`` of the thread whose ``write()`` accepted it (0: unknown)
    writer: int = 0
    #: bytes handed to TRBs so far (the rest waits in the backlog)
    queued: int = 0
    #: bytes confirmed by completion events (a prefix of ``data``)
    delivered: int = 0
    done: bool = False
    #: end the host's transfer with a zero-length TD (length is a non-zero multiple of 1024)
    zlp: bool = False

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
    #: carries IOC (the last TRB of its TD, or every ``ioc_every``-th): it writes an event
    ioc: bool
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
        #: TRBs of one TD between two with IOC. Bounded so that whatever stops :meth:`pump`
        #: (ring slots, bytes in flight), a TRB with IOC is among those in flight: at most half
        #: of either limit follows the last one (else no event would ever make room again)
        self.ioc_every = max(
            1,
            min(
                IOC_EVERY_TRBS,
                self.ring.max_in_flight // 2,
                max_bytes_in_flight // (2 * TRB_MAX_BYTES),
            ),
        )
        #: TRBs queued since the last one with IOC
        self._since_ioc = 0
        self.pointers = PointerTrust()
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
        msg = OutMessage(self.next_id, view, len(view), writer)
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
            or self.ring.in_flight >= self.ring.max_in_flight  # has_room(), inline
            or self.bytes_in_flight >= self.max_bytes_in_flight
        ):
            return 0
        if type(data) is not bytes:
            if isinstance(data, memoryview) and (data.ndim != 1 or data.itemsize != 1):
                return 0  # not bytes-shaped: the general path casts it
            data = bytes(data)  # the caller may reuse its buffer
        view = memoryview(data)
        msg = OutMessage(self.next_id, view, length, writer, length)
        self.next_id += 1
        cache = self.small
        block = cache.get()
        block.view[:length] = view
        index, cycle = self.ring.enqueue_normal(block.device_address, length, chain=False)
        self._since_ioc = 0
        self.pending.append(OutTrb(index, cycle, block, cache, msg, 0, length, True, True))
        self.bytes_in_flight += length
        return msg.message_id

    def pump(self) -> int:
        """Queue backlog chunks while there is room. Returns the number of TRBs queued."""
        queued = 0
        ring = self.ring
        backlog = self.backlog
        pending = self.pending
        max_bytes = self.max_bytes_in_flight
        max_trbs = ring.max_in_flight
        enqueue = ring.enqueue_normal
        # one event per ``every`` TRBs of a TD once event pointers are trusted, else per TRB
        every = self.ioc_every if self.pointers.trusted else 1
        since = self._since_ioc
        in_flight = self.bytes_in_flight
        trace = self.trace
        small, large = self.small, self.large
        msg: OutMessage | None = None
        offset = 0
        try:
            while backlog and ring.in_flight < max_trbs and in_flight < max_bytes:
                msg = backlog[0]
                offset = msg.queued
                msg_length = msg.length
                data = msg.data
                last = False
                # the message's TRBs while there is room (offset: its first byte not queued)
                while ring.in_flight < max_trbs and in_flight < max_bytes:
                    if msg_length and offset >= msg_length:
                        length = 0  # every byte queued: the zero-length TD that ends the transfer
                        zlp_trb = True
                    else:
                        length = msg_length - offset
                        if length > TRB_MAX_BYTES:
                            length = TRB_MAX_BYTES
                        zlp_trb = False
                    cache = small if length <= SMALL_BLOCK else large
                    block = cache.get()
                    if length:
                        block.view[:length] = data[offset : offset + length]
                    data_done = offset + length >= msg_length
                    last = data_done and (zlp_trb or not msg.zlp)
                    since += 1
                    ioc = last or since >= every
                    if ioc:
                        since = 0
                    index, cycle = enqueue(
                        block.device_address, length, chain=not data_done, ioc=ioc
                    )
                    pending.append(
                        OutTrb(index, cycle, block, cache, msg, offset, length, last, ioc)
                    )
                    in_flight += length
                    offset += length
                    queued += 1
                    if trace is not None:
                        trace(
                            "trb",
                            ring="OUT",
                            address=ring.address_of(index),
                            text=render_trb(ring.view, index * TRB_SIZE),
                        )
                    if last:
                        break
                msg.queued = offset
                if last:
                    backlog.popleft()
        finally:  # what was queued stays counted whatever stopped the loop
            if msg is not None:
                msg.queued = offset
            self.bytes_in_flight = in_flight
            self._since_ioc = since
        return queued

    @property
    def idle(self) -> bool:
        return not self.pending and not self.backlog

    # -- completions -----------------------------------------------------------------------
    def oldest(self) -> OutTrb | None:
        return self.pending[0] if self.pending else None

    def run_before(self, pointer: int) -> int:
        """How many TRBs without IOC precede the in-flight TRB at ``pointer`` (0: it is the
        oldest); -1 when ``pointer`` is not among the oldest TRBs up to the first with IOC,
        i.e. not a TRB an event can name next."""
        index = self.ring.index_of(pointer)
        if index is None:
            return -1
        for n, t in enumerate(self.pending):
            if t.index == index:
                return n
            if t.ioc:
                return -1
        return -1

    def run_to_ioc(self) -> int:
        """How many TRBs precede the oldest TRB with IOC (the one the next event names when
        nothing ends short or in error)."""
        for n, t in enumerate(self.pending):
            if t.ioc:
                return n
        return len(self.pending)

    def complete_silent(self, count: int) -> tuple[int, int]:
        """The ``count`` oldest TRBs (none carries IOC) completed without events of their
        own: an event for a later TRB confirmed them. Returns (Normal TRBs, bytes) moved."""
        trbs = moved = freed = 0
        pending = self.pending
        for _ in range(count):
            t = pending.popleft()
            t.cache.put(t.block)
            freed += t.length
            if t.cancelled:
                continue
            t.message.delivered = t.offset + t.length  # never its last TRB: that has IOC
            trbs += 1
            moved += t.length
        self.ring.release(count)
        self.bytes_in_flight -= freed
        return trbs, moved

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
                ioc=t.ioc,
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
        what the events confirmed. The oldest TRBs in flight up to the first with IOC (one
        TRB when every TRB has IOC) may have been taken by the host, the last of them partly
        or wholly (its event not yet written), when it went away: unless the pipe was halted
        (the halt's Stall event gave its residue), their message's ``delivered_max`` reaches
        the end of that TRB. TRBs after it did not start (the controller starts them after
        completing it, whose event would have been consumed). ``events_lost``: the
        event ring was full, so the controller may have held completions that are gone
        (reset): every queued byte may have arrived."""
        out: list[UndeliveredMessage] = []
        seen: set[int] = set()
        oldest = self.pending[0] if self.pending else None
        uncertain = oldest is not None and not oldest.cancelled and not self.halted
        reach = self.pending[min(self.run_to_ioc(), len(self.pending) - 1)] if uncertain else None
        if reach is not None and oldest is not None and reach.message is not oldest.message:
            reach = oldest  # cannot happen (the last TRB of a TD has IOC); the safe bound
        for t in self.pending:
            msg = t.message
            if msg.message_id not in seen:
                seen.add(msg.message_id)
                if not msg.done:
                    if events_lost:
                        top = msg.queued
                    elif reach is not None and t is oldest:
                        top = reach.offset + reach.length
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
    """One Normal TRB of a receive buffer posted on the IN ring (a buffer larger than 64 KiB
    is one TD of several chained TRBs, one per 64 KiB of the block)."""

    index: int
    cycle: int
    block: DmaBuffer
    #: offset inside the block where this TRB (still) starts
    offset: int
    length: int
    #: the block's first TRB: no part of the block was handed to the RxQueue before it
    first: bool = True
    #: the last TRB of its TD (CH = 0, IOC = 1); the others have CH = 1 and no IOC
    last: bool = True
    #: the block's last TRB (its TD's last too when the block is one chained TD)
    block_last: bool = True
    #: the TD ended short on an earlier TRB: the controller skips this one (4.10.1.1)
    skipped: bool = False


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
        #: (offset, length) of each TRB of a receive buffer's TD: one per 64 KiB of the block
        self.pieces = [
            (at, min(TRB_MAX_BYTES, buffer_size - at)) for at in range(0, buffer_size, LINE_64K)
        ]
        self.buffers = min(buffers, self.ring.max_in_flight // len(self.pieces))
        #: blocks are posted as one chained TD only once event pointers proved exact
        self.pointers = PointerTrust()
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
        pending, parked, size = self.pending, self.parked, self.buffer_size
        enqueue = self.ring.enqueue_normal
        pieces = len(self.pieces)
        limit = self.buffers * pieces
        # a whole block at a time: the ring never holds more than ``limit`` TRBs
        while len(pending) + pieces <= limit and rx.size < self.rx_limit:
            block = parked.pop() if parked else self.blocks.get()
            if self.trace is not None or pieces > 1:
                posted += self._post(block)
            else:
                index, cycle = enqueue(block.device_address, size, chain=False, isp=True)
                pending.append(InTrb(index, cycle, block, 0, size))
                posted += 1
        return posted

    def _post(self, block: DmaBuffer) -> int:
        """Post ``block`` as one TD (ISP on every TRB, IOC on the last), or one TD per TRB
        while event pointers are not trusted; returns its TRBs."""
        ring = self.ring
        last_at = self.pieces[-1][0]
        chained = self.pointers.trusted
        for at, length in self.pieces:
            block_last = at == last_at
            last = block_last or not chained
            index, cycle = ring.enqueue_normal(
                block.device_address + at, length, chain=not last, isp=True, ioc=last
            )
            self.pending.append(InTrb(index, cycle, block, at, length, at == 0, last, block_last))
            if self.trace is not None:
                self.trace(
                    "trb",
                    ring="IN",
                    address=ring.address_of(index),
                    text=render_trb(ring.view, index * TRB_SIZE),
                )
        return len(self.pieces)

    def oldest(self) -> InTrb | None:
        return self.pending[0] if self.pending else None

    def run_before(self, pointer: int) -> int:
        """How many TRBs precede the in-flight TRB at ``pointer`` that completed without an
        event of their own (TRBs of its TD before it, filled; TRBs skipped after a short
        packet); -1 when an event for ``pointer`` cannot come next."""
        address_of = self.ring.address_of
        for n, t in enumerate(self.pending):
            if address_of(t.index) == pointer:
                return n
            if t.last and not t.skipped:
                return -1
        return -1

    def complete_oldest(self, received: int, end: bool, filled: int = 0) -> tuple[int, int]:
        """The oldest TRB received ``received`` bytes (``end``: a short packet), after the
        ``filled`` TRBs before it completed without events of their own (TRBs skipped after an
        earlier short packet, then filled TRBs of the same TD). The data stays in the block
        until read, handed over as one view from the first filled TRB; the block is posted
        again once every part of it was read. A short packet before the last TRB of a TD ends
        the TD: the controller skips the rest of it (4.10.1.1). Returns (TRBs, bytes) the
        ``filled`` ones moved."""
        trbs, moved, start = self._retire_filled(filled)
        t = self.pending.popleft()
        self.ring.release()
        if t.skipped:
            return trbs, moved
        if start < 0:
            start = t.offset
        # the block goes back after its last TRB, or after a short packet ended its chained TD
        carry = t.block_last or (end and not t.last)
        if moved or received or end:
            data = t.block.view[start : t.offset + received]
            self.rx.push(data, t.block if carry else None, end)
        elif carry:
            self._release_block(t)
        if end and not t.last:
            self._skip_rest_of_td()
        return trbs, moved

    def complete_filled(self, count: int) -> tuple[int, int]:
        """Retire the ``count`` oldest TRBs, which completed without events of their own
        before a TRB of the same TD that ended in error (skipped ones move nothing; the filled
        ones are handed over as one view, their TD goes on). Returns (TRBs, bytes) filled."""
        block = self.pending[count - 1].block if count else None
        trbs, moved, start = self._retire_filled(count)
        if block is not None and moved:
            self.rx.push(block.view[start : start + moved], None, False)
        return trbs, moved

    def _retire_filled(self, count: int) -> tuple[int, int, int]:
        """Take the ``count`` oldest TRBs off the ring: skipped ones (an earlier TD that ended
        short), then filled ones of one TD. Returns (TRBs filled, their bytes, block offset
        where the filled ones start or -1)."""
        pending = self.pending
        trbs = moved = 0
        start = -1
        for _ in range(count):
            f = pending.popleft()
            if not f.skipped:
                if start < 0:
                    start = f.offset
                trbs += 1
                moved += f.length
        self.ring.release(count)
        return trbs, moved, start

    def _release_block(self, t: InTrb) -> None:
        """The TD of ``t`` ended with nothing more to hand over: its block goes back, through
        the RxQueue when parts of it wait there to be read."""
        if t.first:
            self.parked.append(t.block)
        else:
            self.rx.push(memoryview(b""), t.block, False)

    def _skip_rest_of_td(self) -> None:
        for t in self.pending:
            t.skipped = True
            if t.last:
                return

    def keep_remainder(self, t: InTrb, received: int) -> bytes:
        """Halted after ``received`` bytes: hand them over, rewrite the TRB to the rest."""
        if not received:
            return b""
        data = bytes(t.block.view[t.offset : t.offset + received])
        self.rx.push(memoryview(data), None, False)
        t.offset += received
        t.length -= received
        self.ring.rewrite_normal(
            t.index,
            t.cycle,
            t.block.device_address + t.offset,
            t.length,
            chain=not t.last,
            isp=True,
            ioc=t.last,
        )
        return data

    def drop_oldest(self) -> None:
        """The controller moved past the oldest TRB with an error: its data is unusable, and
        the rest of its TD is given up."""
        t = self.pending.popleft()
        self.ring.release()
        if t.skipped:
            return
        if t.block_last or not t.last:
            self._release_block(t)
        if not t.last:
            self._skip_rest_of_td()

    def flush(self) -> None:
        """Forget posted buffers (the ring is re-initialised); received data stays readable."""
        oldest = self.pending[0] if self.pending else None
        for t in self.pending:
            # once per TD, at its oldest TRB in flight: only the oldest TD can be part-done
            if not t.skipped and (t.first or t is oldest):
                self._release_block(t)
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
