"""Finding the DbC and the reference bring-up sequence (xHCI 1.2 section 7.6.4 "DbC
Initialization", in the order of Linux's runtime DbC driver, drivers/usb/host/xhci-dbgcap.c).

1. :func:`find_dbc`: walk the extended capability list from HCCPARAMS1.xECP (bounded).
2. :func:`disable`: DCCTRL = 0, wait for DCE to read 0.
3. :class:`DbcContextMemory` + :func:`program`: DCERSTSZ, DCERSTBA, DCERDP; strings, info
   context, both endpoint contexts; DCCP, DCDDI1, DCDDI2.
4. :func:`enable`: DCE (and LSE); wait for DCE to read back 1.
5. :func:`reset_usb3_ports`: reset not-connected USB3 root ports (on Intel parts, when asked,
   or once when DCPORTSC.CCS stays 0 for ``PORT_RESET_AFTER``: the driver decides).

Before all of it, :func:`bios_handoff` takes the controller from the firmware (xHCI 1.2 4.22.1,
USB Legacy Support 7.1): request OS ownership, wait (bounded) for the BIOS to let go, go on with a
logged warning if it never does, then turn the firmware's SMIs off.
Waiting for CCS and DCR is the event handler's job (the driver polls for it).
"""

from __future__ import annotations

import logging

from dbc_harness.allocator import DmaBuffer, DmaError, DmaSpace
from dbc_harness.drivers.clock import Clock
from dbc_harness.drivers.dbc.errors import (
    DbcDmaError,
    DbcNotFound,
    DbcSurpriseRemoval,
    DbcTimeout,
)
from dbc_harness.drivers.dbc.identity import DbcIdentity
from dbc_harness.drivers.dbc.registers import DbcRegisters
from dbc_harness.drivers.dbc.wait import Deadline, wait_for
from dbc_harness.drivers.mmio import ALL_ONES, Mmio
from dbc_harness.drivers.xhci.contexts import (
    DBC_CONTEXT_SIZE,
    DBC_ENDPOINT_CONTEXT,
    DBC_IN_EP_OFFSET,
    DBC_INFO_CONTEXT,
    DBC_INFO_OFFSET,
    DBC_MAX_PACKET_SIZE,
    DBC_OUT_EP_OFFSET,
    EPType,
)
from dbc_harness.drivers.xhci.host import (
    CapabilityListLoops,
    CapabilityReadsAllOnes,
    walk_extended_capabilities,
)
from dbc_harness.drivers.xhci.registers import (
    CAPABILITY_REGS,
    CAPLENGTH,
    DCCP,
    DCCTRL,
    DCDDI1,
    DCDDI2,
    DCERDP,
    DCERSTBA,
    DCERSTSZ,
    HCCPARAMS1,
    PORT_REGS_OFFSET,
    PORT_REGS_STRIDE,
    PORTSC,
    PORTSC_RW1C,
    SUPPORTED_PROTOCOL,
    USBLEGCTLSTS,
    USBLEGSUP,
    XECP_ID_DEBUG_CAPABILITY,
    XECP_ID_SUPPORTED_PROTOCOL,
    XECP_ID_USB_LEGACY_SUPPORT,
    read_register,
)
from dbc_harness.drivers.xhci.ring import EventRing, ProducerRing
from dbc_harness.drivers.xhci.strings import build_string0, build_string_descriptor

#: CErr for both DbC endpoints (3 retries, as every reference driver)
CERR = 3
#: each string descriptor gets a 256-byte slot in one DMA buffer
STRING_SLOT = 256


def _read_cap(mmio: Mmio, name: str) -> int:
    value = read_register(mmio, CAPABILITY_REGS.offset(name), CAPABILITY_REGS.layout(name))
    if value == ALL_ONES:
        raise DbcSurpriseRemoval(f"{name} read 0xFFFFFFFF: the controller is gone")
    return value


