"""VFIO claim inside the guest (machines with the emulated Intel IOMMU): capability registers
and extended capabilities decoded, "no Debug Capability" as an expected answer, and the generic
xHCI host path: No Op Commands answered by Command Completion Events that the controller wrote
through the IOMMU into memory from our allocator."""

from __future__ import annotations

import errno

import pytest
from conftest import GuestMachine
from dbc_harness.drivers.dbc.bringup import find_dbc
from dbc_harness.drivers.dbc.errors import DbcNotFound
from dbc_harness.drivers.xhci import registers as R
from dbc_harness.drivers.xhci.host import XhciHost, probe_capabilities
from dbc_harness.harness.binding import state
from dbc_harness.harness.binding.claim import claim
from dbc_harness.harness.binding.errors import NoDbc, VfioError
from dbc_harness.harness.binding.pci import PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY
from dbc_harness.harness.binding.sysfs import PciSysfs
from guest_helpers import usb_devices_come_back

pytestmark = [pytest.mark.kernel_bench, pytest.mark.usefixtures(usb_devices_come_back.__name__)]

#: HCCPARAMS1 of the two emulated controllers (QEMU hw/usb/hcd-xhci.c): both set AC64.
HCCPARAMS1 = {"qemu-xhci": 0x00087001, "nec-usb-xhci": 0x00080001}


@pytest.fixture
def vfio_machine(guest_machine: GuestMachine) -> GuestMachine:
    if not guest_machine.iommu or "group-peer" in guest_machine.extra_devices:
        pytest.skip("needs the IOMMU machine without a group peer")
    if not guest_machine.intremap:
        pytest.skip("needs interrupt remapping (VFIO refuses the container without it)")
    return guest_machine


def test_vfio_claim_maps_bar0_and_decodes_the_capabilities(vfio_machine: GuestMachine) -> None:
    bdf = vfio_machine.xhci_bdf
    with claim(bdf, "vfio") as c:
        assert PciSysfs().driver(bdf) == "vfio-pci"
        info = c.info
        assert (info.mode, info.vfio_api, info.original_driver) == ("vfio", "group", "xhci_hcd")
        assert info.bar0_size == 0x4000
        cmd = c.pci_command()
        assert cmd & PCI_COMMAND_MEMORY and cmd & PCI_COMMAND_MASTER
        caps = probe_capabilities(c.mmio)
        assert caps.caplength == 0x40 and caps.hciversion == 0x0100
        assert (caps.max_slots, caps.max_intrs, caps.max_ports) == (64, 16, 8)
        assert caps.raw["HCCPARAMS1"] == HCCPARAMS1[vfio_machine.controller]
        assert caps.ac64 is True and info.ac64 is True
        assert (caps.dboff, caps.rtsoff) == (0x2000, 0x1000)
        protocols = [
            R.SUPPORTED_PROTOCOL.decode(x.dword0)["major_revision"]
            for x in caps.extended
            if x.capability_id == R.XECP_ID_SUPPORTED_PROTOCOL
        ]
        assert sorted(protocols) == [2, 3]
        assert caps.extended[0].offset == 4 * 8  # xECP = 8 dwords
        # QEMU emulates no DbC: a clear, expected answer, never a crash
        assert info.has_dbc is False
        assert info.dbc_status == "no Debug Capability on this controller"
        assert "no Debug Capability on this controller" in caps.render()
        with pytest.raises(NoDbc, match="no Debug Capability on this controller"):
            info.require_dbc()
        with pytest.raises(DbcNotFound, match="no Debug Capability"):
            find_dbc(c.mmio)
    assert PciSysfs().driver(bdf) == "xhci_hcd"


def test_no_op_commands_complete_through_the_iommu(vfio_machine: GuestMachine) -> None:
    bdf = vfio_machine.xhci_bdf
    with claim(bdf) as c, XhciHost(c.mmio, c.dma) as host:  # mode "auto" picks VFIO here
        assert c.info.mode == "vfio"
        assert c.dma.backend == "iova"
        events = [host.no_op() for _ in range(40)]  # > one lap of the 16-TRB rings
        for event in events:
            assert event.success, event.text
            # the event was written by the controller into a buffer of our allocator...
            buf, _offset = c.dma.lookup(event.event_address)
            assert buf.space is c.dma
            # ...at an IOVA above the guest's 2 GiB of RAM: only the IOMMU can resolve it
            assert event.event_address >= 1 << 32
            assert c.dma.lookup(event.command_trb_pointer)[0].space is c.dma
        pointers = [e.command_trb_pointer for e in events]
        assert len(set(pointers[:15])) == 15  # one command slot each until the Link TRB
        assert host.other_events == [] or all("PortStatusChange" in t for t in host.other_events)
    assert PciSysfs().driver(bdf) == "xhci_hcd"
    assert c.released


def test_without_interrupt_remapping_vfio_says_what_to_do(guest_machine: GuestMachine) -> None:
    """IOMMU without interrupt remapping: VFIO_SET_IOMMU fails with EPERM; the error names the
    module parameter to set, and the controller is given back."""
    if not guest_machine.iommu or guest_machine.intremap:
        pytest.skip("needs the IOMMU machine without interrupt remapping")
    bdf = guest_machine.xhci_bdf
    with pytest.raises(VfioError, match="allow_unsafe_interrupts") as e, claim(bdf, "vfio"):
        pass
    assert e.value.errno == errno.EPERM
    assert PciSysfs().driver(bdf) == "xhci_hcd"
    assert state.list_states() == []


def test_iovas_below_4_gib_for_ac64_0(vfio_machine: GuestMachine) -> None:
    """``dma_below_4g`` (what AC64 = 0 forces): every IOVA the controller is given lies below
    4 GiB and outside the MSI window, and the No Op path still completes through the IOMMU."""
    bdf = vfio_machine.xhci_bdf
    with claim(bdf, "vfio", dma_below_4g=True) as c:
        assert c.info.ac64 is True and c.info.dma_limit == 1 << 32
        with XhciHost(c.mmio, c.dma, below_4g=True) as host:
            events = [host.no_op() for _ in range(5)]
            for event in events:
                assert event.success, event.text
                assert event.event_address < 1 << 32
                assert not 0xFEE0_0000 <= event.event_address < 0xFEF0_0000
                assert c.dma.lookup(event.event_address)[0].space is c.dma
    assert PciSysfs().driver(bdf) == "xhci_hcd"
