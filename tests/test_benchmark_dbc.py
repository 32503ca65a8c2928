"""``dbc-harness bench dbc`` stays runnable and reports the issue's keys with its baselines
(the figures themselves are for the benchmark, not for a test)."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner
from dbc_harness.harness.app.cli import cli


def test_bench_dbc_quick_reports_keys_baselines_and_no_findings() -> None:
    result = CliRunner().invoke(cli, ["bench", "dbc", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    for key in ("out_MBps", "in_MBps", "small_msgs_per_s", "minimal_producer_out_MBps",
                "minimal_producer_in_MBps"):  # fmt: skip
        assert out[key] > 0, key
    assert out["superspeed_ceiling_MBps"] == 450
    assert out["peer"] == "pyusb"
    assert out["findings"] == 0 and out["device_errors"] == 0
    for key in ("out_ratio_vs_minimal_producer", "in_ratio_vs_minimal_producer",
                "small_ratio_pyusb_vs_host_api_peer"):  # fmt: skip
        assert 0 < out[key] < 10, key
    # every 64-byte message was its own TD: one OUT doorbell per write at least
    assert out["doorbells"] >= out["small_messages"]


def test_bench_dbc_runs_on_one_cpu_and_gives_the_others_back() -> None:
    """The benchmark pins itself (and the threads it starts) to one CPU and restores the
    process's CPU set afterwards."""
    before = os.sched_getaffinity(0)
    result = CliRunner().invoke(cli, ["bench", "dbc", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["pinned_cpu"] == min(before)
    assert os.sched_getaffinity(0) == before
