"""Producer and event rings over an emulated DMA space: cycle bits, Link TRB, accounting."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from dbc_harness.allocator import EmulatedDmaSpace
from dbc_harness.drivers.xhci.contexts import ERST_ENTRY
from dbc_harness.drivers.xhci.errors import RingError, RingFull
from dbc_harness.drivers.xhci.ring import (
    EventRing,
    ProducerRing,
    cycle_bits,
    find_cycle_flip,
    trb_array,
)
from dbc_harness.drivers.xhci.trb import (
    LINK,
    NORMAL,
    TRANSFER_EVENT,
    CompletionCode,
    TRBType,
    cycle_of,
    decode_trb,
)
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.fixture
def space() -> Iterator[EmulatedDmaSpace]:
    with EmulatedDmaSpace() as s:
        yield s


def _consume(ring: ProducerRing, state: dict[str, int]) -> list[int]:
    """A consumer following the spec: take TRBs while C == CCS, follow Link TRBs (toggling CCS
    when TC = 1). Returns the device addresses of the work TRBs it took."""
    taken = []
    view = ring.buffer.view
    for _ in range(4 * ring.trbs):
        o = state["deq"] - ring.base
        if cycle_of(view, o) != state["ccs"]:
            break
        t, fields = decode_trb(view, o)
        if t is TRBType.Link:
            state["deq"] = fields["ring_segment_pointer"]
            state["ccs"] ^= fields["TC"]
            continue
        taken.append(state["deq"])
        state["deq"] += 16
    return taken


def test_producer_ring_layout_and_first_lap(space: EmulatedDmaSpace) -> None:
    ring = ProducerRing.allocate(space, 8, name="out")
    # 7 work slots before the Link TRB, one of them always free
    assert ring.base % 64 == 0 and ring.max_in_flight == 6 and ring.free_slots == 6
    link = LINK.parse(ring.buffer.view, 7 * 16)
    assert link["trb_type"] == TRBType.Link and link["TC"] == 1 and link["C"] == 0
    assert link["ring_segment_pointer"] == ring.base
    addr = ring.enqueue(NORMAL, data_buffer_pointer=0x1234, trb_transfer_length=5, IOC=1, C=0)
    assert addr == ring.base and ring.enqueue_pointer == ring.base + 16
    t, fields = decode_trb(ring.buffer.view, 0)
    assert t is TRBType.Normal and fields["C"] == 1  # C = PCS, whatever the caller passed
    assert fields["trb_transfer_length"] == 5 and fields["IOC"] == 1
    assert ring.free_slots == 5 and ring.in_flight_addresses() == [ring.base]


def test_wrap_hands_link_to_consumer_and_toggles_cycle(space: EmulatedDmaSpace) -> None:
    ring = ProducerRing.allocate(space, 4)
    state = {"deq": ring.base, "ccs": 1}
    seen: list[int] = []
    for batch in range(9):
        addrs = [ring.enqueue(NORMAL, tag=(batch, i), trb_transfer_length=i) for i in range(2)]
        assert ring.free_slots == 0  # 3 work slots, one always free
        with pytest.raises(RingFull):
            ring.enqueue(NORMAL)
        taken = _consume(ring, state)
        assert taken == addrs
        seen += taken
        assert ring.complete(addrs[-1]) == [(batch, 0), (batch, 1)]
        assert ring.free_slots == 2
        assert ring.pcs == 1 - (2 * (batch + 1)) // 3 % 2  # toggled once per 3 TRBs (a lap)
    assert len(seen) == 18


def test_partial_completions_and_bad_completions(space: EmulatedDmaSpace) -> None:
    ring = ProducerRing.allocate(space, 16)
    addrs = [ring.enqueue(NORMAL, tag=i) for i in range(10)]
    assert ring.complete(addrs[3]) == [0, 1, 2, 3]
    with pytest.raises(RingError, match="not in flight"):
        ring.complete(addrs[2])  # already completed (non-monotonic pointer)
    with pytest.raises(RingError, match="not a TRB"):
        ring.complete(0)  # zero TRB pointer
    with pytest.raises(RingError, match="not a TRB"):
        ring.complete(addrs[4] + 8)
    with pytest.raises(RingError, match="Link"):
        ring.complete(ring.link_address)
    assert ring.in_flight == 6
    assert ring.complete(addrs[9]) == [4, 5, 6, 7, 8, 9] and ring.in_flight == 0


def test_chain_bit_crosses_link(space: EmulatedDmaSpace) -> None:
    ring = ProducerRing.allocate(space, 4)
    ring.enqueue(NORMAL)
    ring.complete(ring.enqueue(NORMAL))
    ring.enqueue(NORMAL, CH=1)  # TD continues past the Link TRB
    link = LINK.parse(ring.buffer.view, 3 * 16)
    assert link["CH"] == 1 and link["C"] == 1 and link["TC"] == 1


def test_cancel_turns_trb_into_no_op(space: EmulatedDmaSpace) -> None:
    ring = ProducerRing.allocate(space, 8)
    a = ring.enqueue(NORMAL, data_buffer_pointer=0x5000, IOC=1)
    ring.cancel(a)
    t, fields = decode_trb(ring.buffer.view, 0)
    assert t is TRBType.NoOp and fields["C"] == 1
    with pytest.raises(RingError):
        ring.cancel(ring.base + 16)


def test_reset_restores_initial_state(space: EmulatedDmaSpace) -> None:
    ring = ProducerRing.allocate(space, 4)
    for _ in range(2):
        ring.complete(ring.enqueue(NORMAL, trb_transfer_length=7))
    ring.enqueue(NORMAL, trb_transfer_length=7)
    assert (ring.enqueue_index, ring.pcs, ring.in_flight) == (0, 0, 1)
    ring.reset()
    assert (ring.enqueue_index, ring.pcs, ring.in_flight) == (0, 1, 0)
    assert bytes(ring.buffer.view[:48]) == bytes(48)
    assert LINK.parse(ring.buffer.view, 48)["C"] == 0


def test_placement_rules_are_enforced(space: EmulatedDmaSpace) -> None:
    buf = space.alloc(512, align=64)
    misaligned = type(buf)(space, buf.device_address + 16, 256, buf.view[16:272])
    with pytest.raises(RingError, match="aligned"):
        ProducerRing(misaligned, 16)
    with pytest.raises(RingError, match="cannot hold"):
        ProducerRing(buf, 64)
    with pytest.raises(RingError, match=r"3\.\.4096"):
        ProducerRing.allocate(space, 2)
    big = space.alloc(0x20000, align=0x10000)
    with pytest.raises(RingError, match="64 KiB"):
        ProducerRing(
            type(big)(space, big.device_address + 0xFFC0, 256, big.view[0xFFC0 : 0xFFC0 + 256]),
            16,
        )
    with pytest.raises(RingError, match=r"16\.\.4096"):
        EventRing.allocate(space, 8)


def _post_event(ring: EventRing, index: int, cycle: int, length: int) -> None:
    TRANSFER_EVENT.pack_into(
        ring.segment.view,
        index * 16,
        trb_pointer=0x1000 + index * 16,
        completion_code=CompletionCode.Success,
        trb_transfer_length=length,
        endpoint_id=1,
        C=cycle,
    )


def test_event_ring_consumes_by_cycle_state_and_wraps(space: EmulatedDmaSpace) -> None:
    ring = EventRing.allocate(space, 16)
    entry = ERST_ENTRY.parse(ring.erst.view)
    assert entry["ring_segment_base_address"] == ring.base and entry["ring_segment_size"] == 16
    assert ring.erst_size == 1 and ring.dequeue_pointer == ring.base
    assert ring.pop() is None and ring.pending() == 0
    produced = 0
    pcs = 1
    for batch in (5, 11, 7, 16, 3):
        for _ in range(batch):
            _post_event(ring, produced % 16, pcs, produced)
            produced += 1
            if produced % 16 == 0:
                pcs ^= 1
        assert ring.pending() == batch
        events = ring.drain()
        assert [e[2]["trb_transfer_length"] for e in events] == list(
            range(produced - batch, produced)
        )
        assert all(t is TRBType.TransferEvent for _, t, _ in events)
        assert ring.dequeue_pointer == ring.base + (produced % 16) * 16
        assert ring.ccs == pcs
        assert ring.pop() is None


def test_event_ring_drain_limit_and_unknown_types(space: EmulatedDmaSpace) -> None:
    ring = EventRing.allocate(space, 16)
    for i in range(4):
        _post_event(ring, i, 1, i)
    ring.segment.view[4 * 16 + 13] = 63 << 2 | 0  # type 63, cycle 0 in byte 12
    ring.segment.view[4 * 16 + 12] = 1  # cycle 1
    assert len(ring.drain(limit=2)) == 2
    rest = ring.drain()
    assert len(rest) == 3 and rest[-1][1] == 63 and "parameter" in rest[-1][2]


def test_free_gives_buffers_back(space: EmulatedDmaSpace) -> None:
    before = space.stats()["live_bytes"]
    ring = ProducerRing.allocate(space, 64)
    events = EventRing.allocate(space, 64)
    assert space.stats()["live_bytes"] > before
    ring.free()
    events.free()
    ring.free()  # idempotent
    assert space.stats()["live_bytes"] == before


@settings(max_examples=60, deadline=None)
@given(
    cycles=st.lists(st.integers(0, 1), min_size=1, max_size=64),
    cycle=st.integers(0, 1),
    start=st.integers(0, 70),
)
def test_find_cycle_flip_matches_a_plain_scan(cycles: list[int], cycle: int, start: int) -> None:
    buf = bytearray(16 * len(cycles))
    for i, c in enumerate(cycles):
        NORMAL.pack_into(buf, i * 16, C=c, trb_transfer_length=i)
    arr = trb_array(buf)
    assert list(cycle_bits(arr)) == cycles
    expected = next((i for i in range(start, len(cycles)) if cycles[i] != cycle), None)
    assert find_cycle_flip(arr, cycle, start) == expected


def test_numpy_view_is_zero_copy(space: EmulatedDmaSpace) -> None:
    ring = ProducerRing.allocate(space, 16)
    arr = ring.array()
    assert isinstance(arr, np.ndarray) and arr.shape == (16,)
    ring.enqueue(NORMAL, trb_transfer_length=9)
    assert int(arr["status"][0]) == 9 and int(cycle_bits(arr)[0]) == 1
    ring.free()  # a live array() view must not make free() fail


@settings(max_examples=40, deadline=None)
@given(
    trbs=st.integers(3, 9),
    ops=st.lists(st.tuples(st.sampled_from(["enqueue", "consume", "complete"]), st.integers(0, 9))),
)
def test_ring_against_a_spec_consumer(trbs: int, ops: list[tuple[str, int]]) -> None:
    """Random enqueue / consume / complete sequences: the consumer sees exactly the TRBs in
    enqueue order, completions hand back tags in order, accounting never drifts."""
    with EmulatedDmaSpace() as s:
        ring = ProducerRing.allocate(s, trbs)
        state = {"deq": ring.base, "ccs": 1}
        queued: list[tuple[int, int]] = []  # (address, tag) enqueued, not yet consumed
        consumed: list[tuple[int, int]] = []  # consumed, not yet completed
        tag = 0
        for op, n in ops:
            if op == "enqueue":
                for _ in range(n):
                    if ring.free_slots == 0:
                        with pytest.raises(RingFull):
                            ring.enqueue(NORMAL, trb_transfer_length=tag)
                        break
                    queued.append((ring.enqueue(NORMAL, tag=tag, trb_transfer_length=tag), tag))
                    tag += 1
            elif op == "consume":
                taken = _consume(ring, state)
                assert taken == [a for a, _ in queued]
                for a in taken:
                    assert (
                        NORMAL.parse(ring.buffer.view, a - ring.base)["trb_transfer_length"]
                        == (dict(queued)[a])
                    )
                consumed += queued
                queued = []
            elif consumed:
                k = min(n, len(consumed) - 1)
                assert ring.complete(consumed[k][0]) == [t for _, t in consumed[: k + 1]]
                consumed = consumed[k + 1 :]
            assert ring.in_flight == len(queued) + len(consumed)
            assert ring.free_slots == ring.max_in_flight - ring.in_flight
            oldest = (consumed + queued)[0][0] if consumed or queued else ring.enqueue_pointer
            assert ring.dequeue_pointer == oldest
        ring.free()
