"""Environments: what a native driver's kernel API means on the bench.

A C driver compiled as its kernel compiles it leaves undefined symbols: ``printk``, ``memset``,
``udelay``, a page allocator, ``virt_to_phys``, a way to map BAR0... An :class:`Environment` binds
each of them to a Python implementation (a *binding*), or, for data symbols (``extern struct vm
kernel_vm;``), to a *data slot* of emulated memory. Write one as a small module, ``ENV.py``::

    from dbc_harness.drivers.native import Environment, KernelWindow, bindings

    ENV = Environment(
        functions={
            **bindings.COMMON,  # mem*/str*, printf family, delays, spin locks, barriers
            "kalloc_page": bindings.alloc_page,  # a zeroed 4 KiB DMA page, returns virt
            "virt_to_phys": bindings.virt_to_phys,
            "ioremap": bindings.ioremap,  # ioremap(phys, size) -> virt of the BAR window
        },
        data={"kernel_vm": 64},  # 64 zero bytes; or bytes, or DataSlot(size, init, align)
        dma=KernelWindow(0xFFFF_8880_0000_0000),  # or "identity" (virt == phys, the default)
    )


    @ENV.function("vm_map")  # decorator style for what the library does not have
    def vm_map(m, ctx, virt, phys, pages):
        m.map_physical(virt, phys, pages * 4096)
        return 0

A binding is a Python function ``fn(m, *args) -> int | None``: ``m`` is the running
:class:`~dbc_harness.drivers.native.runner.Machine` (memory access, DMA, clock, log, varargs),
the other parameters are the C arguments as unsigned 64-bit integers (SysV: rdi, rsi, rdx, rcx,
r8, r9, then the stack), as many as the function declares; a ``*args`` parameter marks a
variadic C function (read the variadic part with ``m.varargs(first_index)``). The return value
goes to rax (``None`` -> 0; negative ints are two's complement). An exception raised by a
binding stops the native code and leaves ``Machine.call`` with the native caller's location.

``dma``: how the driver's virtual addresses relate to physical (device) addresses: ``"identity"``
(phys == virt; BAR0 and DMA memory appear at their physical addresses) or
``KernelWindow(base)`` (virt = base + phys for DMA memory and BAR0, like a kernel's direct map).

Ports: every ``in``/``out`` goes through :mod:`~dbc_harness.drivers.native.pci_ports`: PCI
configuration mechanism #1 (0xCF8/0xCFC-0xCFF) to the machine's ``pci`` provider, ``ports``
handlers here for anything else (e.g. a COM1 console), and unclaimed ports per ``unknown_ports``:
``"record"`` (reads are all ones, writes dropped, both logged in ``Machine.port_log``) or
``"error"`` (:class:`~dbc_harness.drivers.native.errors.UnhandledPort`).

``mmio_latency_us``: virtual time each MMIO access lets pass on the bench clock (0: none). A
driver that polls a register in a bare loop (no delay call) needs it on a deterministic virtual
bench, whose time moves only when someone lets it.

Load an ENV.py with :func:`load_environment` (it must define ``ENV``).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from dbc_harness.drivers.native.errors import BindingError, EnvironmentFileError

if TYPE_CHECKING:
    pass

#: a binding: fn(machine, *int_args) -> int | None
Binding = Callable[..., "int | None"]


class PortHandler(Protocol):
    """An I/O port handler (``ports={0x3F8: handler}``): ``size`` is 1, 2 or 4 bytes."""

    def port_read(self, port: int, size: int) -> int: ...

    def port_write(self, port: int, size: int, value: int) -> None: ...


@dataclass(frozen=True)
class DataSlot:
    """Memory for an undefined data symbol: ``size`` bytes, starting with ``init``."""

    size: int
    init: bytes = b""
    align: int = 16

    def __post_init__(self) -> None:
        if self.size <= 0 or len(self.init) > self.size:
            raise BindingError(f"DataSlot: size {self.size} must be > 0 and >= len(init)")
        if self.align <= 0 or self.align & (self.align - 1):
            raise BindingError(f"DataSlot: align {self.align} is not a power of two")


@dataclass(frozen=True)
class KernelWindow:
    """Kernel-virtual addresses: ``virt = base + phys`` (DMA memory and BAR0)."""

    base: int = 0xFFFF_8880_0000_0000

    def __post_init__(self) -> None:
        if self.base % 0x1000 or not 0 <= self.base < 2**64:
            raise BindingError(f"KernelWindow base 0x{self.base:x} is not page aligned")


@dataclass(frozen=True)
class BoundFunction:
    """A binding with what the dispatcher needs to know: how many integer args to decode."""

    name: str
    fn: Binding
    nargs: int
    variadic: bool

    @classmethod
    def of(cls, name: str, fn: Binding) -> BoundFunction:
        if not callable(fn):
            raise BindingError(f"binding for {name!r} is not callable: {fn!r}")
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return cls(name, fn, 6, True)
        params = list(sig.parameters.values())
        positional = [
            p
            for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        variadic = any(p.kind == p.VAR_POSITIONAL for p in params)
        if not positional:
            raise BindingError(
                f"binding for {name!r} must take the machine as its first parameter: "
                f"def {getattr(fn, '__name__', 'fn')}(m, ...)"
            )
        return cls(name, fn, len(positional) - 1, variadic)


DmaMode = Literal["identity"] | KernelWindow


@dataclass
class Environment:
    """Bindings for a native driver's undefined symbols. See the module docstring."""

    functions: Mapping[str, Binding] = field(default_factory=dict)
    data: Mapping[str, int | bytes | DataSlot] = field(default_factory=dict)
    dma: DmaMode = "identity"
    ports: Mapping[int, PortHandler] = field(default_factory=dict)
    unknown_ports: Literal["record", "error"] = "record"
    mmio_latency_us: float = 0.0
    name: str = "environment"

    def __post_init__(self) -> None:
        self.functions = dict(self.functions)
        self.data = dict(self.data)
        if self.dma != "identity" and not isinstance(self.dma, KernelWindow):
            raise BindingError(f"dma must be 'identity' or KernelWindow(base), not {self.dma!r}")
        if self.unknown_ports not in ("record", "error"):
            raise BindingError("unknown_ports must be 'record' or 'error'")
        both = set(self.functions) & set(self.data)
        if both:
            raise BindingError(f"bound both as function and data: {sorted(both)}")
        self._bound: dict[str, BoundFunction] = {}
        for name, fn in self.functions.items():
            self._bound[name] = BoundFunction.of(name, fn)
        for name, spec in self.data.items():
            self.data_slot(name, spec)  # validate now

    def function(self, name: str | None = None) -> Callable[[Binding], Binding]:
        """Decorator: ``@ENV.function("vm_map")`` (default name: the Python function's)."""

        def register(fn: Binding) -> Binding:
            key = name or fn.__name__
            if key in self.data:
                raise BindingError(f"{key!r} is already bound as data")
            assert isinstance(self.functions, dict)
            self.functions[key] = fn
            self._bound[key] = BoundFunction.of(key, fn)
            return fn

        return register

    def bound(self, name: str) -> BoundFunction | None:
        return self._bound.get(name)

    @staticmethod
    def data_slot(name: str, spec: int | bytes | DataSlot) -> DataSlot:
        if isinstance(spec, DataSlot):
            return spec
        if isinstance(spec, bool) or not isinstance(spec, int | bytes | bytearray):
            raise BindingError(f"data {name!r}: give a size, bytes or DataSlot, not {spec!r}")
        if isinstance(spec, int):
            return DataSlot(spec)
        return DataSlot(max(1, len(spec)), bytes(spec))

    def extended(
        self, functions: Mapping[str, Binding] | None = None, **changes: Any
    ) -> Environment:
        """A copy with more function bindings and/or other fields changed."""
        merged = {**self.functions, **(functions or {})}
        fields: dict[str, Any] = {
            "functions": merged,
            "data": dict(self.data),
            "dma": self.dma,
            "ports": dict(self.ports),
            "unknown_ports": self.unknown_ports,
            "mmio_latency_us": self.mmio_latency_us,
            "name": self.name,
        }
        fields.update(changes)
        return Environment(**fields)


def load_environment(path: str | Path) -> Environment:
    """Import an ENV.py file and return its ``ENV`` (EnvironmentFileError otherwise)."""
    file = Path(path)
    if not file.is_file():
        raise EnvironmentFileError(f"{file}: no such environment file")
    module_name = f"_dbc_native_env_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise EnvironmentFileError(f"{file}: not importable as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BindingError:
        raise
    except Exception as exc:
        raise EnvironmentFileError(f"{file}: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.modules.pop(module_name, None)
    env = getattr(module, "ENV", None)
    if not isinstance(env, Environment):
        raise EnvironmentFileError(
            f"{file}: defines no ENV = Environment(...) (found {type(env).__name__})"
        )
    return env
