"""xHCI registers (xHCI 1.2 chapter 5, section 7): register blocks (offsets derived from a
construct Struct) and one bit-field :class:`Layout` per register value.

* capability registers CAPLENGTH..HCCPARAMS2 (5.3), :data:`CAPABILITY_REGS`;
* operational USBCMD, USBSTS, PAGESIZE, DNCTRL, CRCR, DCBAAP, CONFIG (5.4),
  :data:`OPERATIONAL_REGS`, and the port register set PORTSC.. (5.4.8), :data:`PORT_REGS`
  (at operational base + :data:`PORT_REGS_OFFSET` + :data:`PORT_REGS_STRIDE` * (port - 1));
* interrupter register set IMAN, IMOD, ERSTSZ, ERSTBA, ERDP (5.5.2), :data:`INTERRUPTER_REGS`
  (at runtime base + :data:`INTERRUPTER_REGS_OFFSET` + 32 * n); doorbell (5.6) :data:`DOORBELL`;
* extended capability header (7.0), USB Legacy Support (7.1), Supported Protocol (7.2);
* the DbC register block DCID..DCDDI2 (7.6.8), :data:`DBC_REGS`, e.g.
  ``DBC_REGS.offset("DCCTRL") == 0x20``.

A register value layout decodes/encodes the integer read from or written to the register:
``DCCTRL.decode(v)["DCE"]``, ``DCCTRL.get(v, "DCR")``, ``DCCTRL.replace(v, DCE=1)``,
``DCCTRL.encode(DCE=1, LSE=1)``. Reserved bits are ``rsvdz*``/``rsvdp*`` fields.
"""

from __future__ import annotations

from collections.abc import Mapping

from construct import Construct, Int8ul, Int16ul, Int32ul, Struct
from dbc_harness.drivers.mmio import Mmio
from dbc_harness.drivers.xhci._decl import RP, RZ, address_bits, bits, dword, qword
from dbc_harness.drivers.xhci.errors import LayoutError
from dbc_harness.drivers.xhci.layout import Layout, format_hex


def _reg(name: str, *words: object) -> Layout:
    return Layout(name, Struct(*words))


def _plain(name: str, construct: Construct, doc: str) -> Layout:
    return Layout(name, Struct(name.lower() / construct * doc))


# -- capability registers (5.3) ----------------------------------------------------------------

