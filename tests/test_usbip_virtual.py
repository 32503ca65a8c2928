"""The USB/IP export of the virtual DbC, end to end without a kernel: our importer (UsbipClient)
over a real loopback socket, the server, VirtualDbcDevice, the free-running virtual xHCI and our
DbC driver on the target side. The kernel-bench test runs the same path with Linux's vhci_hcd.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from dbc_harness.drivers.dbc import DbcDriver, DbcIdentity, DbcState
from dbc_harness.fixtures.bench import VirtualBench
from dbc_harness.fixtures.usbip import (
    UsbipClient,
    UsbipServer,
    ch9,
    devlist,
    wire,
)
from dbc_harness.fixtures.usbip.client import UnlinkResult
from dbc_harness.fixtures.virtual.usbip_device import VirtualDbcDevice

IDENTITY = DbcIdentity(
    vendor_id=0x1D6B,
    product_id=0x0011,
    bcd_device=0x0123,
    protocol=1,
    manufacturer="Example Corp",
    product="Example DbC target",
    serial="SN-42",
)


def setup_packet(bm: int, req: int, value: int = 0, index: int = 0, length: int = 0) -> bytes:
    return ch9.SetupPacket.build(
        {"bmRequestType": bm, "bRequest": req, "wValue": value, "wIndex": index, "wLength": length}
    )


def poll_until(driver: DbcDriver, state: DbcState, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while driver.state is not state:
        assert time.monotonic() < deadline, f"driver stuck in {driver.state}, wanted {state}"
        driver.poll()
        time.sleep(0.005)


def read_exactly(driver: DbcDriver, size: int, timeout: float = 10.0) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < size:
        assert time.monotonic() < deadline, f"got {len(got)} of {size} bytes"
        try:
            got += driver.read(size - len(got), timeout=0.5)
        except TimeoutError:
            pass
    return bytes(got)


@dataclass
class Rig:
    bench: VirtualBench
    driver: DbcDriver
    device: VirtualDbcDevice
    server: UsbipServer


@pytest.fixture
def rig() -> Iterator[Rig]:
    with VirtualBench(free_running=True) as bench:
        driver = bench.make_driver(identity=IDENTITY)
        driver.start(timeout=10)
        device = VirtualDbcDevice(bench.controller)
        with UsbipServer(device, "127.0.0.1", 0) as server:
            yield Rig(bench, driver, device, server)
        assert bench.findings() == []
        assert server.errors == []


@pytest.fixture
def client(rig: Rig) -> Iterator[UsbipClient]:
    with UsbipClient.import_device(*rig.server.address, busid="1-1") as cli:
        yield cli


def test_devlist_shows_what_the_driver_wrote(rig: Rig) -> None:
    (dev,) = devlist(*rig.server.address)
    assert (dev.id_vendor, dev.id_product, dev.bcd_device) == (0x1D6B, 0x0011, 0x0123)
    assert dev.speed == ch9.LINUX_USB_SPEED_SUPER
    assert dev.interfaces == ((0xDC, 2, 1),)  # bInterfaceProtocol = DCDDI1 protocol


def test_strings_come_from_the_info_context(client: UsbipClient) -> None:
    def string(index: int) -> str:
        reply = client.control(setup_packet(0x80, 6, 0x0300 | index, 0x0409, 255), length=255)
        assert reply.status == 0
        return reply.data[2:].decode("utf-16-le")

    langids = client.control(setup_packet(0x80, 6, 0x0300, 0, 255), length=255)
    assert langids.data == b"\x04\x03\x09\x04"
    assert [string(1), string(2), string(3)] == ["Example Corp", "Example DbC target", "SN-42"]
    device = client.control(setup_packet(0x80, 6, 0x0100, 0, 18), length=18).data
    parsed = ch9.DeviceDescriptor.parse(device)
    assert (parsed.idVendor, parsed.idProduct, parsed.bcdDevice) == (0x1D6B, 0x0011, 0x0123)


def test_bytes_both_ways(rig: Rig, client: UsbipClient) -> None:
    assert client.bulk_out(1, b"host to target").status == 0
    assert read_exactly(rig.driver, 14) == b"host to target"
    rig.driver.write(b"target to host")
    assert client.bulk_in(1, 1024).data == b"target to host"


def test_large_transfers_in_urb_sized_pieces(rig: Rig, client: UsbipClient) -> None:
    data = bytes(range(256)) * 1024  # 256 KiB
    seqnums = [  # in flight together; the target reads while they arrive (NAK until it posts)
        client.submit(1, wire.USBIP_DIR_OUT, data=data[offset : offset + 16384])
        for offset in range(0, len(data), 16384)
    ]
    assert read_exactly(rig.driver, len(data)) == data
    assert all(client.wait_urb(seqnum, 5).status == 0 for seqnum in seqnums)
    rig.driver.write(data)  # one message, read back in 1 KiB URBs as usb_debug does
    got = bytearray()
    while len(got) < len(data):
        reply = client.bulk_in(1, 1024)
        assert reply.status == 0 and 0 < reply.actual_length <= 1024
        got += reply.data
    assert bytes(got) == data


def test_unlink_of_a_waiting_in_urb_loses_nothing(rig: Rig, client: UsbipClient) -> None:
    seq = client.submit(1, wire.USBIP_DIR_IN, length=1024)
    time.sleep(0.1)
    assert not client.has_reply(seq)
    assert client.wait(client.unlink(seq), 5) == UnlinkResult(-errno.ECONNRESET)
    rig.driver.write(b"after unlink")
    assert client.bulk_in(1, 1024).data == b"after unlink"


def test_halt_and_clear_halt_reach_the_driver(rig: Rig, client: UsbipClient) -> None:
    assert client.control(setup_packet(0x02, 3, 0, 0x81)).status == 0  # SET_FEATURE(HALT)
    assert client.bulk_in(1, 1024).status == -errno.EPIPE
    assert client.control(setup_packet(0x02, 1, 0, 0x81)).status == 0  # CLEAR_FEATURE(HALT)
    rig.driver.write(b"flows again")
    deadline = time.monotonic() + 5
    while True:  # the driver rings the doorbell again once it sees HOT clear
        rig.driver.poll()
        reply = client.bulk_in(1, 1024)
        if reply.data:
            break
        assert time.monotonic() < deadline
    assert reply.data == b"flows again"
    assert "halt 0x81" in rig.device.events and "clear_halt 0x81" in rig.device.events


def test_set_configuration_zero_deconfigures(rig: Rig, client: UsbipClient) -> None:
    assert client.control(setup_packet(0x00, 9, 0)).status == 0
    poll_until(rig.driver, DbcState.CONNECTED)
    assert client.control(setup_packet(0x00, 9, 1)).status == 0
    poll_until(rig.driver, DbcState.CONFIGURED)


def test_detach_is_an_unplug_and_reattach_recovers(rig: Rig) -> None:
    with UsbipClient.import_device(*rig.server.address, busid="1-1") as first:
        assert first.bulk_out(1, b"one").status == 0
        assert read_exactly(rig.driver, 3) == b"one"
    rig.server.wait_detached(5)
    poll_until(rig.driver, DbcState.ENABLED)
    assert rig.driver.counters.recoveries["disconnect"] >= 1
    assert len(devlist(*rig.server.address)) == 1  # still exported while the cable is out
    with UsbipClient.import_device(*rig.server.address, busid="1-1") as second:
        poll_until(rig.driver, DbcState.CONFIGURED)
        assert second.bulk_out(1, b"two").status == 0
        assert read_exactly(rig.driver, 3) == b"two"
    assert rig.device.events.count("attach") == 2


def test_forwarded_port_reset_resets_the_dbc(rig: Rig, client: UsbipClient) -> None:
    """SET_FEATURE(PORT_RESET) to the hub port (usbip-host's reset convention) becomes a hot
    reset from the virtual host: the driver sees it, recovers and data flows again."""
    assert client.control(setup_packet(0x23, 3, 4, 1)).status == 0
    deadline = time.monotonic() + 10
    while (
        rig.driver.counters.recoveries["port_reset"] + rig.driver.counters.recoveries["disconnect"]
        == 0
    ):
        assert time.monotonic() < deadline, rig.driver.counters.recoveries
        rig.driver.poll()
        time.sleep(0.005)
    poll_until(rig.driver, DbcState.CONFIGURED)
    assert "port_reset" in rig.device.events
    assert client.bulk_out(1, b"after reset").status == 0
    assert read_exactly(rig.driver, 11) == b"after reset"


class _GreedyHost:
    """A host whose recv hands back more than asked (what one model version did)."""

    configured = True
    plugged = True
    device = None

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def recv(self, max_bytes: int, timeout: float) -> bytes:
        return self.chunks.pop(0)


def test_bytes_beyond_the_urb_length_wait_for_the_next_urb() -> None:
    host = _GreedyHost([bytes(range(200)) * 15, b"tail"])
    # a stand-in controller: the device only reaches its host
    device = VirtualDbcDevice(SimpleNamespace(host=host))  # type: ignore[arg-type]
    cancel = threading.Event()
    pieces = [device.bulk_in(1, 1024, cancel) for _ in range(4)]
    assert [len(p or b"") for p in pieces] == [1024, 1024, 952, 4]
    assert b"".join(p or b"" for p in pieces) == bytes(range(200)) * 15 + b"tail"
    assert device.oversized_reads == 1
