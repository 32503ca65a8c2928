"""Host-side tests of the VFIO/iommufd ABI constants and structs, the DMA mapper's address
policy, the MMIO region, and discovery on this machine (which has no xHCI)."""

from __future__ import annotations

import mmap
import struct
from typing import Any

import pytest
from dbc_harness.harness.binding import vfio
from dbc_harness.harness.binding.discovery import describe, list_controllers
from dbc_harness.harness.binding.dma_mapper import FOUR_GIB, MSI_WINDOW, VfioDmaMapper
from dbc_harness.harness.binding.errors import MmioError, NoIommu, VfioError
from dbc_harness.harness.binding.mmio import MmioRegion
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness_fakesys import fake_sysfs, make_device


def test_ioctl_request_numbers_match_the_uapi_headers() -> None:
    # _IO(';', VFIO_BASE + n) with VFIO_BASE = 100; iommufd commands start at 0x80
    expected = {
        "VFIO_GET_API_VERSION": 0x3B64,
        "VFIO_CHECK_EXTENSION": 0x3B65,
        "VFIO_SET_IOMMU": 0x3B66,
        "VFIO_GROUP_GET_STATUS": 0x3B67,
        "VFIO_GROUP_SET_CONTAINER": 0x3B68,
        "VFIO_GROUP_GET_DEVICE_FD": 0x3B6A,
        "VFIO_DEVICE_GET_INFO": 0x3B6B,
        "VFIO_DEVICE_GET_REGION_INFO": 0x3B6C,
        "VFIO_DEVICE_RESET": 0x3B6F,
        "VFIO_IOMMU_GET_INFO": 0x3B70,
        "VFIO_IOMMU_MAP_DMA": 0x3B71,
        "VFIO_IOMMU_UNMAP_DMA": 0x3B72,
        "VFIO_DEVICE_BIND_IOMMUFD": 0x3B76,
        "VFIO_DEVICE_ATTACH_IOMMUFD_PT": 0x3B77,
        "IOMMU_IOAS_ALLOC": 0x3B81,
        "IOMMU_IOAS_MAP": 0x3B85,
        "IOMMU_IOAS_UNMAP": 0x3B86,
    }
    assert {name: getattr(vfio, name) for name in expected} == expected


def test_struct_sizes_match_the_uapi_headers() -> None:
    sizes = {
        vfio.GROUP_STATUS: 8,
        vfio.DEVICE_INFO: 24,
        vfio.REGION_INFO: 32,
        vfio.IOMMU_INFO: 24,
        vfio.DMA_MAP: 32,
        vfio.DMA_UNMAP: 24,
        vfio.BIND_IOMMUFD: 16,
        vfio.ATTACH_IOMMUFD_PT: 12,
        vfio.IOAS_ALLOC: 12,
        vfio.IOAS_MAP: 40,
        vfio.IOAS_UNMAP: 24,
    }
    assert {s.format: s.size for s in sizes} == {s.format: n for s, n in sizes.items()}


def _iommu_info_blob(pgsizes: int, ranges: list[tuple[int, int]]) -> bytes:
    cap = vfio.CAP_HEADER.pack(vfio.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, 0)
    cap += vfio.IOVA_RANGE_CAP.pack(len(ranges), 0)
    cap += b"".join(vfio.IOVA_RANGE.pack(s, e) for s, e in ranges)
    # an unrelated capability first, chained to the IOVA range one
    other = vfio.CAP_HEADER.pack(2, 1, 24 + 8) + b"\0" * 0
    flags = vfio.VFIO_IOMMU_INFO_PGSIZES | vfio.VFIO_IOMMU_INFO_CAPS
    head = vfio.IOMMU_INFO.pack(24 + len(other) + len(cap), flags, pgsizes, 24, 0)
    return head + other + cap


def test_iommu_info_capability_chain_is_decoded() -> None:
    # what VT-d reports: everything but the MSI window, inclusive ends
    ranges = [(0, 0xFEDF_FFFF), (0xFEF0_0000, (1 << 39) - 1)]
    info = vfio.parse_iommu_info(_iommu_info_blob(0x40201000, ranges))
    assert info.min_pgsize == 4096
    assert info.iova_ranges == ((0, 0xFEE0_0000), (0xFEF0_0000, 1 << 39))


