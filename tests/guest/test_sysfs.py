"""sysfs claim inside the guest (machines without an IOMMU): resource0 mmap, hugepage memory at
physical addresses, and the same No Op proof; plus the refusals that guard this unsafe mode."""

from __future__ import annotations

import pytest
from conftest import GuestMachine
from dbc_harness.drivers.xhci.host import XhciHost
from dbc_harness.harness.binding import state
from dbc_harness.harness.binding.claim import claim
from dbc_harness.harness.binding.errors import NoIommu, UnsafeModeRefused
from dbc_harness.harness.binding.pci import PCI_COMMAND_MASTER
from dbc_harness.harness.binding.sysfs import PciSysfs
from guest_helpers import usb_devices_come_back

pytestmark = [pytest.mark.kernel_bench, pytest.mark.usefixtures(usb_devices_come_back.__name__)]


@pytest.fixture
def no_iommu_machine(guest_machine: GuestMachine) -> GuestMachine:
    if guest_machine.iommu:
        pytest.skip("needs the machine without an IOMMU")
    return guest_machine


def test_sysfs_mode_needs_the_unsafe_flag(no_iommu_machine: GuestMachine) -> None:
    bdf = no_iommu_machine.xhci_bdf
    with pytest.raises(UnsafeModeRefused, match="no DMA isolation"), claim(bdf, "sysfs"):
        pass
    with pytest.raises(NoIommu, match="unsafe=True"), claim(bdf, "auto"):
        pass
    with pytest.raises(NoIommu, match="no IOMMU group"), claim(bdf, "vfio"):
        pass
    assert PciSysfs().driver(bdf) == "xhci_hcd"
    assert state.list_states() == []


def test_no_op_commands_complete_into_hugepage_memory(no_iommu_machine: GuestMachine) -> None:
    bdf = no_iommu_machine.xhci_bdf
    sysfs = PciSysfs()
    with claim(bdf, "auto", unsafe=True) as c:
        assert c.info.mode == "sysfs" and c.info.vfio_api == ""
        assert sysfs.driver(bdf) is None
        assert c.dma.backend == "hugepage"
        with XhciHost(c.mmio, c.dma) as host:
            events = [host.no_op() for _ in range(20)]
            for event in events:
                assert event.success, event.text
                # written by the controller into a live buffer of our hugepage allocator
                buf, _ = c.dma.lookup(event.event_address)
                assert buf.space is c.dma
                assert c.dma.lookup(event.command_trb_pointer)[0].space is c.dma
        # physical addresses: below the guest's 2 GiB of RAM (no IOMMU to translate)
        assert all(e.event_address < 2 << 30 for e in events)
        assert c.info.has_dbc is False
    assert sysfs.driver(bdf) == "xhci_hcd"
    assert sysfs.driver_override(bdf) is None
    assert state.list_states() == []
    # xhci_hcd runs the controller again; our Bus Master bit was handed back to it
    assert sysfs.config_read(bdf, 4, 2) & PCI_COMMAND_MASTER
