"""Free-running mode, thread safety, strict/lenient policy, host buffering and tracing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from dbc_harness.drivers.xhci.trb import LINK, CompletionCode, TRBType
from dbc_harness.fixtures.virtual import (
    ConfigError,
    DbcPortState,
    DebugHostTimeout,
    ModelClosed,
    SpecViolation,
    VirtualXhci,
)

from tests.virtual_helpers import MinimalDbcProducer


def test_clock_sleep_advances_virtual_time() -> None:
    with VirtualXhci() as x:
        t0 = x.clock.monotonic()
        x.clock.sleep(0.25)
        assert x.clock.monotonic() - t0 == pytest.approx(0.25)
        assert x.now_us == pytest.approx(250_000)


def test_free_running_bring_up_and_echo_with_real_time() -> None:
    with VirtualXhci() as x, x.run_free():
        b = MinimalDbcProducer(x)
        b.program()
        b.enable()
        deadline = x.clock.monotonic() + 5.0
        while not b.dcctrl()["DCR"]:
            assert x.clock.monotonic() < deadline, "no DCR within 5 s of real time"
            x.clock.sleep(0.005)
        b.ack()
        b.queue_out(b"free")
        b.ring_doorbell(0)
        assert x.host.recv(64, timeout=2.0) == b"free"
        b.post_in(1024)
        b.ring_doorbell(1)
        assert x.host.send(b"running", timeout=2.0) == 7
        assert b.in_data(7) == b"running"
    assert x.state is DbcPortState.CONFIGURED


def test_finding_in_model_thread_surfaces_at_next_call() -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x)
        b.bring_up()
        b.events()
        with x.run_free():
            b.out.put(LINK.build(trb_type=TRBType.SetupStage, C=0))  # not for a DbC ring
            b.ring_doorbell(0)  # the model thread finds the bad TRB type ...
            with pytest.raises(SpecViolation) as info:
                deadline = x.clock.monotonic() + 5.0
                while x.clock.monotonic() < deadline:  # ... the next call raises it
                    b.read("DCST")
                    x.clock.sleep(0.001)
            assert info.value.finding.rule == "DBC-TRB-TYPE"
        assert [f.rule for f in x.findings] == ["DBC-TRB-TYPE"]


def test_mmio_from_two_threads_while_data_moves() -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x)
        b.bring_up()
        b.events()
        errors: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    assert x.mmio.read32(x.dbc_offset) & 0xFF == 0x0A
                    assert b.portsc()["CCS"] == 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        with x.run_free():
            t = threading.Thread(target=reader)
            t.start()
            try:
                for i in range(200):
                    b.queue_out(bytes([i % 256]) * 100, offset=(i % 16) * 128)
                    b.ring_doorbell(0)
                    assert x.host.recv(4096, timeout=2.0) == bytes([i % 256]) * 100
                    b.events()
            finally:
                stop.set()
                t.join(timeout=5)
        assert errors == []
        assert x.findings == []


def test_lenient_mode_records_and_continues() -> None:
    with VirtualXhci(strict=False) as x:
        b = MinimalDbcProducer(x)
        x.mmio.read32(b.base + 0x0C)
        x.mmio.write32(b.base + 0x2C, 1)
        b.bring_up()
        assert [f.rule for f in x.findings] == ["MMIO-RESERVED", "MMIO-RESERVED"]
        assert x.state is DbcPortState.CONFIGURED


def test_closed_model_refuses_calls() -> None:
    x = VirtualXhci()
    x.close()
    x.close()  # idempotent
    with pytest.raises(ModelClosed):
        x.mmio.read32(0)


def test_bad_configuration_is_a_named_error() -> None:
    with pytest.raises(ConfigError):
        VirtualXhci(dbc_offset=0x3100)
    with pytest.raises(ConfigError):
        VirtualXhci(debug_port=2)
    with VirtualXhci() as x, pytest.raises(ConfigError):
        x.advance(-1)


def test_host_buffer_completes_tds_before_the_application_reads() -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x)
        b.bring_up()
        b.events()
        b.queue_out(b"buffered")
        b.ring_doorbell(0)
        x.advance(10)
        ev = b.transfer_events()
        assert [e.fields["completion_code"] for e in ev] == [CompletionCode.Success]
        assert x.host.recv(64, timeout=0.01) == b"buffered"


def test_without_host_buffer_a_td_completes_when_read() -> None:
    with VirtualXhci(host_buffer=0) as x:
        b = MinimalDbcProducer(x)
        b.bring_up()
        b.events()
        b.queue_out(b"on the wire")
        b.ring_doorbell(0)
        x.advance(10_000)
        assert b.transfer_events() == []
        assert x.host.recv(64, timeout=0.01) == b"on the wire"
        assert len(b.transfer_events()) == 1


def test_send_times_out_without_posted_buffers() -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x)
        b.bring_up()
        with pytest.raises(DebugHostTimeout) as info:
            x.host.send(b"nobody listens", timeout=0.05)
        assert info.value.transferred == 0


def test_trace_records_urb_pairs_with_the_trb_behind() -> None:
    records: list[tuple[str, dict[str, Any]]] = []

    def sink(kind: str, /, **fields: Any) -> None:
        records.append((kind, fields))

    with VirtualXhci(trace=sink) as x:
        b = MinimalDbcProducer(x)
        b.bring_up()
        b.events()
        b.queue_out(b"traced")
        b.ring_doorbell(0)
        assert x.host.recv(64, timeout=0.01) == b"traced"
        b.post_in(1024)
        b.ring_doorbell(1)
        x.host.send(b"back", timeout=0.01)
    urbs = [f for k, f in records if k == "urb"]
    control = [u for u in urbs if u["endpoint"] & 0x7F == 0]
    assert [u["comment"] for u in control if u["stage"] == "C"][:3] == [
        "GET_DESCRIPTOR device",
        "SET_ADDRESS",
        "GET_DESCRIPTOR configuration",
    ]
    strings = [u for u in control if u["stage"] == "C" and "string 2" in u["comment"]]
    assert strings[0]["data"][2:].decode("utf-16-le") == "Linux USB Debug Target"
    assert all(len(u["setup"]) == 8 for u in control)
    ins = [u for u in urbs if u["direction"] == "in" and u["endpoint"] == 0x81]
    outs = [u for u in urbs if u["direction"] == "out" and u["endpoint"] == 0x01]
    assert [u["stage"] for u in ins] == ["S", "C"] and ins[0]["urb_id"] == ins[1]["urb_id"]
    assert ins[1]["data"] == b"traced" and ins[1]["endpoint"] == 0x81
    assert "Normal" in ins[1]["comment"]
    assert [u["stage"] for u in outs] == ["S", "C"] and outs[0]["data"] == b"back"
    assert outs[1]["status"] == 0 and outs[0]["endpoint"] == 0x01
    kinds = {k for k, _ in records}
    assert {"mmio", "event", "state"} <= kinds
    events = [f for k, f in records if k == "event"]
    assert any("TransferEvent" in e["text"] for e in events)
    assert any(TRBType.PortStatusChangeEvent.name in e["text"] for e in events)
