"""Known byte vectors derived by hand from the xHCI 1.2 spec figures (not from our code)."""

from __future__ import annotations

from dbc_harness.drivers.xhci.contexts import (
    DBC_CONTEXT_SIZE,
    DBC_ENDPOINT_CONTEXT,
    DBC_IN_EP_OFFSET,
    DBC_INFO_CONTEXT,
    DBC_OUT_EP_OFFSET,
    ENDPOINT_CONTEXT,
    ERST_ENTRY,
    EPType,
)
from dbc_harness.drivers.xhci.registers import DBC_REGS, DCCTRL, DCDB, DCID, DCPORTSC, HCCPARAMS1
from dbc_harness.drivers.xhci.strings import build_string0, build_string_descriptor
from dbc_harness.drivers.xhci.trb import (
    LINK,
    NORMAL,
    PORT_STATUS_CHANGE_EVENT,
    TRANSFER_EVENT,
    CompletionCode,
    TRBType,
    decode_trb,
)


def test_normal_trb_vector() -> None:
    expected = bytes.fromhex(
        "0020000001000000"  # dw0-1 Data Buffer Pointer 0x1_0000_2000, little endian
        # dw2 = Interrupter Target 2 << 22 (0x800000) | TD Size 3 << 17 (0x60000)
        #       | TRB Transfer Length 512 (0x200) = 0x00860200
        "00028600"
        # dw3 = TRB Type 1 << 10 (0x400) | IOC bit 5 (0x20) | CH bit 4 (0x10) | ISP bit 2 (0x4)
        #       | C bit 0 (0x1) = 0x00000435
        "35040000"
    )
    fields = dict(
        data_buffer_pointer=0x1_0000_2000,
        interrupter_target=2,
        td_size=3,
        trb_transfer_length=512,
        IOC=1,
        CH=1,
        ISP=1,
        C=1,
    )
    assert NORMAL.build(**fields) == expected
    t, parsed = decode_trb(expected)
    assert t is TRBType.Normal
    assert {k: parsed[k] for k in fields} == fields
    assert parsed["ENT"] == parsed["NS"] == parsed["IDT"] == parsed["BEI"] == 0


def test_link_trb_vector() -> None:
    expected = bytes.fromhex(
        "4078563402000000"  # dw0-1 Ring Segment Pointer 0x2_3456_7840 (bits 3:0 RsvdZ = 0)
        "00000000"  # dw2 Interrupter Target 0
        "02180000"  # dw3 = TRB Type 6 << 10 (0x1800) | TC bit 1 (0x2) | C 0 = 0x00001802
    )
    assert LINK.build(ring_segment_pointer=0x2_3456_7840, TC=1) == expected
    t, parsed = decode_trb(expected)
    assert t is TRBType.Link
    assert parsed["ring_segment_pointer"] == 0x2_3456_7840 and parsed["TC"] == 1
    assert parsed["C"] == 0 and parsed["CH"] == 0 and parsed["IOC"] == 0


def test_transfer_event_vector() -> None:
    expected = bytes.fromhex(
        "3020000001000000"  # dw0-1 TRB Pointer 0x1_0000_2030
        "2301000d"  # dw2 = Completion Code 13 (Short Packet) << 24 | residual 0x123 = 0x0D000123
        # dw3 = Slot ID 1 << 24 (0x01000000) | Endpoint ID 3 << 16 (0x30000)
        #       | TRB Type 32 << 10 (0x8000) | C 1 = 0x01038001
        "01800301"
    )
    assert (
        TRANSFER_EVENT.build(
            trb_pointer=0x1_0000_2030,
            completion_code=CompletionCode.ShortPacket,
            trb_transfer_length=0x123,
            slot_id=1,
            endpoint_id=3,
            C=1,
        )
        == expected
    )
    t, parsed = decode_trb(expected)
    assert t is TRBType.TransferEvent
    assert parsed["completion_code"] == CompletionCode.ShortPacket
    assert parsed["trb_transfer_length"] == 0x123 and parsed["endpoint_id"] == 3
    assert parsed["ED"] == 0 and parsed["trb_pointer"] == 0x1_0000_2030


def test_port_status_change_event_vector() -> None:
    expected = bytes.fromhex(
        "00000005"  # dw0 = Port ID 5 << 24
        "00000000"  # dw1 RsvdZ
        "00000001"  # dw2 = Completion Code 1 (Success) << 24
        "01880000"  # dw3 = TRB Type 34 << 10 (0x8800) | C 1 = 0x00008801
    )
    assert PORT_STATUS_CHANGE_EVENT.build(port_id=5, completion_code=1, C=1) == expected
    t, parsed = decode_trb(expected)
    assert t is TRBType.PortStatusChangeEvent
    assert parsed["port_id"] == 5 and parsed["completion_code"] == CompletionCode.Success


