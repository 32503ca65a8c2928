"""``dbc-harness bench usbip``: what the USB/IP export costs on top of the virtual debug host.

Free-running virtual xHCI with our DbC driver on the target side. Each direction is measured
twice in the same run: through the virtual host directly (the baseline: ``host.submit``/
``host.wait`` with the same transfers in flight, ``host.recv``) and through USB/IP (our
client -> loopback TCP -> :class:`UsbipServer` -> :class:`VirtualDbcDevice` -> the same virtual
host), with several URBs in flight as vhci_hcd keeps them. Keys:

* ``direct_host_to_target_MBps`` / ``direct_target_to_host_MBps``: the baseline;
* ``host_to_target_MBps`` / ``target_to_host_MBps``: through USB/IP with ``urb_bytes``
  (256 KiB) URBs, ``in_flight`` (4) of them queued, as a libusb program streaming a debug port
  submits them;
* ``ratio_host_to_target`` / ``ratio_target_to_host``: USB/IP over baseline (1.0 = free);
* ``urbs_per_s_1k``: 1 KiB bulk OUT URBs per second, two in flight (what usb_debug's tty
  writes look like);
* ``bytes``: bytes moved each way per measurement; each measurement is repeated
  (``repeats``) and the best reported (the machine is shared).

The target's driver uses ``dbc-harness run``'s settings (64 KiB receive buffers); its writes
are as large as the URBs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from dbc_harness.fixtures.bench import VirtualBench
from dbc_harness.fixtures.usbip import wire
from dbc_harness.fixtures.usbip.client import UsbipClient
from dbc_harness.fixtures.usbip.server import UsbipServer
from dbc_harness.fixtures.virtual.usbip_device import VirtualDbcDevice

URB_SIZE = 256 << 10
#: the driver as a user after throughput sets it up (``dbc-harness run``'s defaults): 64 KiB
#: receive buffers, 64 posted, 1024-TRB rings
DRIVER_OPTIONS = {"in_buffer_size": 64 << 10, "in_buffers": 64, "ring_trbs": 1024}
IN_FLIGHT = 4
DEADLINE = 120.0


def _drain_driver(driver: Any, size: int, out: list[int]) -> None:
    got = 0
    deadline = time.monotonic() + DEADLINE
    while got < size and time.monotonic() < deadline:
        try:
            got += len(driver.read(size - got, timeout=0.5))
        except TimeoutError:
            continue
    out.append(got)


def _feed_driver(driver: Any, data: bytes) -> None:
    for offset in range(0, len(data), URB_SIZE):
        driver.write(data[offset : offset + URB_SIZE], timeout=DEADLINE)
    # the last messages may still wait for ring room: the polled driver queues them only while
    # it is called
    driver.flush(timeout=DEADLINE)


def _mbps(size: int, seconds: float) -> float:
    return round(size / seconds / 1e6, 2) if seconds > 0 else 0.0


def _host_to_target(driver: Any, send: Any, data: bytes) -> float:
    got: list[int] = []
    reader = threading.Thread(target=_drain_driver, args=(driver, len(data), got), daemon=True)
    started = time.monotonic()
    reader.start()
    send(data)
    reader.join(DEADLINE)
    elapsed = time.monotonic() - started
    if got != [len(data)]:
        raise RuntimeError(f"host -> target moved {got} of {len(data)} bytes")
    return elapsed


def _target_to_host(driver: Any, receive: Any, data: bytes) -> float:
    writer = threading.Thread(target=_feed_driver, args=(driver, data), daemon=True)
    started = time.monotonic()
    writer.start()
    got = receive(len(data))
    writer.join(DEADLINE)
    elapsed = time.monotonic() - started
    if got != len(data):
        raise RuntimeError(f"target -> host moved {got} of {len(data)} bytes")
    return elapsed


def _urb_send(client: UsbipClient, data: bytes, urb_size: int, in_flight: int) -> None:
    pending: deque[int] = deque()
    for offset in range(0, len(data), urb_size):
        if len(pending) >= in_flight:
            client.wait_urb(pending.popleft(), DEADLINE)
        pending.append(client.submit(1, wire.USBIP_DIR_OUT, data=data[offset : offset + urb_size]))
    while pending:
        client.wait_urb(pending.popleft(), DEADLINE)


def _urb_receive(client: UsbipClient, size: int, leftover: list[int]) -> int:
    """IN URBs until ``size`` bytes came; the URBs still queued are then unlinked and their
    answers awaited (after the clock stops, by :func:`_settle`), so none of them takes the
    next measurement's data."""
    pending = deque(client.submit(1, wire.USBIP_DIR_IN, length=URB_SIZE) for _ in range(IN_FLIGHT))
    got = 0
    while got < size:
        got += client.wait_urb(pending.popleft(), DEADLINE).actual_length
        if got < size:
            pending.append(client.submit(1, wire.USBIP_DIR_IN, length=URB_SIZE))
    leftover.extend(pending)
    return got