CAPLENGTH = Layout("CAPLENGTH", Struct("caplength" / Int8ul * "Capability Register Length (5.3.1)"))
HCIVERSION = Layout(
    "HCIVERSION", Struct("hciversion" / Int16ul * "Interface Version Number, BCD (5.3.2)")
)
HCSPARAMS1 = _reg(
    "HCSPARAMS1",
    dword(0, bits("max_ports", 8, "Number of Ports (MaxPorts) (5.3.3)"), RZ(5),
          bits("max_intrs", 11, "Number of Interrupters (MaxIntrs)"),
          bits("max_slots", 8, "Number of Device Slots (MaxSlots)")),
)  # fmt: skip
HCSPARAMS2 = _reg(
    "HCSPARAMS2",
    dword(0, bits("max_scratchpad_bufs_lo", 5, "Max Scratchpad Buffers Lo (5.3.4)"),
          bits("SPR", 1, "Scratchpad Restore"),
          bits("max_scratchpad_bufs_hi", 5, "Max Scratchpad Buffers Hi"), RZ(13),
          bits("erst_max", 4, "Event Ring Segment Table Max (ERST Max)"),
          bits("IST", 4, "Isochronous Scheduling Threshold")),
)  # fmt: skip
HCSPARAMS3 = _reg(
    "HCSPARAMS3",
    dword(0, bits("u2_device_exit_latency", 16, "U2 Device Exit Latency (5.3.5)"), RZ(8),
          bits("u1_device_exit_latency", 8, "U1 Device Exit Latency")),
)  # fmt: skip
HCCPARAMS1 = _reg(
    "HCCPARAMS1",
    dword(0, bits("xECP", 16, "xHCI Extended Capabilities Pointer, in dwords (5.3.6)"),
          bits("max_psa_size", 4, "Maximum Primary Stream Array Size (MaxPSASize)"),
          bits("CFC", 1, "Contiguous Frame ID Capability"),
          bits("SEC", 1, "Stopped EDTLA Capability"),
          bits("SPC", 1, "Stopped - Short Packet Capability"),
          bits("PAE", 1, "Parse All Event Data"), bits("NSS", 1, "No Secondary SID Support"),
          bits("LTC", 1, "Latency Tolerance Messaging Capability"),
          bits("LHRC", 1, "Light HC Reset Capability"), bits("PIND", 1, "Port Indicators"),
          bits("PPC", 1, "Port Power Control"), bits("CSZ", 1, "Context Size (1 = 64 bytes)"),
          bits("BNC", 1, "BW Negotiation Capability"),
          bits("AC64", 1, "64-bit Addressing Capability")),
)  # fmt: skip
DBOFF = _reg(
    "DBOFF",
    dword(0, address_bits("doorbell_array_offset", 30, 2, "Doorbell Array Offset (5.3.7)"),
          RZ(2)),
)  # fmt: skip
RTSOFF = _reg(
    "RTSOFF",
    dword(0, address_bits("runtime_register_space_offset", 27, 5,
                          "Runtime Register Space Offset (5.3.8)"), RZ(5)),
)  # fmt: skip
HCCPARAMS2 = _reg(
    "HCCPARAMS2",
    dword(0, RZ(22), bits("VTC", 1, "Virtualization Based Trusted I/O Capability (5.3.9)"),
          bits("GSC", 1, "Get/Set Extended Property Capability"),
          bits("ETC_TSC", 1, "Extended TBC TRB Status Capability"),
          bits("ETC", 1, "Extended TBC Capability"), bits("CIC", 1, "Configuration Information"),
          bits("LEC", 1, "Large ESIT Payload Capability"),
          bits("CTC", 1, "Compliance Transition Capability"),
          bits("FSC", 1, "Force Save Context Capability"),
          bits("CMC", 1, "Configure Endpoint Command Max Exit Latency Too Large Capability"),
          bits("U3C", 1, "U3 Entry Capability")),
)  # fmt: skip

# -- operational registers (5.4) -------------------------------------------------------------

