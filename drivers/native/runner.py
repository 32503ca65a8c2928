"""The :class:`Machine`: a native object loaded into an emulated x86-64 CPU, wired to a bench.

Memory map (all of the emulator's own regions lie below 2 GiB so code built with the small or
kernel code model reaches them with 32-bit relocations):

====================  =====================================================================
0 .. 1 MiB            never mapped: NULL (and small offsets from it) fault
0x0040_0000           a relocatable object or shared object (executables: where they say)
0x4000_0000 ..        virtual ranges handed out by ``alloc_virtual`` (vmalloc-like)
0x7000_0000           the return trampoline: a call returns when the CPU gets here
0x7001_0000           binding stubs, 16 bytes each (a ``ret``; the hook runs the binding first)
0x7002_0000           data slots of undefined data symbols, then the TLS page (FS/GS base)
0x7100_0000           scratch memory for :meth:`Machine.alloc` (arguments, strings)
0x7E00_0000           the stack (grows down from 0x7F00_0000), a 1 MiB unmapped guard below it
BAR / DMA             at their physical addresses (``"identity"``) or ``base + phys``
                      (``KernelWindow``); DMA chunks are mapped zero-copy when allocated or
                      first touched
====================  =====================================================================

Every RAM region is host memory the machine owns (or the DMA space's chunk, pinned while
mapped), mapped with ``mem_map_ptr``; reads and writes from Python are plain memoryview copies.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import sys
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import capstone
from dbc_harness.drivers.native.elf import (
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    LinkedImage,
    parse_elf,
)
from dbc_harness.drivers.native.environment import (
    BoundFunction,
    DataSlot,
    Environment,
    KernelWindow,
)
from dbc_harness.drivers.native.errors import (
    BindingError,
    CpuException,
    DivisionByZero,
    DmaUnavailable,
    IllegalInstruction,
    InvalidMemoryAccess,
    LayoutConflict,
    MmioAccess,
    MmioUnavailable,
    NativeError,
    NativeFault,
    NativeLocation,
    ReturnToNowhere,
    RunawayLoop,
    StackOverflow,
    UnboundSymbol,
    UnboundSymbols,
    UnknownSymbol,
    UnmappedPhysical,
    VirtualTimeExhausted,
    WallTimeExhausted,
)
from dbc_harness.drivers.native.pci_ports import PciConfigSpace, PortBus
from dbc_harness.drivers.native.printf import format_printf
from dbc_harness.drivers.native.srcmap import SourceMap
from dbc_harness.drivers.origin import origin_provider
from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_CODE,
    UC_HOOK_INSN,
    UC_HOOK_INSN_INVALID,
    UC_HOOK_INTR,
    UC_HOOK_MEM_INVALID,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_WRITE,
    UC_MEM_FETCH_PROT,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_READ,
    UC_MEM_READ_PROT,
    UC_MEM_READ_UNMAPPED,
    UC_MEM_WRITE_PROT,
    UC_MEM_WRITE_UNMAPPED,
    UC_MODE_64,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
    Uc,
    UcError,
)
from unicorn import unicorn_const as ucc
from unicorn import x86_const as x86

if TYPE_CHECKING:
    from dbc_harness.allocator.space import DmaBuffer, DmaSpace
    from dbc_harness.drivers.clock import Clock

KiB = 1 << 10
MiB = 1 << 20
PAGE = 0x1000
MASK64 = (1 << 64) - 1

NULL_GUARD = 1 * MiB
IMAGE_BASE = 0x0040_0000
VMAP_BASE = 0x4000_0000
VMAP_END = 0x7000_0000
RETURN_ADDRESS = 0x7000_0000
STUB_BASE = 0x7001_0000
STUB_SIZE = 16
MAX_STUBS = 0x1000
DATA_BASE = 0x7002_0000
SCRATCH_BASE = 0x7100_0000
STACK_TOP = 0x7F00_0000
STACK_GUARD = 1 * MiB
INFRA_START, INFRA_END = RETURN_ADDRESS, STACK_TOP

#: default per-call budgets
DEFAULT_INSTRUCTIONS = 200_000_000
DEFAULT_VIRTUAL_TIME_S = 60.0
DEFAULT_WALL_TIME_S = 60.0
#: the BAR's physical address when neither the caller nor a PCI model says (a PC's MMIO hole)
DEFAULT_BAR_PHYS = 0xF000_0000

ARG_REGS = (x86.UC_X86_REG_RDI, x86.UC_X86_REG_RSI, x86.UC_X86_REG_RDX,
            x86.UC_X86_REG_RCX, x86.UC_X86_REG_R8, x86.UC_X86_REG_R9)  # fmt: skip
XMM_REGS = tuple(getattr(x86, f"UC_X86_REG_XMM{i}") for i in range(8))
RIP, RSP, RAX = x86.UC_X86_REG_RIP, x86.UC_X86_REG_RSP, x86.UC_X86_REG_RAX

_ACCESS = {
    UC_MEM_READ_UNMAPPED: "read",
    UC_MEM_WRITE_UNMAPPED: "write",
    UC_MEM_FETCH_UNMAPPED: "fetch",
    UC_MEM_READ_PROT: "read",
    UC_MEM_WRITE_PROT: "write",
    UC_MEM_FETCH_PROT: "fetch",
}
_UNMAPPED = (UC_MEM_READ_UNMAPPED, UC_MEM_WRITE_UNMAPPED, UC_MEM_FETCH_UNMAPPED)


def _uc_prot(prot: int) -> int:
    return (
        (UC_PROT_READ if prot & PROT_READ else 0)
        | (UC_PROT_WRITE if prot & PROT_WRITE else 0)
        | (UC_PROT_EXEC if prot & PROT_EXEC else 0)
    )


#: the emulated CPU runs without paging and drops address bits above its 52-bit physical
#: address width: a kernel-window address 0xFFFF_8880_... is reached at 0x000F_8880_...
UC_ADDRESS_MASK = (1 << 52) - 1


def _ua(address: int) -> int:
    """Where unicorn maps ``address`` (the CPU's view of a canonical address)."""
    return address & UC_ADDRESS_MASK


def _canonical(address: int) -> int:
    """Inverse of :func:`_ua` for addresses the CPU reports (fault addresses)."""
    if address <= UC_ADDRESS_MASK and (address >> 47) & 0x1F == 0x1F:
        return address | (MASK64 & ~UC_ADDRESS_MASK)
    return address


def _page_up(n: int) -> int:
    return (n + PAGE - 1) & ~(PAGE - 1)


def as_signed(value: int, bits: int = 64) -> int:
    """Two's complement view of a returned register (``as_signed(m.call("f"), 32)``)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class _Registers:
    """64-bit general registers of the emulated CPU, read and written through unicorn's C API
    (``uc_reg_read`` / ``uc_reg_write`` on the engine's handle). The Python binding's
    ``reg_read`` / ``reg_write`` choose a register class on every access (~2 us each, several
    per native call and per binding call); this costs ~0.5 us. Where the binding does not
    expose its library and handle (another unicorn 2 release), the binding's calls are used.
    One value buffer serves every access: only the thread running the emulation (a call and
    its hooks) uses it; other threads read registers through the binding."""

    __slots__ = ("_handle", "_lib_read", "_lib_write", "_ref", "_uc", "_value")

    def __init__(self, uc: Any) -> None:
        self._uc = uc
        # the engine is an architecture subclass of Uc: the library lives beside Uc itself
        lib = None
        for klass in type(uc).__mro__:
            lib = getattr(sys.modules.get(klass.__module__), "uclib", None)
            if lib is not None:
                break
        handle = getattr(uc, "_uch", None)
        self._value = ctypes.c_uint64()
        self._ref = ctypes.byref(self._value)
        self._handle = handle
        self._lib_read = None if lib is None or handle is None else lib.uc_reg_read
        self._lib_write = None if lib is None or handle is None else lib.uc_reg_write

    def read(self, reg: int) -> int:
        fn = self._lib_read
        if fn is None:
            return int(self._uc.reg_read(reg))
        status = fn(self._handle, reg, self._ref)
        if status:
            raise UcError(status)  # type: ignore[no-untyped-call]  # unicorn is untyped
        return self._value.value

    def write(self, reg: int, value: int) -> None:
        fn = self._lib_write
        if fn is None:
            self._uc.reg_write(reg, value)
            return
        self._value.value = value & MASK64
        status = fn(self._handle, reg, self._ref)
        if status:
            raise UcError(status)  # type: ignore[no-untyped-call]  # unicorn is untyped


class _Watchdog:
    """Stops the emulator when a call's wall-clock deadline passes.

    One thread per machine, armed per call: unicorn's own ``emu_start(timeout=)`` starts a
    thread for every call (about 150 us each, more than a whole poll of a driver)."""

    def __init__(self, uc: Any) -> None:
        self._uc = uc
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._ticket = 0
        self._fired = -1
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="native-watchdog", daemon=True)
        self._thread.start()

    def arm(self, seconds: float) -> int:
        with self._cond:
            self._ticket += 1
            self._deadline = time.monotonic() + seconds
            self._cond.notify()
            return self._ticket

    def disarm(self, ticket: int) -> bool:
        """End call ``ticket``; True if its deadline stopped it."""
        with self._cond:
            self._deadline = None
            return self._fired == ticket

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._fired = self._ticket
                self._deadline = None
                self._uc.emu_stop()


class ManualClock:
    """A clock for machines without a bench: time moves only when native code delays."""

    def __init__(self) -> None:
        self._now = 0.0

    def monotonic(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self._now += max(0.0, seconds)


@dataclass
class _Region:
    """Host memory mapped into the emulator: ``view`` covers [start, start + size)."""

    start: int
    size: int
    view: memoryview
    name: str
    pin: Any = None  # what keeps the host memory alive (mmap, ctypes export)
    chunk: Any = None  # the DMA chunk for DMA regions
    phys: int | None = None  # physical (device) address of ``start`` if DMA memory

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(eq=False)
class _MmioWindow:
    """BAR bytes ``[bar_offset, bar_offset + size)`` seen at ``virt`` by native code."""

    virt: int
    size: int
    bar_offset: int
    view: memoryview
    pin: Any
    hook: int = 0
    #: the MMIO behind it: None for BAR0 (``Machine.mmio``), else another function's BAR
    mmio: Any = None


@dataclass(frozen=True)
class DmaAllocation:
    """DMA memory handed to native code: ``virt`` (what C sees), ``phys`` (what the device
    sees), ``buffer`` (the :class:`DmaBuffer`, its ``view`` is the same bytes)."""

    virt: int
    phys: int
    buffer: DmaBuffer

    @property
    def size(self) -> int:
        return self.buffer.size


class _ArgCursor:
    """Reads the variadic arguments of a binding call in SysV order (C11 va_arg)."""

    def __init__(self, m: Machine, gp_index: int, fp_index: int = 0) -> None:
        self._m = m
        self._gp = gp_index
        self._fp = fp_index
        self._stack = m._frame_rsp + 8 + 8 * max(0, gp_index - 6)

    def next_int(self) -> int:
        if self._gp < 6:
            value = self._m._regs.read(ARG_REGS[self._gp])
            self._gp += 1
            return value
        value = self._m.read_u64(self._stack)
        self._stack += 8
        return value

    def next_float(self) -> float:
        if self._fp < 8:
            raw = self._m.uc.reg_read(XMM_REGS[self._fp])
            self._fp += 1
            assert isinstance(raw, int)
            return float(struct.unpack("<d", (raw & MASK64).to_bytes(8, "little"))[0])
        value = self._m.read(self._stack, 8)
        self._stack += 8
        return float(struct.unpack("<d", value)[0])

    def __iter__(self) -> Iterator[int]:
        while True:
            yield self.next_int()


class Machine:
    """A native object on an emulated x86-64 CPU. See the package docstring for the tour."""

    def __init__(
        self,
        obj: str | Path | bytes,
        env: Environment | None = None,
        *,
        bench: Any = None,
        mmio: Any = None,
        dma: DmaSpace | None = None,
        clock: Clock | None = None,
        pci: PciConfigSpace | None = None,
        bar_phys: int | None = None,
        bar_size: int | None = None,
        instructions: int = DEFAULT_INSTRUCTIONS,
        virtual_time: float = DEFAULT_VIRTUAL_TIME_S,
        wall_time: float = DEFAULT_WALL_TIME_S,
        stack_size: int = 256 * KiB,
        scratch_size: int = 4 * MiB,
        mmio_log_size: int = 64,
        name: str = "",
    ) -> None:
        self.env = env if env is not None else Environment()
        self.mmio: Any = mmio if mmio is not None else getattr(bench, "mmio", None)
        self.dma: DmaSpace | None = dma if dma is not None else getattr(bench, "dma", None)
        self.clock: Clock = clock or getattr(bench, "clock", None) or ManualClock()
        self.instructions = instructions
        self.virtual_time = virtual_time
        self.wall_time = wall_time
        self.log: list[str] = []
        self.mmio_log: deque[tuple[str, int, int, int]] = deque(maxlen=mmio_log_size)
        self.ports = PortBus(pci, self.env.ports, self.env.unknown_ports)
        dma_mode = self.env.dma
        self._window_base = dma_mode.base if isinstance(dma_mode, KernelWindow) else 0
        self._regions: list[_Region] = []
        self._region_starts: list[int] = []
        self._mmio_maps: list[_MmioWindow] = []
        self._phys_maps: list[tuple[int, int, int]] = []  # (virt, size, phys) explicit maps
        self._dma_allocs: dict[int, DmaAllocation] = {}
        self._running = False
        self._pending: tuple[BaseException, NativeLocation | None] | None = None
        self._frame_rsp = 0
        self._entry_rsp = 0
        self._entry_address = 0
        self._call_name = ""
        self._virtual_spent = 0.0
        self._vmap_next = VMAP_BASE
        self._scratch_next = SCRATCH_BASE
        self._scratch_end = SCRATCH_BASE + _page_up(scratch_size)
        self._closed = False

        # 1. the object and its environment: every unbound symbol at once, before anything runs
        self.elf = parse_elf(obj, name)
        undefined = self.elf.undefined()
        missing = [
            UnboundSymbol(u.name, u.use, u.sites)
            for u in undefined.values()
            if not u.weak and self.env.bound(u.name) is None and u.name not in self.env.data
        ]
        if missing:
            raise UnboundSymbols(sorted(missing, key=lambda s: s.name), self.elf.path)
        stub_names = sorted(n for n in undefined if self.env.bound(n) is not None)
        if len(stub_names) > MAX_STUBS:
            raise BindingError(f"{len(stub_names)} function bindings: at most {MAX_STUBS}")
        self._stubs: list[BoundFunction] = []
        resolve: dict[str, int] = {}
        for i, n in enumerate(stub_names):
            bound = self.env.bound(n)
            assert bound is not None
            self._stubs.append(bound)
            resolve[n] = STUB_BASE + STUB_SIZE * i
        data_layout: list[tuple[str, int, DataSlot]] = []
        cursor = DATA_BASE
        for n in sorted(undefined):
            if n in self.env.data:
                slot = self.env.data_slot(n, self.env.data[n])
                cursor = (cursor + slot.align - 1) & -slot.align
                data_layout.append((n, cursor, slot))
                resolve[n] = cursor
                cursor += slot.size
        tls_page = _page_up(cursor + 1) if data_layout else DATA_BASE
        self.tls_base = tls_page
        reserved = [(0, NULL_GUARD), (INFRA_START, STACK_TOP)]
        self.image: LinkedImage = self.elf.link(IMAGE_BASE, resolve, reserved)
        self.srcmap = SourceMap(self.image)
        self.srcmap.add_range(RETURN_ADDRESS, RETURN_ADDRESS + PAGE, "<return trampoline>")
        for i, b in enumerate(self._stubs):
            s = STUB_BASE + STUB_SIZE * i
            self.srcmap.add_range(s, s + STUB_SIZE, f"<binding {b.name}>")
        self._code_ranges = [(a, a + n) for a, n in self.image.code_ranges]

        # 2. the CPU and its memory
        # unicorn's Python binding is untyped: the engine is handled as Any
        self.uc: Any = Uc(UC_ARCH_X86, UC_MODE_64)  # type: ignore[no-untyped-call]
        self._disasm = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        for seg in self.image.segments:
            self._map_owned(seg.address, bytes(seg.data), seg.prot, f"image {seg.name}")
        self._map_owned(RETURN_ADDRESS, b"\x0f\x0b" * (PAGE // 2), PROT_READ | PROT_EXEC,
                        "return trampoline")  # fmt: skip
        stubs_size = _page_up(max(1, len(self._stubs)) * STUB_SIZE)
        self._map_owned(STUB_BASE, b"\xc3" * stubs_size, PROT_READ | PROT_EXEC, "binding stubs")
        data = bytearray(tls_page + PAGE - DATA_BASE)
        for _n, addr, slot in data_layout:
            data[addr - DATA_BASE : addr - DATA_BASE + len(slot.init)] = slot.init
        self._map_owned(DATA_BASE, bytes(data), PROT_READ | PROT_WRITE, "data slots + TLS")
        self._map_owned(self._scratch_end - (self._scratch_end - SCRATCH_BASE),
                        bytes(self._scratch_end - SCRATCH_BASE), PROT_READ | PROT_WRITE,
                        "scratch")  # fmt: skip
        self.stack_top = STACK_TOP
        self.stack_bottom = STACK_TOP - _page_up(stack_size)
        if self.stack_bottom - STACK_GUARD < self._scratch_end:
            raise BindingError(f"stack_size {stack_size} is too large")
        self._map_owned(self.stack_bottom, bytes(self.stack_top - self.stack_bottom),
                        PROT_READ | PROT_WRITE, "stack")  # fmt: skip
        self.data_symbols = {n: addr for n, addr, _ in data_layout}

        # 3. hooks: binding stubs, faults, ports
        uc: Any = self.uc
        if self._stubs:
            uc.hook_add(UC_HOOK_CODE, self._on_stub, None, STUB_BASE,
                        STUB_BASE + STUB_SIZE * len(self._stubs) - 1)  # fmt: skip
        uc.hook_add(UC_HOOK_MEM_INVALID, self._on_invalid)
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid_insn)
        uc.hook_add(UC_HOOK_INSN, self._on_port_in, None, 1, 0, x86.UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, self._on_port_out, None, 1, 0, x86.UC_X86_INS_OUT)
        self._watchdog = _Watchdog(uc)
        self._regs = _Registers(uc)
        uc.reg_write(x86.UC_X86_REG_FS_BASE, self.tls_base)
        uc.reg_write(x86.UC_X86_REG_GS_BASE, self.tls_base)
        self._fault_info: tuple[str, int, int, int] | None = None  # (what, address, size, pc)
        self._interrupt: tuple[int, int] | None = None
        self._invalid_insn_pc: int | None = None

        # 4. the bench: BAR0 at its physical address
        self.bar_phys: int | None = None
        self.bar_size = 0
        #: other functions' BARs (physical address, size, MMIO): see :meth:`attach_bar`
        self.other_bars: list[tuple[int, int, Any]] = []
        if self.mmio is not None:
            self.attach_mmio(
                self.mmio,
                bar_phys if bar_phys is not None else DEFAULT_BAR_PHYS,
                bar_size or getattr(self.mmio, "size", None) or 64 * KiB,
            )

    # ================================================================== memory plumbing
    def _add_region(self, region: _Region) -> None:
        i = bisect_right(self._region_starts, region.start)
        self._region_starts.insert(i, region.start)
        self._regions.insert(i, region)

    def _remove_region(self, region: _Region) -> None:
        i = self._regions.index(region)
        del self._regions[i]
        del self._region_starts[i]

    def _check_free(self, start: int, size: int, what: str) -> None:
        for r in self._regions:
            if r.start < start + size and start < r.end:
                raise LayoutConflict(
                    f"{what} at 0x{start:x}-0x{start + size:x} overlaps {r.name} at "
                    f"0x{r.start:x}-0x{r.end:x}"
                    + ("; use dma=KernelWindow(base) in the environment" if r.phys is None else "")
                )
        for w in self._mmio_maps:
            if w.virt < start + size and start < w.virt + w.size:
                raise LayoutConflict(
                    f"{what} at 0x{start:x} overlaps the BAR window at 0x{w.virt:x}"
                )

    def _map_owned(self, start: int, content: bytes, prot: int, name: str) -> _Region:
        size = _page_up(max(1, len(content)))
        memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        memory[: len(content)] = content
        pin = ctypes.c_char.from_buffer(memory)
        self.uc.mem_map_ptr(start, size, _uc_prot(prot), ctypes.addressof(pin))
        region = _Region(start, size, memoryview(memory), name, pin=(memory, pin))
        self._add_region(region)
        return region

    def _region_of(self, address: int) -> _Region | None:
        i = bisect_right(self._region_starts, address) - 1
        if i >= 0:
            r = self._regions[i]
            if address < r.end:
                return r
        return None

    # ------------------------------------------------------------------ memory access
    def read(self, address: int, size: int) -> bytes:
        """``size`` bytes of emulated memory (RAM regions directly, else through unicorn)."""
        r = self._region_of(address)
        if r is not None and address + size <= r.end:
            off = address - r.start
            return bytes(r.view[off : off + size])
        try:
            return bytes(self.uc.mem_read(_ua(address), size))
        except UcError as exc:
            raise InvalidMemoryAccess(
                f"Python read of {size} bytes at 0x{address:x}: {exc}",
                pc=0, location="<python>", source=None, address=address, access="read",
            ) from exc  # fmt: skip

    def write(self, address: int, data: bytes | bytearray | memoryview) -> None:
        r = self._region_of(address)
        n = len(data)
        if r is not None and address + n <= r.end:
            off = address - r.start
            r.view[off : off + n] = data
            return
        try:
            self.uc.mem_write(_ua(address), bytes(data))
        except UcError as exc:
            raise InvalidMemoryAccess(
                f"Python write of {n} bytes at 0x{address:x}: {exc}",
                pc=0, location="<python>", source=None, address=address, access="write",
            ) from exc  # fmt: skip

    def view(self, address: int, size: int) -> memoryview | None:
        """Zero-copy view of emulated RAM (None when the range is not one host region)."""
        r = self._region_of(address)
        if r is not None and address + size <= r.end:
            off = address - r.start
            return r.view[off : off + size]
        return None

    def read_u8(self, address: int) -> int:
        return self.read(address, 1)[0]

    def read_u32(self, address: int) -> int:
        return int.from_bytes(self.read(address, 4), "little")

    def read_u64(self, address: int) -> int:
        return int.from_bytes(self.read(address, 8), "little")

    def write_u32(self, address: int, value: int) -> None:
        self.write(address, (value & 0xFFFF_FFFF).to_bytes(4, "little"))

    def write_u64(self, address: int, value: int) -> None:
        self.write(address, (value & MASK64).to_bytes(8, "little"))

    def read_cstr(self, address: int, limit: int | None = None) -> bytes:
        """A NUL-terminated string (at most ``limit`` bytes, default 64 KiB)."""
        cap = 65536 if limit is None else limit
        out = bytearray()
        while len(out) < cap:
            r = self._region_of(address + len(out))
            if r is None:
                chunk = self.read(address + len(out), 1)
            else:
                off = address + len(out) - r.start
                chunk = bytes(r.view[off : min(r.size, off + cap - len(out))])
            nul = chunk.find(0)
            if nul >= 0:
                out += chunk[:nul]
                return bytes(out)
            out += chunk
        return bytes(out[:cap])

    # ------------------------------------------------------------------ scratch memory
    def alloc(self, size: int, align: int = 16) -> int:
        """Scratch memory (not DMA): arguments, structs and strings for calls. Zeroed."""
        start = (self._scratch_next + align - 1) & -align
        if start + size > self._scratch_end:
            raise BindingError(f"scratch memory exhausted ({size} bytes asked)")
        self._scratch_next = start + size
        self.write(start, bytes(size))
        return start

    def alloc_bytes(self, data: bytes, align: int = 16) -> int:
        address = self.alloc(max(1, len(data)), align)
        self.write(address, data)
        return address

    def cstring(self, text: str | bytes) -> int:
        raw = text.encode() if isinstance(text, str) else text
        return self.alloc_bytes(raw + b"\0", 1)

    def reset_scratch(self) -> None:
        self._scratch_next = SCRATCH_BASE

    # ================================================================== symbols
    def symbol(self, name: str) -> int:
        """Address of a symbol the object defines (or of a data slot / binding stub)."""
        sym = self.image.symbols.get(name)
        if sym is not None:
            return sym.address
        if name in self.data_symbols:
            return self.data_symbols[name]
        for i, b in enumerate(self._stubs):
            if b.name == name:
                return STUB_BASE + STUB_SIZE * i
        raise UnknownSymbol(f"{self.image.path} defines no symbol {name!r}")

    def has_symbol(self, name: str) -> bool:
        return name in self.image.symbols

    def location(self, pc: int) -> NativeLocation:
        func, line = self.srcmap.lookup(pc)
        return NativeLocation(pc, func, str(line) if line else None)

    # ================================================================== MMIO (BAR0)
    def attach_mmio(self, mmio: Any, phys: int, size: int) -> None:
        """Use ``mmio`` as BAR0 at physical address ``phys`` (``size`` bytes) and map it where
        the environment's address scheme puts it (phys, or base + phys)."""
        if phys % PAGE or size % PAGE or size <= 0:
            raise BindingError(f"BAR at 0x{phys:x}+0x{size:x} must be 4 KiB aligned")
        self._unmap_mmio_windows(bar0_only=True)  # a BAR0 that moves leaves its old place
        self.mmio = mmio
        self.bar_phys = phys
        self.bar_size = size
        self._read8 = getattr(mmio, "read8", None)
        self._read16 = getattr(mmio, "read16", None)
        self._write8 = getattr(mmio, "write8", None)
        self._write16 = getattr(mmio, "write16", None)
        self._map_mmio_window(self.phys_to_virt(phys), size, 0)

    def attach_bar(self, mmio: Any, phys: int, size: int) -> None:
        """Another PCI function's memory BAR (e.g. a second xHCI a driver's scan looks at) at
        physical ``phys``: mapped where the address scheme puts it, its accesses going to
        ``mmio``. A PCI configuration space with ``bar_at(phys)`` (the virtual bus) attaches
        the BAR that decodes an address the first time native code maps it."""
        if phys % PAGE or size % PAGE or size <= 0:
            raise BindingError(f"BAR at 0x{phys:x}+0x{size:x} must be 4 KiB aligned")
        if any(p == phys and n == size and m is mmio for p, n, m in self.other_bars):
            return
        self._map_mmio_window(self.phys_to_virt(phys), size, 0, mmio)
        self.other_bars.append((phys, size, mmio))

    def _bar_of(self, phys: int, size: int = 1) -> tuple[int, int, Any] | None:
        """(base, size, MMIO or None for BAR0) of the BAR holding ``[phys, phys + size)``."""
        if self.bar_phys is not None and self.bar_phys <= phys < self.bar_phys + self.bar_size:
            return (self.bar_phys, self.bar_size, None)
        for base, n, mmio in self.other_bars:
            if base <= phys < base + n:
                return (base, n, mmio)
        bar_at = getattr(self.ports.pci, "bar_at", None)
        found = bar_at(phys) if bar_at is not None else None
        if found is None:
            return None
        base, n, mmio = found
        self.attach_bar(mmio, base, n)
        return (base, n, mmio)

    def _map_mmio_window(self, virt: int, size: int, bar_offset: int, mmio: Any = None) -> None:
        """Map ``size`` bytes of the BAR from ``bar_offset`` at ``virt``.

        The window is host RAM with read and write hooks on its range rather than unicorn's
        ``mmio_map``: its callbacks see 64-bit and misaligned accesses split into dwords and
        bytes, the hooks see each access as the instruction does it (size and address), which
        is what the model must judge. A read hook stores the model's value into the window
        just before the instruction loads it."""
        for w in self._mmio_maps:
            if w.virt == virt and w.size == size and w.bar_offset == bar_offset:
                return
        self._check_free(virt, size, "BAR window")
        memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        pin = ctypes.c_char.from_buffer(memory)
        self.uc.mem_map_ptr(_ua(virt), size, UC_PROT_READ | UC_PROT_WRITE, ctypes.addressof(pin))
        window = _MmioWindow(virt, size, bar_offset, memoryview(memory), (memory, pin), mmio=mmio)
        window.hook = self.uc.hook_add(
            UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, self._on_mmio, window,
            _ua(virt), _ua(virt) + size - 1,
        )  # fmt: skip
        self._mmio_maps.append(window)

    def _unmap_mmio_windows(self, *, bar0_only: bool = False) -> None:
        keep = [w for w in self._mmio_maps if bar0_only and w.mmio is not None]
        for w in self._mmio_maps:
            if w in keep:
                continue
            try:
                self.uc.hook_del(w.hook)
                self.uc.mem_unmap(_ua(w.virt), w.size)
            except UcError:
                pass
        self._mmio_maps[:] = keep
        if not bar0_only:
            self.other_bars.clear()

    def _on_mmio(
        self, uc: Any, access: int, address: int, size: int, value: int, w: _MmioWindow
    ) -> None:
        local = address - _ua(w.virt)
        off = w.bar_offset + local
        if w.mmio is not None:
            self._other_bar_access(w, access, local, off, size, value)
            return
        try:
            if access == UC_MEM_READ:
                if size == 16:  # SSE: two qwords, low first
                    v = self._bar_read(off, 8) | (self._bar_read(off + 8, 8) << 64)
                else:
                    v = self._bar_read(off, size)
                w.view[local : local + size] = (v & ((1 << (8 * size)) - 1)).to_bytes(
                    size, "little"
                )
            elif size == 16:
                self._bar_write(off, 8, value & MASK64)
                self._bar_write(
                    off + 8, 8, int.from_bytes(w.view[local + 8 : local + 16], "little")
                )
            else:
                self._bar_write(off, size, value)
            if self.env.mmio_latency_us:
                self.clock.sleep(self.env.mmio_latency_us * 1e-6)
        except BaseException as exc:
            self._stop_with(exc)

    def _other_bar_access(
        self, w: _MmioWindow, access: int, local: int, off: int, size: int, value: int
    ) -> None:
        """Another function's BAR: dword and qword accesses (a bus reads anything else from
        the dword holding it; a sub-dword write there is refused)."""
        m = w.mmio
        try:
            if access == UC_MEM_READ:
                aligned = off & ~3
                if size == 8 and not off % 8:
                    v = m.read64(off)
                elif size <= 4 and off + size <= aligned + 4:
                    v = m.read32(aligned) >> (8 * (off - aligned))
                else:
                    raise MmioUnavailable(
                        f"{8 * size}-bit read at 0x{off:x} of another function's BAR"
                    )
                w.view[local : local + size] = (v & ((1 << (8 * size)) - 1)).to_bytes(
                    size, "little"
                )
            elif size == 4:
                m.write32(off, value)
            elif size == 8:
                m.write64(off, value)
            else:
                raise MmioUnavailable(
                    f"{8 * size}-bit MMIO write at 0x{off:x} of another function's BAR"
                )
        except BaseException as exc:
            self._stop_with(exc)

    def _bar_read(self, off: int, size: int) -> int:
        m = self.mmio
        if size == 4:
            value = m.read32(off)
        elif size == 8:
            value = m.read64(off)
        elif size == 1 and self._read8 is not None:
            value = self._read8(off)
        elif size == 2 and self._read16 is not None:
            value = self._read16(off)
        else:  # a plain Mmio: read the dword holding it
            aligned = off & ~3
            value = (m.read32(aligned) >> (8 * (off - aligned))) & ((1 << (8 * size)) - 1)
        self.mmio_log.append(("r", off, size, value))
        return int(value)

    def _bar_write(self, off: int, size: int, value: int) -> None:
        m = self.mmio
        self.mmio_log.append(("w", off, size, value))
        if size == 4:
            m.write32(off, value)
        elif size == 8:
            m.write64(off, value)
        elif size == 1 and self._write8 is not None:
            self._write8(off, value)
        elif size == 2 and self._write16 is not None:
            self._write16(off, value)
        else:
            raise MmioUnavailable(
                f"{8 * size}-bit MMIO write to BAR0+0x{off:x}: the bench's MMIO has no "
                f"write{8 * size} (a read-modify-write would change other fields)"
            )

    def mmio_accesses(self) -> list[MmioAccess]:
        """The last MMIO accesses, oldest first."""
        return [MmioAccess(op, off, w, v) for op, off, w, v in self.mmio_log]

    # ================================================================== addresses and DMA
    @property
    def identity(self) -> bool:
        return self._window_base == 0

    @property
    def bar_virt(self) -> int:
        """Where native code sees BAR0 (``phys_to_virt(bar_phys)``)."""
        if self.bar_phys is None:
            raise MmioUnavailable("this machine has no BAR (give bench= or mmio=)")
        return self.phys_to_virt(self.bar_phys)

    def phys_to_virt(self, phys: int) -> int:
        """Where native code sees physical address ``phys`` (identity or base + phys)."""
        return (self._window_base + phys) & MASK64

    def virt_to_phys(self, virt: int) -> int:
        """Physical (device) address of a virtual address in DMA memory, the BAR, or an
        explicit :meth:`map_physical` mapping. UnmappedPhysical for other memory (image,
        stack, scratch: not reachable by a device)."""
        for v, n, p in self._phys_maps:
            if v <= virt < v + n:
                return p + (virt - v)
        r = self._region_of(virt)
        if r is not None:
            if r.phys is None:
                raise UnmappedPhysical(
                    f"0x{virt:x} is in {r.name}, not DMA memory: a device cannot reach it "
                    "(allocate DMA memory through the environment)"
                )
            return r.phys + (virt - r.start)
        if self.identity:
            return virt
        if virt >= self._window_base:
            return virt - self._window_base
        raise UnmappedPhysical(f"0x{virt:x} is below the kernel window 0x{self._window_base:x}")

    def _require_dma(self) -> DmaSpace:
        if self.dma is None:
            raise DmaUnavailable("this machine has no DMA space (give bench= or dma=)")
        return self.dma

    def dma_alloc(
        self, size: int, *, align: int = PAGE, boundary: int = 0, limit: int | None = None
    ) -> DmaAllocation:
        """Zeroed DMA memory from the bench's DMA space, mapped zero-copy for native code."""
        space = self._require_dma()
        buf = space.alloc(size, align=align, boundary=boundary, limit=limit)
        virt = self._ensure_dma_mapped(buf.device_address, buf)
        alloc = DmaAllocation(virt, buf.device_address, buf)
        self._dma_allocs[virt] = alloc
        return alloc

    def dma_free(self, virt: int) -> None:
        alloc = self._dma_allocs.pop(virt, None)
        if alloc is None:
            raise BindingError(f"0x{virt:x} is not DMA memory this machine allocated")
        self._require_dma().free(alloc.buffer)
        self._drop_stale_dma()

    def dma_allocation(self, virt: int) -> DmaAllocation | None:
        return self._dma_allocs.get(virt)

    def _ensure_dma_mapped(self, phys: int, buf: DmaBuffer | None = None) -> int:
        """Map the DMA chunk holding ``phys`` (if not yet) and return phys_to_virt(phys)."""
        virt = self.phys_to_virt(phys)
        r = self._region_of(virt)
        if r is not None and r.phys is not None:
            return virt
        if buf is None:
            space = self._require_dma()
            buf, _ = space.lookup(phys)
        chunk = getattr(getattr(buf, "meta", None), "chunk", None)
        if chunk is not None:  # HeapDmaSpace: map the whole backing chunk (page aligned)
            start_phys, size, view = chunk.device_address, chunk.size, chunk.view
        else:
            start_phys, size, view = buf.device_address, buf.size, buf.view
            if start_phys % PAGE or size % PAGE:
                raise DmaUnavailable(f"{buf!r}: not page aligned, cannot be mapped zero-copy")
        start_virt = self.phys_to_virt(start_phys)
        self._check_free(start_virt, size, "DMA memory")
        pin_view = view[:]  # our own export: the chunk's mmap stays alive while we map it
        pin = ctypes.c_char.from_buffer(pin_view)
        self.uc.mem_map_ptr(
            _ua(start_virt), size, UC_PROT_READ | UC_PROT_WRITE, ctypes.addressof(pin)
        )
        self._add_region(
            _Region(start_virt, size, pin_view, "DMA memory", pin=pin, chunk=chunk, phys=start_phys)
        )
        return virt

    def _drop_stale_dma(self) -> None:
        """Unmap DMA chunks the space gave back to the system (their view is released)."""
        for r in [r for r in self._regions if r.chunk is not None]:
            try:
                r.chunk.view.nbytes  # noqa: B018 - raises once the chunk was released
            except ValueError:
                self.uc.mem_unmap(_ua(r.start), r.size)
                self._remove_region(r)
                r.pin = None
                r.view.release()

    def map_physical(self, virt: int, phys: int, size: int) -> int:
        """Map physical ``[phys, phys + size)`` at ``virt`` (page granular): part of the BAR
        (an MMIO window) or live DMA memory (zero-copy). Returns ``virt``."""
        if virt % PAGE != phys % PAGE:
            raise UnmappedPhysical(f"virt 0x{virt:x} and phys 0x{phys:x} differ within a page")
        v0, p0 = virt & ~(PAGE - 1), phys & ~(PAGE - 1)
        n = _page_up(phys + size) - p0
        bar = self._bar_of(p0)
        if bar is not None and p0 + n <= bar[0] + bar[1]:
            self._map_mmio_window(v0, n, p0 - bar[0], bar[2])
            return virt
        space = self._require_dma()
        try:
            buf, _ = space.lookup(p0)
        except Exception as exc:
            raise UnmappedPhysical(
                f"physical 0x{phys:x}+0x{size:x} is neither BAR0 (0x{self.bar_phys or 0:x}+"
                f"0x{self.bar_size:x}) nor live DMA memory"
            ) from exc
        if v0 == self.phys_to_virt(p0):
            self._ensure_dma_mapped(p0, buf)
            return virt
        chunk = getattr(buf.meta, "chunk", None)
        base_phys, view = (
            (chunk.device_address, chunk.view) if chunk else (buf.device_address, buf.view)
        )
        if p0 + n > base_phys + len(view):
            raise UnmappedPhysical(f"physical 0x{phys:x}+0x{size:x} crosses its DMA chunk")
        self._check_free(v0, n, "mapping")
        pin_view = view[p0 - base_phys : p0 - base_phys + n]
        pin = ctypes.c_char.from_buffer(pin_view)
        self.uc.mem_map_ptr(_ua(v0), n, UC_PROT_READ | UC_PROT_WRITE, ctypes.addressof(pin))
        self._add_region(
            _Region(v0, n, pin_view, "mapped DMA memory", pin=pin, chunk=chunk, phys=p0)
        )
        return virt

    def ioremap(self, phys: int, size: int) -> int:
        """Virtual address of physical ``phys`` (BAR or DMA), mapped if needed."""
        virt = self.phys_to_virt(phys)
        if self._bar_of(phys) is not None:
            return virt  # a BAR is mapped at phys_to_virt(its address) since it was attached
        self._ensure_dma_mapped(phys)
        return virt

    def alloc_virtual(self, size: int, align: int = PAGE) -> int:
        """A fresh, unmapped virtual range (for ``map_physical``), page aligned."""
        start = (self._vmap_next + align - 1) & -align
        end = start + _page_up(size)
        if end > VMAP_END:
            raise BindingError("virtual range allocator exhausted")
        self._vmap_next = end + PAGE
        return start

    def _try_lazy_map(self, address: int) -> bool:
        if self.dma is None:
            return False
        if self.identity:
            phys = address
        elif address >= self._window_base:
            phys = address - self._window_base
        else:
            return False
        try:
            self.dma.lookup(phys)
        except Exception:
            return False
        try:
            self._ensure_dma_mapped(phys)
        except NativeError:
            return False
        return True

    # ================================================================== time
    def delay(self, seconds: float) -> None:
        """Let ``seconds`` pass on the bench clock (delay bindings); counts against the call's
        virtual-time budget (VirtualTimeExhausted)."""
        if seconds <= 0:
            return
        if self._running and self._virtual_spent + seconds > self._virtual_budget:
            spent = self._virtual_spent
            self._virtual_spent += seconds
            raise self._fault(
                VirtualTimeExhausted,
                f"a delay of {seconds * 1e6:.0f} us after {spent:.6f} s of delays exceeds the "
                f"call's virtual-time budget of {self._virtual_budget} s",
                pc=self._caller_pc(),
            )
        self._virtual_spent += seconds
        self.clock.sleep(seconds)

    # ================================================================== calls
    def varargs(self, first: int, first_float: int = 0) -> _ArgCursor:
        """The variadic arguments of the running binding, from integer argument ``first``
        (0-based; e.g. ``printk(fmt, ...)`` -> ``m.varargs(1)``)."""
        return _ArgCursor(self, first, first_float)

    def format(self, fmt_address: int, first: int) -> str:
        """printf-style formatting of the running binding's format string and varargs."""
        cur = self.varargs(first, 0)
        return format_printf(self.read_cstr(fmt_address), cur.next_int, cur.next_float,
                             self.read_cstr)  # fmt: skip

    def call(
        self,
        target: str | int,
        *args: int,
        instructions: int | None = None,
        virtual_time: float | None = None,
        wall_time: float | None = None,
    ) -> int:
        """Call a function (name or address) with integer/pointer arguments (SysV ABI) and
        return rax (unsigned 64-bit; see :func:`as_signed`). Faults are NativeFault
        subclasses; exceptions of bindings and of the MMIO model propagate with a note."""
        if self._closed:
            raise NativeError("the machine is closed")
        if self._running:
            raise NativeError("Machine.call from inside a binding: native calls do not nest")
        address = self.symbol(target) if isinstance(target, str) else target
        name = target if isinstance(target, str) else self.srcmap.function(address)
        self._drop_stale_dma()
        uc: Any = self.uc
        stack_args = [a & MASK64 for a in args[6:]]
        args_start = (self.stack_top - 8 * len(stack_args) - 64) & ~0xF
        for i, a in enumerate(stack_args):
            self.write_u64(args_start + 8 * i, a)
        rsp = args_start - 8
        self.write_u64(rsp, RETURN_ADDRESS)
        self._entry_rsp = rsp
        self._entry_address = address
        write_reg = self._regs.write
        for reg, a in zip(ARG_REGS, args, strict=False):
            write_reg(reg, a)
        write_reg(RSP, rsp)
        write_reg(x86.UC_X86_REG_RBP, 0)
        write_reg(RAX, 0)
        budget = self.instructions if instructions is None else instructions
        wall = self.wall_time if wall_time is None else wall_time
        self._virtual_budget = self.virtual_time if virtual_time is None else virtual_time
        self._virtual_spent = 0.0
        self._pending = None
        self._fault_info = None
        self._interrupt = None
        self._invalid_insn_pc = None
        self._call_name = f"{name}({', '.join(hex(a & MASK64) for a in args)})"
        self._running = True
        error: UcError | None = None
        ticket = self._watchdog.arm(wall)
        try:
            with origin_provider(self._origin_now):
                uc.emu_start(address, RETURN_ADDRESS, count=budget)
        except UcError as exc:
            error = exc
        finally:
            timed_out = self._watchdog.disarm(ticket)
            self._running = False
        pc = self._regs.read(RIP)
        if self._pending is not None:
            exc, loc = self._pending
            self._pending = None
            if not isinstance(exc, NativeFault):
                where = str(loc) if loc is not None else "native code"
                setattr(exc, "native_location", loc)  # noqa: B010 - any exception type
                exc.add_note(f"raised while native code ran {self._call_name}: at {where}")
            raise exc
        if error is not None or self._interrupt is not None or self._invalid_insn_pc is not None:
            raise self._translate(error, pc)
        if pc == RETURN_ADDRESS:
            return self._regs.read(RAX)
        if timed_out:
            raise self._fault(WallTimeExhausted, f"still running after {wall} s", pc=pc)
        if self._previous_is_hlt(pc):
            raise self._fault(CpuException, "hlt: the CPU halted (no interrupts here)",
                              pc=pc - 1)  # fmt: skip
        raise self._fault(RunawayLoop, f"{budget} instructions executed without returning", pc=pc)

    def _previous_is_hlt(self, pc: int) -> bool:
        try:
            return self.read(pc - 1, 1) == b"\xf4"
        except NativeError:
            return False

    # ------------------------------------------------------------------ hooks
    def _on_stub(self, uc: Any, address: int, size: int, _: object) -> None:
        bound = self._stubs[(address - STUB_BASE) >> 4]
        read_reg = self._regs.read
        rsp = read_reg(RSP)
        self._frame_rsp = rsp
        n = bound.nargs
        try:
            if n <= 6:
                args = [read_reg(r) for r in ARG_REGS[:n]]
            else:
                args = [read_reg(r) for r in ARG_REGS]
                args += [self.read_u64(rsp + 8 * (i + 1)) for i in range(n - 6)]
            result = bound.fn(self, *args)
        except BaseException as exc:
            self._stop_with(exc, self._caller_pc())
            return
        self._regs.write(RAX, 0 if result is None else int(result))

    def _caller_pc(self) -> int:
        """In a binding: the call instruction's address in native code (return address - 1)."""
        try:
            return self.read_u64(self.uc.reg_read(RSP)) - 1
        except NativeError:
            return int(self.uc.reg_read(RIP))

    def _origin_now(self) -> str | None:
        pc = int(self.uc.reg_read(RIP))
        if STUB_BASE <= pc < STUB_BASE + STUB_SIZE * MAX_STUBS:
            pc = self._caller_pc()
        func, line = self.srcmap.lookup(pc)
        return f"{line} ({func})" if line else func

    def _stop_with(self, exc: BaseException, pc: int | None = None) -> None:
        if self._pending is None:
            where = self.location(int(self.uc.reg_read(RIP)) if pc is None else pc)
            self._pending = (exc, where)
        self.uc.emu_stop()

    def _on_invalid(
        self, uc: Any, access: int, address: int, size: int, value: int, _: object
    ) -> bool:
        address = _canonical(address)
        if access in _UNMAPPED and self._try_lazy_map(address):
            return True
        self._fault_info = (_ACCESS.get(access, "access"), address, size, int(uc.reg_read(RIP)))
        return False

    def _on_interrupt(self, uc: Any, intno: int, _: object) -> None:
        self._interrupt = (intno, int(uc.reg_read(RIP)))
        uc.emu_stop()

    def _on_invalid_insn(self, uc: Any, _: object) -> bool:
        self._invalid_insn_pc = int(uc.reg_read(RIP))
        return False

    def _on_port_in(self, uc: Any, port: int, size: int, _: object) -> int:
        try:
            return self.ports.read(port, size)
        except BaseException as exc:
            self._stop_with(exc)
            return 0

    def _on_port_out(self, uc: Any, port: int, size: int, value: int, _: object) -> None:
        try:
            self.ports.write(port, size, value)
        except BaseException as exc:
            self._stop_with(exc)

    # ------------------------------------------------------------------ fault reports
    def disassemble(self, pc: int) -> str:
        try:
            code = self.read(pc, 16)
        except NativeError:
            return "<no code at this address>"
        for insn in self._disasm.disasm(code, pc, 1):
            return f"{insn.mnemonic} {insn.op_str}".strip()
        return f"<undecodable bytes {code[:4].hex()}>"

    def _fault(
        self,
        cls: type[NativeFault],
        detail: str,
        *,
        pc: int,
        address: int | None = None,
        access: str | None = None,
        context: str = "",
    ) -> NativeFault:
        loc = self.location(pc)
        return cls(
            detail,
            pc=pc,
            location=loc.function,
            source=loc.source,
            address=address,
            access=access,
            instruction=self.disassemble(pc),
            mmio=self.mmio_accesses(),
            call=self._call_name,
            context=context,
        )

    def _in_code(self, address: int) -> bool:
        if any(a <= address < b for a, b in self._code_ranges):
            return True
        return STUB_BASE <= address < STUB_BASE + STUB_SIZE * len(self._stubs)

    def _translate(self, error: UcError | None, pc: int) -> NativeFault:
        if self._interrupt is not None:
            vector, ipc = self._interrupt
            if vector == 0:
                return self._fault(DivisionByZero, "divide error (#DE)", pc=ipc)
            if vector == 6:
                return self._fault(IllegalInstruction, "invalid opcode (#UD)", pc=ipc)
            fault = self._fault(CpuException, f"CPU exception vector {vector}", pc=ipc)
            assert isinstance(fault, CpuException)
            fault.vector = vector
            return fault
        if self._invalid_insn_pc is not None:
            return self._fault(IllegalInstruction, "invalid opcode", pc=self._invalid_insn_pc)
        errno = error.errno if error is not None else 0
        if self._fault_info is not None:
            access, address, size, fpc = self._fault_info
            if access == "fetch" or errno in (ucc.UC_ERR_FETCH_UNMAPPED, ucc.UC_ERR_FETCH_PROT):
                return self._nowhere(address)
            rsp = int(self.uc.reg_read(RSP))
            near_stack = self.stack_bottom - STACK_GUARD <= address < self.stack_bottom
            if near_stack or rsp < self.stack_bottom:
                return self._fault(
                    StackOverflow,
                    f"{access} of {size} bytes at 0x{address:x}, below the stack "
                    f"(0x{self.stack_bottom:x}-0x{self.stack_top:x}, rsp 0x{rsp:x})",
                    pc=fpc, address=address, access=access,
                )  # fmt: skip
            what = "unmapped" if errno in (ucc.UC_ERR_READ_UNMAPPED, ucc.UC_ERR_WRITE_UNMAPPED) \
                else "protected"  # fmt: skip
            hint = " (a NULL pointer dereference)" if address < NULL_GUARD else ""
            return self._fault(
                InvalidMemoryAccess,
                f"{access} of {size} bytes at {what} address 0x{address:x}{hint}",
                pc=fpc, address=address, access=access,
            )  # fmt: skip
        if errno in (ucc.UC_ERR_FETCH_UNMAPPED, ucc.UC_ERR_FETCH_PROT):
            return self._nowhere(pc)
        if errno == ucc.UC_ERR_INSN_INVALID:
            return self._fault(IllegalInstruction, "invalid opcode", pc=pc)
        if errno == ucc.UC_ERR_EXCEPTION:
            return self._fault(CpuException, "unhandled CPU exception", pc=pc)
        return self._fault(CpuException, f"emulator error: {error}", pc=pc)

    def _nowhere(self, target: int) -> NativeFault:
        """Execution went to ``target`` outside code: find where it came from (the call
        through a bad pointer, or the function whose return address was overwritten)."""
        rsp = int(self.uc.reg_read(RSP))
        try:
            top = self.read_u64(rsp)
        except NativeError:
            top = 0
        call_pc = self._call_before(top)
        if call_pc is not None:
            return self._fault(
                ReturnToNowhere,
                f"a call went to 0x{target:x}, outside every code region (a bad function "
                "pointer)",
                pc=call_pc, address=target, access="fetch",
            )  # fmt: skip
        try:
            popped = self.read_u64(rsp - 8)
        except NativeError:
            popped = None
        if popped == target:
            culprit, parent = self._returner(rsp)
            detail = (
                f"a ret went to 0x{target:x}: the return address at 0x{rsp - 8:x} was overwritten"
            )
            context = ""
            if parent is not None and culprit is not None:
                p = self.location(parent)
                context = f"The function that returned was called from {p}"
            return self._fault(ReturnToNowhere, detail, pc=culprit or target, address=target,
                               access="fetch", context=context)  # fmt: skip
        return self._fault(
            ReturnToNowhere,
            f"execution went to 0x{target:x}, outside every code region (a jump through a bad "
            "pointer)",
            pc=target, address=target, access="fetch",
        )  # fmt: skip

    def _call_before(self, return_address: int) -> int | None:
        """The address of the call instruction ending at ``return_address``, if there is one."""
        if not self._in_code(return_address - 1):
            return None
        for length in (5, 2, 3, 6, 7, 4, 8, 9):
            start = return_address - length
            try:
                code = self.read(start, length)
            except NativeError:
                continue
            for insn in self._disasm.disasm(code, start, 1):
                if insn.size == length and insn.mnemonic == "call":
                    return start
        return None

    def _returner(self, rsp: int) -> tuple[int | None, int | None]:
        """(pc of the ``ret`` that went wrong, the call site that called its function).

        The smashed return slot was at ``rsp - 8``. If that is the entry's own slot, the entry
        function returned. Otherwise the first return address above ``rsp`` belongs to the
        frame of the caller P of the function F that returned: P is the target of the call
        before it (or the entry function, for the trampoline's slot), and F is found when P
        calls exactly one function directly."""
        if rsp - 8 == self._entry_rsp:
            return self._single_ret(self._entry_address), None
        parent: int | None = None
        address = rsp
        limit = min(self.stack_top, rsp + 4096)
        while address < limit:
            word = self.read_u64(address)
            if word == RETURN_ADDRESS and address == self._entry_rsp:
                parent = self._entry_address
                break
            call_pc = self._call_before(word)
            if call_pc is not None:
                parent = self._direct_target(call_pc)
                break
            address += 8
        if parent is None:
            return None, None
        sites = self._direct_calls(parent)
        targets = {t for _, t in sites}
        if len(targets) != 1:
            return None, None
        (callee,) = targets
        return self._single_ret(callee), sites[0][0]

    def _direct_calls(self, function: int) -> list[tuple[int, int]]:
        """(call site, target) of every direct call in the function at ``function``."""
        sym = self.srcmap.symbol_at(function)
        if sym is None or not sym.size:
            return []
        try:
            code = self.read(sym.address, sym.size)
        except NativeError:
            return []
        out = []
        for insn in self._disasm.disasm(code, sym.address):
            if insn.mnemonic == "call" and insn.op_str.startswith("0x"):
                target = int(insn.op_str, 16)
                if self._in_code(target):
                    out.append((insn.address, target))
        return out

    def _direct_target(self, call_pc: int) -> int | None:
        try:
            code = self.read(call_pc, 16)
        except NativeError:
            return None
        for insn in self._disasm.disasm(code, call_pc, 1):
            if insn.op_str.startswith("0x"):
                try:
                    return int(insn.op_str, 16)
                except ValueError:
                    return None
        return None

    def _single_ret(self, entry: int) -> int | None:
        """Address of the (last) ``ret`` of the function starting at ``entry``."""
        sym = self.srcmap.symbol_at(entry)
        if sym is None or not sym.size:
            return entry
        try:
            code = self.read(sym.address, sym.size)
        except NativeError:
            return entry
        last = None
        for insn in self._disasm.disasm(code, sym.address):
            if insn.mnemonic == "ret":
                last = insn.address
        return last if last is not None else entry

    # ================================================================== lifecycle
    def close(self) -> None:
        """Unmap everything (DMA chunks are unpinned) and release the emulator. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._watchdog.close()
        for r in list(self._regions):
            try:
                self.uc.mem_unmap(_ua(r.start), r.size)
            except UcError:
                pass
            if r.chunk is not None:
                r.view.release()
            r.pin = None
        self._regions.clear()
        self._region_starts.clear()
        self._unmap_mmio_windows()
        self._dma_allocs.clear()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        image = getattr(self, "image", None)
        return f"Machine({image.path if image else '?'!r}, env={self.env.name!r})"
