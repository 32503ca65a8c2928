"""``dbc-harness run --bench qemu`` from the host: boots the kernel bench, claims QEMU's xHCI
through VFIO inside the guest, and ends with the clear, expected "no Debug Capability" result
(QEMU emulates none) and its own exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dbc_harness.harness.app.cli_errors import ExitCode

pytestmark = pytest.mark.kernel_bench

CLI = [sys.executable, "-m", "dbc_harness.harness.app.cli"]


def test_run_on_the_qemu_bench_reports_no_dbc_with_its_exit_code(tmp_path: Path) -> None:
    from dbc_harness.fixtures.kernel_bench import KernelBenchUnavailable
    from dbc_harness.fixtures.kernel_bench.runner import check_available

    try:
        check_available()
    except KernelBenchUnavailable as exc:
        pytest.skip(f"kernel bench unavailable: {exc}")
    proc = subprocess.run(
        [*CLI, "run", "--bench", "qemu", "--trace", str(tmp_path / "guest.jsonl")],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == ExitCode.NO_DBC, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no Debug Capability" in errors[0]
    assert any(line.startswith("hint: ") for line in proc.stderr.splitlines())
    assert "Traceback" not in proc.stderr
    # inside the guest the controller was claimed and given back
    assert "opening the qemu bench" in proc.stdout
    assert "giving everything back" in proc.stdout
    # the guest's BAR0 accesses came back as the trace: CAPLENGTH/HCIVERSION read first,
    # QEMU's values (CAPLENGTH 0x40, HCIVERSION 0x0100)
    records = [json.loads(line) for line in (tmp_path / "guest.jsonl").read_text().splitlines()]
    reads = [r for r in records if r["kind"] == "mmio" and r["op"] == "r"]
    assert reads and reads[0]["offset"] == 0 and reads[0]["value"] == 0x0100_0040
