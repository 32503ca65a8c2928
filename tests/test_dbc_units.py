"""Unit tests of the DbC driver's pure parts: state machine, identity, rings, datapath
bookkeeping, errors, counters. (Behaviour against the virtual controller: test_dbc_virtual.py.)"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
from dbc_harness.allocator import EmulatedDmaSpace
from dbc_harness.drivers.dbc import (
    DbcConfigError,
    DbcCounters,
    DbcDisconnected,
    DbcIdentity,
    DbcState,
    DbcStateError,
    UndeliveredMessage,
)
from dbc_harness.drivers.dbc.datapath import (
    LINE_64K,
    TRB_MAX_BYTES,
    HostToTargetPipe,
    RxQueue,
    TargetToHostPipe,
)
from dbc_harness.drivers.dbc.rings import allocate_event_ring, allocate_transfer_ring
from dbc_harness.drivers.dbc.state import StateMachine
from dbc_harness.drivers.xhci.trb import LINK, NORMAL, TRBType, cycle_of, trb_type_of
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.fixture
def dma() -> Iterator[EmulatedDmaSpace]:
    space = EmulatedDmaSpace()
    yield space
    space.close()


# -- state machine ---------------------------------------------------------------------------


def test_state_transitions_call_back_log_and_trace(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[DbcState, DbcState]] = []
    traced: list[dict[str, object]] = []

    def sink(kind: str, /, **fields: object) -> None:
        traced.append({"kind": kind, **fields})

    sm = StateMachine(on_state=lambda old, new: seen.append((old, new)), trace=sink)
    with caplog.at_level("INFO", logger="dbc_harness.drivers.dbc"):
        for s in (DbcState.INITIALIZED, DbcState.ENABLED, DbcState.CONNECTED, DbcState.CONFIGURED):
            sm.to(s, "test")
    assert [new for _, new in seen] == [
        DbcState.INITIALIZED,
        DbcState.ENABLED,
        DbcState.CONNECTED,
        DbcState.CONFIGURED,
    ]
    assert traced[-1] == {
        "kind": "state",
        "old": "CONNECTED",
        "new": "CONFIGURED",
        "reason": "test",
    }
    assert sum("DbC state" in r.message for r in caplog.records) == 4
    sm.to(DbcState.CONFIGURED)  # no-op: same state, no callback
    assert len(seen) == 4


def test_illegal_transition_is_a_named_error() -> None:
    sm = StateMachine()
    with pytest.raises(DbcStateError, match="DISABLED -> CONFIGURED"):
        sm.to(DbcState.CONFIGURED)
    assert sm.state is DbcState.DISABLED


# -- identity --------------------------------------------------------------------------------


def test_identity_defaults_bind_linux_usb_debug() -> None:
    ident = DbcIdentity()
    assert (ident.vendor_id, ident.product_id, ident.protocol) == (0x1D6B, 0x0010, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vendor_id": 0x10000},
        {"product_id": -1},
        {"protocol": 256},
        {"serial": "x" * 127},
        {"manufacturer": b"bytes"},
    ],
)
def test_identity_rejects_impossible_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(DbcConfigError):
        DbcIdentity(**kwargs)


def test_identity_accepts_longest_string() -> None:
    assert DbcIdentity(serial="x" * 126).serial == "x" * 126


# -- rings -----------------------------------------------------------------------------------


def test_transfer_ring_link_trb_toggles_cycle_and_wraps(dma: EmulatedDmaSpace) -> None:
    ring = allocate_transfer_ring(dma, 16, limit=None, name="OUT")
    view = ring.view
    assert trb_type_of(view, 15 * 16) == TRBType.Link
    link = LINK.parse(view, 15 * 16)
    assert link["ring_segment_pointer"] == ring.base and link["TC"] == 1 and link["C"] == 0
    for i in range(14):
        index, cycle = ring.enqueue_normal(ring.base, 8, chain=False)
        assert (index, cycle) == (i, 1)
    # one transfer slot always stays free: 14 of 15 in flight is full
    assert ring.free_slots == 0 and LINK.parse(view, 15 * 16)["C"] == 0
    ring.release(1)  # the first TRB completed: the controller is past slot 0
    index, cycle = ring.enqueue_normal(ring.base, 8, chain=False)
    assert (index, cycle) == (14, 1)
    # passing the Link TRB handed it over (C = old PCS) and flipped the producer cycle state
    assert LINK.parse(view, 15 * 16)["C"] == 1
    assert ring.pcs == 0 and ring.enqueue_index == 0 and ring.free_slots == 0
    ring.release(14)
    index, cycle = ring.enqueue_normal(ring.base, 8, chain=False)
    assert (index, cycle) == (0, 0) and cycle_of(view, 0) == 0
    assert ring.index_of(ring.base + 16) == 1
    assert ring.index_of(ring.base + 15 * 16) is None  # the Link TRB is never a transfer
    assert ring.index_of(ring.base + 8) is None and ring.index_of(0) is None


def test_transfer_ring_never_rewrites_the_link_before_the_controller_passed_it(
    dma: EmulatedDmaSpace,
) -> None:
    """With every slot in flight, the completion of the TRB before the Link TRB would let the
    next lap's last TRB and the Link's new Cycle bit be written while the controller may still
    be parked at the previous lap's Link (e.g. on a full event ring): it would then take the
    ring for empty for ever. Writing lap N's Link must wait for a completion from lap N."""
    ring = allocate_transfer_ring(dma, 16, limit=None, name="OUT")
    queued: deque[tuple[int, int]] = deque()  # (lap, slot) in flight, oldest first
    completed_laps: set[int] = set()
    lap = 1
    for _ in range(100):
        while ring.free_slots:
            index, _cycle = ring.enqueue_normal(ring.base, 8, chain=False)
            queued.append((lap, index))
            if index == 14:  # lap's Link handed over: the controller must be past the last one
                assert lap == 1 or lap in completed_laps, f"lap {lap} Link written too early"
                lap += 1
        done_lap, _slot = queued.popleft()  # the controller completes TRBs in order
        completed_laps.add(done_lap)
        ring.release(1)
    assert lap > 5


