"""The allocator's one exception family: every failure is a :class:`DmaError`."""

from __future__ import annotations


class DmaError(Exception):
    """Base class of every error raised by :mod:`allocator`."""


class InvalidRequest(DmaError, ValueError):
    """A request that can never be satisfied as asked: size <= 0, an align or boundary that is
    not a power of two, or a size larger than the boundary it must not cross."""


class RequestTooLarge(DmaError):
    """The request is larger than the largest contiguous page the backend can provide."""


class AddressLimitUnsatisfiable(DmaError):
    """No memory below the requested device-address limit can be had (e.g. every hugepage of this
    machine is above 4 GiB and the controller has AC64 = 0)."""


class DoubleFree(DmaError):
    """A buffer was freed twice."""


class ForeignBuffer(DmaError):
    """A buffer (or an address) that this space or pool did not hand out."""


class PrivilegeRequired(DmaError, PermissionError):
    """Physical addresses are hidden (pagemap shows PFN 0): root/CAP_SYS_ADMIN or VFIO is needed."""


class HugepagesUnavailable(DmaError):
    """Not enough hugepages are reserved and they could not be reserved; names the sysfs file."""


class ContiguityError(DmaError):
    """A page that must be physically contiguous is not."""


class DmaFault(DmaError):
    """A device-side access outside every live allocation (IOMMU semantics on the virtual bench)."""

    def __init__(
        self, address: int, length: int, reason: str = "not inside a live allocation"
    ) -> None:
        self.address = address
        self.length = length
        self.reason = reason
        super().__init__(f"DMA fault at 0x{address:x} (+{length} bytes): {reason}")


class UseAfterFree(DmaFault):
    """Freed DMA memory was used (the sanitizer, see :mod:`allocator.heap`): the device touched a
    buffer in quarantine (raised at that access), or the CPU wrote through a stale view (found
    when the poison pattern is checked as the memory leaves quarantine). Names the buffer's
    allocation site and free site (``file:line`` of the ``alloc()`` / ``free()`` callers).

    A :class:`DmaFault` subclass: a device model that turns DMA faults into findings reports
    device-side use after free the same way."""

    def __init__(
        self,
        address: int,
        length: int,
        *,
        side: str,
        buffer_address: int,
        buffer_size: int,
        alloc_site: str,
        free_site: str,
    ) -> None:
        self.side = side  # "device" (access to quarantined memory) or "cpu" (poison overwritten)
        self.buffer_address = buffer_address
        self.buffer_size = buffer_size
        self.alloc_site = alloc_site
        self.free_site = free_site
        what = (
            "device access to freed memory"
            if side == "device"
            else "freed memory was written (poison overwritten, found as it left quarantine)"
        )
        reason = (
            f"use after free: {what}; the {buffer_size}-byte buffer at 0x{buffer_address:x} "
            f"was allocated at {alloc_site} and freed at {free_site}"
        )
        super().__init__(address, length, reason)
        self.args = (f"0x{address:x} (+{length} bytes): {reason}",)


class SpaceClosed(DmaError):
    """The DMA space was closed; its buffers are gone."""
