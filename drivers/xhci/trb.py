"""TRBs (xHCI 1.2 section 6.4): TRB Type and Completion Code enums, one :class:`Layout` per TRB
type, type dispatch and one-line renderings.

Every TRB is 16 bytes: a 64-bit parameter (dwords 0-1), a status dword (2) and a control dword (3)
holding the Cycle bit (C, bit 0) and the TRB Type (bits 15:10). Layouts are listed per spec
figure, fields of each dword from bit 31 down.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from enum import IntEnum

from construct import Int32ul, Int64ul, Struct
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

TRB_SIZE = 16


class TRBType(IntEnum):
    """TRB Type IDs, xHCI 1.2 table 6-91."""

    Normal = 1
    SetupStage = 2
    DataStage = 3
    StatusStage = 4
    Isoch = 5
    Link = 6
    EventData = 7
    NoOp = 8
    EnableSlotCommand = 9
    DisableSlotCommand = 10
    AddressDeviceCommand = 11
    ConfigureEndpointCommand = 12
    EvaluateContextCommand = 13
    ResetEndpointCommand = 14
    StopEndpointCommand = 15
    SetTRDequeuePointerCommand = 16
    ResetDeviceCommand = 17
    ForceEventCommand = 18
    NegotiateBandwidthCommand = 19
    SetLatencyToleranceValueCommand = 20
    GetPortBandwidthCommand = 21
    ForceHeaderCommand = 22
    NoOpCommand = 23
    GetExtendedPropertyCommand = 24
    SetExtendedPropertyCommand = 25
    TransferEvent = 32
    CommandCompletionEvent = 33
    PortStatusChangeEvent = 34
    BandwidthRequestEvent = 35
    DoorbellEvent = 36
    HostControllerEvent = 37
    DeviceNotificationEvent = 38
    MFINDEXWrapEvent = 39


class CompletionCode(IntEnum):
    """Completion Codes, xHCI 1.2 table 6-90 (192-223 vendor errors, 224-255 vendor info)."""

    Invalid = 0
    Success = 1
    DataBufferError = 2
    BabbleDetectedError = 3
    USBTransactionError = 4
    TRBError = 5
    StallError = 6
    ResourceError = 7
    BandwidthError = 8
    NoSlotsAvailableError = 9
    InvalidStreamTypeError = 10
    SlotNotEnabledError = 11
    EndpointNotEnabledError = 12
    ShortPacket = 13
    RingUnderrun = 14
    RingOverrun = 15
    VFEventRingFullError = 16
    ParameterError = 17
    BandwidthOverrunError = 18
    ContextStateError = 19
    NoPingResponseError = 20
    EventRingFullError = 21
    IncompatibleDeviceError = 22
    MissedServiceError = 23
    CommandRingStopped = 24
    CommandAborted = 25
    Stopped = 26
    StoppedLengthInvalid = 27
    StoppedShortPacket = 28
    MaxExitLatencyTooLargeError = 29
    IsochBufferOverrun = 31
    EventLostError = 32
    UndefinedError = 33
    InvalidStreamIDError = 34
    SecondaryBandwidthError = 35
    SplitTransactionError = 36


# -- shared pieces (one declaration each, reused by the TRB figures) --------------------------


def _C() -> object:
    return bits("C", 1, "Cycle bit (6.4.1.1): must equal the ring's producer cycle state")


def _type(t: TRBType) -> object:
    return enum_bits("trb_type", 6, TRBType, "TRB Type (6.4.6, table 6-91)", default=t)


def _intr() -> object:
    return bits("interrupter_target", 10, "Interrupter Target (6.4.1.1)")


def _cc() -> object:
    return enum_bits("completion_code", 8, CompletionCode, "Completion Code (6.4.5, table 6-90)")


def _flag(name: str, doc: str) -> object:
    return bits(name, 1, doc)


def _ENT() -> object:
    return _flag("ENT", "Evaluate Next TRB (6.4.1.1)")


def _ISP() -> object:
    return _flag("ISP", "Interrupt-on Short Packet (6.4.1.1)")


def _NS() -> object:
    return _flag("NS", "No Snoop (6.4.1.1)")


def _CH() -> object:
    return _flag("CH", "Chain bit (6.4.1.1)")


def _IOC() -> object:
    return _flag("IOC", "Interrupt On Completion (6.4.1.1)")


def _IDT() -> object:
    return _flag("IDT", "Immediate Data (6.4.1.1)")


def _BEI() -> object:
    return _flag("BEI", "Block Event Interrupt (6.4.1.1)")


def _ptr(doc: str, name: str = "data_buffer_pointer") -> object:
    return name / Int64ul * doc


def _slot_id() -> object:
    return bits("slot_id", 8, "Slot ID (6.4.3)")


def _endpoint_id() -> object:
    return bits("endpoint_id", 5, "Endpoint ID (6.4.2.1): DCI of the endpoint")


_ABBREV = {
    "data_buffer_pointer": "ptr",
    "ring_segment_pointer": "ptr",
    "trb_pointer": "ptr",
    "command_trb_pointer": "ptr",
    "input_context_pointer": "ptr",
    "new_tr_dequeue_pointer": "ptr",
    "trb_transfer_length": "len",
    "interrupter_target": "intr",
    "completion_code": "cc",
    "endpoint_id": "ep",
    "slot_id": "slot",
    "port_id": "port",
}


def _layout(name: str, *words: object) -> Layout:
    abbrev = dict(_ABBREV)
    if name == "TransferEvent":
        abbrev["trb_transfer_length"] = "residual"
    return Layout(name, Struct(*words), abbrev=abbrev)


# -- transfer TRBs (6.4.1, 6.4.4) ------------------------------------------------------------

NORMAL = _layout(
    "Normal",
    _ptr("Data Buffer Pointer (6.4.1.1), or up to 8 bytes of data when IDT = 1"),
    dword(2, _intr(), bits("td_size", 5, "TD Size (6.4.1.1)"),
          bits("trb_transfer_length", 17, "TRB Transfer Length (6.4.1.1), bytes")),
    dword(3, RZ(16), _type(TRBType.Normal), _BEI(), RZ(2), _IDT(), _IOC(), _CH(), _NS(), _ISP(),
          _ENT(), _C()),
)  # fmt: skip

SETUP_STAGE = _layout(
    "SetupStage",
    dword(0, bits("w_value", 16, "wValue (6.4.1.2.1)"), bits("b_request", 8, "bRequest"),
          bits("bm_request_type", 8, "bmRequestType")),
    dword(1, bits("w_length", 16, "wLength (6.4.1.2.1)"), bits("w_index", 16, "wIndex")),
    dword(2, _intr(), RZ(5), bits("trb_transfer_length", 17, "TRB Transfer Length, always 8")),
    dword(3, RZ(14), bits("TRT", 2, "Transfer Type (6.4.1.2.1): 0 No Data, 2 OUT, 3 IN"),
          _type(TRBType.SetupStage), RZ(3), _IDT(), _IOC(), RZ(4), _C()),
)  # fmt: skip

DATA_STAGE = _layout(
    "DataStage",
    _ptr("Data Buffer Pointer (6.4.1.2.2)"),
    dword(2, _intr(), bits("td_size", 5, "TD Size (6.4.1.2.2)"),
          bits("trb_transfer_length", 17, "TRB Transfer Length (6.4.1.2.2)")),
    dword(3, RZ(15), bits("DIR", 1, "Direction (6.4.1.2.2): 1 = IN"),
          _type(TRBType.DataStage), RZ(3), _IDT(), _IOC(), _CH(), _NS(), _ISP(), _ENT(), _C()),
)  # fmt: skip

STATUS_STAGE = _layout(
    "StatusStage",
    reserved_dword("rsvdz", 0),
    reserved_dword("rsvdz", 1),
    dword(2, _intr(), RZ(22)),
    dword(3, RZ(15), bits("DIR", 1, "Direction (6.4.1.2.3): 1 = IN"),
          _type(TRBType.StatusStage), RZ(4), _IOC(), _CH(), RZ(2), _ENT(), _C()),
)  # fmt: skip

ISOCH = _layout(
    "Isoch",
    _ptr("Data Buffer Pointer (6.4.1.3)"),
    dword(2, _intr(), bits("td_size", 5, "TD Size / TBC (6.4.1.3)"),
          bits("trb_transfer_length", 17, "TRB Transfer Length (6.4.1.3)")),
    dword(3, bits("SIA", 1, "Start Isoch ASAP (6.4.1.3)"), bits("frame_id", 11, "Frame ID"),
          bits("TLBPC", 4, "Transfer Last Burst Packet Count"), _type(TRBType.Isoch), _BEI(),
          bits("TBC", 2, "Transfer Burst Count"), _IDT(), _IOC(), _CH(), _NS(), _ISP(), _ENT(),
          _C()),
)  # fmt: skip

LINK = _layout(
    "Link",
    qword(0, address_bits("ring_segment_pointer", 60, 4, "Ring Segment Pointer (6.4.4.1), 63:4"),
          RZ(4)),
    dword(2, _intr(), RZ(22)),
    dword(3, RZ(16), _type(TRBType.Link), RZ(4), _IOC(), _CH(), RZ(2),
          bits("TC", 1, "Toggle Cycle (6.4.4.1)"), _C()),
)  # fmt: skip

EVENT_DATA = _layout(
    "EventData",
    "event_data" / Int64ul * "Event Data (6.4.4.2): copied into the Transfer Event",
    dword(2, _intr(), RZ(22)),
    dword(3, RZ(16), _type(TRBType.EventData), _BEI(), RZ(3), _IOC(), _CH(), RZ(2), _ENT(), _C()),
)  # fmt: skip

NO_OP = _layout(
    "NoOp",
    reserved_dword("rsvdz", 0),
    reserved_dword("rsvdz", 1),
    dword(2, _intr(), RZ(22)),
    dword(3, RZ(16), _type(TRBType.NoOp), RZ(4), _IOC(), _CH(), RZ(2), _ENT(), _C()),
)  # fmt: skip

# -- command TRBs (6.4.3) --------------------------------------------------------------------

NO_OP_COMMAND = _layout(
    "NoOpCommand",
    reserved_dword("rsvdz", 0),
    reserved_dword("rsvdz", 1),
    reserved_dword("rsvdz", 2),
    dword(3, RZ(16), _type(TRBType.NoOpCommand), RZ(9), _C()),
)

ENABLE_SLOT_COMMAND = _layout(
    "EnableSlotCommand",
    reserved_dword("rsvdz", 0),
    reserved_dword("rsvdz", 1),
    reserved_dword("rsvdz", 2),
    dword(3, RZ(11), bits("slot_type", 5, "Slot Type (6.4.3.2)"),
          _type(TRBType.EnableSlotCommand), RZ(9), _C()),
)  # fmt: skip

DISABLE_SLOT_COMMAND = _layout(
    "DisableSlotCommand",
    reserved_dword("rsvdz", 0),
    reserved_dword("rsvdz", 1),
    reserved_dword("rsvdz", 2),
    dword(3, _slot_id(), RZ(8), _type(TRBType.DisableSlotCommand), RZ(9), _C()),
)

ADDRESS_DEVICE_COMMAND = _layout(
    "AddressDeviceCommand",
    qword(0, address_bits("input_context_pointer", 60, 4, "Input Context Pointer (6.4.3.4)"),
          RZ(4)),
    reserved_dword("rsvdz", 2),
    dword(3, _slot_id(), RZ(8), _type(TRBType.AddressDeviceCommand),
          bits("BSR", 1, "Block Set Address Request (6.4.3.4)"), RZ(8), _C()),
)  # fmt: skip

CONFIGURE_ENDPOINT_COMMAND = _layout(
    "ConfigureEndpointCommand",
    qword(0, address_bits("input_context_pointer", 60, 4, "Input Context Pointer (6.4.3.5)"),
          RZ(4)),
    reserved_dword("rsvdz", 2),
    dword(3, _slot_id(), RZ(8), _type(TRBType.ConfigureEndpointCommand),
          bits("DC", 1, "Deconfigure (6.4.3.5)"), RZ(8), _C()),
)  # fmt: skip

RESET_ENDPOINT_COMMAND = _layout(
    "ResetEndpointCommand",
    reserved_dword("rsvdz", 0),
    reserved_dword("rsvdz", 1),
    reserved_dword("rsvdz", 2),
    dword(3, _slot_id(), RZ(3), _endpoint_id(), _type(TRBType.ResetEndpointCommand),
          bits("TSP", 1, "Transfer State Preserve (6.4.3.7)"), RZ(8), _C()),
)  # fmt: skip

SET_TR_DEQUEUE_POINTER_COMMAND = _layout(
    "SetTRDequeuePointerCommand",
    qword(0, address_bits("new_tr_dequeue_pointer", 60, 4, "New TR Dequeue Pointer (6.4.3.9)"),
          bits("SCT", 3, "Stream Context Type (6.4.3.9)"),
          bits("DCS", 1, "Dequeue Cycle State (6.4.3.9)")),
    dword(2, bits("stream_id", 16, "Stream ID (6.4.3.9)"), RZ(16)),
    dword(3, _slot_id(), RZ(3), _endpoint_id(), _type(TRBType.SetTRDequeuePointerCommand),
          RZ(9), _C()),
)  # fmt: skip

# -- event TRBs (6.4.2) ----------------------------------------------------------------------

TRANSFER_EVENT = _layout(
    "TransferEvent",
    _ptr("TRB Pointer (6.4.2.1): the completed TRB, or the Event Data when ED = 1", "trb_pointer"),
    dword(2, _cc(), bits("trb_transfer_length", 24,
                         "TRB Transfer Length (6.4.2.1): residual, bytes NOT transferred")),
    dword(3, _slot_id(), RZ(3), _endpoint_id(), _type(TRBType.TransferEvent), RZ(7),
          bits("ED", 1, "Event Data (6.4.2.1): 1 = trb_pointer holds Event Data"), RZ(1), _C()),
)  # fmt: skip

COMMAND_COMPLETION_EVENT = _layout(
    "CommandCompletionEvent",
    qword(0, address_bits("command_trb_pointer", 60, 4, "Command TRB Pointer (6.4.2.2)"), RZ(4)),
    dword(2, _cc(), bits("command_completion_parameter", 24,
                         "Command Completion Parameter (6.4.2.2)")),
    dword(3, _slot_id(), bits("vf_id", 8, "VF ID (6.4.2.2)"),
          _type(TRBType.CommandCompletionEvent), RZ(9), _C()),
)  # fmt: skip

PORT_STATUS_CHANGE_EVENT = _layout(
    "PortStatusChangeEvent",
    dword(0, bits("port_id", 8, "Port ID (6.4.2.3): root hub port number"), RZ(24)),
    reserved_dword("rsvdz", 1),
    dword(2, _cc(), RZ(24)),
    dword(3, RZ(16), _type(TRBType.PortStatusChangeEvent), RZ(9), _C()),
)

HOST_CONTROLLER_EVENT = _layout(
    "HostControllerEvent",
    reserved_dword("rsvdz", 0),
    reserved_dword("rsvdz", 1),
    dword(2, _cc(), RZ(24)),
    dword(3, RZ(16), _type(TRBType.HostControllerEvent), RZ(9), _C()),
)

#: Any TRB seen through the common format (4.11.1): Parameter, Status, Control. Used to read the
#: TRB Type and Cycle bit of a TRB whose type is not known yet, and to render unknown types.
GENERIC_TRB = Layout(
    "TRB",
    Struct(
        "parameter" / Int64ul * "Parameter (4.11.1)",
        "status" / Int32ul * "Status (4.11.1)",
        dword(3, bits("control_high", 16, "Control bits 31:16 (type specific)"),
              enum_bits("trb_type", 6, TRBType, "TRB Type (6.4.6)"),
              bits("control_flags", 9, "Control bits 9:1 (type specific)"), _C()),
    ),
)  # fmt: skip

#: TRB Type -> its layout. Keyed by TRBType members; being an IntEnum, a raw TRB Type value read
#: from memory finds the same entry.
TRB_LAYOUTS: dict[int, Layout] = {
    TRBType.Normal: NORMAL,
    TRBType.SetupStage: SETUP_STAGE,
    TRBType.DataStage: DATA_STAGE,
    TRBType.StatusStage: STATUS_STAGE,
    TRBType.Isoch: ISOCH,
    TRBType.Link: LINK,
    TRBType.EventData: EVENT_DATA,
    TRBType.NoOp: NO_OP,
    TRBType.NoOpCommand: NO_OP_COMMAND,
    TRBType.EnableSlotCommand: ENABLE_SLOT_COMMAND,
    TRBType.DisableSlotCommand: DISABLE_SLOT_COMMAND,
    TRBType.AddressDeviceCommand: ADDRESS_DEVICE_COMMAND,
    TRBType.ConfigureEndpointCommand: CONFIGURE_ENDPOINT_COMMAND,
    TRBType.ResetEndpointCommand: RESET_ENDPOINT_COMMAND,
    TRBType.SetTRDequeuePointerCommand: SET_TR_DEQUEUE_POINTER_COMMAND,
    TRBType.TransferEvent: TRANSFER_EVENT,
    TRBType.CommandCompletionEvent: COMMAND_COMPLETION_EVENT,
    TRBType.PortStatusChangeEvent: PORT_STATUS_CHANGE_EVENT,
    TRBType.HostControllerEvent: HOST_CONTROLLER_EVENT,
}

# Mask-table rows for the two fields every TRB shares (derived, not restated).
_TYPE_FIELD = GENERIC_TRB.fields["trb_type"]
_C_FIELD = GENERIC_TRB.fields["C"]
_CONTROL = struct.Struct("<I")
_CONTROL_OFFSET = _TYPE_FIELD.byte_offset
_TYPE_SHIFT, _TYPE_MASK = _TYPE_FIELD.shift, (1 << _TYPE_FIELD.width) - 1
_C_SHIFT = _C_FIELD.shift
_KNOWN_TYPES = {int(t): t for t in TRBType}

#: byte offset of the dword holding the Cycle bit, and the bit's mask in that dword
CYCLE_DWORD_OFFSET = _C_FIELD.byte_offset
CYCLE_MASK = _C_FIELD.mask


def trb_type_of(buf: bytes | bytearray | memoryview, offset: int = 0) -> int:
    """The TRB Type field (an int; compare with :class:`TRBType`)."""
    (control,) = _CONTROL.unpack_from(buf, offset + _CONTROL_OFFSET)
    return int((control >> _TYPE_SHIFT) & _TYPE_MASK)


def type_and_cycle(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """(TRB Type, Cycle bit) of the TRB at ``offset``, from one read of its control dword (an
    event ring consumer needs both for every event)."""
    (control,) = _CONTROL.unpack_from(buf, offset + _CONTROL_OFFSET)
    return (control >> _TYPE_SHIFT) & _TYPE_MASK, (control >> _C_SHIFT) & 1


def cycle_of(buf: bytes | bytearray | memoryview, offset: int = 0) -> int:
    """The Cycle bit of the TRB at ``offset``."""
    (control,) = _CONTROL.unpack_from(buf, offset + _CONTROL_OFFSET)
    return int((control >> _C_SHIFT) & 1)


def layout_for(trb_type: int) -> Layout:
    """The layout of a TRB type (GENERIC_TRB for types without a declared layout)."""
    return TRB_LAYOUTS.get(trb_type, GENERIC_TRB)


def decode_trb(
    buf: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[TRBType | int, dict[str, int]]:
    """(TRB Type, fields). Unknown types give (int, GENERIC_TRB fields)."""
    t = trb_type_of(buf, offset)
    layout = TRB_LAYOUTS.get(t, GENERIC_TRB)
    return _KNOWN_TYPES.get(t, t), layout.parse(buf, offset)


def render_fields(trb_type: int, fields: Mapping[str, int]) -> str:
    """One-line rendering of already decoded TRB fields."""
    layout = layout_for(trb_type)
    if layout is GENERIC_TRB:
        known = _KNOWN_TYPES.get(trb_type)
        title = known.name if known is not None else f"TRB(type={trb_type})"
        return (
            f"{title} parameter=0x{fields.get('parameter', 0):_x} "
            f"status=0x{fields.get('status', 0):x} "
            f"control=0x{fields.get('control_high', 0):x}/0x{fields.get('control_flags', 0):x} "
            f"C={fields.get('C', 0)}"
        )
    return layout.render(fields, skip=("trb_type",))


def render_trb(buf: bytes | bytearray | memoryview, offset: int = 0) -> str:
    """One line for the TRB at ``offset``, e.g. ``Normal ptr=0x1_0000_2000 len=512 IOC C=1``.
    Never raises for a full 16-byte TRB, whatever its content."""
    t, fields = decode_trb(buf, offset)
    return render_fields(t, fields)
