"""pcapng blocks and usbmon records: the byte formats behind :mod:`harness.trace`.

Only two formats live here, both outside the xHCI spec (so ``struct`` is the right tool):

* **pcapng** (IETF draft-ietf-opsawg-pcapng): a Section Header Block (SHB), one Interface
  Description Block (IDB) and one Enhanced Packet Block (EPB) per packet, each EPB may carry an
  ``opt_comment`` option. Little-endian, every block and option padded to 32 bits.
* **usbmon** as Linux ``mon_bin`` exports it (``Documentation/usb/usbmon.rst``):
  LINKTYPE_USB_LINUX_MMAPPED (220), a 64-byte header per packet, followed by the captured data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

#: pcapng link type of usbmon's binary interface with the 64-byte header.
LINKTYPE_USB_LINUX_MMAPPED = 220

#: The usbmon binary header (``struct usbmon_packet``): id, type, xfer_type, epnum, devnum,
#: busnum, flag_setup, flag_data, ts_sec, ts_usec, status, length, len_cap, setup[8], interval,
#: start_frame, xfer_flags, ndesc.
USBMON_HEADER = struct.Struct("<QcBBBHbbqiiII8siiII")
assert USBMON_HEADER.size == 64

#: usbmon ``xfer_type`` values.
XFER_ISOCHRONOUS = 0
XFER_INTERRUPT = 1
XFER_CONTROL = 2
XFER_BULK = 3

#: usbmon ``status`` of a submission ('S') record: -EINPROGRESS.
STATUS_IN_PROGRESS = -115
#: -EPIPE: how usbmon reports a STALL handshake.
STATUS_STALL = -32

#: ``flag_setup`` / ``flag_data`` characters (0 means "present").
FLAG_NO_SETUP = ord("-")
FLAG_IN_SUBMIT_NO_DATA = ord("<")
FLAG_OUT_COMPLETE_NO_DATA = ord(">")
FLAG_NO_DATA = ord("=")

_SHB_TYPE = 0x0A0D0D0A
_IDB_TYPE = 0x00000001
_EPB_TYPE = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_ENDOFOPT = 0
_OPT_COMMENT = 1
_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_TSRESOL = 9


@dataclass(frozen=True)
class UsbmonRecord:
    """One usbmon event ('S' submit, 'C' complete, 'E' error) as it goes into a capture."""

    urb_id: int
    event: str
    xfer_type: int
    epnum: int
    devnum: int
    busnum: int
    ts_usec_total: int
    status: int
    length: int
    data: bytes | None
    setup: bytes | None = None

    def pack(self, max_data: int) -> bytes:
        """64-byte header + up to ``max_data`` bytes of data (``len_cap`` says how many)."""
        captured = b"" if self.data is None else bytes(self.data[:max_data])
        if self.data is not None:
            flag_data = 0
        elif self.event == "S" and self.epnum & 0x80:
            flag_data = FLAG_IN_SUBMIT_NO_DATA
        elif self.event == "C" and not self.epnum & 0x80:
            flag_data = FLAG_OUT_COMPLETE_NO_DATA
        else:
            flag_data = FLAG_NO_DATA
        flag_setup = 0 if self.setup is not None else FLAG_NO_SETUP
        header = USBMON_HEADER.pack(
            self.urb_id & 0xFFFF_FFFF_FFFF_FFFF,
            self.event.encode("ascii"),
            self.xfer_type,
            self.epnum & 0xFF,
            self.devnum & 0xFF,
            self.busnum & 0xFFFF,
            flag_setup,
            flag_data,
            self.ts_usec_total // 1_000_000,
            self.ts_usec_total % 1_000_000,
            self.status,
            self.length,
            len(captured),
            (self.setup or b"").ljust(8, b"\0")[:8],
            0,
            0,
            0,
            0,
        )
        return header + captured


def _pad32(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad32(value)


def _options(*pairs: tuple[int, bytes]) -> bytes:
    if not pairs:
        return b""
    return b"".join(_option(c, v) for c, v in pairs) + struct.pack("<HH", _OPT_ENDOFOPT, 0)


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def section_header_block(application: str) -> bytes:
    """SHB: byte-order magic, version 1.0, section length unknown (-1), shb_userappl."""
    body = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
    body += _options((_SHB_USERAPPL, application.encode()))
    return _block(_SHB_TYPE, body)


def interface_description_block(linktype: int, snaplen: int, name: str) -> bytes:
    """IDB: link type, snap length, if_name and if_tsresol = 6 (microseconds)."""
    body = struct.pack("<HHI", linktype, 0, snaplen)
    body += _options((_IF_NAME, name.encode()), (_IF_TSRESOL, bytes([6])))
    return _block(_IDB_TYPE, body)


def enhanced_packet_block(
    interface_id: int, ts_usec_total: int, packet: bytes, original_length: int, comment: str | None
) -> bytes:
    """EPB with a microsecond timestamp and an optional ``opt_comment``."""
    body = struct.pack(
        "<IIIII",
        interface_id,
        (ts_usec_total >> 32) & 0xFFFF_FFFF,
        ts_usec_total & 0xFFFF_FFFF,
        len(packet),
        original_length,
    )
    body += _pad32(packet)
    if comment:
        body += _options((_OPT_COMMENT, comment.encode("utf-8")))
    return _block(_EPB_TYPE, body)


class PcapngFile:
    """A pcapng file with one usbmon interface. Write packets, then :meth:`close`."""

    def __init__(
        self, stream: BinaryIO, *, snaplen: int = 262_144, name: str = "dbc-harness"
    ) -> None:
        if snaplen < USBMON_HEADER.size:
            raise ValueError(f"snaplen {snaplen} is smaller than the 64-byte usbmon header")
        self._stream = stream
        self.snaplen = snaplen
        self.packets = 0
        stream.write(section_header_block("dbc-harness"))
        stream.write(interface_description_block(LINKTYPE_USB_LINUX_MMAPPED, snaplen, name))

    def write(self, record: UsbmonRecord, comment: str | None = None) -> None:
        packet = record.pack(self.snaplen - USBMON_HEADER.size)
        original = USBMON_HEADER.size + (0 if record.data is None else len(record.data))
        self._stream.write(
            enhanced_packet_block(0, record.ts_usec_total, packet, original, comment)
        )
        self.packets += 1

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()


@dataclass(frozen=True)
class CapturedPacket:
    """One Enhanced Packet Block read back: usbmon header fields, captured data, comment."""

    urb_id: int
    event: str
    epnum: int
    status: int
    length: int
    data: bytes
    comment: str | None


def read_packets(raw: bytes) -> list[CapturedPacket]:
    """Read the usbmon packets of a little-endian pcapng capture (for summaries and tests).

    Raises ValueError naming the offset of a malformed block."""
    packets: list[CapturedPacket] = []
    offset = 0
    while offset < len(raw):
        if offset + 12 > len(raw):
            raise ValueError(f"truncated pcapng block at offset {offset}")
        block_type, total = struct.unpack_from("<II", raw, offset)
        if total < 12 or total % 4 or offset + total > len(raw):
            raise ValueError(f"bad pcapng block length {total} at offset {offset}")
        if block_type == _EPB_TYPE:
            _, _, _, cap_len, _ = struct.unpack_from("<IIIII", raw, offset + 8)
            start = offset + 28
            header = USBMON_HEADER.unpack_from(raw, start)
            data = raw[start + 64 : start + cap_len]
            comment = None
            opt = start + cap_len + (-cap_len % 4)
            while opt + 4 <= offset + total - 4:
                code, length = struct.unpack_from("<HH", raw, opt)
                if code == _OPT_ENDOFOPT:
                    break
                if code == _OPT_COMMENT:
                    comment = raw[opt + 4 : opt + 4 + length].decode("utf-8", "replace")
                opt += 4 + length + (-length % 4)
            packets.append(
                CapturedPacket(
                    urb_id=header[0],
                    event=header[1].decode("ascii", "replace"),
                    epnum=header[3],
                    status=header[10],
                    length=header[11],
                    data=data,
                    comment=comment,
                )
            )
        offset += total
    return packets
