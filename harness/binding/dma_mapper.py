"""The real :class:`DmaMapper` for the allocator's iova backend: VFIO type1v2 or iommufd.

The allocator picks IOVAs inside ``[iova_base, address_limit)`` avoiding ``reserved`` and calls
``map(vaddr, iova, size)`` / ``unmap(iova, size)``. This module tells it where it may place them:

* AC64 = 0 -> ``address_limit`` = 4 GiB (the controller cannot emit wider addresses);
* the kernel's usable IOVA ranges (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) become ``reserved``
  holes, and the x86 MSI window 0xFEE00000-0xFEEFFFFF is always reserved;
* ``iova_base`` starts above guest RAM where possible (4 GiB when AC64 = 1), so a successful DMA
  proves translation rather than an identity map; 1 MiB otherwise.

Every live mapping is remembered, so :meth:`unmap_all` can give everything back on release.
"""

from __future__ import annotations

import threading
from typing import Protocol

from dbc_harness.allocator.window import MSI_WINDOW
from dbc_harness.harness.binding.errors import VfioError
from dbc_harness.harness.binding.vfio import IommuInfo

FOUR_GIB = 1 << 32
#: IOVA space we offer when AC64 = 1 (enough for any test; the IOMMU's own width may be 39/48).
IOVA_SPAN_AC64 = 1 << 36


class _MapBackend(Protocol):
    def map_dma(self, vaddr: int, iova: int, size: int) -> None: ...

    def unmap_dma(self, iova: int, size: int) -> int: ...


class VfioDmaMapper:
    """IOVA mappings for one claimed device (``backend`` is a VfioContainer or an Iommufd)."""

    def __init__(self, backend: _MapBackend, info: IommuInfo | None, ac64: bool) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self._live: dict[int, int] = {}
        self.iova_pgsize = info.min_pgsize if info is not None else 4096
        self.address_limit = FOUR_GIB if not ac64 else FOUR_GIB + IOVA_SPAN_AC64
        self.iova_base = FOUR_GIB if ac64 else 1 << 20
        if info is not None and info.iova_ranges and ac64:
            if not any(start <= FOUR_GIB < end for start, end in info.iova_ranges):
                self.iova_base = 1 << 20  # the IOMMU's aperture ends below 4 GiB
        holes: list[tuple[int, int]] = [MSI_WINDOW]
        if info is not None and info.iova_ranges:
            cursor = 0
            for start, end in sorted(info.iova_ranges):
                if start > cursor:
                    holes.append((cursor, start))
                cursor = max(cursor, end)
            if cursor < self.address_limit:
                holes.append((cursor, self.address_limit))
        self.reserved: tuple[tuple[int, int], ...] = tuple(
            sorted((s, min(e, self.address_limit)) for s, e in holes if s < self.address_limit)
        )

    def map(self, vaddr: int, iova: int, size: int) -> None:
        pg = self.iova_pgsize
        if vaddr % pg or iova % pg or size % pg or size <= 0:
            raise VfioError(
                f"map vaddr=0x{vaddr:x} iova=0x{iova:x} size=0x{size:x}",
                22,
                f"all three must be multiples of the IOMMU page size 0x{pg:x}",
            )
        if iova + size > self.address_limit:
            raise VfioError(
                f"map iova=0x{iova:x} size=0x{size:x}", 22, f"beyond 0x{self.address_limit:x}"
            )
        with self._lock:
            self._backend.map_dma(vaddr, iova, size)
            self._live[iova] = size

    def unmap(self, iova: int, size: int) -> None:
        with self._lock:
            self._backend.unmap_dma(iova, size)
            self._live.pop(iova, None)

    @property
    def live_mappings(self) -> dict[int, int]:
        """iova -> size of every mapping not yet unmapped."""
        with self._lock:
            return dict(self._live)

    def unmap_all(self) -> None:
        """Unmap everything still mapped (release path; errors of one mapping do not stop the
        others, the first one is raised at the end)."""
        first: VfioError | None = None
        for iova, size in sorted(self.live_mappings.items()):
            try:
                self.unmap(iova, size)
            except VfioError as e:
                first = first or e
                with self._lock:
                    self._live.pop(iova, None)
        if first is not None:
            raise first