def test_dbc_info_context_vector() -> None:
    expected = (
        bytes.fromhex(
            "0010000000000000"  # 0x00 String 0 Descriptor Address 0x1000
            "4010000000000000"  # 0x08 Manufacturer String Descriptor Address 0x1040
            "8010000000000000"  # 0x10 Product String Descriptor Address 0x1080
            "c010000000000000"  # 0x18 Serial Number String Descriptor Address 0x10C0
            # 0x20: byte 0 String 0 Length 4, byte 1 Manufacturer 14, byte 2 Product 20,
            # byte 3 Serial Number 10
            "040e140a"
        )
        + bytes(28)  # 0x24..0x3F reserved
    )
    built = DBC_INFO_CONTEXT.build(
        string0_descriptor_address=0x1000,
        manufacturer_string_descriptor_address=0x1040,
        product_string_descriptor_address=0x1080,
        serial_number_string_descriptor_address=0x10C0,
        string0_length=4,
        manufacturer_string_length=14,
        product_string_length=20,
        serial_number_string_length=10,
    )
    assert built == expected and len(built) == 64
    assert DBC_INFO_CONTEXT.parse(expected)["product_string_length"] == 20


def test_endpoint_context_vectors() -> None:
    # DbC OUT endpoint (target -> host): CErr 3, EP Type 2 (Bulk OUT), Max Burst 0,
    # Max Packet Size 1024, TR Dequeue Pointer 0x1_0000_3000 with DCS 1, Average TRB Length 1024
    out_ep = bytes.fromhex(
        "00000000"  # dw0: EP State 0 (Disabled), everything else 0
        # dw1 = Max Packet Size 1024 << 16 (0x04000000) | EP Type 2 << 3 (0x10)
        #       | CErr 3 << 1 (0x6) = 0x04000016
        "16000004"
        "0130000001000000"  # dw2-3 = 0x1_0000_3000 | DCS bit 0
        "00040000"  # dw4 = Average TRB Length 1024 (bits 15:0)
    )
    fields = dict(
        cerr=3,
        ep_type=EPType.BulkOut,
        max_packet_size=1024,
        tr_dequeue_pointer=0x1_0000_3000,
        DCS=1,
        average_trb_length=1024,
    )
    assert ENDPOINT_CONTEXT.build(**fields) == out_ep + bytes(12)
    assert DBC_ENDPOINT_CONTEXT.build(**fields) == out_ep + bytes(44)
    # DbC IN endpoint (host -> target): EP Type 6 << 3 = 0x30 | CErr 0x6 | Max Burst 3 << 8
    # = 0x04000336
    in_dw1 = bytes.fromhex("36030004")
    built = DBC_ENDPOINT_CONTEXT.build(**{**fields, "ep_type": EPType.BulkIn, "max_burst_size": 3})
    assert built[4:8] == in_dw1
    parsed = DBC_ENDPOINT_CONTEXT.parse(built)
    assert parsed["ep_type"] == 6 and parsed["max_burst_size"] == 3 and parsed["DCS"] == 1
    assert (DBC_CONTEXT_SIZE, DBC_OUT_EP_OFFSET, DBC_IN_EP_OFFSET) == (192, 64, 128)


def test_erst_entry_vector() -> None:
    # Ring Segment Base Address 0x1_0000_4000 (bits 5:0 RsvdZ), Ring Segment Size 256 = 0x100
    expected = bytes.fromhex("00400000010000000001000000000000")
    assert ERST_ENTRY.build(ring_segment_base_address=0x1_0000_4000, ring_segment_size=256) == (
        expected
    )


def test_dbc_register_offsets_and_values() -> None:
    assert {n: DBC_REGS.offset(n) for n in DBC_REGS.registers} == {
        "DCID": 0x00,
        "DCDB": 0x04,
        "DCERSTSZ": 0x08,
        "DCERSTBA": 0x10,
        "DCERDP": 0x18,
        "DCCTRL": 0x20,
        "DCST": 0x24,
        "DCPORTSC": 0x28,
        "DCCP": 0x30,
        "DCDDI1": 0x38,
        "DCDDI2": 0x3C,
    }
    assert DBC_REGS.size == 64
    # DCCTRL: DCE bit 31, LSE bit 1, DCR bit 0
    assert DCCTRL.encode(DCE=1, LSE=1, DCR=1) == 0x8000_0003
    # DCCTRL: Debug Max Burst 23:16 = 0x0F, Device Address 30:24 = 0x05
    assert DCCTRL.decode(0x050F_0000)["debug_max_burst"] == 0x0F
    assert DCCTRL.get(0x050F_0000, "device_address") == 5
    # DCDB: DB Target 1 (IN ring) in bits 15:8
    assert DCDB.encode(db_target=1) == 0x100
    # DCPORTSC: CCS bit 0, PED bit 1, CSC bit 17, PRC bit 21; PLS 5 (RxDetect) in 8:5 = 0xA0
    assert DCPORTSC.encode(CCS=1, PED=1, CSC=1, PRC=1, PLS=5) == 0x0022_00A3
    # DCID: Capability ID 0x0A, next 0x10 in 15:8, DCERST Max 4 in 20:16
    assert DCID.decode(0x0004_100A) == {
        **DCID.decode(0),
        "capability_id": 0x0A,
        "next_capability_pointer": 0x10,
        "event_ring_segment_table_max": 4,
    }
    # HCCPARAMS1: AC64 bit 0, xECP 31:16 (dwords)
    assert HCCPARAMS1.decode(0x0200_0001)["AC64"] == 1
    assert HCCPARAMS1.get(0x0200_0001, "xECP") == 0x200


def test_string_descriptor_vectors() -> None:
    # bLength 8, bDescriptorType 3, "DbC" in UTF-16LE
    assert build_string_descriptor("DbC") == bytes.fromhex("0803440062004300")
    # String 0: bLength 4, type 3, LANGID 0x0409 little endian
    assert build_string0() == bytes.fromhex("04030904")
