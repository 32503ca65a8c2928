"""One scenario per validation rule: each deliberately broken setup gives exactly its finding.

The model runs in lenient mode here (findings recorded, the model keeps going) so a test can
check the complete list; strict-mode raising has its own tests at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dbc_harness.drivers.xhci.contexts import (
    DBC_ENDPOINT_CONTEXT,
    DBC_INFO_CONTEXT,
    DBC_OUT_EP_OFFSET,
    ERST_ENTRY,
)
from dbc_harness.drivers.xhci.registers import (
    DCCP,
    DCCTRL,
    DCDDI1,
    DCERDP,
    DCERSTBA,
    DCERSTSZ,
    USBCMD,
)
from dbc_harness.drivers.xhci.trb import LINK, NORMAL, CompletionCode, TRBType
from dbc_harness.fixtures.virtual import RULES, DebugHostTimeout, Quirks, SpecViolation, VirtualXhci

from tests.virtual_helpers import MinimalDbcProducer

Breaker = Callable[[VirtualXhci, MinimalDbcProducer], None]


def _configured(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.bring_up()
    b.events()


def _info(b: MinimalDbcProducer, **fields: int) -> None:
    f = DBC_INFO_CONTEXT.parse(b.ctx.view, 0)
    f.update(fields)
    DBC_INFO_CONTEXT.pack_into(b.ctx.view, 0, **f)


def _out_ctx(b: MinimalDbcProducer, **fields: int) -> None:
    f = DBC_ENDPOINT_CONTEXT.parse(b.ctx.view, DBC_OUT_EP_OFFSET)
    f.update(fields)
    DBC_ENDPOINT_CONTEXT.pack_into(b.ctx.view, DBC_OUT_EP_OFFSET, **f)


def _enumerate(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.program()
    b.enable()
    x.advance(200_000)


# ---------------------------------------------------------------- MMIO
def mmio_subdword(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    x.mmio.write8(b.off("DCCTRL"), 1)


def mmio_unaligned(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    x.mmio.read32(b.off("DCCTRL") + 2)


def mmio_out_of_bar(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    x.mmio.read32(0x10000)


def mmio_reserved_0c(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    x.mmio.read32(b.base + 0x0C)


def mmio_reserved_2c(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    x.mmio.write32(b.base + 0x2C, 0)


def mmio_rsvdz(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.write("DCDDI1", DCDDI1.encode(vendor_id=0x1D6B, rsvdz0_8=0x12))


def mmio_rsvdp(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.write("DCCTRL", DCCTRL.encode(rsvdp0_5=1))


def mmio_ro_write(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.write("DCID", 0)


def mmio_64_order(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    x.mmio.write32(b.off("DCCP") + 4, 0)


def mmio_64bit_unsupported(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    x.mmio.write64(b.off("DCCP"), b.ctx.device_address)


def hcrst_running(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    x.mmio.write32(0x80, USBCMD.encode(RS=1))
    x.mmio.write32(0x80, USBCMD.encode(RS=1, HCRST=1))


# ---------------------------------------------------------------- USB Legacy Support (firmware)
def _bios_owned(x: VirtualXhci) -> int:
    """The firmware owns the controller (fixtures/virtual/firmware.py); USBLEGSUP's offset."""
    from dbc_harness.fixtures.virtual.firmware import FirmwareConfig

    x.firmware.config = FirmwareConfig(bios_owned=True, handoff_ms=2.0)
    x.firmware.power_on()
    assert x.regs.legacy_offset is not None
    return x.regs.legacy_offset


