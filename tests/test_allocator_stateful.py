"""A hypothesis state machine mixing heap buffers, two pools, device-side access and frees in
one emulated space: pool pages and heap buffers share chunks, so their interplay (coalescing,
page return, faults on freed blocks) is checked as a user would see it."""

from __future__ import annotations

import itertools

from dbc_harness.allocator import DmaBuffer, DmaFault, EmulatedDmaSpace
from hypothesis import settings
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

    def _track(self, buf: DmaBuffer, pool: int | None) -> None:
        assert not any(buf.view), "not zeroed"
        byte = next(self.fill)
        self.space.device_write(buf.device_address, bytes([byte]) * buf.size)
        self.live[buf.device_address] = (buf, byte, pool)

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
        if pool is None:
            self.space.free(buf)
        else:
            self.pools[pool].free(buf)
        try:
            self.space.device_read(address, 1)
        except DmaFault:
            return
        raise AssertionError(f"freed 0x{address:x} still device-readable")

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
            if pool is None:
                self.space.free(buf)
            else:
                self.pools[pool].free(buf)
        assert self.space.stats()["held_bytes"] == 0
        self.space.close()


SpaceMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
test_space_machine = SpaceMachine.TestCase
