"""The iova backend: memory mapped for one device through an IOMMU (VFIO type1 / iommufd).

The binding layer supplies a :class:`DmaMapper` (``map(vaddr, iova, size)`` /
``unmap(iova, size)`` plus the IOMMU's page size, address limit and reserved windows). We pick
the IOVAs ourselves with an :class:`~allocator.window.AddressWindow`: naturally aligned chunks,
never inside a reserved range (the MSI window 0xFEE00000-0xFEEFFFFF is always avoided), lowest
first so that a ``limit=1 << 32`` request (HCCPARAMS1.AC64 = 0) is served below 4 GiB. We never
use iova = vaddr.
"""

from __future__ import annotations

import mmap
from typing import Protocol, runtime_checkable

from dbc_harness.allocator.chunk import Chunk
from dbc_harness.allocator.errors import InvalidRequest
from dbc_harness.allocator.heap import (
    DEFAULT_QUARANTINE_BYTES,
    DEFAULT_SPARE_IDLE_OPS,
    HeapDmaSpace,
)
from dbc_harness.allocator.hugepage import MAP_HUGETLB, MAP_LOCKED, MAP_POPULATE, mapping_address
from dbc_harness.allocator.window import MSI_WINDOW, AddressWindow

MiB = 1 << 20
#: default granule without hugepages: one 64 KiB boundary window (the largest TRB buffer)
DEFAULT_CHUNK = 64 << 10
#: largest chunk mapped in one piece
MAX_CHUNK = 1 << 30
#: lowest IOVA we hand out: keep IOVA 0 (and the first MiB) unmapped so a zero pointer faults
DEFAULT_IOVA_BASE = 1 * MiB


@runtime_checkable
class DmaMapper(Protocol):
    """Maps process memory into one device's IO address space (e.g. VFIO_IOMMU_MAP_DMA)."""

    #: smallest IOMMU page size: vaddr, iova and size of every map() are multiples of it
    iova_pgsize: int
    #: first IOVA the IOMMU cannot translate (exclusive upper bound), e.g. 1 << 39
    address_limit: int
    #: half-open IOVA ranges that must never be mapped (MSI doorbells, reserved regions)
    reserved: tuple[tuple[int, int], ...]

    def map(self, vaddr: int, iova: int, size: int) -> None:
        """Make ``[iova, iova + size)`` reach ``[vaddr, vaddr + size)``."""
        ...

    def unmap(self, iova: int, size: int) -> None:
        """Undo one earlier ``map`` of exactly that range."""
        ...


class IovaChunkSource:
    """Anonymous (optionally hugepage) memory mapped at IOVAs we choose."""

    backend = "iova"

    def __init__(self, mapper: DmaMapper, chunk_size: int, hugepages: bool, iova_base: int) -> None:
        pgsize = mapper.iova_pgsize
        if pgsize <= 0 or pgsize & (pgsize - 1):
            raise InvalidRequest(f"mapper iova_pgsize {pgsize} is not a power of two")
        if chunk_size < max(pgsize, mmap.PAGESIZE) or chunk_size & (chunk_size - 1):
            raise InvalidRequest(
                f"chunk_size {chunk_size} must be a power of two >= the IOMMU page {pgsize}"
            )
        if hugepages and chunk_size % (2 * MiB):
            raise InvalidRequest(f"hugepage-backed chunks must be 2 MiB multiples: {chunk_size}")
        base = (iova_base + chunk_size - 1) // chunk_size * chunk_size
        self._window = AddressWindow(
            base, mapper.address_limit - base, (*mapper.reserved, MSI_WINDOW)
        )
        self._mapper = mapper
        self._hugepages = hugepages
        # chunk_size, then every power of two up to MAX_CHUNK for larger requests
        sizes = [chunk_size]
        while sizes[-1] < MAX_CHUNK:
            sizes.append(sizes[-1] * 2)
        self.page_sizes: tuple[int, ...] = tuple(sizes)

    def acquire(self, size: int, limit: int | None) -> Chunk:
        iova = self._window.take(size, size, limit)
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED
        if self._hugepages:
            flags |= MAP_HUGETLB
        memory: mmap.mmap | None = None
        try:
            memory = mmap.mmap(-1, size, flags=flags)
            self._mapper.map(mapping_address(memory), iova, size)
        except BaseException:
            if memory is not None:
                memory.close()
            self._window.give_back(iova)
            raise
        return Chunk(iova, size, memoryview(memory), handle=memory)

    def release(self, chunk: Chunk) -> None:
        # unmap first: the device must lose access before the memory can be recycled
        self._mapper.unmap(chunk.device_address, chunk.size)
        self._window.give_back(chunk.device_address)
        chunk.view.release()
        try:
            chunk.handle.close()
        except BufferError:
            pass  # a view is still held: the mapping goes when it lets go (no longer mapped)

    def close(self) -> None:
        return None


class IovaDmaSpace(HeapDmaSpace):
    """DMA memory for one device behind an IOMMU; device addresses are IOVAs we allocate.

    ``chunk_size``: granule mapped per ``map()`` call. By default 64 KiB (or the IOMMU page if
    larger): every mapped byte is pinned, and VFIO charges pinned pages to RLIMIT_MEMLOCK, so
    the granule is kept small for rings and buffers of 64 B-64 KiB; anonymous 4 KiB pages give
    the IOMMU no large pages to use anyway. With ``hugepages=True`` (chunks backed by
    MAP_HUGETLB pages, needs free hugepages, lets the IOMMU use 2 MiB pages) it is 2 MiB.
    ``sanitize``: off by default, as for the hugepage backend (quarantined memory stays mapped
    and pinned); the IOMMU already faults device accesses outside mapped chunks.
    """

    def __init__(
        self,
        mapper: DmaMapper,
        *,
        chunk_size: int | None = None,
        hugepages: bool = False,
        iova_base: int = DEFAULT_IOVA_BASE,
        guard: int = 0,
        spare_chunks: int = 1,
        spare_idle_ops: int | None = DEFAULT_SPARE_IDLE_OPS,
        sanitize: bool = False,
        quarantine_bytes: int = DEFAULT_QUARANTINE_BYTES,
    ) -> None:
        self.mapper = mapper
        if chunk_size is None:
            chunk_size = 2 * MiB if hugepages else max(DEFAULT_CHUNK, mapper.iova_pgsize)
        super().__init__(
            IovaChunkSource(mapper, chunk_size, hugepages, iova_base),
            guard=guard,
            spare_chunks=spare_chunks,
            spare_idle_ops=spare_idle_ops,
            sanitize=sanitize,
            quarantine_bytes=quarantine_bytes,
        )

    def __repr__(self) -> str:
        return f"IovaDmaSpace(mapper={self.mapper!r})"
