"""Host-side tests of drivers/xhci/host.py against a small register file that behaves like the
capability and operational registers of QEMU's qemu-xhci (values from hw/usb/hcd-xhci.c). The full
No Op path against a real controller runs in the kernel bench guest (tests/guest/test_vfio.py)."""

from __future__ import annotations

import pytest
from dbc_harness.allocator import EmulatedDmaSpace
from dbc_harness.drivers.xhci import registers as R
from dbc_harness.drivers.xhci.contexts import ERST_ENTRY
from dbc_harness.drivers.xhci.host import (
    HostControllerError,
    HostControllerTimeout,
    XhciHost,
    halt_controller,
    probe_capabilities,
    walk_extended_capabilities,
)
from dbc_harness.drivers.xhci.trb import (
    COMMAND_COMPLETION_EVENT,
    TRB_SIZE,
    CompletionCode,
    TRBType,
    cycle_of,
    decode_trb,
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
    with pytest.raises(HostControllerError, match="all ones"):
        walk_extended_capabilities(x, 0x20)


def test_probe_refuses_an_all_ones_bar() -> None:
    x = FakeXhci()
    x.regs = {k: 0xFFFF_FFFF for k in x.regs}
    with pytest.raises(HostControllerError, match="all ones"):
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
    with pytest.raises(HostControllerTimeout, match="HCHalted"):
        halt_controller(FakeXhci(stuck=True), clock, halt_timeout=0.5)
    assert 0.5 <= clock.now < 0.6
    x = FakeXhci(reset_reads=10**9)
    with pytest.raises(HostControllerTimeout, match="HCRST"):
        halt_controller(x, FakeClock(), reset_timeout=0.2)


def test_halt_of_a_vanished_device_is_a_named_error() -> None:
    x = FakeXhci()
    x.regs[USBCMD] = 0xFFFF_FFFF
    with pytest.raises(HostControllerError, match="all ones"):
        halt_controller(x, FakeClock())


class CommandAnsweringXhci(FakeXhci):
    """FakeXhci plus the controller's side of the command and event rings, read and written
    through the DMA space: doorbell 0 makes it consume command TRBs from CRCR (following Link
    TRBs, toggling its Consumer Cycle State on TC) and answer each with a Command Completion
    Event (Success) on interrupter 0's event ring, from the ERST that ERSTBA points at."""

    DBOFF = 0x2000
    IR0 = 0x1000 + R.INTERRUPTER_REGS_OFFSET

    def __init__(self, dma: EmulatedDmaSpace) -> None:
        super().__init__()
        self.dma = dma
        self.command_dequeue: int | None = None
        self.command_ccs = 1
        self.event_index = 0
        self.event_pcs = 1
        self.seen: list[int] = []

    def write32(self, offset: int, value: int) -> None:
        super().write32(offset, value)
        if offset == self.DBOFF and R.DOORBELL.get(value, "db_target") == 0:
            self._run_commands()

    def _memory(self, address: int) -> tuple[memoryview, int]:
        buf, offset = self.dma.lookup(address)
        return buf.view, offset

    def _run_commands(self) -> None:
        if self.command_dequeue is None:
            crcr = self.read64(OP + R.OPERATIONAL_REGS.offset("CRCR"))
            self.command_dequeue = R.CRCR.get(crcr, "command_ring_pointer")
            self.command_ccs = R.CRCR.get(crcr, "RCS")
        for _ in range(64):
            view, offset = self._memory(self.command_dequeue)
            if cycle_of(view, offset) != self.command_ccs:
                return
            kind, fields = decode_trb(view, offset)
            self.seen.append(int(kind))
            if kind is TRBType.Link:
                self.command_dequeue = fields["ring_segment_pointer"]
                self.command_ccs ^= fields["TC"]
                continue
            self._post_event(self.command_dequeue)
            self.command_dequeue += TRB_SIZE

    def _post_event(self, command_trb: int) -> None:
        erst_view, erst_offset = self._memory(
            R.ERSTBA.get(self.read64(self.IR0 + R.INTERRUPTER_REGS.offset("ERSTBA")),
                         "event_ring_segment_table_base_address")
        )  # fmt: skip
        entry = ERST_ENTRY.parse(erst_view, erst_offset)
        view, offset = self._memory(entry["ring_segment_base_address"])
        COMMAND_COMPLETION_EVENT.pack_into(
            view, offset + self.event_index * TRB_SIZE, command_trb_pointer=command_trb,
            completion_code=CompletionCode.Success, C=self.event_pcs,
        )  # fmt: skip
        self.event_index += 1
        if self.event_index == entry["ring_segment_size"]:
            self.event_index, self.event_pcs = 0, self.event_pcs ^ 1


def test_no_op_commands_go_round_both_rings() -> None:
    """start() programs CRCR/ERSTBA/ERDP from the rings; 40 No Op Commands on a 16-TRB command
    ring and a 16-TRB event ring pass both Link/wrap points twice, each answered in order."""
    with EmulatedDmaSpace() as dma:
        x = CommandAnsweringXhci(dma)
        host = XhciHost(x, dma, FakeClock(), command_ring_trbs=16, event_ring_trbs=16)
        host.start()
        completions = [host.no_op() for _ in range(40)]
        assert all(c.success for c in completions) and host.other_events == []
        base = completions[0].command_trb_pointer
        assert [c.command_trb_pointer for c in completions] == [
            base + 16 * (i % 15) for i in range(40)
        ]
        assert x.seen.count(int(TRBType.Link)) == 2
        assert x.seen.count(int(TRBType.NoOpCommand)) == 40
        erdp = x.read64(CommandAnsweringXhci.IR0 + R.INTERRUPTER_REGS.offset("ERDP"))
        events = completions[0].event_address
        assert R.ERDP.get(erdp, "event_ring_dequeue_pointer") == events + 16 * (40 % 16)
        host.close()
        assert dma.stats()["live_bytes"] == 0
