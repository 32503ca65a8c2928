"""``DbcDriver.read_into``: the host's bytes land in the caller's reused buffer, in order, exactly
as ``read`` would return them (deterministic virtual bench, strict: any spec finding fails)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dbc_harness.drivers.dbc import DbcDriver, DbcTimeout
from dbc_harness.fixtures.virtual import VirtualXhci

from tests.driver_kinds import strict_controller


@pytest.fixture
def x() -> Iterator[VirtualXhci]:
    with strict_controller() as ctl:
        yield ctl


def _pattern(size: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(size))


@pytest.mark.parametrize("buffer_size", [1024, 64 * 1024])
def test_read_into_gets_every_byte_in_order(x: VirtualXhci, buffer_size: int) -> None:
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, in_buffer_size=buffer_size)
    drv.start(timeout=5.0)
    # a short transfer, a zero-length transfer, one ending at a packet multiple with its ZLP,
    # one larger than a receive buffer and than the reader's buffer
    sent = [_pattern(100, 1), b"", _pattern(2048, 2), _pattern(70_000, 3)]
    for data in sent:  # queued at once; they land while the driver reads
        x.host.submit(data, zlp=True)
    want = b"".join(sent)
    buf = bytearray(5000)  # smaller than the last transfer: it takes several calls
    got = bytearray()
    while len(got) < len(want):
        n = drv.read_into(buf, timeout=5.0)
        assert 0 < n <= len(buf)
        got += buf[:n]
    assert bytes(got) == want
    assert drv.pending_read_bytes == 0
    with pytest.raises(DbcTimeout):
        drv.read_into(buf, timeout=0.01)
    assert drv.read_into(bytearray(), timeout=0.01) == 0  # nothing asked, nothing waited for
    assert drv.stop() == ()


def test_read_into_and_read_share_one_stream(x: VirtualXhci) -> None:
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, in_buffer_size=64 * 1024)
    drv.start(timeout=5.0)
    data = _pattern(10_000, 9)
    x.host.send(data, timeout=5.0)
    view = memoryview(bytearray(3000))
    assert drv.read_into(view[:1000], timeout=5.0) == 1000
    first = bytes(view[:1000])
    rest = drv.read(20_000, timeout=5.0)
    assert first + rest == data
    assert drv.stop() == ()
