"""``dbc-harness bench kernel-bench``: how fast the QEMU kernel bench gets to work.

Measures boot-to-ready (QEMU start to stage 2 ready: modules loaded, first command can run;
the target is <= 15 s under TCG), the guest kernel's own uptime at ready, a trivial command's
round trip through the share, and Python/pytest start-up inside the guest against the same
commands on the host (``*_slowdown`` = guest / host, measured in the same run).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

from dbc_harness.fixtures.kernel_bench.runner import KernelBench

PYTHON_STARTUP = [sys.executable, "-c", "pass"]
PYTEST_STARTUP = [sys.executable, "-m", "pytest", "--version"]


def _host_seconds(argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, timeout=120)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _guest_seconds(session: Any, argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        result = session.run(argv, 300)
        if result.returncode != 0:
            raise RuntimeError(f"{argv} failed in the guest: {result.stderr}")
        times.append(result.command_seconds)
    return statistics.median(times)


def run(quick: bool = False) -> dict[str, Any]:
    """Boot ``1`` (quick) or ``3`` guests (qemu-xhci behind the IOMMU) and time them."""
    boots = 1 if quick else 3
    repeat = 1 if quick else 3
    boot_seconds: list[float] = []
    uptimes: list[float] = []
    roundtrips: list[float] = []
    with KernelBench(controller="qemu-xhci", iommu=True) as bench:
        bench.prepare()  # first-use build is not part of the boot time
        for index in range(boots):
            with bench.session() as session:
                boot_seconds.append(session.boot_seconds)
                uptimes.append(session.guest_uptime_at_ready)
                roundtrips.append(session.run("true", 60).command_seconds)
                if index == 0:
                    guest_python = _guest_seconds(session, PYTHON_STARTUP, repeat)
                    guest_pytest = _guest_seconds(session, PYTEST_STARTUP, repeat)
    host_python = _host_seconds(PYTHON_STARTUP, repeat)
    host_pytest = _host_seconds(PYTEST_STARTUP, repeat)
    return {
        "boots": boots,
        "boot_to_ready_seconds_median": round(statistics.median(boot_seconds), 2),
        "boot_to_ready_seconds_max": round(max(boot_seconds), 2),
        "guest_uptime_at_ready_seconds_median": round(statistics.median(uptimes), 2),
        "command_roundtrip_seconds_median": round(statistics.median(roundtrips), 3),
        "guest_python_startup_seconds": round(guest_python, 3),
        "host_python_startup_seconds": round(host_python, 3),
        "python_startup_slowdown": round(guest_python / host_python, 1),
        "guest_pytest_startup_seconds": round(guest_pytest, 3),
        "host_pytest_startup_seconds": round(host_pytest, 3),
        "pytest_startup_slowdown": round(guest_pytest / host_pytest, 1),
    }
