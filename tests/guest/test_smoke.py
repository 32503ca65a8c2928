"""Smoke tests of the kernel bench guest itself: the machine looks as configured.

They prove the path host -> QEMU -> guest pytest -> JUnit -> host assertions end to end, and
check what the binding tests rely on: the emulated xHCI in sysfs, the modules stage 2 loads,
the IOMMU groups, devices on the xHCI, the project and the share.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest
from conftest import GuestMachine

XHCI_CLASS = "0x0c0330"
QEMU_USB_KBD = ("0627", "0001")  # QEMU's usb-kbd idVendor/idProduct


def test_running_in_the_guest_kernel(guest_machine: GuestMachine) -> None:
    # The guest runs the Debian kernel the bench booted, not the host's.
    assert os.environ["DBC_HARNESS_GUEST"] == "1"
    assert platform.release().endswith("-amd64"), platform.release()
    assert Path("/proc/1/cmdline").read_bytes().startswith(b"/bin/sh")


def test_xhci_is_in_sysfs_with_its_class_and_id(guest_machine: GuestMachine) -> None:
    device = guest_machine.xhci_sysfs
    assert device.is_dir(), sorted(os.listdir("/sys/bus/pci/devices"))
    assert (device / "class").read_text().strip() == XHCI_CLASS
    vendor = (device / "vendor").read_text().strip().removeprefix("0x")
    product = (device / "device").read_text().strip().removeprefix("0x")
    assert f"{vendor}:{product}" == guest_machine.pci_id


def test_stage2_modules_are_loaded_and_xhci_hcd_owns_the_controller(
    guest_machine: GuestMachine,
) -> None:
    for module in ("xhci_pci", "xhci_hcd", "vfio_pci", "vfio_iommu_type1"):
        assert Path("/sys/module", module).is_dir(), f"module {module} not loaded"
    driver = guest_machine.xhci_sysfs / "driver"
    assert driver.resolve().name == "xhci_hcd"


def test_iommu_groups_match_the_configuration(guest_machine: GuestMachine) -> None:
    link = guest_machine.xhci_sysfs / "iommu_group"
    if not guest_machine.iommu:
        assert not link.exists()
        assert not any(Path("/sys/kernel/iommu_groups").iterdir())
        return
    assert link.is_symlink()
    members = sorted(p.name for p in (link.resolve() / "devices").iterdir())
    assert guest_machine.xhci_bdf in members
    peer = guest_machine.xhci_bdf[:-1] + "1"
    if "group-peer" in guest_machine.extra_devices:
        assert members == sorted([guest_machine.xhci_bdf, peer])
    else:
        assert members == [guest_machine.xhci_bdf]


def test_usb_keyboard_enumerates_behind_the_xhci(guest_machine: GuestMachine) -> None:
    if "usb-kbd" not in guest_machine.extra_devices:
        pytest.skip("no usb-kbd on this machine")
    found = []
    for device in Path("/sys/bus/usb/devices").iterdir():
        vendor = device / "idVendor"
        if vendor.exists():
            found.append((vendor.read_text().strip(), (device / "idProduct").read_text().strip()))
    assert QEMU_USB_KBD in found, found


def test_project_and_share_are_reachable(guest_machine: GuestMachine) -> None:
    import dbc_harness.fixtures.kernel_bench as kernel_bench

    assert Path(kernel_bench.__file__).is_relative_to(Path.cwd())
    assert sys.prefix.endswith(".venv")
    marker = guest_machine.share / "smoke-marker"
    marker.write_text("written in the guest\n")
    assert marker.read_text() == "written in the guest\n"
