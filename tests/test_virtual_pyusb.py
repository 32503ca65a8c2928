"""Unmodified pyusb host code against the virtual DbC (fixtures.virtual.pyusb_backend)."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest
import usb.core
import usb.util
from dbc_harness.fixtures.virtual import DbcPortState, VirtualXhci
from dbc_harness.fixtures.virtual.pyusb_backend import get_backend

from tests.virtual_helpers import MinimalDbcProducer


@pytest.fixture
def xb() -> Iterator[tuple[VirtualXhci, MinimalDbcProducer]]:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x, protocol=1)
        b.bring_up()
        b.events()
        yield x, b


def test_find_and_descriptors(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, _ = xb
    be = get_backend(x)
    dev = usb.core.find(idVendor=0x1D6B, backend=be)
    assert dev is not None
    assert (dev.idVendor, dev.idProduct, dev.bcdDevice, dev.bcdUSB) == (0x1D6B, 0x10, 0x10, 0x300)
    assert dev.speed == usb.util.SPEED_SUPER
    cfg = dev[0]
    intf = cfg[(0, 0)]
    assert (intf.bInterfaceClass, intf.bInterfaceProtocol) == (0xDC, 1)
    eps = {ep.bEndpointAddress: ep for ep in intf}
    assert set(eps) == {0x01, 0x81}
    assert all(ep.wMaxPacketSize == 1024 for ep in eps.values())
    assert all(usb.util.endpoint_type(ep.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
               for ep in eps.values())  # fmt: skip
    assert eps[0x81].extra_descriptors[2] == 15  # bMaxBurst from DCCTRL Debug Max Burst
    assert dev.manufacturer == "Linux Foundation"
    assert usb.util.get_string(dev, dev.iProduct) == "Linux USB Debug Target"
    assert dev.serial_number == "0001"
    assert usb.core.find(idVendor=0x0525, backend=be) is None


def test_bulk_write_and_read(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, b = xb
    dev = usb.core.find(idVendor=0x1D6B, backend=get_backend(x))
    dev.set_configuration()
    b.post_in(1024)
    b.ring_doorbell(1)
    assert dev.write(0x01, b"ping", timeout=100) == 4
    assert b.in_data(4) == b"ping"
    b.queue_out(b"pong")
    b.ring_doorbell(0)
    assert bytes(dev.read(0x81, 4096, timeout=100)) == b"pong"
    with pytest.raises(usb.core.USBTimeoutError):
        dev.read(0x81, 4096, timeout=50)


def test_halt_clear_and_reset(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, b = xb
    dev = usb.core.find(idVendor=0x1D6B, backend=get_backend(x))
    dev.ctrl_transfer(0x02, usb.REQ_SET_FEATURE, 0, 0x81)  # SET_FEATURE(ENDPOINT_HALT)
    assert b.dcctrl()["HOT"] == 1
    with pytest.raises(usb.core.USBError) as info:
        dev.read(0x81, 64, timeout=50)
    assert info.value.errno == errno.EPIPE
    dev.clear_halt(0x81)
    assert b.dcctrl()["HOT"] == 0
    b.ack()
    dev.reset()
    assert x.state is DbcPortState.CONFIGURED
    assert b.portsc()["PRC"] == 1


def test_device_disappears_on_unplug(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, _ = xb
    be = get_backend(x)
    dev = usb.core.find(idVendor=0x1D6B, backend=be)
    x.host.unplug()
    assert usb.core.find(idVendor=0x1D6B, backend=be) is None
    with pytest.raises(usb.core.USBError) as info:
        dev.read(0x81, 64, timeout=50)
    assert info.value.errno == errno.ENODEV
