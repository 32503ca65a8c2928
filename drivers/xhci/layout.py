"""The derivation engine: construct declarations in, fast codecs and mask tables out.

Every xHCI layout is declared once, with construct, as a ``Struct`` of named *words*:

* a little-endian bit-field word ``"dword3" / ByteSwapped(BitStruct(...))`` of 2, 4 or 8 bytes,
  its fields listed from the most significant bit down as ``BitsInteger(n)``, optionally wrapped in
  ``Enum(..., SomeIntEnum)``, :class:`AlignedAddress` and/or ``Default(..., value)``; every bit is
  a named field (reserved bits are ``rsvdz_*`` / ``rsvdp_*`` fields, so a model can check RsvdZ);
* or a plain little-endian integer ``"name" / Int8ul|Int16ul|Int32ul|Int64ul`` (same wrappers).

:class:`Layout` walks that construct tree once at import time, builds the mask table
(:class:`Field` per field) and emits Python source for ``parse``/``build``/``pack_into``
(``struct.unpack_from`` + shifts and masks), which is ``exec``'d once. There is no second,
hand-written copy of any layout: the construct declaration is the single source of truth, and
``tests/test_xhci_layouts.py`` checks the derived codec against construct itself.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from construct import (
    Adapter,
    BitsInteger,
    Construct,
    Default,
    Enum,
    EnumIntegerString,
    FormatField,
    Renamed,
    Struct,
    Transformed,
)
from construct.lib.binary import bytes2bits, swapbytes
from dbc_harness.drivers.xhci.errors import LayoutError

__all__ = ["AlignedAddress", "Field", "Layout", "format_hex"]

_FMT_BY_SIZE = {1: "B", 2: "H", 4: "I", 8: "Q"}


# construct ships no type information, so its Adapter is Any to mypy (disallow_subclassing_any)
class AlignedAddress(Adapter):  # type: ignore[misc]
    """A pointer stored in the upper bits of a word whose low ``align_bits`` bits are implied
    zero (e.g. TR Dequeue Pointer bits 63:4). The field's value is the full address; building an
    unaligned address is an error. Wrap a ``BitsInteger`` of the stored width."""

    def __init__(self, subcon: Construct, align_bits: int) -> None:
        super().__init__(subcon)
        self.align_bits = align_bits

    def _decode(self, obj: int, context: Any, path: str) -> int:
        return obj << self.align_bits

    def _encode(self, obj: int, context: Any, path: str) -> int:
        if obj & ((1 << self.align_bits) - 1):
            raise LayoutError(f"address 0x{obj:x} is not {1 << self.align_bits}-byte aligned")
        return obj >> self.align_bits


def format_hex(value: int) -> str:
    """``0x1_0000_2000`` style: hex digits grouped by four, for addresses in renderings."""
    return f"0x{value:_x}"


@dataclass(frozen=True)
class Field:
    """One row of a layout's mask table.

    ``byte_offset``/``word_size`` locate the containing word; ``shift``/``width``/``mask`` place
    the stored bits inside that word; ``bit_offset`` places them in the whole layout read as one
    little-endian integer; ``dword``/``dword_shift`` name the 32-bit dword holding the field's
    least significant bit (spec tables number dwords this way). ``value_shift`` is non-zero for
    :class:`AlignedAddress` fields (value = stored bits << value_shift).
    """

    name: str
    doc: str
    byte_offset: int
    word_size: int
    shift: int
    width: int
    value_shift: int = 0
    default: int = 0
    enum: type[IntEnum] | None = None

    @property
    def mask(self) -> int:
        """In-word mask of the stored bits."""
        return ((1 << self.width) - 1) << self.shift

    @property
    def bit_offset(self) -> int:
        return self.byte_offset * 8 + self.shift

    @property
    def dword(self) -> int:
        return (self.byte_offset * 8 + self.shift) // 32

    @property
    def dword_shift(self) -> int:
        return (self.byte_offset * 8 + self.shift) % 32

    @property
    def max_value(self) -> int:
        """Largest value the field accepts (for addresses: the largest aligned address)."""
        return ((1 << self.width) - 1) << self.value_shift

    @property
    def value_mask(self) -> int:
        """Bits a valid value may have set (``value & ~value_mask`` must be 0)."""
        return ((1 << self.width) - 1) << self.value_shift

    @property
    def reserved(self) -> bool:
        return self.name.startswith(("rsvdz", "rsvdp", "rsvdo"))

    @property
    def is_address(self) -> bool:
        return (
            bool(self.value_shift)
            or "pointer" in self.name
            or ("address" in self.name and self.width >= 32)
        )


@dataclass
class _Word:
    name: str
    byte_offset: int
    size: int
    bitfield: bool
    fields: list[Field]


def _unwrap_named(con: Construct) -> tuple[str | None, str, Construct]:
    name: str | None = None
    doc = ""
    while isinstance(con, Renamed):
        name = name or con.name
        doc = doc or (con.docs or "")
        con = con.subcon
    return name, doc, con


def _unwrap_modifiers(con: Construct) -> tuple[Construct, int, type[IntEnum] | None, int]:
    """Strip Default / Enum / AlignedAddress: (base, default, enum class, value_shift)."""
    default = 0
    enum: type[IntEnum] | None = None
    value_shift = 0
    while True:
        if isinstance(con, Default):
            if callable(con.value):
                raise LayoutError("Default with a context lambda is not supported")
            default = int(con.value)
            con = con.subcon
        elif isinstance(con, Enum):
            enum = getattr(con, "_xhci_enum", None)
            con = con.subcon
        elif isinstance(con, AlignedAddress):
            value_shift = con.align_bits
            con = con.subcon
        elif isinstance(con, Renamed):
            con = con.subcon
        else:
            return con, default, enum, value_shift


def enum_field(subcon: Construct, enum: type[IntEnum]) -> Enum:
    """``Enum(subcon, enum)`` that remembers its IntEnum class (for renderings)."""
    con = Enum(subcon, enum)
    con._xhci_enum = enum
    return con


def _is_bitfield_word(con: Construct) -> Struct | None:
    if (
        isinstance(con, Transformed)
        and con.decodefunc is swapbytes
        and isinstance(con.subcon, Transformed)
        and con.subcon.decodefunc is bytes2bits
        and isinstance(con.subcon.subcon, Struct)
    ):
        return con.subcon.subcon
    return None


def _walk(layout_name: str, top: Struct) -> list[_Word]:
    if not isinstance(top, Struct):
        raise LayoutError(f"{layout_name}: a layout must be a construct Struct")
    words: list[_Word] = []
    offset = 0
    seen: set[str] = set()

    def add(f: Field) -> None:
        if f.name in seen:
            raise LayoutError(f"{layout_name}: duplicate field name {f.name!r}")
        seen.add(f.name)

    for sub in top.subcons:
        wname, wdoc, inner = _unwrap_named(sub)
        if wname is None:
            raise LayoutError(f"{layout_name}: every word must be named (at byte {offset})")
        bits = _is_bitfield_word(inner)
        if bits is not None:
            size = inner.sizeof()
            if size not in _FMT_BY_SIZE:
                raise LayoutError(f"{layout_name}.{wname}: bit-field word of {size} bytes")
            cursor = size * 8
            fields: list[Field] = []
            for bsub in bits.subcons:
                fname, fdoc, fcon = _unwrap_named(bsub)
                if fname is None:
                    raise LayoutError(f"{layout_name}.{wname}: unnamed bits (name reserved bits)")
                base, default, enum, vshift = _unwrap_modifiers(fcon)
                if not isinstance(base, BitsInteger) or base.signed or base.swapped:
                    raise LayoutError(f"{layout_name}.{fname}: only unsigned BitsInteger fields")
                width = base.length
                if not isinstance(width, int) or width <= 0:
                    raise LayoutError(f"{layout_name}.{fname}: width must be a positive int")
                cursor -= width
                f = Field(fname, fdoc, offset, size, cursor, width, vshift, default, enum)
                add(f)
                fields.append(f)
            if cursor != 0:
                raise LayoutError(f"{layout_name}.{wname}: bits do not cover the word exactly")
            words.append(_Word(wname, offset, size, True, fields))
        else:
            base, default, enum, vshift = _unwrap_modifiers(inner)
            if not isinstance(base, FormatField) or base.fmtstr not in (
                "<B",
                "<H",
                "<I",
                "<L",
                "<Q",
            ):
                raise LayoutError(
                    f"{layout_name}.{wname}: unsupported construct {type(base).__name__} "
                    "(use a ByteSwapped(BitStruct) word or Int8ul/16ul/32ul/64ul)"
                )
            size = base.length
            width = size * 8 - vshift
            f = Field(wname, wdoc, offset, size, vshift, width, vshift, default, enum)
            add(f)
            words.append(_Word(wname, offset, size, False, [f]))
        offset += size
    if offset != top.sizeof():
        raise LayoutError(f"{layout_name}: size mismatch {offset} != {top.sizeof()}")
    return words


def _extract(word_var: str, f: Field) -> str:
    """Source of the expression reading field ``f`` out of word variable ``word_var``."""
    raw_mask = (1 << f.width) - 1
    if f.value_shift == f.shift:
        if f.shift == 0 and f.width == f.word_size * 8:
            return word_var
        return f"({word_var} & {f.mask:#x})"
    if f.shift + f.width == f.word_size * 8:
        expr = f"({word_var} >> {f.shift})" if f.shift else word_var
    elif f.shift == 0:
        expr = f"({word_var} & {raw_mask:#x})"
    else:
        expr = f"(({word_var} >> {f.shift}) & {raw_mask:#x})"
    if f.value_shift:
        expr = f"({expr} << {f.value_shift})"
    return expr


def _insert(f: Field) -> str:
    """Source of the (already range-checked) field value placed at its position in its word."""
    if f.value_shift == f.shift:
        return f.name
    if f.value_shift:
        return f"(({f.name} >> {f.value_shift}) << {f.shift})"
    return f"({f.name} << {f.shift})" if f.shift else f.name


class Layout:
    """A construct declaration plus the fast codec and mask table derived from it.

    ``parse(buf, offset=0) -> dict[str, int]`` (flat), ``build(**fields) -> bytes`` (unspecified
    fields take their ``Default`` or 0), ``pack_into(buf, offset, **fields)``. Values are plain
    ints (enum fields too: compare with ``TRBType.Normal`` etc.). Out-of-range or misaligned
    values, unknown field names and short buffers raise :class:`LayoutError`.

    ``build``/``pack_into`` take the non-reserved fields on the generated fast path; passing a
    reserved field (``rsvdz*``/``rsvdp*``/``rsvdo*``, e.g. a model injecting an RsvdZ violation)
    switches to a table-driven path that gives the same bytes. ``source`` holds the generated
    Python source for inspection.
    """

    def __init__(self, name: str, construct: Struct, *, abbrev: Mapping[str, str] | None = None):
        self.name = name
        self.construct = construct
        self.size: int = construct.sizeof()
        self._words = _walk(name, construct)
        self.fields: dict[str, Field] = {f.name: f for w in self._words for f in w.fields}
        #: short display names used by :meth:`render` (e.g. ``data_buffer_pointer`` -> ``ptr``)
        self.abbrev: dict[str, str] = dict(abbrev or {})
        self._struct = struct.Struct("<" + "".join(_FMT_BY_SIZE[w.size] for w in self._words))
        self.parse: Callable[..., dict[str, int]]
        self.build: Callable[..., bytes]
        self.pack_into: Callable[..., None]
        self._readers: dict[tuple[str, ...], Callable[..., tuple[int, ...]]] = {}
        self._generate()

    # -- code generation -------------------------------------------------------------------
    def _generate(self) -> None:
        words = self._words
        wvars = [f"w{i}" for i in range(len(words))]
        fields = list(self.fields.values())
        lines: list[str] = []
        unpack_target = ", ".join(wvars) + ("," if len(wvars) == 1 else "")
        lines.append("def parse(buf, offset=0):")
        lines.append("    try:")
        lines.append(f"        {unpack_target} = _unpack_from(buf, offset)")
        lines.append("    except _struct_error as exc:")
        lines.append("        _short(buf, offset, exc)")
        lines.append("    return {")
        for wv, w in zip(wvars, words, strict=True):
            for f in w.fields:
                lines.append(f"        {f.name!r}: {_extract(wv, f)},")
        lines.append("    }")

        # build/pack_into take the non-reserved fields as keyword parameters (the fast path);
        # reserved fields (rare: models building RsvdZ violations) and unknown names arrive in
        # **_extra and take the slow, table-driven path, which checks the names.
        fast = [f for f in fields if not f.reserved]
        params = "".join(f"{f.name}={f.default}, " for f in fast)
        # Range checks. A field at the top of its word needs none: a too-large or negative value
        # makes the whole word out of range for struct, which raises struct.error (turned into a
        # LayoutError below). The others get one check per distinct value mask: OR-ing in-range
        # non-negative values stays in range and any negative value makes the OR negative, so
        # (a | b | c) & ~mask catches every bad value of the group.
        groups: dict[int, list[str]] = {}
        for f in fast:
            if f.shift + f.width == f.word_size * 8 and not f.value_shift:
                continue
            groups.setdefault(f.value_mask, []).append(f.name)
        check = " | ".join(
            f"{names[0]} & {~vmask:#x}"
            if len(names) == 1
            else f"(({' | '.join(names)}) & {~vmask:#x})"
            for vmask, names in groups.items()
        )
        packed = []
        for w in words:
            parts = [_insert(f) for f in w.fields if not f.reserved]
            packed.append(" | ".join(parts) if parts else "0")
        names = "".join(f", {f.name}={f.name}" for f in fast)
        for fn, sig, call, buf in (
            ("build", "", "return _pack(", "None, 0"),
            ("pack_into", "buf, offset, ", "_pack_into(buf, offset, ", "buf, offset"),
        ):
            lines.append(f"def {fn}({sig}*, {params}**_extra):")
            lines.append("    if _extra:")
            lines.append(f"        return _slow_build({buf}, _extra{names})")
            lines.append("    try:")
            if check:
                lines.append(f"        if {check}:")
                lines.append(f"            _build_error({buf}{names})")
            lines.append(f"        {call}{', '.join(packed)})")
            lines.append("    except (TypeError, _struct_error):")
            lines.append(f"        _build_error({buf}{names})")
        source = "\n".join(lines) + "\n"
        namespace: dict[str, Any] = {
            "_unpack_from": self._struct.unpack_from,
            "_pack": self._struct.pack,
            "_pack_into": self._struct.pack_into,
            "_struct_error": struct.error,
            "_short": self._short,
            "_build_error": self._build_error,
            "_slow_build": self._slow_build,
        }
        exec(compile(source, f"<layout {self.name}>", "exec"), namespace)
        self.source = source
        self.parse = namespace["parse"]
        self.build = namespace["build"]
        self.pack_into = namespace["pack_into"]

    def reader(self, *names: str) -> Callable[..., tuple[int, ...]]:
        """``read(buf, offset=0)``: the fields ``names`` as a tuple, in that order, generated
        from the same field table as :meth:`parse` (for a hot loop that needs a few fields of
        every TRB and not :meth:`parse`'s dict). Short buffers raise :class:`LayoutError`."""
        key = tuple(names)
        cached = self._readers.get(key)
        if cached is not None:
            return cached
        unknown = [n for n in names if n not in self.fields]
        if unknown or not names:
            raise LayoutError(f"{self.name}: reader of unknown field(s) {unknown or '(none)'}")
        wvars = {id(w): f"w{i}" for i, w in enumerate(self._words)}
        word_of = {f.name: wvars[id(w)] for w in self._words for f in w.fields}
        unpack_target = ", ".join(wvars.values()) + ("," if len(wvars) == 1 else "")
        parts = ", ".join(_extract(word_of[n], self.fields[n]) for n in names)
        source = (
            "def read(buf, offset=0):\n"
            "    try:\n"
            f"        {unpack_target} = _unpack_from(buf, offset)\n"
            "    except _struct_error as exc:\n"
            "        _short(buf, offset, exc)\n"
            f"    return ({parts},)\n"
        )
        namespace: dict[str, Any] = {
            "_unpack_from": self._struct.unpack_from,
            "_struct_error": struct.error,
            "_short": self._short,
        }
        exec(compile(source, f"<layout {self.name} reader>", "exec"), namespace)
        read: Callable[..., tuple[int, ...]] = namespace["read"]
        self._readers[key] = read
        return read

    def _short(self, buf: Any, offset: int, exc: Exception) -> None:
        try:
            have = len(buf) - offset
        except TypeError:
            raise LayoutError(f"{self.name}: cannot parse {type(buf).__name__}") from None
        raise LayoutError(
            f"{self.name} needs {self.size} bytes at offset {offset}, buffer has {have}"
        ) from exc

    def _unknown_fields(self, unknown: Mapping[str, Any]) -> None:
        raise LayoutError(f"{self.name} has no field(s) {sorted(unknown)}")

    def _slow_build(
        self, buf: Any, offset: int, extra: Mapping[str, Any], **values: Any
    ) -> bytes | None:
        """Build with reserved fields set (or report unknown names), from the mask table."""
        unknown = set(extra) - set(self.fields)
        if unknown:
            self._unknown_fields(dict.fromkeys(unknown))
        values.update(extra)
        self._range_error(**values)
        value = 0
        for name, v in values.items():
            f = self.fields[name]
            value |= (v >> f.value_shift) << f.bit_offset
        data = value.to_bytes(self.size, "little")
        if buf is None:
            return data
        if offset < 0 or len(buf) - offset < self.size:
            raise LayoutError(
                f"{self.name} needs {self.size} bytes at offset {offset}, buffer has "
                f"{len(buf) - offset}"
            )
        buf[offset : offset + self.size] = data
        return None

    def _build_error(self, buf: Any, offset: int, **values: Any) -> None:
        self._range_error(**values)  # raises for any bad value
        have = len(buf) - offset if buf is not None else 0
        raise LayoutError(
            f"{self.name} needs {self.size} bytes at offset {offset}, buffer has {have}"
        )

    def _range_error(self, **values: Any) -> None:
        for name, v in values.items():
            f = self.fields[name]
            if not isinstance(v, int):
                raise LayoutError(f"{self.name}.{name} must be an int, got {type(v).__name__}")
            if v < 0 or v & ~f.value_mask:
                what = "aligned value in" if f.value_shift else "value in"
                raise LayoutError(
                    f"{self.name}.{name} = {v:#x} out of range ({what} 0..{f.max_value:#x}, "
                    f"{f.width} bits)"
                )
        if not values:
            raise LayoutError(f"{self.name}: no field values")

    # -- whole-value helpers (registers) ---------------------------------------------------
    def decode(self, value: int) -> dict[str, int]:
        """Fields of a register value (the whole layout read as one little-endian integer)."""
        if not 0 <= value < 1 << (8 * self.size):
            raise LayoutError(f"{self.name}: value {value:#x} does not fit {self.size} bytes")
        return self.parse(value.to_bytes(self.size, "little"))

    def encode(self, **fields: int) -> int:
        """The register value with these fields (others: default or 0)."""
        return int.from_bytes(self.build(**fields), "little")

    def get(self, value: int, name: str) -> int:
        """One field of a register value (mask table lookup)."""
        f = self.field(name)
        return ((value >> f.bit_offset) & ((1 << f.width) - 1)) << f.value_shift

    def replace(self, value: int, **fields: int) -> int:
        """``value`` with the given fields replaced (read-modify-write helper)."""
        for name, v in fields.items():
            f = self.field(name)
            if not isinstance(v, int) or v < 0 or v & ~f.value_mask:
                self._range_error(**{name: v})
            value = (value & ~(((1 << f.width) - 1) << f.bit_offset)) | (
                (v >> f.value_shift) << f.bit_offset
            )
        return value

    @property
    def words(self) -> list[tuple[str, int, int]]:
        """The declared words as ``(name, byte_offset, size)``, in order."""
        return [(w.name, w.byte_offset, w.size) for w in self._words]

    def numpy_dtype(self) -> Any:
        """A numpy structured dtype with one little-endian unsigned field per word (for
        vectorised scans of arrays of this layout)."""
        return np.dtype([(w.name, f"<u{w.size}") for w in self._words])

    def field(self, name: str) -> Field:
        try:
            return self.fields[name]
        except KeyError:
            raise LayoutError(f"{self.name} has no field {name!r}") from None

    def mask_table(self) -> list[dict[str, int | str]]:
        """The mask table as plain rows (for docs, models and other languages)."""
        return [
            {
                "name": f.name,
                "byte_offset": f.byte_offset,
                "word_size": f.word_size,
                "dword": f.dword,
                "dword_shift": f.dword_shift,
                "shift": f.shift,
                "width": f.width,
                "mask": f.mask,
                "value_shift": f.value_shift,
            }
            for f in self.fields.values()
        ]

    # -- construct reference path (tests, benchmark) -----------------------------------------
    def construct_parse(
        self, buf: bytes | bytearray | memoryview, offset: int = 0
    ) -> dict[str, int]:
        """Parse with construct itself, flattened like :meth:`parse` (slow reference)."""
        data = bytes(buf[offset : offset + self.size])
        if len(data) < self.size:
            raise LayoutError(f"{self.name} needs {self.size} bytes, got {len(data)}")
        parsed = self.construct.parse(data)
        out: dict[str, int] = {}
        for w in self._words:
            if w.bitfield:
                sub = parsed[w.name]
                for f in w.fields:
                    out[f.name] = _plain_int(sub[f.name])
            else:
                out[w.name] = _plain_int(parsed[w.name])
        return out

    def construct_build(self, **fields: int) -> bytes:
        """Build with construct itself from flat fields (slow reference)."""
        unknown = set(fields) - set(self.fields)
        if unknown:
            self._unknown_fields(dict.fromkeys(unknown))
        nested: dict[str, Any] = {}
        for w in self._words:
            if w.bitfield:
                nested[w.name] = {f.name: fields.get(f.name, f.default) for f in w.fields}
            else:
                f = w.fields[0]
                nested[w.name] = fields.get(f.name, f.default)
        data: bytes = self.construct.build(nested)
        return data

    # -- rendering ---------------------------------------------------------------------------
    def render(
        self, fields: Mapping[str, int], *, title: str | None = None, skip: tuple[str, ...] = ()
    ) -> str:
        """One line: ``Title name=value FLAG ...``. Enum fields by name, address fields in hex,
        set one-bit flags by name, ``C`` (cycle) always as ``C=0/1``; zero reserved fields and
        zero multi-bit fields are left out."""
        parts = [title if title is not None else self.name]
        for f in self.fields.values():
            if f.name in skip or f.name not in fields:
                continue
            v = fields[f.name]
            label = self.abbrev.get(f.name, f.name)
            if f.reserved:
                if v:
                    parts.append(f"{label}={v:#x}")
            elif f.name == "C":
                parts.append(f"C={v}")
            elif f.width == 1 and not f.value_shift:
                if v:
                    parts.append(label)
            elif f.enum is not None:
                try:
                    parts.append(f"{label}={f.enum(v).name}")
                except ValueError:
                    parts.append(f"{label}={v}")
            elif f.is_address:
                parts.append(f"{label}={format_hex(v)}")
            elif v:
                parts.append(f"{label}={v}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"Layout({self.name!r}, {self.size} bytes, {len(self.fields)} fields)"


def _plain_int(v: Any) -> int:
    if isinstance(v, EnumIntegerString):
        return int(v.intvalue)
    if isinstance(v, bool):
        return int(v)
    return int(v)