USBCMD = _reg(
    "USBCMD",
    dword(0, RP(15), bits("VTIOE", 1, "VTIO Enable (5.4.1)"),
          bits("TSC_EN", 1, "Extended TBC TRB Status Enable"),
          bits("ETE", 1, "Extended TBC Enable"), bits("CME", 1, "CEM Enable"), RP(1),
          bits("EU3S", 1, "Enable U3 MFINDEX Stop"), bits("EWE", 1, "Enable Wrap Event"),
          bits("CRS", 1, "Controller Restore State"), bits("CSS", 1, "Controller Save State"),
          bits("LHCRST", 1, "Light Host Controller Reset"), RP(3),
          bits("HSEE", 1, "Host System Error Enable"), bits("INTE", 1, "Interrupter Enable"),
          bits("HCRST", 1, "Host Controller Reset"), bits("RS", 1, "Run/Stop (R/S)")),
)  # fmt: skip
USBSTS = _reg(
    "USBSTS",
    dword(0, RP(19), bits("HCE", 1, "Host Controller Error (5.4.2)"),
          bits("CNR", 1, "Controller Not Ready"), bits("SRE", 1, "Save/Restore Error"),
          bits("RSS", 1, "Restore State Status"), bits("SSS", 1, "Save State Status"), RZ(3),
          bits("PCD", 1, "Port Change Detect"), bits("EINT", 1, "Event Interrupt"),
          bits("HSE", 1, "Host System Error"), RZ(1), bits("HCH", 1, "HCHalted")),
)  # fmt: skip
PAGESIZE = _reg(
    "PAGESIZE",
    dword(0, RZ(16), bits("page_size", 16, "Page Size (5.4.3): bit n set = 2^(n+12) bytes")),
)
DNCTRL = _reg(
    "DNCTRL",
    dword(0, RP(16), bits("notification_enable", 16, "Notification Enable N0-N15 (5.4.4)")),
)
CRCR = _reg(
    "CRCR",
    qword(0, address_bits("command_ring_pointer", 58, 6, "Command Ring Pointer (5.4.5)"), RP(2),
          bits("CRR", 1, "Command Ring Running"), bits("CA", 1, "Command Abort"),
          bits("CS", 1, "Command Stop"), bits("RCS", 1, "Ring Cycle State")),
)  # fmt: skip
DCBAAP = _reg(
    "DCBAAP",
    qword(0, address_bits("device_context_base_address_array_pointer", 58, 6,
                          "Device Context Base Address Array Pointer (5.4.6)"), RZ(6)),
)  # fmt: skip
CONFIG = _reg(
    "CONFIG",
    dword(0, RP(22), bits("CIE", 1, "Configuration Information Enable (5.4.7)"),
          bits("U3E", 1, "U3 Entry Enable"),
          bits("max_slots_en", 8, "Max Device Slots Enabled (MaxSlotsEn)")),
)  # fmt: skip
PORTSC = _reg(
    "PORTSC",
    dword(0, bits("WPR", 1, "Warm Port Reset (5.4.8)"), bits("DR", 1, "Device Removable"),
          RZ(2), bits("WOE", 1, "Wake on Over-current Enable"),
          bits("WDE", 1, "Wake on Disconnect Enable"), bits("WCE", 1, "Wake on Connect Enable"),
          bits("CAS", 1, "Cold Attach Status"), bits("CEC", 1, "Port Config Error Change"),
          bits("PLC", 1, "Port Link State Change"), bits("PRC", 1, "Port Reset Change"),
          bits("OCC", 1, "Over-current Change"), bits("WRC", 1, "Warm Port Reset Change"),
          bits("PEC", 1, "Port Enabled/Disabled Change"),
          bits("CSC", 1, "Connect Status Change"), bits("LWS", 1, "Port Link State Write Strobe"),
          bits("PIC", 2, "Port Indicator Control"), bits("port_speed", 4, "Port Speed"),
          bits("PP", 1, "Port Power"), bits("PLS", 4, "Port Link State"),
          bits("PR", 1, "Port Reset"), bits("OCA", 1, "Over-current Active"), RZ(1),
          bits("PED", 1, "Port Enabled/Disabled"), bits("CCS", 1, "Current Connect Status")),
)  # fmt: skip
#: PORTSC bits that are RW1C (write 1 to clear): write them back as 0 to leave them alone.
PORTSC_RW1C = ("CSC", "PEC", "WRC", "OCC", "PRC", "PLC", "CEC")

# -- runtime / interrupter registers (5.5), doorbell (5.6) ------------------------------------

MFINDEX = _reg(
    "MFINDEX", dword(0, RZ(18), bits("microframe_index", 14, "Microframe Index (5.5.1)"))
)
IMAN = _reg(
    "IMAN",
    dword(0, RP(30), bits("IE", 1, "Interrupt Enable (5.5.2.1)"),
          bits("IP", 1, "Interrupt Pending (RW1C)")),
)  # fmt: skip
IMOD = _reg(
    "IMOD",
    dword(0, bits("imod_counter", 16, "Interrupt Moderation Counter (IMODC) (5.5.2.2)"),
          bits("imod_interval", 16, "Interrupt Moderation Interval (IMODI), 250 ns units")),
)  # fmt: skip
ERSTSZ = _reg(
    "ERSTSZ",
    dword(0, RP(16), bits("event_ring_segment_table_size", 16,
                          "Event Ring Segment Table Size (5.5.2.3.1)")),
)  # fmt: skip
ERSTBA = _reg(
    "ERSTBA",
    qword(0, address_bits("event_ring_segment_table_base_address", 58, 6,
                          "Event Ring Segment Table Base Address (5.5.2.3.2)"), RP(6)),
)  # fmt: skip
ERDP = _reg(
    "ERDP",
    qword(0, address_bits("event_ring_dequeue_pointer", 60, 4,
                          "Event Ring Dequeue Pointer (5.5.2.3.3)"),
          bits("EHB", 1, "Event Handler Busy (RW1C)"),
          bits("DESI", 3, "Dequeue ERST Segment Index")),
)  # fmt: skip
DOORBELL = _reg(
    "DOORBELL",
    dword(0, bits("db_stream_id", 16, "DB Stream ID (5.6)"), RZ(8),
          bits("db_target", 8, "DB Target (5.6): 0 = command ring / else endpoint DCI")),
)  # fmt: skip