def extended_capabilities(mmio: Mmio) -> list[tuple[int, int]]:
    """[(BAR0 offset, capability ID)] in list order (the xHCI walk, bounded; a list that loops
    ends where it loops back)."""
    xecp = HCCPARAMS1.get(_read_cap(mmio, "HCCPARAMS1"), "xECP")
    try:
        caps = walk_extended_capabilities(mmio, 4 * xecp)
    except CapabilityListLoops as exc:
        caps = exc.found
    except CapabilityReadsAllOnes as exc:
        raise DbcSurpriseRemoval(
            f"extended capability at BAR0+0x{exc.offset:x} read 0xFFFFFFFF: the controller is gone"
        ) from exc
    return [(cap.offset, cap.capability_id) for cap in caps]


def find_dbc(mmio: Mmio) -> int:
    """BAR0 offset of the DbC register block (Capability ID 0x0A); :class:`DbcNotFound` if the
    list has none."""
    caps = extended_capabilities(mmio)
    for offset, cap_id in caps:
        if cap_id == XECP_ID_DEBUG_CAPABILITY:
            return offset
    listed = ", ".join(f"0x{cid:02x}@0x{off:x}" for off, cid in caps) or "empty list"
    raise DbcNotFound(f"no Debug Capability (ID 0x0A) in the extended capability list ({listed})")


def address_limit(mmio: Mmio) -> int | None:
    """``1 << 32`` when HCCPARAMS1.AC64 = 0 (every DMA address must be below 4 GiB), else None."""
    return None if HCCPARAMS1.get(_read_cap(mmio, "HCCPARAMS1"), "AC64") else 1 << 32


class DbcContextMemory:
    """The 192-byte DbC context (info + OUT + IN endpoint contexts) and the string descriptors."""

    def __init__(self, dma: DmaSpace, *, limit: int | None) -> None:
        try:
            self.context: DmaBuffer = dma.alloc(
                DBC_CONTEXT_SIZE, align=64, boundary=4096, limit=limit
            )
            self.strings: DmaBuffer = dma.alloc(
                4 * STRING_SLOT, align=64, boundary=4096, limit=limit
            )
        except DmaError as exc:
            raise DbcDmaError(f"cannot allocate the DbC context: {exc}") from exc

    @property
    def address(self) -> int:
        return self.context.device_address

    def fill_info(self, identity: DbcIdentity) -> None:
        """String descriptors (String0 = LANGID, manufacturer, product, serial) and the info
        context pointing at them with matching lengths."""
        descriptors = [
            build_string0((identity.langid,)),
            *(build_string_descriptor(s) for s in identity.strings),
        ]
        view = self.strings.view
        view[:] = bytes(len(view))
        addresses = []
        for i, desc in enumerate(descriptors):
            view[i * STRING_SLOT : i * STRING_SLOT + len(desc)] = desc
            addresses.append(self.strings.device_address + i * STRING_SLOT)
        DBC_INFO_CONTEXT.pack_into(
            self.context.view,
            DBC_INFO_OFFSET,
            string0_descriptor_address=addresses[0],
            manufacturer_string_descriptor_address=addresses[1],
            product_string_descriptor_address=addresses[2],
            serial_number_string_descriptor_address=addresses[3],
            string0_length=len(descriptors[0]),
            manufacturer_string_length=len(descriptors[1]),
            product_string_length=len(descriptors[2]),
            serial_number_string_length=len(descriptors[3]),
        )

    def fill_endpoints(self, out_ring: ProducerRing, in_ring: ProducerRing, max_burst: int) -> None:
        """Both endpoint contexts for empty rings: EP Type, MPS 1024, Max Burst from DCCTRL,
        CErr 3, TR Dequeue Pointer = ring start with DCS = its producer cycle state."""
        for offset, ep_type, ring in (
            (DBC_OUT_EP_OFFSET, EPType.BulkOut, out_ring),
            (DBC_IN_EP_OFFSET, EPType.BulkIn, in_ring),
        ):
            DBC_ENDPOINT_CONTEXT.pack_into(
                self.context.view,
                offset,
                ep_type=int(ep_type),
                max_packet_size=DBC_MAX_PACKET_SIZE,
                max_burst_size=max_burst,
                cerr=CERR,
                tr_dequeue_pointer=ring.dequeue_pointer,
                DCS=ring.pcs,
                average_trb_length=DBC_MAX_PACKET_SIZE,
            )

    def endpoint(self, which: str) -> dict[str, int]:
        """Fields of the "out" (target -> host) or "in" (host -> target) endpoint context as
        the controller last wrote them (EP State, TR Dequeue Pointer, DCS)."""
        offset = DBC_OUT_EP_OFFSET if which == "out" else DBC_IN_EP_OFFSET
        return DBC_ENDPOINT_CONTEXT.parse(self.context.view, offset)

    def free(self, dma: DmaSpace) -> None:
        for buf in (self.context, self.strings):
            if not buf.freed:
                dma.free(buf)


