"""``dbc-harness bench faults`` stays runnable and reports the issue's keys; in quick mode every
fault kind of the virtual bench runs with exact accounting both ways and must come out clean."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner
from dbc_harness.drivers.dbc import datapath
from dbc_harness.fixtures.virtual.faults import FAULT_KINDS
from dbc_harness.harness.app.cli import cli
from dbc_harness.harness.benchmarks import faults


def test_bench_faults_quick_is_clean_for_every_fault_kind() -> None:
    result = CliRunner().invoke(cli, ["bench", "faults", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{") :])
    assert out["fault_kinds"] == len(FAULT_KINDS) and set(out["per_kind"]) == set(FAULT_KINDS)
    assert out["messages"] > 500 and out["bytes"] > 1_000_000
    for key in ("lost_bytes", "duplicated_bytes", "misreported_bytes", "hangs", "tracebacks",
                "findings", "reported_twice"):  # fmt: skip
        assert out[key] == 0, (key, out["problems"])
    # the host went away while reading a TRB at least once: such reports give a range
    assert out["inexact_reports"] > 0


def test_accounting_catches_an_under_count_presented_as_exact(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The benchmark is not blind: a driver that reports ``delivered`` as exact when the host
    may have read more makes a retransmitting caller duplicate bytes, and the ledger says so."""
    caplog.set_level(logging.ERROR)
    report = datapath.OutMessage.report
    monkeypatch.setattr(
        datapath.OutMessage, "report", lambda self, reason, delivered_max=-1: report(self, reason)
    )
    out = faults.run(quick=True, kinds=["port_reset_warm", "hcrst", "surprise_removal"])
    assert out["duplicated_bytes"] + out["misreported_bytes"] > 0
