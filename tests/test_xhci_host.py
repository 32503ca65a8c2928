"""Host-side tests of drivers/xhci/host.py against a small register file that behaves like the
capability and operational registers of QEMU's qemu-xhci (values from qemu-bench.md). The full
No Op path against a real controller runs in the kernel bench guest (tests/guest/test_vfio.py)."""

from __future__ import annotations

import pytest
from dbc_harness.drivers.xhci import registers as R
from dbc_harness.drivers.xhci.host import (
    HostError,
    HostTimeout,
    halt_controller,
    probe_capabilities,
    walk_extended_capabilities,
)

OP = 0x40
USBCMD, USBSTS = OP + R.OPERATIONAL_REGS.offset("USBCMD"), OP + R.OPERATIONAL_REGS.offset("USBSTS")


class FakeXhci:
    """Dword registers; USBCMD.R/S drives USBSTS.HCH, HCRST clears itself after ``reset_reads``
    reads (or never when ``stuck``)."""

    def __init__(self, *, stuck: bool = False, reset_reads: int = 3) -> None:
        self.regs: dict[int, int] = {
            0x00: 0x0100_0040,  # HCIVERSION 0x0100, CAPLENGTH 0x40
            0x04: 0x0800_1040,
            0x08: 0x0000_000F,
            0x10: 0x0008_7001,
            0x14: 0x2000,
            0x18: 0x1000,
            0x20: 0x0200_0402,  # Supported Protocol USB 2.0, next +4 dwords
            0x30: 0x0300_0002,  # Supported Protocol USB 3.0, end of list
            USBCMD: 0x1,
            USBSTS: 0x0,
        }
        self.stuck = stuck
        self.reset_reads = reset_reads
        self._countdown = 0
        self.writes: list[tuple[int, int]] = []

    def read32(self, offset: int) -> int:
        if offset == USBCMD and self._countdown:
            self._countdown -= 1
            if not self._countdown:
                self.regs[USBCMD] = R.USBCMD.replace(self.regs[USBCMD], HCRST=0)
        return self.regs.get(offset, 0)

    def write32(self, offset: int, value: int) -> None:
        self.writes.append((offset, value))
        self.regs[offset] = value
        if offset == USBCMD and not self.stuck:
            halted = 0 if R.USBCMD.get(value, "RS") else 1
            self.regs[USBSTS] = R.USBSTS.replace(self.regs[USBSTS], HCH=halted)
            if R.USBCMD.get(value, "HCRST"):
                self._countdown = self.reset_reads

    def read64(self, offset: int) -> int:
        return self.read32(offset) | self.read32(offset + 4) << 32

    def write64(self, offset: int, value: int) -> None:
        self.write32(offset, value & 0xFFFF_FFFF)
        self.write32(offset + 4, value >> 32)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_probe_decodes_qemu_xhci_capabilities() -> None:
    caps = probe_capabilities(FakeXhci())
    assert (caps.caplength, caps.hciversion) == (0x40, 0x0100)
    assert (caps.max_slots, caps.max_intrs, caps.max_ports) == (64, 16, 8)
    assert caps.ac64 and (caps.dboff, caps.rtsoff) == (0x2000, 0x1000)
    assert [(x.offset, x.capability_id) for x in caps.extended] == [(0x20, 2), (0x30, 2)]
    assert caps.dbc_offset is None
    assert caps.dbc_status == "no Debug Capability on this controller"
    text = caps.render()
    assert "Supported Protocol USB 2.00" in text and "Supported Protocol USB 3.00" in text


def test_probe_finds_a_dbc_at_the_end_of_the_list() -> None:
    x = FakeXhci()
    x.regs[0x30] = 0x0300_0A02  # USB 3.0 protocol, next +0x0A dwords
    x.regs[0x58] = 0x0000_000A  # DbC
    caps = probe_capabilities(x)
    assert caps.dbc_offset == 0x58
    assert caps.dbc_status == "Debug Capability at BAR0 + 0x58"


def test_extended_capability_walk_is_bounded() -> None:
    x = FakeXhci()
    # Next pointers only go forward: a corrupt list is an endless one; the walk stops at limit
    for off in range(0x20, 0x20 + 4 * 300, 4):
        x.regs[off] = 0x0000_0102
    assert len(walk_extended_capabilities(x, 0x20, limit=256)) == 256
    x.regs[0x24] = 0xFFFF_FFFF
    with pytest.raises(HostError, match="all ones"):
        walk_extended_capabilities(x, 0x20)


def test_probe_refuses_an_all_ones_bar() -> None:
    x = FakeXhci()
    x.regs = {k: 0xFFFF_FFFF for k in x.regs}
    with pytest.raises(HostError, match="all ones"):
        probe_capabilities(x)


def test_halt_clears_run_stop_then_resets() -> None:
    x = FakeXhci()
    halt_controller(x, FakeClock())
    cmd_writes = [v for off, v in x.writes if off == USBCMD]
    assert R.USBCMD.get(cmd_writes[0], "RS") == 0 and R.USBCMD.get(cmd_writes[0], "HCRST") == 0
    assert R.USBCMD.get(cmd_writes[1], "HCRST") == 1 and R.USBCMD.get(cmd_writes[1], "RS") == 0
    assert R.USBCMD.get(x.regs[USBCMD], "HCRST") == 0
    assert R.USBSTS.get(x.regs[USBSTS], "HCH") == 1


def test_halt_has_deadlines() -> None:
    clock = FakeClock()
    with pytest.raises(HostTimeout, match="HCHalted"):
        halt_controller(FakeXhci(stuck=True), clock, halt_timeout=0.5)
    assert 0.5 <= clock.now < 0.6
    x = FakeXhci(reset_reads=10**9)
    with pytest.raises(HostTimeout, match="HCRST"):
        halt_controller(x, FakeClock(), reset_timeout=0.2)


def test_halt_of_a_vanished_device_is_a_named_error() -> None:
    x = FakeXhci()
    x.regs[USBCMD] = 0xFFFF_FFFF
    with pytest.raises(HostError, match="all ones"):
        halt_controller(x, FakeClock())