def test_ring_size_is_checked(dma: EmulatedDmaSpace) -> None:
    with pytest.raises(DbcConfigError):
        allocate_transfer_ring(dma, 8, limit=None, name="OUT")
    with pytest.raises(DbcConfigError):
        allocate_event_ring(dma, 8192, limit=None)


def test_event_ring_consumer_cycle(dma: EmulatedDmaSpace) -> None:
    ev = allocate_event_ring(dma, 16, limit=None)
    assert not ev.ready() and ev.dequeue_pointer == ev.base
    for i in range(16):
        ev.view[i * 16 + 12] = 1  # the producer hands every TRB over with C = 1
    for _ in range(16):
        assert ev.ready()
        ev.advance()
    assert ev.ccs == 0 and ev.dequeue_index == 0
    assert not ev.ready()  # C = 1 is the old lap now


# -- datapath --------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 3 * TRB_MAX_BYTES + 5), min_size=1, max_size=4))
def test_write_split_into_trbs_per_message(sizes: list[int]) -> None:
    """One message = one TD: TRBs of <= 64 KiB that never cross a 64 KiB line, CH on all but
    the last, IOC on the last and at least every ``ioc_every``-th, and two messages never
    share a TRB."""
    with EmulatedDmaSpace() as dma:
        pipe = TargetToHostPipe(dma, 64, limit=None, max_bytes_in_flight=64 << 20)
        view = pipe.ring.view
        msgs = [pipe.accept(bytes([i + 1]) * n) for i, n in enumerate(sizes)]
        pipe.pump()
        by_msg: dict[int, list[dict[str, int]]] = {}
        for t in pipe.pending:
            f = NORMAL.parse(view, t.index * 16)
            by_msg.setdefault(t.message.message_id, []).append(f)
            assert f["trb_transfer_length"] <= TRB_MAX_BYTES
            start = f["data_buffer_pointer"]
            length = f["trb_transfer_length"]
            assert length == 0 or start // LINE_64K == (start + length - 1) // LINE_64K
            data = dma.device_read(start, length) if length else b""
            assert data == bytes([msgs.index(t.message) + 1]) * length
        for msg, n in zip(msgs, sizes, strict=True):
            trbs = by_msg[msg.message_id]
            assert sum(f["trb_transfer_length"] for f in trbs) == n
            assert [f["CH"] for f in trbs] == [1] * (len(trbs) - 1) + [0]
            ioc = [i for i, f in enumerate(trbs) if f["IOC"]]
            assert ioc[-1] == len(trbs) - 1
            assert all(b - a <= pipe.ioc_every for a, b in zip([-1, *ioc[:-1]], ioc, strict=True))
        pipe.close(dma)


