"""Contexts (xHCI 1.2 section 6.2, 7.6.9) and the ERST entry (6.5).

* :data:`SLOT_CONTEXT` (6.2.2, 32 bytes) and :data:`ENDPOINT_CONTEXT` (6.2.3, 32 bytes);
* the DbC context (7.6.9, 192 bytes): :data:`DBC_INFO_CONTEXT` (bytes 0-63) and two
  :data:`DBC_ENDPOINT_CONTEXT` (64 bytes: the endpoint context fields plus reserved dwords), the
  OUT endpoint (target -> host data, EP Type 2) at :data:`DBC_OUT_EP_OFFSET` = 64 and the IN
  endpoint (host -> target data, EP Type 6) at :data:`DBC_IN_EP_OFFSET` = 128, both derived from
  the construct Struct :data:`DBC_CONTEXT`;
* :data:`ERST_ENTRY` (6.5, 16 bytes).
"""

from __future__ import annotations

from enum import IntEnum

from construct import Construct, Int64ul, Struct
from dbc_harness.drivers.xhci._decl import (
    RZ,
    address_bits,
    bits,
    dword,
    enum_bits,
    qword,
    reserved_dword,
)
from dbc_harness.drivers.xhci.layout import Layout


class EPType(IntEnum):
    """Endpoint Type (EP Type) values, xHCI 1.2 table 6-9."""

    NotValid = 0
    IsochOut = 1
    BulkOut = 2
    InterruptOut = 3
    Control = 4
    IsochIn = 5
    BulkIn = 6
    InterruptIn = 7


class EPState(IntEnum):
    """Endpoint State (EP State) values, xHCI 1.2 table 6-8."""

    Disabled = 0
    Running = 1
    Halted = 2
    Stopped = 3
    Error = 4


def _endpoint_context_words() -> list[Construct]:
    """Dwords 0-4 of an Endpoint Context (6.2.3), the one declaration both the generic and the
    DbC endpoint contexts use."""
    return [
        dword(0, bits("max_esit_payload_hi", 8, "Max Endpoint Service Time Interval Payload Hi"),
              bits("interval", 8, "Interval (6.2.3)"),
              bits("LSA", 1, "Linear Stream Array"),
              bits("max_p_streams", 5, "Max Primary Streams (MaxPStreams)"),
              bits("mult", 2, "Mult"), RZ(5),
              enum_bits("ep_state", 3, EPState, "Endpoint State (EP State), written by the xHC")),
        dword(1, bits("max_packet_size", 16, "Max Packet Size (6.2.3), 1024 for the DbC"),
              bits("max_burst_size", 8, "Max Burst Size (DbC: DCCTRL Debug Max Burst)"),
              bits("HID", 1, "Host Initiate Disable"), RZ(1),
              enum_bits("ep_type", 3, EPType, "Endpoint Type (EP Type): 2 Bulk OUT, 6 Bulk IN"),
              bits("cerr", 2, "Error Count (CErr)"), RZ(1)),
        qword(2, address_bits("tr_dequeue_pointer", 60, 4, "TR Dequeue Pointer (6.2.3), 63:4"),
              RZ(3), bits("DCS", 1, "Dequeue Cycle State")),
        dword(4, bits("max_esit_payload_lo", 16, "Max ESIT Payload Lo (6.2.3)"),
              bits("average_trb_length", 16, "Average TRB Length")),
    ]  # fmt: skip


SLOT_CONTEXT = Layout(
    "SlotContext",
    Struct(
        dword(0, bits("context_entries", 5, "Context Entries (6.2.2)"), bits("Hub", 1, "Hub"),
              bits("MTT", 1, "Multi-TT"), RZ(1), bits("speed", 4, "Speed (deprecated)"),
              bits("route_string", 20, "Route String")),
        dword(1, bits("number_of_ports", 8, "Number of Ports (6.2.2)"),
              bits("root_hub_port_number", 8, "Root Hub Port Number"),
              bits("max_exit_latency", 16, "Max Exit Latency, microseconds")),
        dword(2, bits("interrupter_target", 10, "Interrupter Target (6.2.2)"), RZ(4),
              bits("TTT", 2, "TT Think Time"), bits("parent_port_number", 8, "Parent Port Number"),
              bits("parent_hub_slot_id", 8, "Parent Hub Slot ID")),
        dword(3, bits("slot_state", 5, "Slot State (6.2.2), written by the xHC"), RZ(19),
              bits("usb_device_address", 8, "USB Device Address, written by the xHC")),
        *(reserved_dword("rsvdo", i) for i in range(4, 8)),
    ),
)  # fmt: skip

