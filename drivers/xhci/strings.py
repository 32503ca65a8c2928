"""USB string descriptors (USB 2.0 section 9.6.7) as the DbC info context points at them.

A string descriptor is ``bLength``, ``bDescriptorType`` = 3 (STRING), then UTF-16LE text;
``bLength`` counts the whole descriptor and is at most 255 (so at most 126 UTF-16 code units).
String 0 holds LANGIDs (16-bit each) instead of text. The DbC info context's length bytes must
equal ``bLength``. Malformed descriptors raise :class:`~drivers.xhci.errors.DescriptorError`.
"""

from __future__ import annotations

from construct import (
    Array,
    Bytes,
    Const,
    Int8ul,
    Int16ul,
    Rebuild,
    StringEncoded,
    Struct,
    len_,
    this,
)
from dbc_harness.drivers.xhci.errors import DescriptorError
from dbc_harness.drivers.xhci.layout import Layout

#: bDescriptorType of a string descriptor (USB 2.0 table 9-5)
STRING_DESCRIPTOR_TYPE = 3
#: LANGID of US English
LANGID_EN_US = 0x0409
MAX_DESCRIPTOR_LENGTH = 255

#: The two-byte header every descriptor starts with (fast codec derived from it).
DESCRIPTOR_HEADER = Layout(
    "DescriptorHeader",
    Struct(
        "bLength" / Int8ul * "Size of this descriptor in bytes (USB 2.0 9.6.7)",
        "bDescriptorType" / Int8ul * "STRING descriptor type = 3",
    ),
)

#: A text string descriptor, declared with construct (reference for the fast functions below).
STRING_DESCRIPTOR = Struct(
    "bLength" / Rebuild(Int8ul, lambda ctx: 2 + len(ctx.bString.encode("utf-16-le"))),
    "bDescriptorType" / Const(STRING_DESCRIPTOR_TYPE, Int8ul),
    "bString" / StringEncoded(Bytes(this.bLength - 2), "utf_16_le"),
)

#: String 0: the LANGID array (USB 2.0 table 9-15).
STRING0_DESCRIPTOR = Struct(
    "bLength" / Rebuild(Int8ul, 2 + 2 * len_(this.wLANGID)),
    "bDescriptorType" / Const(STRING_DESCRIPTOR_TYPE, Int8ul),
    "wLANGID" / Array((this.bLength - 2) // 2, Int16ul),
)


def build_string_descriptor(text: str) -> bytes:
    """bLength, bDescriptorType = 3, UTF-16LE ``text`` (at most 126 code units)."""
    try:
        body = text.encode("utf-16-le")
    except UnicodeEncodeError as exc:
        raise DescriptorError(f"text {text!r} cannot be encoded as UTF-16: {exc}") from None
    length = 2 + len(body)
    if length > MAX_DESCRIPTOR_LENGTH:
        raise DescriptorError(
            f"string of {len(body) // 2} UTF-16 code units needs bLength {length} > 255"
        )
    return DESCRIPTOR_HEADER.build(bLength=length, bDescriptorType=STRING_DESCRIPTOR_TYPE) + body


def _checked_body(buf: bytes | bytearray | memoryview, offset: int) -> bytes:
    data = bytes(buf[offset:])
    if len(data) < 2:
        raise DescriptorError(f"descriptor needs at least 2 bytes, got {len(data)}")
    header = DESCRIPTOR_HEADER.parse(data)
    length, dtype = header["bLength"], header["bDescriptorType"]
    if dtype != STRING_DESCRIPTOR_TYPE:
        raise DescriptorError(f"bDescriptorType {dtype} is not STRING (3)")
    if length < 2:
        raise DescriptorError(f"bLength {length} is shorter than the 2-byte header")
    if length > len(data):
        raise DescriptorError(f"bLength {length} exceeds the {len(data)} bytes available")
    if length % 2:
        raise DescriptorError(f"bLength {length} is odd: UTF-16 text needs an even length")
    return data[2:length]


def parse_string_descriptor(buf: bytes | bytearray | memoryview, offset: int = 0) -> str:
    """The text of the string descriptor at ``offset``; bytes after ``bLength`` are ignored."""
    body = _checked_body(buf, offset)
    try:
        return body.decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise DescriptorError(f"string descriptor is not valid UTF-16LE: {exc}") from None


def build_string0(langids: tuple[int, ...] = (LANGID_EN_US,)) -> bytes:
    """String 0 with the given LANGIDs (default US English)."""
    if not langids:
        raise DescriptorError("String 0 needs at least one LANGID")
    if len(langids) > (MAX_DESCRIPTOR_LENGTH - 2) // 2:
        raise DescriptorError(f"{len(langids)} LANGIDs do not fit 255 bytes")
    for lang in langids:
        if not 0 <= lang <= 0xFFFF:
            raise DescriptorError(f"LANGID {lang:#x} is not 16 bits")
    data: bytes = STRING0_DESCRIPTOR.build({"wLANGID": list(langids)})
    return data


def parse_string0(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, ...]:
    """The LANGIDs of String 0. Accepts the 6-byte ``0x0009, 0x0004`` form some drivers emit."""
    body = _checked_body(buf, offset)
    if not body:
        raise DescriptorError("String 0 holds no LANGID")
    return tuple(int.from_bytes(body[i : i + 2], "little") for i in range(0, len(body), 2))


__all__ = [
    "DESCRIPTOR_HEADER",
    "LANGID_EN_US",
    "STRING0_DESCRIPTOR",
    "STRING_DESCRIPTOR",
    "STRING_DESCRIPTOR_TYPE",
    "build_string0",
    "build_string_descriptor",
    "parse_string0",
    "parse_string_descriptor",
]
