"""Chunk return policy of the heap as a user sees it: an idle spare chunk goes back after the
hysteresis, and once the live set has shrunk the emptiest chunk is drained (placement avoids
it while requests fit elsewhere) so it can go back instead of being refilled."""

from __future__ import annotations

import mmap
import random
from typing import Any

import pytest
from dbc_harness.allocator import DmaBuffer, EmulatedDmaSpace, InvalidRequest
from dbc_harness.allocator.chunk import Chunk
from dbc_harness.allocator.heap import HeapDmaSpace
from dbc_harness.harness.benchmarks.allocator import ALIGN, BOUNDARY, SEED, trace

KiB = 1 << 10
CHUNK = 64 * KiB


def policy_space(**kwargs: Any) -> EmulatedDmaSpace:
    """The placement policy itself: without the sanitizer's quarantine, which delays reuse by
    design (tests/test_allocator_sanitizer.py covers it)."""
    return EmulatedDmaSpace(sanitize=False, **kwargs)


def _chunk_of(buf: DmaBuffer) -> int:
    return buf.device_address // CHUNK


def test_idle_spare_chunk_goes_back_after_the_hysteresis() -> None:
    with policy_space(chunk_size=CHUNK, spare_chunks=1, spare_idle_ops=8) as space:
        keep = space.alloc(64)
        big = space.alloc(CHUNK)  # a chunk of its own
        space.free(big)
        assert space.stats()["spare_chunks"] == 1
        # 7 more operations, served by the chunk that holds `keep` (the spare is a last resort)
        small = space.alloc(64)
        for _ in range(3):
            space.free(small)
            small = space.alloc(64)
        assert _chunk_of(small) == _chunk_of(keep)
        stats = space.stats()
        assert stats["spare_chunks"] == 1 and stats["held_bytes"] == 2 * CHUNK
        extra = space.alloc(64)  # the 8th operation since the spare became idle
        stats = space.stats()
        assert stats["spare_chunks"] == 0 and stats["held_bytes"] == CHUNK
        assert stats["chunks_released"] == 1
        space.free(extra)
        space.free(small)
        space.free(keep)
        assert space.stats()["held_bytes"] == 0


def test_spare_used_again_before_it_expires_is_not_released() -> None:
    with policy_space(chunk_size=CHUNK, spare_chunks=1, spare_idle_ops=4) as space:
        keep = space.alloc(64)
        big = space.alloc(CHUNK)
        for _ in range(10):  # the spare is reused every second operation: never idle long
            space.free(big)
            big = space.alloc(CHUNK)
        assert space.stats()["chunks_acquired"] == 2
        space.free(big)
        space.free(keep)


def test_without_expiry_the_spare_stays_until_trim() -> None:
    with policy_space(chunk_size=CHUNK, spare_chunks=1, spare_idle_ops=None) as space:
        keep = space.alloc(64)
        space.free(space.alloc(CHUNK))
        for _ in range(50):
            space.free(space.alloc(128))
        assert space.stats()["spare_chunks"] == 1
        space.trim()
        stats = space.stats()
        assert stats["spare_chunks"] == 0 and stats["held_bytes"] == CHUNK
        space.free(keep)


def test_spare_idle_ops_must_be_positive() -> None:
    with pytest.raises(InvalidRequest):
        policy_space(spare_idle_ops=0)


def test_chunk_with_fewest_buffers_drains_and_is_used_only_when_nothing_else_fits() -> None:
    with policy_space(chunk_size=CHUNK, spare_chunks=0) as space:
        a = [space.alloc(16 * KiB) for _ in range(4)]
        b = [space.alloc(16 * KiB) for _ in range(4)]
        c = [space.alloc(n * KiB) for n in (32, 16, 16)]
        d = [space.alloc(16 * KiB) for _ in range(4)]
        chunks = [{_chunk_of(x) for x in group} for group in (a, b, c, d)]
        assert all(len(s) == 1 for s in chunks) and len(set.union(*chunks)) == 4
        chunk_a, _, chunk_c, chunk_d = (s.pop() for s in chunks)
        for buf in (a[3], c[1], d[3]):
            space.free(buf)
        # A and D: 3 buffers and a 16 KiB hole each; C: 2 buffers (48 KiB) and a 16 KiB hole.
        # C holds the fewest buffers: it drains, though only 48 KiB of 256 KiB are free
        stats = space.stats()
        assert stats["draining_chunks"] == 1 and stats["draining_used_bytes"] == 48 * KiB
        # three equal holes: C's is skipped, then the lowest address wins
        first = space.alloc(16 * KiB)
        assert _chunk_of(first) == min(chunk_a, chunk_d)
        second = space.alloc(16 * KiB)
        assert _chunk_of(second) == max(chunk_a, chunk_d)
        # now 16 KiB fits only in C: the draining chunk is used rather than a new chunk
        third = space.alloc(16 * KiB)
        assert _chunk_of(third) == chunk_c
        assert space.stats()["chunks_acquired"] == 4
        for buf in (c[0], c[2], third):  # C empties and goes back (no spare kept)
            space.free(buf)
        stats = space.stats()
        assert stats["chunks"] == 3 and stats["chunks_released"] == 1
        assert stats["draining_chunks"] == 1  # another chunk drains now
        for buf in (*a[:3], *b, *d[:3], first, second):
            space.free(buf)
        assert space.stats()["held_bytes"] == 0


