"""Refusals inside the guest: a forced bad state produces the named refusal, and nothing on the
machine changed (driver, driver_override, no state file).

* group-peer machine: QEMU's ``edu`` device shares the xHCI's IOMMU group; bound to a driver
  (uio_pci_generic) it would have to move: GroupNotViable. With ``force`` the claim goes on,
  the kernel's VFIO still refuses the group, and everything is given back.
* usb-storage machine: a filesystem on the USB stick behind the controller is mounted:
  StorageOnController.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import GuestMachine
from dbc_harness.harness.binding.claim import claim
from dbc_harness.harness.binding.errors import GroupNotViable, StorageOnController, VfioError
from dbc_harness.harness.binding.sysfs import PciSysfs, modprobe
from guest_helpers import driver_of, state_files, usb_devices_come_back

pytestmark = [pytest.mark.kernel_bench, pytest.mark.usefixtures(usb_devices_come_back.__name__)]

EDU_ID = "1234 11e8"


def _wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def bound_peer(guest_machine: GuestMachine) -> Iterator[str]:
    """The group peer, bound to uio_pci_generic for the test (unbound afterwards)."""
    if "group-peer" not in guest_machine.extra_devices:
        pytest.skip("needs the group-peer machine")
    peer = guest_machine.xhci_bdf[:-1] + "1"
    sysfs = PciSysfs()
    modprobe("uio_pci_generic")
    new_id = Path("/sys/bus/pci/drivers/uio_pci_generic/new_id")
    new_id.write_text(EDU_ID)
    try:
        _wait_for(lambda: sysfs.driver(peer) == "uio_pci_generic", 10, "peer bound")
        yield peer
    finally:
        Path("/sys/bus/pci/drivers/uio_pci_generic/remove_id").write_text(EDU_ID)
        sysfs.unbind(peer)


def test_group_peer_with_a_driver_is_refused(guest_machine: GuestMachine, bound_peer: str) -> None:
    bdf = guest_machine.xhci_bdf
    expected = f"{bound_peer} \\(driver uio_pci_generic\\)"
    with pytest.raises(GroupNotViable, match=expected) as e, claim(bdf, "vfio"):
        pass
    assert e.value.reasons == [f"{bound_peer} (driver uio_pci_generic)"]
    assert driver_of(bdf) == "xhci_hcd"
    assert PciSysfs().driver_override(bdf) is None
    assert state_files() == []


def test_forced_claim_of_a_non_viable_group_gives_everything_back(
    guest_machine: GuestMachine, bound_peer: str
) -> None:
    bdf = guest_machine.xhci_bdf
    with pytest.raises((GroupNotViable, VfioError)), claim(bdf, "vfio", force=True):
        pass
    assert driver_of(bdf) == "xhci_hcd"
    assert PciSysfs().driver_override(bdf) is None
    assert driver_of(bound_peer) == "uio_pci_generic"
    assert state_files() == []


@pytest.fixture
def mounted_stick(guest_machine: GuestMachine, tmp_path: Path) -> Iterator[str]:
    """The USB stick behind the xHCI, formatted and mounted (unmounted afterwards)."""
    if "usb-storage" not in guest_machine.extra_devices:
        pytest.skip("needs the usb-storage machine")
    for module in ("usb_storage", "sd_mod", "ext2"):
        modprobe(module)
    block = Path("/sys/class/block")
    device_dir = os.path.realpath(guest_machine.xhci_sysfs)

    def disk() -> str | None:
        for entry in block.iterdir():
            if os.path.realpath(entry).startswith(device_dir + "/"):
                return entry.name
        return None

    _wait_for(lambda: disk() is not None, 20, "the USB stick's block device appeared")
    name = disk()
    assert name is not None
    mkfs = shutil.which("mke2fs") or "/sbin/mke2fs"
    subprocess.run([mkfs, "-q", "-F", f"/dev/{name}"], check=True, timeout=60)
    mnt = tmp_path / "stick"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ext2", f"/dev/{name}", str(mnt)], check=True, timeout=30)
    try:
        yield f"/dev/{name} on {mnt}"
    finally:
        subprocess.run(["umount", str(mnt)], check=True, timeout=30)


def test_mounted_storage_behind_the_controller_is_refused(
    guest_machine: GuestMachine, mounted_stick: str
) -> None:
    bdf = guest_machine.xhci_bdf
    mode = "vfio" if guest_machine.iommu else "sysfs"
    with pytest.raises(StorageOnController, match="mounted storage") as e:
        with claim(bdf, mode, unsafe=True):
            pass
    assert e.value.reasons == [mounted_stick]
    assert driver_of(bdf) == "xhci_hcd"
    assert state_files() == []
