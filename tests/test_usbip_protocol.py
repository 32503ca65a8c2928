"""USB/IP server protocol over a real loopback TCP socket, against an in-memory device.

The device here is a minimal :class:`fixtures.usbip.device.UsbipDevice` (queues instead of a DbC)
so these tests pin the wire behaviour the kernel's vhci_hcd relies on: exact sizes, devlist,
import, control/bulk URBs, UNLINK semantics, halts, detach. tests/test_usbip_virtual.py runs the
same server in front of the virtual xHCI with our DbC driver.
"""

from __future__ import annotations

import collections
import errno
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from dbc_harness.fixtures.usbip import ch9, wire
from dbc_harness.fixtures.usbip.client import UnlinkResult, UrbResult, UsbipClient, devlist
from dbc_harness.fixtures.usbip.control import answer_standard_request
from dbc_harness.fixtures.usbip.descriptors import (
    DbcDescriptors,
    DescriptorIdentity,
    build_dbc_descriptors,
)
from dbc_harness.fixtures.usbip.errors import (
    UsbDisconnected,
    UsbipError,
    UsbipImportRefused,
    UsbipProtocolError,
    UsbStall,
)
from dbc_harness.fixtures.usbip.server import UsbipServer
from hypothesis import given, settings
from hypothesis import strategies as st

IDENTITY = DescriptorIdentity(
    id_vendor=0x1D6B,
    id_product=0x0010,
    bcd_device=0x0010,
    protocol=0,
    manufacturer="Linux Foundation",
    product="Linux USB Debug Target",
    serial="0001",
    max_burst=15,
)


class MemoryDevice:
    """Queues standing in for the target: ``to_host`` feeds bulk IN, ``from_host`` collects
    bulk OUT. Implements EndpointControls for the standard-request handler too."""

    def __init__(self) -> None:
        self.desc: DbcDescriptors = build_dbc_descriptors(IDENTITY)
        self.cond = threading.Condition()
        self.to_host: collections.deque[bytes] = collections.deque()
        self.from_host: list[bytes] = []
        self.halted: set[int] = set()
        self.config = 0
        self.events: list[str] = []
        self.present = True

    # UsbipDevice
    def descriptors(self) -> DbcDescriptors | None:
        return self.desc if self.present else None

    def attach(self, timeout: float) -> None:
        self.events.append("attach")

    def detach(self) -> None:
        with self.cond:
            self.events.append("detach")
            self.cond.notify_all()

    def control(self, setup: bytes, data: bytes, cancel: threading.Event) -> bytes:
        return answer_standard_request(setup, data, self.desc, self)

    def bulk_out(self, endpoint: int, data: bytes | bytearray, cancel: threading.Event) -> int:
        if 0x01 in self.halted:
            raise UsbStall("halted")
        with self.cond:
            self.from_host.append(bytes(data))
            self.cond.notify_all()
        return len(data)

    def bulk_in(self, endpoint: int, max_bytes: int, cancel: threading.Event) -> bytes | None:
        deadline = time.monotonic() + 30
        with self.cond:
            while not cancel.is_set():
                if 0x81 in self.halted:
                    raise UsbStall("halted")
                if not self.present:
                    raise UsbDisconnected("gone")
                if self.to_host:
                    chunk = self.to_host.popleft()
                    if len(chunk) > max_bytes:
                        self.to_host.appendleft(chunk[max_bytes:])
                    return chunk[:max_bytes]
                assert time.monotonic() < deadline
                self.cond.wait(0.01)
        return None

    def give(self, data: bytes) -> None:
        with self.cond:
            self.to_host.append(data)
            self.cond.notify_all()

    # EndpointControls
    def halt(self, endpoint_address: int) -> None:
        self.halted.add(endpoint_address)

    def clear_halt(self, endpoint_address: int) -> None:
        self.events.append(f"clear_halt 0x{endpoint_address:02x}")
        self.halted.discard(endpoint_address)

    def is_halted(self, endpoint_address: int) -> bool:
        return endpoint_address in self.halted

    def set_configuration(self, value: int) -> None:
        self.config = value

    def configuration(self) -> int:
        return self.config

    def port_reset(self) -> None:
        self.events.append("port_reset")


