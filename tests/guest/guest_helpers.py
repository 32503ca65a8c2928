"""Helpers shared by the binding layer's guest tests (not a test module)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbc_harness.harness.binding import state
from dbc_harness.harness.binding.sysfs import PciSysfs

HOLDER = Path(__file__).with_name("claim_holder.py")


def claim_mode(iommu: bool) -> str:
    """vfio where the machine has an IOMMU, else sysfs (with --unsafe)."""
    return "vfio" if iommu else "sysfs"


def driver_of(bdf: str) -> str | None:
    return PciSysfs().driver(bdf)


def state_files() -> list[Path]:
    return state.list_states()


def start_holder(bdf: str, mode: str, timeout: float = 60.0) -> subprocess.Popen[str]:
    """Start claim_holder.py and wait (with a deadline) until it reports CLAIMED."""
    proc = subprocess.Popen(
        [sys.executable, str(HOLDER), bdf, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("CLAIMED") or not line:
                break
    if not line.startswith("CLAIMED"):
        proc.kill()
        _out, err = proc.communicate(timeout=30)
        raise AssertionError(f"holder did not claim {bdf}: {line!r} {err}")
    return proc


def usb_devices_behind(bdf: str) -> list[str]:
    """idVendor:idProduct of every USB device (root hubs included) behind the controller."""
    root = Path("/sys/bus/pci/devices") / bdf
    found = []
    for vendor in root.glob("usb*/**/idVendor"):
        found.append(
            f"{vendor.read_text().strip()}:{(vendor.parent / 'idProduct').read_text().strip()}"
        )
    return sorted(found)


@pytest.fixture
def usb_devices_come_back() -> Iterator[None]:
    """After the test, every USB device that was behind the controller enumerates again (the
    keyboard comes back), within 15 s: giving the controller back means that, not only a
    driver link."""
    bdf = os.environ["DBC_HARNESS_GUEST_XHCI_BDF"]
    before = usb_devices_behind(bdf)
    yield
    deadline = time.monotonic() + 15.0
    while usb_devices_behind(bdf) != before:
        if time.monotonic() > deadline:
            raise AssertionError(f"USB devices {before} not back: {usb_devices_behind(bdf)}")
        time.sleep(0.1)
