"""The native driver through the user-facing doors: ``dbc-harness run --driver`` and the pytest
plugin's ``--native-driver`` (the ``dbc_driver`` fixture becomes the C driver)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from dbc_harness.drivers.native.build import build_reference, site_line

pytest_plugins = ("pytester",)
pytestmark = pytest.mark.timeout(180)

RUN = [sys.executable, "-m", "dbc_harness.harness.app.entry", "run"]
SMALL = ["--echo-sizes", "1,1024,65537", "--throughput-mib", "1", "--json"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN, *args, *SMALL], capture_output=True, text=True, timeout=150)


def test_run_with_the_reference_driver_passes_with_no_findings() -> None:
    done = run_cli("--driver", "reference")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["bench"]["driver"].startswith("native dbc")
    assert [e["ok"] for e in summary["echo"]] == [True, True, True]
    assert summary["findings"] == []
    assert summary["final_state"] == "DISABLED"


def test_run_names_the_c_line_of_a_register_finding() -> None:
    """64-bit registers written high dword first: found in the driver's own MMIO access, so
    even the free-running bench names the line (findings the model's thread makes on its own,
    e.g. while enumerating, carry none there: the deterministic bench of the tests has them)."""
    obj = build_reference(mutations=["MMIO64_HIGH_FIRST"])
    done = run_cli("--driver", str(obj), "--lenient", "--mmio32")
    assert done.returncode != 0  # findings fail the summary
    findings = json.loads(done.stdout)["findings"]
    line = site_line("erstba")
    assert any("MMIO-64-ORDER" in f and f"[driver code: dbc.c:{line} " in f for f in findings)


def test_plugin_native_driver_option_runs_dbc_driver_tests_on_the_c_driver(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        def test_echo(dbc_driver, debug_host):
            assert type(dbc_driver).__name__ == "NativeDbcDriver"
            debug_host.write(0x01, b"ping", timeout=5000)
            got = b""
            while len(got) < 4:
                got += dbc_driver.read(64, timeout=5.0)
            assert got == b"ping"
            dbc_driver.write(b"pong", timeout=5.0)
            assert bytes(debug_host.read(0x81, 64, timeout=5000)) == b"pong"

        def test_native_driver_fixture(native_driver):
            assert native_driver.state.name == "CONFIGURED"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--native-driver", "reference")
    result.assert_outcomes(passed=2)
