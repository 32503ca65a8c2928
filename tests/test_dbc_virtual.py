"""A DbC driver on the virtual bench (strict mode: any spec finding raises and fails the test):
bring-up, the data path, echo. Shared scenarios run against both driver kinds (``make_driver``:
the Python DbcDriver and the reference C driver under CPU emulation, tests/driver_kinds.py);
the Python driver's own options and internals are tested on it alone.

Deterministic mode: the driver's waits advance the model's virtual time (``clock=x.clock``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from dbc_harness.drivers.dbc import (
    DbcConfigError,
    DbcDriver,
    DbcIdentity,
    DbcNotFound,
    DbcState,
    DbcStateError,
    DbcTimeout,
)
from dbc_harness.fixtures.virtual import VirtualXhci

from tests.driver_kinds import (
    KINDS,
    DriverFactory,
    host_read,
    kind_param,
    strict_controller,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def x() -> Iterator[VirtualXhci]:
    with strict_controller() as ctl:
        yield ctl


def started(x: VirtualXhci, **options: Any) -> DbcDriver:
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, **options)
    drv.start(timeout=5.0)
    return drv


# -- bring-up --------------------------------------------------------------------------------


def test_bring_up_states_identity_and_clean_stop(
    x: VirtualXhci, make_driver: DriverFactory
) -> None:
    """The identity reaches the host (the C driver's is compiled in: -D switches), the driver
    reports its states, and stop() gives everything back with DCE cleared."""
    seen: list[DbcState] = []
    ident = DbcIdentity(manufacturer="LF OS", product="kernel debug", serial="42", protocol=1)
    drv = make_driver(x, identity=ident, on_state=lambda old, new: seen.append(new))
    drv.start(timeout=5.0)
    assert make_driver.dbc_offset_found(drv) == 0x8700
    if make_driver.reports_each_state:
        assert seen == [
            DbcState.INITIALIZED,
            DbcState.ENABLED,
            DbcState.CONNECTED,
            DbcState.CONFIGURED,
        ]
    else:
        assert seen == [DbcState.CONFIGURED]
    dev = x.host.device
    assert dev is not None
    assert (dev.id_vendor, dev.id_product, dev.protocol) == (0x1D6B, 0x0010, 1)
    assert (dev.manufacturer, dev.product, dev.serial) == ("LF OS", "kernel debug", "42")
    assert dev.langids == (0x0409,)
    assert drv.stop() == ()
    assert drv.state is DbcState.DISABLED
    assert x.dma.stats()["live_bytes"] == 0
    assert x.mmio.read32(0x8700 + 0x20) >> 31 == 0  # DCCTRL.DCE cleared


def test_wrong_offset_is_dbc_not_found(x: VirtualXhci) -> None:
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, dbc_offset=0x8000)
    with pytest.raises(DbcNotFound):
        drv.start(timeout=1.0)
    assert drv.state is DbcState.DISABLED and x.dma.stats()["live_bytes"] == 0


def test_stop_start_cycles_leak_nothing(x: VirtualXhci, make_driver: DriverFactory) -> None:
    drv = make_driver(x)
    for i in range(3):
        drv.start(timeout=5.0)
        drv.write(b"cycle %d" % i)
        assert x.host.recv(100, timeout=1.0) == b"cycle %d" % i
        drv.flush(timeout=1.0)
        assert drv.stop() == ()
        assert x.dma.stats()["live_bytes"] == 0


def test_leaving_the_with_block_stops_and_keeps_the_report(
    x: VirtualXhci, make_driver: DriverFactory
) -> None:
    drv: Any = make_driver(x)
    with drv:
        drv.start(timeout=5.0)
        drv.write(b"pending at exit")
    assert drv.state is DbcState.DISABLED and x.dma.stats()["live_bytes"] == 0
    assert [m.data for m in drv.take_undelivered()] == [b"pending at exit"]


def test_calls_in_the_wrong_state_are_named_errors(
    x: VirtualXhci, make_driver: DriverFactory
) -> None:
    drv = make_driver(x)
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


def test_bad_options_are_named_errors(x: VirtualXhci) -> None:
    with pytest.raises(DbcConfigError, match="ring_trbs"):
        DbcDriver(x.mmio, x.dma, ring_trbs=8)
    with pytest.raises(DbcConfigError, match="in_buffer_size"):
        DbcDriver(x.mmio, x.dma, in_buffer_size=1000)
    with pytest.raises(DbcConfigError, match=r"in_buffers must be 1\.\.14"):
        DbcDriver(x.mmio, x.dma, ring_trbs=16, in_buffers=15)  # the Link TRB + one free slot


# -- the data path ---------------------------------------------------------------------------


def test_small_write_and_read(x: VirtualXhci, make_driver: DriverFactory) -> None:
    drv = make_driver.started(x)
    drv.write(b"hello")
    assert x.host.recv(100, timeout=1.0) == b"hello"
    x.host.send(b"world", timeout=1.0)
    assert drv.read(100, timeout=1.0) == b"world"
    drv.flush(timeout=1.0)
    c = drv.counters
    assert (c.bytes_to_host, c.bytes_from_host, c.messages_to_host) == (5, 5, 1)
    drv.stop()


def test_separate_writes_stay_separate_transfers(
    x: VirtualXhci, make_driver: DriverFactory
) -> None:
    """Message boundaries: two writes are two TDs; the host sees two transfers."""
    drv = make_driver.started(x)
    drv.write(b"a" * 100)
    drv.write(b"b" * 100)
    drv.flush(timeout=1.0)
    assert x.host.recv(4096, timeout=1.0) == b"a" * 100
    assert x.host.recv(4096, timeout=1.0) == b"b" * 100
    c = drv.counters
    assert (c.bytes_to_host, c.messages_to_host) == (200, 2)
    drv.stop()


def test_read_times_out_with_named_error(x: VirtualXhci, make_driver: DriverFactory) -> None:
    drv = make_driver.started(x)
    with pytest.raises(DbcTimeout, match="data from the debug host"):
        drv.read(10, timeout=0.01)
    drv.stop()


def test_many_small_messages_wrap_every_ring(x: VirtualXhci, make_driver: DriverFactory) -> None:
    """More TRBs and events than any ring holds: the Link TRBs and the event ring wrap."""
    drv = make_driver.started(x)
    for i in range(700):
        drv.write(b"%04d" % i)
        assert host_read(x, drv, 4) == b"%04d" % i
    for i in range(300):
        x.host.send(b"in%03d" % i, timeout=1.0)
        assert drv.read(16, timeout=1.0) == b"in%03d" % i
    drv.flush(timeout=1.0)
    assert drv.counters.events >= 1000
    drv.stop()


def test_messages_across_the_out_buffers_end_arrive_intact(
    x: VirtualXhci, make_driver: DriverFactory
) -> None:
    """Odd-sized messages through more than twice the bytes a driver keeps in flight (the
    reference C driver's 4 MiB OUT FIFO, the Python driver's DMA blocks): the ones that wrap
    around the end of the buffer arrive byte for byte, in order, each as its own transfer."""
    drv = make_driver.started(x)
    size = 300_007
    for i in range(30):
        payload = bytes((j * 13 + i) & 0xFF for j in range(size))
        drv.write(payload, timeout=5.0)
        assert host_read(x, drv, size) == payload, f"message {i}"
    drv.flush(timeout=5.0)
    assert drv.counters.bytes_to_host == 30 * size
    drv.stop()


def test_iter_read_streams_until_idle(x: VirtualXhci, make_driver: DriverFactory) -> None:
    drv: Any = make_driver.started(x)
    for chunk in (b"one", b"two", b"three"):
        x.host.send(chunk, timeout=1.0)
    assert b"".join(drv.iter_read(2, idle_timeout=0.01)) == b"onetwothree"
    drv.stop()


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
    assert host_read(x, drv, size) == payload
    drv.flush(timeout=1.0)
    drv.stop()


#: (kind, size): a zero-length message is the Python driver's alone (``reads_messages``), and
#: 16 MiB too (the C driver runs under CPU emulation: 1 MiB proves the same paths)
ECHO_CASES = [
    kind_param(kind, size)
    for kind in KINDS
    for size in (0, 1, 1023, 1024, 1025, 65535, 65536, 65537, 1 << 20, 16 << 20)
    if kind == "python" or 0 < size <= 1 << 20
]


@pytest.mark.parametrize(("make_driver", "size"), ECHO_CASES, indirect=["make_driver"])
def test_echo_through_pyusb(make_driver: DriverFactory, size: int) -> None:
    """The debug host (unmodified pyusb code on the virtual backend, its own thread) sends
    ``size`` bytes; the target reads them and writes them back as one message; the host reads
    them back. Free-running model, strict mode."""
    import usb.core
    from dbc_harness.fixtures.virtual.pyusb_backend import get_backend

    payload = bytes((i * 31 + size) & 0xFF for i in range(min(size, 1 << 16)))
    payload = (payload * (size // max(len(payload), 1) + 1))[:size]
    x = VirtualXhci(strict=True)
    try:
        with x.run_free():
            drv: Any = make_driver.started(x, timeout=10.0)
            dev = usb.core.find(idVendor=0x1D6B, idProduct=0x0010, backend=get_backend(x))
            assert dev is not None
            dev.set_configuration()
            echoed = bytearray()
            errors: list[BaseException] = []

            def host() -> None:
                try:
                    assert dev.write(0x01, payload, timeout=20_000) == size
                    if size % 1024 == 0 and not make_driver.ends_transfers_at_packets:
                        dev.write(0x01, b"", timeout=20_000)  # ends it in 64 KiB buffers
                    if size == 0:
                        echoed.extend(dev.read(0x81, 1024, timeout=20_000))
                    while len(echoed) < size:
                        echoed.extend(dev.read(0x81, size - len(echoed), timeout=20_000))
                except BaseException as exc:
                    errors.append(exc)

            t = threading.Thread(target=host, daemon=True)
            t.start()
            got = bytearray()
            if size == 0:  # only with reads_messages (ECHO_CASES)
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


def test_one_reader_and_one_writer_thread(make_driver: DriverFactory) -> None:
    """A console's usual shape: one thread reads, another writes, concurrently."""
    x = VirtualXhci(strict=True)
    try:
        with x.run_free():
            drv = make_driver.started(x, timeout=10.0)
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
