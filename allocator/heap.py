"""The one sub-allocator every backend shares: :class:`HeapDmaSpace`.

Backends only supply *chunks* (device-contiguous memory with a device address, see
:class:`ChunkSource`) and take them back. On top of the chunks this module does, under one lock:

* placement over coalescing free lists, honouring ``align``, ``boundary`` (no buffer
  straddles a multiple of it) and an address ``limit`` (the buffer and its guard end at or below):
  *best fit* (the smallest free piece that takes the request, the lowest address among equal
  ones); inside the piece, the buffer goes next to the *larger* of its two neighbours (a 64 KiB
  line, where a piece ends, counts as smaller than any buffer), leaving the remainder by the
  smaller one. Measured, not derived: in replays of the churn trace of ``bench allocator`` it
  packs 64 KiB windows tighter than the low end always, or than the smaller neighbour;
* zeroed memory: free space is kept zero (an extent is zeroed as it returns to the free lists,
  fresh chunks come zeroed from their source), so an allocation hands out zeroed buffer and
  guard bytes without a memset on its path (Linux's init_on_free);
* optional guard bytes after every buffer, for controllers that over-fetch past a segment end
  (VIA VL805): they belong to the same chunk, are zero, and the device may read them;
* page return: an empty chunk goes back to its source, except that up to ``spare_chunks`` empty
  chunks are kept while other buffers are live (hysteresis); a spare left unused for
  ``spare_idle_ops`` allocations and frees goes back too, and so does every chunk when the last
  buffer is freed (or at :meth:`HeapDmaSpace.trim`);
* draining: while two or more chunks hold buffers, the one holding the fewest extents
  (buffers, pool pages) is *draining*: it can empty soonest (each buffer is as likely to be
  freed next), so placement skips it (and empty spares) while the request fits in another
  chunk, and it goes back instead of being refilled (best fit alone spreads a live set over
  every chunk it ever had). Once the live set has shrunk (a quarter of the non-empty chunks'
  bytes free), further chunks drain, the emptiest by bytes first, as long as the others' free
  bytes could hold theirs (without that quarter, the holes they leave unused would cost more
  packing than they give back). With the placement above, the churn trace over 2 MiB chunks
  (24 seeds, live/held after churn) went from a mean of 0.805 (4 seeds reaching 0.85) to 0.828
  (10 seeds); over chunks at random addresses, as hugepages come, 0.796 (6) to 0.811 (8). Its
  default seed stays at 0.815: 11 chunks, the 11th holding 2-3 buffers placed when the other
  ten had no room for a 48-64 KiB one. Choosing the lowest address among fits within 256 bytes
  of the best gained little more in a model of this heap and cost ~3 us per allocation.
  Re-measured over the trace seeds ``SEED`` .. ``SEED + 23`` (sanitizer off): a mean of 0.833
  (5 seeds reaching 0.85) over 2 MiB chunks at ascending addresses, 0.826 (3) at random ones,
  0.822 sampled every 500 swaps from swap 4000 on; the default seed 0.815 on both and on real
  hugepages (``bench allocator --backend hugepage``: alloc median 4.96 us, p99 11.7 us). What
  limits it: a request of 48 KiB or more finds no window in the non-draining chunks in 2.8 % of
  cases at 88 % of their bytes used, 7.8 % at 89 %, 15 % at 90 %, 26 % at 91 % (8 seeds), and
  each such buffer lands in the draining chunk, which empties only once all of them are freed;
  the default seed's live set at the end needs ten chunks ~90 % used;
* tried in the same replays and not adopted (none beyond the seed-to-seed noise of about one
  chunk, which moves the 24-seed mean by ~0.004): requests up to 16 KiB skipping windows with
  less than 8 KiB used until nothing else fits (0.829 / 0.833, sampled 0.822; 16 KiB: 0.833 /
  0.829); a LINE counting as larger than any neighbour, so buffers go to window edges (0.826 /
  0.826, sampled 0.817); requests of 16 or 32 KiB and more that need an empty window taking the
  highest one, large from one end of a chunk and small from the other (sampled 0.820 / 0.819);
  further
  draining chunks from 10 % or 5 % free with the fewest-extents chunk used last (sampled
  0.820); the fullest chunk that fits, best fit inside it (0.721 / 0.714: best fit across
  chunks is what packs the windows); the fullest 64 KiB window that fits, in 4 KiB classes
  (6 seeds, sampled 0.810 against 0.819). In a window-interval model of this heap (best fit
  by piece over 32 windows a chunk, the same draining; 0.829 over 24 seeds against 0.833 here),
  efficiency sampled every 250 swaps from swap 4000 on, 30 seeds (this policy 0.827): 64 KiB
  windows typed by their first buffer, requests under 2 KiB kept to small windows while one
  fits (0.830; the default seed lands on ten or eleven chunks depending on tie-breaks), three
  such types (0.806-0.818), ties broken by chunk age or fullness (0.818-0.830), address-ordered
  first fit (0.736), power-of-two aligned placement or either end of the piece (the same chunk
  counts). Out of reach of a non-moving allocator: the final live set packs into 288 windows
  (nine chunks) all at once, and buffers of 16 KiB or more moved inside their window when that
  makes room (compaction) would give 0.849;
* translation both ways (buffer + offset -> device address in :class:`DmaBuffer`; device address
  -> (buffer, offset) in :meth:`HeapDmaSpace.lookup`, a bisection over the sorted live buffers);
* device-side access by address (``device_read`` / ``device_write`` / ``device_view``) that raises
  :class:`DmaFault` unless the whole access lies inside ONE live buffer (IOMMU semantics);
* identity checks: ``free()`` accepts only the very :class:`DmaBuffer` objects this space (or
  the pool) issued and that are still live, found by identity in the space's registry of live
  buffers, never by their fields; a copy, a forged object or a buffer with an altered address
  raises :class:`ForeignBuffer` and changes nothing (buffers are frozen: their fields cannot be
  altered in place);
* the sanitizer (``sanitize=True``; on by default in the emulated backend, off in the hugepage
  and iova backends, see their docstrings), like a memory sanitizer's quarantine:

  - each allocation remembers its allocation site (``file:line`` of the ``alloc()`` caller
    outside this package), each free its free site;
  - freed memory (buffer and guard bytes, heap buffers and pool blocks alike) is filled with
    :data:`POISON_BYTE` and kept in a FIFO *quarantine* of at most ``quarantine_bytes`` (and
    :data:`QUARANTINE_MAX_BUFFERS` buffers) before it can be handed out again;
  - a device-side access to a quarantined range raises :class:`UseAfterFree` at once (a
    :class:`DmaFault`, naming both sites);
  - when memory leaves the quarantine (the bound is exceeded, the last live buffer is freed, or
    its pool is closed) the poison is checked: a CPU write through a stale view (e.g. a slice
    of ``buf.view`` taken before ``free()``; ``buf.view`` itself is released at ``free()`` and
    raises ``ValueError`` on use) or a device write the space could not see (real hardware)
    raises :class:`UseAfterFree` from that ``free()`` / ``close()`` call, after the operation
    completed, so the space stays consistent. Detection is therefore guaranteed at the latest
    when the memory could be handed out again; writes into memory already handed out to a new
    owner cannot be told apart from the owner's own.

  Costs: one poison fill per free, one compare per buffer leaving quarantine, a frame walk per
  alloc/free (churn trace: alloc median x1.2-1.3); the quarantined bytes stay held
  (``stats()["quarantined_bytes"]``).
"""

