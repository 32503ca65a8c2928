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


class SpaceClosed(DmaError):
    """The DMA space was closed; its buffers are gone."""
