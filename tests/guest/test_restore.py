"""Restore after every way a claim can end (5/5): normal exit, exception, SIGINT, SIGTERM, and
kill -9 followed by ``dbc-harness restore`` (plus SIGHUP: a dropped ssh session). xhci_hcd must
be bound again every time, the state file gone, and the USB devices back. Runs in vfio mode with
an IOMMU, sysfs mode (``--unsafe``) without."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GuestMachine
from dbc_harness.drivers.xhci.host import XhciHost
from dbc_harness.harness.binding.claim import claim
from guest_helpers import claim_mode, driver_of, start_holder, state_files, usb_devices_come_back

pytestmark = [pytest.mark.kernel_bench, pytest.mark.usefixtures(usb_devices_come_back.__name__)]

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def machine(guest_machine: GuestMachine) -> GuestMachine:
    if "group-peer" in guest_machine.extra_devices:
        pytest.skip("the group-peer machine is for refusals")
    assert driver_of(guest_machine.xhci_bdf) == "xhci_hcd"
    return guest_machine


def _mode(m: GuestMachine) -> str:
    return claim_mode(m.iommu)


def test_restore_after_normal_exit(machine: GuestMachine) -> None:
    bdf = machine.xhci_bdf
    proc = start_holder(bdf, _mode(machine))
    assert driver_of(bdf) == ("vfio-pci" if machine.iommu else None)
    assert len(state_files()) == 1
    _out, err = proc.communicate(input="", timeout=60)  # closing stdin ends the holder
    assert proc.returncode == 0, err
    assert driver_of(bdf) == "xhci_hcd"
    assert state_files() == []


def test_restore_after_an_exception(machine: GuestMachine) -> None:
    bdf = machine.xhci_bdf
    with pytest.raises(RuntimeError, match="driver bug"):
        with claim(bdf, _mode(machine), unsafe=not machine.iommu) as c:
            with XhciHost(c.mmio, c.dma) as host:
                assert host.no_op().success
                raise RuntimeError("driver bug")
    assert driver_of(bdf) == "xhci_hcd"
    assert state_files() == []


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_restore_after_a_signal(machine: GuestMachine, sig: signal.Signals, code: int) -> None:
    bdf = machine.xhci_bdf
    proc = start_holder(bdf, _mode(machine))
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert driver_of(bdf) == "xhci_hcd"
    assert state_files() == []


def test_restore_after_kill_9_with_dbc_harness_restore(machine: GuestMachine) -> None:
    bdf = machine.xhci_bdf
    proc = start_holder(bdf, _mode(machine))
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # nothing ran in the holder: the controller stays where the claim put it
    assert driver_of(bdf) == ("vfio-pci" if machine.iommu else None)
    assert len(state_files()) == 1
    res = subprocess.run(
        [str(VENV_BIN / "dbc-harness"), "restore"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert bdf in res.stdout
    assert driver_of(bdf) == "xhci_hcd"
    assert state_files() == []


def test_python_m_harness_restore_after_kill_9(machine: GuestMachine) -> None:
    bdf = machine.xhci_bdf
    proc = start_holder(bdf, _mode(machine))
    proc.kill()
    proc.communicate(timeout=60)
    res = subprocess.run(
        [sys.executable, "-m", "dbc_harness.harness.binding.restore"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    expected_from = "vfio-pci" if machine.iommu else "no driver"
    assert res.stdout.strip() == f"{bdf}: {expected_from} -> xhci_hcd"
    assert driver_of(bdf) == "xhci_hcd"
    assert state_files() == []