from __future__ import annotations

import os
import threading
import weakref
from bisect import bisect_left, bisect_right, insort
from collections import deque
from typing import Protocol

from dbc_harness.allocator.chunk import _FILL, _ZEROS, Chunk, _Extent, _fill, caller_site
from dbc_harness.allocator.errors import (
    AddressLimitUnsatisfiable,
    DmaFault,
    DoubleFree,
    ForeignBuffer,
    InvalidRequest,
    RequestTooLarge,
    SpaceClosed,
    UseAfterFree,
)
from dbc_harness.allocator.pool import DmaPool
from dbc_harness.allocator.space import DmaBuffer, DmaSpace


class ChunkSource(Protocol):
    """What a backend provides to the heap."""

    #: "hugepage", "iova" or "emulated"
    backend: str
    #: chunk sizes this source can provide, ascending; a chunk is aligned to its size
    page_sizes: tuple[int, ...]

    def acquire(self, size: int, limit: int | None) -> Chunk:
        """A fresh chunk of ``size`` (one of ``page_sizes``) bytes, zero-filled. ``limit`` is a
        hint: sources that choose addresses place the chunk below it; others may ignore it (the
        heap checks and gives the chunk back)."""
        ...

    def release(self, chunk: Chunk) -> None:
        """Give a chunk back to the system."""
        ...

    def close(self) -> None:
        """Release whatever the source itself holds (fds, reservations). Idempotent."""
        ...


#: byte freed memory is filled with while in quarantine (sanitizer)
POISON_BYTE = 0xDF
#: default quarantine bound of a sanitizing space, in bytes
DEFAULT_QUARANTINE_BYTES = 1 << 20
#: most buffers kept in quarantine whatever their size
QUARANTINE_MAX_BUFFERS = 4096
_POISON = memoryview(bytes([POISON_BYTE]) * _FILL)


def _poison_intact(view: memoryview, start: int, end: int) -> tuple[int, int] | None:
    """None when ``view[start:end]`` still holds only the poison byte; else the offsets (from
    ``start``) of the first and last byte that differ."""
    pos = start
    while pos < end:
        n = min(_FILL, end - pos)
        if view[pos : pos + n] != _POISON[:n]:
            data = bytes(view[start:end])
            poison = bytes([POISON_BYTE])
            return len(data) - len(data.lstrip(poison)), len(data.rstrip(poison)) - 1
        pos += n
    return None


def format_site(site: tuple[str, int] | None) -> str:
    """``file:line`` (relative to the working directory when below it)."""
    if site is None:
        return "an unknown site (sanitizer off)"
    path, line = site
    try:
        rel = os.path.relpath(path)
    except ValueError:
        rel = path
    return f"{path if rel.startswith('..') else rel}:{line}"


#: allocations + frees after which an unused spare chunk goes back to the system
DEFAULT_SPARE_IDLE_OPS = 1024

