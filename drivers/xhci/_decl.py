"""Small declaration helpers shared by the layout modules (construct building blocks only).

``dword(index, ...)`` / ``qword(index, ...)`` wrap construct fields listed from the most
significant bit down into a little-endian ``ByteSwapped(BitStruct(...))`` word named
``dword<index>`` / ``qword<index>``; ``RZ(width)`` / ``RP(width)`` / ``RO(width)`` are reserved
bits (RsvdZ / RsvdP / RsvdO) that the helper names ``rsvdz<index>_<lsb>`` etc. from their
position, so reserved bits are real named fields.
"""

from __future__ import annotations

from enum import IntEnum

from construct import BitsInteger, BitStruct, ByteSwapped, Construct, Default, Int32ul
from dbc_harness.drivers.xhci.layout import AlignedAddress, enum_field


class _Reserved:
    def __init__(self, kind: str, width: int) -> None:
        self.kind = kind
        self.width = width


def RZ(width: int) -> _Reserved:
    """``width`` RsvdZ bits (software writes 0; a model may check)."""
    return _Reserved("rsvdz", width)


def RP(width: int) -> _Reserved:
    """``width`` RsvdP bits (software preserves them on write)."""
    return _Reserved("rsvdp", width)


def RO(width: int) -> _Reserved:
    """``width`` RsvdO bits (xHCI reserved, opaque to software)."""
    return _Reserved("rsvdo", width)


def bits(name: str, width: int, doc: str) -> Construct:
    """An unsigned bit field."""
    return name / BitsInteger(width) * doc


def enum_bits(
    name: str, width: int, enum: type[IntEnum], doc: str, default: int | None = None
) -> Construct:
    """An enumerated bit field (construct ``Enum`` over an IntEnum), optional build default."""
    con: Construct = enum_field(BitsInteger(width), enum)
    if default is not None:
        con = Default(con, int(default))
    return name / con * doc


def address_bits(name: str, width: int, align_bits: int, doc: str) -> Construct:
    """A pointer stored in ``width`` upper bits; the value is the full (aligned) address."""
    return name / AlignedAddress(BitsInteger(width), align_bits) * doc


def _word(
    prefix: str, index: int, size: int, items: tuple[Construct | _Reserved, ...]
) -> Construct:
    cursor = size * 8
    subcons: list[Construct] = []
    for item in items:
        if isinstance(item, _Reserved):
            cursor -= item.width
            subcons.append(f"{item.kind}{index}_{cursor}" / BitsInteger(item.width) * "reserved")
        else:
            width = _bit_width(item)
            cursor -= width
            subcons.append(item)
    if cursor != 0:
        raise ValueError(f"{prefix}{index}: declared bits miss the word size by {cursor}")
    return f"{prefix}{index}" / ByteSwapped(BitStruct(*subcons))


def _bit_width(con: Construct) -> int:
    while not isinstance(con, BitsInteger):
        con = con.subcon
    return int(con.length)


def dword(index: int, *items: Construct | _Reserved) -> Construct:
    """A little-endian 32-bit word of bit fields, fields from bit 31 down."""
    return _word("dword", index, 4, items)


def qword(index: int, *items: Construct | _Reserved) -> Construct:
    """A little-endian 64-bit word of bit fields (dwords ``index`` and ``index + 1``)."""
    return _word("qword", index, 8, items)


def reserved_dword(kind: str, index: int) -> Construct:
    """A whole reserved dword named ``<kind><index>`` (kind: rsvdz, rsvdp, rsvdo)."""
    return f"{kind}{index}" / Int32ul * "reserved"


__all__ = [
    "RO",
    "RP",
    "RZ",
    "address_bits",
    "bits",
    "dword",
    "enum_bits",
    "qword",
    "reserved_dword",
]
