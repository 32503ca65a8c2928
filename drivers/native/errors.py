"""Errors of :mod:`dbc_harness.drivers.native`: one family, :class:`NativeError`.

Three branches:

* :class:`ElfLoadError`: the object file cannot be loaded (``NotX86_64Elf``, ``TruncatedElf``,
  ``MalformedElf``, ``UnsupportedRelocation``, ``RelocationOverflow``, ``LayoutConflict``).
  Raised by the loader before any code runs.
* :class:`BindingError`: the environment does not fit the object (``UnboundSymbols``: every
  undefined symbol without a binding, all at once; ``UnknownSymbol``; ``EnvironmentFileError``;
  ``UnmappedPhysical``; ``DmaUnavailable``; ``MmioUnavailable``).
* :class:`NativeFault`: the code ran and did something a CPU would trap on, or ran out of its
  budget. Every fault carries ``pc``, ``location`` (``function+0xoff``), ``source``
  (``file.c:line`` or ``None`` without DWARF), ``address`` (the faulting address, if any),
  ``instruction`` (capstone text at ``pc``) and ``mmio`` (the last MMIO accesses, oldest first);
  ``str()`` is one readable paragraph.

Exceptions raised by a Python binding or by the bench's MMIO model while native code runs (e.g.
the virtual xHCI's ``SpecViolation`` in strict mode) keep their own type: they leave
:meth:`Machine.call` with a note (``add_note``) and an attribute ``native_location`` naming the
native code that was running (see :class:`NativeLocation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class NativeError(Exception):
    """Base class of every error raised by :mod:`dbc_harness.drivers.native`."""


# ---------------------------------------------------------------------------------- loader
class ElfLoadError(NativeError):
    """The ELF file cannot be loaded."""


class NotX86_64Elf(ElfLoadError):
    """Not an ELF64 little-endian x86-64 file. ``seen``: what the header says."""

    def __init__(self, seen: str, path: str = "") -> None:
        self.seen = seen
        where = f"{path}: " if path else ""
        super().__init__(f"{where}not an x86-64 ELF64 object (seen: {seen})")


class TruncatedElf(ElfLoadError):
    """The file ends before a header, table or section it declares."""


class MalformedElf(ElfLoadError):
    """The file is inconsistent (bad section link, symbol index, unsupported ELF type...)."""


class UnsupportedRelocation(ElfLoadError):
    """A relocation type the loader does not implement."""

    def __init__(self, type_name: str, type_number: int, section: str, offset: int) -> None:
        self.type_name = type_name
        self.type_number = type_number
        self.section = section
        self.offset = offset
        super().__init__(
            f"unsupported relocation {type_name} (type {type_number}) in {section} at offset "
            f"0x{offset:x}"
        )


class RelocationOverflow(ElfLoadError):
    """A relocated value does not fit its field (e.g. a 32-bit PC-relative reach)."""

    def __init__(
        self, type_name: str, symbol: str, value: int, section: str, offset: int, bits: int
    ) -> None:
        self.type_name = type_name
        self.symbol = symbol
        self.value = value
        self.section = section
        self.offset = offset
        super().__init__(
            f"relocation {type_name} for {symbol or '<section>'} in {section} at offset "
            f"0x{offset:x}: value 0x{value & (2**64 - 1):x} does not fit {bits} bits"
        )


class LayoutConflict(ElfLoadError):
    """A segment of an executable overlaps the emulator's own regions or another mapping."""


# ---------------------------------------------------------------------------------- binding
class BindingError(NativeError):
    """The environment and the object do not fit together."""


@dataclass(frozen=True)
class UnboundSymbol:
    """One undefined symbol: its name and how the object uses it."""

    name: str
    #: "call" (only called: needs a function binding), "data" or "call+data"
    use: str
    #: where it is referenced, e.g. ("dbc.c .text+0x12", ...), at most a few
    sites: tuple[str, ...]

    def __str__(self) -> str:
        where = f" (e.g. {self.sites[0]})" if self.sites else ""
        return f"{self.name} [{self.use}]{where}"


class UnboundSymbols(BindingError):
    """Undefined symbols with no binding in the environment, all of them (``.symbols``)."""

    def __init__(self, symbols: Sequence[UnboundSymbol], path: str = "") -> None:
        self.symbols = tuple(symbols)
        self.names = tuple(s.name for s in self.symbols)
        what = f"{path} needs" if path else "the object needs"
        lines = "; ".join(str(s) for s in self.symbols)
        super().__init__(
            f"{what} {len(self.symbols)} symbol(s) the environment does not bind: {lines}. "
            "Bind functions with Environment(functions={...}) and data with data={...}"
        )