def disable(regs: DbcRegisters, clock: Clock, timeout: float) -> None:
    """DCCTRL = 0, then wait (bounded) for DCE to read 0."""
    regs.write32(regs.DCCTRL, 0)
    wait_for(
        clock,
        timeout,
        lambda: DCCTRL.get(regs.dcctrl(), "DCE") == 0,
        "DCCTRL.DCE to read 0 after clearing it",
    )


def program(
    regs: DbcRegisters,
    event_ring: EventRing,
    memory: DbcContextMemory,
    identity: DbcIdentity,
) -> None:
    """Event ring registers, DCCP and the device descriptor info (DCE still 0)."""
    regs.write32(
        regs.DCERSTSZ,
        DCERSTSZ.replace(regs.read32(regs.DCERSTSZ), event_ring_segment_table_size=1),
    )
    regs.write64(
        regs.DCERSTBA,
        DCERSTBA.encode(event_ring_segment_table_base_address=event_ring.erst_address),
    )
    regs.write64(regs.DCERDP, DCERDP.encode(event_ring_dequeue_pointer=event_ring.dequeue_pointer))
    regs.write64(regs.DCCP, DCCP.encode(dbc_context_pointer=memory.address))
    regs.write32(
        regs.DCDDI1, DCDDI1.encode(vendor_id=identity.vendor_id, dbc_protocol=identity.protocol)
    )
    regs.write32(
        regs.DCDDI2,
        DCDDI2.encode(product_id=identity.product_id, device_revision=identity.bcd_device),
    )


def enable(regs: DbcRegisters, clock: Clock, timeout: float) -> None:
    """Set DCE and LSE; wait (bounded) for DCE to read back 1."""
    regs.write32(regs.DCCTRL, DCCTRL.encode(DCE=1, LSE=1))
    wait_for(
        clock,
        timeout,
        lambda: DCCTRL.get(regs.dcctrl(), "DCE") == 1,
        "DCCTRL.DCE to read back 1 after setting it",
    )


#: PCI Vendor ID of the parts whose USB3 root ports Linux's early printk DbC driver resets after
#: DCE (drivers/usb/early/xhci-dbc.c, xdbc_start() -> xdbc_reset_debug_port(), Intel only)
PCI_VENDOR_ID_INTEL = 0x8086
#: seconds DCPORTSC.CCS may stay 0 after DCE before a driver that was not told otherwise resets
#: the not-connected USB3 root ports once (a USB3 link trains in well under this; Xen resets
#: them on every vendor)
PORT_RESET_AFTER = 0.2


def usb3_ports(mmio: Mmio) -> list[int]:
    """1-based root port numbers of the USB3 Supported Protocol capabilities."""
    ports: list[int] = []
    for offset, cap_id in extended_capabilities(mmio):
        if cap_id != XECP_ID_SUPPORTED_PROTOCOL:
            continue
        raw = b"".join(mmio.read32(offset + 4 * i).to_bytes(4, "little") for i in range(4))
        proto = SUPPORTED_PROTOCOL.parse(raw)
        if proto["major_revision"] == 3:
            first = proto["compatible_port_offset"]
            ports.extend(range(first, first + proto["compatible_port_count"]))
    return ports


