"""The ELF loader: x86-64 relocatable objects (``.o``), executables and shared objects.

Two steps, so the environment can be checked before anything is placed:

1. :func:`parse_elf` reads and checks the file (:class:`ElfFile`): header, sections, symbols,
   the undefined symbols and how they are used (:meth:`ElfFile.undefined`).
2. :meth:`ElfFile.link` places it at ``base`` with the addresses of the undefined symbols and
   returns a :class:`LinkedImage`: segments to map (bytes + permissions), the symbol table with
   absolute addresses, and a GOT when GOT-relative relocations need one.

Relocatable objects: every ``SHF_ALLOC`` section is laid out (alignment honoured) in three page-
aligned groups (code: r-x; read-only data and the GOT: r--; data and bss: rw-), bss zeroed,
``SHN_COMMON`` symbols given room in bss, and the ``.rela*`` sections of loaded sections applied.
Executables (``ET_EXEC``) load their ``PT_LOAD`` segments where they say, shared objects
(``ET_DYN``) at ``base``; their dynamic relocations (RELATIVE, 64, GLOB_DAT, JUMP_SLOT) are applied
and their undefined dynamic symbols bound like an object's.

Relocations (System V ABI, AMD64 supplement, 4.4): 64, PC32, PLT32 (to the symbol itself: bindings
are called directly), 32 (zero-extended), 32S (sign-extended), 16, PC16, 8, PC8, PC64, GOT32,
GOTPCREL, GOTPCRELX, REX_GOTPCRELX, GOTPCREL64, GOTPC32, GOTPC64, GOTOFF64, GOTPLT64, PLTOFF64,
SIZE32, SIZE64 (the GOTPCRELX forms are not relaxed: the GOT slot holds the address). A value
that does not fit its field is :class:`RelocationOverflow`; other types are
:class:`UnsupportedRelocation`, except in ``.eh_frame`` (unwind tables are never read by the
emulator), where they are skipped.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dbc_harness.drivers.native.errors import (
    LayoutConflict,
    MalformedElf,
    NotX86_64Elf,
    RelocationOverflow,
    TruncatedElf,
    UnsupportedRelocation,
)
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import Section, SymbolTableSection

PAGE = 0x1000

# section header flags / types / special indices (ELF gABI)
SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
SHT_NOBITS = 8
SHT_RELA = 4
SHT_REL = 9
SHN_UNDEF = 0
SHN_ABS = 0xFFF1
SHN_COMMON = 0xFFF2
ET_REL, ET_EXEC, ET_DYN = 1, 2, 3
EM_X86_64 = 62
PF_X, PF_W, PF_R = 1, 2, 4

#: memory permissions of a segment (same bits as unicorn's UC_PROT_*)
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4

#: x86-64 relocation type numbers -> names (AMD64 psABI table 4.9)
RELOCATION_NAMES: dict[int, str] = {
    0: "R_X86_64_NONE",
    1: "R_X86_64_64",
    2: "R_X86_64_PC32",
    3: "R_X86_64_GOT32",
    4: "R_X86_64_PLT32",
    5: "R_X86_64_COPY",
    6: "R_X86_64_GLOB_DAT",
    7: "R_X86_64_JUMP_SLOT",
    8: "R_X86_64_RELATIVE",
    9: "R_X86_64_GOTPCREL",
    10: "R_X86_64_32",
    11: "R_X86_64_32S",
    12: "R_X86_64_16",
    13: "R_X86_64_PC16",
    14: "R_X86_64_8",
    15: "R_X86_64_PC8",
    16: "R_X86_64_DTPMOD64",
    17: "R_X86_64_DTPOFF64",
    18: "R_X86_64_TPOFF64",
    19: "R_X86_64_TLSGD",
    20: "R_X86_64_TLSLD",
    21: "R_X86_64_DTPOFF32",
    22: "R_X86_64_GOTTPOFF",
    23: "R_X86_64_TPOFF32",
    24: "R_X86_64_PC64",
    25: "R_X86_64_GOTOFF64",
    26: "R_X86_64_GOTPC32",
    27: "R_X86_64_GOT64",
    28: "R_X86_64_GOTPCREL64",
    29: "R_X86_64_GOTPC64",
    30: "R_X86_64_GOTPLT64",
    31: "R_X86_64_PLTOFF64",
    32: "R_X86_64_SIZE32",
    33: "R_X86_64_SIZE64",
    34: "R_X86_64_GOTPC32_TLSDESC",
    35: "R_X86_64_TLSDESC_CALL",
    36: "R_X86_64_TLSDESC",
    37: "R_X86_64_IRELATIVE",
    38: "R_X86_64_RELATIVE64",
    41: "R_X86_64_GOTPCRELX",
    42: "R_X86_64_REX_GOTPCRELX",
}

#: the linker-defined symbol naming the GOT (GOTPC-style code references it)
GOT_SYMBOL = "_GLOBAL_OFFSET_TABLE_"
#: relocation types that need a GOT slot for their symbol
_GOT_TYPES = frozenset({3, 9, 27, 28, 30, 41, 42})
#: relocation types through which only a call reaches the symbol
_CALL_TYPES = frozenset({4, 7})
#: relocation types relative to the GOT's base (the GOT must exist even without slots)
_GOT_BASE_TYPES = frozenset({25, 26, 29, 31})


def relocation_name(number: int) -> str:
    return RELOCATION_NAMES.get(number, f"R_X86_64_<{number}>")


@dataclass(frozen=True)
class Symbol:
    """A defined symbol with its absolute address once linked."""

    name: str
    address: int
    size: int
    #: "func", "object", "notype", "section", "file", "common", "tls"
    kind: str
    #: "local", "global" or "weak"
    binding: str


@dataclass(frozen=True)
class UndefinedUse:
    """An undefined symbol and how the object uses it."""

    name: str
    #: True when some reference is not a call (a data access or an address taken)
    data: bool
    #: True when some reference is a call (PLT32 or a jump slot)
    call: bool
    weak: bool
    sites: tuple[str, ...]

    @property
    def use(self) -> str:
        return "call+data" if self.call and self.data else ("call" if self.call else "data")


@dataclass
class Segment:
    """Memory to map: ``data`` (its length is the mapped size, page multiple) at ``address``."""

    name: str
    address: int
    data: bytearray
    prot: int

    @property
    def end(self) -> int:
        return self.address + len(self.data)


@dataclass
class LinkedImage:
    """An ELF file placed in memory, relocations applied."""

    path: str
    kind: str  # "relocatable", "executable", "shared"
    segments: list[Segment]
    symbols: dict[str, Symbol]
    #: every function-like symbol (incl. locals), sorted by address: for pc -> function+offset
    functions: list[Symbol]
    #: (address, size) of every loaded code section (executable memory)
    code_ranges: list[tuple[int, int]]
    #: section name -> address (relocatable objects; loaded sections only)
    section_addresses: dict[str, int]
    #: ELF bytes with the symbol table's values patched to absolute addresses (relocatable
    #: objects; pyelftools then relocates DWARF to the layout) or the original bytes
    debug_bytes: bytes
    #: added to DWARF addresses to get runtime addresses (shared objects: the load base)
    debug_bias: int
    entry: int
    got_address: int = 0
    got_size: int = 0
    relocations_applied: dict[str, int] = field(default_factory=dict)

    @property
    def start(self) -> int:
        return min(s.address for s in self.segments) if self.segments else 0

    @property
    def end(self) -> int:
        return max(s.end for s in self.segments) if self.segments else 0


def _align(value: int, alignment: int) -> int:
    if alignment <= 1:
        return value
    return (value + alignment - 1) // alignment * alignment


def _check_header(data: bytes, path: str) -> None:
    """Header checks with named errors, before pyelftools sees the bytes."""
    if len(data) < 4 or data[:4] != b"\x7fELF":
        if len(data) < 4 and b"\x7fELF".startswith(data):
            raise TruncatedElf(f"{path or 'ELF file'}: {len(data)} bytes, not even an ELF magic")
        raise NotX86_64Elf(f"no ELF magic (first bytes {data[:4]!r})", path)
    if len(data) < 20:
        raise TruncatedElf(f"{path or 'ELF file'}: {len(data)} bytes, the ELF header needs 64")
    ei_class, ei_data = data[4], data[5]
    machine = struct.unpack_from("<H" if ei_data == 1 else ">H", data, 18)[0]
    names = {3: "EM_386", 40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV"}
    mname = names.get(machine, f"e_machine {machine}")
    if ei_class != 2:
        cls = {1: "ELFCLASS32"}.get(ei_class, f"EI_CLASS {ei_class}")
        raise NotX86_64Elf(f"{cls}, {mname}", path)
    if ei_data != 1:
        raise NotX86_64Elf(f"big-endian ELF64, {mname}", path)
    if machine != EM_X86_64:
        raise NotX86_64Elf(f"ELF64, {mname}", path)
    if len(data) < 64:
        raise TruncatedElf(f"{path or 'ELF file'}: {len(data)} bytes, the ELF header needs 64")
    e_type, _, _, _, e_phoff, e_shoff = struct.unpack_from("<HHIQQQ", data, 16)
    e_phentsize, e_phnum, e_shentsize, e_shnum, _ = struct.unpack_from("<HHHHH", data, 54)
    if e_type not in (ET_REL, ET_EXEC, ET_DYN):
        raise MalformedElf(f"{path or 'ELF file'}: ELF type {e_type} (not REL, EXEC or DYN)")
    if e_shnum and e_shentsize != 64:
        raise MalformedElf(f"{path or 'ELF file'}: section header size {e_shentsize}, not 64")
    if e_shoff + e_shnum * e_shentsize > len(data):
        raise TruncatedElf(
            f"{path or 'ELF file'}: section headers end at 0x{e_shoff + e_shnum * 64:x}, "
            f"the file at 0x{len(data):x}"
        )
    if e_phnum and e_phoff + e_phnum * e_phentsize > len(data):
        raise TruncatedElf(f"{path or 'ELF file'}: program headers end past the file")
    if e_type == ET_REL and e_shnum == 0:
        raise MalformedElf(f"{path or 'ELF file'}: a relocatable object without sections")
    for i in range(e_shnum):
        sh_type, _, _, sh_offset, sh_size = struct.unpack_from("<IQQQQ", data, e_shoff + 64 * i + 4)
        if sh_type != SHT_NOBITS and sh_type != 0 and sh_offset + sh_size > len(data):
            raise TruncatedElf(
                f"{path or 'ELF file'}: section {i} ends at 0x{sh_offset + sh_size:x}, the file "
                f"at 0x{len(data):x}"
            )


def parse_elf(source: str | Path | bytes, name: str = "") -> ElfFile:
    """Read and check an ELF file (path or bytes). Named errors for what cannot be loaded."""
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
        path = name or "<bytes>"
    else:
        path = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise MalformedElf(f"{path}: cannot read: {exc}") from exc
    _check_header(data, path)
    try:
        return ElfFile(data, path)
    except ELFError as exc:
        raise MalformedElf(f"{path}: {exc}") from exc
    except (struct.error, ValueError, IndexError) as exc:
        raise TruncatedElf(f"{path}: {exc}") from exc


_KINDS = {
    "STT_FUNC": "func",
    "STT_OBJECT": "object",
    "STT_NOTYPE": "notype",
    "STT_SECTION": "section",
    "STT_FILE": "file",
    "STT_COMMON": "common",
    "STT_TLS": "tls",
    "STT_GNU_IFUNC": "func",
}
_BINDS = {"STB_LOCAL": "local", "STB_GLOBAL": "global", "STB_WEAK": "weak"}


@dataclass
class _RawSymbol:
    index: int
    name: str
    value: int
    size: int
    kind: str
    binding: str
    shndx: int


class ElfFile:
    """A checked ELF file, not yet placed. Use :func:`parse_elf`."""

    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.path = path
        self._elf = ELFFile(io.BytesIO(data))
        e_type = self._elf["e_type"]
        self.kind = {"ET_REL": "relocatable", "ET_EXEC": "executable", "ET_DYN": "shared"}.get(
            e_type, ""
        )
        if not self.kind:
            raise MalformedElf(f"{path}: ELF type {e_type}")
        self.sections: list[Section] = list(self._elf.iter_sections())
        self.has_dwarf = any(s.name.startswith(".debug_line") for s in self.sections)
        symtab = self._elf.get_section_by_name(".symtab")
        dynsym = self._elf.get_section_by_name(".dynsym")
        self._symtab = symtab if isinstance(symtab, SymbolTableSection) else None
        self._dynsym = dynsym if isinstance(dynsym, SymbolTableSection) else None
        self.symbols = self._read_symbols(self._symtab)
        self.dynamic_symbols = self._read_symbols(self._dynsym)

    # ------------------------------------------------------------------ reading
    def _read_symbols(self, table: SymbolTableSection | None) -> list[_RawSymbol]:
        if table is None:
            return []
        out = []
        try:
            for i, sym in enumerate(table.iter_symbols()):
                shndx = sym["st_shndx"]
                if isinstance(shndx, str):
                    shndx = {"SHN_UNDEF": 0, "SHN_ABS": SHN_ABS, "SHN_COMMON": SHN_COMMON}.get(
                        shndx, 0xFFFF
                    )
                out.append(
                    _RawSymbol(
                        i,
                        sym.name,
                        sym["st_value"],
                        sym["st_size"],
                        _KINDS.get(sym["st_info"]["type"], "notype"),
                        _BINDS.get(sym["st_info"]["bind"], "global"),
                        shndx,
                    )
                )
        except (ELFError, struct.error, UnicodeDecodeError, IndexError) as exc:
            raise MalformedElf(f"{self.path}: symbol table: {exc}") from exc
        return out

    def _relocation_sections(self) -> Iterable[tuple[Section, Section]]:
        """(relocation section, section it applies to) for every REL/RELA section."""
        for sec in self.sections:
            if sec["sh_type"] in ("SHT_RELA", "SHT_REL"):
                target_index = sec["sh_info"]
                if self.kind != "relocatable" and sec["sh_flags"] & SHF_ALLOC:
                    yield sec, sec  # dynamic relocations: addresses are virtual addresses
                    continue
                if not 0 < target_index < len(self.sections):
                    continue
                yield sec, self.sections[target_index]

    def _relocations(self, sec: Section) -> list[tuple[int, int, int, int]]:
        """(offset, type, symbol index, addend or None-as-0) of one relocation section."""
        out = []
        is_rela = sec["sh_type"] == "SHT_RELA"
        try:
            # a SHT_REL/SHT_RELA section: pyelftools gives it iter_relocations at run time
            for rel in sec.iter_relocations():  # type: ignore[attr-defined]
                addend = rel["r_addend"] if is_rela else 0
                out.append((rel["r_offset"], rel["r_info_type"], rel["r_info_sym"], addend))
        except (ELFError, struct.error) as exc:
            raise MalformedElf(f"{self.path}: {sec.name}: {exc}") from exc
        return out

    def undefined(self) -> dict[str, UndefinedUse]:
        """Every undefined (non-empty) symbol the object references, with its uses."""
        if self.kind == "relocatable":
            table, raw = self._symtab, self.symbols
        else:
            table, raw = self._dynsym, self.dynamic_symbols
        undefined = {
            s.index: s for s in raw if s.shndx == SHN_UNDEF and s.name and s.name != GOT_SYMBOL
        }
        uses: dict[str, dict[str, object]] = {}
        for s in undefined.values():
            uses[s.name] = {"call": False, "data": False, "weak": s.binding == "weak", "sites": []}
        if table is not None:
            for rsec, target in self._relocation_sections():
                if rsec["sh_link"] != self.sections.index(table):
                    continue
                for offset, rtype, symidx, _ in self._relocations(rsec):
                    sym = undefined.get(symidx)
                    if sym is None:
                        continue
                    u = uses[sym.name]
                    u["call" if rtype in _CALL_TYPES else "data"] = True
                    sites = u["sites"]
                    assert isinstance(sites, list)
                    if len(sites) < 3:
                        sites.append(f"{target.name}+0x{offset:x}")
        return {
            name: UndefinedUse(
                name,
                data=bool(u["data"]),
                call=bool(u["call"]),
                weak=bool(u["weak"]),
                sites=tuple(u["sites"]),  # type: ignore[arg-type]  # the list[str] built above
            )
            for name, u in uses.items()
        }

    def defined_names(self) -> set[str]:
        raw = self.symbols or self.dynamic_symbols
        return {s.name for s in raw if s.shndx != SHN_UNDEF and s.name}

    # ------------------------------------------------------------------ linking
    def link(
        self,
        base: int,
        resolve: Mapping[str, int],
        reserved: Iterable[tuple[int, int]] = (),
    ) -> LinkedImage:
        """Place the file at ``base`` (relocatable / shared; executables load where they say),
        undefined symbol ``name`` at ``resolve[name]`` (weak ones may be missing: 0).
        ``reserved``: (start, end) ranges the image must not overlap (LayoutConflict)."""
        if self.kind == "relocatable":
            image = self._link_relocatable(base, resolve)
        else:
            image = self._link_loaded(base, resolve)
        for seg in image.segments:
            for start, end in reserved:
                if seg.address < end and start < seg.end:
                    raise LayoutConflict(
                        f"{self.path}: {seg.name} at 0x{seg.address:x}-0x{seg.end:x} overlaps "
                        f"the emulator's region 0x{start:x}-0x{end:x}"
                    )
        return image

    def _link_relocatable(self, base: int, resolve: Mapping[str, int]) -> LinkedImage:
        # 1. lay out: code, read-only (+ GOT), writable; each group page aligned
        groups: dict[str, list[int]] = {"text": [], "rodata": [], "data": []}
        for i, sec in enumerate(self.sections):
            flags = sec["sh_flags"]
            if not flags & SHF_ALLOC or sec["sh_type"] in ("SHT_NULL", "SHT_GROUP"):
                continue
            if flags & SHF_EXECINSTR:
                groups["text"].append(i)
            elif flags & SHF_WRITE:
                groups["data"].append(i)
            else:
                groups["rodata"].append(i)
        # GOT slots: one per symbol reached through a GOT-relative relocation
        got_symbols: list[int] = []
        needs_got = any(s.name == GOT_SYMBOL for s in self.symbols)
        relocs: list[tuple[Section, Section, list[tuple[int, int, int, int]]]] = []
        for rsec, target in self._relocation_sections():
            if not target["sh_flags"] & SHF_ALLOC:
                continue  # debug sections: pyelftools relocates those when it reads DWARF
            entries = self._relocations(rsec)
            relocs.append((rsec, target, entries))
            for _, rtype, symidx, _ in entries:
                if rtype in _GOT_TYPES and symidx not in got_symbols:
                    got_symbols.append(symidx)
                if rtype in _GOT_BASE_TYPES:
                    needs_got = True
        commons = [s for s in self.symbols if s.shndx == SHN_COMMON]

        addresses: dict[int, int] = {}
        segments: list[Segment] = []
        cursor = _align(base, PAGE)
        got_address = 0
        common_addresses: dict[int, int] = {}
        for group, prot in (
            ("text", PROT_READ | PROT_EXEC),
            ("rodata", PROT_READ),
            ("data", PROT_READ | PROT_WRITE),
        ):
            start = cursor
            offset = 0
            placed: list[tuple[int, Section]] = []
            for i in groups[group]:
                sec = self.sections[i]
                offset = _align(offset, max(1, sec["sh_addralign"]))
                addresses[i] = start + offset
                placed.append((offset, sec))
                offset += sec["sh_size"]
            if group == "rodata" and (got_symbols or needs_got):
                offset = _align(offset, 8)
                got_address = start + offset
                offset += 8 * max(1, len(got_symbols))
            if group == "data":
                for s in commons:
                    offset = _align(offset, max(1, s.value))  # st_value = alignment
                    common_addresses[s.index] = start + offset
                    offset += s.size
            if offset == 0:
                continue
            size = _align(offset, PAGE)
            buf = bytearray(size)
            for off, sec in placed:
                if sec["sh_type"] != "SHT_NOBITS" and sec["sh_size"]:
                    buf[off : off + sec["sh_size"]] = sec.data()
            segments.append(Segment(group, start, buf, prot))
            cursor = start + size + PAGE  # an unmapped page between groups

        # 2. symbols -> absolute addresses
        sym_addr: dict[int, int] = {}
        symbols: dict[str, Symbol] = {}
        functions: list[Symbol] = []
        for s in self.symbols:
            if s.shndx == SHN_UNDEF:
                if s.name == GOT_SYMBOL:
                    sym_addr[s.index] = got_address
                elif s.name:
                    sym_addr[s.index] = resolve.get(s.name, 0)
                continue
            if s.shndx == SHN_ABS:
                addr = s.value
            elif s.shndx == SHN_COMMON:
                addr = common_addresses[s.index]
            elif s.shndx in addresses:
                addr = addresses[s.shndx] + s.value
            else:
                continue  # a symbol in a section that is not loaded (debug, comment)
            sym_addr[s.index] = addr
            if s.kind in ("section", "file") or not s.name:
                continue
            sym = Symbol(s.name, addr, s.size, s.kind, s.binding)
            if s.binding != "local" or s.name not in symbols:
                symbols[s.name] = sym
            in_code = s.shndx in addresses and bool(
                self.sections[s.shndx]["sh_flags"] & SHF_EXECINSTR
            )
            if s.kind == "func" or (s.kind == "notype" and in_code):
                functions.append(sym)
        functions.sort(key=lambda f: f.address)

        # 3. relocations
        by_address = {seg.address: seg for seg in segments}

        def locate(address: int, width: int) -> tuple[bytearray, int]:
            for seg in by_address.values():
                if seg.address <= address and address + width <= seg.end:
                    return seg.data, address - seg.address
            raise MalformedElf(f"{self.path}: relocation at 0x{address:x} outside the image")

        got_slot = {symidx: got_address + 8 * n for n, symidx in enumerate(got_symbols)}
        names = {s.index: s.name for s in self.symbols}
        for symidx, slot in got_slot.items():
            buf, off = locate(slot, 8)
            struct.pack_into("<Q", buf, off, sym_addr.get(symidx, 0) & (2**64 - 1))
        counts: dict[str, int] = {}
        for _rsec, target, entries in relocs:
            sec_addr = addresses[self.sections.index(target)]
            skip_unknown = target.name == ".eh_frame"
            for offset, rtype, symidx, addend in entries:
                s_value = sym_addr.get(symidx, 0)
                place = sec_addr + offset
                done = _apply(
                    rtype,
                    s_value,
                    addend,
                    place,
                    got_address,
                    got_slot.get(symidx, 0),
                    self._symbol_size(symidx),
                    locate,
                    skip_unknown,
                    target.name,
                    offset,
                    names.get(symidx, ""),
                )
                if done:
                    counts[relocation_name(rtype)] = counts.get(relocation_name(rtype), 0) + 1

        code_ranges = [(addresses[i], self.sections[i]["sh_size"]) for i in groups["text"]]
        return LinkedImage(
            path=self.path,
            kind=self.kind,
            segments=segments,
            symbols=symbols,
            functions=functions,
            code_ranges=code_ranges,
            section_addresses={self.sections[i].name: a for i, a in addresses.items()},
            debug_bytes=self._patched_symtab(sym_addr) if self.has_dwarf else self.data,
            debug_bias=0,
            entry=0,
            got_address=got_address,
            got_size=8 * len(got_symbols),
            relocations_applied=counts,
        )

    def _symbol_size(self, symidx: int) -> int:
        if 0 <= symidx < len(self.symbols):
            return self.symbols[symidx].size
        return 0

    def _patched_symtab(self, sym_addr: Mapping[int, int]) -> bytes:
        """The file with st_value of every loaded symbol set to its absolute address, so
        pyelftools' DWARF relocation yields runtime addresses."""
        if self._symtab is None:
            return self.data
        data = bytearray(self.data)
        off = self._symtab["sh_offset"]
        entsize = self._symtab["sh_entsize"] or 24
        for s in self.symbols:
            if s.shndx in (SHN_UNDEF, SHN_ABS) or s.index not in sym_addr:
                continue
            struct.pack_into("<Q", data, off + entsize * s.index + 8, sym_addr[s.index])
        return bytes(data)

    def _link_loaded(self, base: int, resolve: Mapping[str, int]) -> LinkedImage:
        bias = base if self.kind == "shared" else 0
        segments: list[Segment] = []
        code_ranges: list[tuple[int, int]] = []
        try:
            phdrs = [p for p in self._elf.iter_segments() if p["p_type"] == "PT_LOAD"]
        except (ELFError, struct.error) as exc:
            raise MalformedElf(f"{self.path}: program headers: {exc}") from exc
        if not phdrs:
            raise MalformedElf(f"{self.path}: no PT_LOAD segment")
        for n, ph in enumerate(phdrs):
            vaddr = ph["p_vaddr"] + bias
            start = vaddr & ~(PAGE - 1)
            end = _align(vaddr + ph["p_memsz"], PAGE)
            if ph["p_offset"] + ph["p_filesz"] > len(self.data):
                raise TruncatedElf(f"{self.path}: segment {n} ends past the file")
            buf = bytearray(end - start)
            file_bytes = self.data[ph["p_offset"] : ph["p_offset"] + ph["p_filesz"]]
            buf[vaddr - start : vaddr - start + len(file_bytes)] = file_bytes
            flags = ph["p_flags"]
            prot = (
                (PROT_READ if flags & PF_R else 0)
                | (PROT_WRITE if flags & PF_W else 0)
                | (PROT_EXEC if flags & PF_X else 0)
            )
            # merge with a previous segment sharing a page (small static links do that)
            if segments and start < segments[-1].end:
                prev = segments[-1]
                if start < prev.address:
                    raise MalformedElf(f"{self.path}: PT_LOAD segments out of order")
                grown = bytearray(max(prev.end, end) - prev.address)
                grown[: len(prev.data)] = prev.data
                lo = vaddr - prev.address
                grown[lo : lo + len(file_bytes)] = file_bytes
                prev.data = grown
                prev.prot |= prot
            else:
                segments.append(Segment(f"segment{n}", start, buf, prot))
            if flags & PF_X:
                code_ranges.append((vaddr, ph["p_memsz"]))
        symbols: dict[str, Symbol] = {}
        functions: list[Symbol] = []
        for s in self.symbols or self.dynamic_symbols:
            if s.shndx == SHN_UNDEF or not s.name or s.kind in ("section", "file"):
                continue
            addr = s.value + (0 if s.shndx == SHN_ABS else bias)
            sym = Symbol(s.name, addr, s.size, s.kind, s.binding)
            if s.binding != "local" or s.name not in symbols:
                symbols[s.name] = sym
            if s.kind == "func":
                functions.append(sym)
        functions.sort(key=lambda f: f.address)

        def locate(address: int, width: int) -> tuple[bytearray, int]:
            for seg in segments:
                if seg.address <= address and address + width <= seg.end:
                    return seg.data, address - seg.address
            raise MalformedElf(f"{self.path}: relocation at 0x{address:x} outside the image")

        dyn = {s.index: s for s in self.dynamic_symbols}
        counts: dict[str, int] = {}
        for rsec, target in self._relocation_sections():
            if not rsec["sh_flags"] & SHF_ALLOC or rsec is not target:
                continue
            for offset, rtype, symidx, addend in self._relocations(rsec):
                dsym = dyn.get(symidx)
                if dsym is None or symidx == 0:
                    s_value = 0
                elif dsym.shndx == SHN_UNDEF:
                    s_value = resolve.get(dsym.name, 0)
                else:
                    s_value = dsym.value + (0 if dsym.shndx == SHN_ABS else bias)
                place = offset + bias
                name = relocation_name(rtype)
                if rtype == 8:  # RELATIVE: B + A
                    value, width = bias + addend, 8
                elif rtype in (1, 6, 7):  # 64, GLOB_DAT, JUMP_SLOT
                    value, width = s_value + (addend if rtype == 1 else 0), 8
                    if rtype in (6, 7):
                        value = s_value + addend
                else:
                    raise UnsupportedRelocation(name, rtype, rsec.name, offset)
                buf, off = locate(place, width)
                struct.pack_into("<Q", buf, off, value & (2**64 - 1))
                counts[name] = counts.get(name, 0) + 1
        return LinkedImage(
            path=self.path,
            kind=self.kind,
            segments=segments,
            symbols=symbols,
            functions=functions,
            code_ranges=code_ranges,
            section_addresses={},
            debug_bytes=self.data,
            debug_bias=bias,
            entry=self._elf["e_entry"] + bias,
            relocations_applied=counts,
        )


