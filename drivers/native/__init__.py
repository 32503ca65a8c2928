"""Run unmodified C drivers (x86-64 object code) under CPU emulation, wired to a bench.

The engine: unicorn 2 (QEMU's TCG; the engine's core is GPLv2), pyelftools (ELF, DWARF line
tables), capstone (fault disassembly). Public API, all importable from this package::

    from dbc_harness.drivers.native import Environment, KernelWindow, Machine, bindings

    ENV = Environment(
        functions={**bindings.COMMON, "alloc_page": bindings.alloc_page,
                   "virt_to_phys": bindings.virt_to_phys, "ioremap": bindings.ioremap},
        data={"kernel_vm": 64},
        dma="identity",  # or KernelWindow(0xFFFF_8880_0000_0000)
    )
    with Machine("dbc.o", ENV, bench=bench, bar_phys=0xF000_0000) as m:
        status = m.call("dbc_init", m.phys_to_virt(m.bar_phys))  # rax, unsigned 64-bit
        print(m.log)  # printk output

:class:`Machine` (``runner.py``)
    ``Machine(obj, env=None, *, bench=None, mmio=None, dma=None, clock=None, pci=None,
    bar_phys=None, bar_size=None, instructions=200_000_000, virtual_time=60.0, wall_time=60.0,
    stack_size=256 KiB, scratch_size=4 MiB, mmio_log_size=64, name="")``. ``obj``: path or
    bytes of an x86-64 ``.o`` / ``ET_EXEC`` / ``ET_DYN``. ``bench``: anything with ``mmio``,
    ``dma``, ``clock`` (explicit arguments override). Loading checks every undefined symbol
    against ``env`` first (:class:`UnboundSymbols` lists all missing ones). BAR0 (``mmio``) is
    mapped at ``phys_to_virt(bar_phys)`` (default ``bar_phys`` 0xF000_0000, size
    ``mmio.size`` or 64 KiB); ``attach_mmio(mmio, phys, size)`` moves/attaches it later (e.g.
    when a PCI model's BAR0 is programmed).

    * ``call(name_or_address, *ints, instructions=, virtual_time=, wall_time=) -> int``: SysV
      call, returns rax (``as_signed(v, 32)`` for a C ``int``). Budgets per call: instructions
      (:class:`RunawayLoop`), virtual time let pass by delay bindings
      (:class:`VirtualTimeExhausted`), wall time (:class:`WallTimeExhausted`).
    * memory: ``read(addr, n)``, ``write(addr, data)``, ``view(addr, n)`` (zero-copy
      memoryview or None), ``read_u8/u32/u64``, ``write_u32/u64``, ``read_cstr``; scratch
      (non-DMA) memory for arguments: ``alloc(size, align)``, ``alloc_bytes(data)``,
      ``cstring(text)``, ``reset_scratch()``.
    * DMA (zero-copy: the same bytes the device model reads): ``dma_alloc(size, align=4096,
      boundary=0, limit=None) -> DmaAllocation(virt, phys, buffer)``, ``dma_free(virt)``,
      ``dma_allocation(virt)``, ``virt_to_phys``, ``phys_to_virt``, ``map_physical(virt, phys,
      size)``, ``ioremap(phys, size)``, ``alloc_virtual(size)``. Memory the bench's DMA space
      handed out to Python code is mapped on first touch by native code, too.
    * symbols and places: ``symbol(name)``, ``has_symbol``, ``location(pc) -> NativeLocation``
      (``function+0xoff``, ``file.c:line``), ``srcmap`` (:class:`SourceMap`), ``image``
      (:class:`LinkedImage`), ``disassemble(pc)``.
    * records: ``log`` (lines printed by logging bindings), ``mmio_log`` / ``mmio_accesses()``
      (the last MMIO accesses), ``ports.log`` (port I/O, :class:`PortAccess`).
    * in a binding: ``varargs(first) -> cursor`` (``next_int()``, ``next_float()``),
      ``format(fmt_address, first)`` (printf), ``delay(seconds)`` (bench clock), ``clock``,
      ``uc`` (the unicorn engine itself, for anything else).
    * ``close()`` / context manager.

:class:`Environment` (``environment.py``): ``functions`` (name -> binding ``fn(m, *args)``),
``data`` (name -> size | bytes | :class:`DataSlot`), ``dma`` (``"identity"`` or
:class:`KernelWindow`), ``ports`` (port -> handler with ``port_read``/``port_write``),
``unknown_ports`` (``"record"``/``"error"``), ``mmio_latency_us``; decorator
``@ENV.function("name")``; ``extended(functions=..., **fields)``; :func:`load_environment`
(an ENV.py defining ``ENV``). The binding contract is in the environment module's docstring.

:mod:`bindings`: ``COMMON`` (= ``STRING`` + ``LOGGING`` + ``DELAYS`` + ``LOCKS``) and memory/
address bindings (``alloc_page``, ``alloc_pages``, ``free_page``, ``dma_alloc``, ``dma_free``,
``dma_alloc_coherent``, ``dma_free_coherent``, ``virt_to_phys``, ``phys_to_virt``,
``ioremap``, ``iounmap``, ``map_physical``, ``alloc_virtual``, ``abort``, ``panic``).

Port I/O (``pci_ports.py``): :class:`PciConfigSpace` is the seam for PCI configuration
mechanism #1 (``read_config(bus, dev, fn, offset, size) -> int | None``, ``write_config(...,
value)``); pass it as ``Machine(pci=...)``. Without it every function reads all ones.

Findings: while native code runs, :func:`dbc_harness.drivers.origin.current_origin` names the
native access (``"dbc.c:212 (dbc_init+0x4c)"``); the virtual xHCI attaches it to each
``Finding.origin``.

The generic xHCI host path of the reference driver (``xhci_noop.py``, not imported here):
:class:`~dbc_harness.drivers.native.xhci_noop.NativeXhciProbe` runs ``reference/xhci_noop.c``
(extended capability walk, No Op Commands on the command ring) on a bench's ``mmio``/``dma``:
what native code proves on a controller without a DbC (QEMU's xHCIs).

Errors (``errors.py``): :class:`NativeError` > :class:`ElfLoadError` (:class:`NotX86_64Elf`,
:class:`TruncatedElf`, :class:`MalformedElf`, :class:`UnsupportedRelocation`,
:class:`RelocationOverflow`, :class:`LayoutConflict`), :class:`BindingError`
(:class:`UnboundSymbols`, :class:`UnknownSymbol`, :class:`EnvironmentFileError`,
:class:`UnmappedPhysical`, :class:`DmaUnavailable`, :class:`MmioUnavailable`,
:class:`UnhandledPort`), :class:`NativeFault` (:class:`InvalidMemoryAccess` >
:class:`ReturnToNowhere`, :class:`StackOverflow`; :class:`BudgetExhausted` >
:class:`RunawayLoop`, :class:`VirtualTimeExhausted`, :class:`WallTimeExhausted`;
:class:`IllegalInstruction`, :class:`DivisionByZero`, :class:`CpuException`). A fault carries
``pc``, ``location``, ``source``, ``address``, ``access``, ``instruction``, ``mmio``.
"""

from __future__ import annotations

from dbc_harness.drivers.native import bindings
from dbc_harness.drivers.native.elf import LinkedImage, Symbol, parse_elf
from dbc_harness.drivers.native.environment import (
    Binding,
    DataSlot,
    Environment,
    KernelWindow,
    PortHandler,
    load_environment,
)
from dbc_harness.drivers.native.errors import (
    BindingError,
    BudgetExhausted,
    CpuException,
    DivisionByZero,
    DmaUnavailable,
    ElfLoadError,
    EnvironmentFileError,
    IllegalInstruction,
    InvalidMemoryAccess,
    LayoutConflict,
    MalformedElf,
    MmioAccess,
    MmioUnavailable,
    NativeError,
    NativeFault,
    NativeLocation,
    NotX86_64Elf,
    RelocationOverflow,
    ReturnToNowhere,
    RunawayLoop,
    StackOverflow,
    TruncatedElf,
    UnboundSymbol,
    UnboundSymbols,
    UnhandledPort,
    UnknownSymbol,
    UnmappedPhysical,
    UnsupportedRelocation,
    VirtualTimeExhausted,
    WallTimeExhausted,
)
from dbc_harness.drivers.native.pci_ports import PciConfigSpace, PortAccess, PortBus
from dbc_harness.drivers.native.runner import DmaAllocation, Machine, ManualClock, as_signed
from dbc_harness.drivers.native.srcmap import SourceLine, SourceMap

__all__ = [
    "Binding",
    "BindingError",
    "BudgetExhausted",
    "CpuException",
    "DataSlot",
    "DivisionByZero",
    "DmaAllocation",
    "DmaUnavailable",
    "ElfLoadError",
    "Environment",
    "EnvironmentFileError",
    "IllegalInstruction",
    "InvalidMemoryAccess",
    "KernelWindow",
    "LayoutConflict",
    "LinkedImage",
    "Machine",
    "MalformedElf",
    "ManualClock",
    "MmioAccess",
    "MmioUnavailable",
    "NativeError",
    "NativeFault",
    "NativeLocation",
    "NotX86_64Elf",
    "PciConfigSpace",
    "PortAccess",
    "PortBus",
    "PortHandler",
    "RelocationOverflow",
    "ReturnToNowhere",
    "RunawayLoop",
    "SourceLine",
    "SourceMap",
    "StackOverflow",
    "Symbol",
    "TruncatedElf",
    "UnboundSymbol",
    "UnboundSymbols",
    "UnhandledPort",
    "UnknownSymbol",
    "UnmappedPhysical",
    "UnsupportedRelocation",
    "VirtualTimeExhausted",
    "WallTimeExhausted",
    "as_signed",
    "bindings",
    "load_environment",
    "parse_elf",
]