ENDPOINT_CONTEXT = Layout(
    "EndpointContext",
    Struct(*_endpoint_context_words(), *(reserved_dword("rsvdo", i) for i in range(5, 8))),
)

DBC_ENDPOINT_CONTEXT = Layout(
    "DbCEndpointContext",
    Struct(*_endpoint_context_words(), *(reserved_dword("rsvdo", i) for i in range(5, 16))),
)

DBC_INFO_CONTEXT = Layout(
    "DbCInfoContext",
    Struct(
        "string0_descriptor_address" / Int64ul * "String 0 Descriptor Address (7.6.9.1): LANGIDs",
        "manufacturer_string_descriptor_address" / Int64ul
        * "Manufacturer String Descriptor Address",
        "product_string_descriptor_address" / Int64ul * "Product String Descriptor Address",
        "serial_number_string_descriptor_address" / Int64ul
        * "Serial Number String Descriptor Address",
        dword(8, bits("serial_number_string_length", 8, "Serial Number String Length (bLength)"),
              bits("product_string_length", 8, "Product String Length (bLength)"),
              bits("manufacturer_string_length", 8, "Manufacturer String Length (bLength)"),
              bits("string0_length", 8, "String 0 Length (bLength)")),
        *(reserved_dword("rsvdo", i) for i in range(9, 16)),
    ),
)  # fmt: skip

#: The 192-byte DbC context (7.6.9): info context, OUT endpoint context (EP Type 2, target ->
#: host data, doorbell target 0), IN endpoint context (EP Type 6, host -> target data, doorbell
#: target 1).
DBC_CONTEXT = Struct(
    "dbc_info_context" / DBC_INFO_CONTEXT.construct,
    "out_endpoint_context" / DBC_ENDPOINT_CONTEXT.construct,
    "in_endpoint_context" / DBC_ENDPOINT_CONTEXT.construct,
)
DBC_CONTEXT_SIZE: int = DBC_CONTEXT.sizeof()
DBC_INFO_OFFSET = 0
DBC_OUT_EP_OFFSET: int = DBC_CONTEXT.subcons[0].sizeof()
DBC_IN_EP_OFFSET: int = DBC_OUT_EP_OFFSET + DBC_CONTEXT.subcons[1].sizeof()
#: Max Packet Size of both DbC endpoints: SuperSpeed bulk, 1024 bytes (xHCI 1.2 section 7.6.9.2
#: "DbC Endpoint Context"; the debug host sees it as wMaxPacketSize)
DBC_MAX_PACKET_SIZE = 1024
#: what a SuperSpeed (5 Gb/s) DbC link carries at best, in MB/s (10^6 bytes): 8b/10b coding leaves
#: 500 MB/s, packet and link overhead about 450; the context for every measured rate
SUPERSPEED_CEILING_MBPS = 450

ERST_ENTRY = Layout(
    "ERSTEntry",
    Struct(
        qword(0, address_bits("ring_segment_base_address", 58, 6,
                              "Ring Segment Base Address (6.5), 64-byte aligned"), RZ(6)),
        dword(2, RZ(16), bits("ring_segment_size", 16, "Ring Segment Size (6.5), TRBs 16..4096")),
        reserved_dword("rsvdz", 3),
    ),
)  # fmt: skip

__all__ = [
    "DBC_CONTEXT",
    "DBC_CONTEXT_SIZE",
    "DBC_ENDPOINT_CONTEXT",
    "DBC_INFO_CONTEXT",
    "DBC_INFO_OFFSET",
    "DBC_IN_EP_OFFSET",
    "DBC_OUT_EP_OFFSET",
    "ENDPOINT_CONTEXT",
    "ERST_ENTRY",
    "SLOT_CONTEXT",
    "EPState",
    "EPType",
]
