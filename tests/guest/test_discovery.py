"""Discovery inside the kernel bench guest (any machine configuration): pyudev finds the emulated
xHCI with its IDs, its driver, its IOMMU group and the group's other members."""

from __future__ import annotations

import pytest
from conftest import GuestMachine
from dbc_harness.harness.binding.discovery import list_controllers
from dbc_harness.harness.binding.sysfs import PciSysfs
from guest_helpers import usb_devices_come_back

pytestmark = [pytest.mark.kernel_bench, pytest.mark.usefixtures(usb_devices_come_back.__name__)]


def test_discovery_finds_the_emulated_controller_and_its_driver(
    guest_machine: GuestMachine,
) -> None:
    found = {c.bdf: c for c in list_controllers()}
    assert list(found) == [guest_machine.xhci_bdf]
    c = found[guest_machine.xhci_bdf]
    assert c.vendor_device == guest_machine.pci_id
    assert c.driver == "xhci_hcd"
    assert c.driver_override is None
    # BAR0 belongs to xhci_hcd: discovery says so instead of touching it
    assert c.ac64 is None and c.has_dbc is None
    assert "held by xhci_hcd" in c.bar0_note


def test_discovery_reports_the_iommu_group_and_its_members(guest_machine: GuestMachine) -> None:
    (c,) = list_controllers()
    if not guest_machine.iommu:
        assert c.iommu_group is None and c.group_peers == []
        return
    assert c.iommu_group == PciSysfs().iommu_group(guest_machine.xhci_bdf)
    if "group-peer" in guest_machine.extra_devices:
        assert c.group_peers == [guest_machine.xhci_bdf[:-1] + "1"]
    else:
        assert c.group_peers == []


def test_discovery_reads_bar0_of_a_driverless_controller(guest_machine: GuestMachine) -> None:
    """With no driver, BAR0 is readable through resource0: AC64 and DbC presence appear."""
    sysfs = PciSysfs()
    bdf = guest_machine.xhci_bdf
    sysfs.set_driver_override(bdf, "dbc-harness-none")
    sysfs.unbind(bdf)
    try:
        sysfs.set_enable(bdf, True)
        (c,) = list_controllers()
        assert c.driver is None
        assert c.ac64 is True  # qemu-xhci and nec-usb-xhci both set AC64
        assert c.has_dbc is False and c.dbc_offset is None
        assert c.bar0_note == ""
    finally:
        sysfs.set_enable(bdf, False)
        sysfs.set_driver_override(bdf, None)
        sysfs.drivers_probe(bdf)
        sysfs.wait_for_driver(bdf, "xhci_hcd")
