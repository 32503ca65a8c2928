"""``dbc-harness bench usbip`` runs and reports what its docstring promises."""

from __future__ import annotations

import json
import subprocess
import sys

from dbc_harness.harness.benchmarks import usbip as bench


def test_quick_run_reports_both_directions() -> None:
    result = bench.run(quick=True)
    assert result["bytes"] == 1 << 20
    for key in (
        "direct_host_to_target_MBps",
        "direct_target_to_host_MBps",
        "host_to_target_MBps",
        "target_to_host_MBps",
        "ratio_host_to_target",
        "ratio_target_to_host",
        "urbs_per_s_1k",
    ):
        assert isinstance(result[key], float) and result[key] > 0, key


def test_registered_with_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dbc_harness.harness.app.cli",
         "bench", "usbip", "--quick", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert json.loads(out)["bytes"] == 1 << 20