class _RecordingBackend:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def map_dma(self, vaddr: int, iova: int, size: int) -> None:
        self.calls.append(("map", iova, size))

    def unmap_dma(self, iova: int, size: int) -> int:
        self.calls.append(("unmap", iova, size))
        return size


def test_mapper_keeps_ac64_0_controllers_below_4_gib() -> None:
    info = vfio.parse_iommu_info(_iommu_info_blob(0x1000, [(0, (1 << 39) - 1)]))
    m = VfioDmaMapper(_RecordingBackend(), info, ac64=False)
    assert m.address_limit == FOUR_GIB
    assert m.iova_base < FOUR_GIB
    assert MSI_WINDOW in m.reserved
    with pytest.raises(VfioError, match="beyond"):
        m.map(0x7F00_0000_0000, FOUR_GIB - 0x1000, 0x2000)
    m64 = VfioDmaMapper(_RecordingBackend(), info, ac64=True)
    assert m64.iova_base == FOUR_GIB and m64.address_limit > FOUR_GIB
    small = vfio.parse_iommu_info(_iommu_info_blob(0x1000, [(0, FOUR_GIB - 1)]))
    m_small = VfioDmaMapper(_RecordingBackend(), small, ac64=True)
    assert m_small.iova_base == 1 << 20  # an aperture that ends at 4 GiB
    assert (FOUR_GIB, m_small.address_limit) in m_small.reserved


def test_mapper_turns_gaps_between_usable_ranges_into_reserved_holes() -> None:
    info = vfio.parse_iommu_info(
        _iommu_info_blob(0x1000, [(0x1000, 0xFEDF_FFFF), (0xFEF0_0000, 0x7_FFFF_FFFF)])
    )
    m = VfioDmaMapper(_RecordingBackend(), info, ac64=True)
    assert (0, 0x1000) in m.reserved
    assert (0xFEE0_0000, 0xFEF0_0000) in m.reserved
    assert (0x8_0000_0000, m.address_limit) in m.reserved


def test_mapper_checks_alignment_and_unmaps_everything_on_release() -> None:
    be = _RecordingBackend()
    m = VfioDmaMapper(be, None, ac64=True)
    with pytest.raises(VfioError, match="multiples"):
        m.map(0x1000, FOUR_GIB + 0x800, 0x1000)
    m.map(0x10000, FOUR_GIB, 0x2000)
    m.map(0x20000, FOUR_GIB + 0x10000, 0x1000)
    m.unmap(FOUR_GIB, 0x2000)
    assert m.live_mappings == {FOUR_GIB + 0x10000: 0x1000}
    m.unmap_all()
    assert m.live_mappings == {}
    assert be.calls[-1] == ("unmap", FOUR_GIB + 0x10000, 0x1000)


def test_missing_vfio_nodes_are_named_errors(tmp_path: pytest.TempPathFactory) -> None:
    with pytest.raises(NoIommu, match="does not exist"):
        vfio.VfioContainer(f"{tmp_path}/vfio")
    with pytest.raises(NoIommu):
        vfio.VfioGroup(7, f"{tmp_path}")


def test_ioctl_on_a_non_vfio_fd_is_a_vfio_error(tmp_path: pytest.TempPathFactory) -> None:
    import os

    fd = os.open("/dev/null", os.O_RDWR)
    dev = vfio.VfioDevice(fd)
    try:
        with pytest.raises(VfioError, match="VFIO_DEVICE_GET_INFO failed") as exc:
            dev.info()
        assert exc.value.errno is not None
    finally:
        dev.close()
    assert dev.closed


def _region(size: int = 4096, **kw: Any) -> tuple[mmap.mmap, MmioRegion]:
    mm = mmap.mmap(-1, size)
    return mm, MmioRegion(mm, **kw)