# -- extended capabilities (7) ----------------------------------------------------------------

EXTENDED_CAPABILITY = _reg(
    "xECP",
    dword(0, bits("capability_specific", 16, "Capability Specific (7.0)"),
          bits("next_capability_pointer", 8, "Next xHCI Extended Capability Pointer, dwords"),
          bits("capability_id", 8, "Capability ID (table 7-1): 1 Legacy, 2 Protocol, 10 DbC")),
)  # fmt: skip
USBLEGSUP = _reg(
    "USBLEGSUP",
    dword(0, RP(7), bits("hc_os_owned_semaphore", 1, "HC OS Owned Semaphore (7.1.1)"), RP(7),
          bits("hc_bios_owned_semaphore", 1, "HC BIOS Owned Semaphore"),
          bits("next_capability_pointer", 8, "Next xHCI Extended Capability Pointer"),
          bits("capability_id", 8, "Capability ID = 1")),
)  # fmt: skip
USBLEGCTLSTS = _reg(
    "USBLEGCTLSTS",
    dword(0, bits("smi_on_bar", 1, "SMI on BAR (7.1.2), RW1C"),
          bits("smi_on_pci_command", 1, "SMI on PCI Command, RW1C"),
          bits("smi_on_os_ownership_change", 1, "SMI on OS Ownership Change, RW1C"), RZ(8),
          bits("smi_on_host_system_error", 1, "SMI on Host System Error (RO)"), RZ(3),
          bits("smi_on_event_interrupt", 1, "SMI on Event Interrupt (RO)"),
          bits("smi_on_bar_enable", 1, "SMI on BAR Enable"),
          bits("smi_on_pci_command_enable", 1, "SMI on PCI Command Enable"),
          bits("smi_on_os_ownership_enable", 1, "SMI on OS Ownership Enable"), RP(8),
          bits("smi_on_host_system_error_enable", 1, "SMI on Host System Error Enable"), RP(3),
          bits("usb_smi_enable", 1, "USB SMI Enable")),
)  # fmt: skip
SUPPORTED_PROTOCOL = Layout(
    "SupportedProtocol",
    Struct(
        dword(0, bits("major_revision", 8, "Major Revision (7.2.1), BCD"),
              bits("minor_revision", 8, "Minor Revision, BCD"),
              bits("next_capability_pointer", 8, "Next xHCI Extended Capability Pointer"),
              bits("capability_id", 8, "Capability ID = 2")),
        "name_string" / Int32ul * "Name String (7.2.2): 'USB ' = 0x20425355",
        dword(2, bits("PSIC", 4, "Protocol Speed ID Count (7.2.2.1.3)"),
              bits("protocol_defined", 12, "Protocol Defined"),
              bits("compatible_port_count", 8, "Compatible Port Count"),
              bits("compatible_port_offset", 8, "Compatible Port Offset (1-based port number)")),
        dword(3, RP(27), bits("protocol_slot_type", 5, "Protocol Slot Type (7.2.2.1.4)")),
    ),
)  # fmt: skip

# -- DbC registers (7.6.8) -------------------------------------------------------------------

