"""A hypothesis state machine mixing heap buffers, two pools, device-side access and frees in
one emulated space: pool pages and heap buffers share chunks, so their interplay (coalescing,
page return, faults on freed blocks) is checked as a user would see it. The sanitizer is on (the
emulated default): stale writes through slices taken before free() land in quarantined memory
and every one of them is counted, and raised from a later free, by the time the space is empty;
live buffers never see them."""

from __future__ import annotations

import itertools

from dbc_harness.allocator import DmaBuffer, DmaFault, EmulatedDmaSpace, UseAfterFree
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule


class SpaceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.space = EmulatedDmaSpace(chunk_size=1 << 17, guard=0)
        self.pools = [
            self.space.pool(64, align=64, boundary=4096),
            self.space.pool(2112, align=64, boundary=4096),
        ]
        self.live: dict[int, tuple[DmaBuffer, int, int | None]] = {}  # addr -> buf, fill, pool
        self.fill = itertools.cycle(range(1, 256))
        self.stale: list[tuple[int, memoryview]] = []  # (address, slice kept across free())
        self.corrupted: set[int] = set()  # quarantined buffers written through a stale slice
        self.expected_uaf = 0  # stale writes + device accesses that hit quarantined memory
        self.raised: list[int] = []  # buffer addresses UseAfterFree named

    def _release(self, buf: DmaBuffer, pool: int | None) -> None:
        """free() as a user calls it; a UseAfterFree it raises names a corrupted buffer, and
        the free itself still happened."""
        try:
            if pool is None:
                self.space.free(buf)
            else:
                self.pools[pool].free(buf)
        except UseAfterFree as exc:
            assert exc.buffer_address in self.corrupted, exc
            assert exc.side == "cpu"
            self.raised.append(exc.buffer_address)
        assert buf.freed

    def _track(self, buf: DmaBuffer, pool: int | None) -> None:
        assert not any(buf.view), "not zeroed"
        byte = next(self.fill)
        self.space.device_write(buf.device_address, bytes([byte]) * buf.size)
        self.live[buf.device_address] = (buf, byte, pool)
        # a slice kept from an earlier buffer here may point at reused or at orphaned memory
        # (its chunk went back and was replaced): such writes are not the sanitizer's to find
        self.stale = [(a, v) for a, v in self.stale if not buf.device_address <= a < buf.end]

    @rule(size=st.integers(1, 40_000), align_log=st.integers(0, 12))
    def alloc(self, size: int, align_log: int) -> None:
        buf = self.space.alloc(size, align=1 << align_log, boundary=64 << 10)
        assert buf.device_address % (1 << align_log) == 0
        self._track(buf, None)

    @rule(which=st.integers(0, 1))
    def pool_alloc(self, which: int) -> None:
        buf = self.pools[which].alloc()
        assert buf.device_address // 4096 == (buf.end - 1) // 4096
        self._track(buf, which)

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 10_000))
    def free(self, pick: int) -> None:
        address = sorted(self.live)[pick % len(self.live)]
        buf, _, pool = self.live.pop(address)
        self.stale = [*self.stale[-7:], (address, buf.view[:1])]
        self._release(buf, pool)
        try:
            self.space.device_read(address, 1)
        except UseAfterFree:
            self.expected_uaf += 1  # still quarantined: named at once
            return
        except DmaFault:
            return
        raise AssertionError(f"freed 0x{address:x} still device-readable")

    @precondition(lambda self: self.stale)
    @rule(pick=st.integers(0, 7))
    def stale_write(self, pick: int) -> None:
        address, view = self.stale.pop(pick % len(self.stale))
        try:
            self.space.device_read(address, 1)
        except UseAfterFree:
            self.expected_uaf += 1
        except DmaFault:
            return  # out of quarantine, free: a write now would go unseen (not this test)
        else:
            return  # handed out again: the new owner's memory
        view[0] = 0x00  # not the poison byte
        self.corrupted.add(address)
        event("stale write into quarantined memory")
        self.expected_uaf += 1

    @invariant()
    def contents_and_translation_hold(self) -> None:
        spans = sorted((b.device_address, b.end) for b, _, _ in self.live.values())
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
        for buf, byte, _ in self.live.values():
            assert bytes(buf.view[:1]) == bytes(buf.view[-1:]) == bytes([byte])
            assert self.space.lookup(buf.end - 1) == (buf, buf.size - 1)
        assert self.space.stats()["live_bytes"] == sum(b.size for b, _, _ in self.live.values())

    def teardown(self) -> None:
        for buf, _, pool in list(self.live.values()):
            self._release(buf, pool)
        stats = self.space.stats()
        assert stats["held_bytes"] == stats["quarantined_bytes"] == 0
        # every stale write was found (one free raises the first it finds, counts them all)
        assert stats["use_after_free"] == self.expected_uaf
        assert set(self.raised) <= self.corrupted
        assert bool(self.raised) == bool(self.corrupted)
        self.space.close()


SpaceMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
test_space_machine = SpaceMachine.TestCase