def legsup_bios_semaphore(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    off = _bios_owned(x)
    x.mmio.write32(off, x.mmio.read32(off) & ~(1 << 16))  # clears the BIOS's bit, no request


def legsup_wrong_byte(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    off = _bios_owned(x)
    x.mmio.write8(off + 2, 0x01)  # HC OS Owned is bit 0 of byte 3, not byte 2


def legsup_no_handoff(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _bios_owned(x)
    _enumerate(x, b)  # DCE set while the BIOS still owns the controller


# ---------------------------------------------------------------- DbC registers
def db_target(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    b.ring_doorbell(2)


def pci_bus_master(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    """Memory Space on, Bus Master off (fixtures/virtual/pci.py), then DCE through the BAR."""
    from dbc_harness.fixtures.virtual.pci import COMMAND_MEMORY, VirtualPciFunction

    fn = VirtualPciFunction(x)
    fn.write_config(0, 0x14, 0, 0x04, 2, COMMAND_MEMORY)
    b.program()
    fn.mmio.write32(x.regs.dbc_offset + 0x20, 1 << 31)


def dce_regs_changed(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    b.write("DCERSTSZ", DCERSTSZ.encode(event_ring_segment_table_size=2))


def dccp_missing(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.program()
    b.write64("DCCP", 0)
    b.enable()


def dccp_align(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.write64("DCCP", b.ctx.device_address | 8)


def dccp_dma(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.program()
    b.write64("DCCP", DCCP.encode(dbc_context_pointer=0x2000_0000_0000))
    b.enable()
    x.advance(200_000)


def dccp_page(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    buf = x.dma.alloc(8192, align=4096)
    ctx = buf.device_address + 4096 - 64
    buf.view[4096 - 64 : 4096 - 64 + 192] = b.ctx.view[:192]
    b.program()
    b.write64("DCCP", ctx)
    b.enable()
    x.advance(200_000)


def addr_ac64(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.write64("DCCP", 0x1_0000_0000)


# ---------------------------------------------------------------- ERST / event ring
def erstsz(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.program()
    b.write("DCERSTSZ", DCERSTSZ.encode(event_ring_segment_table_size=2))
    b.enable()


def erstba_align(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.write64("DCERSTBA", b.erst.device_address + 16)


def erstba_dma(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.program()
    b.write64("DCERSTBA", DCERSTBA.encode(event_ring_segment_table_base_address=0x2000_0000_0000))
    b.enable()


def erst_seg_align(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.erst.view[0] |= 0x20
    b.program()
    b.enable()


def erst_seg_size(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    ERST_ENTRY.pack_into(b.erst.view, 0, ring_segment_base_address=b.event_buf.device_address,
                         ring_segment_size=8)  # fmt: skip
    b.program()
    b.enable()


def erst_seg_dma(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    x.dma.free(b.event_buf)
    b.program()
    b.write64("DCERDP", 0)
    b.enable()


def erst_seg_64k(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    buf = x.dma.alloc(1 << 17, align=1 << 16)
    seg = buf.device_address + (1 << 16) - 512
    ERST_ENTRY.pack_into(b.erst.view, 0, ring_segment_base_address=seg, ring_segment_size=64)
    b.program()
    b.write64("DCERDP", DCERDP.encode(event_ring_dequeue_pointer=seg))
    b.enable()


def erdp_range(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.program()
    b.write64("DCERDP", DCERDP.encode(event_ring_dequeue_pointer=b.out.base))
    b.enable()


def erdp_align(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.write64("DCERDP", b.event_buf.device_address | 8)


# ---------------------------------------------------------------- strings
def str_missing(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _info(b, product_string_descriptor_address=0)
    _enumerate(x, b)


def str_dma(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _info(b, product_string_descriptor_address=0x2000_0000_0000)
    _enumerate(x, b)


def str_blength(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    f = DBC_INFO_CONTEXT.parse(b.ctx.view, 0)
    _info(b, product_string_length=f["product_string_length"] + 2)
    _enumerate(x, b)


def str_type(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.str_buf.view[256 * 2 + 1] = 2
    _enumerate(x, b)


def str_utf16(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.str_buf.view[256 * 3 : 256 * 3 + 5] = bytes([5, 3, 0x30, 0x00, 0x31])
    _info(b, serial_number_string_length=5)
    _enumerate(x, b)


def str0_missing(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _info(b, string0_length=0)
    _enumerate(x, b)


def str0_langid(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    b.str_buf.view[0:2] = bytes([2, 3])
    _info(b, string0_length=2)
    _enumerate(x, b)


# ---------------------------------------------------------------- endpoint contexts
def ep_type(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _out_ctx(b, ep_type=6)
    _enumerate(x, b)


def ep_mps(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _out_ctx(b, max_packet_size=512)
    _enumerate(x, b)


def ep_burst(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _out_ctx(b, max_burst_size=0)
    _enumerate(x, b)


def ep_deq_dma(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _out_ctx(b, tr_dequeue_pointer=0x2000_0000_0000)
    _enumerate(x, b)


def ep_deq_align(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _out_ctx(b, rsvdz2_1=4)
    _enumerate(x, b)


# ---------------------------------------------------------------- transfer rings
def trb_dma(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _out_ctx(b, tr_dequeue_pointer=0x2000_0000_0000)
    _configured(x, b)
    x.findings.clear()
    b.ring_doorbell(0)
    x.advance(100)


def trb_type(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    b.out.put(LINK.build(trb_type=TRBType.SetupStage, C=0))
    b.ring_doorbell(0)
    x.advance(100)


def trb_len(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    b.out.put(NORMAL.build(data_buffer_pointer=b.data.device_address,
                           trb_transfer_length=65537, C=0))  # fmt: skip
    b.ring_doorbell(0)
    x.advance(100)


def trb_64k(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    line = (b.data.device_address + 0x10000) & ~0xFFFF  # a 64 KiB line inside the buffer
    b.out.put(NORMAL.build(data_buffer_pointer=line - 0x100, trb_transfer_length=0x200, C=0))
    b.ring_doorbell(0)
    x.advance(100)


def trb_buf_dma(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    b.out.put(NORMAL.build(data_buffer_pointer=0x2000_0000_0000, trb_transfer_length=16, C=0))
    b.ring_doorbell(0)
    x.advance(100)


def trb_idt(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    b.inr.put(NORMAL.build(data_buffer_pointer=0, trb_transfer_length=4, IDT=1, C=0))
    b.ring_doorbell(1)
    x.host.submit(b"abcd")
    x.advance(100)


def link_target(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    b.out.put(LINK.build(ring_segment_pointer=0x2000_0000_0000, C=0))
    b.ring_doorbell(0)
    x.advance(100)


def ring_loop(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    b.out.put(LINK.build(ring_segment_pointer=b.out.base, C=0))  # jumps to itself, no TC
    b.ring_doorbell(0)
    x.advance(100)


def ring_without_toggle(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    LINK.pack_into(b.out.view, (b.out.trbs - 1) * 16, ring_segment_pointer=b.out.base, TC=0,
                   C=1)  # fmt: skip
    for _ in range(b.out.trbs - 1):
        b.out.put(NORMAL.build(data_buffer_pointer=b.data.device_address,
                               trb_transfer_length=0, C=0))  # fmt: skip
    b.ring_doorbell(0)
    x.advance(100)


def ring_overrun(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    view, last = b.out.view, b.out.trbs - 2  # the last transfer slot before the Link TRB
    zero = {"data_buffer_pointer": b.data.device_address, "trb_transfer_length": 0}
    for _ in range(last):
        b.out.put(NORMAL.build(**zero, C=0))
    # the lap's last TRB by hand, the Link not handed over yet: the DbC consumes the lap and
    # waits at the Link (software is still writing this lap: no finding)
    NORMAL.pack_into(view, last * 16, **zero, C=1)
    b.ring_doorbell(0)
    x.advance(100)
    # a producer that fills every slot: that last TRB's completion let it write the next
    # lap's TRB there before the DbC passed the Link
    NORMAL.pack_into(view, last * 16, **zero, C=0)
    b.ring_doorbell(0)
    x.advance(100)


def erdp_ahead(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    # three TRBs past the DbC's enqueue pointer: events it never wrote
    b.write64(
        "DCERDP", b.event_buf.device_address + (b.event_ring.dequeue_index + 3) % b.event_trbs * 16
    )


def erst_seg_overlap(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    # the event ring segment placed over the OUT transfer ring
    ERST_ENTRY.pack_into(b.erst.view, 0, ring_segment_base_address=b.out.base, ring_segment_size=16)
    b.program()
    b.write64("DCERDP", DCERDP.encode(event_ring_dequeue_pointer=b.out.base))
    b.enable()
    x.advance(200_000)


def er_full_stall(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)  # 64-TRB event ring, drained
    for n in (b.out.trbs - 2, 20):  # more completions than the event ring holds (63)
        for i in range(n):
            b.queue_out(b"12345678", offset=64 * i)
        b.ring_doorbell(0)
        x.advance(100)  # the host takes the data into its buffer: TDs complete
    for _ in range(3):  # the host waits; nobody drains the event ring
        with pytest.raises(DebugHostTimeout):
            x.host.send(b"x", timeout=0.6)


def link_rsvdz(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    b.out.put(NORMAL.build(data_buffer_pointer=b.data.device_address, trb_transfer_length=0,
                           C=0))  # fmt: skip
    b.out.put(LINK.build(ring_segment_pointer=b.out.base, rsvdz0_0=0x4, TC=1, C=0))
    b.ring_doorbell(0)
    x.advance(100)


def link_self(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    b.out.put(LINK.build(ring_segment_pointer=b.out.base, TC=1, C=0))  # slot 0 -> slot 0
    b.ring_doorbell(0)
    x.advance(100)


def ring_seg_64k(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    buf = x.dma.alloc(1 << 17, align=1 << 16)
    base = buf.device_address + (1 << 16) - 32  # two TRBs before a 64 KiB line
    _out_ctx(b, tr_dequeue_pointer=base)
    _configured(x, b)
    zero = {"data_buffer_pointer": b.data.device_address, "trb_transfer_length": 0, "C": 1}
    NORMAL.pack_into(buf.view, (1 << 16) - 32, **zero)
    NORMAL.pack_into(buf.view, (1 << 16) - 16, **zero)
    LINK.pack_into(buf.view, 1 << 16, ring_segment_pointer=base, TC=1, C=1)  # past the line
    b.ring_doorbell(0)
    x.advance(100)


def ring_cycle(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    b.ring_doorbell(0)  # nothing queued: the DbC finds the ring empty
    x.advance(100)
    # a TRB written with the consumer's old Cycle bit (0; the ring's DCS is 1), doorbell rung
    NORMAL.pack_into(b.out.view, 0, data_buffer_pointer=b.data.device_address,
                     trb_transfer_length=8, IOC=1, C=0)  # fmt: skip
    b.ring_doorbell(0)
    x.advance(100)


def db_missing(x: VirtualXhci, b: MinimalDbcProducer) -> None:
    _configured(x, b)
    b.queue_out(b"waiting")  # handed over (Cycle bit right), but no DCDB write
    for _ in range(3):
        with pytest.raises(DebugHostTimeout):
            x.host.recv(64, timeout=0.6)


CASES: dict[str, tuple[Breaker, Quirks | None, bool]] = {
    # rule: (breaker, quirks, ac64)
    "MMIO-SUBDWORD": (mmio_subdword, None, True),
    "MMIO-UNALIGNED": (mmio_unaligned, None, True),
    "MMIO-OUT-OF-BAR": (mmio_out_of_bar, None, True),
    "MMIO-RESERVED": (mmio_reserved_0c, None, True),
    "MMIO-RESERVED/2c": (mmio_reserved_2c, None, True),
    "MMIO-RSVDZ": (mmio_rsvdz, None, True),
    "MMIO-RSVDP": (mmio_rsvdp, None, True),
    "MMIO-RO-WRITE": (mmio_ro_write, None, True),
    "MMIO-64-ORDER": (mmio_64_order, None, True),
    "MMIO-64BIT-UNSUPPORTED": (mmio_64bit_unsupported, Quirks(no_64bit_mmio=True), True),
    "XHCI-HCRST-RUNNING": (hcrst_running, None, True),
    "XHCI-LEGSUP-BIOS-SEMAPHORE": (legsup_bios_semaphore, None, True),
    "XHCI-LEGSUP-WRONG-BYTE": (legsup_wrong_byte, None, True),
    "XHCI-LEGSUP-NO-HANDOFF": (legsup_no_handoff, None, True),
    "DBC-DB-TARGET": (db_target, None, True),
    "PCI-BUS-MASTER": (pci_bus_master, None, True),
    "DBC-DCE-REGS-CHANGED": (dce_regs_changed, None, True),
    "DBC-DCCP-MISSING": (dccp_missing, None, True),
    "DBC-DCCP-ALIGN": (dccp_align, None, True),
    "DBC-DCCP-DMA": (dccp_dma, None, True),
    "DBC-DCCP-PAGE": (dccp_page, None, True),
    "DBC-ADDR-AC64": (addr_ac64, None, False),
    "DBC-ERSTSZ": (erstsz, None, True),
    "DBC-ERSTBA-ALIGN": (erstba_align, None, True),
    "DBC-ERSTBA-DMA": (erstba_dma, None, True),
    "DBC-ERST-SEG-ALIGN": (erst_seg_align, None, True),
    "DBC-ERST-SEG-SIZE": (erst_seg_size, None, True),
    "DBC-ERST-SEG-DMA": (erst_seg_dma, None, True),
    "DBC-ERST-SEG-64K": (erst_seg_64k, None, True),
    "DBC-ERDP-RANGE": (erdp_range, None, True),
    "DBC-ERDP-ALIGN": (erdp_align, None, True),
    "DBC-ERDP-AHEAD": (erdp_ahead, None, True),
    "DBC-ERST-SEG-OVERLAP": (erst_seg_overlap, None, True),
    "DBC-ER-FULL-STALL": (er_full_stall, None, True),
    "DBC-STR-MISSING": (str_missing, None, True),
    "DBC-STR-DMA": (str_dma, None, True),
    "DBC-STR-BLENGTH": (str_blength, None, True),
    "DBC-STR-TYPE": (str_type, None, True),
    "DBC-STR-UTF16": (str_utf16, None, True),
    "DBC-STR0-MISSING": (str0_missing, None, True),
    "DBC-STR0-LANGID": (str0_langid, None, True),
    "DBC-EP-TYPE": (ep_type, None, True),
    "DBC-EP-MPS": (ep_mps, None, True),
    "DBC-EP-BURST": (ep_burst, None, True),
    "DBC-EP-DEQ-DMA": (ep_deq_dma, None, True),
    "DBC-EP-DEQ-ALIGN": (ep_deq_align, None, True),
    "DBC-TRB-DMA": (trb_dma, None, True),
    "DBC-TRB-TYPE": (trb_type, None, True),
    "DBC-TRB-LEN": (trb_len, None, True),
    "DBC-TRB-64K": (trb_64k, None, True),
    "DBC-TRB-BUF-DMA": (trb_buf_dma, None, True),
    "DBC-TRB-IDT": (trb_idt, None, True),
    "DBC-LINK-TARGET": (link_target, None, True),
    "DBC-LINK-RSVDZ": (link_rsvdz, None, True),
    "DBC-LINK-SELF": (link_self, None, True),
    "DBC-RING-SEG-64K": (ring_seg_64k, None, True),
    "DBC-RING-CYCLE": (ring_cycle, None, True),
    "DBC-DB-MISSING": (db_missing, None, True),
    "DBC-RING-LOOP": (ring_loop, None, True),
    "DBC-RING-LOOP/no-toggle": (ring_without_toggle, None, True),
    "DBC-RING-OVERRUN": (ring_overrun, None, True),
}


def test_every_rule_has_a_scenario() -> None:
    covered = {case.split("/")[0] for case in CASES}
    assert covered == set(RULES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_setup_gives_exactly_its_finding(case: str) -> None:
    rule = case.split("/")[0]
    breaker, quirks, ac64 = CASES[case]
    kwargs: dict[str, Any] = {"strict": False, "ac64": ac64}
    if quirks is not None:
        kwargs["quirks"] = quirks
    with VirtualXhci(**kwargs) as x:
        b = MinimalDbcProducer(x)
        breaker(x, b)
        assert [f.rule for f in x.findings] == [rule], [str(f) for f in x.findings]
        f = x.findings[0]
        assert f.section == RULES[rule][0]
        assert f.where and f.expected and f.seen


def test_two_langid_string0_is_accepted() -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x)
        b.str_buf.view[0:6] = bytes([6, 3, 0x09, 0x00, 0x04, 0x00])
        _info(b, string0_length=6)
        b.bring_up()
        assert x.host.device is not None and x.host.device.langids == (0x0009, 0x0004)
        assert x.findings == []


def test_strict_mode_raises_from_the_mmio_call() -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x)
        with pytest.raises(SpecViolation) as info:
            x.mmio.read32(b.base + 0x0C)
        assert info.value.finding.rule == "MMIO-RESERVED"
        assert [f.rule for f in x.findings] == ["MMIO-RESERVED"]
        assert x.mmio.read32(b.off("DCID")) & 0xFF == 0x0A  # the model keeps working


def test_strict_mode_raises_from_advance() -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x)
        _info(b, product_string_descriptor_address=0)
        b.program()
        b.enable()
        with pytest.raises(SpecViolation) as info:
            x.advance(200_000)
        assert info.value.finding.rule == "DBC-STR-MISSING"


def test_bad_trb_type_completes_with_trb_error_and_halts() -> None:
    with VirtualXhci(strict=False) as x:
        b = MinimalDbcProducer(x)
        _configured(x, b)
        addr = b.out.put(LINK.build(trb_type=TRBType.SetupStage, C=0))
        b.ring_doorbell(0)
        x.advance(100)
        ev = b.transfer_events()
        assert len(ev) == 1
        assert ev[0].fields["completion_code"] == CompletionCode.TRBError
        assert ev[0].fields["trb_pointer"] == addr
        assert b.dcctrl()["HOT"] == 1
        ctx = DBC_ENDPOINT_CONTEXT.parse(b.ctx.view, DBC_OUT_EP_OFFSET)
        assert ctx["ep_state"] == 2 and ctx["tr_dequeue_pointer"] == addr


def test_readme_lists_every_rule() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    # The rule id and its spec section, as the model reports them (RULES is the one source).
    missing = [
        rule for rule, (section, _) in RULES.items() if f"| `{rule}` | {section} |" not in readme
    ]
    assert missing == []
