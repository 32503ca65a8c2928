"""Inside the kernel-bench guest: a real Linux kernel as the debug host of the virtual DbC.

The virtual xHCI runs free with our DbC driver brought up on it; :class:`UsbipServer` exports
the DbC on 127.0.0.1; ``usbip attach`` hands it to the guest kernel's vhci_hcd, which enumerates
it, and ``usb_debug`` binds it as /dev/ttyUSBn. The tests then check sysfs (IDs and strings the
driver wrote), move bytes between the tty (the kernel's side) and the driver (the target's side),
1 MiB each way, let the kernel deconfigure/reconfigure, halt/clear-halt and reset it through
libusb, detach (a cable pull for the driver) and re-attach, and bind the EDK2 identity.

Run from the host by tests/test_kernel_bench_usbip.py (one boot for the whole module). The tests
depend on each other's order (attach first, detach last), as one session a developer would have.
"""

from __future__ import annotations

import errno
import os
import re
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import TypeVar

import pytest
from dbc_harness.drivers.dbc import DbcDriver, DbcIdentity, DbcState
from dbc_harness.fixtures.bench import VirtualBench
from dbc_harness.fixtures.usbip import UsbipServer
from dbc_harness.fixtures.usbip.kernel_side import find_usb_device, open_tty, tty_of
from dbc_harness.fixtures.virtual.usbip_device import VirtualDbcDevice

IDENTITY = DbcIdentity(
    vendor_id=0x1D6B,
    product_id=0x0010,
    bcd_device=0x0042,
    manufacturer="dbc-harness",
    product="Virtual DbC over USB/IP",
    serial="VDBC-0001",
)
BUSID = "1-1"
MODULES = ("usbip_core", "vhci_hcd", "usbserial", "usb_debug")
ENUMERATION_TIMEOUT = 30.0
MIB = 1 << 20
T = TypeVar("T")


