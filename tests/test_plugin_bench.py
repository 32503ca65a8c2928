"""The bench abstraction (fixtures/bench.py): specs, the virtual bench, debug-host pipes."""

from __future__ import annotations

import pytest
from dbc_harness.fixtures.bench import (
    BenchUnavailable,
    PyusbPipe,
    UnknownBench,
    VirtualBench,
    VirtualHostPipe,
    open_bench,
    parse_bench_spec,
)
from dbc_harness.fixtures.trace import MemoryTrace
from dbc_harness.harness.binding.errors import DeviceNotFound


def test_bench_specs() -> None:
    assert parse_bench_spec("virtual") == ("virtual", None)
    assert parse_bench_spec(" qemu ") == ("qemu", None)
    assert parse_bench_spec("hw:0000:00:14.0") == ("hw", "0000:00:14.0")
    for bad in ("", "hw", "hw:", "usb", "virtual2"):
        with pytest.raises(UnknownBench):
            parse_bench_spec(bad)


def test_unavailable_benches_are_named_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBC_HARNESS_GUEST", raising=False)
    with pytest.raises(BenchUnavailable, match="inside the kernel-bench guest"):
        open_bench("qemu")
    with pytest.raises(DeviceNotFound):
        open_bench("hw:0000:7f:1f.7")


@pytest.mark.parametrize("free_running", [True, False])
def test_virtual_bench_echo_through_pyusb_and_host_api(free_running: bool) -> None:
    trace = MemoryTrace()
    with VirtualBench(free_running=free_running, trace=trace) as bench:
        driver = bench.make_driver()
        driver.start(timeout=5.0)
        assert driver.state.name == "CONFIGURED"
        pipes = [bench.host_pipe(timeout=5.0), VirtualHostPipe(bench.controller.host)]
        assert isinstance(pipes[0], PyusbPipe)
        for i, pipe in enumerate(pipes):
            message = bytes([i]) * 1500
            assert pipe.send(message, timeout=5.0) == len(message)
            got = b""
            while len(got) < len(message):
                got += driver.read(4096, timeout=5.0)
            assert got == message
            driver.write(b"back %d" % i, timeout=5.0)
            assert pipe.recv(1024, timeout=5.0) == b"back %d" % i
            assert pipe.recv(1024, timeout=0.05) == b""  # nothing more: empty, no exception
    assert bench.closed and driver.state.name == "DISABLED"
    assert bench.findings() == []
    urbs = trace.of_kind("urb")
    assert [u["stage"] for u in urbs if u["direction"] == "out"][:2] == ["S", "C"]
    assert any(u.get("data") == b"back 0" for u in urbs)


def test_pyusb_pipe_records_urb_pairs_for_real_debug_hosts() -> None:
    with VirtualBench() as bench:
        driver = bench.make_driver()
        driver.start(timeout=5.0)
        trace = MemoryTrace()
        pipe = PyusbPipe(bench.debug_device(timeout=5.0), trace=trace)
        pipe.send(b"abc", timeout=5.0)
        assert driver.read(16, timeout=5.0) == b"abc"
        assert pipe.recv(1024, timeout=0.05) == b""
        driver.write(b"xyz", timeout=5.0)
        assert pipe.recv(1024, timeout=5.0) == b"xyz"
    urbs = trace.of_kind("urb")
    summary = [(u["stage"], u["direction"], u.get("status", 0)) for u in urbs]
    assert summary == [
        ("S", "out", 0),
        ("C", "out", 0),
        ("S", "in", 0),
        ("C", "in", -110),
        ("S", "in", 0),
        ("C", "in", 0),
    ]
    assert urbs[0]["data"] == b"abc" and urbs[-1]["data"] == b"xyz"
    assert urbs[0]["urb_id"] == urbs[1]["urb_id"] != urbs[2]["urb_id"]


def test_close_stops_a_running_driver_and_is_idempotent() -> None:
    bench = VirtualBench()
    driver = bench.make_driver()
    driver.start(timeout=5.0)
    bench.close()
    bench.close()
    assert driver.state.name == "DISABLED"
