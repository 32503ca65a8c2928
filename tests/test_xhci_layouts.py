"""Every layout's derived fast codec agrees with construct (parse, build, round trip), and the
derivation engine rejects what it cannot derive with a named error."""

from __future__ import annotations

import pytest
from construct import BitsInteger, BitStruct, Bytes, ByteSwapped, Int32ul, Struct
from dbc_harness.drivers.xhci import contexts, registers, strings, trb
from dbc_harness.drivers.xhci.errors import LayoutError, XhciLayoutError
from dbc_harness.drivers.xhci.layout import Field, Layout
from hypothesis import given, settings
from hypothesis import strategies as st


def _all_layouts() -> list[Layout]:
    seen: dict[int, Layout] = {}
    for module in (trb, registers, contexts, strings):
        for value in vars(module).values():
            if isinstance(value, Layout):
                seen[id(value)] = value
    return sorted(seen.values(), key=lambda layout: layout.name)


ALL_LAYOUTS = _all_layouts()


def _field_value(f: Field) -> st.SearchStrategy[int]:
    raw = st.integers(min_value=0, max_value=(1 << f.width) - 1)
    # bias towards the edges: 0, all ones, single top bit
    edges = st.sampled_from([0, (1 << f.width) - 1, 1 << (f.width - 1)])
    return st.one_of(edges, raw).map(lambda v: v << f.value_shift)


def _fields_strategy(layout: Layout) -> st.SearchStrategy[dict[str, int]]:
    return st.fixed_dictionaries({name: _field_value(f) for name, f in layout.fields.items()})


def test_every_spec_layout_is_covered() -> None:
    names = {layout.name for layout in ALL_LAYOUTS}
    required = {
        "Normal", "SetupStage", "DataStage", "StatusStage", "Isoch", "Link", "EventData", "NoOp",
        "NoOpCommand", "EnableSlotCommand", "DisableSlotCommand", "AddressDeviceCommand",
        "ConfigureEndpointCommand", "ResetEndpointCommand", "SetTRDequeuePointerCommand",
        "TransferEvent", "CommandCompletionEvent", "PortStatusChangeEvent",
        "HostControllerEvent", "DCID", "DCDB", "DCERSTSZ", "DCERSTBA", "DCERDP", "DCCTRL",
        "DCST", "DCPORTSC", "DCCP", "DCDDI1", "DCDDI2", "CAPLENGTH", "HCIVERSION", "HCSPARAMS1",
        "HCSPARAMS2", "HCSPARAMS3", "HCCPARAMS1", "DBOFF", "RTSOFF", "HCCPARAMS2", "USBCMD",
        "USBSTS", "PAGESIZE", "CRCR", "DCBAAP", "CONFIG", "PORTSC", "IMAN", "IMOD", "ERSTSZ",
        "ERSTBA", "ERDP", "DOORBELL", "xECP", "USBLEGSUP", "SupportedProtocol", "SlotContext",
        "EndpointContext", "DbCEndpointContext", "DbCInfoContext", "ERSTEntry",
    }  # fmt: skip
    assert required <= names, required - names


@pytest.mark.parametrize("layout", ALL_LAYOUTS, ids=lambda layout: layout.name)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_fast_codec_agrees_with_construct(layout: Layout, data: st.DataObject) -> None:
    # parse of arbitrary bytes (at an arbitrary offset inside a larger buffer)
    prefix = data.draw(st.integers(min_value=0, max_value=7), label="offset")
    raw = data.draw(st.binary(min_size=layout.size, max_size=layout.size), label="bytes")
    buf = bytes(prefix) + raw + b"\xa5"
    parsed = layout.parse(buf, prefix)
    assert parsed == layout.construct_parse(buf, prefix)
    # a reader of some fields, in any order, is parse restricted to them
    names = data.draw(st.lists(st.sampled_from(sorted(layout.fields)), min_size=1), label="names")
    assert layout.reader(*names)(buf, prefix) == tuple(parsed[n] for n in names)
    assert layout.build(**parsed) == raw  # every bit is a named field: nothing is lost

    # build of arbitrary in-range field values: the fast path takes the non-reserved fields,
    # reserved ones go through the table-driven path; both must match construct
    fields = data.draw(_fields_strategy(layout), label="fields")
    public = {k: v for k, v in fields.items() if not layout.fields[k].reserved}
    assert layout.build(**public) == layout.construct_build(**public)
    built = layout.build(**fields)
    assert built == layout.construct_build(**fields)
    assert layout.parse(built) == fields
    for given_fields in (fields, public):
        target = bytearray(prefix + layout.size + 3)
        layout.pack_into(target, prefix, **given_fields)
        assert bytes(target[prefix : prefix + layout.size]) == layout.build(**given_fields)
        assert not any(target[:prefix]) and not any(target[prefix + layout.size :])

    # register-value helpers agree with the byte codec
    value = int.from_bytes(built, "little")
    assert layout.decode(value) == fields
    assert layout.encode(**fields) == value
    name = data.draw(st.sampled_from(sorted(layout.fields)), label="field")
    assert layout.get(value, name) == fields[name]
    new = data.draw(_field_value(layout.fields[name]), label="new")
    assert layout.decode(layout.replace(value, **{name: new})) == {**fields, name: new}