def sh(*argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def wait_until(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def read_tty(fd: int, size: int, timeout: float) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            got += os.read(fd, min(65536, size - len(got)))
    return bytes(got)


def read_driver(driver: DbcDriver, size: int, timeout: float) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < size and time.monotonic() < deadline:
        try:
            got += driver.read(size - len(got), timeout=0.5)
        except TimeoutError:
            continue
    return bytes(got)


def payload(size: int, seed: int) -> bytes:
    return Random(seed).randbytes(size)


@dataclass
class Session:
    bench: VirtualBench
    driver: DbcDriver
    server: UsbipServer
    device: VirtualDbcDevice
    transitions: list[tuple[DbcState, DbcState]] = field(default_factory=list)
    usb_dev: Path | None = None
    tty_name: str | None = None
    fd: int | None = None

    def attach(self) -> None:
        result = sh("usbip", "attach", "-r", "127.0.0.1", "-b", BUSID)
        assert result.returncode == 0, result.stderr
        self.usb_dev = wait_until(
            lambda: find_usb_device(IDENTITY.vendor_id, IDENTITY.product_id),
            ENUMERATION_TIMEOUT,
            "the kernel to enumerate the DbC",
        )
        assert self.usb_dev is not None
        usb_dev = self.usb_dev
        self.tty_name = wait_until(lambda: tty_of(usb_dev), ENUMERATION_TIMEOUT, "usb_debug")
        self.fd = open_tty(self.tty_name)

    def detach(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        ports = re.findall(r"Port (\d+): <Port in Use>", sh("usbip", "port").stdout)
        for port in ports:
            sh("usbip", "detach", "-p", port)


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    if shutil.which("usbip") is None:
        pytest.fail("the usbip client is missing (Debian package usbip, installed by .ci/setup)")
    loaded = sh("modprobe", "-a", *MODULES)
    assert loaded.returncode == 0, loaded.stderr
    transitions: list[tuple[DbcState, DbcState]] = []
    bench = VirtualBench(free_running=True)
    try:
        driver = bench.make_driver(
            identity=IDENTITY, on_state=lambda old, new: transitions.append((old, new))
        )
        driver.start(timeout=30)
        device = VirtualDbcDevice(bench.controller)
        with UsbipServer(device, "127.0.0.1", 3240, busid=BUSID) as server:
            s = Session(bench, driver, server, device, transitions)
            s.attach()
            try:
                yield s
            finally:
                s.detach()
    finally:
        bench.close()


def test_kernel_enumerates_the_virtual_dbc(session: Session) -> None:
    dev = session.usb_dev
    assert dev is not None
    assert (dev / "idVendor").read_text().strip() == "1d6b"
    assert (dev / "idProduct").read_text().strip() == "0010"
    assert (dev / "bcdDevice").read_text().strip() == "0042"
    assert (dev / "manufacturer").read_text().strip() == IDENTITY.manufacturer
    assert (dev / "product").read_text().strip() == IDENTITY.product
    assert (dev / "serial").read_text().strip() == IDENTITY.serial
    assert (dev / "speed").read_text().strip() == "5000"
    assert (dev / "bConfigurationValue").read_text().strip() == "1"
    intf = next(dev.glob("*:1.0"))
    assert (intf / "bInterfaceClass").read_text().strip() == "dc"


def test_usb_debug_binds_a_tty(session: Session) -> None:
    dev = session.usb_dev
    assert dev is not None
    driver_link = next(dev.glob("*:1.0")) / "driver"
    assert driver_link.resolve().name == "usb_debug"
    assert session.tty_name is not None and session.tty_name.startswith("ttyUSB")
    assert Path("/dev", session.tty_name).is_char_device()


def test_tty_to_driver(session: Session) -> None:
    assert session.fd is not None
    message = b"kernel -> target over USB/IP\n"
    os.write(session.fd, message)
    assert read_driver(session.driver, len(message), 20) == message


def test_driver_to_tty(session: Session) -> None:
    assert session.fd is not None
    message = b"target -> kernel over USB/IP\n"
    session.driver.write(message)
    assert read_tty(session.fd, len(message), 20) == message


def test_one_mib_each_way(session: Session) -> None:
    """1 MiB tty -> driver and 1 MiB driver -> tty at the same time (full duplex: the kernel
    keeps its bulk OUT and bulk IN URBs in flight together, as a real debug session does)."""
    assert session.fd is not None
    fd = session.fd
    to_target = payload(MIB, 1)
    to_host = payload(MIB, 2)
    errors: list[BaseException] = []

    def tty_writer() -> None:
        try:
            view = memoryview(to_target)
            while view:
                view = view[os.write(fd, view[:65536]) :]
        except BaseException as exc:  # reported by the assertions below
            errors.append(exc)

    def driver_writer() -> None:
        try:
            for offset in range(0, MIB, 65536):
                session.driver.write(to_host[offset : offset + 65536], timeout=120)
        except BaseException as exc:  # reported by the assertions below
            errors.append(exc)

    from_tty: list[bytes] = []
    tty_reader = threading.Thread(
        target=lambda: from_tty.append(read_tty(fd, MIB, 240)), daemon=True
    )
    threads = [threading.Thread(target=f, daemon=True) for f in (tty_writer, driver_writer)]
    started = time.monotonic()
    for thread in [*threads, tty_reader]:
        thread.start()
    got_target = read_driver(session.driver, MIB, 240)
    for thread in [*threads, tty_reader]:
        thread.join(60)
    elapsed = time.monotonic() - started
    print(f"full duplex, 1 MiB each way in {elapsed:.1f} s")
    assert not errors
    assert len(got_target) == MIB, "tty -> driver: short"
    assert got_target == to_target, "tty -> driver: bytes differ"
    assert from_tty and len(from_tty[0]) == MIB, "driver -> tty: short"
    assert from_tty[0] == to_host, "driver -> tty: bytes differ"


def test_kernel_deconfigures_and_reconfigures(session: Session) -> None:
    """bConfigurationValue 0 then 1 in sysfs: the kernel sends SET_CONFIGURATION(0)/(1) over
    USB/IP; the driver sees DCR drop and come back, usb_debug unbinds and binds again."""
    driver = session.driver
    dev = session.usb_dev
    assert dev is not None and session.fd is not None
    os.close(session.fd)
    session.fd = None
    (dev / "bConfigurationValue").write_text("0")

    def deconfigured() -> bool:
        driver.poll()
        return driver.state is not DbcState.CONFIGURED

    wait_until(deconfigured, 20, "the driver to see DCR drop")
    assert driver.state is DbcState.CONNECTED
    (dev / "bConfigurationValue").write_text("1")

    def configured() -> bool:
        driver.poll()
        return driver.state is DbcState.CONFIGURED

    wait_until(configured, 20, "the driver to be configured again")
    session.tty_name = wait_until(lambda: tty_of(dev), 20, "usb_debug to bind again")
    session.fd = open_tty(session.tty_name)
    os.write(session.fd, b"reconfigured")
    assert read_driver(driver, 12, 20) == b"reconfigured"
    driver.write(b"yes")
    assert read_tty(session.fd, 3, 20) == b"yes"


def test_pyusb_through_the_kernel_halt_clear_halt_and_reset(session: Session) -> None:
    """usb_debug unbound, libusb (pyusb) on the kernel's usbfs drives the DbC: the kernel's
    SET_FEATURE / CLEAR_FEATURE(ENDPOINT_HALT) reach the target over USB/IP (DCCTRL.HOT), a
    halted endpoint answers STALL (EPIPE), and USBDEVFS_RESET re-enumerates it."""
    import usb.core
    import usb.util

    dev_dir = session.usb_dev
    assert dev_dir is not None
    if session.fd is not None:
        os.close(session.fd)
        session.fd = None
    interface = f"{dev_dir.name}:1.0"
    Path("/sys/bus/usb/drivers/usb_debug/unbind").write_text(interface)
    driver = session.driver
    try:
        dev = usb.core.find(idVendor=IDENTITY.vendor_id, idProduct=IDENTITY.product_id)
        assert dev is not None, "libusb does not see the device"
        assert usb.util.get_string(dev, dev.iSerialNumber) == IDENTITY.serial
        usb.util.claim_interface(dev, 0)

        dev.ctrl_transfer(0x02, 3, 0, 0x81)  # SET_FEATURE(ENDPOINT_HALT) on the IN endpoint
        driver.poll()  # the driver sees DCCTRL.HOT and holds its OUT ring
        driver.write(b"held while halted")
        with pytest.raises(usb.core.USBError) as stalled:
            dev.read(0x81, 1024, timeout=2000)
        assert stalled.value.errno == errno.EPIPE
        dev.clear_halt(0x81)  # CLEAR_FEATURE(ENDPOINT_HALT)

        def read_some() -> bytes | None:
            driver.poll()
            try:
                return bytes(dev.read(0x81, 1024, timeout=200))
            except usb.core.USBTimeoutError:
                return None

        assert wait_until(read_some, 20, "data after CLEAR_FEATURE") == b"held while halted"

        dev.reset()  # USBDEVFS_RESET: the kernel resets the port and re-enumerates
        dev = wait_until(
            lambda: usb.core.find(idVendor=IDENTITY.vendor_id, idProduct=IDENTITY.product_id),
            20,
            "the device after reset",
        )
        usb.util.claim_interface(dev, 0)
        assert dev.write(0x01, b"after reset", timeout=5000) == 11
        assert read_driver(driver, 11, 20) == b"after reset"
        usb.util.release_interface(dev, 0)
        usb.util.dispose_resources(dev)
    finally:
        Path("/sys/bus/usb/drivers/usb_debug/bind").write_text(interface)
    session.tty_name = wait_until(lambda: tty_of(dev_dir), 20, "usb_debug to bind again")
    session.fd = open_tty(session.tty_name)


def test_detach_is_a_disconnect_and_reattach_recovers(session: Session) -> None:
    driver = session.driver
    assert driver.state is DbcState.CONFIGURED
    before = len(session.transitions)
    session.detach()
    session.server.wait_detached(20)

    def disconnected() -> bool:
        driver.poll()
        return driver.state is not DbcState.CONFIGURED

    wait_until(disconnected, 20, "the driver to see the disconnect")
    assert (DbcState.CONFIGURED, driver.state) in session.transitions[before:]
    assert driver.counters.recoveries["disconnect"] >= 1
    assert find_usb_device(IDENTITY.vendor_id, IDENTITY.product_id) is None

    session.attach()  # the cable goes back in: same driver, no restart by the caller

    def configured() -> bool:
        driver.poll()
        return driver.state is DbcState.CONFIGURED

    wait_until(configured, 20, "the driver to reconfigure")
    assert session.transitions[-1][1] is DbcState.CONFIGURED
    assert session.fd is not None
    os.write(session.fd, b"again")
    assert read_driver(driver, 5, 20) == b"again"
    driver.write(b"back")
    assert read_tty(session.fd, 4, 20) == b"back"


def test_edk2_identity_binds_the_debug_converter() -> None:
    """0525:127a (EDK2's DbC identity) binds usb_debug's "debug" converter, whose tty writes go
    out in 8-byte bulk OUT URBs: bytes still arrive intact and in order at the driver."""
    identity = DbcIdentity(
        vendor_id=0x0525, product_id=0x127A, product="EDK2 debug target", serial="EDK2-1"
    )
    port = "3241"
    with VirtualBench(free_running=True) as bench:
        driver = bench.make_driver(identity=identity)
        driver.start(timeout=30)
        with UsbipServer(VirtualDbcDevice(bench.controller), "127.0.0.1", int(port)):
            attached = sh("usbip", "--tcp-port", port, "attach", "-r", "127.0.0.1", "-b", BUSID)
            assert attached.returncode == 0, attached.stderr
            fd = None
            try:
                dev = wait_until(
                    lambda: find_usb_device(0x0525, 0x127A), ENUMERATION_TIMEOUT, "enumeration"
                )
                name = wait_until(lambda: tty_of(dev), ENUMERATION_TIMEOUT, "usb_debug")
                converter = Path(f"/sys/bus/usb-serial/devices/{name}/driver").resolve().name
                assert converter == "debug"
                assert (dev / "serial").read_text().strip() == "EDK2-1"
                fd = open_tty(name)
                message = payload(1000, 3)
                os.write(fd, message)
                assert read_driver(driver, len(message), 60) == message
                driver.write(message[::-1])
                assert read_tty(fd, len(message), 60) == message[::-1]
            finally:
                if fd is not None:
                    os.close(fd)
                listing = sh("usbip", "port").stdout
                for block in listing.split("Port ")[1:]:
                    if f":{port}/" in block:
                        sh("usbip", "detach", "-p", block.split(":", 1)[0])