#: more chunks than the one with the fewest extents drain only once this share of the non-empty
#: chunks' bytes is free (the live set has shrunk): below it, the holes they leave unused cost
#: more packing than they could give back (churn trace, 64 KiB chunks: live/held 0.852 when
#: draining started at one chunk's worth of free bytes, 0.870 with this quarter); the shrinking
#: live set in tests/test_allocator_policy.py gives half its chunks back
DRAIN_SLACK_FRACTION = 0.25

#: operations before a draining choice that found no chunk is tried again
STEER_RETRY_OPS = 32

#: heap extents start and end at multiples of this (one cache line, the largest alignment of
#: an xHCI structure): freed space never leaves slivers too misaligned to hold a 64-byte
#: aligned request, so best fit's first candidate fits (it scanned dozens of them before)
GRANULE = 64

#: multiplier that packs (size, start) into one sortable int (device addresses are < 2**64)
_KEY = 1 << 64
#: the start part of such a key (key & _START)
_START = _KEY - 1

#: the line most bounded requests must not cross: 64 KiB (xHCI table 6-1: TRB data buffers and
#: ring segments). Free extents are also indexed by their largest piece between two lines, so
#: a request with ``0 < boundary <= LINE`` finds an extent it fits in without trying every
#: larger extent that straddles a line (the churn trace's p99 tried 90 of them on 2 MiB chunks)
LINE = 1 << 16
_LINE_MASK = LINE - 1


def _piece(start: int, end: int) -> int:
    """Largest part of ``[start, end)`` that does not cross a multiple of :data:`LINE`."""
    line = (start | (LINE - 1)) + 1
    if end <= line:
        return end - start
    last = end & -LINE
    if last - line >= LINE:
        return LINE
    return max(line - start, end - last)


def _used(chunk: Chunk) -> int:
    return chunk.used


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