def setup_packet(bm: int, req: int, value: int = 0, index: int = 0, length: int = 0) -> bytes:
    return ch9.SetupPacket.build(
        {"bmRequestType": bm, "bRequest": req, "wValue": value, "wIndex": index, "wLength": length}
    )


@pytest.fixture
def device() -> MemoryDevice:
    return MemoryDevice()


@pytest.fixture
def server(device: MemoryDevice) -> Iterator[UsbipServer]:
    with UsbipServer(device, "127.0.0.1", 0) as srv:
        yield srv


@pytest.fixture
def client(server: UsbipServer) -> Iterator[UsbipClient]:
    host, port = server.address
    with UsbipClient.import_device(host, port, "1-1") as cli:
        yield cli


# --- layouts -----------------------------------------------------------------------------------
def test_wire_sizes_match_the_kernel() -> None:
    assert wire.OpCommon.sizeof() == 8
    assert wire.UsbDevice.sizeof() == 312
    assert wire.UsbInterface.sizeof() == 4
    assert wire.HEADER_SIZE == 48


@settings(max_examples=60, deadline=None)
@given(
    seqnum=st.integers(0, 2**32 - 1),
    direction=st.integers(0, 1),
    ep=st.integers(0, 15),
    length=st.integers(0, 2**31 - 1),
    setup=st.binary(min_size=8, max_size=8),
)
def test_cmd_submit_round_trips_big_endian(
    seqnum: int, direction: int, ep: int, length: int, setup: bytes
) -> None:
    raw = wire.build_header(
        wire.USBIP_CMD_SUBMIT,
        seqnum,
        0x10002,
        direction,
        ep,
        transfer_flags=0,
        transfer_buffer_length=length,
        start_frame=0,
        number_of_packets=0,
        interval=0,
        setup=setup,
    )
    assert len(raw) == 48
    assert raw[4:8] == seqnum.to_bytes(4, "big")
    assert raw[24:28] == length.to_bytes(4, "big")
    assert raw[40:48] == setup
    header = wire.parse_header(raw)
    assert (header.seqnum, header.direction, header.ep) == (seqnum, direction, ep)
    assert header.body["transfer_buffer_length"] == length


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_derived_codecs_agree_with_the_construct_layouts(data: st.DataObject) -> None:
    """The fast header codecs are derived from the construct declarations: same bytes."""
    command = data.draw(st.sampled_from(sorted(wire._BODIES)))
    layout = {
        wire.USBIP_CMD_SUBMIT: wire.CmdSubmit,
        wire.USBIP_CMD_UNLINK: wire.CmdUnlink,
        wire.USBIP_RET_SUBMIT: wire.RetSubmit,
        wire.USBIP_RET_UNLINK: wire.RetUnlink,
    }[command]
    body: dict[str, object] = {}
    for sub in layout.subcons:
        if not sub.name:
            continue  # Padding
        fmt = getattr(sub.subcon, "fmtstr", "")
        body[sub.name] = data.draw(
            st.integers(-(2**31), 2**31 - 1)
            if fmt == ">l"
            else st.integers(0, 2**32 - 1)
            if fmt == ">L"
            else st.binary(min_size=8, max_size=8)
        )
    basic = [data.draw(st.integers(0, 2**32 - 1)) for _ in range(4)]
    seqnum, devid, direction, ep = basic
    raw = wire.build_header(command, seqnum, devid, direction, ep, **body)
    expected = wire.HeaderBasic.build(
        dict(zip(("command", "seqnum", "devid", "direction", "ep"), [command, *basic], strict=True))
    ) + layout.build(body)
    assert raw == expected
    parsed = wire.parse_header(raw)
    reference = layout.parse(raw[20:])
    assert parsed.body == {k: v for k, v in reference.items() if not k.startswith("_")}


def test_unknown_command_is_a_named_error() -> None:
    with pytest.raises(UsbipProtocolError, match="unknown USB/IP command"):
        wire.parse_header(b"\x00\x00\x00\x09" + bytes(44))
    with pytest.raises(UsbipProtocolError, match="47 bytes"):
        wire.parse_header(bytes(47))