DCID = _reg(
    "DCID",
    dword(0, RZ(11), bits("event_ring_segment_table_max", 5,
                          "DCERST Max (7.6.8.1): ERST may hold 2^max entries"),
          bits("next_capability_pointer", 8, "Next Capability Pointer, dwords"),
          bits("capability_id", 8, "Capability ID = 0x0A (DbC)")),
)  # fmt: skip
DCDB = _reg(
    "DCDB",
    dword(0, RP(16), bits("db_target", 8, "DB Target (7.6.8.2): 0 = OUT ring, 1 = IN ring"),
          RP(8)),
)  # fmt: skip
DCERSTSZ = _reg(
    "DCERSTSZ",
    dword(0, RP(16), bits("event_ring_segment_table_size", 16,
                          "Event Ring Segment Table Size (7.6.8.3.1), entries")),
)  # fmt: skip
DCERSTBA = _reg(
    "DCERSTBA",
    qword(0, address_bits("event_ring_segment_table_base_address", 58, 6,
                          "Event Ring Segment Table Base Address (7.6.8.3.2), 64-byte aligned"),
          RP(6)),
)  # fmt: skip
DCERDP = _reg(
    "DCERDP",
    qword(0, address_bits("event_ring_dequeue_pointer", 60, 4,
                          "Dequeue Pointer (7.6.8.3.3): next event TRB software reads"), RP(1),
          bits("DESI", 3, "Dequeue ERST Segment Index")),
)  # fmt: skip
DCCTRL = _reg(
    "DCCTRL",
    dword(0, bits("DCE", 1, "Debug Capability Enable (7.6.8.4)"),
          bits("device_address", 7, "Device Address (RO): assigned by the debug host"),
          bits("debug_max_burst", 8, "Debug Max Burst Size (RO)"), RP(11),
          bits("DRC", 1, "DbC Run Change (RW1C)"), bits("HIT", 1, "Halt IN TR (IN ring halted)"),
          bits("HOT", 1, "Halt OUT TR (OUT ring halted)"),
          bits("LSE", 1, "Link Status Event Enable"), bits("DCR", 1, "DbC Run (configured)")),
)  # fmt: skip
DCST = _reg(
    "DCST",
    dword(0, bits("debug_port_number", 8, "Debug Port Number (7.6.8.5): root hub port"), RZ(22),
          bits("SBR", 1, "System Bus Reset"),
          bits("ER", 1, "Event Ring Not Empty (lags; poll the cycle bit instead)")),
)  # fmt: skip
DCPORTSC = _reg(
    "DCPORTSC",
    dword(0, RZ(8), bits("CEC", 1, "Port Config Error Change (7.6.8.6), RW1C"),
          bits("PLC", 1, "Port Link Status Change, RW1C"),
          bits("PRC", 1, "Port Reset Change, RW1C"), RZ(3),
          bits("CSC", 1, "Connect Status Change, RW1C"), RZ(3),
          bits("port_speed", 4, "Port Speed"), RZ(1),
          bits("PLS", 4, "Port Link State: 0 U0, 4 Disabled, 5 RxDetect, 6 Inactive, 7 Polling"),
          bits("PR", 1, "Port Reset"), RZ(2),
          bits("PED", 1, "Port Enabled/Disabled (plain RW: writing 0 disables the port)"),
          bits("CCS", 1, "Current Connect Status")),
)  # fmt: skip
#: DCPORTSC bits that are RW1C: acknowledge with read-modify-write, keep PED as read.
DCPORTSC_RW1C = ("CSC", "PRC", "PLC", "CEC")
DCCP = _reg(
    "DCCP",
    qword(0, address_bits("dbc_context_pointer", 60, 4,
                          "Debug Capability Context Pointer (7.6.8.7)"), RZ(4)),
)  # fmt: skip
#: the identity a DbC presents unless told otherwise (DCDDI1/DCDDI2): Linux Foundation 1d6b:0010,
#: bcdDevice 0x0010, as Linux's DbC driver sets it and ``usb_debug`` binds to
DBC_DEFAULT_VENDOR_ID = 0x1D6B
DBC_DEFAULT_PRODUCT_ID = 0x0010
DBC_DEFAULT_DEVICE_REVISION = 0x0010

DCDDI1 = _reg(
    "DCDDI1",
    dword(0, bits("vendor_id", 16, "DbC Vendor ID (7.6.8.8): idVendor"), RZ(8),
          bits("dbc_protocol", 8, "DbC Protocol: bInterfaceProtocol (0 vendor, 1 GDB)")),
)  # fmt: skip
DCDDI2 = _reg(
    "DCDDI2",
    dword(0, bits("device_revision", 16, "Device Revision (7.6.8.9): bcdDevice"),
          bits("product_id", 16, "DbC Product ID: idProduct")),
)  # fmt: skip

