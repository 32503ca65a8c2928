"""Fewer events for the same bytes, nothing lost: the Python driver's completion moderation on the
OUT ring (IOC on the last TRB of a TD and every ``ioc_every``-th) and receive buffers larger than
64 KiB on the IN ring (one TD of chained TRBs, ISP on each, IOC on the last).

Deterministic virtual bench in strict mode: any spec finding fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dbc_harness.drivers.dbc import DbcDisconnected, DbcDriver, DbcState, DbcTimeout
from dbc_harness.drivers.dbc.datapath import TRB_MAX_BYTES, TRUST_AFTER
from dbc_harness.drivers.dbc.errors import DbcConfigError
from dbc_harness.fixtures.virtual import (
    DebugHostTimeout,
    HostStall,
    HostTransferError,
    Quirks,
    VirtualXhci,
)
from dbc_harness.fixtures.virtual.faults import hcrst
from dbc_harness.fixtures.virtual.quirks import EventPointerMode, FaultCompletion, TransferFault
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.driver_kinds import host_read, roundtrip, settle, strict_controller

KiB = 1024
MiB = 1 << 20


@pytest.fixture
def x() -> Iterator[VirtualXhci]:
    with strict_controller() as ctl:
        yield ctl


def _pattern(size: int, seed: int) -> bytes:
    return bytes((i * 13 + seed) & 0xFF for i in range(256)) * (size // 256) + bytes(
        (i * 13 + seed) & 0xFF for i in range(size % 256)
    )


def _earn_trust(x: VirtualXhci, drv: DbcDriver) -> None:
    """Both pipes moderate or chain only after TRUST_AFTER events with exact TRB pointers."""
    for i in range(TRUST_AFTER):
        roundtrip(x, drv, b"trust %d" % i)
    assert drv._out is not None and drv._out.pointers.trusted
    assert drv._in is not None and drv._in.pointers.trusted


# -- OUT ring: completion moderation ----------------------------------------------------------


def test_a_long_message_costs_one_event_per_ioc_interval(x: VirtualXhci) -> None:
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, ring_trbs=256)
    drv.start(timeout=5.0)
    out = drv._out
    assert out is not None and out.ioc_every == 16
    _earn_trust(x, drv)
    events0 = drv.counters.events
    trbs0 = drv.counters.trbs_to_host
    bytes0 = drv.counters.bytes_to_host
    msgs0 = drv.counters.messages_to_host
    data = _pattern(3 * MiB + 5, 1)
    drv.write(data)
    assert host_read(x, drv, len(data)) == data
    drv.flush(timeout=5.0)
    trbs = -(-len(data) // TRB_MAX_BYTES)  # 49 TRBs of one TD
    assert drv.counters.trbs_to_host - trbs0 == trbs
    assert drv.counters.bytes_to_host - bytes0 == len(data)
    assert drv.counters.messages_to_host - msgs0 == 1
    # IOC on every 16th TRB and the last: 4 events instead of 49
    assert drv.counters.events - events0 == 4
    roundtrip(x, drv, b"after a long message")
    assert drv.stop() == ()


def test_a_small_in_flight_budget_still_completes(x: VirtualXhci) -> None:
    """With room for only two TRBs in flight every TRB carries IOC: moderation must never
    leave the in-flight TRBs without one (no event would ever make room again)."""
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, max_bytes_in_flight=2 * TRB_MAX_BYTES)
    drv.start(timeout=5.0)
    assert drv._out is not None and drv._out.ioc_every == 1
    data = _pattern(MiB, 2)
    drv.write(data, timeout=5.0)
    assert host_read(x, drv, len(data)) == data
    drv.flush(timeout=5.0)
    assert drv.stop() == ()


@pytest.mark.parametrize("budget", [3 * TRB_MAX_BYTES, 5 * TRB_MAX_BYTES, 4 * MiB])
def test_moderated_writes_never_stall_on_the_budget(x: VirtualXhci, budget: int) -> None:
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, max_bytes_in_flight=budget, ring_trbs=64)
    drv.start(timeout=5.0)
    _earn_trust(x, drv)
    msgs0 = drv.counters.messages_to_host
    msgs = [_pattern(n, i) for i, n in enumerate((700_000, 1, 65_536, 2 * MiB + 3, 10))]
    for m in msgs:
        drv.write(m, timeout=5.0)
        assert host_read(x, drv, len(m)) == m
    drv.flush(timeout=5.0)
    assert drv.counters.messages_to_host - msgs0 == len(msgs)
    assert drv.stop() == ()


def test_unplug_inside_a_moderated_run_reports_an_honest_range() -> None:
    """The cable goes while the host reads the middle of a 1 MiB message whose TRBs carry no
    IOC: the driver cannot know how many of them the host took, so the report's range must
    hold what really arrived, and ``exact`` must not claim otherwise."""
    cut = 300_000
    with strict_controller(quirks=Quirks(unplug_after_out_bytes=cut)) as x:
        drv = DbcDriver(x.mmio, x.dma, clock=x.clock)
        drv.start(timeout=5.0)
        _earn_trust(x, drv)
        data = _pattern(MiB, 3)
        mid = drv.write(data)
        got = b""
        with pytest.raises(DbcDisconnected) as info:
            end = x.clock.monotonic() + 5.0
            while x.clock.monotonic() < end:
                drv.poll()
                try:
                    got += x.host.recv(MiB, timeout=0.001)
                except DebugHostTimeout:
                    pass
                except Exception:
                    break  # the cable went: the host's read fails
            drv.flush(timeout=2.0)
        assert mid in info.value.message_ids
        assert got == data[: len(got)] and len(got) <= cut
        (report,) = [u for u in info.value.undelivered if u.message_id == mid]
        assert report.delivered <= len(got) <= report.delivered_max
        settle(drv, DbcState.ENABLED)
        x.host.plug()
        settle(drv)
        roundtrip(x, drv, b"replugged")
        drv.stop()


# -- IN ring: receive buffers of several TRBs ---------------------------------------------------


def test_buffer_sizes_above_64k_are_checked() -> None:
    with VirtualXhci() as x:
        with pytest.raises(DbcConfigError, match="in_buffer_size"):
            DbcDriver(x.mmio, x.dma, in_buffer_size=MiB + KiB)
        with pytest.raises(DbcConfigError, match="TRBs"):
            DbcDriver(x.mmio, x.dma, in_buffer_size=MiB, ring_trbs=16)


def test_a_filled_td_costs_one_event(x: VirtualXhci) -> None:
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, in_buffer_size=MiB, in_buffers=2)
    drv.start(timeout=5.0)
    _earn_trust(x, drv)
    inp = drv._in
    assert inp is not None

    def chained_only() -> bool:  # every posted block is one whole TD of 16 TRBs
        firsts = [t for t in inp.pending if t.first]
        return len(firsts) * 16 == len(inp.pending) and not any(t.last for t in firsts)

    # the buffers posted before trust came are one TD per TRB: used up by small transfers
    while not chained_only():
        x.host.send(b"x", timeout=1.0)
        assert drv.read(10, timeout=5.0) == b"x"
    buf = bytearray(MiB)
    events0 = drv.counters.events
    trbs0 = drv.counters.trbs_from_host
    bytes0 = drv.counters.bytes_from_host
    data = _pattern(2 * MiB, 4)
    xfer = x.host.submit(data)
    got = bytearray()
    while len(got) < len(data):
        n = drv.read_into(buf, timeout=5.0)
        got += buf[:n]
    assert bytes(got) == data
    assert x.host.wait(xfer, timeout=1.0) == len(data)
    assert drv.counters.trbs_from_host - trbs0 == 32
    assert drv.counters.bytes_from_host - bytes0 == len(data)
    assert drv.counters.events - events0 == 2  # one per 1 MiB TD, not one per 64 KiB TRB
    assert drv.stop() == ()


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    buffer_kib=st.sampled_from([65, 128, 200, 1024]),
    trusted=st.booleans(),
    sizes=st.lists(
        st.one_of(
            st.integers(0, 3000),
            st.integers(60_000, 600_000),
            st.sampled_from([64 * KiB, 128 * KiB, 200 * KiB, 256 * KiB]),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_transfers_keep_their_boundaries_in_chained_buffers(
    buffer_kib: int, sizes: list[int], trusted: bool
) -> None:
    """Whatever the transfer sizes (ending short in the first, a middle or the last TRB of a
    TD, filling TDs exactly and ended by the host's zero-length packet, spanning several TDs),
    read_message() returns each transfer whole, in order, and reading reuses every block."""
    with strict_controller() as x:
        drv = DbcDriver(x.mmio, x.dma, clock=x.clock, in_buffer_size=buffer_kib * KiB, in_buffers=3)
        drv.start(timeout=5.0)
        if trusted:  # else a TD per TRB until the events proved their pointers
            _earn_trust(x, drv)
        sent = [_pattern(n, i) for i, n in enumerate(sizes)]
        for data in sent:
            xfer = x.host.submit(data, zlp=True)
            assert drv.read_message(timeout=5.0) == data
            assert x.host.wait(xfer, timeout=1.0) == len(data)
        assert drv.pending_read_bytes == 0
        inp = drv._in
        assert inp is not None
        # every block is posted (whole, or the rest of it) or parked again: none is lost,
        # none is posted twice, and the ring never holds more than the buffers' TRBs
        posted = {id(t.block) for t in inp.pending if not t.skipped}
        assert len(inp.pending) <= inp.buffers * len(inp.pieces)
        assert not posted & {id(b) for b in inp.parked + inp.rx.freed}
        assert len(posted) + len(inp.parked) + len(inp.rx.freed) == inp.blocks.allocated
        roundtrip(x, drv, b"after chained transfers")
        assert drv.stop() == ()


def test_many_transfers_through_few_chained_buffers_stay_intact(x: VirtualXhci) -> None:
    """Blocks go back to the ring only after every part of them was read: reading late, with
    all buffers posted again and again, never shows bytes of a later transfer."""
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, in_buffer_size=192 * KiB, in_buffers=2)
    drv.start(timeout=5.0)
    _earn_trust(x, drv)
    sent = [_pattern(n, i) for i, n in enumerate([70_000, 200_000, 5, 131_072, 90_000] * 6)]
    want = b"".join(sent)
    got = bytearray()
    buf = bytearray(50_000)  # smaller than most transfers: parts of a block wait in the queue
    for data in sent:
        x.host.submit(data, zlp=True)
        n = drv.read_into(buf, timeout=5.0)
        got += buf[:n]
    while len(got) < len(want):
        n = drv.read_into(buf, timeout=5.0)
        got += buf[:n]
    assert bytes(got) == want
    with pytest.raises(DbcTimeout):
        drv.read_into(buf, timeout=0.01)
    assert drv.stop() == ()


def test_host_halt_while_a_chained_td_is_open(x: VirtualXhci) -> None:
    drv = DbcDriver(x.mmio, x.dma, clock=x.clock, in_buffer_size=256 * KiB)
    drv.start(timeout=5.0)
    _earn_trust(x, drv)
    first = _pattern(100_000, 5)  # ends short in the TD's second TRB
    x.host.send(first, timeout=1.0)
    x.host.halt("out")
    with pytest.raises(HostStall):
        x.host.send(b"nope", timeout=0.01)
    drv.poll()
    x.host.clear_halt("out")
    second = _pattern(300_000, 6)
    xfer = x.host.submit(second, zlp=True)
    assert drv.read_message(timeout=5.0) == first
    assert drv.read_message(timeout=5.0) == second
    assert x.host.wait(xfer, timeout=1.0) == len(second)
    assert drv.stop() == ()


@pytest.mark.parametrize("completion", ["babble", "transaction_error"])
def test_transfer_fault_on_a_chained_td(completion: FaultCompletion) -> None:
    # the TD after the trust-earning round trips and one good transfer fails
    quirks = Quirks(transfer_faults=(TransferFault("in", TRUST_AFTER + 1, completion),))
    with strict_controller(quirks=quirks) as x:
        drv = DbcDriver(x.mmio, x.dma, clock=x.clock, in_buffer_size=128 * KiB)
        drv.start(timeout=5.0)
        _earn_trust(x, drv)
        ok = _pattern(1000, 7)
        x.host.send(ok, timeout=1.0)
        assert drv.read_message(timeout=5.0) == ok
        xfer = x.host.submit(_pattern(150_000, 8))  # its TD fails
        drv.poll()
        with pytest.raises(HostTransferError):
            x.host.wait(xfer, timeout=0.1)
        x.host.clear_halt("out")
        after = _pattern(150_000, 9)
        xfer = x.host.submit(after, zlp=True)
        got = drv.read_message(timeout=5.0)
        while got != after:  # whatever the failed transfer left is a whole message of its own
            got = drv.read_message(timeout=5.0)
        assert x.host.wait(xfer, timeout=1.0) == len(after)
        roundtrip(x, drv, b"after the fault")
        drv.stop()


@pytest.mark.parametrize("inject", ["hcrst", "unplug"])
def test_reset_with_a_chained_td_open_keeps_what_was_confirmed(inject: str) -> None:
    """Transfers that ended short are confirmed by their events; the controller is reset (or
    the cable pulled) before the driver polled: every confirmed byte stays readable, once."""
    with strict_controller() as x:
        drv = DbcDriver(x.mmio, x.dma, clock=x.clock, in_buffer_size=256 * KiB)
        drv.start(timeout=5.0)
        _earn_trust(x, drv)
        sent = [_pattern(n, 10 + i) for i, n in enumerate((70_000, 300, 200_001))]
        for data in sent:
            assert x.host.send(data, timeout=1.0) == len(data)
        if inject == "hcrst":
            hcrst(x)
        else:
            x.host.unplug()
        got = b""
        end = x.clock.monotonic() + 5.0
        while len(got) < sum(map(len, sent)) and x.clock.monotonic() < end:
            try:
                got += drv.read(MiB, timeout=0.1)
            except DbcTimeout:
                pass
        assert got == b"".join(sent)
        drv.stop()


@pytest.mark.parametrize("mode", ["zero", "nonmonotonic"])
def test_wrong_event_pointers_keep_one_event_per_trb(mode: EventPointerMode) -> None:
    """A part whose Transfer Events name the wrong TRB never gets moderated completions or
    chained receive buffers (an event could stand for any TRB of a run): every byte still
    arrives, in order, both ways, and the wrong pointers are named device errors."""
    with strict_controller(quirks=Quirks(transfer_event_pointer=mode)) as x:
        drv = DbcDriver(x.mmio, x.dma, clock=x.clock, in_buffer_size=192 * KiB)
        drv.start(timeout=5.0)
        for i in range(2 * TRUST_AFTER):
            roundtrip(x, drv, b"round %d" % i)
        out, inp = drv._out, drv._in
        assert out is not None and inp is not None
        assert not out.pointers.trusted and not inp.pointers.trusted
        assert all(t.last for t in inp.pending)
        data = _pattern(3 * MiB + 7, 11)
        drv.write(data)
        assert all(t.ioc for t in out.pending)
        assert host_read(x, drv, len(data)) == data
        sent = [_pattern(n, 20 + i) for i, n in enumerate((150_000, 196_608, 5, 70_000))]
        for chunk in sent:
            xfer = x.host.submit(chunk, zlp=True)
            assert drv.read_message(timeout=5.0) == chunk
            assert x.host.wait(xfer, timeout=1.0) == len(chunk)
        drv.flush(timeout=5.0)
        assert drv.device_errors
        assert drv.stop() == ()
