"""Transfer and event ring behaviour of the virtual DbC (xHCI 1.2 4.9, 4.10, 4.11, 6.4)."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest
from dbc_harness.drivers.xhci.contexts import DBC_ENDPOINT_CONTEXT, DBC_IN_EP_OFFSET, EPState
from dbc_harness.drivers.xhci.trb import NO_OP, NORMAL, TRANSFER_EVENT, CompletionCode
from dbc_harness.fixtures.virtual import HostStall, HostTransferError, VirtualXhci
from dbc_harness.fixtures.virtual.rings import TransferEndpoint
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.virtual_helpers import MinimalDbcProducer


def configured(**kwargs: Any) -> tuple[VirtualXhci, MinimalDbcProducer]:
    x = VirtualXhci(**kwargs)
    b = MinimalDbcProducer(x)
    b.bring_up()
    b.events()
    return x, b


@pytest.fixture
def xb() -> Iterator[tuple[VirtualXhci, MinimalDbcProducer]]:
    x, b = configured()
    yield x, b
    x.close()


def test_no_processing_without_doorbell(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, b = xb
    b.queue_out(b"quiet")
    x.advance(10_000)
    assert x.host.pending_in_bytes() == 0
    b.ring_doorbell(0)
    x.advance(1)
    assert x.host.pending_in_bytes() == 5


def test_trb_with_wrong_cycle_is_not_consumed(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, b = xb
    b.data.view[0:4] = b"late"
    off = b.out.enqueue_index * 16
    NORMAL.pack_into(b.out.view, off, data_buffer_pointer=b.data.device_address,
                     trb_transfer_length=4, IOC=1, C=b.out.pcs ^ 1)  # fmt: skip
    b.ring_doorbell(0)
    x.advance(1000)
    assert x.host.pending_in_bytes() == 0
    NORMAL.pack_into(b.out.view, off, data_buffer_pointer=b.data.device_address,
                     trb_transfer_length=4, IOC=1, C=b.out.pcs)  # fmt: skip
    x.advance(1000)
    assert x.host.pending_in_bytes() == 0  # idle until the next doorbell (4.9.2)
    b.ring_doorbell(0)
    assert x.host.recv(16, timeout=0.01) == b"late"


def _cycle_write_during_fetch(write: Callable[[], None]) -> Callable[..., Any]:
    """A trace function that runs ``write`` once, in the DbC's TRB fetch, right after the DbC
    read the Cycle bit and found it not handed over: software's Cycle write landing between
    two reads of the same TRB, as a driver running in parallel (native code) can make it."""
    lines, first = inspect.getsourcelines(TransferEndpoint._fetch)
    check = first + next(i for i, line in enumerate(lines) if "CYCLE_MASK != self.ccs" in line)
    armed = [False]

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and frame.f_lineno == check:
            armed[0] = True
        elif event == "line" and armed[0]:
            armed[0] = False
            sys.settrace(None)  # once
            write()
        return local

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        return local if frame.f_code is TransferEndpoint._fetch.__code__ else None

    return tracer


def test_cycle_bit_handed_over_during_fetch_is_consumed_not_flagged() -> None:
    """The DbC decides "ring empty" from one read of the TRB (4.9.2): a Cycle bit that lands
    between its reads makes the TRB owned, not a TRB rewritten with the wrong Cycle bit."""
    with VirtualXhci(strict=True) as x:
        b = MinimalDbcProducer(x)
        b.bring_up()
        b.events()
        b.ring_doorbell(0)  # nothing queued: the DbC finds the ring empty at the dequeue
        x.advance(100)
        b.data.view[0:5] = b"raced"
        off = b.out.enqueue_index * 16
        # dwords 0-2 written, dword 3 (type, Cycle) not yet: software is mid-way through the TRB
        trb = NORMAL.build(data_buffer_pointer=b.data.device_address, trb_transfer_length=5,
                           IOC=1, C=b.out.pcs)  # fmt: skip
        b.out.view[off : off + 12] = trb[:12]
        dword3 = trb[12:]

        def hand_over() -> None:
            b.out.view[off + 12 : off + 16] = dword3

        # the doorbell of the previous TRB is still pending when this one is being written
        sys.settrace(_cycle_write_during_fetch(hand_over))
        try:
            b.ring_doorbell(0)
            x.advance(100)
        finally:
            sys.settrace(None)
        assert x.findings == []
        assert x.host.recv(16, timeout=0.01) == b"raced"


def test_transfer_ring_wraps_through_link_with_toggle_cycle() -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x, ring_trbs=16)
        b.bring_up()
        b.events()
        got = b""
        for i in range(100):
            b.queue_out(bytes([i]) * 3, offset=i * 64)
            b.ring_doorbell(0)
            got += x.host.recv(64, timeout=0.01)
            ev = b.transfer_events()
            assert len(ev) == 1 and ev[0].fields["completion_code"] == CompletionCode.Success
        assert got == b"".join(bytes([i]) * 3 for i in range(100))
        assert x.findings == []


def test_event_ring_full_holds_events_without_overwrite() -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x, event_trbs=16)
        b.bring_up()
        b.events()
        addrs = [b.queue_out(b"x", offset=64 * i) for i in range(20)]
        b.ring_doorbell(0)
        x.advance(100)  # the host takes the data into its buffer: TDs complete
        first = b.events(update_erdp=False)
        # one slot always stays empty: enqueue + 1 == dequeue means full (4.9.4)
        assert len(first) == 15
        assert [e.fields["trb_pointer"] for e in first] == addrs[:15]
        assert b.dcst()["ER"] == 1
        b.write64("DCERDP", b.event_buf.device_address + b.event_ring.dequeue_index * 16)
        x.advance(100)
        rest = b.events()
        assert [e.fields["trb_pointer"] for e in rest] == addrs[15:]
        assert [x.host.recv(8, timeout=0.01) for _ in range(20)] == [b"x"] * 20
        assert x.findings == []


def test_transfer_events_are_the_spec_layout_byte_for_byte() -> None:
    """Each Transfer Event the DbC writes (packed straight into the ring, or held while the ring
    is full and written later) is exactly the TRB the Transfer Event layout builds: its fields,
    zero reserved bits and the producer's Cycle bit, across wraps (6.4.2.1)."""
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x, event_trbs=16)
        b.bring_up()
        b.events()
        ring = b.event_ring
        checked = 0
        cycles: set[int] = set()
        for burst in (1, 3, 20, 2, 17):  # 20 and 17 overfill the 15 usable slots: some are held
            sent = [bytes([i + 1]) * (i + 1) for i in range(burst)]
            addrs = [b.queue_out(data, offset=64 * i) for i, data in enumerate(sent)]
            b.ring_doorbell(0)
            got: list[bytes] = []
            for _ in range(10):  # bounded: events that never appear fail below, not hang
                if len(got) == burst:
                    break
                x.advance(100)
                while len(got) < burst and ring.view[ring.dequeue_index * 16 + 12] & 1 == ring.ccs:
                    offset = ring.dequeue_index * 16
                    got.append(bytes(ring.view[offset : offset + 16]))
                    b.event_ring.pop()
                b.write_erdp()
            expected = [
                TRANSFER_EVENT.build(
                    trb_pointer=address, completion_code=CompletionCode.Success,
                    trb_transfer_length=0, endpoint_id=x.out_ep.endpoint_id, C=raw[12] & 1,
                )
                for address, raw in zip(addrs, got, strict=True)
            ]  # fmt: skip
            assert got == expected
            assert [x.host.recv(64, timeout=0.01) for _ in sent] == sent
            checked += burst
            cycles |= {raw[12] & 1 for raw in got}
        assert checked == 43 and cycles == {0, 1}  # the ring wrapped
        assert x.findings == []


def test_event_ring_wrap_toggles_producer_cycle_state() -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x, event_trbs=16)
        b.bring_up()
        b.events()
        cycles = []
        for i in range(40):
            b.queue_out(b"y", offset=64 * i)
            b.ring_doorbell(0)
            x.host.recv(8, timeout=0.01)
            ev = b.events()
            assert len(ev) == 1
            cycles.append(ev[0].fields["C"])
        assert 0 in cycles and 1 in cycles
        assert b.dcst()["ER"] == 0


def test_chained_td_is_one_host_transfer(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, b = xb
    payload = bytes(range(256)) * 12  # 3072 bytes: 2048 + 1024, ends on a packet boundary
    b.queue_out(payload[:2048], chain=1, ioc=0)
    b.queue_out(payload[2048:], offset=4096)
    b.queue_out(b"tail", offset=8192)
    b.ring_doorbell(0)
    # no short packet at the end of the first TD: the host read continues into the next one
    assert x.host.recv(8192, timeout=0.01) == payload + b"tail"
    ev = b.transfer_events()
    assert len(ev) == 2  # IOC only on the last TRB of each TD


def test_no_op_completes_after_the_tds_before_it() -> None:
    """TRBs complete in ring order (4.10.1): a No Op with IOC queued behind a TD the host has
    not read yet gets its event only after that TD's, so a driver may take the No Op's event
    as confirming everything before it. (host_buffer=0: the TD waits on the wire.)"""
    with VirtualXhci(strict=True, host_buffer=0) as x:
        b = MinimalDbcProducer(x)
        b.bring_up()
        b.events()
        data = b.queue_out(b"on the wire", ioc=0)
        fence = b.out.put(NO_OP.build(IOC=1, C=0))
        b.ring_doorbell(0)
        x.advance(1000)
        assert b.transfer_events() == []  # the host has not read: nothing completed
        assert x.host.recv(64, timeout=0.01) == b"on the wire"
        x.advance(10)
        (ev,) = b.transfer_events()
        assert ev.fields["trb_pointer"] == fence != data
        assert ev.fields["completion_code"] == CompletionCode.Success


def test_short_td_ends_the_host_read(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, b = xb
    b.queue_out(b"first")
    b.queue_out(b"second", offset=64)
    b.ring_doorbell(0)
    assert x.host.recv(4096, timeout=0.01) == b"first"
    assert x.host.recv(4096, timeout=0.01) == b"second"


def test_in_short_packet_on_first_trb_without_isp() -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x)
        b.bring_up()
        b.events()
        b.post_in(2048, chain=1, ioc=0, isp=0)
        last = b.post_in(2048, offset=0x90000, ioc=1, isp=0)
        b.ring_doorbell(1)
        x.host.send(b"z" * 100, timeout=0.01)
        ev = b.transfer_events()
        assert len(ev) == 1
        e = ev[0].fields
        assert (e["trb_pointer"], e["completion_code"]) == (last, CompletionCode.ShortPacket)
        assert b.in_data(100) == b"z" * 100


def test_in_packets_fill_a_td_exactly(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, b = xb
    b.post_in(4096)
    b.ring_doorbell(1)
    x.host.send(b"a" * 4096, timeout=0.01)
    ev = b.transfer_events()
    assert [(e.fields["completion_code"], e.fields["trb_transfer_length"]) for e in ev] == [
        (CompletionCode.Success, 0)
    ]


def test_in_zero_length_packet_after_an_exactly_filled_td_ends_the_next_td(
    xb: tuple[VirtualXhci, MinimalDbcProducer],
) -> None:
    """A host transfer of whole packets sent with its ZLP: the data fills the first TD exactly
    (Success), the zero-length packet lands in the next TD (Short Packet, nothing transferred),
    and only then is the host's transfer complete."""
    x, b = xb
    first = b.post_in(4096)
    b.ring_doorbell(1)
    xfer = x.host.submit(b"a" * 4096, zlp=True)
    x.advance(1000)
    ev = b.transfer_events()
    assert [(e.fields["trb_pointer"], e.fields["completion_code"]) for e in ev] == [
        (first, CompletionCode.Success)
    ]
    assert not xfer.done  # the ZLP waits for a buffer (NAK)
    second = b.post_in(2048, offset=0x90000)
    b.ring_doorbell(1)
    assert x.host.wait(xfer, timeout=0.01) == 4096
    ev = b.transfer_events()
    assert [
        (e.fields["trb_pointer"], e.fields["completion_code"], e.fields["trb_transfer_length"])
        for e in ev
    ] == [(second, CompletionCode.ShortPacket, 2048)]


def test_in_transfer_larger_than_td_babbles(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, b = xb
    b.post_in(1000)
    b.ring_doorbell(1)
    with pytest.raises(HostTransferError) as info:
        x.host.send(b"q" * 2000, timeout=0.01)
    assert info.value.code == CompletionCode.BabbleDetectedError
    ev = b.transfer_events()
    assert ev[0].fields["completion_code"] == CompletionCode.BabbleDetectedError
    assert b.dcctrl()["HIT"] == 1
    ctx = DBC_ENDPOINT_CONTEXT.parse(b.ctx.view, DBC_IN_EP_OFFSET)
    assert ctx["ep_state"] == EPState.Halted
    with pytest.raises(HostStall):
        x.host.send(b"again", timeout=0.01)


def test_in_data_waits_for_posted_buffers(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, b = xb
    xfer = x.host.submit(b"early bird")
    x.advance(1000)
    assert not xfer.done
    b.post_in(1024)
    b.ring_doorbell(1)
    assert x.host.wait(xfer, timeout=0.01) == 10
    assert b.in_data(10) == b"early bird"


def test_noop_with_ioc_completes(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, b = xb
    addr = b.noop(b.out, ioc=1)
    b.ring_doorbell(0)
    x.advance(10)
    ev = b.transfer_events()
    assert [(e.fields["trb_pointer"], e.fields["completion_code"]) for e in ev] == [
        (addr, CompletionCode.Success)
    ]


def test_idt_on_out_ring_sends_immediate_data(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    x, b = xb
    b.out.put(NORMAL.build(data_buffer_pointer=int.from_bytes(b"imm!", "little"),
                           trb_transfer_length=4, IDT=1, IOC=1, C=0))  # fmt: skip
    b.ring_doorbell(0)
    assert x.host.recv(16, timeout=0.01) == b"imm!"


def test_recv_timeout_advances_virtual_time(xb: tuple[VirtualXhci, MinimalDbcProducer]) -> None:
    from dbc_harness.fixtures.virtual import DebugHostTimeout

    x, _ = xb
    t0 = x.now_us
    with pytest.raises(DebugHostTimeout):
        x.host.recv(16, timeout=0.25)
    assert x.now_us - t0 == pytest.approx(250_000)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=12))
def test_out_bytes_arrive_in_order(sizes: list[int]) -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x)
        b.bring_up()
        b.events()
        expected = b""
        offset = 0
        for i, n in enumerate(sizes):
            chunk = bytes([(i * 7 + j) & 0xFF for j in range(n)]) if n else b""
            b.queue_out(chunk, offset=offset)
            offset += (n + 63) & ~63
            expected += chunk
        b.ring_doorbell(0)
        x.advance(1)
        got = b""
        reads = 0
        while x.host.in_flight_trbs:
            got += x.host.recv(1 << 16, timeout=0.01)
            reads += 1
        assert reads <= len(sizes)  # a short packet ends a read; 1024-multiples run on
        assert got == expected
        ev = b.transfer_events()
        assert len(ev) == len(sizes)
        assert all(e.fields["trb_transfer_length"] == 0 for e in ev)
        assert all(e.fields["endpoint_id"] == 2 for e in ev)
