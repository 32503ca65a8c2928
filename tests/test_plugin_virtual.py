"""The plugin's fixtures on the virtual bench, and failure captures through pytester.

``test_echo_with_the_fixtures`` is also the example of how to write a test with them. The tests
taking ``dbc_driver`` here run the Python driver by default and the C driver under
``--native-driver`` (tests/test_native_reference_cli.py runs them so).
"""

from __future__ import annotations

from typing import Any

import pytest
from dbc_harness.fixtures.trace_pcapng import read_packets
from dbc_harness.fixtures.virtual import Quirks

from tests.driver_kinds import lose_host_and_return, roundtrip, settle

pytest_plugins = ("pytester",)

#: for the in-process sessions: labgrid's plugin (the [lab] extra) is not what they test (its
#: presence without --lg-env is tests/test_plugin.py's), and pytester drops the modules a run
#: imported, so each session would import labgrid again (~0.6 s)
NO_LABGRID = ("-p", "no:labgrid")

#: the debug host's endpoints, as the host names them
HOST_TO_TARGET = 0x01  # bulk OUT: lands in buffers on the DbC's IN ring
TARGET_TO_HOST = 0x81  # bulk IN: drains the DbC's OUT ring


def test_echo_with_the_fixtures(dbc_driver: Any, debug_host: Any) -> None:
    debug_host.write(HOST_TO_TARGET, b"ping from the debug host", timeout=5000)
    got = b""
    while len(got) < 24:
        got += dbc_driver.read(64, timeout=5.0)
    assert got == b"ping from the debug host"
    dbc_driver.write(b"pong from the target", timeout=5.0)
    assert bytes(debug_host.read(TARGET_TO_HOST, 1024, timeout=5000)) == b"pong from the target"
    assert dbc_driver.state.name == "CONFIGURED"


@pytest.mark.dbc_bench(free_running=False)
def test_host_leaves_and_returns_through_the_fixtures(dbc_bench: Any, dbc_driver: Any) -> None:
    """The debug host unplugs, resets the port and deconfigures the device; after each the
    driver is Configured again and data flows both ways (deterministic bench, strict)."""
    x = dbc_bench.controller
    roundtrip(x, dbc_driver, b"before")
    for action in ("unplug", "warm", "deconfigure"):
        lose_host_and_return(x, dbc_driver, action)
        roundtrip(x, dbc_driver, b"after " + action.encode())
    assert dbc_driver.counters.recoveries["disconnect"] >= 1
    assert dbc_bench.findings() == []


@pytest.mark.dbc_bench(free_running=False, quirks=Quirks(endpoint_ids=(0, 1)))
def test_halts_on_an_amd_like_part_through_the_fixtures(dbc_bench: Any, dbc_driver: Any) -> None:
    """The marker's quirks reach the bench: Transfer Events name the endpoints 0/1; the host
    halts and clears both pipes and the data still flows."""
    x = dbc_bench.controller
    assert x.quirks.endpoint_ids == (0, 1)
    for direction in ("in", "out"):
        x.host.halt(direction)
        dbc_driver.poll()
        x.host.clear_halt(direction)
        settle(dbc_driver, x=x)
        roundtrip(x, dbc_driver, b"after halt " + direction.encode())
    assert dbc_driver.counters.device_errors == 0
    assert dbc_bench.findings() == []


@pytest.mark.dbc_bench(
    free_running=False,
    quirks=Quirks(enumerate_after_root_port_reset=True),
    driver={"port_reset": True},
)
def test_driver_options_of_the_marker_reach_the_driver(dbc_bench: Any, dbc_driver: Any) -> None:
    """``driver={"port_reset": True}``: the root ports are reset right after DCE (not learned,
    so not counted as a recovery) and the part enumerates."""
    x = dbc_bench.controller
    assert x.dbc.root_port_reset_seen
    assert dbc_driver.counters.recoveries["root_port_reset"] == 0
    roundtrip(x, dbc_driver, b"port reset asked")


def test_dbc_bench_gives_everything_back(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        BENCHES = []

        def test_use(dbc_bench, dbc_driver):
            BENCHES.append(dbc_bench)
            assert dbc_bench.name == "virtual"

        def test_after():
            assert BENCHES and BENCHES[0].closed
        """
    )
    result = pytester.runpytest(*NO_LABGRID, "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_failing_test_leaves_its_capture_and_passing_test_none(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_passes(dbc_driver, debug_host):
            debug_host.write(0x01, b"fine", timeout=5000)

        def test_fails(dbc_driver, debug_host):
            debug_host.write(0x01, b"evidence", timeout=5000)
            got = b""
            while len(got) < 8:
                got += dbc_driver.read(64, timeout=5.0)
            assert got == b"something else"
        """
    )
    trace_dir = pytester.path / "traces"
    result = pytester.runpytest(*NO_LABGRID, "--trace-dir", str(trace_dir))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*dbc-harness captures of failing tests*", "*test_fails.pcapng"])
    files = sorted(p.name for p in trace_dir.iterdir())
    assert files == [
        "test_failing_test_leaves_its_capture_and_passing_test_none.py_test_fails.jsonl",
        "test_failing_test_leaves_its_capture_and_passing_test_none.py_test_fails.pcapng",
    ]
    packets = read_packets((trace_dir / files[1]).read_bytes())
    assert any(p.data == b"evidence" and p.epnum == 0x01 for p in packets)
    assert all(p.comment for p in packets if p.data)


def test_dbc_bench_marker_passes_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.dbc_bench(free_running=False)
        def test_deterministic(dbc_bench):
            assert dbc_bench.free_running is False
        """
    )
    pytester.runpytest(*NO_LABGRID).assert_outcomes(passed=1)


def test_dbc_quirk_option_reaches_the_virtual_part(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_amd_like(dbc_bench, dbc_driver, debug_host):
            assert dbc_bench.controller.quirks.endpoint_ids == (0, 1)
            assert dbc_bench.controller.quirks.spurious_stall_on_clear_halt
            debug_host.write(0x01, b"amd", timeout=5000)
            assert dbc_driver.read(16, timeout=5.0) == b"amd"
        """
    )
    result = pytester.runpytest(
        *NO_LABGRID,
        "--dbc-quirk",
        "endpoint_ids=0/1",
        "--dbc-quirk",
        "spurious_stall_on_clear_halt",
    )
    result.assert_outcomes(passed=1)
    result = pytester.runpytest(*NO_LABGRID, "--dbc-quirk", "warp_drive")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no quirk named 'warp_drive'*"])
