"""The DMA-space interface every backend implements (the seam used by drivers and device models).

A *DMA space* hands out :class:`DmaBuffer` objects: CPU-visible memory (a zero-copy writable
``memoryview``) that a device reaches at ``device_address`` (a physical address, an IOVA, or an
emulated address). Placement rules follow the xHCI spec table 6-1 and Linux ``dma_pool``:

* ``align``: the device address is a multiple of it (power of two);
* ``boundary``: the buffer never straddles a multiple of it (power of two, 0 = no boundary);
* ``limit``: the whole buffer lies below this device address (e.g. ``1 << 32`` for AC64 = 0).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from dbc_harness.allocator.errors import ForeignBuffer, InvalidRequest

if TYPE_CHECKING:
    from dbc_harness.allocator.pool import DmaPool


@dataclass(eq=False, frozen=True, init=False)
class DmaBuffer:
    """One allocation. Identity equality: two buffers are equal only if they are the same.

    Frozen and checked by identity: only the very object a space handed out can be freed
    through it; a copy, a buffer built by hand from another's fields or one with an altered
    address is refused with :class:`~allocator.errors.ForeignBuffer`. ``view`` is released at
    ``free()`` (later use raises ``ValueError``); ``freed`` turns True then."""

    space: DmaSpace
    device_address: int
    size: int
    view: memoryview
    #: backend bookkeeping (the chunk the buffer was carved from, its padded extent, ...)
    meta: Any = field(default=None, repr=False)
    freed: bool = field(default=False, repr=False)

    def __init__(
        self,
        space: DmaSpace,
        device_address: int,
        size: int,
        view: memoryview,
        meta: Any = None,
        freed: bool = False,
    ) -> None:
        # the frozen dataclass's own __init__ sets each field through object.__setattr__
        # (3x slower); this is on every allocation's path
        fields = self.__dict__
        fields["space"] = space
        fields["device_address"] = device_address
        fields["size"] = size
        fields["view"] = view
        fields["meta"] = meta
        fields["freed"] = freed

    def __len__(self) -> int:
        return self.size

    @property
    def end(self) -> int:
        """First device address after the buffer."""
        return self.device_address + self.size

    def device_address_at(self, offset: int) -> int:
        """Device address of ``buffer + offset`` (0 <= offset <= size)."""
        if not 0 <= offset <= self.size:
            raise InvalidRequest(f"offset {offset} outside buffer of {self.size} bytes")
        return self.device_address + offset

    def contains(self, device_address: int, length: int = 1) -> bool:
        return self.device_address <= device_address and device_address + length <= self.end

    def contiguous_length(self, device_address: int) -> int:
        """How many bytes stay device-contiguous from ``device_address`` to the buffer's end."""
        if not self.contains(device_address, 0) or device_address == self.end:
            raise ForeignBuffer(f"0x{device_address:x} is not inside {self!r}")
        return self.end - device_address

    def __repr__(self) -> str:
        return f"DmaBuffer(0x{self.device_address:x}+0x{self.size:x}, backend={self.space.backend})"


class DmaSpace(ABC):
    """A source of device-reachable memory. Thread-safe. A context manager: ``close()`` frees
    everything and gives back what was taken from the system (pages, hugepage reservations)."""

    #: "hugepage", "iova" or "emulated"
    backend: str = "abstract"

    @abstractmethod
    def alloc(
        self, size: int, *, align: int = 64, boundary: int = 0, limit: int | None = None
    ) -> DmaBuffer:
        """Zeroed memory of ``size`` bytes honouring align/boundary/limit."""

    @abstractmethod
    def free(self, buf: DmaBuffer) -> None:
        """Give a buffer back. Double free -> DoubleFree; another space's buffer ->
        ForeignBuffer."""

    @abstractmethod
    def pool(
        self, size: int, *, align: int = 64, boundary: int = 0, limit: int | None = None
    ) -> DmaPool:
        """A fixed-size block pool (Linux ``dma_pool_create`` semantics)."""

    @abstractmethod
    def lookup(self, device_address: int) -> tuple[DmaBuffer, int]:
        """Device address -> (live buffer, offset). ForeignBuffer when no live buffer holds it."""

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """At least ``live_bytes`` (sum of live buffer sizes) and ``held_bytes`` (backing memory
        currently taken from the system)."""

    @abstractmethod
    def close(self) -> None:
        """Free every buffer and release all backing memory. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