class UnknownSymbol(BindingError, KeyError):
    """A name asked for (``call``, ``symbol``) is not defined by the object."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown symbol"


class EnvironmentFileError(BindingError):
    """An ENV.py file cannot be loaded or does not define ``ENV``."""


class UnmappedPhysical(BindingError):
    """A physical range asked to be mapped is neither the bench's BAR nor live DMA memory."""


class DmaUnavailable(BindingError):
    """DMA memory was asked for but the machine has no DMA space."""


class MmioUnavailable(BindingError):
    """The BAR was asked for but the machine has no MMIO provider."""


class UnhandledPort(BindingError):
    """An I/O port no handler claims, with ``unknown_ports="error"`` (see pci_ports)."""


# ---------------------------------------------------------------------------------- faults
@dataclass(frozen=True)
class NativeLocation:
    """Where native code was: ``pc``, ``function+0xoff`` and ``file.c:line`` (or None)."""

    pc: int
    function: str
    source: str | None

    def __str__(self) -> str:
        text = f"{self.function} (pc 0x{self.pc:x})"
        return f"{text} at {self.source}" if self.source else text


@dataclass(frozen=True)
class MmioAccess:
    """One MMIO access done by native code (``offset`` from the start of BAR0)."""

    op: str  # "r" or "w"
    offset: int
    width: int  # bytes
    value: int

    def __str__(self) -> str:
        return f"{self.op}{8 * self.width} BAR0+0x{self.offset:x} = 0x{self.value:x}"


class NativeFault(NativeError):
    """Native code trapped or ran out of budget. See the module docstring for the fields."""

    #: short name of what happened, e.g. "invalid memory access"
    what = "fault"

    def __init__(
        self,
        detail: str,
        *,
        pc: int,
        location: str,
        source: str | None,
        address: int | None = None,
        access: str | None = None,
        instruction: str = "",
        mmio: Sequence[MmioAccess] = (),
        call: str = "",
        context: str = "",
    ) -> None:
        self.detail = detail
        self.pc = pc
        self.location = location
        self.source = source
        self.address = address
        self.access = access
        self.instruction = instruction
        self.mmio = tuple(mmio)
        self.call = call
        self.context = context
        super().__init__(self._paragraph())

    def _paragraph(self) -> str:
        where = f"{self.location}" + (f" ({self.source})" if self.source else "")
        parts = [f"{self.what.capitalize()} in {where}: {self.detail}."]
        if self.instruction:
            parts.append(f"Instruction at 0x{self.pc:x}: {self.instruction}.")
        if self.context:
            parts.append(self.context.rstrip(".") + ".")
        if self.call:
            parts.append(f"While running {self.call}.")
        if self.mmio:
            last = ", ".join(str(a) for a in self.mmio[-4:])
            parts.append(f"Last MMIO accesses: {last}.")
        else:
            parts.append("No MMIO access before it.")
        return " ".join(parts)


class InvalidMemoryAccess(NativeFault):
    """A read, write or instruction fetch of unmapped or protected memory (``access``:
    "read", "write" or "fetch"; ``address``: the address touched)."""

    what = "invalid memory access"


class ReturnToNowhere(InvalidMemoryAccess):
    """Execution continued outside every code region: a ``ret`` to a smashed return address or
    a call/jump through a bad function pointer (``address``: where it went)."""

    what = "return to nowhere"


class StackOverflow(InvalidMemoryAccess):
    """The stack grew into its guard region (deep or endless recursion, huge locals)."""

    what = "stack overflow"


class BudgetExhausted(NativeFault):
    """A per-call budget ran out (``budget``: "instructions", "virtual time" or "wall time")."""

    what = "budget exhausted"
    budget = ""


class RunawayLoop(BudgetExhausted):
    """The instruction budget of the call ran out (an endless loop, or a poll that never ends)."""

    what = "runaway loop"
    budget = "instructions"


class VirtualTimeExhausted(BudgetExhausted):
    """The call let more virtual time pass (through delay bindings) than its budget allows."""

    what = "virtual time budget exhausted"
    budget = "virtual time"


class WallTimeExhausted(BudgetExhausted):
    """The call ran longer than its wall-clock deadline."""

    what = "wall-clock deadline exceeded"
    budget = "wall time"


class IllegalInstruction(NativeFault):
    """An undefined or privileged-only instruction the emulator cannot execute (e.g. ``ud2``)."""

    what = "illegal instruction"


class DivisionByZero(NativeFault):
    """``div``/``idiv`` by zero or with a quotient that does not fit (#DE)."""

    what = "division by zero"


class CpuException(NativeFault):
    """Any other CPU exception (``vector``: the interrupt number, e.g. 3 for ``int3``)."""

    what = "CPU exception"
    vector = -1