def test_mmio_dword_access_and_64_bit_order() -> None:
    calls: list[tuple[str, int]] = []

    def sink(kind: str, /, **f: Any) -> None:
        calls.append((str(f["op"]), int(f["offset"])))

    mm = mmap.mmap(-1, 4096)
    r = MmioRegion(mm, trace=sink)
    r.write32(0x10, 0xDEADBEEF)
    assert mm[0x10:0x14] == struct.pack("<I", 0xDEADBEEF)
    r.write64(0x20, 0x1122334455667788)
    assert r.read32(0x20) == 0x55667788 and r.read32(0x24) == 0x11223344
    assert r.read64(0x20) == 0x1122334455667788
    assert [c for c in calls if c[0] == "w"] == [("w", 0x10), ("w", 0x20), ("w", 0x24)]
    calls.clear()
    r.high_first = True
    r.write64(0x30, 1 << 32 | 2)
    assert calls == [("w", 0x34), ("w", 0x30)]
    r.close()
    _mm2, r2 = _region()
    r2.close()


@settings(max_examples=100, deadline=None)
@given(offset=st.integers(-16, 4200), value=st.integers(0, (1 << 32) - 1))
def test_mmio_bounds_and_alignment(offset: int, value: int) -> None:
    mm = mmap.mmap(-1, 4096)
    r = MmioRegion(mm, 4096)
    ok = 0 <= offset <= 4092 and offset % 4 == 0
    if ok:
        r.write32(offset, value)
        assert r.read32(offset) == value
    else:
        with pytest.raises(MmioError):
            r.write32(offset, value)
        with pytest.raises(MmioError):
            r.read32(offset)
    r.close()


def test_mmio_rejects_wide_values_and_use_after_close() -> None:
    _mm, r = _region()
    with pytest.raises(MmioError, match="32 bits"):
        r.write32(0, 1 << 32)
    with pytest.raises(MmioError, match="64 bits"):
        r.write64(0, 1 << 64)
    with pytest.raises(MmioError, match="outside"):
        r.read64(4092)
    closed: list[int] = []
    r._on_close = lambda: closed.append(1)
    r.close()
    r.close()
    assert closed == [1] and r.closed
    with pytest.raises(MmioError, match="closed"):
        r.read32(0)


def test_discovery_on_this_machine_does_not_crash() -> None:
    found = list_controllers()
    assert isinstance(found, list)
    for c in found:
        assert c.bdf.count(":") == 2


def test_discovery_on_a_fake_tree(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    root, sysfs = fake_sysfs(Path(str(tmp_path)))
    make_device(root, "0000:00:04.0", group=3)
    make_device(root, "0000:00:05.0", cls=0x0C0320, driver="ehci-pci", group=3)
    found = list_controllers(sysfs)
    assert [c.bdf for c in found] == ["0000:00:04.0"]
    c = found[0]
    assert (c.vendor_device, c.driver, c.iommu_group) == ("1b36:000d", "xhci_hcd", 3)
    assert c.group_peers == ["0000:00:05.0"]
    assert c.ac64 is None and "held by xhci_hcd" in c.bar0_note
    assert describe("0000:00:04.0", sysfs).as_dict()["vendor_device"] == "1b36:000d"


def test_discovery_decodes_bar0_of_a_driverless_controller(
    tmp_path: pytest.TempPathFactory,
) -> None:
    """resource0 (here a file with qemu-xhci's capability registers and extended capability
    list) is mapped read-only and decoded: AC64 and DbC presence appear in the listing."""
    from pathlib import Path

    root, sysfs = fake_sysfs(Path(str(tmp_path)))
    real = make_device(root, "0000:00:04.0", driver=None)
    bar = bytearray(0x4000)
    for off, value in {
        0x00: 0x0100_0040,
        0x04: 0x0800_1040,
        0x10: 0x0008_7001,
        0x14: 0x2000,
        0x18: 0x1000,
        0x20: 0x0200_0402,
        0x30: 0x0300_0A02,
        0x58: 0x0000_000A,
    }.items():
        struct.pack_into("<I", bar, off, value)
    (real / "resource0").write_bytes(bytes(bar))
    (c,) = list_controllers(sysfs)
    assert c.ac64 is None and "memory decoding is off" in c.bar0_note
    config = bytearray((real / "config").read_bytes())
    struct.pack_into("<H", config, 4, 0x0002)  # PCI_COMMAND_MEMORY
    (real / "config").write_bytes(bytes(config))
    (c,) = list_controllers(sysfs)
    assert (c.ac64, c.has_dbc, c.dbc_offset, c.bar0_note) == (True, True, 0x58, "")
    assert list_controllers(sysfs, read_bar0=False)[0].bar0_note == "not read"