def _settle(client: UsbipClient, leftover: list[int]) -> int:
    """Unlink the IN URBs a measurement left queued; returns the bytes any of them still
    carried (the caller checks there were none)."""
    extra = 0
    for seqnum in leftover:
        client.wait(client.unlink(seqnum), DEADLINE)
        if client.has_reply(seqnum):  # it completed before the unlink reached it
            extra += client.wait_urb(seqnum, DEADLINE).actual_length
    leftover.clear()
    return extra


def _direct_send(host: Any, data: bytes) -> None:
    """The same pattern as the URBs: 64 KiB transfers, IN_FLIGHT of them queued at once."""
    pending: deque[Any] = deque()
    for offset in range(0, len(data), URB_SIZE):
        if len(pending) >= IN_FLIGHT:
            host.wait(pending.popleft(), DEADLINE)
        pending.append(host.submit(data[offset : offset + URB_SIZE]))
    while pending:
        host.wait(pending.popleft(), DEADLINE)


def _direct_receive(host: Any, size: int) -> int:
    got = 0
    while got < size:
        got += len(host.recv(URB_SIZE, 5.0))
    return got


def run(quick: bool = False) -> dict[str, Any]:
    size = (1 if quick else 32) << 20
    small = (256 if quick else 1024) << 10
    repeats = 1 if quick else 3
    data = bytes(range(256)) * (size // 256)
    result: dict[str, Any] = {"bytes": size}

    def best(measure: Any) -> float:
        return min(measure() for _ in range(repeats))

    with VirtualBench(free_running=True) as bench:
        driver = bench.make_driver(**DRIVER_OPTIONS)
        driver.start(timeout=10)
        host = bench.controller.host
        direct_out = best(lambda: _host_to_target(driver, lambda d: _direct_send(host, d), data))
        direct_in = best(lambda: _target_to_host(driver, lambda n: _direct_receive(host, n), data))
        with (
            UsbipServer(VirtualDbcDevice(bench.controller), "127.0.0.1", 0) as server,
            UsbipClient.import_device(*server.address) as client,
        ):
            leftover: list[int] = []
            usbip_out = best(
                lambda: _host_to_target(
                    driver, lambda d: _urb_send(client, d, URB_SIZE, IN_FLIGHT), data
                )
            )

            def usbip_in_once() -> float:
                elapsed = _target_to_host(driver, lambda n: _urb_receive(client, n, leftover), data)
                if _settle(client, leftover):
                    raise RuntimeError("an IN URB unlinked after the measurement carried data")
                return elapsed

            usbip_in = best(usbip_in_once)
            small_data = data[:small]
            small_out = _host_to_target(driver, lambda d: _urb_send(client, d, 1024, 2), small_data)
    result.update(
        direct_host_to_target_MBps=_mbps(size, direct_out),
        direct_target_to_host_MBps=_mbps(size, direct_in),
        host_to_target_MBps=_mbps(size, usbip_out),
        target_to_host_MBps=_mbps(size, usbip_in),
        ratio_host_to_target=round(direct_out / usbip_out, 3),
        ratio_target_to_host=round(direct_in / usbip_in, 3),
        urbs_per_s_1k=round(small / 1024 / small_out, 1),
        urb_bytes=URB_SIZE,
        in_flight=IN_FLIGHT,
        repeats=repeats,
    )
    return result