def test_back_pressure_keeps_rest_in_backlog(dma: EmulatedDmaSpace) -> None:
    pipe = TargetToHostPipe(dma, 16, limit=None, max_bytes_in_flight=64 << 20)
    msg = pipe.accept(bytes(20 * TRB_MAX_BYTES))
    assert pipe.pump() == 14  # 16 slots: one Link TRB, one always free
    assert pipe.backlog and msg.queued == 14 * TRB_MAX_BYTES
    for _ in range(3):
        pipe.complete_oldest(TRB_MAX_BYTES)
    assert pipe.pump() == 3
    lost = pipe.flush("unplugged")
    assert [(u.message_id, u.delivered) for u in lost] == [(msg.message_id, 3 * TRB_MAX_BYTES)]
    assert lost[0].undelivered_bytes == bytes(17 * TRB_MAX_BYTES)
    assert pipe.idle and pipe.ring.free_slots == 14
    pipe.close(dma)


def test_in_pipe_primes_and_reposts(dma: EmulatedDmaSpace) -> None:
    pipe = HostToTargetPipe(dma, 16, limit=None, buffers=4, buffer_size=4096, rx_limit=5000)
    assert pipe.prime() == 4
    first = pipe.oldest()
    assert first is not None
    first.block.view[:3] = b"abc"
    pipe.complete_oldest(3, end=True)
    assert pipe.prime() == 1  # a fresh block keeps 4 posted while "abc" waits to be read
    assert pipe.rx.take_message() == b"abc"
    assert pipe.prime() == 0 and pipe.parked == [first.block]  # consumed: back for reuse
    for fill in (b"x", b"y"):
        t = pipe.oldest()
        assert t is not None
        t.block.view[:4096] = fill * 4096
        pipe.complete_oldest(4096, end=fill == b"y")
    assert pipe.rx.size == 8192
    assert pipe.prime() == 0  # more than rx_limit unread: back-pressure, nothing posted
    assert pipe.rx.take(5000) == b"x" * 4096 + b"y" * 904
    assert pipe.prime() == 2
    pipe.close(dma)


def test_rx_queue_bytes_and_messages() -> None:
    rx = RxQueue()
    rx.push(memoryview(b"ab"), None, False)
    rx.push(memoryview(b"cd"), None, True)
    rx.push(memoryview(b""), None, True)  # a zero-length transfer
    rx.push(memoryview(b"ef"), None, True)
    assert rx.take(3) == b"abc"
    assert rx.take_message() == b"d"
    assert rx.take_message() == b""
    assert rx.has_message() and rx.take(10) == b"ef"
    assert rx.size == 0 and not rx.has_data() and not rx.has_message()


# -- errors and counters ---------------------------------------------------------------------


def test_disconnected_carries_undelivered_messages() -> None:
    msgs = (UndeliveredMessage(3, b"hello", 2, "unplugged"),)
    err = DbcDisconnected("gone", msgs)
    assert err.message_ids == (3,) and err.undelivered[0].undelivered_bytes == b"llo"
    assert "3" in str(err)


def test_counters_flatten() -> None:
    c = DbcCounters()
    c.errors["StallError"] += 2
    c.recoveries["disconnect"] += 1
    d = c.as_dict()
    assert d["errors.StallError"] == 2 and d["errors"] == 2 and d["recoveries"] == 1


# -- finding the DbC -------------------------------------------------------------------------


class _RegisterFile:
    """A BAR0 made of plain dwords (an MMIO implementation for capability-list shapes)."""

    def __init__(self, dwords: dict[int, int]) -> None:
        self.dwords = dwords

    def read32(self, offset: int) -> int:
        return self.dwords.get(offset, 0)

    def write32(self, offset: int, value: int) -> None:
        self.dwords[offset] = value

    def read64(self, offset: int) -> int:
        return self.read32(offset) | self.read32(offset + 4) << 32

    def write64(self, offset: int, value: int) -> None:
        self.write32(offset, value & 0xFFFFFFFF)
        self.write32(offset + 4, value >> 32)


def _xecp(cap_id: int, next_dwords: int) -> int:
    from dbc_harness.drivers.xhci.registers import EXTENDED_CAPABILITY

    return EXTENDED_CAPABILITY.encode(capability_id=cap_id, next_capability_pointer=next_dwords)


def _hccparams1(xecp_dwords: int) -> dict[int, int]:
    from dbc_harness.drivers.xhci.registers import CAPABILITY_REGS, HCCPARAMS1

    return {CAPABILITY_REGS.offset("HCCPARAMS1"): HCCPARAMS1.encode(xECP=xecp_dwords, AC64=1)}


