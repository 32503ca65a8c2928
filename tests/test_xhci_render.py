"""One-line renderings of TRBs and registers, the multi-line register block view, and USB
string descriptors."""

from __future__ import annotations

import pytest
from dbc_harness.drivers.xhci.errors import DescriptorError, LayoutError
from dbc_harness.drivers.xhci.registers import DBC_REGS, render_register
from dbc_harness.drivers.xhci.strings import (
    STRING_DESCRIPTOR,
    build_string0,
    build_string_descriptor,
    parse_string0,
    parse_string_descriptor,
)
from dbc_harness.drivers.xhci.trb import (
    LINK,
    NORMAL,
    PORT_STATUS_CHANGE_EVENT,
    TRANSFER_EVENT,
    CompletionCode,
    render_trb,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def test_trb_renderings() -> None:
    normal = NORMAL.build(data_buffer_pointer=0x1_0000_2000, trb_transfer_length=512, IOC=1, C=1)
    assert render_trb(normal) == "Normal ptr=0x1_0000_2000 len=512 IOC C=1"
    link = LINK.build(ring_segment_pointer=0x1_0000_0000, TC=1, C=0)
    assert render_trb(link) == "Link ptr=0x1_0000_0000 TC C=0"
    event = TRANSFER_EVENT.build(
        trb_pointer=0x2000,
        completion_code=CompletionCode.StallError,
        trb_transfer_length=64,
        endpoint_id=2,
        slot_id=1,
        C=1,
    )
    assert render_trb(event) == "TransferEvent ptr=0x2000 cc=StallError residual=64 slot=1 ep=2 C=1"
    psc = PORT_STATUS_CHANGE_EVENT.build(port_id=3, completion_code=1, C=1)
    assert render_trb(psc) == "PortStatusChangeEvent port=3 cc=Success C=1"
    # a set RsvdZ bit is shown, so a model's complaint can point at it
    assert "rsvdz3_7=0x1" in render_trb(NORMAL.build(rsvdz3_7=1))


def test_unknown_and_undeclared_types_render() -> None:
    raw = bytes(12) + (63 << 10 | 1).to_bytes(4, "little")
    assert render_trb(raw) == "TRB(type=63) parameter=0x0 status=0x0 control=0x0/0x0 C=1"
    stop = bytes(12) + (15 << 10).to_bytes(4, "little")  # Stop Endpoint: no layout declared
    assert render_trb(stop).startswith("StopEndpointCommand ")
    assert render_trb(bytes(16)).startswith("TRB(type=0)")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_any_trb_renders_on_one_line(raw: bytes) -> None:
    text = render_trb(raw)
    assert text and "\n" not in text and text.endswith(("C=0", "C=1"))


def test_register_renderings() -> None:
    assert render_register("DCCTRL", 0x810F_0003) == (
        "DCCTRL=0x810f0003 DCE device_address=1 debug_max_burst=15 LSE DCR"
    )
    assert render_register("DCPORTSC", 0x0022_04A3) == (
        "DCPORTSC=0x2204a3 PRC CSC port_speed=1 PLS=5 PED CCS"
    )
    assert render_register("NOTAREG", 5) == "NOTAREG=0x5"
    with pytest.raises(LayoutError):
        render_register("DCCTRL", -1)


def test_register_block_view() -> None:
    text = DBC_REGS.render({"DCCTRL": 0x8000_0001, "DCST": 0x0500_0000, "DCERDP": 0x1000}, 0x8700)
    assert text.splitlines() == [
        "DbC registers @ 0x8700",
        "  +0x18 DCERDP     0x0000000000001000  event_ring_dequeue_pointer=0x1000",
        "  +0x20 DCCTRL     0x80000001  DCE DCR",
        "  +0x24 DCST       0x05000000  debug_port_number=5",
    ]


class _FakeMmio:
    def __init__(self) -> None:
        self.mem = {0x20: 0x8000_0001, 0x18: 0x1230, 0x1C: 0x1}
        self.reads: list[int] = []
        self.writes: list[tuple[int, int]] = []

    def read32(self, offset: int) -> int:
        self.reads.append(offset)
        return self.mem.get(offset, 0)

    def write32(self, offset: int, value: int) -> None:
        self.writes.append((offset, value))
        self.mem[offset] = value

    def read64(self, offset: int) -> int:
        raise AssertionError("64-bit access must not be used")

    def write64(self, offset: int, value: int) -> None:
        raise AssertionError("64-bit access must not be used")


def test_read_all_uses_dword_accesses_and_skips_reserved() -> None:
    mmio = _FakeMmio()
    values = DBC_REGS.read_all(mmio)
    assert values["DCCTRL"] == 0x8000_0001 and values["DCERDP"] == 0x1_0000_1230
    assert 0x0C not in mmio.reads and 0x2C not in mmio.reads
    assert mmio.reads.index(0x18) < mmio.reads.index(0x1C)  # low dword first


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=126).filter(lambda s: len(s.encode("utf-16-le")) <= 252))
def test_string_descriptor_round_trip_matches_construct(text: str) -> None:
    data = build_string_descriptor(text)
    assert data[0] == len(data) and data[1] == 3
    assert parse_string_descriptor(data + b"junk") == text
    assert data == STRING_DESCRIPTOR.build({"bString": text})
    assert STRING_DESCRIPTOR.parse(data)["bString"] == text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "at least 2 bytes"),
        (b"\x04\x02ab", "not STRING"),
        (b"\x01\x03", "shorter"),
        (b"\x08\x03ab", "exceeds"),
        (b"\x05\x03abc", "odd"),
        (b"\x04\x03\x00\xd8", "UTF-16"),
    ],
)
def test_malformed_string_descriptors(data: bytes, message: str) -> None:
    with pytest.raises(DescriptorError, match=message):
        parse_string_descriptor(data)


def test_string_limits_and_string0() -> None:
    assert len(build_string_descriptor("x" * 126)) == 254
    with pytest.raises(DescriptorError, match="255"):
        build_string_descriptor("x" * 127)
    assert parse_string0(build_string0((0x0409, 0x0407))) == (0x0409, 0x0407)
    assert parse_string0(bytes([6, 3, 9, 0, 4, 0])) == (0x0009, 0x0004)  # accepted quirk
    with pytest.raises(DescriptorError):
        parse_string0(bytes([2, 3]))
    with pytest.raises(DescriptorError):
        build_string0(())
    with pytest.raises(DescriptorError):
        build_string0((0x10000,))


def test_sub_dword_capability_registers_and_64_bit_writes() -> None:
    from dbc_harness.drivers.xhci.registers import CAPABILITY_REGS, DCCP, write_register

    mmio = _FakeMmio()
    mmio.mem = {0x00: 0x0120_0020, 0x10: 0x0200_0001}  # HCIVERSION 0x120, CAPLENGTH 0x20
    caps = CAPABILITY_REGS.read_all(mmio)
    assert caps["CAPLENGTH"] == 0x20 and caps["HCIVERSION"] == 0x120
    assert caps["HCCPARAMS1"] == 0x0200_0001
    assert "CAPLENGTH" in CAPABILITY_REGS.render(caps)
    mmio.writes.clear()
    write_register(mmio, DBC_REGS.offset("DCCP"), DCCP, 0x1_2345_6780)
    assert mmio.writes == [(0x30, 0x2345_6780), (0x34, 0x1)]  # low dword, then high dword
