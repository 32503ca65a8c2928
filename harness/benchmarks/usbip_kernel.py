"""``dbc-harness bench usbip-kernel``: the real Linux debug host over USB/IP, at its tty.

Boots one kernel bench guest (QEMU, no IOMMU: USB/IP needs none) and runs
:mod:`~dbc_harness.harness.benchmarks.usbip_kernel_guest` in it: the virtual xHCI with our DbC
driver exported on loopback, ``usbip attach``, the guest kernel's vhci_hcd + ``usb_debug``,
bytes through /dev/ttyUSBn one direction at a time. Keys:

* ``tty_host_to_target_MBps`` / ``tty_target_to_host_MBps``: the tty's rate each way (no goal:
  under TCG every instruction of the guest kernel and of the Python model is emulated);
* ``tty_bytes``: bytes each way (4 MiB; 1 MiB with ``quick``);
* ``guest_seconds``: the guest command's wall time (set-up, both directions, detach).

``bench usbip`` measures the same export in-process beside it (our client instead of the
kernel's), where the goal applies. Correctness through this path is tested by
tests/test_kernel_bench_usbip.py.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from dbc_harness.fixtures.kernel_bench.runner import KernelBench
from dbc_harness.harness.benchmarks.usbip_kernel_guest import MODULES

GUEST = "dbc_harness.harness.benchmarks.usbip_kernel_guest"


class GuestBenchmarkFailed(RuntimeError):
    """The guest side exited non-zero or printed no result (its output is in the message)."""


def run(quick: bool = False) -> dict[str, Any]:
    size = (1 if quick else 4) << 20
    with KernelBench(iommu=False, modules=MODULES) as bench:
        result = bench.run([sys.executable, "-m", GUEST, str(size)], 900)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise GuestBenchmarkFailed(
            f"guest exit {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    measured: dict[str, Any] = json.loads(lines[-1])
    measured["guest_seconds"] = round(result.command_seconds, 2)
    return measured
