"""A fake /sys tree (and a tiny fake PCI core that reacts to bind writes) for host-side tests of
the binding layer. The fake kernel implements only the documented sysfs contract the code relies
on: ``driver/unbind`` removes the driver link; ``drivers_probe`` binds ``driver_override`` if set
(and the driver is registered), else the device's default driver; ``drivers/X/bind`` binds X."""

from __future__ import annotations

import os
from pathlib import Path

from dbc_harness.harness.binding.sysfs import PciSysfs


def make_device(
    root: Path,
    bdf: str,
    *,
    cls: int = 0x0C0330,
    vendor: int = 0x1B36,
    device: int = 0x000D,
    driver: str | None = "xhci_hcd",
    group: int | None = 4,
    bridge_path: str = "pci0000:00",
) -> Path:
    real = root / "devices" / bridge_path / bdf
    real.mkdir(parents=True, exist_ok=True)
    (real / "class").write_text(f"0x{cls:06x}\n")
    (real / "vendor").write_text(f"0x{vendor:04x}\n")
    (real / "device").write_text(f"0x{device:04x}\n")
    (real / "driver_override").write_text("(null)\n")
    (real / "enable").write_text("1\n")
    (real / "config").write_bytes(bytes(64))
    bus = root / "bus" / "pci" / "devices"
    bus.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(real, bus), bus / bdf)
    for d in ("xhci_hcd", "vfio-pci", "virtio-pci"):
        (root / "bus" / "pci" / "drivers" / d).mkdir(parents=True, exist_ok=True)
    if driver:
        link_driver(root, bdf, driver)
    if group is not None:
        gdir = root / "kernel" / "iommu_groups" / str(group) / "devices"
        gdir.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(real, gdir), gdir / bdf)
        os.symlink(os.path.relpath(gdir.parent, real), real / "iommu_group")
    (root / "module").mkdir(parents=True, exist_ok=True)
    return real


def link_driver(root: Path, bdf: str, driver: str | None) -> None:
    real = Path(os.path.realpath(root / "bus" / "pci" / "devices" / bdf))
    link = real / "driver"
    if link.is_symlink():
        link.unlink()
    if driver:
        ddir = root / "bus" / "pci" / "drivers" / driver
        ddir.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(ddir, real), link)


class FakeKernelSysfs(PciSysfs):
    """PciSysfs over a fake tree whose writes behave like the PCI core's."""

    def __init__(self, root: Path, default_driver: dict[str, str] | None = None) -> None:
        super().__init__(root)
        self.default_driver = default_driver or {}
        self.log: list[tuple[str, str]] = []

    def _write(self, path: Path, value: str) -> None:
        value_s = value.strip()
        self.log.append((str(path.relative_to(self.root)), value_s))
        name = path.name
        if name == "driver_override":
            path.write_text((value_s or "(null)") + "\n")
        elif name == "unbind":
            bdf = value_s
            link_driver(self.root, bdf, None)
        elif name == "drivers_probe":
            bdf = value_s
            if self.driver(bdf) is None:
                override = self.driver_override(bdf)
                target = override if override else self.default_driver.get(bdf)
                if target and self.driver_registered(target):
                    link_driver(self.root, bdf, target)
        elif name == "bind":
            link_driver(self.root, value_s, path.parent.name)
        else:
            path.write_text(value)


def fake_sysfs(tmp_path: Path) -> tuple[Path, FakeKernelSysfs]:
    root = tmp_path / "sys"
    root.mkdir()
    return root, FakeKernelSysfs(root, {"0000:00:04.0": "xhci_hcd"})
