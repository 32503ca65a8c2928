"""Address-window allocator: where chunks live in a device address space we choose ourselves.

Used by the emulated backend (simulated physical addresses) and the iova backend (IOVAs we pick
for VFIO). It hands out naturally aligned windows inside ``[base, base + size)``, below an
optional address limit, never overlapping a reserved range (e.g. the MSI window
0xFEE00000-0xFEEFFFFF) or another live window. Not thread-safe on its own: the heap's lock
covers it.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from dbc_harness.allocator.errors import AddressLimitUnsatisfiable, InvalidRequest

#: The x86 MSI doorbell window: never hand it to a device as DMA memory.
MSI_WINDOW: tuple[int, int] = (0xFEE0_0000, 0xFEF0_0000)


class AddressWindow:
    """First-fit allocator of aligned windows inside ``[base, base + size)``.

    ``reserved`` holds half-open ``(start, end)`` ranges that are never handed out.
    """

    def __init__(self, base: int, size: int, reserved: tuple[tuple[int, int], ...] = ()) -> None:
        if base < 0 or size <= 0:
            raise InvalidRequest(f"address window base=0x{base:x} size=0x{size:x} is empty")
        for start, end in reserved:
            if end <= start:
                raise InvalidRequest(f"reserved range 0x{start:x}-0x{end:x} is empty")
        self.base = base
        self.size = size
        self.end = base + size
        # sorted, disjoint busy ranges: reserved ranges and live windows alike
        self._busy: list[tuple[int, int]] = sorted(reserved)
        self._live: dict[int, int] = {}

    def take(self, size: int, align: int, limit: int | None = None) -> int:
        """Start of a free window of ``size`` bytes aligned to ``align`` that ends at or below
        ``limit``. AddressLimitUnsatisfiable when no such window exists."""
        top = self.end if limit is None else min(self.end, limit)
        candidate = _align_up(self.base, align)
        for start, end in self._busy:
            if candidate + size <= start:
                break
            if end > candidate:
                candidate = _align_up(end, align)
        if candidate + size > top:
            where = "" if limit is None else f" below 0x{limit:x}"
            raise AddressLimitUnsatisfiable(
                f"no free 0x{size:x}-byte window{where} in 0x{self.base:x}-0x{self.end:x}"
            )
        insort(self._busy, (candidate, candidate + size))
        self._live[candidate] = candidate + size
        return candidate

    def give_back(self, start: int) -> None:
        """Return the window that starts at ``start``."""
        end = self._live.pop(start)
        idx = bisect_left(self._busy, (start, end))
        del self._busy[idx]

    @property
    def live_windows(self) -> dict[int, int]:
        """start -> end of every window handed out and not given back."""
        return dict(self._live)


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align
