"""The MMIO seam: what every BAR0 provider offers and every driver uses.

Provided by the harness (VFIO region or sysfs resource0 mmap), by the virtual controller in
``fixtures.virtual``, and by recorders/replayers. Offsets are byte offsets from the start of BAR0.
64-bit accesses default to low dword then high dword.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

#: what a 32-bit MMIO read returns when the device is gone, memory decoding is off or the link is
#: down (a PCIe master abort / Unsupported Request completes reads with all ones)
ALL_ONES = 0xFFFF_FFFF


@runtime_checkable
class Mmio(Protocol):
    def read32(self, offset: int) -> int: ...

    def write32(self, offset: int, value: int) -> None: ...

    def read64(self, offset: int) -> int: ...

    def write64(self, offset: int, value: int) -> None: ...
