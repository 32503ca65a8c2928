"""A minimal register-level DbC setup for testing the virtual xHCI as a device.

Written from the spec (xHCI 1.2 7.6) with the drivers/xhci layouts and the allocator only: it is
NOT the project's DbC driver. Tests use it to build rings/contexts, write registers, advance
virtual time and look at registers, events and findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from allocator.space import DmaBuffer
from drivers.xhci.contexts import (
    DBC_CONTEXT_SIZE,
    DBC_ENDPOINT_CONTEXT,
    DBC_IN_EP_OFFSET,
    DBC_INFO_CONTEXT,
    DBC_OUT_EP_OFFSET,
    ERST_ENTRY,
    EPType,
)
from drivers.xhci.registers import (
    DBC_REGS,
    DCCP,
    DCCTRL,
    DCDB,
    DCDDI1,
    DCDDI2,
    DCERDP,
    DCERSTBA,
    DCERSTSZ,
    DCPORTSC,
    DCST,
)
from drivers.xhci.strings import build_string0, build_string_descriptor
from drivers.xhci.trb import LINK, NO_OP, NORMAL, TRBType, decode_trb
from fixtures.virtual import VirtualXhci

TRB = 16


@dataclass
class Event:
    trb_type: int
    fields: dict[str, int]
    address: int


@dataclass
class Ring:
    """A one-segment producer ring ending in a Link TRB with Toggle Cycle."""

    buf: DmaBuffer
    size: int
    enqueue: int = 0
    pcs: int = 1
    addresses: list[int] = field(default_factory=list)

    @property
    def base(self) -> int:
        return self.buf.device_address

    def __post_init__(self) -> None:
        LINK.pack_into(
            self.buf.view, (self.size - 1) * TRB, ring_segment_pointer=self.base, TC=1, C=0
        )

    def put(self, raw: bytes) -> int:
        """Write one TRB (``raw`` built with C = 0) owned by the controller; returns its
        address. Wraps through the Link TRB, handing it over and toggling PCS."""
        address = self.base + self.enqueue * TRB
        view = self.buf.view
        off = self.enqueue * TRB
        view[off : off + 12] = raw[:12]
        control = int.from_bytes(raw[12:16], "little") | self.pcs
        view[off + 12 : off + 16] = control.to_bytes(4, "little")
        self.enqueue += 1
        if self.enqueue == self.size - 1:
            link_off = self.enqueue * TRB
            c = int.from_bytes(view[link_off + 12 : link_off + 16], "little")
            c = (c & ~1) | self.pcs
            view[link_off + 12 : link_off + 16] = c.to_bytes(4, "little")
            self.enqueue = 0
            self.pcs ^= 1
        return address


class DbcBench:
    """Register-level setup sequence (the Linux runtime order, spec 7.6.4.1)."""

    def __init__(
        self,
        xhci: VirtualXhci,
        *,
        ring_trbs: int = 64,
        event_trbs: int = 64,
        strings: tuple[str, str, str] = ("Linux Foundation", "Linux USB Debug Target", "0001"),
        vid: int = 0x1D6B,
        pid: int = 0x0010,
        bcd: int = 0x0010,
        protocol: int = 0,
    ) -> None:
        self.x = xhci
        self.mmio = xhci.mmio
        self.base = xhci.dbc_offset
        dma = xhci.dma
        self.erst = dma.alloc(64, align=64)
        self.event_buf = dma.alloc(event_trbs * TRB, align=64, boundary=1 << 16)
        self.event_trbs = event_trbs
        self.out = Ring(dma.alloc(ring_trbs * TRB, align=64, boundary=1 << 16), ring_trbs)
        self.inr = Ring(dma.alloc(ring_trbs * TRB, align=64, boundary=1 << 16), ring_trbs)
        self.ctx = dma.alloc(DBC_CONTEXT_SIZE, align=64, boundary=4096)
        self.str_buf = dma.alloc(4 * 256, align=64)
        self.data = dma.alloc(1 << 20, align=4096)
        self.ev_index = 0
        self.ccs = 1
        self.vid, self.pid, self.bcd, self.protocol = vid, pid, bcd, protocol
        self.strings = strings
        self.fill_structures()

    # ------------------------------------------------------------------ registers
    def off(self, name: str) -> int:
        return self.base + DBC_REGS.offset(name)

    def read(self, name: str) -> int:
        return self.mmio.read32(self.off(name))

    def field(self, name: str, fieldname: str) -> int:
        layout = DBC_REGS.layout(name)
        return layout.get(self.read(name), fieldname)

    def write(self, name: str, value: int) -> None:
        self.mmio.write32(self.off(name), value)

    def write64(self, name: str, value: int) -> None:
        self.mmio.write32(self.off(name), value & 0xFFFF_FFFF)
        self.mmio.write32(self.off(name) + 4, value >> 32)

    def dcctrl(self) -> dict[str, int]:
        return DCCTRL.decode(self.read("DCCTRL"))

    def portsc(self) -> dict[str, int]:
        return DCPORTSC.decode(self.read("DCPORTSC"))

    def dcst(self) -> dict[str, int]:
        return DCST.decode(self.read("DCST"))

    # ------------------------------------------------------------------ memory structures
    def fill_structures(self) -> None:
        ERST_ENTRY.pack_into(
            self.erst.view, 0, ring_segment_base_address=self.event_buf.device_address,
            ring_segment_size=self.event_trbs,
        )  # fmt: skip
        s = self.str_buf
        descs = [build_string0()] + [build_string_descriptor(t) for t in self.strings]
        addrs = []
        for i, d in enumerate(descs):
            s.view[256 * i : 256 * i + len(d)] = d
            addrs.append(s.device_address + 256 * i)
        DBC_INFO_CONTEXT.pack_into(
            self.ctx.view, 0,
            string0_descriptor_address=addrs[0],
            manufacturer_string_descriptor_address=addrs[1],
            product_string_descriptor_address=addrs[2],
            serial_number_string_descriptor_address=addrs[3],
            string0_length=len(descs[0]), manufacturer_string_length=len(descs[1]),
            product_string_length=len(descs[2]), serial_number_string_length=len(descs[3]),
        )  # fmt: skip
        for offset, ring, ep_type in (
            (DBC_OUT_EP_OFFSET, self.out, EPType.BulkOut),
            (DBC_IN_EP_OFFSET, self.inr, EPType.BulkIn),
        ):
            DBC_ENDPOINT_CONTEXT.pack_into(
                self.ctx.view, offset, ep_type=ep_type, max_packet_size=1024,
                max_burst_size=self.x.max_burst, tr_dequeue_pointer=ring.base, DCS=1, cerr=0,
                average_trb_length=1024,
            )  # fmt: skip

    def program(self) -> None:
        """Steps 3-4 of the bring-up: ERST, DCERDP, DCCP, DCDDI1/2."""
        self.write("DCERSTSZ", DCERSTSZ.encode(event_ring_segment_table_size=1))
        self.write64("DCERSTBA", DCERSTBA.encode(
            event_ring_segment_table_base_address=self.erst.device_address))  # fmt: skip
        self.write64("DCERDP", DCERDP.encode(
            event_ring_dequeue_pointer=self.event_buf.device_address))  # fmt: skip
        self.write64("DCCP", DCCP.encode(dbc_context_pointer=self.ctx.device_address))
        self.write("DCDDI1", DCDDI1.encode(vendor_id=self.vid, dbc_protocol=self.protocol))
        self.write("DCDDI2", DCDDI2.encode(product_id=self.pid, device_revision=self.bcd))

    def enable(self, lse: int = 1) -> None:
        self.write("DCCTRL", DCCTRL.encode(DCE=1, LSE=lse))

    def bring_up(self, *, max_us: int = 1_000_000) -> None:
        """Program, enable, wait for DCR (virtual time), ack DRC and the port change bits."""
        self.program()
        self.enable()
        self.wait(lambda: self.dcctrl()["DCR"] == 1, max_us)
        self.ack()

    def ack(self) -> None:
        """Acknowledge DRC (RW1C) and the DCPORTSC change bits (read-modify-write)."""
        self.write("DCCTRL", self.read("DCCTRL"))
        self.write("DCPORTSC", self.read("DCPORTSC"))

    def wait(self, cond: object, max_us: int, step_us: int = 1000) -> None:
        waited = 0
        while not cond():  # type: ignore[operator]
            if waited >= max_us:
                raise AssertionError(f"condition not met after {max_us} us of virtual time")
            self.x.advance(step_us)
            waited += step_us

    # ------------------------------------------------------------------ transfers
    def ring_doorbell(self, target: int) -> None:
        self.write("DCDB", DCDB.encode(db_target=target))

    def queue_out(self, data: bytes, *, ioc: int = 1, chain: int = 0, offset: int = 0) -> int:
        """Copy ``data`` to the data buffer at ``offset`` and queue one Normal TRB on OUT."""
        self.data.view[offset : offset + len(data)] = data
        return self.out.put(NORMAL.build(
            data_buffer_pointer=self.data.device_address + offset,
            trb_transfer_length=len(data), IOC=ioc, CH=chain, C=0))  # fmt: skip

    def post_in(self, length: int, *, offset: int = 0x80000, ioc: int = 1, isp: int = 1,
                chain: int = 0) -> int:  # fmt: skip
        """Post one receive buffer (Normal TRB) on the IN ring."""
        return self.inr.put(NORMAL.build(
            data_buffer_pointer=self.data.device_address + offset,
            trb_transfer_length=length, IOC=ioc, ISP=isp, CH=chain, C=0))  # fmt: skip

    def noop(self, ring: Ring, *, ioc: int = 0) -> int:
        return ring.put(NO_OP.build(IOC=ioc, C=0))

    def in_data(self, length: int, offset: int = 0x80000) -> bytes:
        return bytes(self.data.view[offset : offset + length])

    # ------------------------------------------------------------------ events
    def events(self, *, update_erdp: bool = True) -> list[Event]:
        """Consume every event the controller handed over; write DCERDP once."""
        out: list[Event] = []
        view = self.event_buf.view
        while True:
            off = self.ev_index * TRB
            t, f = decode_trb(view, off)
            if f["C"] != self.ccs:
                break
            out.append(Event(int(t), f, self.event_buf.device_address + off))
            self.ev_index += 1
            if self.ev_index == self.event_trbs:
                self.ev_index = 0
                self.ccs ^= 1
        if out and update_erdp:
            erdp = self.event_buf.device_address + self.ev_index * TRB
            self.write64("DCERDP", DCERDP.encode(event_ring_dequeue_pointer=erdp))
        return out

    def transfer_events(self) -> list[Event]:
        return [e for e in self.events() if e.trb_type == TRBType.TransferEvent]
