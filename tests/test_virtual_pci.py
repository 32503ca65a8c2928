"""The virtual PCI bus (fixtures/virtual/pci.py): functions anywhere (bus 255, device 31), all
ones elsewhere, multi-function headers, the capability list, Command decode, and a machine with
two xHCIs where only one has a Debug Capability."""

from __future__ import annotations

import pytest
from dbc_harness.drivers.dbc import DbcDriver, DbcNotFound
from dbc_harness.drivers.dbc.bringup import find_dbc
from dbc_harness.drivers.native.pci_ports import PciConfigSpace
from dbc_harness.fixtures.virtual import VirtualXhci
from dbc_harness.fixtures.virtual.parts import build_controller, build_decoy, platform_bus
from dbc_harness.fixtures.virtual.pci import (
    CLASS_XHCI,
    COMMAND_MASTER,
    COMMAND_MEMORY,
    PciAddressError,
    PciBus,
    PciFunction,
    VirtualPciFunction,
    parse_bdf,
)


def caps(bus: PciConfigSpace, b: int, d: int, f: int) -> list[int]:
    """Capability IDs in list order, as a driver walks them from 0x34."""
    found: list[int] = []
    ptr = bus.read_config(b, d, f, 0x34, 1) or 0
    while ptr and len(found) < 48:
        found.append(bus.read_config(b, d, f, ptr, 1) or 0)
        ptr = bus.read_config(b, d, f, ptr + 1, 1) or 0
    return found


def test_function_at_bus_255_device_31_and_nothing_elsewhere() -> None:
    with VirtualXhci(strict=True) as x:
        bus = PciBus()
        bus.add(VirtualPciFunction(x, bus=255, device=31, function=7))
        assert (bus.read_config(255, 31, 7, 8, 4) or 0) >> 8 == CLASS_XHCI
        assert bus.read_config(255, 31, 6, 0, 4) is None
        assert bus.read_config(0, 0, 0, 0, 4) is None
        assert caps(bus, 255, 31, 7) == [0x01, 0x05, 0x11, 0x10]  # PM, MSI, MSI-X, PCIe
        assert (bus.read_config(255, 31, 7, 6, 2) or 0) & 0x10  # Status: Capabilities List


def test_addresses_are_checked() -> None:
    with VirtualXhci(strict=True) as x:
        with pytest.raises(PciAddressError):
            VirtualPciFunction(x, device=32)
        with pytest.raises(PciAddressError):
            parse_bdf("100:00.0")
        assert parse_bdf("0000:ff:1f.7") == (255, 31, 7)
        bus = PciBus()
        bus.add(VirtualPciFunction(x))
        with pytest.raises(PciAddressError, match="taken"):
            bus.add(PciFunction(vendor_id=1, device_id=2, class_code=0x020000, device=0x14))


def test_multi_function_bit_follows_the_functions() -> None:
    bus = PciBus()
    bus.add(PciFunction(vendor_id=0x8086, device_id=1, class_code=0x0C0320, device=3))
    assert bus.read_config(0, 3, 0, 0x0E, 1) == 0x00
    bus.add(PciFunction(vendor_id=0x8086, device_id=2, class_code=0x0C0330, device=3, function=2))
    assert bus.read_config(0, 3, 0, 0x0E, 1) == 0x80


def test_memory_space_off_reads_all_ones_and_drops_writes() -> None:
    with VirtualXhci(strict=True) as x:
        fn = VirtualPciFunction(x)
        assert x.mmio.read32(0) == 0xFFFF_FFFF
        fn.write_config(0, 0x14, 0, 4, 2, COMMAND_MEMORY)
        assert x.mmio.read32(0) & 0xFF == 0x80  # CAPLENGTH
        fn.write_config(0, 0x14, 0, 4, 2, 0)
        assert x.mmio.read64(0) == (1 << 64) - 1


def test_bar_probe_on_a_1_mib_part() -> None:
    with build_controller("amd-renoir", strict=True) as x:
        bus = platform_bus(x, "amd-renoir", bar0=0x2_0000_0000)
        b, d, f = 5, 0, 3
        old = bus.read_config(b, d, f, 0x10, 4)
        assert old is not None and old & 0x7 == 0b100  # 64-bit memory BAR
        bus.write_config(b, d, f, 0x10, 4, 0xFFFF_FFFF)
        assert bus.read_config(b, d, f, 0x10, 4) == 0xFFF0_0004
        bus.write_config(b, d, f, 0x10, 4, old)
        assert bus.xhci_functions()[0].bar0 == 0x2_0000_0000


def test_a_driver_picks_the_xhci_with_a_dbc() -> None:
    """Two class 0C0330 functions (the one without a DbC first in scan order) and a USB4 NHI
    (class 0C0340) beside the Tiger Lake xHCI: scanning, sizing, then walking each BAR's
    capability list finds the DbC on exactly one."""
    with build_controller("intel-tiger-lake", strict=True) as x, build_decoy(strict=True) as decoy:
        command = COMMAND_MEMORY | COMMAND_MASTER
        bus = platform_bus(x, "intel-tiger-lake", decoy=decoy, command=command)
        xhcis = []
        for b in range(256):
            for d in range(32):
                for f in range(8):
                    ident = bus.read_config(b, d, f, 0, 4)
                    if ident is None:
                        continue
                    if bus.read_config(b, d, f, 8, 4) >> 8 == CLASS_XHCI:  # type: ignore[operator]  # present
                        low = bus.read_config(b, d, f, 0x10, 4) or 0
                        high = bus.read_config(b, d, f, 0x14, 4) or 0
                        xhcis.append(((b, d, f), (high << 32) | (low & ~0xF)))
        assert [bdf for bdf, _bar in xhcis] == [(0, 1, 0), (0, 0x0D, 0)]
        assert bus.read_config(0, 0x0D, 2, 8, 4) >> 8 == 0x0C0340  # type: ignore[operator]  # NHI
        with_dbc = []
        for bdf, bar in xhcis:
            mmio = bus.mmio_at(bar)
            try:
                find_dbc(mmio)
            except DbcNotFound:
                continue
            with_dbc.append(bdf)
        assert with_dbc == [(0, 0x0D, 0)]
        drv = DbcDriver(decoy.mmio, decoy.dma, clock=decoy.clock)
        with pytest.raises(DbcNotFound):
            drv.start(timeout=1.0)
