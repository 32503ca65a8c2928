"""The native driver through the user-facing doors: ``dbc-harness run --driver`` and the pytest
plugin's ``--native-driver`` (the ``dbc_driver`` fixture becomes the C driver)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dbc_harness.drivers.native.build import build_reference, site_line

pytest_plugins = ("pytester",)
pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
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


#: tests of the suite that take the plugin's ``dbc_driver``, run as they are (echo, recovery from
#: the host leaving, halts on a quirky part, the marker's driver options, a dbc_every_part test
#: on one part: the C driver on every part is tests/test_native_pci.py's)
DBC_DRIVER_TESTS = (
    "tests/test_plugin_virtual.py::test_echo_with_the_fixtures",
    "tests/test_plugin_virtual.py::test_host_leaves_and_returns_through_the_fixtures",
    "tests/test_plugin_virtual.py::test_halts_on_an_amd_like_part_through_the_fixtures",
    "tests/test_plugin_virtual.py::test_driver_options_of_the_marker_reach_the_driver",
    "tests/test_parts.py::test_marker_runs_once_per_part[amd-renoir]",
)

#: a plugin naming the driver each test got as ``dbc_driver`` (in the file $DBC_WITNESS)
WITNESS = """
import os


def pytest_runtest_call(item):
    drv = item.funcargs.get("dbc_driver")
    if drv is not None:
        with open(os.environ["DBC_WITNESS"], "a") as f:
            f.write(f"{item.nodeid} {type(drv).__name__}\\n")
"""


def test_plugin_native_driver_option_runs_dbc_driver_tests_on_the_c_driver(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pytest --native-driver reference`` on real tests of this suite (not copies): each one
    passes, and each one's ``dbc_driver`` was the C driver (a witness plugin records it); the
    ``native_driver`` fixture is the started C driver too."""
    pytester.makepyfile(dbc_witness=WITNESS)
    own = pytester.makepyfile(
        test_fixture="""
        def test_native_driver_fixture(native_driver):
            assert type(native_driver).__name__ == "NativeDbcDriver"
            assert native_driver.state.name == "CONFIGURED"
        """
    )
    witness = pytester.path / "drivers.txt"
    monkeypatch.setenv("DBC_WITNESS", str(witness))
    pytester.syspathinsert()
    result = pytester.runpytest(
        *(str(ROOT / t) for t in DBC_DRIVER_TESTS),
        str(own),
        "--rootdir",
        str(ROOT),
        "-c",
        str(ROOT / "pyproject.toml"),  # the suite's own configuration
        "-p",
        "dbc_witness",
        "-p",
        "no:cacheprovider",
        "--native-driver",
        "reference",
    )
    result.assert_outcomes(passed=len(DBC_DRIVER_TESTS) + 1)
    ran = dict(line.rsplit(" ", 1) for line in witness.read_text().splitlines())
    assert set(ran) == set(DBC_DRIVER_TESTS)
    assert set(ran.values()) == {"NativeDbcDriver"}, ran
