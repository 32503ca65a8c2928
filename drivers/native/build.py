"""Build the reference C DbC driver (and its deliberate mistakes) at test time.

Nothing compiled is committed: :func:`build_reference` compiles ``reference/dbc.c`` with the
engine's freestanding flags (:data:`~dbc_harness.drivers.native.cc.FREESTANDING`, cached by a
hash of the sources, flags and compiler in ``~/.cache/dbc-harness/native``) and ``-D``
switches: configuration (``DBC_IN_BUF_SIZE=65536``...) and mistakes (:data:`MUTATIONS`, each a
``DBC_MUT_<NAME>`` switch). :func:`site_line` finds the line of a ``@site:NAME`` marker in the
source, so tests assert source lines without hard-coding numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

from dbc_harness.drivers.native.cc import compile_object
from dbc_harness.drivers.native.errors import NativeError

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
REFERENCE_SOURCE = REFERENCE_DIR / "dbc.c"
REFERENCE_ENV = REFERENCE_DIR / "env.py"
#: kernels build with these too (the register macros cast between u32 and u64 pointers)
EXTRA_FLAGS = ("-fno-strict-aliasing", "-Wall", "-Wextra", "-Wno-unused-parameter")

#: deliberate mistakes compiled from the reference driver: name -> what goes wrong
MUTATIONS: dict[str, str] = {
    "PACKED_REGS": "register struct without the reserved dwords at 0x0C and 0x2C",
    "NO_DCCP": "DCCP never written",
    "ASCII_STRINGS": "string descriptors in ASCII instead of UTF-16LE",
    "BITFIELD_MMIO": "DCCTRL.DCE set through a packed bitfield (8-bit MMIO)",
    "DB_TARGET": "doorbell written with the device context index (2/3), not DB Target 0/1",
    "ERST_SIZE_0": "DCERSTSZ written as 0",
    "STR_BLENGTH": "info context string lengths without bLength/bDescriptorType",
    "STRING0_EMPTY": "String0 without a LANGID",
    "EP_MPS": "endpoint contexts with Max Packet Size 512",
    "EP_TYPE": "OUT and IN endpoint context EP Types swapped",
    "EP_BURST": "endpoint contexts with Max Burst 0 instead of DCCTRL's Debug Max Burst",
    "MMIO64_HIGH_FIRST": "64-bit registers written high dword first",
    "CTX_MISALIGNED": "DCCP pointing 8 bytes into the context allocation",
    "EVENT_SEGMENT_SIZE": "ERST entry with a segment size of 8 TRBs",
    "ERDP_PAST_END": "DCERDP written one past the event ring segment when it wraps",
    "LINK_NO_TOGGLE": "Link TRB without Toggle Cycle (and the producer never toggles)",
    "TRB_CROSSES_64K": "OUT data split every 64 KiB of data instead of at 64 KiB lines",
    "NO_BUS_MASTER": "PCI Command Bus Master left off",
}


class UnknownMutation(NativeError):
    """A mutation name that is not in :data:`MUTATIONS`."""


class UnknownSite(NativeError):
    """No ``@site:NAME`` marker (or more than one) in the source."""


def build_reference(
    *,
    mutations: Iterable[str] = (),
    config: Mapping[str, int | str] | None = None,
    source: Path = REFERENCE_SOURCE,
) -> Path:
    """The reference driver's object file (compiled now or from the cache)."""
    defines: list[str] = []
    for name in mutations:
        if name not in MUTATIONS:
            raise UnknownMutation(f"no mutation {name!r}; known: {', '.join(MUTATIONS)}")
        defines.append(f"DBC_MUT_{name}")
    for key, value in sorted((config or {}).items()):
        defines.append(f"{key}={value}")
    tag = "-".join(m.lower() for m in mutations)
    return compile_object(
        source,
        extra_flags=EXTRA_FLAGS,
        defines=defines,
        name=f"dbc-{tag}" if tag else "dbc",
    )


@cache
def _sites(source: Path) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for number, line in enumerate(source.read_text().splitlines(), start=1):
        for name in re.findall(r"@site:([A-Za-z0-9_-]+)", line):
            found.setdefault(name, []).append(number)
    return found


def site_line(name: str, source: Path = REFERENCE_SOURCE) -> int:
    """Line number of the ``/* @site:NAME */`` marker in ``source``."""
    lines = _sites(source).get(name, [])
    if len(lines) != 1:
        raise UnknownSite(f"{len(lines)} markers @site:{name} in {source.name} (want exactly 1)")
    return lines[0]
