"""The emulated DMA space: CPU side and device side (IOMMU semantics) as a device model sees it."""

from __future__ import annotations

import pytest
from dbc_harness.allocator import (
    AddressLimitUnsatisfiable,
    DmaFault,
    DoubleFree,
    EmulatedDmaSpace,
    ForeignBuffer,
    SpaceClosed,
)

MiB = 1 << 20


def test_device_sees_cpu_writes_and_cpu_sees_device_writes() -> None:
    with EmulatedDmaSpace() as space:
        buf = space.alloc(4096, align=4096)
        buf.view[0:4] = b"\x01\x02\x03\x04"
        assert space.device_read(buf.device_address, 4) == b"\x01\x02\x03\x04"
        space.device_write(buf.device_address + 100, b"hello")
        assert bytes(buf.view[100:105]) == b"hello"
        view = space.device_view(buf.device_address + 8, 8)
        view[:] = b"ABCDEFGH"
        assert bytes(buf.view[8:16]) == b"ABCDEFGH"


def test_access_outside_live_buffers_faults_naming_the_address() -> None:
    with EmulatedDmaSpace() as space:
        buf = space.alloc(100)
        with pytest.raises(DmaFault) as info:
            space.device_read(buf.device_address + 99, 2)  # runs past the end
        assert info.value.address == buf.device_address + 99
        assert f"{buf.device_address + 99:x}" in str(info.value)
        with pytest.raises(DmaFault):
            space.device_write(buf.device_address - 1, b"x")
        with pytest.raises(DmaFault):
            space.device_read(0x10, 1)


def test_access_spanning_two_adjacent_buffers_faults() -> None:
    with EmulatedDmaSpace() as space:
        a = space.alloc(64, align=64)
        b = space.alloc(64, align=64)
        lo, hi = sorted((a, b), key=lambda x: x.device_address)
        assert lo.end == hi.device_address  # placed back to back
        with pytest.raises(DmaFault):
            space.device_read(lo.end - 8, 16)


def test_freed_buffer_faults_and_its_view_is_dead() -> None:
    with EmulatedDmaSpace() as space:
        keep = space.alloc(64)
        buf = space.alloc(256)
        address = buf.device_address
        space.free(buf)
        with pytest.raises(DmaFault):
            space.device_read(address, 1)
        with pytest.raises(ValueError):
            buf.view[0] = 1
        with pytest.raises(DoubleFree):
            space.free(buf)
        space.free(keep)


def test_base_below_4gib_and_limit() -> None:
    with EmulatedDmaSpace(base=0x1000_0000, size=1 << 30) as low:
        buf = low.alloc(4096, limit=1 << 32)
        assert buf.end <= 1 << 32
        assert buf.device_address >= 0x1000_0000
    with EmulatedDmaSpace(base=0x1_0000_0000) as high:
        with pytest.raises(AddressLimitUnsatisfiable):
            high.alloc(4096, limit=1 << 32)
        assert high.stats()["held_bytes"] == 0


def test_foreign_buffer_and_closed_space() -> None:
    with EmulatedDmaSpace() as one, EmulatedDmaSpace() as two:
        buf = one.alloc(64)
        with pytest.raises(ForeignBuffer):
            two.free(buf)
        with pytest.raises(ForeignBuffer):
            one.lookup(buf.device_address + 64)
    with pytest.raises(SpaceClosed):
        one.alloc(64)
    assert buf.freed  # closing freed it; freeing it again says why
    with pytest.raises(SpaceClosed):
        one.free(buf)
    with pytest.raises(DmaFault):
        one.device_read(buf.device_address, 1)


def test_lookup_round_trip_interior_address() -> None:
    with EmulatedDmaSpace() as space:
        bufs = [space.alloc(n) for n in (64, 1000, 4096, 70000 // 2)]
        for buf in bufs:
            for offset in (0, 1, buf.size // 2, buf.size - 1):
                found, off = space.lookup(buf.device_address_at(offset))
                assert found is buf and off == offset
                assert buf.contiguous_length(buf.device_address_at(offset)) == buf.size - offset
                assert space.contiguous_length(buf.device_address_at(offset)) == buf.size - offset


def test_empty_chunks_go_back_to_the_system() -> None:
    with EmulatedDmaSpace(chunk_size=2 * MiB) as space:
        bufs = [space.alloc(1 * MiB, align=4096) for _ in range(6)]
        assert space.stats()["held_bytes"] == 6 * MiB
        for buf in bufs:
            space.free(buf)
        assert space.stats()["held_bytes"] == 0