@pytest.mark.parametrize("layout", ALL_LAYOUTS, ids=lambda layout: layout.name)
def test_mask_table_covers_every_bit_once(layout: Layout) -> None:
    covered = 0
    for f in layout.fields.values():
        span = ((1 << f.width) - 1) << f.bit_offset
        assert covered & span == 0, f"{f.name} overlaps another field"
        covered |= span
        row = next(r for r in layout.mask_table() if r["name"] == f.name)
        assert row["mask"] == f.mask and row["dword"] == f.bit_offset // 32
    assert covered == (1 << (8 * layout.size)) - 1


def test_unspecified_fields_default_to_zero_or_declared_default() -> None:
    assert trb.NORMAL.parse(trb.NORMAL.build())["trb_type"] == trb.TRBType.Normal
    assert trb.LINK.build() == bytes(13) + bytes([trb.TRBType.Link << 2, 0, 0])[:3]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"trb_transfer_length": 1 << 17}, "trb_transfer_length"),
        ({"interrupter_target": -1}, "interrupter_target"),
        ({"IOC": 2}, "IOC"),
        ({"data_buffer_pointer": 1 << 64}, "data_buffer_pointer"),
        ({"td_size": "3"}, "must be an int"),
    ],
)
def test_out_of_range_values_raise_layout_error(fields: dict[str, object], message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        trb.NORMAL.build(**fields)
    buf = bytearray(16)
    with pytest.raises(LayoutError, match=message):
        trb.NORMAL.pack_into(buf, 0, **fields)
    assert buf == bytearray(16)  # nothing written on error


def test_misaligned_address_raises_layout_error() -> None:
    with pytest.raises(LayoutError, match=r"ring_segment_pointer.*aligned"):
        trb.LINK.build(ring_segment_pointer=0x1008)
    with pytest.raises(LayoutError):
        contexts.ERST_ENTRY.build(ring_segment_base_address=0x1020)
    with pytest.raises(LayoutError):
        registers.DCCTRL.replace(0, DCE=2)


def test_reader_names_unknown_fields_and_short_buffers() -> None:
    read = trb.NORMAL.reader("trb_transfer_length", "data_buffer_pointer")
    assert trb.NORMAL.reader("trb_transfer_length", "data_buffer_pointer") is read  # cached
    with pytest.raises(LayoutError, match="Normal: reader of unknown field"):
        trb.NORMAL.reader("trb_transfer_length", "no_such_field")
    with pytest.raises(LayoutError, match="Normal needs 16 bytes at offset 4"):
        read(bytes(16), 4)


def test_unknown_field_short_buffer_and_bad_values_are_named_errors() -> None:
    with pytest.raises(LayoutError, match="no field"):
        trb.NORMAL.build(length=3)
    with pytest.raises(LayoutError, match="needs 16 bytes"):
        trb.NORMAL.parse(bytes(15))
    with pytest.raises(LayoutError, match="needs 16 bytes"):
        trb.NORMAL.parse(bytes(20), 8)
    with pytest.raises(LayoutError):
        registers.DCCTRL.decode(1 << 32)
    with pytest.raises(LayoutError, match="no field"):
        registers.DCCTRL.get(0, "DCX")
    assert issubclass(LayoutError, XhciLayoutError)


def test_engine_rejects_what_it_cannot_derive() -> None:
    with pytest.raises(LayoutError, match="bit-field word of 5 bytes"):
        Layout(
            "short",
            Struct(
                "w"
                / ByteSwapped(
                    BitStruct("a" / BitsInteger(31), "b" / BitsInteger(1), "c" / BitsInteger(8))
                )
            ),
        )
    with pytest.raises(LayoutError, match="unsupported"):
        Layout("bytes", Struct("b" / Bytes(4)))
    with pytest.raises(LayoutError, match="duplicate"):
        Layout("dup", Struct("a" / Int32ul, "w" / ByteSwapped(BitStruct("a" / BitsInteger(32)))))
    with pytest.raises(LayoutError, match="named"):
        Layout("anon", Struct(Int32ul))
