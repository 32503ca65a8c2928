"""Chunk return policy of the heap as a user sees it: an idle spare chunk goes back after the
hysteresis, and once the live set has shrunk the emptiest chunk is drained (placement avoids
it while requests fit elsewhere) so it can go back instead of being refilled."""

from __future__ import annotations

import random
from typing import Any

import pytest
from dbc_harness.allocator import DmaBuffer, EmulatedDmaSpace, InvalidRequest

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


def test_emptiest_chunk_is_drained_and_used_only_when_nothing_else_fits() -> None:
    with policy_space(chunk_size=CHUNK, spare_chunks=0) as space:
        a = [space.alloc(16 * KiB) for _ in range(4)]
        b = [space.alloc(16 * KiB) for _ in range(4)]
        c = [space.alloc(n * KiB) for n in (12, 20, 16, 16)]
        d = [space.alloc(16 * KiB) for _ in range(4)]
        chunks = [{_chunk_of(x) for x in group} for group in (a, b, c, d)]
        assert all(len(s) == 1 for s in chunks) and len(set.union(*chunks)) == 4
        chunk_a, _, chunk_c, chunk_d = (s.pop() for s in chunks)
        for buf in (a[2], a[3], c[1], c[3], d[3]):
            space.free(buf)
        # A: 32 KiB used, one 32 KiB hole; C: 28 KiB used, holes of 20 and 16 KiB; D: 16 KiB
        # hole. 84 KiB free in non-empty chunks: C (the emptiest) can move into the others.
        stats = space.stats()
        assert stats["draining_chunks"] == 1 and stats["draining_used_bytes"] == 28 * KiB
        # best fit alone would take C's exact 20 KiB hole; the draining chunk is skipped
        first = space.alloc(20 * KiB)
        assert _chunk_of(first) == chunk_a
        # now 20 KiB fits only in C: the draining chunk is used rather than taking a new chunk
        second = space.alloc(20 * KiB)
        assert _chunk_of(second) == chunk_c
        stats = space.stats()
        assert stats["chunks_acquired"] == 4
        # 44 KiB free outside C's 48 KiB used: C can no longer empty, nothing is avoided
        assert stats["draining_chunks"] == 0
        third = space.alloc(16 * KiB)  # plain best fit again: C's 16 KiB hole comes first
        assert _chunk_of(third) in (chunk_c, chunk_d)
        for buf in (c[0], c[2], second, third):
            space.free(buf)
        if _chunk_of(third) == chunk_c:  # C emptied and went back (no spare kept)
            stats = space.stats()
            assert stats["chunks"] == 3 and stats["chunks_released"] == 1
        for buf in (a[0], a[1], *b, d[0], d[1], d[2], first):
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


def test_a_dense_heap_drains_nothing_until_a_quarter_is_free() -> None:
    """Draining leaves a chunk's holes unused: only worth it once the live set has shrunk."""
    with policy_space(chunk_size=CHUNK, spare_chunks=0) as space:
        bufs = [space.alloc(16 * KiB) for _ in range(32)]  # 8 full chunks, 512 KiB
        assert space.stats()["chunks"] == 8
        for buf in bufs[0:20:4]:  # 80 KiB free (15.6 %): more than a chunk, less than 1/4
            space.free(buf)
        assert space.stats()["draining_chunks"] == 0
        refill = [space.alloc(16 * KiB) for _ in range(5)]  # the holes take them all
        assert space.stats()["chunks_acquired"] == 8
        for buf in bufs[1:32:4] + refill[:3]:  # 8 more go + 3 refills: 176 KiB free (34 %)
            space.free(buf)
        assert space.stats()["draining_chunks"] >= 1
        for buf in [*bufs, *refill]:
            if not buf.freed:
                space.free(buf)
        assert space.stats()["held_bytes"] == 0
