"""Virtual -> physical translation through ``/proc/self/pagemap`` (one kept-open fd).

Each 4 KiB virtual page has one little-endian 64-bit entry: bit 63 "page present", bits 0-54
the page frame number (PFN). Unprivileged readers see PFN 0 (since Linux 4.0), so a present page
with PFN 0 means root/CAP_SYS_ADMIN (or VFIO, which needs no physical addresses) is required.
Lookups of a whole range are one batched ``pread``.
"""

from __future__ import annotations

import os
import struct
from types import TracebackType

from dbc_harness.allocator.errors import ContiguityError, DmaError, PrivilegeRequired

PAGEMAP_PATH = "/proc/self/pagemap"
PAGEMAP_ENTRY_BYTES = 8
BASE_PAGE = os.sysconf("SC_PAGE_SIZE")
PM_PRESENT = 1 << 63
PM_PFN_MASK = (1 << 55) - 1


class Pagemap:
    """A kept-open ``/proc/self/pagemap``. A context manager; ``close()`` is idempotent."""

    def __init__(self, path: str = PAGEMAP_PATH) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError as exc:
            raise PrivilegeRequired(
                f"cannot open {path} ({exc.strerror}): physical addresses need "
                "root/CAP_SYS_ADMIN (or bind the device to VFIO and use the iova backend)"
            ) from exc
        except OSError as exc:
            raise DmaError(f"cannot open {path}: {exc}") from exc

    def frames(self, vaddr: int, length: int) -> list[int]:
        """PFNs of every base page of ``[vaddr, vaddr + length)``, in one pread. Each page must be
        present (touched and locked); PFN 0 raises :class:`PrivilegeRequired`."""
        if self._fd is None:
            raise DmaError(f"{self.path} is closed")
        first = vaddr // BASE_PAGE
        count = (vaddr + length + BASE_PAGE - 1) // BASE_PAGE - first
        raw = os.pread(self._fd, count * PAGEMAP_ENTRY_BYTES, first * PAGEMAP_ENTRY_BYTES)
        if len(raw) != count * PAGEMAP_ENTRY_BYTES:
            raise DmaError(f"short read from {self.path}: {len(raw)} bytes")
        entries = struct.unpack(f"<{count}Q", raw)
        frames: list[int] = []
        for index, entry in enumerate(entries):
            if not entry & PM_PRESENT:
                raise DmaError(f"page at 0x{(first + index) * BASE_PAGE:x} is not present")
            pfn = entry & PM_PFN_MASK
            if pfn == 0:
                raise PrivilegeRequired(
                    f"{self.path} shows PFN 0: physical addresses need root/CAP_SYS_ADMIN "
                    "(or bind the device to VFIO and use the iova backend)"
                )
            frames.append(pfn)
        return frames

    def physical_address(self, vaddr: int) -> int:
        """Physical address of one virtual address."""
        return self.frames(vaddr, 1)[0] * BASE_PAGE + vaddr % BASE_PAGE

    def contiguous_physical_address(self, vaddr: int, length: int) -> int:
        """Physical address of ``vaddr`` after checking that every base page of the range is
        physically contiguous with the first; :class:`ContiguityError` otherwise."""
        frames = self.frames(vaddr, length)
        first = frames[0]
        for index, pfn in enumerate(frames):
            if pfn != first + index:
                raise ContiguityError(
                    f"virtual 0x{vaddr:x}+0x{length:x} is not physically contiguous: page "
                    f"{index} is at PFN 0x{pfn:x}, expected 0x{first + index:x}"
                )
        return first * BASE_PAGE + vaddr % BASE_PAGE

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Pagemap:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
