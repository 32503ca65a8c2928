"""Pre-claim safety checks: nothing here changes the machine.

* mounted block devices (or swap) on USB storage behind the controller, the root filesystem
  above all: unbinding xhci_hcd would yank them;
* IOMMU group peers: VFIO only opens a group whose every endpoint device is bound to vfio-pci
  (or to no driver); PCI bridges may stay;
* kernel lockdown: ``integrity``/``confidentiality`` make sysfs ``resource0`` mmap and config
  writes fail with EPERM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dbc_harness.harness.binding.sysfs import PciSysfs


@dataclass(frozen=True)
class MountedDevice:
    """A block device behind the controller that is in use."""

    #: kernel name, e.g. "sda1"
    name: str
    #: mount point, or "[swap]"
    where: str

    @property
    def is_root(self) -> bool:
        return self.where == "/"


def block_devices_behind(sysfs: PciSysfs, bdf: str) -> dict[str, str]:
    """Kernel block devices (disks and partitions) whose sysfs path runs through the controller:
    name -> "major:minor"."""
    device_dir = os.path.realpath(sysfs.device_dir(bdf))
    out: dict[str, str] = {}
    class_block = sysfs.root / "class" / "block"
    if not class_block.is_dir():
        return out
    for entry in sorted(class_block.iterdir()):
        real = os.path.realpath(entry)
        if real.startswith(device_dir + os.sep):
            try:
                out[entry.name] = (Path(real) / "dev").read_text().strip()
            except OSError:
                continue
    return out


def _mountinfo(proc_root: Path) -> list[tuple[str, str]]:
    """(major:minor, mount point) of every mount of this process's namespace."""
    try:
        text = (proc_root / "self" / "mountinfo").read_text()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5:
            rows.append((parts[2], parts[4].replace("\\040", " ")))
    return rows


def _swaps(proc_root: Path) -> list[str]:
    try:
        lines = (proc_root / "swaps").read_text().splitlines()[1:]
    except OSError:
        return []
    return [line.split()[0] for line in lines if line.strip()]


def mounted_storage(
    sysfs: PciSysfs, bdf: str, proc_root: str | os.PathLike[str] = "/proc"
) -> list[MountedDevice]:
    """Block devices behind ``bdf`` that are mounted or used as swap."""
    proc = Path(proc_root)
    devs = block_devices_behind(sysfs, bdf)
    if not devs:
        return []
    by_majmin = {majmin: name for name, majmin in devs.items()}
    found = [
        MountedDevice(by_majmin[majmin], where)
        for majmin, where in _mountinfo(proc)
        if majmin in by_majmin
    ]
    for swap in _swaps(proc):
        name = os.path.basename(swap)
        if name in devs:
            found.append(MountedDevice(name, "[swap]"))
    return found


#: Drivers that leave DMA ownership to VFIO (``driver_managed_dma``): a group peer bound to one
#: of them does not have to move.
VFIO_COMPATIBLE_DRIVERS = frozenset({"vfio-pci", "pci-stub", "pcieport"})


def group_blockers(sysfs: PciSysfs, bdf: str) -> list[str]:
    """Other endpoint devices of ``bdf``'s IOMMU group bound to a driver that is not
    VFIO-compatible (VFIO would refuse the group as not viable). Bridges and driverless devices
    are fine."""
    group = sysfs.iommu_group(bdf)
    if group is None:
        return []
    blockers = []
    for peer in sysfs.group_devices(group):
        if peer == bdf:
            continue
        try:
            if sysfs.is_bridge(peer):
                continue
            drv = sysfs.driver(peer)
        except (OSError, ValueError):
            continue
        if drv is not None and drv not in VFIO_COMPATIBLE_DRIVERS:
            blockers.append(f"{peer} (driver {drv})")
    return blockers


def lockdown_mode(sysfs_root: str | os.PathLike[str] = "/sys") -> str | None:
    """The active kernel lockdown mode ("none", "integrity", "confidentiality"), or None when
    the kernel does not say (no lockdown LSM, or securityfs not mounted)."""
    path = Path(sysfs_root) / "kernel" / "security" / "lockdown"
    try:
        text = path.read_text()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None