def _apply(
    rtype: int,
    s: int,
    a: int,
    p: int,
    got: int,
    g_slot: int,
    z: int,
    locate: Callable[[int, int], tuple[bytearray, int]],
    skip_unknown: bool,
    section: str,
    offset: int,
    symbol: str,
) -> bool:
    """Apply one relocation (AMD64 psABI 4.4.1 formulas). False when skipped."""
    name = relocation_name(rtype)
    g = g_slot - got  # offset of the symbol's GOT slot in the GOT
    if rtype == 0:
        return False
    if rtype == 1:
        value, width, signed = s + a, 8, None
    elif rtype in (2, 4):  # PC32; PLT32 (L = S: bindings are called directly)
        value, width, signed = s + a - p, 4, True
    elif rtype == 3:  # GOT32
        value, width, signed = g + a, 4, True
    elif rtype in (9, 41, 42):  # GOTPCREL, GOTPCRELX, REX_GOTPCRELX
        value, width, signed = g_slot + a - p, 4, True
    elif rtype == 10:
        value, width, signed = s + a, 4, False
    elif rtype == 11:
        value, width, signed = s + a, 4, True
    elif rtype == 12:
        value, width, signed = s + a, 2, False
    elif rtype == 13:
        value, width, signed = s + a - p, 2, True
    elif rtype == 14:
        value, width, signed = s + a, 1, False
    elif rtype == 15:
        value, width, signed = s + a - p, 1, True
    elif rtype == 24:  # PC64
        value, width, signed = s + a - p, 8, None
    elif rtype == 25:  # GOTOFF64
        value, width, signed = s + a - got, 8, None
    elif rtype == 26:  # GOTPC32
        value, width, signed = got + a - p, 4, True
    elif rtype == 27:  # GOT64
        value, width, signed = g + a, 8, None
    elif rtype == 28:  # GOTPCREL64
        value, width, signed = g_slot + a - p, 8, None
    elif rtype == 29:  # GOTPC64
        value, width, signed = got + a - p, 8, None
    elif rtype == 30:  # GOTPLT64 (no PLT: the GOT slot)
        value, width, signed = g + a, 8, None
    elif rtype == 31:  # PLTOFF64 (no PLT: L = S)
        value, width, signed = s + a - got, 8, None
    elif rtype == 32:  # SIZE32
        value, width, signed = z + a, 4, False
    elif rtype == 33:  # SIZE64
        value, width, signed = z + a, 8, None
    else:
        if skip_unknown:
            return False
        raise UnsupportedRelocation(name, rtype, section, offset)
    bits = 8 * width
    if signed is True and not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise RelocationOverflow(name, symbol, value, section, offset, bits)
    if signed is False and not 0 <= value < (1 << bits):
        raise RelocationOverflow(name, symbol, value, section, offset, bits)
    buf, off = locate(p, width)
    buf[off : off + width] = (value & ((1 << bits) - 1)).to_bytes(width, "little")
    return True
