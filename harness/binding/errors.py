"""The binding layer's one exception family: every failure is a :class:`HarnessError`.

Each error says what went wrong and what the user can do about it. Refusals
(:class:`RefusedClaim` and its subclasses) happen before anything on the machine was changed.
"""

from __future__ import annotations

import os


class HarnessError(Exception):
    """Base class of every error raised by the binding layer (:mod:`harness`)."""


class BadAddress(HarnessError, ValueError):
    """A PCI address that is not of the form ``dddd:bb:dd.f`` (e.g. ``0000:00:04.0``)."""


class DeviceNotFound(HarnessError, LookupError):
    """No PCI device at that address, or it is not an xHCI (class 0x0c0330)."""


class NotPermitted(HarnessError, PermissionError):
    """The kernel refused an operation for lack of privilege (not root, no CAP_SYS_ADMIN or
    CAP_SYS_RAWIO, or /dev/vfio/N not accessible)."""


class LockdownActive(NotPermitted):
    """Kernel lockdown (e.g. Secure Boot) forbids sysfs ``resource0`` mmap and config writes."""


class NoIommu(HarnessError):
    """VFIO needs an IOMMU (``intel_iommu=on`` / ``amd_iommu=on``) and the device has no IOMMU
    group, or the VFIO modules/devices are missing."""


class RefusedClaim(HarnessError):
    """Claiming the controller would harm the machine; nothing was changed. ``force=True``
    overrides it (at your own risk). ``reasons`` lists every problem found."""

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        self.reasons = reasons if reasons is not None else [message]
        super().__init__(message)


class StorageOnController(RefusedClaim):
    """A block device on a USB device behind this controller is mounted (or is the root
    filesystem): unbinding xhci_hcd would yank it."""


class GroupNotViable(RefusedClaim):
    """The controller's IOMMU group holds other endpoint devices; VFIO would need all of them
    to move to vfio-pci."""


class UnsafeModeRefused(RefusedClaim):
    """sysfs mode gives the controller DMA access to all of RAM (no IOMMU): it needs
    ``unsafe=True`` (CLI ``--unsafe``)."""


class DeviceBusy(HarnessError):
    """The controller is claimed by another live harness process (its state file names it), or a
    driver will not let go of it."""


class BindError(HarnessError):
    """A driver bind/unbind/probe did not reach the expected state before its deadline."""


class VfioError(HarnessError, OSError):
    """A VFIO or iommufd ioctl failed; ``errno`` is the kernel's answer."""

    def __init__(self, what: str, errno_: int, hint: str = "") -> None:
        text = f"{what} failed: {os.strerror(errno_)} (errno {errno_})"
        if hint:
            text += f"; {hint}"
        super().__init__(errno_, text)
        self.what = what


class MmioError(HarnessError):
    """An MMIO access outside the mapped region, misaligned, of a bad value, or after close."""


class StateFileError(HarnessError):
    """A state file that cannot be read or parsed (the path is in the message)."""


class RestoreFailed(HarnessError):
    """The original driver could not be bound again; the message says what to run by hand."""


class NoDbc(HarnessError):
    """The controller has no Debug Capability (extended capability ID 0x0A). An expected answer
    on QEMU's emulated xHCIs and on many add-in cards."""