_RSVD32 = Layout("reserved", Struct("reserved" / Int32ul * "reserved register (do not access)"))


class RegisterBlock:
    """A register block: a construct Struct of named registers, each declared by its value
    :class:`Layout`; offsets are derived from the Struct (``offset(name)``)."""

    def __init__(self, name: str, members: list[tuple[str, Layout]]) -> None:
        self.name = name
        self.construct = Struct(*(n / layout.construct for n, layout in members))
        self.layouts: dict[str, Layout] = dict(members)
        self.offsets: dict[str, int] = {}
        pos = 0
        for sub in self.construct.subcons:
            self.offsets[sub.name] = pos
            pos += sub.sizeof()
        self.size: int = self.construct.sizeof()

    def offset(self, name: str) -> int:
        try:
            return self.offsets[name]
        except KeyError:
            raise LayoutError(f"{self.name} has no register {name!r}") from None

    def layout(self, name: str) -> Layout:
        try:
            return self.layouts[name]
        except KeyError:
            raise LayoutError(f"{self.name} has no register {name!r}") from None

    @property
    def registers(self) -> list[str]:
        """Register names in offset order, reserved gaps left out."""
        return [n for n in self.offsets if not n.startswith("rsvd")]

    def read_all(self, mmio: Mmio, base: int = 0) -> dict[str, int]:
        """Read every register with 32-bit accesses (64-bit ones low dword first)."""
        return {
            n: read_register(mmio, base + self.offsets[n], self.layouts[n]) for n in self.registers
        }

    def render(self, values: Mapping[str, int], base: int | None = None) -> str:
        """Decoded multi-line view: one line per register, ``+0x20 DCCTRL 0x80000003 DCE ...``."""
        lines = [self.name if base is None else f"{self.name} @ {format_hex(base)}"]
        for n in self.registers:
            if n not in values:
                continue
            layout = self.layouts[n]
            v = values[n]
            lines.append(
                f"  +0x{self.offsets[n]:02x} {n:<10} 0x{v:0{layout.size * 2}x}  "
                + layout.render(layout.decode(v), title="").strip()
            )
        return "\n".join(lines)


def read_register(mmio: Mmio, offset: int, layout: Layout) -> int:
    """A register value by 32-bit accesses (low dword first for 64-bit registers); 8/16-bit
    registers are extracted from their containing dword."""
    if layout.size == 8:
        return mmio.read32(offset) | (mmio.read32(offset + 4) << 32)
    if layout.size == 4:
        return mmio.read32(offset)
    aligned = offset & ~3
    return (mmio.read32(aligned) >> (8 * (offset - aligned))) & ((1 << (8 * layout.size)) - 1)


def write_register(mmio: Mmio, offset: int, layout: Layout, value: int) -> None:
    """Write a 32- or 64-bit register (64-bit: low dword, then high dword)."""
    if layout.size == 8:
        mmio.write32(offset, value & 0xFFFF_FFFF)
        mmio.write32(offset + 4, value >> 32)
    elif layout.size == 4:
        mmio.write32(offset, value)
    else:
        raise LayoutError(f"{layout.name}: sub-dword registers are read-only here")


