"""The hugepage backend: physically contiguous memory whose device address is its physical
address (no IOMMU, or an IOMMU in passthrough), read from ``/proc/self/pagemap``.

Chunks are anonymous ``MAP_HUGETLB`` mappings of the smallest page size that fits (2 MiB, then
1 GiB; 4 KiB base pages only with ``small_pages=True`` and only for requests that fit one page),
populated and locked (``MAP_POPULATE | MAP_LOCKED`` and a checked ``mlock``). Every chunk is
checked page by page for physical contiguity and natural alignment through one kept-open
pagemap fd (one batched pread per chunk).

Caveat: the kernel does not move hugetlb pages in ordinary compaction, but it may migrate
mlocked 4 KiB pages unless ``/proc/sys/vm/compact_unevictable_allowed`` is 0. Under VFIO use the
iova backend instead (the IOMMU pins the pages).
"""

from __future__ import annotations

import ctypes
import errno
import mmap

from dbc_harness.allocator.chunk import Chunk
from dbc_harness.allocator.errors import ContiguityError, HugepagesUnavailable, InvalidRequest
from dbc_harness.allocator.heap import (
    DEFAULT_QUARANTINE_BYTES,
    DEFAULT_SPARE_IDLE_OPS,
    HeapDmaSpace,
)
from dbc_harness.allocator.pagemap import BASE_PAGE, Pagemap
from dbc_harness.allocator.reservation import HugepageReservation, hugepage_dir

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

MAP_HUGETLB = 0x40000
MAP_POPULATE = 0x8000
MAP_LOCKED = 0x2000
MAP_HUGE_SHIFT = 26
#: log2 of the page size in the MAP_HUGE_* bits of mmap's flags
_HUGE_FLAGS = {2 * MiB: 21 << MAP_HUGE_SHIFT, 1 * GiB: 30 << MAP_HUGE_SHIFT}


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


def lock_memory(vaddr: int, size: int) -> None:
    """mlock(2) the range (MAP_LOCKED alone does not report failure); HugepagesUnavailable
    naming RLIMIT_MEMLOCK when the kernel refuses."""
    if _libc.mlock(vaddr, size) != 0:
        err = ctypes.get_errno()
        raise HugepagesUnavailable(
            f"mlock of {size} bytes failed ({errno.errorcode.get(err, err)}): raise "
            "RLIMIT_MEMLOCK (ulimit -l) or run as root"
        )


def mapping_address(memory: mmap.mmap) -> int:
    """Virtual address of an mmap (the ctypes export is dropped before returning)."""
    anchor = ctypes.c_char.from_buffer(memory)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


class HugepageChunkSource:
    """Hugepage chunks with physical device addresses."""

    backend = "hugepage"

    def __init__(
        self, page_sizes: tuple[int, ...] = (2 * MiB, 1 * GiB), small_pages: bool = False
    ) -> None:
        for size in page_sizes:
            if size not in _HUGE_FLAGS:
                raise InvalidRequest(f"unsupported hugepage size {size}")
        sizes = sorted(page_sizes)
        self.page_sizes: tuple[int, ...] = tuple([BASE_PAGE, *sizes] if small_pages else sizes)
        self._pagemap = Pagemap()
        self._deferred: list[mmap.mmap] = []

    def acquire(self, size: int, limit: int | None) -> Chunk:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED
        if size != BASE_PAGE:
            flags |= MAP_HUGETLB | _HUGE_FLAGS[size]
        try:
            memory = mmap.mmap(-1, size, flags=flags)
        except OSError as exc:
            if size == BASE_PAGE or exc.errno not in (errno.ENOMEM, errno.EINVAL):
                raise
            path = hugepage_dir(size // KiB) / "nr_hugepages"
            raise HugepagesUnavailable(
                f"no free {size // KiB} kB hugepage ({exc.strerror}): reserve some with "
                f"HugepageReservation or `echo N > {path}`"
            ) from exc
        try:
            vaddr = mapping_address(memory)
            lock_memory(vaddr, size)
            paddr = self._pagemap.contiguous_physical_address(vaddr, size)
            if paddr % size:
                raise ContiguityError(f"{size}-byte page at 0x{paddr:x} is not naturally aligned")
        except BaseException:
            memory.close()
            raise
        return Chunk(paddr, size, memoryview(memory), handle=memory)

    def release(self, chunk: Chunk) -> None:
        chunk.view.release()
        memory: mmap.mmap = chunk.handle
        try:
            memory.close()
        except BufferError:
            self._deferred.append(memory)  # still viewed somewhere: unmapped at close()
        self._retry_deferred()

    def _retry_deferred(self) -> None:
        still: list[mmap.mmap] = []
        for memory in self._deferred:
            try:
                memory.close()
            except BufferError:
                still.append(memory)
        self._deferred = still

    @property
    def deferred_unmaps(self) -> int:
        """Chunks given back whose mapping outlives them because a view is still held."""
        return len(self._deferred)

    def close(self) -> None:
        self._retry_deferred()
        self._pagemap.close()


class HugepageDmaSpace(HeapDmaSpace):
    """DMA memory from hugepages, addressed physically.

    ``reserve``: reserve that many 2 MiB hugepages for the life of the space (a
    :class:`HugepageReservation` released by ``close()``); ``reservation``: an existing
    reservation the caller keeps owning. Without either, hugepages already free are used and a
    shortfall raises :class:`HugepagesUnavailable` naming the sysfs file to write.

    ``sanitize`` is off by default here: poisoning and checking every freed byte costs about a
    quarter more time per allocation and the quarantine holds up to ``quarantine_bytes`` of
    hugepage memory (``bench allocator --backend hugepage`` measures both settings). Turn it on
    to catch a controller writing into freed memory: the poison check at quarantine exit is the
    only way to see such a write on real hardware.
    """

    def __init__(
        self,
        *,
        reserve: int = 0,
        reservation: HugepageReservation | None = None,
        page_sizes: tuple[int, ...] = (2 * MiB, 1 * GiB),
        small_pages: bool = False,
        guard: int = 0,
        spare_chunks: int = 1,
        spare_idle_ops: int | None = DEFAULT_SPARE_IDLE_OPS,
        sanitize: bool = False,
        quarantine_bytes: int = DEFAULT_QUARANTINE_BYTES,
    ) -> None:
        self._own_reservation = HugepageReservation(reserve) if reserve else None
        self.reservation = reservation or self._own_reservation
        try:
            source = HugepageChunkSource(page_sizes, small_pages)
        except BaseException:
            if self._own_reservation is not None:
                self._own_reservation.release()
            raise
        super().__init__(
            source,
            guard=guard,
            spare_chunks=spare_chunks,
            spare_idle_ops=spare_idle_ops,
            sanitize=sanitize,
            quarantine_bytes=quarantine_bytes,
        )

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._own_reservation is not None:
                self._own_reservation.release()

    def __repr__(self) -> str:
        return f"HugepageDmaSpace(page_sizes={self.page_sizes})"