def test_find_dbc_walks_the_list() -> None:
    from dbc_harness.drivers.dbc.bringup import find_dbc

    regs = _hccparams1(0x100 // 4) | {
        0x100: _xecp(1, 4),
        0x110: _xecp(0xC0, 0x40),
        0x210: _xecp(10, 0),
    }
    assert find_dbc(_RegisterFile(regs)) == 0x210


def test_find_dbc_on_a_looping_list_is_not_found_not_a_hang() -> None:
    from dbc_harness.drivers.dbc import DbcNotFound
    from dbc_harness.drivers.dbc.bringup import extended_capabilities, find_dbc

    loop = _hccparams1(0x100 // 4) | {0x100: _xecp(1, 4), 0x110: _xecp(2, 0xFF)}
    # 0x110 + 0x3FC wraps nowhere: walk a long chain of vendor entries that never ends
    for i in range(1, 400):
        loop[0x110 + i * 0x3FC] = _xecp(0xC0, 0xFF)
    with pytest.raises(DbcNotFound, match="no Debug Capability"):
        find_dbc(_RegisterFile(loop))
    assert len(extended_capabilities(_RegisterFile(loop))) == 256
    self_loop = _hccparams1(0x100 // 4) | {0x100: _xecp(1, 0)}
    with pytest.raises(DbcNotFound):
        find_dbc(_RegisterFile(self_loop))


def test_all_ones_capability_list_is_surprise_removal() -> None:
    from dbc_harness.drivers.dbc import DbcSurpriseRemoval
    from dbc_harness.drivers.dbc.bringup import find_dbc

    class _Gone(_RegisterFile):
        def read32(self, offset: int) -> int:
            return 0xFFFFFFFF

    with pytest.raises(DbcSurpriseRemoval):
        find_dbc(_Gone({}))


# -- the event handler on crafted events -----------------------------------------------------


class _Handler:
    """The real EventHandler over real rings in an emulated DMA space; the controller's part
    (writing event TRBs) is played by the test."""

    def __init__(self, dma: EmulatedDmaSpace) -> None:
        from dbc_harness.drivers.dbc.bringup import DbcContextMemory
        from dbc_harness.drivers.dbc.events import EventHandler
        from dbc_harness.drivers.dbc.registers import DbcRegisters

        self.errors: list[Exception] = []
        self.lost: list[UndeliveredMessage] = []
        self.regs_file = _RegisterFile({})
        self.events = allocate_event_ring(dma, 16, limit=None)
        self.out = TargetToHostPipe(dma, 16, limit=None, max_bytes_in_flight=1 << 20)
        self.inp = HostToTargetPipe(dma, 16, limit=None, buffers=2, buffer_size=1024, rx_limit=4096)
        self.memory = DbcContextMemory(dma, limit=None)
        self.memory.fill_endpoints(self.out.ring, self.inp.ring, 0)
        self.counters = DbcCounters()
        self.handler = EventHandler(
            DbcRegisters(self.regs_file, 0x100),
            self.events,
            self.out,
            self.inp,
            self.memory,
            self.counters,
            on_device_error=self.errors.append,
            on_undelivered=self.lost.append,
        )
        self._slot = 0

    def post(self, **fields: int) -> None:
        from dbc_harness.drivers.xhci.trb import TRANSFER_EVENT

        TRANSFER_EVENT.pack_into(self.events.view, self._slot * 16, C=1, **fields)
        self._slot += 1


def test_event_handler_completes_in_order_and_writes_erdp_once(dma: EmulatedDmaSpace) -> None:
    h = _Handler(dma)
    h.out.accept(b"abc")
    h.out.accept(b"defg")
    h.out.pump()
    first, second = (h.out.ring.address_of(t.index) for t in h.out.pending)
    h.post(trb_pointer=first, completion_code=1, endpoint_id=2)
    h.post(trb_pointer=second, completion_code=1, endpoint_id=0)  # the other ID scheme
    assert h.handler.drain() == 2
    assert h.counters.messages_to_host == 2 and h.counters.bytes_to_host == 7
    assert h.counters.erdp_writes == 1
    assert h.regs_file.read64(0x100 + 0x18) == h.events.base + 2 * 16  # DCERDP: next TRB
    assert h.errors == [] and h.out.idle


def test_event_handler_validates_device_values(dma: EmulatedDmaSpace) -> None:
    from dbc_harness.drivers.dbc import DbcDeviceError

    h = _Handler(dma)
    h.out.accept(b"abc")
    h.out.pump()
    h.post(trb_pointer=0, completion_code=1, endpoint_id=2, trb_transfer_length=999)
    h.post(trb_pointer=h.out.ring.base, completion_code=1, endpoint_id=2)  # nothing in flight
    h.post(trb_pointer=0x1234, completion_code=1, endpoint_id=7)  # no such endpoint
    h.post(trb_pointer=0, completion_code=1, endpoint_id=2, ED=1)  # we queue no Event Data
    assert h.handler.drain() == 4
    assert all(isinstance(e, DbcDeviceError) for e in h.errors)
    messages = " | ".join(str(e) for e in h.errors)
    for part in ("not the oldest", "residual 999", "nothing in flight", "endpoint ID 7", "ED = 1"):
        assert part in messages
    # the zero pointer was still completed in ring order: the message arrived, nothing lost
    assert h.counters.messages_to_host == 1 and h.lost == [] and h.out.idle


def test_event_handler_short_packet_and_stall_on_in_ring(dma: EmulatedDmaSpace) -> None:
    h = _Handler(dma)
    h.inp.prime()
    t = h.inp.oldest()
    assert t is not None
    t.block.view[:5] = b"hello"
    address = h.inp.ring.address_of(t.index)
    h.post(trb_pointer=address, completion_code=13, endpoint_id=3, trb_transfer_length=1019)
    h.handler.drain()
    assert h.inp.rx.take_message() == b"hello"
    stalled = h.inp.oldest()
    assert stalled is not None
    stalled_address = h.inp.ring.address_of(stalled.index)
    # the controller halted on this TRB: the endpoint context points at it
    from dbc_harness.drivers.xhci.contexts import DBC_ENDPOINT_CONTEXT, DBC_IN_EP_OFFSET

    DBC_ENDPOINT_CONTEXT.pack_into(
        h.memory.context.view, DBC_IN_EP_OFFSET, tr_dequeue_pointer=stalled_address, DCS=1
    )
    h.post(trb_pointer=stalled_address, completion_code=6, endpoint_id=3, trb_transfer_length=1024)
    h.handler.drain()
    assert h.inp.oldest() is stalled and h.inp.halted  # kept queued (spurious STALL)
    assert h.counters.spurious_stalls == 1 and h.counters.errors["StallError"] == 1


@pytest.mark.parametrize("halted_on_it", [True, False])
def test_event_handler_trb_error_reports_the_message_undelivered(
    dma: EmulatedDmaSpace, halted_on_it: bool
) -> None:
    """TRB Error: the message is reported undelivered and the next one is unaffected. Halted
    on the TRB (the endpoint context points at it): the TD becomes No Op TRBs, which complete
    when the endpoint runs again. Moved past it: the TD's slots are simply released."""
    from dbc_harness.drivers.xhci.contexts import DBC_ENDPOINT_CONTEXT, DBC_OUT_EP_OFFSET
    from dbc_harness.drivers.xhci.trb import TRBType, trb_type_of

    h = _Handler(dma)
    h.out.accept(bytes(100_000))  # two TRBs, one TD
    h.out.accept(b"next")
    h.out.pump()
    addresses = [h.out.ring.address_of(t.index) for t in h.out.pending]
    halted_at = addresses[0] if halted_on_it else addresses[2]
    DBC_ENDPOINT_CONTEXT.pack_into(
        h.memory.context.view, DBC_OUT_EP_OFFSET, tr_dequeue_pointer=halted_at, DCS=1, ep_state=2
    )
    h.post(trb_pointer=addresses[0], completion_code=5, endpoint_id=2, trb_transfer_length=65536)
    h.handler.drain()
    assert [(m.message_id, m.delivered, m.reason) for m in h.lost] == [(1, 0, "TRBError")]
    if halted_on_it:
        view = h.out.ring.view
        assert [trb_type_of(view, a - h.out.ring.base) for a in addresses[:2]] == [
            TRBType.NoOp,
            TRBType.NoOp,
        ]
        h.post(trb_pointer=addresses[0], completion_code=1, endpoint_id=2)
        h.post(trb_pointer=addresses[1], completion_code=1, endpoint_id=2)
    h.post(trb_pointer=addresses[2], completion_code=1, endpoint_id=2)
    h.handler.drain()
    assert h.errors == []
    assert h.counters.errors["TRBError"] == 1 and h.counters.messages_to_host == 1
    assert h.out.idle and h.out.ring.free_slots == h.out.ring.max_in_flight