CAPABILITY_REGS = RegisterBlock(
    "Capability registers",
    [
        ("CAPLENGTH", CAPLENGTH),
        ("rsvd_01", Layout("reserved8", Struct("reserved" / Int8ul))),
        ("HCIVERSION", HCIVERSION),
        ("HCSPARAMS1", HCSPARAMS1),
        ("HCSPARAMS2", HCSPARAMS2),
        ("HCSPARAMS3", HCSPARAMS3),
        ("HCCPARAMS1", HCCPARAMS1),
        ("DBOFF", DBOFF),
        ("RTSOFF", RTSOFF),
        ("HCCPARAMS2", HCCPARAMS2),
    ],
)
OPERATIONAL_REGS = RegisterBlock(
    "Operational registers",
    [
        ("USBCMD", USBCMD),
        ("USBSTS", USBSTS),
        ("PAGESIZE", PAGESIZE),
        ("rsvd_0c", _RSVD32),
        ("rsvd_10", _RSVD32),
        ("DNCTRL", DNCTRL),
        ("CRCR", CRCR),
        ("rsvd_20", _RSVD32),
        ("rsvd_24", _RSVD32),
        ("rsvd_28", _RSVD32),
        ("rsvd_2c", _RSVD32),
        ("DCBAAP", DCBAAP),
        ("CONFIG", CONFIG),
    ],
)
PORTPMSC = _plain("PORTPMSC", Int32ul, "Port Power Management Status and Control (5.4.9)")
PORTLI = _plain("PORTLI", Int32ul, "Port Link Info (5.4.10)")
PORTHLPMC = _plain("PORTHLPMC", Int32ul, "Port Hardware LPM Control (5.4.11)")
PORT_REGS = RegisterBlock(
    "Port register set",
    [("PORTSC", PORTSC), ("PORTPMSC", PORTPMSC), ("PORTLI", PORTLI), ("PORTHLPMC", PORTHLPMC)],
)
#: Port register set n (1-based) is at operational base + 0x400 + 0x10 * (n - 1) (5.4.8).
PORT_REGS_OFFSET = 0x400
PORT_REGS_STRIDE = PORT_REGS.size
INTERRUPTER_REGS = RegisterBlock(
    "Interrupter register set",
    [
        ("IMAN", IMAN),
        ("IMOD", IMOD),
        ("ERSTSZ", ERSTSZ),
        ("rsvd_0c", _RSVD32),
        ("ERSTBA", ERSTBA),
        ("ERDP", ERDP),
    ],
)
#: Interrupter n is at runtime base + 0x20 + 32 * n (5.5.2); MFINDEX at runtime base + 0.
INTERRUPTER_REGS_OFFSET = 0x20
INTERRUPTER_REGS_STRIDE = INTERRUPTER_REGS.size
DBC_REGS = RegisterBlock(
    "DbC registers",
    [
        ("DCID", DCID),
        ("DCDB", DCDB),
        ("DCERSTSZ", DCERSTSZ),
        ("rsvd_0c", _RSVD32),
        ("DCERSTBA", DCERSTBA),
        ("DCERDP", DCERDP),
        ("DCCTRL", DCCTRL),
        ("DCST", DCST),
        ("DCPORTSC", DCPORTSC),
        ("rsvd_2c", _RSVD32),
        ("DCCP", DCCP),
        ("DCDDI1", DCDDI1),
        ("DCDDI2", DCDDI2),
    ],
)

#: Every register value layout by register name (for render_register).
REGISTERS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        CAPLENGTH, HCIVERSION, HCSPARAMS1, HCSPARAMS2, HCSPARAMS3, HCCPARAMS1, DBOFF, RTSOFF,
        HCCPARAMS2, USBCMD, USBSTS, PAGESIZE, DNCTRL, CRCR, DCBAAP, CONFIG, PORTSC, PORTPMSC,
        PORTLI, PORTHLPMC, MFINDEX, IMAN, IMOD, ERSTSZ, ERSTBA, ERDP, DOORBELL,
        EXTENDED_CAPABILITY, USBLEGSUP, USBLEGCTLSTS, DCID, DCDB, DCERSTSZ, DCERSTBA, DCERDP,
        DCCTRL, DCST, DCPORTSC, DCCP, DCDDI1, DCDDI2,
    )
}  # fmt: skip

#: Extended Capability IDs (xHCI 1.2 table 7-1) the harness cares about.
XECP_ID_USB_LEGACY_SUPPORT = 1
XECP_ID_SUPPORTED_PROTOCOL = 2
XECP_ID_DEBUG_CAPABILITY = 10


def render_register(name: str, value: int) -> str:
    """One line, e.g. ``DCCTRL DCE debug_max_burst=15 DCR`` (unknown names: hex only)."""
    layout = REGISTERS.get(name)
    if layout is None:
        return f"{name}=0x{value:x}"
    if not 0 <= value < 1 << (8 * layout.size):
        raise LayoutError(f"{name}: value {value:#x} does not fit {layout.size} bytes")
    return layout.render(layout.decode(value), title=f"{name}=0x{value:x}")
