"""Access to the DbC register block (DCID..DCDDI2) on top of any :class:`~drivers.mmio.Mmio`.

Offsets and bit fields come from :data:`drivers.xhci.registers.DBC_REGS` and the per-register
layouts; nothing here knows a bit position. 64-bit registers (DCERSTBA, DCERDP, DCCP) are
written low dword then high dword (every part takes that; some take no 64-bit access) unless
``mmio64`` is set, in which case one ``write64`` is used. A DCCTRL read of all ones means the
controller is gone (surprise removal).
"""

from __future__ import annotations

from dbc_harness.drivers.dbc.errors import DbcSurpriseRemoval
from dbc_harness.drivers.mmio import ALL_ONES, Mmio
from dbc_harness.drivers.tracing import TraceSink, null_sink
from dbc_harness.drivers.xhci.layout import Layout
from dbc_harness.drivers.xhci.registers import DBC_REGS, DCCTRL


def flag_mask(layout: Layout, name: str) -> int:
    """The in-register mask of a one-bit field, taken from the layout's mask table (for the
    hot poll path, where a dict lookup per bit would cost more than the test itself)."""
    f = layout.field(name)
    return ((1 << f.width) - 1) << f.bit_offset


#: DCCTRL bits tested on every poll
DCE = flag_mask(DCCTRL, "DCE")
DCR = flag_mask(DCCTRL, "DCR")
DRC = flag_mask(DCCTRL, "DRC")
HIT = flag_mask(DCCTRL, "HIT")
HOT = flag_mask(DCCTRL, "HOT")


class DbcRegisters:
    """The DbC register block at BAR0 offset ``base``."""

    def __init__(
        self, mmio: Mmio, base: int, *, mmio64: bool = False, trace: TraceSink = null_sink
    ) -> None:
        self.mmio = mmio
        self.base = base
        self.mmio64 = mmio64
        self._trace = trace
        self._tracing = trace is not null_sink
        off = DBC_REGS.offset
        self.DCID = base + off("DCID")
        self.DCDB = base + off("DCDB")
        self.DCERSTSZ = base + off("DCERSTSZ")
        self.DCERSTBA = base + off("DCERSTBA")
        self.DCERDP = base + off("DCERDP")
        self.DCCTRL = base + off("DCCTRL")
        self.DCST = base + off("DCST")
        self.DCPORTSC = base + off("DCPORTSC")
        self.DCCP = base + off("DCCP")
        self.DCDDI1 = base + off("DCDDI1")
        self.DCDDI2 = base + off("DCDDI2")

    def read32(self, offset: int) -> int:
        value = self.mmio.read32(offset)
        if self._tracing:
            self._trace("mmio", op="r", offset=offset, value=value, width=32)
        return value

    def write32(self, offset: int, value: int) -> None:
        if self._tracing:
            self._trace("mmio", op="w", offset=offset, value=value, width=32)
        self.mmio.write32(offset, value)

    def write64(self, offset: int, value: int) -> None:
        """A 64-bit register: one write64 (``mmio64``) or low dword then high dword."""
        if self.mmio64:
            if self._tracing:
                self._trace("mmio", op="w", offset=offset, value=value, width=64)
            self.mmio.write64(offset, value)
        else:
            self.write32(offset, value & ALL_ONES)
            self.write32(offset + 4, value >> 32)

    def read_checked(self, offset: int, name: str) -> int:
        """A 32-bit read that turns all ones into :class:`DbcSurpriseRemoval`."""
        value = self.read32(offset)
        if value == ALL_ONES:
            raise DbcSurpriseRemoval(
                f"{name} at BAR0+0x{offset:x} read 0xFFFFFFFF: the controller is gone"
            )
        return value

    def dcctrl(self) -> int:
        return self.read_checked(self.DCCTRL, "DCCTRL")

    def dcportsc(self) -> int:
        return self.read_checked(self.DCPORTSC, "DCPORTSC")

    def dcst(self) -> int:
        return self.read_checked(self.DCST, "DCST")
