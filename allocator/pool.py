"""Fixed-size block pools with Linux ``dma_pool`` semantics: :class:`DmaPool`.

``space.pool(size, align=, boundary=, limit=)`` is ``dma_pool_create(name, dev, size, align,
boundary)``: every block is ``size`` bytes, aligned to ``align``, never straddles a multiple of
``boundary`` and lies below ``limit``. Blocks are carved from pool pages (power-of-two sized,
naturally aligned extents of the space's heap) and kept on O(1) free lists; a block is zeroed
when handed out. An empty page goes back to the heap, except one spare page kept while other
blocks are live; when the pool's last block is freed every page goes back.

With the space's sanitizer on, a freed block is poisoned and waits in the space's quarantine
(shared with heap buffers, same bound) before it rejoins its page's free list; its poison is
checked then (see :mod:`allocator.heap`). Until then it keeps its page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from dbc_harness.allocator.chunk import _ZEROS, Chunk, _Extent, _fill, caller_site
from dbc_harness.allocator.errors import SpaceClosed
from dbc_harness.allocator.space import DmaBuffer

if TYPE_CHECKING:
    from dbc_harness.allocator.heap import HeapDmaSpace

MIN_POOL_PAGE = 4096


@dataclass(eq=False)
class _PoolPage:
    chunk: Chunk
    address: int
    extent: _Extent
    free: list[int] = field(default_factory=list)
    live: int = 0  # blocks handed out and not yet back on ``free`` (live or quarantined)


class DmaPool:
    """A pool of fixed-size DMA blocks. Thread-safe (shares its space's lock). A context
    manager: ``close()`` frees every block and gives the pages back."""

    def __init__(
        self,
        space: HeapDmaSpace,
        size: int,
        *,
        align: int = 64,
        boundary: int = 0,
        limit: int | None = None,
    ) -> None:
        space._validate(size, align, boundary, limit, space.guard)
        self.space = space
        self.size = size
        self.align = align
        self.boundary = boundary
        self.limit = limit
        self.guard = space.guard
        self.stride = (size + self.guard + align - 1) // align * align
        page = MIN_POOL_PAGE
        while page < self.stride:
            page *= 2
        self.page_bytes = min(page, space.page_sizes[-1])
        if self.stride > self.page_bytes:
            space._validate(self.stride, align, 0, limit, 0)  # raises RequestTooLarge
        self._offsets = self._carve()
        self._pages: dict[int, _PoolPage] = {}
        self._partial: list[_PoolPage] = []  # pages with at least one free block
        self._live = 0  # blocks handed out and not freed
        self._held = 0  # ... plus freed blocks still in the space's quarantine
        self._closed = False

    def _carve(self) -> list[int]:
        """Block offsets inside one page; the page is aligned to ``page_bytes``, so a block
        that does not cross a boundary relative to the page does not cross it absolutely."""
        offsets: list[int] = []
        offset = 0
        need = self.size + self.guard
        while offset + need <= self.page_bytes:
            last = offset + self.size - 1
            if self.boundary and offset // self.boundary != last // self.boundary:
                offset = (offset // self.boundary + 1) * self.boundary
                continue
            offsets.append(offset)
            offset += self.stride
        return offsets

    @property
    def blocks_per_page(self) -> int:
        return len(self._offsets)

    def alloc(self) -> DmaBuffer:
        """One zeroed block (dma_pool_zalloc)."""
        space = self.space
        with space._lock:
            if self._closed:
                raise SpaceClosed("DMA pool is closed")
            if not self._partial:
                self._add_page()
            page = self._partial[-1]
            address = page.free.pop()
            if not page.free:
                self._partial.pop()
            page.live += 1
            self._live += 1
            self._held += 1
            chunk = page.chunk
            base = address - chunk.device_address
            need = self.size + self.guard
            _fill(chunk.view, base, base + need, _ZEROS)
            extent = _Extent(chunk, address, address + need, self, self.size)
            if space.sanitize:
                extent.alloc_site = caller_site()
            buf = DmaBuffer(space, address, self.size, chunk.view[base : base + self.size], extent)
            space._register(buf)
            return buf

    def free(self, buf: DmaBuffer) -> None:
        """Give a block back (DoubleFree / ForeignBuffer on misuse; UseAfterFree when the
        sanitizer finds a block leaving quarantine written after its free)."""
        space = self.space
        with space._lock:
            extent = space._check_owned(buf, self)
            space._unregister(buf, extent)
            self._live -= 1
            if space.sanitize:
                space._quarantine_add(buf, extent)
                found = space._quarantine_evict()
                if found:
                    raise found[0]
            else:
                self._reclaim(extent)

    def _reclaim(self, extent: _Extent) -> None:
        """A freed block rejoins its page's free list (lock held); pages go back as documented."""
        address = extent.start
        page = self._pages[address // self.page_bytes * self.page_bytes]
        if not page.free:
            self._partial.append(page)
        page.free.append(address)
        page.live -= 1
        self._held -= 1
        if self._held == 0:
            for spare in list(self._pages.values()):
                self._drop_page(spare)
        elif page.live == 0 and sum(p.live == 0 for p in self._partial) > 1:
            self._drop_page(page)

    def stats(self) -> dict[str, int]:
        with self.space._lock:
            return {
                "live_blocks": self._live,
                "pages": len(self._pages),
                "page_bytes": self.page_bytes,
                "blocks_per_page": self.blocks_per_page,
            }

    def close(self) -> None:
        """Free every block and give every page back (dma_pool_destroy). Idempotent."""
        space = self.space
        with space._lock:
            if self._closed:
                return
            self._closed = True
            if space.closed:
                return
            for buf in [b for b in space._live_bufs if b.meta.owner is self]:
                space._unregister(buf, buf.meta)
                self._live -= 1
            found = space._quarantine_drop(self)
            for page in list(self._pages.values()):
                self._drop_page(page)
            self._held = 0
            if self in space._pools:
                space._pools.remove(self)
            if found:
                raise found[0]

    def _add_page(self) -> None:
        space = self.space
        chunk, address = space._take(self.page_bytes, self.page_bytes, 0, self.limit, guard=0)
        extent = _Extent(chunk, address, address + self.page_bytes, self)
        page = _PoolPage(chunk, address, extent)
        page.free = [address + off for off in reversed(self._offsets)]
        self._pages[address] = page
        self._partial.append(page)

    def _drop_page(self, page: _PoolPage) -> None:
        del self._pages[page.address]
        if page.free:
            self._partial.remove(page)
        self.space._give(page.extent)

    def __enter__(self) -> DmaPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"DmaPool(size={self.size}, align={self.align}, boundary={self.boundary}, "
            f"limit={self.limit})"
        )
