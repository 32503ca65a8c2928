"""PC -> ``function+0xoff`` and ``file.c:line`` for a linked image.

Functions come from the symbol table (locals included); lines from the DWARF line programs
(pyelftools; the loader hands over the file with its symbol values set to the layout, so the
line table's addresses are runtime addresses, even for ``-ffunction-sections`` objects). Without
DWARF, :meth:`SourceMap.source` is ``None`` and reports fall back to ``function+offset``.
Lookups are cached: the MMIO hook asks for the same few PCs over and over. The parsed line
table is cached too, per image content (a pure function of the bytes and the bias): every
Machine of the same image shares it instead of decoding the DWARF again.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass

from dbc_harness.drivers.native.elf import LinkedImage, Symbol
from elftools.common.exceptions import DWARFError, ELFError
from elftools.elf.elffile import ELFFile


@dataclass(frozen=True)
class SourceLine:
    """A line of C source: ``path`` as the compiler recorded it, ``line`` (1-based)."""

    path: str
    line: int

    @property
    def file(self) -> str:
        return os.path.basename(self.path)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


#: line tables kept (least recently used dropped first): a few images per test session
LINE_CACHE_SIZE = 16

_Rows = tuple[tuple[int, int, SourceLine | None], ...]
_line_cache: OrderedDict[tuple[bytes, int], _Rows] = OrderedDict()
_line_cache_lock = threading.Lock()


class SourceMap:
    """Address -> function and source line for one image, plus extra named ranges (stubs...)."""

    def __init__(self, image: LinkedImage | None = None) -> None:
        self._funcs: list[Symbol] = []
        self._starts: list[int] = []
        self._rows: list[tuple[int, int, SourceLine | None]] = []  # (start, end, line)
        self._row_starts: list[int] = []
        self._named: list[tuple[int, int, str]] = []
        self._cache: dict[int, tuple[str, SourceLine | None]] = {}
        self.has_lines = False
        if image is not None:
            self.add_image(image)

    def add_image(self, image: LinkedImage) -> None:
        self._funcs = sorted(self._funcs + image.functions, key=lambda f: f.address)
        self._starts = [f.address for f in self._funcs]
        rows = _cached_lines(image.debug_bytes, image.debug_bias)
        if rows:
            self.has_lines = True
            self._rows = sorted([*self._rows, *rows])
            self._row_starts = [r[0] for r in self._rows]
        self._cache.clear()

    def add_range(self, start: int, end: int, name: str) -> None:
        """Name a range the image does not describe (binding stubs, the return trampoline)."""
        self._named.append((start, end, name))
        self._cache.clear()

    @staticmethod
    def _read_lines(data: bytes, bias: int) -> list[tuple[int, int, SourceLine | None]]:
        try:
            elf = ELFFile(io.BytesIO(data))
            if not elf.has_dwarf_info():
                return []
            dwarf = elf.get_dwarf_info()
            rows: list[tuple[int, int, SourceLine | None]] = []
            for cu in dwarf.iter_CUs():
                program = dwarf.line_program_for_CU(cu)
                if program is None:
                    continue
                version = program["version"]
                files = program["file_entry"]
                dirs = program["include_directory"]
                prev: tuple[int, SourceLine | None] | None = None
                for entry in program.get_entries():
                    state = entry.state
                    if state is None:
                        continue
                    address = state.address + bias
                    if prev is not None and address > prev[0]:
                        rows.append((prev[0], address, prev[1]))
                    if state.end_sequence:
                        prev = None
                        continue
                    index = state.file if version >= 5 else state.file - 1
                    line: SourceLine | None = None
                    if 0 <= index < len(files) and state.line:
                        fe = files[index]
                        name = _text(fe.name)
                        d = fe.dir_index if version >= 5 else fe.dir_index - 1
                        if not os.path.isabs(name) and 0 <= d < len(dirs):
                            name = os.path.join(_text(dirs[d]), name)
                        line = SourceLine(name, state.line)
                    prev = (address, line)
            return rows
        except (ELFError, DWARFError, KeyError, IndexError, ValueError, AttributeError):
            return []  # unreadable debug info: fall back to function+offset

    # ------------------------------------------------------------------ lookups
    def function(self, pc: int) -> str:
        """``name+0xoff`` (or ``0x...`` outside every known function)."""
        return self.lookup(pc)[0]

    def source(self, pc: int) -> SourceLine | None:
        return self.lookup(pc)[1]

    def lookup(self, pc: int) -> tuple[str, SourceLine | None]:
        hit = self._cache.get(pc)
        if hit is not None:
            return hit
        result = (self._function(pc), self._source(pc))
        if len(self._cache) < 65536:
            self._cache[pc] = result
        return result

    def symbol_at(self, pc: int) -> Symbol | None:
        i = bisect_right(self._starts, pc) - 1
        while i >= 0:
            f = self._funcs[i]
            if f.size == 0 or pc < f.address + f.size:
                return f
            # a sized function that does not reach pc: maybe an enclosing earlier one does
            if i and self._funcs[i - 1].address == f.address:
                i -= 1
                continue
            return None
        return None

    def _function(self, pc: int) -> str:
        for start, end, name in self._named:
            if start <= pc < end:
                return f"{name}+0x{pc - start:x}" if pc != start else name
        f = self.symbol_at(pc)
        if f is None:
            return f"0x{pc:x}"
        return f"{f.name}+0x{pc - f.address:x}"

    def _source(self, pc: int) -> SourceLine | None:
        i = bisect_right(self._row_starts, pc) - 1
        if i >= 0:
            start, end, line = self._rows[i]
            if start <= pc < end:
                return line
        return None


def _cached_lines(data: bytes, bias: int) -> _Rows:
    """:meth:`SourceMap._read_lines`, cached per (SHA-256 of ``data``, ``bias``) in a bounded
    LRU shared by every SourceMap (rows are immutable: tuples of frozen SourceLines)."""
    key = (hashlib.sha256(data).digest(), bias)
    with _line_cache_lock:
        rows = _line_cache.get(key)
        if rows is not None:
            _line_cache.move_to_end(key)
            return rows
    rows = tuple(SourceMap._read_lines(data, bias))
    with _line_cache_lock:
        _line_cache[key] = rows
        _line_cache.move_to_end(key)
        while len(_line_cache) > LINE_CACHE_SIZE:
            _line_cache.popitem(last=False)
    return rows


def clear_line_cache() -> None:
    """Forget every cached line table (benchmarks measure a first load with it)."""
    with _line_cache_lock:
        _line_cache.clear()


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