def test_dbc_descriptors_are_superspeed_diagnostic() -> None:
    desc = build_dbc_descriptors(IDENTITY)
    dev = ch9.DeviceDescriptor.parse(desc.device)
    assert (dev.bcdUSB, dev.bMaxPacketSize0) == (0x0300, 9)
    assert (dev.idVendor, dev.idProduct, dev.bcdDevice) == (0x1D6B, 0x0010, 0x0010)
    cfg = ch9.ConfigurationDescriptor.parse(desc.configuration)
    assert cfg.wTotalLength == len(desc.configuration) == 9 + 9 + 2 * (7 + 6)
    intf = ch9.InterfaceDescriptor.parse(desc.configuration[9:18])
    assert (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bNumEndpoints) == (0xDC, 2, 2)
    ep_out = ch9.EndpointDescriptor.parse(desc.configuration[18:25])
    companion = ch9.SuperSpeedEndpointCompanionDescriptor.parse(desc.configuration[25:31])
    ep_in = ch9.EndpointDescriptor.parse(desc.configuration[31:38])
    assert (ep_out.bEndpointAddress, ep_in.bEndpointAddress) == (0x01, 0x81)
    assert ep_out.wMaxPacketSize == ep_in.wMaxPacketSize == 1024
    assert companion.bMaxBurst == 15
    assert desc.strings[2][2:].decode("utf-16-le") == "Linux USB Debug Target"
    assert desc.strings[0] == b"\x04\x03\x09\x04"
    bos = ch9.BosDescriptor.parse(desc.bos)
    assert bos.wTotalLength == len(desc.bos) and bos.bNumDeviceCaps == 2


def test_two_langid_string0_is_reproduced() -> None:
    identity = DescriptorIdentity(0x1D6B, 0x11, 0, 0, "a", "b", "c", langids=(0x0009, 0x0004))
    assert build_dbc_descriptors(identity).strings[0] == b"\x06\x03\x09\x00\x04\x00"


def test_identity_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="id_vendor"):
        DescriptorIdentity(0x10000, 1, 0, 0, "", "", "")


# --- operation phase ---------------------------------------------------------------------------
def test_devlist_describes_a_superspeed_dbc(server: UsbipServer) -> None:
    (dev,) = devlist(*server.address)
    assert dev.busid == "1-1" and (dev.busnum, dev.devnum) == (1, 2)
    assert dev.speed == ch9.LINUX_USB_SPEED_SUPER
    assert (dev.id_vendor, dev.id_product, dev.bcd_device) == (0x1D6B, 0x0010, 0x0010)
    assert dev.configuration_value == 1 and dev.num_configurations == 1
    assert dev.interfaces == ((0xDC, 2, 0),)


def test_devlist_is_empty_while_nothing_is_enumerated(
    server: UsbipServer, device: MemoryDevice
) -> None:
    device.present = False
    assert devlist(*server.address) == []


def test_import_of_unknown_busid_is_refused(server: UsbipServer) -> None:
    with pytest.raises(UsbipImportRefused) as info:
        UsbipClient.import_device(*server.address, busid="3-7")
    assert info.value.status == wire.ST_NODEV


def test_second_importer_gets_busy(server: UsbipServer, client: UsbipClient) -> None:
    server.wait_attached(5)
    with pytest.raises(UsbipImportRefused) as info:
        UsbipClient.import_device(*server.address, busid="1-1")
    assert info.value.status == wire.ST_DEV_BUSY


def test_import_reply_carries_ids(client: UsbipClient, device: MemoryDevice) -> None:
    assert (client.device.id_vendor, client.device.id_product) == (0x1D6B, 0x0010)
    assert client.device.speed == ch9.LINUX_USB_SPEED_SUPER
    assert device.events == ["attach"]


def test_non_loopback_address_is_refused(device: MemoryDevice) -> None:
    with pytest.raises(UsbipError, match="no authentication"):
        UsbipServer(device, "0.0.0.0", 0)


