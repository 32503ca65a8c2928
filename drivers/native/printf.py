"""C printf-style formatting for log bindings (C11 7.21.6.1).

Conversions: ``d i u x X o c s p %`` and ``f F e E g G`` (doubles from the vector registers);
flags ``- + space # 0``; width and precision, also as ``*``; length modifiers ``hh h l ll j z
t L q`` (integers are truncated and sign-extended to the modifier's width: a ``%d`` of
0xFFFFFFFF prints -1). ``%s`` of NULL prints ``(null)`` like glibc and Linux. Unknown
conversions are printed as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_SPEC = re.compile(
    rb"%(?P<flags>[-+ #0]*)(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d*))?"
    rb"(?P<len>hh|h|ll|l|j|z|t|L|q)?(?P<conv>[diouxXcspfFeEgGaA%n])?"
)
_BITS = {b"hh": 8, b"h": 16, b"": 32, b"l": 64, b"ll": 64, b"j": 64, b"z": 64, b"t": 64, b"q": 64}


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def format_printf(
    fmt: bytes,
    next_int: Callable[[], int],
    next_float: Callable[[], float],
    read_cstr: Callable[[int, int | None], bytes],
) -> str:
    """Format ``fmt`` pulling arguments from ``next_int``/``next_float`` (in call order);
    ``read_cstr(address, max_len)`` reads a string argument."""
    out: list[str] = []
    pos = 0
    while True:
        start = fmt.find(b"%", pos)
        if start < 0:
            out.append(fmt[pos:].decode("utf-8", "replace"))
            break
        out.append(fmt[pos:start].decode("utf-8", "replace"))
        m = _SPEC.match(fmt, start)
        assert m is not None  # the pattern matches at least "%"
        conv = m["conv"]
        if conv is None:
            out.append(fmt[start : m.end()].decode("utf-8", "replace"))
            pos = m.end()
            continue
        pos = m.end()
        if conv == b"%":
            out.append("%")
            continue
        flags = m["flags"].decode()
        width_s, prec_s = m["width"], m["prec"]
        width = 0
        if width_s == b"*":
            width = _signed(next_int(), 32)
            if width < 0:
                flags += "-"
                width = -width
        elif width_s:
            width = int(width_s)
        prec: int | None = None
        if prec_s == b"*":
            prec = _signed(next_int(), 32)
            if prec < 0:
                prec = None
        elif prec_s is not None:
            prec = int(prec_s or b"0")
        length = m["len"] or b""
        text = _convert(conv.decode(), flags, prec, length, next_int, next_float, read_cstr)
        if len(text) < width:
            if "-" in flags:
                text = text.ljust(width)
            elif "0" in flags and conv not in b"csp" and (prec is None or conv in b"fFeEgG"):
                sign = text[0] if text[:1] in ("-", "+", " ") else ""
                body = text[len(sign) :]
                prefix = body[:2] if body[:2].lower() == "0x" else ""
                body = body[len(prefix) :]
                text = sign + prefix + body.rjust(width - len(sign) - len(prefix), "0")
            else:
                text = text.rjust(width)
        out.append(text)
    return "".join(out)


def _convert(
    conv: str,
    flags: str,
    prec: int | None,
    length: bytes,
    next_int: Callable[[], int],
    next_float: Callable[[], float],
    read_cstr: Callable[[int, int | None], bytes],
) -> str:
    if conv in "di":
        value = _signed(next_int(), _BITS.get(length, 64))
        digits = str(abs(value))
        if prec is not None:
            digits = digits.rjust(prec, "0") if prec else ("" if value == 0 else digits)
        sign = "-" if value < 0 else ("+" if "+" in flags else (" " if " " in flags else ""))
        return sign + digits
    if conv in "ouxX":
        value = next_int() & ((1 << _BITS.get(length, 64)) - 1)
        base = {"o": "o", "u": "d", "x": "x", "X": "X"}[conv]
        digits = format(value, base)
        if prec is not None:
            digits = digits.rjust(prec, "0") if prec else ("" if value == 0 else digits)
        if "#" in flags and value:
            digits = {"o": "0" + digits, "x": "0x" + digits, "X": "0X" + digits}.get(conv, digits)
        return digits
    if conv == "c":
        return chr(next_int() & 0xFF)
    if conv == "s":
        address = next_int()
        if address == 0:
            return "(null)"
        return read_cstr(address, prec).decode("utf-8", "replace")
    if conv == "p":
        value = next_int()
        return f"0x{value:x}" if value else "(nil)"
    if conv in "fFeEgGaA":
        number = next_float()
        spec = ("+" if "+" in flags else (" " if " " in flags else "")) + (
            "#" if "#" in flags else ""
        )
        if conv in "aA":
            text = number.hex()
            return text.upper() if conv == "A" else text
        return str(format(number, f"{spec}.{6 if prec is None else prec}{conv}"))
    if conv == "n":
        next_int()  # %n writes through a pointer: not supported for logging, consumed
        return ""
    return "%" + conv
