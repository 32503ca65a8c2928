"""Guest-side tests: collected only inside the kernel bench guest (``DBC_HARNESS_GUEST=1``).

The host runs them through ``tests/test_kernel_bench.py``, which boots one QEMU guest per machine
configuration and asserts each guest test's outcome. Inside the guest these variables describe
the machine (see :mod:`dbc_harness.fixtures.kernel_bench`): ``DBC_HARNESS_GUEST_CONTROLLER``,
``DBC_HARNESS_GUEST_PCI_ID``, ``DBC_HARNESS_GUEST_XHCI_BDF``, ``DBC_HARNESS_GUEST_IOMMU``,
``DBC_HARNESS_GUEST_INTREMAP``, ``DBC_HARNESS_GUEST_EXTRA_DEVICES``, ``DBC_HARNESS_SHARE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_GUEST = os.environ.get("DBC_HARNESS_GUEST") == "1"

collect_ignore_glob = [] if IN_GUEST else ["test_*.py"]


@dataclass(frozen=True)
class GuestMachine:
    """The guest's machine configuration, from the environment the kernel bench sets."""

    controller: str
    pci_id: str
    xhci_bdf: str
    iommu: bool
    intremap: bool
    extra_devices: tuple[str, ...]
    share: Path

    @property
    def xhci_sysfs(self) -> Path:
        return Path("/sys/bus/pci/devices") / self.xhci_bdf


@pytest.fixture(scope="session")
def guest_machine() -> GuestMachine:
    """What the kernel bench booted (controller, IOMMU, extra devices, share directory)."""
    env = os.environ
    return GuestMachine(
        controller=env["DBC_HARNESS_GUEST_CONTROLLER"],
        pci_id=env["DBC_HARNESS_GUEST_PCI_ID"],
        xhci_bdf=env["DBC_HARNESS_GUEST_XHCI_BDF"],
        iommu=env["DBC_HARNESS_GUEST_IOMMU"] == "1",
        intremap=env["DBC_HARNESS_GUEST_INTREMAP"] == "1",
        extra_devices=tuple(env.get("DBC_HARNESS_GUEST_EXTRA_DEVICES", "").split()),
        share=Path(env["DBC_HARNESS_SHARE"]),
    )