# --- URB phase ---------------------------------------------------------------------------------
def test_enumeration_requests(client: UsbipClient, device: MemoryDevice) -> None:
    head = client.control(setup_packet(0x80, 6, 0x0100, 0, 8), length=8)
    assert head.status == 0 and head.data == device.desc.device[:8]
    full = client.control(setup_packet(0x80, 6, 0x0100, 0, 64), length=64)
    assert full.actual_length == 18 and full.data == device.desc.device
    bos = client.control(setup_packet(0x80, 6, 0x0F00, 0, 255), length=255)
    assert bos.data == device.desc.bos
    cfg = client.control(setup_packet(0x80, 6, 0x0200, 0, 255), length=255)
    assert cfg.data == device.desc.configuration
    s0 = client.control(setup_packet(0x80, 6, 0x0300, 0, 255), length=255)
    assert s0.data == b"\x04\x03\x09\x04"
    serial = client.control(setup_packet(0x80, 6, 0x0303, 0x0409, 255), length=255)
    assert serial.data[2:].decode("utf-16-le") == "0001"
    assert client.control(setup_packet(0x00, 49, 0)).status == 0  # SET_ISOCH_DELAY
    assert client.control(setup_packet(0x00, 9, 1)).status == 0  # SET_CONFIGURATION(1)
    assert device.config == 1
    got = client.control(setup_packet(0x80, 8, 0, 0, 1), length=1)
    assert got.data == b"\x01"


def test_unknown_requests_stall(client: UsbipClient) -> None:
    assert client.control(setup_packet(0x80, 6, 0x0304, 0, 255), length=255).status == -32
    assert client.control(setup_packet(0xC0, 0x42, 0, 0, 4), length=4).status == -errno.EPIPE
    assert client.control(setup_packet(0x00, 9, 7)).status == -errno.EPIPE


def test_bulk_out_reaches_the_device(client: UsbipClient, device: MemoryDevice) -> None:
    result = client.bulk_out(1, b"hello target")
    assert result == UrbResult(0, 12, b"")
    assert device.from_host == [b"hello target"]


def test_bulk_in_waits_for_data_then_completes(client: UsbipClient, device: MemoryDevice) -> None:
    seq = client.submit(1, wire.USBIP_DIR_IN, length=1024)
    time.sleep(0.05)
    assert not client.has_reply(seq)
    device.give(b"x" * 1500)
    assert client.wait_urb(seq, 5) == UrbResult(0, 1024, b"x" * 1024)
    assert client.bulk_in(1, 1024).data == b"x" * 476


def test_in_urbs_complete_in_submission_order(client: UsbipClient, device: MemoryDevice) -> None:
    seqs = [client.submit(1, wire.USBIP_DIR_IN, length=4) for _ in range(4)]
    for i in range(4):
        device.give(bytes([i]) * 4)
    assert [client.wait_urb(s, 5).data for s in seqs] == [bytes([i]) * 4 for i in range(4)]


def test_unlink_cancels_a_pending_in_urb(client: UsbipClient, device: MemoryDevice) -> None:
    first = client.submit(1, wire.USBIP_DIR_IN, length=1024)
    second = client.submit(1, wire.USBIP_DIR_IN, length=1024)
    time.sleep(0.05)
    for seq in (second, first):  # queued one, then the running one
        unlink = client.unlink(seq)
        assert client.wait(unlink, 5) == UnlinkResult(-errno.ECONNRESET)
    device.give(b"after")  # nothing was consumed by the unlinked URBs
    assert client.bulk_in(1, 1024).data == b"after"
    assert not client.has_reply(first) and not client.has_reply(second)


def test_unlink_of_a_completed_urb_reports_zero(client: UsbipClient) -> None:
    seq = client.submit(1, wire.USBIP_DIR_OUT, data=b"a")
    assert client.wait_urb(seq, 5).status == 0
    assert client.wait(client.unlink(seq), 5) == UnlinkResult(0)


