"""The reference C driver finds the virtual xHCI itself: a PCI configuration mechanism #1 scan
over all 256 buses (ports 0xCF8/0xCFC, in C), BAR sizing, Memory Space/Bus Master, and the
finding when Bus Master stays off (fixtures/virtual/pci.py)."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from dbc_harness.drivers.dbc import DbcNotFound, DbcState
from dbc_harness.drivers.native.build import build_reference, site_line
from dbc_harness.drivers.native.driver import NativeDbcDriver
from dbc_harness.fixtures.virtual import VirtualXhci
from dbc_harness.fixtures.virtual.pci import COMMAND_MASTER, COMMAND_MEMORY, VirtualPciFunction

pytestmark = pytest.mark.timeout(120)

HIT = struct.Struct("<IIQQ")  # struct dbc_pci_hit


@pytest.fixture
def x() -> Iterator[VirtualXhci]:
    ctl = VirtualXhci(strict=True)
    yield ctl
    ctl.close()


def native(x: VirtualXhci, fn: VirtualPciFunction, **options: Any) -> NativeDbcDriver:
    return NativeDbcDriver(fn.mmio, x.dma, clock=x.clock, pci=fn, scan_pci=True,
                           bar_phys=fn.bar0, **options)  # fmt: skip


def scan(drv: NativeDbcDriver) -> list[tuple[int, int, int, int]]:
    m = drv.machine
    count = m.call("dbc_pci_scan") & 0xFFFF_FFFF
    base = m.symbol("dbc_pci_hits")
    return [HIT.unpack(m.read(base + i * HIT.size, HIT.size)) for i in range(count)]


def test_scan_of_all_256_buses_finds_exactly_the_xhci_with_its_bar(x: VirtualXhci) -> None:
    fn = VirtualPciFunction(x, bus=3, device=0, vendor_id=0x1022, device_id=0x15E0,
                            bar0=0xFE00_0000)  # fmt: skip
    drv = native(x, fn)
    try:
        hits = scan(drv)
        assert hits == [(3 << 8, 0x15E0 << 16 | 0x1022, 0xFE00_0000, 0x10000)]
        # every bus was probed: the last CONFIG_ADDRESS written names bus 255, device 31
        selects = [a.value for a in drv.machine.ports.log if a.op == "out" and a.port == 0xCF8]
        assert selects[-1] == 0x8000_0000 | 255 << 16 | 31 << 11
        # the size probe left the BAR and the Command register as they were
        assert fn.bar0 == 0xFE00_0000
        assert fn.command == 0
    finally:
        drv.machine.close()


def test_bar_sizing_of_a_1_mib_bar(x: VirtualXhci) -> None:
    """AMD parts have a 1 MiB BAR0 (Intel 64 KiB): the probe reads back the size mask."""
    fn = VirtualPciFunction(x, bar0=0x2_0000_0000, bar_size=1 << 20)
    drv = native(x, fn)
    try:
        [(bdf, _id, bar, size)] = scan(drv)
        assert (bdf, bar, size) == (0x14 << 3, 0x2_0000_0000, 1 << 20)
    finally:
        drv.machine.close()


def test_bring_up_through_the_pci_scan(x: VirtualXhci) -> None:
    fn = VirtualPciFunction(x)
    drv = native(x, fn)
    drv.start(timeout=5.0)
    assert drv.state is DbcState.CONFIGURED
    assert fn.command & (COMMAND_MEMORY | COMMAND_MASTER) == COMMAND_MEMORY | COMMAND_MASTER
    drv.write(b"found by scanning")
    drv.flush(timeout=1.0)
    assert x.host.recv(64, timeout=1.0) == b"found by scanning"
    drv.close()
    assert x.findings == []


def test_no_xhci_on_any_bus_is_dbc_not_found(x: VirtualXhci) -> None:
    fn = VirtualPciFunction(x)
    fn.address = (0, 0, 7)  # function 7 of a device whose function 0 is absent: never probed
    drv = native(x, fn)
    with pytest.raises(DbcNotFound):
        drv.start(timeout=1.0)
    assert "dbc: no xHCI (class 0C0330) on any PCI bus" in drv.log
    drv.machine.close()


def test_bus_master_left_off_is_a_finding_at_the_dce_write() -> None:
    y = VirtualXhci(strict=False)
    try:
        fn = VirtualPciFunction(y)
        drv = native(y, fn, obj=build_reference(mutations=["NO_BUS_MASTER"]))
        try:
            drv.start(timeout=0.5)
        finally:
            drv.close()
        assert fn.command & COMMAND_MASTER == 0
        hits = [f for f in y.findings if f.rule == "PCI-BUS-MASTER"]
        assert hits, [str(f) for f in y.findings]
        line = re.match(r"dbc\.c:(\d+)", hits[0].origin or "")
        assert line is not None and int(line.group(1)) == site_line("dce")
    finally:
        y.close()