class HeapDmaSpace(DmaSpace):
    """A :class:`DmaSpace` over chunks from a :class:`ChunkSource`.

    ``guard``: bytes reserved (zeroed, device-readable) after every buffer.
    ``spare_chunks``: empty chunks kept while other buffers are live.
    ``spare_idle_ops``: a kept spare goes back after this many allocations and frees without
    being used (``None``: kept until :meth:`trim` or the last free).
    ``sanitize``: poison freed memory, keep it in a quarantine of at most ``quarantine_bytes``
    and name use after free (see the module docstring).
    """

    def __init__(
        self,
        source: ChunkSource,
        *,
        guard: int = 0,
        spare_chunks: int = 1,
        spare_idle_ops: int | None = DEFAULT_SPARE_IDLE_OPS,
        sanitize: bool = False,
        quarantine_bytes: int = DEFAULT_QUARANTINE_BYTES,
    ) -> None:
        if guard < 0 or spare_chunks < 0 or (spare_idle_ops is not None and spare_idle_ops < 1):
            raise InvalidRequest("guard and spare_chunks must be >= 0, spare_idle_ops >= 1")
        if not isinstance(quarantine_bytes, int) or quarantine_bytes < 0:
            raise InvalidRequest(f"quarantine_bytes must be >= 0, got {quarantine_bytes!r}")
        self.sanitize = bool(sanitize)
        self.quarantine_bytes = quarantine_bytes
        # freed extents waiting before reuse, oldest first (sanitizer), and their total bytes
        self._quarantine: deque[_Extent] = deque()
        self._quarantined = 0
        self._source = source
        self.backend = source.backend
        self.guard = guard
        self.spare_chunks = spare_chunks
        self.spare_idle_ops = spare_idle_ops
        self._lock = threading.RLock()
        self._closed = False
        self._chunks: dict[int, Chunk] = {}  # device address -> chunk
        self._empty: list[Chunk] = []  # empty chunks kept as spares, oldest first
        self._ops = 0  # allocations + frees (the clock of spare expiry)
        self._drain: Chunk | None = None  # the chunk with the fewest extents, see _track_drain
        self._draining: set[Chunk] = set()  # more chunks placement avoids, see _steer
        self._draining_size = 0  # sum of their sizes
        self._used_bytes = 0  # sum of chunk.used
        self._nonempty_bytes = 0  # sum of the sizes of chunks with used > 0
        self._steer_after = 0  # _ops before which _steer is not tried again (it found nothing)
        # used extents (buffers, pool pages): start -> size and end -> size, for placement
        # next to the larger neighbour
        self._used_start: dict[int, int] = {}
        self._used_end: dict[int, int] = {}
        # free extents: start -> (end, chunk); end -> start; and for best fit the sorted keys
        # size * _KEY + start (one int compares faster than a (size, start) tuple)
        self._free: dict[int, tuple[int, Chunk]] = {}
        self._free_end: dict[int, int] = {}
        # (size, start) keys for best fit, where size is the extent's largest piece between two
        # LINE multiples (what a request bounded by a LINE can actually use; see _best_fit)
        self._by_piece: list[int] = []
        self._line_fits = LINE <= source.page_sizes[-1]  # a LINE-sized request is never too large
        # live device-visible buffers, sorted by device address
        self._live_starts: list[int] = []
        self._live_bufs: list[DmaBuffer] = []
        self._live_bytes = 0
        self._pools: list[DmaPool] = []
        self._counters = {  # allocs: _ops - frees (one dict update less per allocation)
            "frees": 0,
            "chunks_acquired": 0,
            "chunks_released": 0,
            "use_after_free": 0,
        }

    # ------------------------------------------------------------------ public API (DmaSpace)
    def alloc(
        self, size: int, *, align: int = 64, boundary: int = 0, limit: int | None = None
    ) -> DmaBuffer:
        with self._lock:
            chunk, address = self._take(size, align, boundary, limit)
            reach = address + size + self.guard
            # positional: keyword arguments cost ~0.15 us here
            extent = _Extent(
                chunk, address, (reach + GRANULE - 1) & -GRANULE, self, size, None, reach
            )
            if self.sanitize:
                extent.alloc_site = caller_site()
            base = address - chunk.device_address
            buf = DmaBuffer(self, address, size, chunk.view[base : base + size], extent)
            # self._register(buf), inline: the allocation path
            starts = self._live_starts
            idx = bisect_left(starts, address)
            starts.insert(idx, address)
            self._live_bufs.insert(idx, buf)
            self._live_bytes += size
            return buf

    def free(self, buf: DmaBuffer) -> None:
        with self._lock:
            extent = self._check_owned(buf, self)
            self._unregister(buf, extent)
            if self.sanitize:
                self._quarantine_add(buf, extent)
                found = self._quarantine_evict()
                if found:
                    raise found[0]
            else:
                self._give(extent)

    def pool(
        self, size: int, *, align: int = 64, boundary: int = 0, limit: int | None = None
    ) -> DmaPool:
        with self._lock:
            self._check_open()
            pool = DmaPool(self, size, align=align, boundary=boundary, limit=limit)
            self._pools.append(pool)
            return pool

    def lookup(self, device_address: int) -> tuple[DmaBuffer, int]:
        with self._lock:
            idx = bisect_right(self._live_starts, device_address) - 1
            if idx >= 0:
                buf = self._live_bufs[idx]
                if device_address < buf.device_address + buf.size:
                    return buf, device_address - buf.device_address
        raise ForeignBuffer(f"no live buffer holds device address 0x{device_address:x}")

    def contiguous_length(self, device_address: int) -> int:
        """How many bytes stay device-contiguous from ``device_address`` (SPDK ``vtophys``
        with a length): the rest of the live buffer holding it. ForeignBuffer otherwise."""
        buf, offset = self.lookup(device_address)
        return buf.size - offset

    def stats(self) -> dict[str, int]:
        with self._lock:
            held = sum(c.size for c in self._chunks.values())
            return {
                "live_bytes": self._live_bytes,
                "live_buffers": len(self._live_bufs),
                "held_bytes": held,
                "quarantined_bytes": self._quarantined,
                "quarantined_buffers": len(self._quarantine),
                "chunks": len(self._chunks),
                "spare_chunks": len(self._empty),
                "draining_chunks": len(self._avoided()),
                "draining_used_bytes": sum(c.used for c in self._avoided()),
                "free_extents": len(self._free),
                "allocs": self._ops - self._counters["frees"],
                **self._counters,
            }

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for buf in self._live_bufs:
                object.__setattr__(buf, "freed", True)
                _release_view(buf.view)
            self._quarantine.clear()
            self._quarantined = 0
            self._live_bufs.clear()
            self._live_starts.clear()
            self._live_bytes = 0
            for pool in self._pools:
                pool._closed = True
            self._pools.clear()
            for chunk in list(self._chunks.values()):
                self._release_chunk(chunk)
            self._free.clear()
            self._free_end.clear()
            self._by_piece.clear()
            self._empty.clear()
            self._drain = None
            self._draining.clear()
            self._draining_size = 0
            self._used_bytes = self._nonempty_bytes = 0
            self._used_start.clear()
            self._used_end.clear()
            self._source.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def page_sizes(self) -> tuple[int, ...]:
        """Chunk sizes the backend provides; the largest bounds every request."""
        return self._source.page_sizes

    # ------------------------------------------------------------------ device side
    def device_view(self, address: int, length: int) -> memoryview:
        """Zero-copy writable view of ``[address, address + length)``. DmaFault unless the range
        lies inside one live buffer (or its guard bytes)."""
        with self._lock:
            idx = bisect_right(self._live_starts, address) - 1
            if idx >= 0 and length >= 0:
                buf = self._live_bufs[idx]
                offset = address - buf.device_address
                extent: _Extent = buf.meta
                if address + length <= extent.reach:
                    if offset + length <= buf.size:
                        return buf.view[offset : offset + length]
                    base = extent.start - extent.chunk.device_address
                    return extent.chunk.view[base + offset : base + offset + length]
            if self._quarantine and length >= 0:
                stale = self._quarantined_at(address, length)
                if stale is not None:
                    self._counters["use_after_free"] += 1
                    raise self._use_after_free(stale, address, length, "device")
        raise DmaFault(address, length)

    def device_read(self, address: int, length: int) -> bytes:
        """Copy of ``length`` bytes at device ``address`` (DmaFault outside a live buffer)."""
        return bytes(self.device_view(address, length))

    def device_write(self, address: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at device ``address`` (DmaFault outside a live buffer)."""
        self.device_view(address, len(data))[:] = data

    # ------------------------------------------------------------------ for pools
    def _take(
        self, size: int, align: int, boundary: int, limit: int | None, guard: int | None = None
    ) -> tuple[Chunk, int]:
        """Reserve an extent of ``size`` + guard bytes (lock held); return (chunk, device
        address). ``guard`` defaults to the space's guard bytes."""
        if self._closed:
            raise SpaceClosed(f"{self.backend} DMA space is closed")
        guard = self.guard if guard is None else guard
        if not (  # the common request, checked in one expression; anything else in full
            type(size) is int
            and type(align) is int
            and type(boundary) is int
            and limit is None
            and 0 < size <= size + guard <= LINE
            and 0 < align <= LINE
            and not align & (align - 1)
            and (boundary == 0 or (size <= boundary and not boundary & (boundary - 1)))
            and self._line_fits
        ):
            self._validate(size, align, boundary, limit, guard)
        need = (size + guard + GRANULE - 1) & -GRANULE
        free = self._free
        by_piece = self._by_piece
        # fast path of _best_fit: the smallest piece that takes ``need``, in a chunk that is
        # neither empty nor draining (granules keep its start aligned for align <= GRANULE; a
        # boundary of LINE or 0 is kept by the piece); otherwise or for anything else, the full
        # search
        found = None
        if (boundary == LINE or boundary == 0) and align <= GRANULE and limit is None:
            i = bisect_left(by_piece, need * _KEY)
            if i < len(by_piece):
                start = by_piece[i] & _START
                end, chunk = free[start]
                if chunk.used and chunk is not self._drain and chunk not in self._draining:
                    # self._position(...), inline: the piece takes ``need`` from its start
                    left = -1 if not start & _LINE_MASK else self._used_end.get(start, 0)
                    right = -1 if not end & _LINE_MASK else self._used_start.get(end, 0)
                    if right > left:  # self._place_high(...), inline
                        address = end - need
                        if boundary and (address ^ (address + size - 1)) & -boundary:
                            address = (((address + size - 1) & -boundary) - size) & -GRANULE
                    if right <= left or address < start:
                        address = start
                        if boundary and (start ^ (start + size - 1)) & -boundary:
                            address = (start | (boundary - 1)) + 1
                    found = start, address, i
        if found is None:
            found = self._best_fit(size, need, align, boundary, limit)
            if found is None:
                found = self._grow(size, need, align, boundary, limit)
        start, address, i = found
        # take the extent off the free lists (see _remove_free / _add_free), inline: hot path
        free_end = self._free_end
        end, chunk = free.pop(start)
        del free_end[end]
        if i < 0:  # the scan over _by_piece knows where its key is
            i = bisect_left(by_piece, _piece(start, end) * _KEY + start)
        del by_piece[i]
        if start < address:
            free[start] = (address, chunk)
            free_end[address] = start
            insort(by_piece, _piece(start, address) * _KEY + start)
        stop = address + need
        if stop < end:
            free[stop] = (end, chunk)
            free_end[end] = stop
            insort(by_piece, _piece(stop, end) * _KEY + stop)
        self._used_start[address] = need
        self._used_end[stop] = need
        if chunk.used == 0:
            self._empty.remove(chunk)
            self._nonempty_bytes += chunk.size
        chunk.used += need
        chunk.extents += 1
        self._used_bytes += need
        self._ops += 1
        drain = self._drain  # self._track_drain(chunk, grew=True), its common case inline
        if drain is None or chunk is drain:
            self._track_drain(chunk, grew=True)
        elif chunk.extents < drain.extents:
            self._drain = chunk
        if self._empty or self._draining:  # else _after_op has nothing to do after an alloc
            self._after_op()
        return chunk, address

    def _register(self, buf: DmaBuffer) -> None:
        idx = bisect_left(self._live_starts, buf.device_address)
        self._live_starts.insert(idx, buf.device_address)
        self._live_bufs.insert(idx, buf)
        self._live_bytes += buf.size

    def _unregister(self, buf: DmaBuffer, extent: _Extent) -> None:
        """Drop a buffer ``_check_owned`` accepted from the registry (lock held)."""
        idx = bisect_left(self._live_starts, extent.start)
        del self._live_starts[idx]
        del self._live_bufs[idx]
        self._live_bytes -= extent.size
        object.__setattr__(buf, "freed", True)
        extent.freed_buffer = weakref.ref(buf)
        _release_view(buf.view)

    def _check_owned(self, buf: DmaBuffer, owner: object) -> _Extent:
        """The buffer's extent if ``owner`` handed out this very object and it is live; else the
        named error. Identity, not fields: the registry of live buffers must hold ``buf``
        itself at its address (a copy or a forged buffer carrying a live buffer's fields, or
        one whose address was altered, is refused and changes nothing)."""
        if not isinstance(buf, DmaBuffer) or buf.space is not self:
            raise ForeignBuffer(f"{buf!r} was not allocated from this space")
        extent = buf.meta
        address = buf.device_address
        if type(address) is int and type(extent) is _Extent:
            idx = bisect_left(self._live_starts, address)
            if idx < len(self._live_bufs) and self._live_bufs[idx] is buf:
                if extent.owner is not owner:
                    raise ForeignBuffer(f"{buf!r} was not handed out by {owner!r}")
                return extent
            ref = extent.freed_buffer
            if buf.freed and ref is not None and ref() is buf:
                if self._closed:
                    raise SpaceClosed(f"{buf!r} went with its closed {self.backend} DMA space")
                raise DoubleFree(
                    f"{buf!r} was already freed (allocated at {format_site(extent.alloc_site)}"
                    f", freed at {format_site(extent.free_site)})"
                )
        if buf.freed and self._closed:
            raise SpaceClosed(f"{buf!r} went with its closed {self.backend} DMA space")
        raise ForeignBuffer(
            f"{buf!r} is not a buffer this space handed out (a copy, a forged object or an "
            "altered address: buffers are checked by identity)"
        )

    # ------------------------------------------------------------------ sanitizer
    def _quarantine_add(self, buf: DmaBuffer, extent: _Extent) -> None:
        """Poison a freed extent and queue it (lock held, sanitizer on)."""
        extent.free_site = caller_site()
        chunk = extent.chunk
        base = chunk.device_address
        _fill(chunk.view, extent.start - base, extent.end - base, _POISON)
        self._quarantine.append(extent)
        self._quarantined += extent.end - extent.start

    def _quarantine_evict(self) -> list[UseAfterFree]:
        """Let the oldest extents leave the quarantine while it is over its bounds, or all of
        them once no buffer is live; check their poison on the way out (lock held). Returns
        what the checks found: the caller raises the first after its operation completed."""
        found: list[UseAfterFree] = []
        queue = self._quarantine
        everything = not self._live_bufs
        while queue and (
            everything
            or self._quarantined > self.quarantine_bytes
            or len(queue) > QUARANTINE_MAX_BUFFERS
        ):
            self._release_quarantined(queue.popleft(), found)
        return found

    def _quarantine_drop(self, owner: object) -> list[UseAfterFree]:
        """Take every quarantined extent of ``owner`` (a closing pool) out, checked (lock held)."""
        found: list[UseAfterFree] = []
        mine = [e for e in self._quarantine if e.owner is owner]
        if mine:
            self._quarantine = deque(e for e in self._quarantine if e.owner is not owner)
            for extent in mine:
                self._release_quarantined(extent, found)
        return found

    def _release_quarantined(self, extent: _Extent, found: list[UseAfterFree]) -> None:
        self._quarantined -= extent.end - extent.start
        chunk = extent.chunk
        base = chunk.device_address
        bad = _poison_intact(chunk.view, extent.start - base, extent.end - base)
        if bad is not None:
            self._counters["use_after_free"] += 1
            first, last = bad
            found.append(
                self._use_after_free(extent, extent.start + first, last - first + 1, "cpu")
            )
        owner = extent.owner
        if owner is self:
            self._give(extent)
        else:
            owner._reclaim(extent)  # type: ignore[attr-defined]  # a DmaPool

    def _quarantined_at(self, address: int, length: int) -> _Extent | None:
        """The newest quarantined extent overlapping ``[address, address + length)``."""
        end = address + max(length, 1)
        for extent in reversed(self._quarantine):
            if extent.start < end and address < extent.end:
                return extent
        return None

    def _use_after_free(
        self, extent: _Extent, address: int, length: int, side: str
    ) -> UseAfterFree:
        return UseAfterFree(
            address,
            length,
            side=side,
            buffer_address=extent.start,
            buffer_size=extent.size,
            alloc_site=format_site(extent.alloc_site),
            free_site=format_site(extent.free_site),
        )

    def _give(self, extent: _Extent) -> None:
        """Return an extent to the free lists (lock held), coalescing and returning pages."""
        chunk = extent.chunk
        start, end = extent.start, extent.end
        base = chunk.device_address
        _fill(chunk.view, start - base, end - base, _ZEROS)  # free space stays zero
        del self._used_start[start]
        del self._used_end[end]
        chunk.used -= end - start
        chunk.extents -= 1
        self._used_bytes -= end - start
        self._ops += 1
        right = self._free.get(end)
        if right is not None and right[1] is chunk:
            self._remove_free(end)
            end = right[0]
        left = self._free_end.get(start)
        if left is not None and self._free[left][1] is chunk:
            self._remove_free(left)
            start = left
        self._add_free(start, end, chunk)
        self._counters["frees"] += 1
        if chunk.used == 0:
            self._nonempty_bytes -= chunk.size
            chunk.idle_since = self._ops
            self._empty.append(chunk)
            if chunk in self._draining:
                self._draining.remove(chunk)
                self._draining_size -= chunk.size
        if self._empty and (not self._live_bufs or len(self._empty) > self.spare_chunks):
            self._trim(0 if not self._live_bufs else self.spare_chunks)
        drain = self._drain  # self._track_drain(chunk, grew=False), its common case inline
        if drain is None or chunk is drain:
            self._track_drain(chunk, grew=False)
        elif 0 < chunk.extents < drain.extents:
            self._drain = chunk
        self._after_op()

    def _after_op(self) -> None:
        """Spare expiry and the further draining chunks, after every free and the allocations
        that find spares or draining chunks (lock held): further chunks start draining only
        as free bytes grow, i.e. after frees."""
        empty = self._empty
        idle = self.spare_idle_ops
        if empty and idle is not None and self._ops - empty[0].idle_since >= idle:
            while empty and self._ops - empty[0].idle_since >= idle:
                self._release_chunk(empty.pop(0))
        # free bytes in non-empty chunks: the draining chunks' used bytes fit into the others'
        # free bytes exactly when slack >= their total size
        slack = self._nonempty_bytes - self._used_bytes
        draining = self._draining
        if slack < self._draining_size:
            while draining and slack < self._draining_size:  # give up the least drained
                chunk = max(draining, key=_used)
                draining.remove(chunk)
                self._draining_size -= chunk.size
        elif (
            slack >= self._draining_size + self._source.page_sizes[0]
            and slack >= DRAIN_SLACK_FRACTION * self._nonempty_bytes
            and self._ops >= self._steer_after
        ):
            self._steer(slack)

    def _steer(self, slack: int) -> None:
        """Add a further draining chunk: the non-empty, not yet draining chunk with the fewest
        used bytes, if the chunks left to allocate from have room for every draining chunk's
        used bytes (``slack``: free bytes of all non-empty chunks). It stays so until it
        empties or that room is gone (see :meth:`_after_op`)."""
        best: Chunk | None = None
        others = 0
        draining = self._draining
        for chunk in self._chunks.values():
            if chunk.used and chunk not in draining:
                others += 1
                if best is None or chunk.used < best.used:
                    best = chunk
        if best is not None and others > 1 and slack >= self._draining_size + best.size:
            draining.add(best)
            self._draining_size += best.size
        else:  # a walk over every chunk: not again on each of the next operations
            self._steer_after = self._ops + STEER_RETRY_OPS

    def _avoided(self) -> set[Chunk]:
        """Every draining chunk (lock held)."""
        drain = self._drain
        return self._draining | {drain} if drain is not None else set(self._draining)

    def _track_drain(self, touched: Chunk, *, grew: bool) -> None:
        """Keep the draining chunk the non-empty chunk with the fewest extents (buffers and pool
        pages), after ``touched`` gained (``grew``) or lost one (lock held). Only ``touched``
        changed, so it is compared with the draining chunk; every chunk is looked at only when
        the draining chunk emptied or had to take a buffer, or there was none."""
        drain = self._drain
        if drain is not None and touched is not drain:
            if 0 < touched.extents < drain.extents:
                self._drain = touched
            return
        if drain is not None and drain.extents and not grew:
            return  # it lost one: still the fewest
        best: Chunk | None = None
        if len(self._chunks) - len(self._empty) > 1:
            for chunk in self._chunks.values():
                if chunk.extents and (best is None or chunk.extents < best.extents):
                    best = chunk
        self._drain = best

    def trim(self) -> None:
        """Give every empty chunk back to the system now (no hysteresis)."""
        with self._lock:
            self._trim(0)

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise SpaceClosed(f"{self.backend} DMA space is closed")

    def _validate(
        self, size: int, align: int, boundary: int, limit: int | None, guard: int
    ) -> None:
        if not isinstance(size, int) or size <= 0:
            raise InvalidRequest(f"size must be a positive integer, got {size!r}")
        if not isinstance(align, int) or not _is_power_of_two(align):
            raise InvalidRequest(f"align must be a power of two, got {align!r}")
        if not isinstance(boundary, int) or (boundary != 0 and not _is_power_of_two(boundary)):
            raise InvalidRequest(f"boundary must be 0 or a power of two, got {boundary!r}")
        if boundary and size > boundary:
            raise InvalidRequest(f"size {size} is larger than its boundary {boundary}")
        largest = self._source.page_sizes[-1]
        if size + guard > largest or align > largest:
            raise RequestTooLarge(
                f"{size} bytes (+{guard} guard, align {align}) exceed the largest "
                f"{self.backend} page of {largest} bytes"
            )
        if limit is not None:
            if not isinstance(limit, int) or limit <= 0:
                raise InvalidRequest(f"limit must be a positive integer, got {limit!r}")
            if size + guard > limit:
                raise AddressLimitUnsatisfiable(f"{size} bytes cannot end below 0x{limit:x}")

    @staticmethod
    def _place(
        start: int, end: int, size: int, need: int, align: int, boundary: int, limit: int | None
    ) -> int | None:
        """Lowest address in ``[start, end)`` that takes the request, or None."""
        address = (start + align - 1) & -align
        if boundary and (address ^ (address + size - 1)) & -boundary:
            address = (address | (boundary - 1)) + 1  # next multiple of the boundary
        if address + need > end or (limit is not None and address + need > limit):
            return None
        return address

    @staticmethod
    def _place_high(
        start: int, end: int, size: int, need: int, align: int, boundary: int, limit: int | None
    ) -> int | None:
        """Highest address in ``[start, end)`` that takes the request, or None."""
        step = align if align > GRANULE else GRANULE  # extents stay GRANULE multiples
        top = end if limit is None else min(end, limit)
        address = (top - need) & -step
        if boundary and (address ^ (address + size - 1)) & -boundary:
            address = (((address + size - 1) & -boundary) - size) & -step  # end at the line
            if (address ^ (address + size - 1)) & -boundary:
                return None
        return address if address >= start else None

    def _position(
        self,
        start: int,
        end: int,
        size: int,
        need: int,
        align: int,
        boundary: int,
        limit: int | None,
    ) -> int | None:
        """Where the request goes in the free extent ``[start, end)`` (None: nowhere): next
        to the larger of the extent's neighbours, a LINE multiple counting as smaller than any
        extent, so the remainder stays by the smaller one (module docstring)."""
        left = -1 if not start & _LINE_MASK else self._used_end.get(start, 0)
        right = -1 if not end & _LINE_MASK else self._used_start.get(end, 0)
        if right > left:
            address = self._place_high(start, end, size, need, align, boundary, limit)
            if address is not None:
                return address
        return self._place(start, end, size, need, align, boundary, limit)

    def _best_fit(
        self, size: int, need: int, align: int, boundary: int, limit: int | None
    ) -> tuple[int, int, int] | None:
        """(extent start, buffer address, index of the extent's key in ``_by_piece`` or -1) of
        the placement policy's choice (module docstring) outside the draining chunk and empty
        spares; else the best fit in the draining chunk; else in a spare; else None.

        Extents are ranked by their largest piece between two LINE multiples: for requests
        with ``0 < boundary <= LINE`` (most: TRB buffers, segments, contexts) that is the room
        they can use, so the first candidates fit. Other requests that no piece takes (larger
        than a LINE, or free to straddle one) try every extent by its whole size, once, before
        the heap grows."""
        found = None
        if need <= LINE:
            found = self._scan(self._by_piece, size, need, align, boundary, limit)
            if found is not None or 0 < boundary <= LINE:
                return found
        keys = sorted((end - start) * _KEY + start for start, (end, _) in self._free.items())
        found = self._scan(keys, size, need, align, boundary, limit)
        return None if found is None else (found[0], found[1], -1)

    def _scan(
        self, keys: list[int], size: int, need: int, align: int, boundary: int, limit: int | None
    ) -> tuple[int, int, int] | None:
        """The first extent in ``keys`` (sorted ``room * _KEY + start``) that takes the request,
        outside the draining chunks and spares; else the first in a draining chunk; else in a
        spare: (start, address from :meth:`_position`, key index) or None."""
        free = self._free
        position = self._position
        drain = self._drain
        draining = self._draining
        fallback: tuple[int, int, int] | None = None  # in a draining chunk, else in a spare
        fallback_drains = False
        for i in range(bisect_left(keys, need * _KEY), len(keys)):
            start = keys[i] & _START
            end, chunk = free[start]
            address = position(start, end, size, need, align, boundary, limit)
            if address is None:
                continue
            if chunk.used and chunk is not drain and chunk not in draining:
                return start, address, i
            if fallback is None or (chunk.used and not fallback_drains):
                fallback, fallback_drains = (start, address, i), bool(chunk.used)
        return fallback

    def _grow(
        self, size: int, need: int, align: int, boundary: int, limit: int | None
    ) -> tuple[int, int, int]:
        page = next(p for p in self._source.page_sizes if p >= need and p >= align)
        chunk = self._source.acquire(page, limit)
        self._counters["chunks_acquired"] += 1
        self._chunks[chunk.device_address] = chunk
        chunk.idle_since = self._ops
        self._empty.append(chunk)
        self._add_free(chunk.device_address, chunk.end, chunk)
        address = self._place(chunk.device_address, chunk.end, size, need, align, boundary, limit)
        if address is None:
            self._empty.remove(chunk)
            self._release_chunk(chunk)
            raise AddressLimitUnsatisfiable(
                f"the {self.backend} backend gave memory at 0x{chunk.device_address:x}, "
                f"not below the limit 0x{limit or 0:x}"
            )
        return chunk.device_address, address, -1

    def _trim(self, keep: int) -> None:
        while len(self._empty) > keep:
            self._release_chunk(self._empty.pop())

    def _release_chunk(self, chunk: Chunk) -> None:
        if chunk.device_address in self._free:
            self._remove_free(chunk.device_address)
        del self._chunks[chunk.device_address]
        self._counters["chunks_released"] += 1
        self._source.release(chunk)

    def _add_free(self, start: int, end: int, chunk: Chunk) -> None:
        self._free[start] = (end, chunk)
        self._free_end[end] = start
        insort(self._by_piece, _piece(start, end) * _KEY + start)

    def _remove_free(self, start: int) -> None:
        end, _chunk = self._free.pop(start)
        del self._free_end[end]
        del self._by_piece[bisect_left(self._by_piece, _piece(start, end) * _KEY + start)]


def _release_view(view: memoryview) -> None:
    """Invalidate a buffer's view so CPU use-after-free raises ValueError. If a consumer still
    holds an export of it (numpy, ctypes), it stays valid until that consumer lets go."""
    try:
        view.release()
    except BufferError:
        pass
