"""The reference C DbC driver (drivers/native/reference/dbc.c) on the virtual bench, run under
CPU emulation through :class:`NativeDbcDriver`: echo both ways through pyusb, unplug/replug,
port reset, AMD-style endpoint IDs, controller reset, surprise removal. Strict mode: any spec
finding raised by the model fails the test, and every bench must end with 0 findings.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from dbc_harness.drivers.dbc import DbcDisconnected, DbcState, DbcTimeout
from dbc_harness.drivers.native.driver import NativeDbcDriver
from dbc_harness.drivers.xhci.registers import CAPLENGTH, OPERATIONAL_REGS, USBCMD, read_register
from dbc_harness.fixtures.virtual import DebugHostTimeout, Quirks, VirtualXhci

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def closer() -> Iterator[list[VirtualXhci]]:
    made: list[VirtualXhci] = []
    yield made
    for x in made:
        findings = list(x.findings)
        x.close()
        assert findings == []


def bench(closer: list[VirtualXhci], quirks: Quirks | None = None, **kw: Any) -> VirtualXhci:
    x = VirtualXhci(strict=True, quirks=quirks or Quirks(), **kw)
    closer.append(x)
    return x


def driver(x: VirtualXhci, **options: Any) -> NativeDbcDriver:
    drv = NativeDbcDriver(x.mmio, x.dma, clock=x.clock, **options)
    drv.start(timeout=5.0)
    return drv


def host_read(x: VirtualXhci, drv: NativeDbcDriver, n: int, timeout: float = 5.0) -> bytes:
    parts: list[bytes] = []
    got = 0
    end = x.clock.monotonic() + timeout
    while got < n:
        drv.poll()
        try:
            chunk = x.host.recv(n - got, timeout=0.001)
        except DebugHostTimeout:
            if x.clock.monotonic() > end:
                raise
            continue
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def settle(
    drv: NativeDbcDriver, state: DbcState = DbcState.CONFIGURED, x: VirtualXhci | None = None
) -> None:
    end = drv.clock.monotonic() + 5.0
    while drv.state is not state or (x is not None and not x.host.configured):
        if drv.clock.monotonic() > end:
            raise AssertionError(f"driver stuck in {drv.state.name}, wanted {state.name}")
        drv.poll()
        drv.clock.sleep(0.001)


def roundtrip(x: VirtualXhci, drv: NativeDbcDriver, tag: bytes) -> None:
    drv.write(tag)
    assert host_read(x, drv, len(tag)) == tag
    xfer = x.host.submit(tag[::-1])
    got = b""
    while len(got) < len(tag):
        got += drv.read(len(tag) - len(got), timeout=2.0)
    assert got == tag[::-1]
    x.host.wait(xfer, timeout=1.0)


# -- bring-up ----------------------------------------------------------------------------------


def test_bring_up_identity_and_clean_stop(closer: list[VirtualXhci]) -> None:
    x = bench(closer)
    drv = driver(x)
    assert drv.state is DbcState.CONFIGURED
    dev = x.host.device
    assert dev is not None
    assert (dev.id_vendor, dev.id_product) == (0x1D6B, 0x0010)
    assert (dev.manufacturer, dev.product, dev.serial) == (
        "dbc-harness",
        "reference C DbC driver",
        "0001",
    )
    assert dev.langids == (0x0409,)
    assert "dbc: Debug Capability at BAR0+0x8700" in drv.log
    assert drv.stop() == ()
    assert drv.state is DbcState.DISABLED
    assert x.dma.stats()["live_bytes"] == 0
    assert x.mmio.read32(0x8700 + 0x20) >> 31 == 0  # DCCTRL.DCE cleared


def test_controller_gone_before_start_is_surprise_removal(closer: list[VirtualXhci]) -> None:
    from dbc_harness.drivers.dbc import DbcSurpriseRemoval

    x = bench(closer)
    x.surprise_remove()
    drv = NativeDbcDriver(x.mmio, x.dma, clock=x.clock)
    with pytest.raises(DbcSurpriseRemoval):
        drv.start(timeout=0.5)
    assert drv.state is DbcState.DISABLED
    assert x.dma.stats()["live_bytes"] == 0


def test_without_a_host_start_times_out_and_frees_everything(closer: list[VirtualXhci]) -> None:
    x = bench(closer, plugged=False)
    drv = NativeDbcDriver(x.mmio, x.dma, clock=x.clock)
    with pytest.raises(DbcTimeout, match="DCR"):
        drv.start(timeout=0.2)
    assert drv.state is DbcState.DISABLED
    assert x.dma.stats()["live_bytes"] == 0


# -- data ----------------------------------------------------------------------------------------


def test_small_write_read_and_message_boundaries(closer: list[VirtualXhci]) -> None:
    x = bench(closer)
    drv = driver(x)
    drv.write(b"a" * 100)
    drv.write(b"b" * 100)
    drv.flush(timeout=1.0)
    assert x.host.recv(4096, timeout=1.0) == b"a" * 100  # two writes, two transfers
    assert x.host.recv(4096, timeout=1.0) == b"b" * 100
    x.host.send(b"world", timeout=1.0)
    assert drv.read(100, timeout=1.0) == b"world"
    c = drv.counters
    assert (c.bytes_to_host, c.bytes_from_host, c.messages_to_host) == (200, 5, 2)
    with pytest.raises(DbcTimeout, match="data from the debug host"):
        drv.read(10, timeout=0.01)
    drv.stop()


ECHO_SIZES = [1, 1023, 1024, 1025, 65535, 65536, 65537, 1 << 20]


@pytest.mark.parametrize("size", ECHO_SIZES)
def test_echo_through_pyusb(size: int) -> None:
    """The debug host (pyusb on the virtual backend, its own thread) sends ``size`` bytes, the
    C driver reads them and writes them back as one message. Free-running model, strict."""
    import usb.core
    from dbc_harness.fixtures.virtual.pyusb_backend import get_backend

    payload = bytes((i * 31 + size) & 0xFF for i in range(min(size, 1 << 16)))
    payload = (payload * (size // len(payload) + 1))[:size]
    x = VirtualXhci(strict=True)
    try:
        with x.run_free():
            drv = NativeDbcDriver(x.mmio, x.dma, clock=x.clock)
            drv.start(timeout=10.0)
            dev = usb.core.find(idVendor=0x1D6B, idProduct=0x0010, backend=get_backend(x))
            assert dev is not None
            dev.set_configuration()
            echoed = bytearray()
            errors: list[BaseException] = []

            def host() -> None:
                try:
                    assert dev.write(0x01, payload, timeout=20_000) == size
                    if size % 1024 == 0:  # ends the transfer in the driver's 64 KiB buffers
                        dev.write(0x01, b"", timeout=20_000)
                    while len(echoed) < size:
                        echoed.extend(dev.read(0x81, size - len(echoed), timeout=20_000))
                except BaseException as exc:
                    errors.append(exc)

            t = threading.Thread(target=host, daemon=True)
            t.start()
            got = bytearray()
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
            drv.machine.close()
        assert x.findings == []
    finally:
        x.close()


def test_many_small_messages_wrap_every_ring(closer: list[VirtualXhci]) -> None:
    """More TRBs and events than any ring holds: the Link TRBs and the event ring wrap."""
    x = bench(closer)
    drv = driver(x)
    for i in range(700):
        drv.write(b"%04d" % i)
        assert host_read(x, drv, 4) == b"%04d" % i
    for i in range(300):
        x.host.send(b"in%03d" % i, timeout=1.0)
        assert drv.read(16, timeout=1.0) == b"in%03d" % i
    drv.flush(timeout=1.0)
    assert drv.counters.events >= 1000
    drv.stop()


def test_one_reader_and_one_writer_thread() -> None:
    x = VirtualXhci(strict=True)
    try:
        with x.run_free():
            drv = NativeDbcDriver(x.mmio, x.dma, clock=x.clock)
            drv.start(timeout=10.0)
            sent = [bytes([i]) * (i + 1) for i in range(100)]
            received = bytearray()
            errors: list[BaseException] = []

            def reader() -> None:
                try:
                    while len(received) < sum(map(len, sent)):
                        received.extend(drv.read(1 << 16, timeout=10.0))
                except BaseException as exc:
                    errors.append(exc)

            t = threading.Thread(target=reader, daemon=True)
            t.start()
            host_got = bytearray()
            for m in sent:
                drv.write(m, timeout=10.0)
                x.host.send(m, timeout=10.0)
            while len(host_got) < sum(map(len, sent)):
                host_got.extend(x.host.recv(1 << 16, timeout=10.0))
            t.join(timeout=20.0)
            assert not errors, errors
            assert bytes(received) == b"".join(sent) == bytes(host_got)
            drv.stop()
        assert x.findings == []
    finally:
        x.close()


# -- the part and the host -------------------------------------------------------------------


@pytest.mark.parametrize("ids", [(0, 1), (2, 3)])
def test_both_endpoint_id_schemes(closer: list[VirtualXhci], ids: tuple[int, int]) -> None:
    """AMD parts number the DbC endpoints 0/1 in Transfer Events, Intel 2/3."""
    x = bench(closer, Quirks(endpoint_ids=ids))
    drv = driver(x)
    roundtrip(x, drv, b"endpoint ids")
    assert drv.counters.device_errors == 0
    drv.stop()


def test_enumeration_after_root_port_reset(closer: list[VirtualXhci]) -> None:
    """Nothing connects until the USB3 root ports are reset: asked (DBC_F_PORT_RESET) they are
    reset right after DCE; not asked, dbc_init() resets them once when DCPORTSC.CCS is still
    0 200 ms after DCE (so a 150 ms deadline runs out first)."""
    x = bench(closer, Quirks(enumerate_after_root_port_reset=True))
    drv = NativeDbcDriver(x.mmio, x.dma, clock=x.clock)
    with pytest.raises(DbcTimeout, match="DCR"):
        drv.start(timeout=0.15)
    assert x.dma.stats()["live_bytes"] == 0
    drv = driver(x, port_reset=True)
    roundtrip(x, drv, b"after port reset")
    assert drv.counters.recoveries["root_port_reset"] == 0
    drv.stop()
    drv = driver(x)
    roundtrip(x, drv, b"reset learned")
    assert drv.counters.recoveries["root_port_reset"] == 1
    drv.stop()


def test_no_64bit_mmio_part_and_the_qword_option(closer: list[VirtualXhci]) -> None:
    """Default: 64-bit registers as two dwords, low first (every part takes it)."""
    x = bench(closer, Quirks(no_64bit_mmio=True))
    drv = driver(x)
    roundtrip(x, drv, b"dwords")
    drv.stop()
    y = bench(closer)
    drv = driver(y, mmio64=True)
    roundtrip(y, drv, b"qwords")
    drv.stop()


def test_firmware_left_enabled_busy_then_takeover(closer: list[VirtualXhci]) -> None:
    from dbc_harness.drivers.dbc import DbcBusy

    x = bench(closer, Quirks(firmware_left_enabled=True))
    drv = NativeDbcDriver(x.mmio, x.dma, clock=x.clock)
    with pytest.raises(DbcBusy):
        drv.start(timeout=1.0)
    drv = driver(x, takeover=True)
    roundtrip(x, drv, b"taken over")
    drv.stop()


def test_unplug_mid_transfer_reports_undelivered_and_recovers(closer: list[VirtualXhci]) -> None:
    x = bench(closer, Quirks(unplug_after_out_bytes=100_000))
    drv = driver(x)
    first = bytes(range(256)) * 200  # 51200 bytes: delivered
    second = b"\xaa" * 100_000  # cut by the unplug
    id1 = drv.write(first)
    assert host_read(x, drv, len(first)) == first
    id2 = drv.write(second)
    with pytest.raises(DbcDisconnected) as info:
        drv.flush(timeout=2.0)
    assert id1 not in info.value.message_ids and id2 in info.value.message_ids
    settle(drv, DbcState.ENABLED)
    x.host.plug()
    settle(drv)
    roundtrip(x, drv, b"replugged")
    assert drv.counters.recoveries["disconnect"] == 1
    drv.stop()


@pytest.mark.parametrize("action", ["unplug", "hot", "warm", "deconfigure", "link_error"])
def test_host_side_loss_and_return(
    closer: list[VirtualXhci],
    action: Literal["unplug", "hot", "warm", "deconfigure", "link_error"],
) -> None:
    x = bench(closer)
    drv = driver(x)
    roundtrip(x, drv, b"before")
    if action == "unplug":
        x.host.unplug()
        settle(drv, DbcState.ENABLED)
        x.host.plug()
    elif action == "hot" or action == "warm":
        x.host.reset(action)
    elif action == "deconfigure":
        x.host.set_configuration(0)
        settle(drv, DbcState.CONNECTED)
        x.host.set_configuration(1)
    else:
        x.host.link_error()
        settle(drv, DbcState.CONNECTED)
        x.host.reset("warm")
    settle(drv, x=x)
    for i in range(3):
        roundtrip(x, drv, b"after %d" % i)
    assert sum(drv.counters.recoveries.values()) >= 1
    drv.stop()


def test_replug_rings_the_doorbells_for_data_queued_while_away(closer: list[VirtualXhci]) -> None:
    """Data written right after the host came back flows without another write: the driver
    rang both doorbells when DCR rose again (7.6.7.4)."""
    x = bench(closer)
    drv = driver(x)
    roundtrip(x, drv, b"before")
    x.host.unplug()
    settle(drv, DbcState.ENABLED)
    x.host.plug()
    settle(drv, x=x)
    x.host.send(b"host first", timeout=1.0)  # lands in IN buffers posted at reconfiguration
    assert drv.read(64, timeout=1.0) == b"host first"
    drv.stop()


def test_repeated_reconnects_do_not_fill_rings(closer: list[VirtualXhci]) -> None:
    x = bench(closer)
    drv = driver(x)
    for i in range(12):
        for _ in range(5):
            drv.write(b"m%d" % i)
        host_read(x, drv, 10)
        x.host.unplug()
        settle(drv, DbcState.ENABLED)
        x.host.plug()
        settle(drv)
    roundtrip(x, drv, b"still room")
    drv.stop()


def test_host_halt_holds_writes_until_cleared(closer: list[VirtualXhci]) -> None:
    x = bench(closer)
    drv = driver(x)
    x.host.halt("in")  # the host's IN endpoint = the DbC OUT ring (DCCTRL.HOT)
    drv.write(b"held")
    for _ in range(5):
        drv.poll()
        x.advance(1000)
    x.host.clear_halt("in")
    assert host_read(x, drv, 4) == b"held"
    drv.stop()


def test_controller_reset_kills_dbc_and_driver_rebrings_up(closer: list[VirtualXhci]) -> None:
    x = bench(closer, Quirks(hcrst_kills_dbc=True))
    drv = driver(x)
    roundtrip(x, drv, b"before reset")
    op = read_register(x.mmio, 0, CAPLENGTH)
    x.mmio.write32(op + OPERATIONAL_REGS.offset("USBCMD"), USBCMD.encode(HCRST=1))
    drv.poll()  # sees DCE = 0 and runs the bring-up again
    settle(drv)
    assert drv.counters.recoveries["dce_lost"] == 1
    roundtrip(x, drv, b"after reset")
    drv.stop()


def test_surprise_removal_is_named_and_stop_frees_everything(closer: list[VirtualXhci]) -> None:
    from dbc_harness.drivers.dbc import DbcSurpriseRemoval

    x = bench(closer)
    drv = driver(x)
    x.surprise_remove()
    with pytest.raises(DbcSurpriseRemoval):
        drv.poll()
    assert drv.state is DbcState.REMOVED
    drv.stop()
    assert x.dma.stats()["live_bytes"] == 0
