"""The Linux kernel as the debug host of the virtual DbC, over USB/IP (kernel bench).

Boots one QEMU guest (no IOMMU: USB/IP needs none) and runs tests/guest/test_usbip_kernel.py in
it: the virtual xHCI with our DbC driver, exported by fixtures.usbip, attached with ``usbip
attach`` over loopback, enumerated by the guest kernel, bound by usb_debug, bytes both ways
through /dev/ttyUSBn (1 MiB each way), detach and recovery. Each guest test's outcome is
asserted here, so a failure names the guest test and shows its output.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbc_harness.fixtures.kernel_bench import KernelBench, KernelBenchUnavailable, PytestResult
from dbc_harness.fixtures.kernel_bench.runner import check_available

pytestmark = pytest.mark.kernel_bench

GUEST_MODULE = Path(__file__).parent / "guest" / "test_usbip_kernel.py"
DOTTED = "tests.guest.test_usbip_kernel"
GUEST_MODULES = ("usbip_core", "vhci_hcd", "usbserial", "usb_debug")


def _guest_tests() -> list[str]:
    tree = ast.parse(GUEST_MODULE.read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]


@pytest.fixture(scope="module")
def guest_run() -> Iterator[PytestResult]:
    try:
        check_available()
    except KernelBenchUnavailable as exc:
        pytest.skip(f"kernel bench unavailable: {exc}")
    with KernelBench(iommu=False, modules=GUEST_MODULES) as bench:
        yield bench.run_pytest([str(GUEST_MODULE)], "-x", "-v", timeout=900)


@pytest.mark.parametrize("name", _guest_tests())
def test_guest(guest_run: PytestResult, name: str) -> None:
    outcomes = guest_run.outcomes_of(DOTTED, name)
    context = f"guest exit {guest_run.returncode}\n{guest_run.stdout[-4000:]}\n"
    assert outcomes, f"{name} did not run in the guest\n{context}{guest_run.console[-3000:]}"
    for outcome in outcomes:
        assert outcome.outcome == "passed", outcome.report()