def test_halt_and_clear_halt(client: UsbipClient, device: MemoryDevice) -> None:
    assert client.control(setup_packet(0x02, 3, 0, 0x81)).status == 0  # SET_FEATURE(HALT)
    status = client.control(setup_packet(0x82, 0, 0, 0x81, 2), length=2)
    assert status.data == b"\x01\x00"
    assert client.bulk_in(1, 64).status == -errno.EPIPE
    assert client.control(setup_packet(0x02, 1, 0, 0x81)).status == 0  # CLEAR_FEATURE(HALT)
    assert "clear_halt 0x81" in device.events
    device.give(b"ok")
    assert client.bulk_in(1, 64).data == b"ok"
    assert client.control(setup_packet(0x02, 1, 0, 0x85)).status == -errno.EPIPE


def test_forwarded_port_reset_reaches_the_device(client: UsbipClient, device: MemoryDevice) -> None:
    assert client.control(setup_packet(0x23, 3, 4, 1)).status == 0
    assert device.events[-1] == "port_reset"


def test_disconnect_completes_pending_in_with_eshutdown(
    client: UsbipClient, device: MemoryDevice
) -> None:
    seq = client.submit(1, wire.USBIP_DIR_IN, length=64)
    time.sleep(0.02)
    with device.cond:
        device.present = False
        device.cond.notify_all()
    assert client.wait_urb(seq, 5).status == -errno.ESHUTDOWN


def test_detach_when_the_importer_closes(server: UsbipServer, device: MemoryDevice) -> None:
    cli = UsbipClient.import_device(*server.address, busid="1-1")
    server.wait_attached(5)
    pending = cli.submit(1, wire.USBIP_DIR_IN, length=64)
    assert pending
    cli.close()
    server.wait_detached(5)
    assert device.events == ["attach", "detach"]
    with UsbipClient.import_device(*server.address, busid="1-1") as again:  # re-attach works
        assert again.control(setup_packet(0x80, 8, 0, 0, 1), length=1).status == 0


def test_garbage_closes_only_that_connection(server: UsbipServer) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"\x01\x11\x12\x34" + bytes(4))  # unknown op code
        assert sock.recv(1) == b""
    assert len(devlist(*server.address)) == 1
    assert any("unknown operation code" in e for e in server.errors)


def test_urb_header_with_bad_command_drops_the_connection(client: UsbipClient) -> None:
    client.sock.sendall(b"\x00\x00\x00\x07" + bytes(44))
    with pytest.raises(UsbipError):
        client.wait(client.submit(1, wire.USBIP_DIR_IN, length=1), 5)


class FlakyDevice(MemoryDevice):
    """attach() fails once with a foreign exception; detach() always does."""

    def __init__(self) -> None:
        super().__init__()
        self.attach_failures = 1

    def attach(self, timeout: float) -> None:
        if self.attach_failures:
            self.attach_failures -= 1
            raise RuntimeError("the cable is stuck")
        super().attach(timeout)

    def detach(self) -> None:
        super().detach()
        raise RuntimeError("detach went wrong")


def test_backend_failures_refuse_or_end_one_import_only() -> None:
    device = FlakyDevice()
    with UsbipServer(device, "127.0.0.1", 0) as server:
        with pytest.raises(UsbipImportRefused) as info:
            UsbipClient.import_device(*server.address, busid="1-1")
        assert info.value.status == wire.ST_DEV_ERR
        assert any("the cable is stuck" in e for e in server.errors)
        with UsbipClient.import_device(*server.address, busid="1-1") as cli:
            assert cli.bulk_out(1, b"x").status == 0
        server.wait_detached(5)  # a failing detach still frees the device
        with UsbipClient.import_device(*server.address, busid="1-1") as cli:
            assert cli.bulk_out(1, b"y").status == 0
    assert device.from_host == [b"x", b"y"]
    assert any("detach went wrong" in e for e in server.errors)


def test_non_ascii_bus_id_ends_that_connection(server: UsbipServer) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(wire.build_op_common(wire.OP_REQ_IMPORT) + b"\xff" * 32)
        assert sock.recv(1) == b""
    assert any("not ASCII" in e for e in server.errors)
    assert len(devlist(*server.address)) == 1


