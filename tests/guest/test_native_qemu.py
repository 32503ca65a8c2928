"""The reference C driver on QEMU's emulated xHCI, from native code under CPU emulation.

The C object runs in the engine (:mod:`dbc_harness.drivers.native`) inside the guest, with its
MMIO forwarded to the claimed BAR0 (the claim's ``mmio``) and its DMA memory allocated from the
claim's DMA space (IOVAs above the guest's RAM under VFIO: only the IOMMU can resolve them;
hugepages at physical addresses on the machine without an IOMMU). QEMU emulates no Debug
Capability: "no Debug Capability on this controller" is the expected answer, and the No Op
Commands prove the C code's rings reach the controller and come back.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import GuestMachine
from dbc_harness.drivers.native.xhci_noop import NativeXhciProbe
from dbc_harness.drivers.xhci import registers as R
from dbc_harness.drivers.xhci.host import probe_capabilities
from dbc_harness.harness.binding.claim import Claim, claim
from dbc_harness.harness.binding.sysfs import PciSysfs
from guest_helpers import claim_mode, state_files, usb_devices_come_back

pytestmark = [pytest.mark.kernel_bench, pytest.mark.usefixtures(usb_devices_come_back.__name__)]

#: HCCPARAMS1 of the two emulated controllers (QEMU hw/usb/hcd-xhci.c)
HCCPARAMS1 = {"qemu-xhci": 0x00087001, "nec-usb-xhci": 0x00080001}
DBC_HARNESS = Path(sys.executable).parent / "dbc-harness"
#: more No Op Commands than one lap of the 15 command slots and of the 16-TRB event ring
NO_OPS = 20


@pytest.fixture
def claimed(guest_machine: GuestMachine) -> Iterator[Claim]:
    """The controller claimed as the bench does: VFIO behind the IOMMU, sysfs without one."""
    if "group-peer" in guest_machine.extra_devices:
        pytest.skip("the group-peer machine is for refusals")
    mode = claim_mode(guest_machine.iommu)
    with claim(guest_machine.xhci_bdf, mode, unsafe=mode == "sysfs") as c:
        yield c
    assert PciSysfs().driver(guest_machine.xhci_bdf) == "xhci_hcd"
    assert state_files() == []


def test_native_capability_walk_lists_qemus_capabilities_and_no_dbc(
    guest_machine: GuestMachine, claimed: Claim
) -> None:
    with NativeXhciProbe(claimed.mmio, claimed.dma) as probe:
        walk = probe.cap_walk()
        native_reads = [a for a in probe.machine.mmio_accesses() if a.op == "r"]
    # the expected answer, as a result code and as the sentence the Python probe gives
    assert walk.status_name == "DBC_ENODEV"
    assert walk.dbc_offset is None
    assert walk.dbc_status == "no Debug Capability on this controller"
    assert "xhci: no Debug Capability on this controller" in probe.log
    # C read the real BAR0: the same list the Python walk reads, QEMU's registers
    assert walk.extended == probe_capabilities(claimed.mmio).extended
    assert walk.total == len(walk.extended) == 2
    assert walk.registers["CAPLENGTH"] == 0x0100_0040  # CAPLENGTH 0x40, HCIVERSION 0x0100
    assert walk.registers["HCSPARAMS1"] == 0x0800_1040
    assert walk.registers["HCCPARAMS1"] == HCCPARAMS1[guest_machine.controller]
    assert (walk.registers["DBOFF"], walk.registers["RTSOFF"]) == (0x2000, 0x1000)
    assert [c.name for c in walk.extended] == ["Supported Protocol"] * 2
    assert walk.extended[0].offset == 4 * 8  # xECP = 8 dwords
    # QEMU: USB 2.0 on ports 5-8, USB 3.0 on ports 1-4 (name string "USB ")
    assert sorted(walk.protocols()) == [("USB ", 0x0200, 5, 4), ("USB ", 0x0300, 1, 4)]
    assert native_reads and all(a.width == 4 for a in native_reads)


def test_native_no_op_commands_complete_through_the_claims_dma(
    guest_machine: GuestMachine, claimed: Claim
) -> None:
    with NativeXhciProbe(claimed.mmio, claimed.dma) as probe:
        report = probe.no_op(NO_OPS)
    assert report.status_name == "OK", probe.log
    assert report.running and report.halted
    assert len(report.completions) == report.requested == NO_OPS
    for done in report.completions:
        assert done.success, done.completion_name
        assert done.pointer == done.command_trb
    ring = report.addresses["command ring"]
    events = report.addresses["event ring"]
    slots = [(d.command_trb - ring) // 16 for d in report.completions]
    assert slots[:16] == [*range(15), 0]  # 15 command slots, then past the Link TRB
    positions = [(d.event_trb - events) // 16 for d in report.completions]
    assert positions[:17] == [*range(16), 0]  # the event ring wrapped (CCS toggled)
    # every structure the controller used is claim DMA memory, given back afterwards
    if guest_machine.iommu:
        assert (claimed.info.mode, claimed.dma.backend) == ("vfio", "iova")
        # IOVAs above the guest's 2 GiB of RAM: only the IOMMU can resolve them
        assert min(report.addresses[k] for k in ("DCBAA", "command ring", "event ring")) >= 1 << 32
    else:
        assert (claimed.info.mode, claimed.dma.backend) == ("sysfs", "hugepage")
    assert claimed.dma.stats()["live_bytes"] == 0
    # and the C code left the controller halted (USBSTS.HCH) and reset
    usbsts = claimed.mmio.read32(0x40 + R.OPERATIONAL_REGS.offset("USBSTS"))
    assert usbsts & 1


def test_run_with_the_reference_driver_ends_with_no_dbc(guest_machine: GuestMachine) -> None:
    """``dbc-harness run --bench qemu --driver reference`` in the guest: the C driver's
    capability walk finds no DbC, and the run ends with the expected answer and exit code 3."""
    if not guest_machine.iommu or "group-peer" in guest_machine.extra_devices:
        pytest.skip("`run --bench qemu` claims through VFIO: the IOMMU machine")
    argv = [str(DBC_HARNESS), "run", "--bench", "qemu", "--driver", "reference", "--timeout", "5"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no Debug Capability" in errors[0], proc.stderr
    assert "DBC_ENODEV" in errors[0]
    assert "Traceback" not in proc.stderr
    assert "giving everything back" in proc.stdout
    assert PciSysfs().driver(guest_machine.xhci_bdf) == "xhci_hcd"
    assert state_files() == []
