"""The native loader: relocations (each type, each code model), undefined symbols, bad ELF files,
DWARF lines and the function+offset fallback. C is compiled at test time (cached)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from dbc_harness.drivers.native import (
    Environment,
    Machine,
    NotX86_64Elf,
    RelocationOverflow,
    TruncatedElf,
    UnboundSymbols,
    UnsupportedRelocation,
    as_signed,
    bindings,
    parse_elf,
    srcmap,
)
from dbc_harness.drivers.native.cc import FREESTANDING, compile_object
from elftools.elf.elffile import ELFFile

C = Path(__file__).parent / "native_c"
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")


def ext_add(m: Machine, a: int, b: int) -> int:
    return (a + b) & 0xFFFF_FFFF


RELOCS_ENV = Environment(functions={"ext_add": ext_add}, data={"ext_counter": 8})

MODELS = {
    "small": ("-mcmodel=small",),
    "large": ("-mcmodel=large",),
    "kernel": ("-mcmodel=kernel",),
    "pic": ("-fpic", "-fno-plt"),
    "large-pic": ("-mcmodel=large", "-fpic"),
}
#: relocation types each code model must produce for relocs.c (so each is exercised)
EXPECTED_TYPES = {
    "small": {"R_X86_64_PC32", "R_X86_64_PLT32", "R_X86_64_64"},
    "large": {"R_X86_64_64"},
    "kernel": {"R_X86_64_32S", "R_X86_64_PC32"},
    "pic": {"R_X86_64_REX_GOTPCRELX", "R_X86_64_GOTPCRELX", "R_X86_64_PC32"},
    "large-pic": {"R_X86_64_GOTPC64", "R_X86_64_GOTOFF64"},
}


def compile_relocs(model: str) -> Path:
    flags = [f for f in FREESTANDING if f not in ("-fno-pic", "-fno-pie")]
    if "pic" not in model:
        flags += ["-fno-pic", "-fno-pie"]
    return compile_object(C / "relocs.c", flags=flags, extra_flags=MODELS[model])


@pytest.mark.parametrize("model", sorted(MODELS))
def test_each_code_model_links_and_runs(model: str) -> None:
    m = Machine(compile_relocs(model), RELOCS_ENV)
    assert EXPECTED_TYPES[model] <= set(m.image.relocations_applied), m.image.relocations_applied
    # 8 arguments: 6 in registers, 2 on the stack
    assert m.call("sum8", 1, 2, 3, 4, 5, 6, 7, 8) == sum(i * i for i in range(1, 9))
    assert as_signed(m.call("sum8", *([-1] * 8)), 32) == -36
    # code, data, rodata, bss, a local function, a function pointer to a binding, a data slot
    assert m.call("use_all", 1) == 40 + ord("e") + 20 + 2 + 0
    assert m.call("use_all", 3) == 80 + ord("l") + 40 + 4 + 40
    assert m.read_u64(m.symbol("ext_counter")) == 2
    assert m.call("counter_address") == m.symbol("ext_counter")
    assert m.call("bss_word", 3) == 40 and m.call("bss_word", 5) == 0
    assert m.call("direct", 5) == 21


def test_every_relocation_type_has_its_value() -> None:
    m = Machine(compile_object(C / "reloc_asm.c"))
    img = m.image
    got = img.got_address
    assert got and img.got_size >= 8
    var, fn = m.symbol("target_var"), m.symbol("target_fn")

    def p(name: str) -> int:
        return m.symbol(name)

    def u(name: str, width: int, signed: bool = False) -> int:
        return int.from_bytes(m.read(p(name), width), "little", signed=signed)

    def got_slot_of(value: int, place: int) -> int:
        return m.read_u64(place + value)

    assert u("rel_64", 8) == var + 8
    assert u("rel_pc64", 8, True) == var - p("rel_pc64")
    assert u("rel_gotoff64", 8, True) == var - got
    assert u("rel_gotpc64", 8, True) == got - p("rel_gotpc64")
    assert got_slot_of(u("rel_gotpcrel64", 8, True), p("rel_gotpcrel64")) == var
    assert u("rel_size64", 8) == m.image.symbols["target_fn"].size + 3
    assert u("rel_pc32", 4, True) == var - 4 - p("rel_pc32")
    assert u("rel_plt32", 4, True) == fn - 4 - p("rel_plt32")
    assert u("rel_32", 4) == var
    assert u("rel_32s", 4, True) == var + 16
    assert got_slot_of(u("rel_gotpcrel", 4, True), p("rel_gotpcrel")) == var
    assert got_slot_of(u("rel_gotpcrelx", 4, True), p("rel_gotpcrelx")) == fn
    assert got_slot_of(u("rel_rex_gotpcrelx", 4, True), p("rel_rex_gotpcrelx")) == var
    assert u("rel_gotpc32", 4, True) == got - p("rel_gotpc32")
    assert u("rel_size32", 4) == 8  # sizeof(long)
    assert u("rel_16", 2) == 0x1234
    assert u("rel_pc16", 2, True) == p("rel_8") - p("rel_pc16")
    assert u("rel_8", 1) == 0x7F
    assert u("rel_pc8", 1, True) == p("rel_16") - p("rel_pc8")
    assert len(img.relocations_applied) == 19  # one of each type


def test_a_value_that_does_not_fit_is_relocation_overflow() -> None:
    obj = compile_object(
        'long far_away = 1;\n__asm__(".pushsection .data\\n.byte far_away\\n.popsection\\n");\n',
        name="overflow",
    )
    with pytest.raises(RelocationOverflow, match=r"R_X86_64_8 for far_away .* does not fit 8"):
        Machine(obj)


def _patched(data: bytes, section: str, index: int, new_type: int) -> bytes:
    """``data`` with relocation ``index`` of ``section`` changed to type ``new_type``."""
    import io

    elf = ELFFile(io.BytesIO(data))
    sec = elf.get_section_by_name(section)
    assert sec is not None
    off = sec["sh_offset"] + 24 * index + 8
    (info,) = struct.unpack_from("<Q", data, off)
    out = bytearray(data)
    struct.pack_into("<Q", out, off, (info & ~0xFFFFFFFF) | new_type)
    return bytes(out)


def test_unknown_relocation_is_named_with_type_section_and_offset() -> None:
    data = compile_relocs("small").read_bytes()
    bad = _patched(data, ".rela.text", 1, 18)  # R_X86_64_TPOFF64 (TLS): not supported
    with pytest.raises(UnsupportedRelocation) as info:
        Machine(bad, RELOCS_ENV)
    e = info.value
    assert (e.type_name, e.type_number, e.section) == ("R_X86_64_TPOFF64", 18, ".text")
    assert f"at offset 0x{e.offset:x}" in str(e)
    with pytest.raises(UnsupportedRelocation, match=r"R_X86_64_<99> \(type 99\) in .text"):
        Machine(_patched(data, ".rela.text", 0, 99), RELOCS_ENV)


def test_missing_symbols_are_listed_all_at_once_before_running() -> None:
    with pytest.raises(UnboundSymbols) as info:
        Machine(compile_relocs("small"), Environment(functions=bindings.COMMON))
    e = info.value
    assert e.names == ("ext_add", "ext_counter")
    uses = {s.name: s.use for s in e.symbols}
    assert uses == {"ext_add": "call+data", "ext_counter": "data"}  # called and pointed to
    assert "ext_add [call+data]" in str(e) and "ext_counter [data]" in str(e)
    # bound as a function only: the call site is now a plain call
    with pytest.raises(UnboundSymbols, match=r"1 symbol\(s\).*ext_counter"):
        Machine(compile_relocs("small"), Environment(functions={"ext_add": ext_add}))


def test_a_called_function_is_reported_as_call() -> None:
    obj = compile_object("extern int f(int);\nint g(void) { return f(1) + 1; }\n", name="callf")
    with pytest.raises(UnboundSymbols) as info:
        Machine(obj)
    assert [(s.name, s.use) for s in info.value.symbols] == [("f", "call")]
    assert info.value.symbols[0].sites[0].startswith(".text+0x")


def test_32_bit_object_is_not_x86_64(tmp_path: Path) -> None:
    src = tmp_path / "t.c"
    src.write_text("int f(void) { return 1; }\n")
    obj = tmp_path / "t32.o"
    done = subprocess.run(["gcc", "-m32", "-c", str(src), "-o", str(obj)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("gcc -m32 not available")
    with pytest.raises(NotX86_64Elf, match="ELFCLASS32, EM_386"):
        parse_elf(obj)


def test_other_machine_and_not_elf(tmp_path: Path) -> None:
    data = bytearray(compile_relocs("small").read_bytes())
    struct.pack_into("<H", data, 18, 183)
    with pytest.raises(NotX86_64Elf, match="EM_AARCH64") as info:
        parse_elf(bytes(data))
    assert info.value.seen == "ELF64, EM_AARCH64"
    with pytest.raises(NotX86_64Elf, match="no ELF magic"):
        parse_elf(b"#!/bin/sh\necho hi\n")


@pytest.mark.parametrize("keep", [3, 40, 63, 400, -200, -1])
def test_truncated_files_are_named(keep: int) -> None:
    data = compile_relocs("small").read_bytes()
    with pytest.raises(TruncatedElf):
        parse_elf(data[:keep])


def test_dwarf_lines_and_the_fallback_without_dwarf() -> None:
    src = C / "relocs.c"
    lines = src.read_text().splitlines()
    sum8_line = next(i for i, t in enumerate(lines, 1) if "return a + 2 * b" in t)
    m = Machine(compile_relocs("small"), RELOCS_ENV)
    pcs = [
        a
        for a in range(m.symbol("sum8"), m.symbol("sum8") + m.image.symbols["sum8"].size)
        if m.srcmap.source(a) is not None
    ]
    assert {str(m.srcmap.source(a)) for a in pcs} >= {f"relocs.c:{sum8_line}"}
    assert m.location(m.symbol("sum8") + 1).function == "sum8+0x1"
    flags = [f for f in FREESTANDING if f != "-g"]
    bare = Machine(compile_object(src, flags=flags, name="relocs-nodebug"), RELOCS_ENV)
    assert not bare.srcmap.has_lines
    loc = bare.location(bare.symbol("use_all") + 4)
    assert (loc.function, loc.source) == ("use_all+0x4", None)
    assert str(loc) == f"use_all+0x4 (pc 0x{bare.symbol('use_all') + 4:x})"


def test_line_tables_are_cached_per_image_content_and_bounded() -> None:
    """A second Machine of the same object maps every PC to the same line without decoding
    the DWARF again (the shared table); another bias is another table; the cache stays
    bounded (LINE_CACHE_SIZE, least recently used dropped)."""
    obj = compile_relocs("small")
    first, second = Machine(obj, RELOCS_ENV), Machine(obj, RELOCS_ENV)
    start, size = first.symbol("sum8"), first.image.symbols["sum8"].size
    pcs = range(start, start + size)
    assert [second.srcmap.source(a) for a in pcs] == [first.srcmap.source(a) for a in pcs]
    image = first.image
    rows = srcmap._cached_lines(image.debug_bytes, image.debug_bias)
    assert rows and srcmap._cached_lines(image.debug_bytes, image.debug_bias) is rows
    moved = srcmap._cached_lines(image.debug_bytes, image.debug_bias + 0x1000)
    assert [r[0] - 0x1000 for r in moved] == [r[0] for r in rows]
    saved = dict(srcmap._line_cache)
    try:
        for i in range(srcmap.LINE_CACHE_SIZE + 2):
            srcmap._cached_lines(image.debug_bytes, 0x10000 * (i + 2))
        assert len(srcmap._line_cache) == srcmap.LINE_CACHE_SIZE
    finally:  # the other tests' images stay cached
        srcmap._line_cache.clear()
        srcmap._line_cache.update(saved)


def test_function_sections_map_each_function_to_its_own_lines() -> None:
    obj = compile_object(C / "relocs.c", extra_flags=("-ffunction-sections", "-fdata-sections"),
                         name="relocs-sections")  # fmt: skip
    m = Machine(obj, RELOCS_ENV)
    assert len([n for n in m.image.section_addresses if n.startswith(".text.")]) >= 4
    text = (C / "relocs.c").read_text().splitlines()
    for fn, needle in (("sum8", "return a + 2 * b"), ("bss_word", "long bss_word")):
        want = next(i for i, t in enumerate(text, 1) if needle in t)
        start, size = m.symbol(fn), m.image.symbols[fn].size
        got = {m.srcmap.source(a) for a in range(start, start + size)} - {None}
        assert want in {s.line for s in got if s is not None}, (fn, got)
    assert m.call("sum8", 1, 1, 1, 1, 1, 1, 1, 1) == 36


def test_static_executable_and_shared_object(tmp_path: Path) -> None:
    src = tmp_path / "prog.c"
    src.write_text(
        "extern int host_twice(int);\n"
        "static int data[3] = {4, 5, 6};\n"
        "int entry(int i) { return data[i % 3] * 10; }\n"
        "int with_host(int x) { return host_twice(x) + 1; }\n"
    )
    exe = tmp_path / "prog.elf"
    common = ["gcc", "-O2", "-g", "-nostdlib", "-ffreestanding", "-fno-stack-protector"]
    exe_src = tmp_path / "exe.c"
    exe_src.write_text(
        "static int data[3] = {4, 5, 6};\nint entry(int i) { return data[i % 3]; }\n"
    )
    subprocess.run([*common, "-static", "-no-pie", "-Wl,-e,entry", str(exe_src), "-o", str(exe)],
                   check=True, capture_output=True)  # fmt: skip
    m = Machine(exe)
    assert m.image.kind == "executable" and m.symbol("entry") == m.image.entry
    assert [m.call("entry", i) for i in range(4)] == [4, 5, 6, 4]
    so = tmp_path / "prog.so"
    subprocess.run([*common, "-shared", "-fpic", str(src), "-o", str(so)], check=True,
                   capture_output=True)  # fmt: skip
    env = Environment(functions={"host_twice": lambda m, x: 2 * x})
    s = Machine(so, env)
    assert s.image.kind == "shared"
    assert s.call("entry", 2) == 60 and s.call("with_host", 20) == 41
    assert "R_X86_64_RELATIVE" in s.image.relocations_applied or s.image.relocations_applied


def test_arguments_results_and_bindings_pass_full_64_bit_registers() -> None:
    """Arguments, return values and binding calls go through the register fast path
    (unicorn's C API): every bit of all six argument registers and of rax survives, both
    ways, and the fast path is the one in use with the pinned unicorn."""
    src = (
        "extern unsigned long long twice(unsigned long long);\n"
        "unsigned long long mix(unsigned long long a, unsigned long long b,\n"
        "    unsigned long long c, unsigned long long d, unsigned long long e,\n"
        "    unsigned long long f)\n"
        "{ return a ^ (b << 1) ^ (c << 2) ^ (d << 3) ^ (e << 4) ^ (f << 5); }\n"
        "unsigned long long via(unsigned long long x) { return twice(x) + 1; }\n"
    )

    def twice(m: Machine, x: int) -> int:
        return x * 2

    m = Machine(compile_object(src, name="regs64"), Environment(functions={"twice": twice}))
    try:
        assert m._regs._lib_read is not None  # not the binding's slow fallback
        args = [0xFFFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0001, 0x0123_4567_89AB_CDEF, 0, 1,
                0xDEAD_BEEF_0000_0000]  # fmt: skip
        mask = (1 << 64) - 1
        want = 0
        for i, a in enumerate(args):
            want ^= (a << i) & mask
        assert m.call("mix", *args) == want
        assert m.call("via", 0x7FFF_FFFF_FFFF_FFFF) == 0xFFFF_FFFF_FFFF_FFFF
        assert as_signed(m.call("via", -2 & mask)) == -3
    finally:
        m.close()
