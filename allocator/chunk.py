"""Backing memory and the extents carved from it, shared by :mod:`.heap` and :mod:`.pool`: a
:class:`Chunk` (device-contiguous memory a backend supplies), the :class:`_Extent` that records
where one buffer sits (and the sanitizer's sites), the bulk fill helper and the allocation-site
capture.
"""

from __future__ import annotations

import os
import sys
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbc_harness.allocator.space import DmaBuffer


@dataclass(eq=False)
class Chunk:
    """Device-contiguous backing memory taken from the system by a :class:`ChunkSource`."""

    device_address: int
    size: int
    #: writable view of the whole chunk (CPU side)
    view: memoryview
    #: backend bookkeeping (mmap object, mapping, reservation, ...)
    handle: Any = field(default=None, repr=False)
    #: bytes of this chunk currently handed out (buffers + guards)
    used: int = 0
    #: extents of this chunk currently handed out (heap buffers, pool pages)
    extents: int = 0
    #: the heap's operation count when the chunk last became empty (spare expiry)
    idle_since: int = 0

    @property
    def end(self) -> int:
        return self.device_address + self.size


class _Extent:
    """Where a buffer sits: its chunk and the allocated extent [start, end) incl. guard bytes,
    plus the sanitizer's record (sites, the issued buffer once freed)."""

    __slots__ = (
        "alloc_site",
        "chunk",
        "end",
        "free_site",
        "freed_buffer",
        "owner",
        "reach",
        "size",
        "start",
    )

    def __init__(
        self,
        chunk: Chunk,
        start: int,
        end: int,
        owner: object,
        size: int = 0,
        alloc_site: tuple[str, int] | None = None,
        reach: int = 0,
    ) -> None:
        self.chunk = chunk
        self.start = start
        self.end = end  # the reserved extent ends here (a GRANULE multiple for heap buffers)
        self.reach = reach or end  # the device may access up to here (buffer + guard bytes)
        self.owner = owner  # the space or pool that handed the buffer out
        self.size = size  # the buffer's size (end - start minus guard bytes)
        self.alloc_site = alloc_site
        self.free_site: tuple[str, int] | None = None
        #: weak reference to the buffer this extent was issued as, set when it is freed (tells a
        #: double free of that very object from a forged copy of it)
        self.freed_buffer: weakref.ref[DmaBuffer] | None = None


_FILL = 1 << 16  # bytes zeroed / poisoned / compared per slice assignment
_ZEROS = memoryview(bytes(_FILL))
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _fill(view: memoryview, start: int, end: int, pattern: memoryview) -> None:
    """``view[start:end] = pattern`` repeated (pattern is _FILL bytes)."""
    while end - start > _FILL:
        view[start : start + _FILL] = pattern
        start += _FILL
    view[start:end] = pattern[: end - start]


def caller_site() -> tuple[str, int]:
    """(file, line) of the nearest caller outside this package (the allocation / free site)."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno
