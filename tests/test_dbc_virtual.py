"""The DbC driver on the virtual bench (strict mode: any spec finding raises and fails the test).

Deterministic mode: the driver's waits advance the model's virtual time (``clock=x.clock``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dbc_harness.drivers.dbc import (
    DbcDriver,
    DbcIdentity,
    DbcNotFound,
    DbcState,
    DbcTimeout,
)
from dbc_harness.fixtures.virtual import VirtualXhci


@pytest.fixture
def x() -> Iterator[VirtualXhci]:
    ctl = VirtualXhci(strict=True)
    yield ctl
    findings = list(ctl.findings)
    ctl.close()
    assert findings == []


def started(x: VirtualXhci, **options: Any) -> DbcDriver:
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, **options)
    drv.start(timeout=5.0)
    return drv


def host_recv_exactly(x: VirtualXhci, drv: DbcDriver, n: int, timeout: float = 5.0) -> bytes:
    """What the debug host reads (USB IN) until ``n`` bytes arrived, letting the driver run."""
    from dbc_harness.fixtures.virtual import DebugHostTimeout

    parts: list[bytes] = []
    got = 0
    end = x.clock.monotonic() + timeout
    while got < n or (n == 0 and not parts):
        drv.poll()
        try:
            chunk = x.host.recv(max(1, n - got), timeout=0.001)
        except DebugHostTimeout:
            if x.clock.monotonic() > end:
                raise
            continue
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def test_bring_up_states_identity_and_clean_stop(x: VirtualXhci) -> None:
    seen: list[DbcState] = []
    ident = DbcIdentity(manufacturer="LF OS", product="kernel debug", serial="42", protocol=1)
    drv = DbcDriver(
        x.mmio, x.dma, clock=x.clock, identity=ident, on_state=lambda old, new: seen.append(new)
    )
    assert drv.find_dbc() == 0x8700
    drv.start(timeout=5.0)
    assert seen == [
        DbcState.INITIALIZED,
        DbcState.ENABLED,
        DbcState.CONNECTED,
        DbcState.CONFIGURED,
    ]
    dev = x.host.device
    assert dev is not None
    assert (dev.id_vendor, dev.id_product, dev.protocol) == (0x1D6B, 0x0010, 1)
    assert (dev.manufacturer, dev.product, dev.serial) == ("LF OS", "kernel debug", "42")
    assert dev.langids == (0x0409,)
    assert drv.stop() == ()
    assert drv.state is DbcState.DISABLED
    assert x.dma.stats()["live_bytes"] == 0
    assert x.mmio.read32(0x8700 + 0x20) >> 31 == 0  # DCCTRL.DCE cleared


def test_small_write_and_read(x: VirtualXhci) -> None:
    drv = started(x)
    drv.write(b"hello")
    assert x.host.recv(100, timeout=1.0) == b"hello"
    x.host.send(b"world", timeout=1.0)
    assert drv.read(100, timeout=1.0) == b"world"
    drv.flush(timeout=1.0)
    c = drv.counters
    assert (c.bytes_to_host, c.bytes_from_host, c.messages_to_host) == (5, 5, 1)
    drv.stop()


def test_separate_writes_stay_separate_transfers(x: VirtualXhci) -> None:
    """Message boundaries: two writes are two TDs; the host sees two transfers."""
    drv = started(x)
    drv.write(b"a" * 100)
    drv.write(b"b" * 100)
    drv.flush(timeout=1.0)
    assert x.host.recv(4096, timeout=1.0) == b"a" * 100
    assert x.host.recv(4096, timeout=1.0) == b"b" * 100
    drv.stop()


def test_read_times_out_with_named_error(x: VirtualXhci) -> None:
    drv = started(x)
    with pytest.raises(DbcTimeout, match="data from the debug host"):
        drv.read(10, timeout=0.01)
    drv.stop()


def test_wrong_offset_is_dbc_not_found(x: VirtualXhci) -> None:
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, dbc_offset=0x8000)
    with pytest.raises(DbcNotFound):
        drv.start(timeout=1.0)
    assert drv.state is DbcState.DISABLED and x.dma.stats()["live_bytes"] == 0


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 65535, 65536, 65537, 1 << 20])
def test_echo_host_api(x: VirtualXhci, size: int) -> None:
    drv = started(x)
    payload = bytes((i * 7 + size) & 0xFF for i in range(size))
    xfer = x.host.submit(payload)
    got = bytearray()
    if size == 0:
        got += drv.read_message(timeout=5.0)  # the host's zero-length packet
    while len(got) < size:
        got += drv.read(size - len(got), timeout=5.0)
    assert x.host.wait(xfer, timeout=1.0) == size
    assert bytes(got) == payload
    drv.write(got)
    assert host_recv_exactly(x, drv, size) == payload
    drv.flush(timeout=1.0)
    drv.stop()


ECHO_SIZES = [0, 1, 1023, 1024, 1025, 65535, 65536, 65537, 1 << 20, 16 << 20]


@pytest.mark.parametrize("size", ECHO_SIZES)
def test_echo_through_pyusb(size: int) -> None:
    """The debug host (unmodified pyusb code on the virtual backend, its own thread) sends
    ``size`` bytes; the target reads them and writes them back as one message; the host reads
    them back. Free-running model, strict mode."""
    import threading

    import usb.core
    from dbc_harness.fixtures.virtual.pyusb_backend import get_backend

    payload = bytes((i * 31 + size) & 0xFF for i in range(min(size, 1 << 16)))
    payload = (payload * (size // max(len(payload), 1) + 1))[:size]
    x = VirtualXhci(strict=True)
    try:
        with x.run_free():
            drv = DbcDriver(x.mmio, x.dma, clock=x.clock)
            drv.start(timeout=10.0)
            dev = usb.core.find(idVendor=0x1D6B, idProduct=0x0010, backend=get_backend(x))
            assert dev is not None
            dev.set_configuration()
            echoed = bytearray()
            errors: list[BaseException] = []

            def host() -> None:
                try:
                    assert dev.write(0x01, payload, timeout=20_000) == size
                    if size == 0:
                        echoed.extend(dev.read(0x81, 1024, timeout=20_000))
                    while len(echoed) < size:
                        echoed.extend(dev.read(0x81, size - len(echoed), timeout=20_000))
                except BaseException as exc:
                    errors.append(exc)

            t = threading.Thread(target=host, daemon=True)
            t.start()
            got = bytearray()
            if size == 0:
                got += drv.read_message(timeout=20.0)
            while len(got) < size:
                got += drv.read(size - len(got), timeout=20.0)
            assert bytes(got) == payload
            drv.write(got, timeout=20.0)
            drv.flush(timeout=20.0)
            t.join(timeout=30.0)
            assert not errors, errors
            assert bytes(echoed) == payload
            assert drv.stop() == ()
            assert x.dma.stats()["live_bytes"] == 0
        assert x.findings == []
    finally:
        x.close()


def test_iter_read_streams_until_idle(x: VirtualXhci) -> None:
    drv = started(x)
    for chunk in (b"one", b"two", b"three"):
        x.host.send(chunk, timeout=1.0)
    assert b"".join(drv.iter_read(2, idle_timeout=0.01)) == b"onetwothree"
    drv.stop()


def test_raise_device_errors_option(x: VirtualXhci) -> None:
    """With raise_device_errors=True a bad controller value surfaces from poll() as a named
    error, after the drain finished (the data itself still arrives)."""
    from dbc_harness.drivers.dbc import DbcDeviceError
    from dbc_harness.fixtures.virtual import Quirks

    y = VirtualXhci(strict=True, quirks=Quirks(transfer_event_pointer="zero"))
    try:
        drv = DbcDriver(y.mmio, y.dma, clock=y.clock, raise_device_errors=True)
        drv.start(timeout=5.0)
        drv.write(b"data")
        assert y.host.recv(10, timeout=1.0) == b"data"
        with pytest.raises(DbcDeviceError, match="not the oldest"):
            drv.flush(timeout=1.0)
        drv.flush(timeout=1.0)  # reported once; the message itself was delivered
        assert drv.counters.messages_to_host == 1
        drv.stop()
        assert y.findings == []
    finally:
        y.close()


def test_one_reader_and_one_writer_thread() -> None:
    """A console's usual shape: one thread reads, another writes, concurrently."""
    import threading

    x = VirtualXhci(strict=True)
    try:
        with x.run_free():
            drv = DbcDriver(x.mmio, x.dma, clock=x.clock)
            drv.start(timeout=10.0)
            sent = [bytes([i]) * (i + 1) for i in range(200)]
            received = bytearray()
            host_got = bytearray()
            errors: list[BaseException] = []

            def reader() -> None:
                try:
                    while len(received) < sum(map(len, sent)):
                        received.extend(drv.read(1 << 16, timeout=10.0))
                except BaseException as exc:
                    errors.append(exc)

            def writer() -> None:
                try:
                    for m in sent:
                        drv.write(m, timeout=10.0)
                    drv.flush(timeout=10.0)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=f, daemon=True) for f in (reader, writer)]
            for t in threads:
                t.start()
            for m in sent:
                x.host.send(m, timeout=10.0)
            while len(host_got) < sum(map(len, sent)):
                host_got.extend(x.host.recv(1 << 16, timeout=10.0))
            for t in threads:
                t.join(timeout=20.0)
            assert not errors, errors
            assert bytes(received) == b"".join(sent) == bytes(host_got)
            drv.stop()
        assert x.findings == []
    finally:
        x.close()


