"""The reference C DbC driver (drivers/native/reference/dbc.c) on the virtual bench, run under
CPU emulation through :class:`NativeDbcDriver`: what only the C driver has.

Its echo, fault and recovery scenarios are the Python driver's, run against both driver kinds
(``make_driver``, tests/driver_kinds.py) in tests/test_dbc_virtual.py and
tests/test_dbc_faults.py; a known defect of the C driver would be a strict xfail there
(tests/driver_kinds.py ``KnownBug``; none is known now). Its build, mistakes, PCI scan and
fault locations have files of their own (tests/test_native_*.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dbc_harness.drivers.dbc import DbcState, DbcTimeout
from dbc_harness.drivers.native.driver import NativeDbcDriver
from dbc_harness.fixtures.virtual import VirtualXhci

from tests.driver_kinds import reference_object, roundtrip, strict_controller

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def x() -> Iterator[VirtualXhci]:
    with strict_controller() as ctl:
        yield ctl


def test_default_identity_log_and_counters(x: VirtualXhci) -> None:
    """Built without -D switches the reference driver says who it is (dbc.c's defaults), logs
    where its capability walk found the DbC, and exports its counters (struct dbc_stats)."""
    with NativeDbcDriver(x.mmio, x.dma, obj=reference_object(), clock=x.clock) as drv:
        drv.start(timeout=5.0)
        assert drv.state is DbcState.CONFIGURED
        dev = x.host.device
        assert dev is not None
        assert (dev.id_vendor, dev.id_product, dev.protocol) == (0x1D6B, 0x0010, 0)
        assert (dev.manufacturer, dev.product, dev.serial) == (
            "dbc-harness",
            "reference C DbC driver",
            "0001",
        )
        assert dev.langids == (0x0409,)
        assert "dbc: Debug Capability at BAR0+0x8700" in drv.log
        roundtrip(x, drv, b"counted")
        c = drv.counters
        assert (c.bytes_to_host, c.bytes_from_host, c.messages_to_host) == (7, 7, 1)
        assert c.doorbells >= 2 and c.events >= 2 and c.erdp_writes >= 1
        assert drv.stop() == ()
    assert drv.state is DbcState.DISABLED
    assert x.dma.stats()["live_bytes"] == 0


def test_read_into_fills_the_callers_buffer_in_order(x: VirtualXhci) -> None:
    """``read_into`` (the API bench dbc/native reads with): the host's transfers land in the
    caller's reused buffer, in order, over several calls; DbcTimeout once nothing is left;
    an empty buffer asks for nothing."""
    with NativeDbcDriver(x.mmio, x.dma, obj=reference_object(), clock=x.clock) as drv:
        drv.start(timeout=5.0)
        sent = [bytes((i * 7 + s) & 0xFF for i in range(n)) for s, n in ((1, 100), (2, 9000))]
        for data in sent:
            x.host.submit(data, zlp=True)
        want = b"".join(sent)
        buf = bytearray(4000)
        got = bytearray()
        while len(got) < len(want):
            n = drv.read_into(buf, timeout=5.0)
            assert 0 < n <= len(buf)
            got += buf[:n]
        assert bytes(got) == want
        with pytest.raises(DbcTimeout):
            drv.read_into(buf, timeout=0.01)
        assert drv.read_into(bytearray(), timeout=0.01) == 0
        assert drv.stop() == ()