def test_after_the_live_set_shrinks_churn_gives_chunks_back() -> None:
    rng = random.Random(1)

    def size() -> int:
        return int(2 ** rng.uniform(6, 14))

    with policy_space(chunk_size=256 * KiB) as space:
        live = [space.alloc(size(), boundary=16 * KiB) for _ in range(1500)]
        peak_chunks = space.stats()["chunks"]
        for index in rng.sample(range(len(live)), 1000):  # two thirds go away at random
            space.free(live[index])
        live = [buf for buf in live if not buf.freed]
        for _ in range(3000):  # steady churn at the smaller live set
            index = rng.randrange(len(live))
            space.free(live[index])
            live[index] = space.alloc(size(), boundary=16 * KiB)
        stats = space.stats()
        # best fit alone keeps 16-18 of the 17-18 peak chunks here (each keeps a few live
        # buffers, efficiency about 0.3); draining gives about half of them back
        assert stats["chunks"] <= peak_chunks * 2 // 3
        assert stats["live_bytes"] / stats["held_bytes"] >= 0.45
        for buf in live:
            space.free(buf)
        assert space.stats()["held_bytes"] == 0


def test_one_chunk_drains_until_a_quarter_is_free_then_more() -> None:
    """A dense heap drains only the chunk holding the fewest buffers; once the live set has
    shrunk (a quarter of the bytes free) the emptiest chunks drain too."""
    with policy_space(chunk_size=CHUNK, spare_chunks=0) as space:
        bufs = [space.alloc(16 * KiB) for _ in range(32)]  # 8 full chunks, 512 KiB
        assert space.stats()["chunks"] == 8
        assert space.stats()["draining_chunks"] == 1  # all hold 4 buffers: the first found
        for buf in bufs[0:20:4]:  # 80 KiB free (15.6 %): more than a chunk, less than 1/4
            space.free(buf)
        assert space.stats()["draining_chunks"] == 1
        refill = [space.alloc(16 * KiB) for _ in range(4)]  # 4 of the 5 holes take them
        assert space.stats()["chunks_acquired"] == 8
        for buf in bufs[1:32:4] + refill[:3]:  # 8 more go + 3 refills: 176 KiB free (34 %)
            space.free(buf)
        assert space.stats()["draining_chunks"] >= 2
        for buf in [*bufs, *refill]:
            if not buf.freed:
                space.free(buf)
        assert space.stats()["held_bytes"] == 0


def test_a_buffer_goes_next_to_its_larger_neighbour() -> None:
    with policy_space(chunk_size=CHUNK) as space:
        x = space.alloc(8 * KiB)
        y = space.alloc(4 * KiB)
        z = space.alloc(32 * KiB)  # 20 KiB stay free up to the 64 KiB line
        assert (y.device_address, z.device_address) == (x.end, y.end)
        space.free(y)  # a 4 KiB hole between x (8 KiB) and z (32 KiB)
        small = space.alloc(1 * KiB)
        assert small.end == z.device_address  # by z; the 3 KiB remainder stays by x
        top = space.alloc(16 * KiB)  # the free room runs from z to the line: by z
        assert top.device_address == z.end
        for buf in (x, z, small, top):
            space.free(buf)


class _ShuffledHugepages:
    """2 MiB chunks at shuffled 2 MiB-aligned addresses, as the hugepage backend gets them
    (physical pages in no particular order); anonymous memory, so no hugepages are needed."""

    backend = "emulated"
    page_sizes: tuple[int, ...] = (2 << 20,)

    def __init__(self, seed: int) -> None:
        self._free = [(1 << 32) + i * (2 << 20) for i in range(256)]
        random.Random(seed).shuffle(self._free)

    def acquire(self, size: int, limit: int | None) -> Chunk:
        memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        return Chunk(self._free.pop(), size, memoryview(memory), handle=memory)

    def release(self, chunk: Chunk) -> None:
        self._free.append(chunk.device_address)
        chunk.view.release()
        chunk.handle.close()

    def close(self) -> None:
        return None


def test_churn_trace_on_shuffled_2m_chunks_keeps_its_measured_efficiency() -> None:
    """The churn trace of ``bench allocator`` over six of its seeds on 2 MiB chunks at shuffled
    addresses. Measured with the policy of allocator/heap.py: live/held after the churn 0.815,
    0.874, 0.837, 0.859, 0.815, 0.835 (mean 0.839), and 0.819 averaged over samples every 1000
    swaps of the churn's second half. The bounds leave about one seed's chunk of margin (one
    chunk more moves the mean by ~0.013); fullest-chunk-first placement (0.72 over 24 seeds) or
    placing next to a LINE instead of the larger neighbour (0.814 here) fail it."""
    ends: list[float] = []
    samples: list[float] = []
    for k in range(6):
        initial, swaps = trace(2000, 20000, SEED + k)
        with HeapDmaSpace(_ShuffledHugepages(k)) as space:
            live = [space.alloc(n, align=ALIGN, boundary=BOUNDARY) for n in initial]
            for step, (index, size) in enumerate(swaps):
                space.free(live[index])
                live[index] = space.alloc(size, align=ALIGN, boundary=BOUNDARY)
                if step >= 10_000 and step % 1000 == 999:
                    stats = space.stats()
                    samples.append(stats["live_bytes"] / stats["held_bytes"])
            stats = space.stats()
            ends.append(stats["live_bytes"] / stats["held_bytes"])
            for buf in live:
                space.free(buf)
            assert space.stats()["held_bytes"] == 0
    assert sum(ends) / len(ends) >= 0.82, ends
    assert sum(samples) / len(samples) >= 0.805