def test_stop_start_cycles_leak_nothing(x: VirtualXhci) -> None:
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock)
    for i in range(3):
        drv.start(timeout=5.0)
        drv.write(b"cycle %d" % i)
        assert x.host.recv(100, timeout=1.0) == b"cycle %d" % i
        drv.flush(timeout=1.0)
        assert drv.stop() == ()
        assert x.dma.stats()["live_bytes"] == 0
    with drv:
        drv.start(timeout=5.0)
        drv.write(b"pending at exit")
    assert drv.state is DbcState.DISABLED and x.dma.stats()["live_bytes"] == 0
    assert [m.data for m in drv.take_undelivered()] == [b"pending at exit"]


def test_bad_arguments_are_named_errors(x: VirtualXhci) -> None:
    from dbc_harness.drivers.dbc import DbcConfigError, DbcStateError

    with pytest.raises(DbcConfigError, match="ring_trbs"):
        DbcDriver(x.mmio, x.dma, ring_trbs=8)
    with pytest.raises(DbcConfigError, match="in_buffer_size"):
        DbcDriver(x.mmio, x.dma, in_buffer_size=1000)
    with pytest.raises(DbcConfigError, match=r"in_buffers must be 1\.\.14"):
        DbcDriver(x.mmio, x.dma, ring_trbs=16, in_buffers=15)  # the Link TRB + one free slot
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock)
    with pytest.raises(DbcStateError, match="start"):
        drv.write(b"too early")
    with pytest.raises(DbcStateError):
        drv.poll()
    drv.start(timeout=5.0)
    with pytest.raises(DbcConfigError, match="bytes-like"):
        drv.write("text")  # type: ignore[arg-type]  # a str on purpose: refused at run time
    with pytest.raises(DbcStateError, match="stop"):
        drv.start(timeout=1.0)
    drv.stop()


