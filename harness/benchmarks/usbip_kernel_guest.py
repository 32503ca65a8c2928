"""Guest side of ``dbc-harness bench usbip-kernel`` (run inside the kernel bench's QEMU guest as
``python -m dbc_harness.harness.benchmarks.usbip_kernel_guest BYTES``).

The virtual xHCI with our DbC driver, exported by :class:`UsbipServer` on loopback, attached
with ``usbip attach``: the guest kernel's vhci_hcd enumerates it and ``usb_debug`` binds it as
/dev/ttyUSBn, the console a user watches. Measures the tty's throughput each way, one
direction at a time, ``BYTES`` each:

* ``tty_host_to_target_MBps``: ``write()`` to the raw tty, the driver ``read_into()``s;
* ``tty_target_to_host_MBps``: the driver ``write()``s 64 KiB messages, the tty is read.

Prints one JSON object on stdout. Directions are named from the target, as everywhere.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from dbc_harness.drivers.dbc import DbcDriver, DbcTimeout
from dbc_harness.fixtures.bench import VirtualBench
from dbc_harness.fixtures.usbip import UsbipServer
from dbc_harness.fixtures.usbip.kernel_side import find_usb_device, open_tty, tty_of
from dbc_harness.fixtures.virtual.usbip_device import VirtualDbcDevice

#: the kernel modules the guest needs (the host side loads them into the guest's initramfs)
MODULES = ("usbip_core", "vhci_hcd", "usbserial", "usb_debug")
BUSID = "1-1"
PORT = 3240
VENDOR_ID, PRODUCT_ID = 0x1D6B, 0x0010
DEADLINE = 600.0
#: the target's driver as ``bench usbip`` and ``dbc-harness run`` set it up
DRIVER_OPTIONS = {"in_buffer_size": 64 << 10, "in_buffers": 64, "ring_trbs": 1024}
CHUNK = 64 << 10
T = TypeVar("T")


class GuestSetupError(RuntimeError):
    """The guest could not attach the exported DbC (names the step)."""


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _wait(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise GuestSetupError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _host_to_target(fd: int, driver: DbcDriver, size: int) -> float:
    data = bytes(range(256)) * (CHUNK // 256)
    got = [0]

    def drain() -> None:
        into = bytearray(1 << 20)
        end = time.monotonic() + DEADLINE
        while got[0] < size and time.monotonic() < end:
            try:
                got[0] += driver.read_into(into, timeout=0.5)
            except DbcTimeout:
                continue

    reader = threading.Thread(target=drain, daemon=True)
    started = time.monotonic()
    reader.start()
    sent = 0
    while sent < size:
        sent += os.write(fd, data[: min(CHUNK, size - sent)])
    reader.join(DEADLINE)
    elapsed = time.monotonic() - started
    if got[0] != size:
        raise RuntimeError(f"tty -> driver moved {got[0]} of {size} bytes")
    return elapsed


def _target_to_host(fd: int, driver: DbcDriver, size: int) -> float:
    data = bytes(range(256)) * (CHUNK // 256)

    def feed() -> None:
        sent = 0
        while sent < size:
            n = min(CHUNK, size - sent)
            driver.write(data[:n], timeout=DEADLINE)
            sent += n
        driver.flush(timeout=DEADLINE)

    writer = threading.Thread(target=feed, daemon=True)
    started = time.monotonic()
    writer.start()
    got = 0
    end = started + DEADLINE
    while got < size and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            got += len(os.read(fd, 1 << 16))
    elapsed = time.monotonic() - started
    writer.join(DEADLINE)
    if got != size:
        raise RuntimeError(f"driver -> tty moved {got} of {size} bytes")
    return elapsed


def measure(size: int) -> dict[str, float | int]:
    loaded = _sh("modprobe", "-a", *MODULES)
    if loaded.returncode:
        raise GuestSetupError(f"modprobe {' '.join(MODULES)}: {loaded.stderr.strip()}")
    with VirtualBench(free_running=True) as bench:
        driver = bench.make_driver(**DRIVER_OPTIONS)
        driver.start(timeout=30)
        with UsbipServer(VirtualDbcDevice(bench.controller), "127.0.0.1", PORT, busid=BUSID):
            attached = _sh("usbip", "attach", "-r", "127.0.0.1", "-b", BUSID)
            if attached.returncode:
                raise GuestSetupError(f"usbip attach: {attached.stderr.strip()}")
            fd = -1
            try:
                usb_dev = _wait(
                    lambda: find_usb_device(VENDOR_ID, PRODUCT_ID),
                    30,
                    "the kernel to enumerate the DbC",
                )
                fd = open_tty(_wait(lambda: tty_of(usb_dev), 30, "usb_debug's tty"))
                h2t = _host_to_target(fd, driver, size)
                t2h = _target_to_host(fd, driver, size)
            finally:
                if fd >= 0:
                    os.close(fd)
                for port in re.findall(r"Port (\d+): <Port in Use>", _sh("usbip", "port").stdout):
                    _sh("usbip", "detach", "-p", port)
    return {
        "tty_bytes": size,
        "tty_host_to_target_MBps": round(size / h2t / 1e6, 3),
        "tty_target_to_host_MBps": round(size / t2h / 1e6, 3),
    }


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 20
    print(json.dumps(measure(size)))


if __name__ == "__main__":
    main()
