"""``dbc-harness run --bench qemu`` from the host: boots the kernel bench, claims QEMU's xHCI
through VFIO inside the guest, and ends with the clear, expected "no Debug Capability" result
(QEMU emulates none) and its own exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.cli_errors import ExitCode

pytestmark = pytest.mark.kernel_bench


def test_run_on_the_qemu_bench_reports_no_dbc_with_its_exit_code() -> None:
    from fixtures.kernel_bench import KernelBenchUnavailable
    from fixtures.kernel_bench.runner import check_available

    try:
        check_available()
    except KernelBenchUnavailable as exc:
        pytest.skip(f"kernel bench unavailable: {exc}")
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--bench", "qemu"],
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