def test_trace_sink_sees_states_trbs_events_and_mmio(x: VirtualXhci) -> None:
    records: list[tuple[str, dict[str, object]]] = []

    def sink(kind: str, /, **fields: object) -> None:
        records.append((kind, fields))

    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, trace=sink)
    drv.start(timeout=5.0)
    drv.write(b"traced")
    assert x.host.recv(100, timeout=1.0) == b"traced"
    drv.flush(timeout=1.0)
    drv.stop()
    kinds = {k for k, _ in records}
    assert {"state", "trb", "event", "mmio"} <= kinds
    out_trbs = [f for k, f in records if k == "trb" and f["ring"] == "OUT"]
    assert (
        out_trbs and "Normal" in str(out_trbs[-1]["text"]) and "len=6" in str(out_trbs[-1]["text"])
    )
    events = [str(f["text"]) for k, f in records if k == "event"]
    assert any(e.startswith("TransferEvent") and "Success" in e for e in events)
    states = [(f["old"], f["new"]) for k, f in records if k == "state"]
    assert states[-1] == ("CONFIGURED", "DISABLED")
    doorbells = [f for k, f in records if k == "mmio" and f["offset"] == 0x8700 + 4]
    # DB Target 1 (IN ring) and 0 (OUT ring) in DCDB bits 15:8
    assert {f["value"] for f in doorbells if f["op"] == "w"} == {0x000, 0x100}


@pytest.mark.parametrize("zlp", [False, True])
def test_zlp_option_ends_host_transfer_at_message_boundary(x: VirtualXhci, zlp: bool) -> None:
    """A 1024-byte message has no short packet: without a ZLP the host's read runs on into the
    next message (a byte stream); with ``zlp=True`` the read ends at the boundary."""
    drv = started(x, zlp=zlp)
    drv.write(b"a" * 1024)
    drv.write(b"b")
    first = x.host.recv(4096, timeout=1.0)
    if zlp:
        assert first == b"a" * 1024
        assert x.host.recv(4096, timeout=1.0) == b"b"
    else:
        assert first == b"a" * 1024 + b"b"
    drv.flush(timeout=1.0)
    assert drv.counters.messages_to_host == 2
    drv.stop()


def test_large_buffers_see_the_host_zlp_after_an_exactly_filled_buffer(x: VirtualXhci) -> None:
    """A 64 KiB host transfer into 64 KiB receive buffers ends with the host's zero-length
    packet in the next buffer: the driver hands the message over at that boundary."""
    drv = started(x, in_buffer_size=65536)
    payload = bytes(range(256)) * 256
    xfer = x.host.submit(payload, zlp=True)
    assert drv.read_message(timeout=5.0) == payload
    assert x.host.wait(xfer, timeout=1.0) == len(payload)
    drv.stop()
