"""`dbc-harness claim` on the emulated xHCI: claim, report, give back (the CLI face of the
binding layer). Runs in vfio mode where the machine has an IOMMU, sysfs mode (--unsafe) without."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GuestMachine
from guest_helpers import claim_mode, driver_of, state_files, usb_devices_come_back

pytestmark = [pytest.mark.kernel_bench, pytest.mark.usefixtures(usb_devices_come_back.__name__)]

DBC_HARNESS = Path(sys.executable).parent / "dbc-harness"


def test_cli_claim_check_reports_and_gives_the_controller_back(
    guest_machine: GuestMachine,
) -> None:
    if "group-peer" in guest_machine.extra_devices:
        pytest.skip("the group-peer machine is for refusals")
    bdf = guest_machine.xhci_bdf
    mode = claim_mode(guest_machine.iommu)
    assert driver_of(bdf) == "xhci_hcd"
    argv = [str(DBC_HARNESS), "claim", bdf, "--mode", mode, "--check", "--json"]
    if mode == "sysfs":
        argv.append("--unsafe")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["bdf"] == bdf
    assert summary["mode"] == mode
    assert summary["original_driver"] == "xhci_hcd"
    assert summary["bar0_size"] >= 0x4000  # QEMU's xHCIs: a 16 KiB BAR0
    assert summary["ac64"] is True
    # QEMU emulates no Debug Capability: a clear, expected answer
    assert summary["dbc_offset"] is None
    assert summary["dbc_status"] == "no Debug Capability on this controller"
    assert driver_of(bdf) == "xhci_hcd"
    assert state_files() == []