def reset_usb3_ports(mmio: Mmio, clock: Clock, timeout: float) -> list[int]:
    """Reset every not-connected USB3 root port (some hosts only enumerate the DbC after it;
    Linux early printk does it on Intel, Xen on every vendor). RW1C change bits and PED are
    written as 0 so nothing else changes. Returns the ports reset; waits (bounded) for PR to
    clear."""
    op_base = read_register(mmio, CAPABILITY_REGS.offset("CAPLENGTH"), CAPLENGTH)
    reset: list[tuple[int, int]] = []
    clear = dict.fromkeys(PORTSC_RW1C, 0)
    for port in usb3_ports(mmio):
        offset = op_base + PORT_REGS_OFFSET + PORT_REGS_STRIDE * (port - 1)
        value = mmio.read32(offset)
        if value == ALL_ONES:
            raise DbcSurpriseRemoval(f"PORTSC{port} read 0xFFFFFFFF: the controller is gone")
        if PORTSC.get(value, "CCS"):
            continue
        mmio.write32(offset, PORTSC.replace(value, PED=0, PR=1, **clear))
        reset.append((port, offset))
    deadline = Deadline(clock, timeout)
    for _port, offset in reset:
        while PORTSC.get(mmio.read32(offset), "PR") and not deadline.expired():
            deadline.pause()
    return [p for p, _ in reset]


# ---------------------------------------------------------------------- BIOS handoff (4.22.1)

_log = logging.getLogger("dbc_harness.drivers.dbc")
#: USBLEGSUP: HC BIOS Owned Semaphore (bit 16) and HC OS Owned Semaphore (bit 24), 7.1.1
HC_BIOS_OWNED = USBLEGSUP.encode(hc_bios_owned_semaphore=1)
HC_OS_OWNED = USBLEGSUP.encode(hc_os_owned_semaphore=1)
#: how long the firmware gets to release the controller (Linux's xhci-pci waits 1 s)
HANDOFF_TIMEOUT = 1.0


def bios_handoff(mmio: Mmio, clock: Clock, timeout: float = HANDOFF_TIMEOUT) -> str:
    """Take the controller from the firmware (xHCI 1.2 4.22.1).

    If USBLEGSUP says the BIOS owns it: set HC OS Owned (read-modify-write, RsvdP bits kept; the
    BIOS's bit is never written), then wait at most ``timeout`` for HC BIOS Owned to clear. A
    BIOS that never lets go is logged and the bring-up goes on (as Linux's xhci-pci does).
    Then the firmware's SMIs are disabled and their pending status bits cleared (RW1C), with
    the reserved bits as read. Returns ``"absent"`` (no USB Legacy Support capability),
    ``"os-owned"`` (the BIOS did not own it), ``"released"`` or ``"timeout"``."""
    legacy = [off for off, cid in extended_capabilities(mmio) if cid == XECP_ID_USB_LEGACY_SUPPORT]
    offset = legacy[0] if legacy else None
    if offset is None:
        return "absent"
    value = mmio.read32(offset)
    if value == ALL_ONES:
        raise DbcSurpriseRemoval(f"USBLEGSUP at BAR0+0x{offset:x} read 0xFFFFFFFF")
    result = "os-owned"
    if value & HC_BIOS_OWNED:
        mmio.write32(offset, value | HC_OS_OWNED)
        try:
            wait_for(
                clock,
                timeout,
                lambda: not mmio.read32(offset) & HC_BIOS_OWNED,
                "HC BIOS Owned to clear after requesting OS ownership",
            )
            result = "released"
        except DbcTimeout:
            _log.warning(
                "xHCI BIOS handoff failed: HC BIOS Owned still set %.3f s after the request "
                "(USBLEGSUP=0x%08x); going on (BIOS bug?)",
                timeout,
                mmio.read32(offset),
            )
            result = "timeout"
    control = mmio.read32(offset + 4)
    mmio.write32(
        offset + 4,
        USBLEGCTLSTS.replace(
            control,
            usb_smi_enable=0,
            smi_on_host_system_error_enable=0,
            smi_on_os_ownership_enable=0,
            smi_on_pci_command_enable=0,
            smi_on_bar_enable=0,
            smi_on_os_ownership_change=1,
            smi_on_pci_command=1,
            smi_on_bar=1,
        ),
    )
    return result