def test_descriptor_walker_rejects_a_bad_blength() -> None:
    from dbc_harness.fixtures.usbip.descriptors import endpoint_addresses, iter_descriptors

    desc = build_dbc_descriptors(IDENTITY)
    kinds = [kind for kind, _ in iter_descriptors(desc.configuration)]
    assert kinds == [2, 4, 5, 48, 5, 48]
    assert endpoint_addresses(desc.configuration) == {0x01, 0x81}
    with pytest.raises(ValueError, match="bad bLength 0"):
        list(iter_descriptors(desc.configuration[:9] + b"\x00\x04"))
    with pytest.raises(ValueError, match="bad bLength 9"):
        list(iter_descriptors(desc.configuration[:9] + b"\x09\x04\x00"))


def _raw_submit(seqnum: int, *, packets: int = 0, length: int = 4) -> bytes:
    return wire.build_header(
        wire.USBIP_CMD_SUBMIT,
        seqnum,
        0x10002,
        wire.USBIP_DIR_IN,
        1,
        transfer_flags=0,
        transfer_buffer_length=length,
        start_frame=0,
        number_of_packets=packets,
        interval=0,
        setup=bytes(8),
    )


def test_isochronous_urb_drops_the_connection(server: UsbipServer, client: UsbipClient) -> None:
    client.sock.sendall(_raw_submit(900, packets=3))
    with pytest.raises(UsbipError):
        client.wait(client.submit(1, wire.USBIP_DIR_IN, length=1), 5)
    assert any("isochronous URB (3 packets)" in e for e in server.errors)


def test_reused_pending_seqnum_drops_the_connection(
    server: UsbipServer, client: UsbipClient
) -> None:
    client.sock.sendall(_raw_submit(901) + _raw_submit(901))  # an IN URB stays pending
    with pytest.raises(UsbipError):
        client.wait(client.submit(1, wire.USBIP_DIR_IN, length=1), 5)
    assert any("seqnum 901 is already pending" in e for e in server.errors)


def test_no_iso_marker_minus_one_is_accepted(client: UsbipClient, device: MemoryDevice) -> None:
    device.give(b"abcd")
    seq = client.submit(1, wire.USBIP_DIR_IN, length=4, number_of_packets=-1)
    assert client.wait_urb(seq, 5).data == b"abcd"


@settings(max_examples=25, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["submit", "unlink", "give"]),
            st.integers(1, 64),
            st.binary(min_size=1, max_size=100),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_unlinks_interleaved_with_data_lose_and_duplicate_nothing(
    ops: list[tuple[str, int, bytes]],
) -> None:
    """Whatever the order of IN URBs, UNLINKs and target data: every URB ends exactly once
    (RET_SUBMIT, or RET_UNLINK -ECONNRESET), and the bytes the URBs got are the bytes the
    target sent, in order, up to what is still queued."""
    device = MemoryDevice()
    with (
        UsbipServer(device, "127.0.0.1", 0) as server,
        UsbipClient.import_device(*server.address) as cli,
    ):
        urbs: list[int] = []
        unlinks: dict[int, int] = {}
        given_bytes = b""
        for op, number, blob in ops:
            if op == "submit":
                urbs.append(cli.submit(1, wire.USBIP_DIR_IN, length=number))
            elif op == "unlink" and urbs:
                target = urbs[number % len(urbs)]
                if target not in unlinks:
                    unlinks[target] = cli.unlink(target)
            elif op == "give":
                device.give(blob)
                given_bytes += blob
        received = b""
        for seq in urbs:
            if seq in unlinks:
                answer = cli.wait(unlinks[seq], 5)
                assert isinstance(answer, UnlinkResult)
                if answer.status == 0:  # it had completed first: its RET_SUBMIT came before
                    received += cli.wait_urb(seq, 5).data
                else:
                    assert answer.status == -errno.ECONNRESET and not cli.has_reply(seq)
                continue
            deadline = time.monotonic() + 5
            while not cli.has_reply(seq) and time.monotonic() < deadline:
                if len(received) + sum(map(len, device.to_host)) >= len(given_bytes):
                    device.give(b"\x00" * 64)  # let a still-waiting URB finish
                    given_bytes += b"\x00" * 64
                time.sleep(0.005)
            received += cli.wait_urb(seq, 5).data
        queued = b"".join(device.to_host)
        assert received + queued == given_bytes
