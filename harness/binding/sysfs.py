"""Small helpers for ``/sys/bus/pci`` (driver binding, IOMMU groups, config space, modules).

Everything takes its sysfs root from :class:`PciSysfs` (default ``/sys``), so tests can run the
same code against a fake tree in a temporary directory. Writes that the kernel rejects become
named errors; no helper waits without a deadline.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

from dbc_harness.drivers.clock import REAL_CLOCK, Clock
from dbc_harness.harness.binding.errors import BindError, DeviceNotFound, HarnessError, NotPermitted
from dbc_harness.harness.binding.pci import normalize_bdf

#: How long a driver bind/unbind/probe may take before we give up (xhci_hcd's own remove waits
#: for every USB device to disconnect; 10 s is generous).
BIND_TIMEOUT_S = 10.0


class PciSysfs:
    """The PCI part of sysfs, rooted at ``root`` (``/sys`` on a real machine)."""

    def __init__(self, root: str | os.PathLike[str] = "/sys", clock: Clock = REAL_CLOCK) -> None:
        self.root = Path(root)
        self.clock = clock

    # -- paths -------------------------------------------------------------------------------
    @property
    def devices_dir(self) -> Path:
        return self.root / "bus" / "pci" / "devices"

    def device_dir(self, bdf: str) -> Path:
        """``/sys/bus/pci/devices/BDF``; DeviceNotFound when absent."""
        path = self.devices_dir / normalize_bdf(bdf)
        if not path.exists():
            raise DeviceNotFound(f"no PCI device {bdf} (looked in {self.devices_dir})")
        return path

    def list_devices(self) -> list[str]:
        if not self.devices_dir.is_dir():
            return []
        return sorted(p.name for p in self.devices_dir.iterdir())

    # -- attributes --------------------------------------------------------------------------
    def read_attr(self, bdf: str, name: str) -> str:
        return (self.device_dir(bdf) / name).read_text().strip()

    def read_int(self, bdf: str, name: str) -> int:
        return int(self.read_attr(bdf, name), 0)

    def class_code(self, bdf: str) -> int:
        return self.read_int(bdf, "class")

    def vendor_device(self, bdf: str) -> tuple[int, int]:
        return self.read_int(bdf, "vendor"), self.read_int(bdf, "device")

    def driver(self, bdf: str) -> str | None:
        """Name of the bound driver, or None."""
        link = self.device_dir(bdf) / "driver"
        if not link.exists():
            return None
        return os.path.basename(os.readlink(link))

    def driver_override(self, bdf: str) -> str | None:
        """Contents of ``driver_override`` (None when unset: the kernel shows ``(null)``)."""
        path = self.device_dir(bdf) / "driver_override"
        if not path.exists():
            return None
        text = path.read_text().strip()
        return None if text in ("", "(null)") else text

    def iommu_group(self, bdf: str) -> int | None:
        link = self.device_dir(bdf) / "iommu_group"
        if not link.exists():
            return None
        return int(os.path.basename(os.readlink(link)))

    def group_devices(self, group: int) -> list[str]:
        path = self.root / "kernel" / "iommu_groups" / str(group) / "devices"
        if not path.is_dir():
            return []
        return sorted(p.name for p in path.iterdir())

    def is_bridge(self, bdf: str) -> bool:
        """PCI bridges (base class 0x06) may share a group without moving to vfio-pci."""
        return (self.class_code(bdf) >> 16) == 0x06

    def has_function_reset(self, bdf: str) -> bool:
        return (self.device_dir(bdf) / "reset").exists()

    # -- writes ------------------------------------------------------------------------------
    def _write(self, path: Path, value: str) -> None:
        try:
            with open(path, "w") as f:
                f.write(value)
        except PermissionError as e:
            raise NotPermitted(f"cannot write {value.strip()!r} to {path}: {e.strerror}") from e
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                raise NotPermitted(f"cannot write {value.strip()!r} to {path}: {e.strerror}") from e
            raise BindError(f"writing {value.strip()!r} to {path} failed: {e.strerror}") from e

    def set_driver_override(self, bdf: str, driver: str | None) -> None:
        """Set (or with None clear) ``driver_override``."""
        self._write(self.device_dir(bdf) / "driver_override", (driver or "") + "\n")

    def unbind(self, bdf: str) -> None:
        """Detach the current driver (no-op when none). Blocks while the driver lets go."""
        bdf = normalize_bdf(bdf)
        if self.driver(bdf) is None:
            return
        self._write(self.device_dir(bdf) / "driver" / "unbind", bdf)
        self.wait_for_driver(bdf, None)

    def drivers_probe(self, bdf: str) -> None:
        """Ask the kernel to bind the best driver (honours ``driver_override``). Writing to
        drivers_probe fails with an error when no driver takes the device; that is reported by
        :meth:`wait_for_driver`, not here."""
        bdf = normalize_bdf(bdf)
        try:
            self._write(self.root / "bus" / "pci" / "drivers_probe", bdf)
        except BindError:
            pass

    def bind(self, bdf: str, driver: str) -> None:
        bdf = normalize_bdf(bdf)
        self._write(self.root / "bus" / "pci" / "drivers" / driver / "bind", bdf)

    def wait_for_driver(
        self, bdf: str, expected: str | None, timeout: float = BIND_TIMEOUT_S
    ) -> None:
        """Wait until the bound driver is ``expected`` (None = unbound); BindError on deadline."""
        deadline = self.clock.monotonic() + timeout
        while True:
            current = self.driver(bdf)
            if current == expected:
                return
            if self.clock.monotonic() >= deadline:
                raise BindError(
                    f"{bdf}: driver is {current or 'none'} after {timeout:.0f} s, "
                    f"expected {expected or 'none'}"
                )
            self.clock.sleep(0.01)

    def set_enable(self, bdf: str, on: bool) -> None:
        """sysfs ``enable`` (pci_enable_device / pci_disable_device): MEM decoding on."""
        self._write(self.device_dir(bdf) / "enable", "1" if on else "0")

    def enable_count(self, bdf: str) -> int:
        return self.read_int(bdf, "enable")

    # -- config space ------------------------------------------------------------------------
    def config_read(self, bdf: str, offset: int, size: int) -> int:
        with open(self.device_dir(bdf) / "config", "rb") as f:
            data = os.pread(f.fileno(), size, offset)
        if len(data) != size:
            raise NotPermitted(f"{bdf}: config space read at 0x{offset:x} returned {len(data)} B")
        return int.from_bytes(data, "little")

    def config_write(self, bdf: str, offset: int, size: int, value: int) -> None:
        path = self.device_dir(bdf) / "config"
        try:
            fd = os.open(path, os.O_WRONLY)
        except PermissionError as e:
            raise NotPermitted(f"cannot open {path} for writing: {e.strerror}") from e
        try:
            written = os.pwrite(fd, value.to_bytes(size, "little"), offset)
        except OSError as e:
            raise NotPermitted(f"{bdf}: config write at 0x{offset:x}: {e.strerror}") from e
        finally:
            os.close(fd)
        if written != size:
            raise NotPermitted(f"{bdf}: config write at 0x{offset:x} wrote {written} of {size} B")

    # -- modules -----------------------------------------------------------------------------
    def module_loaded(self, name: str) -> bool:
        return (self.root / "module" / name.replace("-", "_")).is_dir()

    def driver_registered(self, driver: str) -> bool:
        return (self.root / "bus" / "pci" / "drivers" / driver).is_dir()


def modprobe(module: str, timeout: float = 30.0) -> None:
    """Load a kernel module (without udev nothing loads it for us)."""
    exe = shutil.which("modprobe") or "/sbin/modprobe"
    try:
        res = subprocess.run(
            [exe, module], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HarnessError(f"modprobe {module} failed: {e}") from e
    if res.returncode != 0:
        raise HarnessError(f"modprobe {module} failed: {res.stderr.strip() or res.returncode}")


#: The PCI driver that each kernel module registers, where the names differ.
DRIVER_MODULE = {"xhci_hcd": "xhci_pci", "vfio-pci": "vfio_pci"}
