"""The plugin's fixtures on the virtual bench, and failure captures through pytester.

``test_echo_with_the_fixtures`` is also the example of how to write a test with them.
"""

from __future__ import annotations

from typing import Any

import pytest
from dbc_harness.fixtures.trace_pcapng import read_packets

pytest_plugins = ("pytester",)

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
    result = pytester.runpytest("-p", "no:randomly")
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
    result = pytester.runpytest("--trace-dir", str(trace_dir))
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
    pytester.runpytest().assert_outcomes(passed=1)


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
        "--dbc-quirk", "endpoint_ids=0/1", "--dbc-quirk", "spurious_stall_on_clear_halt"
    )
    result.assert_outcomes(passed=1)
    result = pytester.runpytest("--dbc-quirk", "warp_drive")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no quirk named 'warp_drive'*"])
