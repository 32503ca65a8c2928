"""Port I/O for native code: PCI configuration mechanism #1 and other ports.

The seam is :class:`PciConfigSpace`: whatever models the machine's PCI functions (the virtual
xHCI's PCI function in the fixtures, a real device's config space through sysfs/VFIO) answers
``read_config``/``write_config`` by bus/device/function. It may also implement
``bar_at(phys) -> (base, size, mmio) | None`` (which function's memory BAR decodes a physical
address): the runner then maps any function's BAR that native code maps (a driver scanning
several xHCIs reads each one's registers); the two config methods are all it needs.

Mechanism #1 (PCI Local Bus 3.0, 3.2.2.3.2): a dword write to CONFIG_ADDRESS (0xCF8) with bit 31
(enable) set selects bus (23:16), device (15:11), function (10:8) and register (7:2); CONFIG_DATA
(0xCFC-0xCFF) then reads/writes that dword, a byte or word at 0xCFD-0xCFF addressing the byte
offset within it. CONFIG_ADDRESS reads back as written (dword only: byte/word accesses to 0xCF8
are other ports on a PC). With the enable bit clear, or without a provider, or for a
bus/device/function the provider does not answer (``None``), data reads are all ones and writes
go nowhere, as on a PC with no device there.

Other ports: handlers by port number (``Environment.ports``), else ``unknown`` decides:
``"record"`` (the default: reads all ones, writes dropped, both appended to the log) or
``"error"`` (:class:`UnhandledPort`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dbc_harness.drivers.native.environment import PortHandler
from dbc_harness.drivers.native.errors import UnhandledPort

CONFIG_ADDRESS = 0xCF8
CONFIG_DATA = 0xCFC
ENABLE = 1 << 31


@runtime_checkable
class PciConfigSpace(Protocol):
    """Configuration space of the PCI functions on the machine.

    ``offset`` is the byte offset in the function's 256-byte space, ``size`` 1, 2 or 4 (the
    access is naturally aligned). ``read_config`` returns the value, or ``None`` when no function
    exists at that address (the port then reads all ones). ``write_config`` ignores absent
    functions."""

    def read_config(
        self, bus: int, device: int, function: int, offset: int, size: int
    ) -> int | None: ...

    def write_config(
        self, bus: int, device: int, function: int, offset: int, size: int, value: int
    ) -> None: ...


@dataclass(frozen=True)
class PortAccess:
    """One port access native code did (``op`` "in"/"out", ``handled_by`` who answered)."""

    op: str
    port: int
    size: int
    value: int
    handled_by: str

    def __str__(self) -> str:
        return f"{self.op}{8 * self.size} 0x{self.port:x} = 0x{self.value:x} ({self.handled_by})"


class PortBus:
    """Dispatches ``in``/``out`` of native code (the runner's UC_HOOK_INSN callbacks call
    :meth:`read`/:meth:`write`)."""

    def __init__(
        self,
        pci: PciConfigSpace | None = None,
        handlers: Mapping[int, PortHandler] | None = None,
        unknown: str = "record",
        log_size: int = 256,
    ) -> None:
        self.pci = pci
        self.handlers = dict(handlers or {})
        self.unknown = unknown
        self.address = 0  # CONFIG_ADDRESS
        self.log: deque[PortAccess] = deque(maxlen=log_size)

    @staticmethod
    def decode(address: int) -> tuple[int, int, int, int]:
        """CONFIG_ADDRESS -> (bus, device, function, register offset)."""
        return (address >> 16) & 0xFF, (address >> 11) & 0x1F, (address >> 8) & 0x7, address & 0xFC

    def read(self, port: int, size: int) -> int:
        ones = (1 << (8 * size)) - 1
        if port == CONFIG_ADDRESS and size == 4:
            value, who = self.address, "pci-address"
        elif CONFIG_DATA <= port <= CONFIG_DATA + 3 and port - CONFIG_DATA + size <= 4:
            value, who = self._config_read(port - CONFIG_DATA, size), "pci-data"
        elif port in self.handlers:
            value, who = self.handlers[port].port_read(port, size) & ones, "handler"
        else:
            self._unknown("in", port, size, 0)
            value, who = ones, "unclaimed"
        self.log.append(PortAccess("in", port, size, value, who))
        return value

    def write(self, port: int, size: int, value: int) -> None:
        value &= (1 << (8 * size)) - 1
        if port == CONFIG_ADDRESS and size == 4:
            self.address = value
            who = "pci-address"
        elif CONFIG_DATA <= port <= CONFIG_DATA + 3 and port - CONFIG_DATA + size <= 4:
            self._config_write(port - CONFIG_DATA, size, value)
            who = "pci-data"
        elif port in self.handlers:
            self.handlers[port].port_write(port, size, value)
            who = "handler"
        else:
            self._unknown("out", port, size, value)
            who = "unclaimed"
        self.log.append(PortAccess("out", port, size, value, who))

    def _unknown(self, op: str, port: int, size: int, value: int) -> None:
        if self.unknown == "error":
            what = f"out{8 * size} 0x{value:x} to" if op == "out" else f"in{8 * size} from"
            raise UnhandledPort(
                f"{what} I/O port 0x{port:x}: no handler (Environment(ports={{0x{port:x}: ...}}) "
                "or unknown_ports='record')"
            )

    def _config_read(self, byte: int, size: int) -> int:
        ones = (1 << (8 * size)) - 1
        if not self.address & ENABLE or self.pci is None:
            return ones
        bus, dev, fn, reg = self.decode(self.address)
        value = self.pci.read_config(bus, dev, fn, reg + byte, size)
        return ones if value is None else value & ones

    def _config_write(self, byte: int, size: int, value: int) -> None:
        if not self.address & ENABLE or self.pci is None:
            return
        bus, dev, fn, reg = self.decode(self.address)
        self.pci.write_config(bus, dev, fn, reg + byte, size, value)
