"""``dbc-harness bench usbip-kernel`` boots the kernel bench and reports the tty's rate each way
(the real Linux debug host over USB/IP; correctness of that path: test_kernel_bench_usbip.py)."""

from __future__ import annotations

import pytest
from dbc_harness.fixtures.kernel_bench import KernelBenchUnavailable
from dbc_harness.fixtures.kernel_bench.runner import check_available
from dbc_harness.harness.benchmarks import BENCHMARKS
from dbc_harness.harness.benchmarks import usbip_kernel as bench

pytestmark = pytest.mark.kernel_bench


def test_quick_run_reports_the_tty_rate_each_way() -> None:
    try:
        check_available()
    except KernelBenchUnavailable as exc:
        pytest.skip(f"kernel bench unavailable: {exc}")
    result = bench.run(quick=True)
    assert result["tty_bytes"] == 1 << 20
    for key in ("tty_host_to_target_MBps", "tty_target_to_host_MBps", "guest_seconds"):
        assert isinstance(result[key], float) and result[key] > 0, key


def test_registered() -> None:
    assert BENCHMARKS["usbip-kernel"] == bench.__name__
