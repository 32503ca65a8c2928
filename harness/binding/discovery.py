"""Find every xHCI (PCI class 0x0c0330) on this machine, with what a bench user needs to know.

Enumeration goes through pyudev (works without a udev daemon); details come from sysfs. BAR0 is
read (AC64, Debug Capability presence) only when it can be mapped without disturbing anyone: the
controller has no driver (sysfs ``resource0``); while xhci_hcd or vfio-pci holds it, ``ac64`` and
``has_dbc`` stay None and ``bar0_note`` says why.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbc_harness.drivers.xhci.host import probe_capabilities
from dbc_harness.harness.binding.errors import HarnessError
from dbc_harness.harness.binding.mmio import MmioRegion
from dbc_harness.harness.binding.pci import (
    PCI_CLASS_SERIAL_USB_XHCI,
    PCI_COMMAND,
    PCI_COMMAND_MEMORY,
)
from dbc_harness.harness.binding.sysfs import PciSysfs


@dataclass
class ControllerInfo:
    """One xHCI controller as discovery saw it."""

    bdf: str
    vendor_id: int
    device_id: int
    #: bound driver name ("xhci_hcd", "vfio-pci") or None
    driver: str | None
    driver_override: str | None
    #: IOMMU group number, None without an IOMMU
    iommu_group: int | None
    #: the other devices of the IOMMU group (they would have to move to vfio-pci too)
    group_peers: list[str] = field(default_factory=list)
    #: HCCPARAMS1.AC64 (64-bit addressing), None when BAR0 was not readable
    ac64: bool | None = None
    #: a Debug Capability (extended capability ID 0x0A) exists; None when BAR0 was not readable
    has_dbc: bool | None = None
    #: byte offset of the DbC capability in BAR0 when present
    dbc_offset: int | None = None
    #: why BAR0 was not read (empty when it was)
    bar0_note: str = ""

    @property
    def vendor_device(self) -> str:
        return f"{self.vendor_id:04x}:{self.device_id:04x}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "bdf": self.bdf,
            "vendor_device": self.vendor_device,
            "driver": self.driver,
            "driver_override": self.driver_override,
            "iommu_group": self.iommu_group,
            "group_peers": list(self.group_peers),
            "ac64": self.ac64,
            "has_dbc": self.has_dbc,
            "dbc_offset": self.dbc_offset,
            "bar0_note": self.bar0_note,
        }


def _xhci_bdfs_pyudev() -> list[str]:
    # deferred: pyudev loads libudev, which a minimal container may lack (sysfs is the fallback)
    import pyudev

    try:
        ctx = pyudev.Context()
        devices = ctx.list_devices(subsystem="pci")
        found = []
        for dev in devices:
            cls = dev.attributes.get("class")
            if cls is not None and int(cls.decode().strip(), 16) == PCI_CLASS_SERIAL_USB_XHCI:
                found.append(dev.sys_name)
        return sorted(found)
    except (OSError, pyudev.DeviceNotFoundError, ValueError) as e:  # no /sys, odd attributes
        raise HarnessError(f"PCI enumeration through udev failed: {e}") from e


def _xhci_bdfs_sysfs(sysfs: PciSysfs) -> list[str]:
    found = []
    for bdf in sysfs.list_devices():
        try:
            if sysfs.class_code(bdf) == PCI_CLASS_SERIAL_USB_XHCI:
                found.append(bdf)
        except (OSError, ValueError):
            continue
    return found


def xhci_addresses(sysfs: PciSysfs | None = None) -> list[str]:
    """PCI addresses of every xHCI. With the real ``/sys`` this enumerates through pyudev; a
    custom sysfs root (tests) is scanned directly, since libudev always reads ``/sys``."""
    sysfs = sysfs or PciSysfs()
    if sysfs.root == Path("/sys"):
        if not sysfs.devices_dir.is_dir():
            return []
        return _xhci_bdfs_pyudev()
    return _xhci_bdfs_sysfs(sysfs)


def read_bar0_via_resource(sysfs: PciSysfs, bdf: str) -> tuple[bool, int | None]:
    """Map ``resource0`` read-only and decode AC64 and the DbC offset. Only for a controller
    that no driver holds (the kernel refuses otherwise)."""
    path = sysfs.device_dir(bdf) / "resource0"
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    region = MmioRegion(mapping, name=f"{bdf} BAR0")
    try:
        caps = probe_capabilities(region)
    finally:
        region.close()
    return caps.ac64, caps.dbc_offset


def describe(bdf: str, sysfs: PciSysfs | None = None, read_bar0: bool = True) -> ControllerInfo:
    """Everything discovery knows about one controller."""
    sysfs = sysfs or PciSysfs()
    vendor, device = sysfs.vendor_device(bdf)
    group = sysfs.iommu_group(bdf)
    peers = [d for d in sysfs.group_devices(group) if d != bdf] if group is not None else []
    info = ControllerInfo(
        bdf=bdf,
        vendor_id=vendor,
        device_id=device,
        driver=sysfs.driver(bdf),
        driver_override=sysfs.driver_override(bdf),
        iommu_group=group,
        group_peers=peers,
    )
    if info.driver is not None:
        info.bar0_note = f"BAR0 held by {info.driver}; claim the controller to read it"
    elif not read_bar0:
        info.bar0_note = "not read"
    elif not sysfs.config_read(bdf, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY:
        info.bar0_note = "memory decoding is off (no driver enabled the device)"
    else:
        try:
            ac64, dbc = read_bar0_via_resource(sysfs, bdf)
            info.ac64, info.has_dbc, info.dbc_offset = ac64, dbc is not None, dbc
        except (OSError, ValueError, HarnessError) as e:
            info.bar0_note = f"BAR0 not readable: {e}"
    return info


def list_controllers(sysfs: PciSysfs | None = None, read_bar0: bool = True) -> list[ControllerInfo]:
    """Every xHCI on this machine (an empty list when there is none, or no PCI at all)."""
    sysfs = sysfs or PciSysfs()
    return [describe(bdf, sysfs, read_bar0) for bdf in xhci_addresses(sysfs)]
