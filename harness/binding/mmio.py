"""BAR0 as an :class:`drivers.mmio.Mmio`: exact 32-bit loads and stores on an mmap, bounds checked.

Every access goes through a ``memoryview`` cast to ``'I'`` (native unsigned 32-bit): CPython
copies one aligned 4-byte item, which the compiler emits as one 32-bit load or store, never as
byte accesses (xHCI registers must not see sub-dword writes). 64-bit registers are accessed as
two dwords, low then high by default (spec 5.1: software may not assume 64-bit atomicity, and
some add-in cards reject 64-bit cycles).
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from types import TracebackType

from dbc_harness.drivers.tracing import TraceSink
from dbc_harness.harness.binding.errors import MmioError

_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF


class MmioRegion:
    """A mapped register window (``size`` bytes from the start of ``mapping``).

    ``on_close`` runs once after the view is released (e.g. closing a VFIO device fd).
    ``high_first=True`` makes 64-bit accesses high dword first.
    """

    def __init__(
        self,
        mapping: mmap.mmap,
        size: int | None = None,
        *,
        name: str = "BAR0",
        high_first: bool = False,
        trace: TraceSink | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        size = len(mapping) if size is None else size
        if size <= 0 or size % 4 or size > len(mapping):
            raise MmioError(f"{name}: size {size} does not fit a {len(mapping)}-byte mapping")
        self.name = name
        self.size = size
        #: highest offset a 32-bit access may use
        self._last32 = size - 4
        self.high_first = high_first
        self._trace = trace
        self._map: mmap.mmap | None = mapping
        self._u32: memoryview | None = memoryview(mapping)[:size].cast("I")
        self._on_close = on_close

    # -- checks ------------------------------------------------------------------------------
    def _check(self, offset: int, width: int) -> None:
        """Raise the MmioError that explains why this access is not allowed."""
        if self._u32 is None:
            raise MmioError(f"{self.name} is closed")
        if offset < 0 or offset + width > self.size:
            raise MmioError(
                f"{self.name}: {width * 8}-bit access at 0x{offset:x} outside 0x0-0x{self.size:x}"
            )
        if offset % 4:
            raise MmioError(f"{self.name}: access at 0x{offset:x} is not dword aligned")

    # -- the Mmio protocol (hot path: checks inlined) ----------------------------------------
    def read32(self, offset: int) -> int:
        u32 = self._u32
        if u32 is None or offset & 3 or not 0 <= offset <= self._last32:
            self._check(offset, 4)
        value: int = u32[offset >> 2]  # type: ignore[index]  # None: _check raised
        if self._trace is not None:
            self._trace("mmio", op="r", offset=offset, value=value, width=32)
        return value

    def write32(self, offset: int, value: int) -> None:
        u32 = self._u32
        if u32 is None or offset & 3 or not 0 <= offset <= self._last32:
            self._check(offset, 4)
        if not 0 <= value <= _U32:
            raise MmioError(f"{self.name}: value 0x{value:x} does not fit 32 bits")
        if self._trace is not None:
            self._trace("mmio", op="w", offset=offset, value=value, width=32)
        u32[offset >> 2] = value  # type: ignore[index]  # None: _check raised

    def read64(self, offset: int) -> int:
        if self._u32 is None or offset & 3 or not 0 <= offset <= self._last32 - 4:
            self._check(offset, 8)
        if self.high_first:
            hi = self.read32(offset + 4)
            lo = self.read32(offset)
        else:
            lo = self.read32(offset)
            hi = self.read32(offset + 4)
        return lo | (hi << 32)

    def write64(self, offset: int, value: int) -> None:
        if self._u32 is None or offset & 3 or not 0 <= offset <= self._last32 - 4:
            self._check(offset, 8)
        if not 0 <= value <= _U64:
            raise MmioError(f"{self.name}: value 0x{value:x} does not fit 64 bits")
        lo, hi = value & _U32, value >> 32
        if self.high_first:
            self.write32(offset + 4, hi)
            self.write32(offset, lo)
        else:
            self.write32(offset, lo)
            self.write32(offset + 4, hi)

    # -- lifetime ----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._u32 is None

    def close(self) -> None:
        """Unmap (idempotent). Later accesses raise MmioError."""
        if self._u32 is None:
            return
        self._u32.release()
        self._u32 = None
        assert self._map is not None
        self._map.close()
        self._map = None
        if self._on_close is not None:
            cb, self._on_close = self._on_close, None
            cb()

    def __enter__(self) -> MmioRegion:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"0x{self.size:x} bytes"
        return f"MmioRegion({self.name}, {state})"
