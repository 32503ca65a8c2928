"""The iova backend against a recording mapper that enforces what VFIO_IOMMU_MAP_DMA enforces:
page-aligned vaddr/iova/size, no overlapping IOVA ranges, nothing at or above the IOMMU's
address limit or inside a reserved window, unmap of exactly a mapped range."""

from __future__ import annotations

import mmap

import pytest
from dbc_harness.allocator import (
    AddressLimitUnsatisfiable,
    DmaFault,
    DmaMapper,
    IovaDmaSpace,
)

MiB = 1 << 20
MSI = (0xFEE0_0000, 0xFEF0_0000)


class MapperRefused(Exception):
    pass


class RecordingMapper:
    """A strict stand-in for the VFIO type1 container: records and validates every call."""

    def __init__(
        self,
        *,
        iova_pgsize: int = 4096,
        address_limit: int = 1 << 39,
        reserved: tuple[tuple[int, int], ...] = (MSI,),
        fail_after: int | None = None,
    ) -> None:
        self.iova_pgsize = iova_pgsize
        self.address_limit = address_limit
        self.reserved = reserved
        self.mapped: dict[int, tuple[int, int]] = {}  # iova -> (vaddr, size)
        self.calls: list[tuple[str, int, int]] = []
        self.fail_after = fail_after

    def map(self, vaddr: int, iova: int, size: int) -> None:
        if self.fail_after is not None and len(self.mapped) >= self.fail_after:
            raise MapperRefused("VFIO_IOMMU_MAP_DMA: ENOMEM (locked memory limit)")
        pg = self.iova_pgsize
        assert vaddr % pg == 0 and iova % pg == 0 and size % pg == 0 and size > 0
        assert iova + size <= self.address_limit
        for start, end in self.reserved:
            assert iova + size <= start or iova >= end, f"maps reserved 0x{start:x}"
        for other, (_, other_size) in self.mapped.items():
            assert iova + size <= other or iova >= other + other_size, "IOVA overlap"
        self.mapped[iova] = (vaddr, size)
        self.calls.append(("map", iova, size))

    def unmap(self, iova: int, size: int) -> None:
        assert self.mapped.pop(iova)[1] == size, "unmap of a range that was not mapped"
        self.calls.append(("unmap", iova, size))


def test_recording_mapper_satisfies_the_protocol() -> None:
    assert isinstance(RecordingMapper(), DmaMapper)


def test_iovas_are_ours_aligned_mapped_and_unmapped() -> None:
    mapper = RecordingMapper()
    with IovaDmaSpace(mapper) as space:
        bufs = [space.alloc(n, boundary=64 << 10) for n in (64, 5000, 65536)]
        bufs.append(space.alloc(3 * MiB))
        # 64 KiB chunks: 64 B and 5000 B share one, 64 KiB takes another; 3 MiB takes a 4 MiB
        assert sorted(size for _, size in mapper.mapped.values()) == [64 << 10, 64 << 10, 4 * MiB]
        for buf in bufs:
            iova = max(i for i in mapper.mapped if i <= buf.device_address)
            vaddr, size = mapper.mapped[iova]
            assert buf.end <= iova + size
            # the CPU view is exactly the memory mapped at that IOVA
            cpu = (ctypes_address(buf.view)) - vaddr
            assert cpu == buf.device_address - iova
            assert buf.device_address != ctypes_address(buf.view)  # never iova = vaddr
            space.device_write(buf.device_address, b"dma")
            assert bytes(buf.view[:3]) == b"dma"
        for buf in bufs:
            space.free(buf)
        assert mapper.mapped == {}
        assert space.stats()["held_bytes"] == 0


def test_limit_and_reserved_ranges_are_honoured() -> None:
    # everything below 4 GiB is reserved except 0xFF000000-0xFFFFFFFF (above the MSI window)
    mapper = RecordingMapper(reserved=((0, 0xFF00_0000),))
    with IovaDmaSpace(mapper) as space:
        low = [space.alloc(1 * MiB, align=4096, limit=1 << 32) for _ in range(16)]
        assert all(0xFF00_0000 <= b.device_address and b.end <= 1 << 32 for b in low)
        with pytest.raises(AddressLimitUnsatisfiable):
            space.alloc(1 * MiB, limit=1 << 32)  # the 16 MiB below 4 GiB are used up
        high = space.alloc(1 * MiB)  # without a limit it goes above
        assert high.device_address >= 1 << 32
        held = space.stats()["held_bytes"]
        assert held == sum(size for _, size in mapper.mapped.values())


def test_msi_window_is_avoided_even_if_the_mapper_forgets_it() -> None:
    mapper = RecordingMapper(reserved=((0, 0xFEC0_0000),))
    with IovaDmaSpace(mapper) as space:
        bufs = [space.alloc(2 * MiB, align=4096, limit=1 << 32) for _ in range(6)]
        for buf in bufs:
            assert buf.end <= MSI[0] or buf.device_address >= MSI[1]


def test_mapper_failure_leaks_nothing() -> None:
    mapper = RecordingMapper(fail_after=1)
    with IovaDmaSpace(mapper) as space:
        first = space.alloc(2 * MiB)
        before = space.stats()
        with pytest.raises(MapperRefused):
            space.alloc(2 * MiB)
        assert space.stats()["held_bytes"] == before["held_bytes"]
        mapper.fail_after = None
        second = space.alloc(2 * MiB)  # the window slot was given back and is reused
        assert second.device_address == first.end
    assert mapper.mapped == {}


def test_address_limit_of_the_iommu_is_a_hard_ceiling() -> None:
    mapper = RecordingMapper(address_limit=8 * MiB)
    with IovaDmaSpace(mapper) as space:
        bufs = [space.alloc(2 * MiB, align=4096) for _ in range(3)]  # 1 MiB base: 2..8 MiB
        with pytest.raises(AddressLimitUnsatisfiable):
            space.alloc(2 * MiB)
        space.free(bufs[0])
        with pytest.raises(DmaFault):
            space.device_read(bufs[0].device_address, 1)


def ctypes_address(view: memoryview) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def test_large_iommu_pages() -> None:
    mapper = RecordingMapper(iova_pgsize=2 * MiB)
    with IovaDmaSpace(mapper) as space:
        buf = space.alloc(mmap.PAGESIZE)
        assert buf.device_address % (2 * MiB) == 0


def test_default_granule_is_64k_or_the_iommu_page_and_2m_with_hugepages() -> None:
    """Pinned memory counts against RLIMIT_MEMLOCK: small buffers pin 64 KiB, not 2 MiB."""
    mapper = RecordingMapper()
    with IovaDmaSpace(mapper) as space:
        assert space.page_sizes[0] == 64 << 10
        buf = space.alloc(256)
        assert [size for _, size in mapper.mapped.values()] == [64 << 10]
        space.free(buf)
    with IovaDmaSpace(RecordingMapper(iova_pgsize=2 * MiB)) as space:
        assert space.page_sizes[0] == 2 * MiB
    with IovaDmaSpace(RecordingMapper(), hugepages=True) as space:
        assert space.page_sizes[0] == 2 * MiB  # nothing mapped yet: no hugepage needed
