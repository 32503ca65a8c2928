"""The reference C driver finds the virtual xHCI itself: a PCI configuration mechanism #1 scan
over all 256 buses (ports 0xCF8/0xCFC, in C), BAR sizing, Memory Space/Bus Master, and the
finding when Bus Master stays off (fixtures/virtual/pci.py); with an xHCI without a DbC ahead
in scan order it walks each candidate's capability list and takes the one with a DbC; and on
every named part's machine (fixtures/virtual/parts) it finds, hands off from the BIOS, brings
up and echoes with 0 findings, told nothing about the part."""

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
from dbc_harness.fixtures.virtual.parts import (
    PartProfile,
    build_controller,
    build_decoy,
    load_part,
    part_names,
    platform_bus,
)
from dbc_harness.fixtures.virtual.pci import (
    COMMAND_MASTER,
    COMMAND_MEMORY,
    PciBus,
    VirtualPciFunction,
)

from tests.driver_kinds import roundtrip

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


# -- several xHCIs, named parts ------------------------------------------------------------------


def on_bus(x: VirtualXhci, bus: PciBus, **options: Any) -> NativeDbcDriver:
    fn = x.pci_function
    return NativeDbcDriver(fn.mmio, x.dma, clock=x.clock, pci=bus, scan_pci=True,
                           bar_phys=fn.bar0, **options)  # fmt: skip


def test_an_xhci_without_dbc_ahead_in_scan_order_is_skipped() -> None:
    """00:01.0 is an xHCI without a Debug Capability; the Tiger Lake part sits at 00:0d.0
    behind it (and its USB4 NHI, class 0C0340, beside it). The driver maps the decoy's BAR0,
    walks its list, gives its Command register back and takes the next one."""
    x = build_controller("intel-tiger-lake", strict=True)
    decoy = build_decoy(strict=True)
    try:
        bus = platform_bus(x, "intel-tiger-lake", decoy=decoy)
        drv = on_bus(x, bus)
        try:
            drv.start(timeout=5.0)
            assert drv.state is DbcState.CONFIGURED
            hits = scan(drv)
            assert [h[0] for h in hits] == [0x01 << 3, 0x0D << 3]  # decoy first, then the part
            assert "dbc: xHCI 00:01.0 (1912:0015) has no Debug Capability: next" in drv.log
            # the decoy's BAR0 was really read (its capability walk), then left as it was
            assert (0xD000_0000, 0x10000, decoy.mmio) in drv.machine.other_bars
            assert decoy.pci_function.command == 0
            chosen = x.pci_function.command
            assert chosen & (COMMAND_MEMORY | COMMAND_MASTER) == COMMAND_MEMORY | COMMAND_MASTER
            roundtrip(x, drv, b"the one with a DbC")
        finally:
            drv.close()
        assert x.findings == [] and decoy.findings == []
    finally:
        x.close()
        decoy.close()


def test_only_xhcis_without_dbc_is_dbc_not_found() -> None:
    decoy = build_decoy(strict=True)
    try:
        bus = PciBus()
        fn = bus.add(VirtualPciFunction(decoy, bus=2, vendor_id=0x1912, device_id=0x0015))
        drv = NativeDbcDriver(decoy.mmio, decoy.dma, clock=decoy.clock, pci=bus, scan_pci=True,
                              bar_phys=0xC000_0000)  # fmt: skip
        try:
            with pytest.raises(DbcNotFound):
                drv.start(timeout=1.0)
            assert "dbc: none of the 1 xHCIs has a Debug Capability (ID 0x0A)" in drv.log
            assert fn.command == 0  # Memory Space was on for the walk only
        finally:
            drv.machine.close()
        assert decoy.findings == []
    finally:
        decoy.close()


@pytest.mark.parametrize("name", part_names())
def test_reference_driver_on_every_part(name: str) -> None:
    """The C driver told nothing about the part (no flags): PCI scan, BAR0 mapped at its probed
    size (1 MiB on AMD), BIOS handoff, the root-port reset Intel parts need (by PCI vendor ID,
    as Linux's early printk driver), echo both ways, 0 findings (strict)."""
    part: PartProfile = load_part(name)
    x = build_controller(part, strict=True)
    try:
        bus = platform_bus(x, part)
        drv = on_bus(x, bus)
        try:
            drv.start(timeout=5.0)
            assert drv.state is DbcState.CONFIGURED
            [(bdf, ident, bar, size)] = scan(drv)
            assert bar == x.pci_function.bar0
            assert size == part.bar0_size == drv.machine.bar_size
            assert ident == part.device_id << 16 | part.vendor_id
            assert bdf == part.bdf[0] << 8 | part.bdf[1] << 3 | part.bdf[2]
            assert x.dbc.root_port_reset_seen == (part.vendor_id == 0x8086)
            assert drv.counters.recoveries["root_port_reset"] == 0
            if part.firmware.bios_owned:
                assert x.firmware.os_requested
            for size in (1, 1025, 65537):
                roundtrip(x, drv, bytes((i * 5 + size) & 0xFF for i in range(size)))
        finally:
            drv.close()
        assert x.findings == []
    finally:
        x.close()


def test_a_part_needing_the_reset_is_learned_when_bar0_is_given() -> None:
    """BAR0 given (no scan, so no vendor ID): no CCS 200 ms after DCE, the C driver resets the
    USB3 root ports once and counts it."""
    x = build_controller("intel-sunrise-point", strict=True)
    try:
        drv = NativeDbcDriver(x.mmio, x.dma, clock=x.clock)
        try:
            drv.start(timeout=5.0)
            assert drv.counters.recoveries["root_port_reset"] == 1
            assert any("CCS still 0 200 ms after DCE" in line for line in drv.log)
            roundtrip(x, drv, b"learned")
        finally:
            drv.close()
        assert x.findings == []
    finally:
        x.close()
