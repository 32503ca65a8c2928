"""Property tests of the shared sub-allocator over random alloc/free sequences (emulated space):
alignment, boundary, limit, no overlap, reuse, translation round trips, zeroing, page return."""

from __future__ import annotations

import itertools
import threading
from typing import Any

from dbc_harness.allocator import DmaBuffer, DmaFault, EmulatedDmaSpace
from hypothesis import given, settings
from hypothesis import strategies as st

KiB = 1 << 10
BASE = 0x1_0000_0000

request = st.tuples(
    st.integers(1, 96 * KiB),  # size
    st.integers(0, 16),  # log2 align
    st.sampled_from([0, 4 * KiB, 64 * KiB, 128 * KiB]),  # boundary
    st.sampled_from([None, BASE + (8 << 20), BASE + (64 << 20)]),  # limit
)
ops = st.lists(st.one_of(request, st.integers(0, 1000)), min_size=1, max_size=60)


def _check_placement(buf: DmaBuffer, align: int, boundary: int, limit: int | None) -> None:
    assert buf.device_address % align == 0
    if boundary:
        assert buf.device_address // boundary == (buf.end - 1) // boundary
    if limit is not None:
        assert buf.end <= limit


def _check_no_overlap(live: list[tuple[DmaBuffer, int]], guard: int) -> None:
    spans = sorted((b.device_address, b.end + guard) for b, _ in live)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start


@settings(max_examples=60, deadline=None)
@given(ops=ops, guard=st.sampled_from([0, 64]), chunk_log=st.sampled_from([17, 21]))
def test_random_sequences_keep_every_promise(
    ops: list[tuple[int, int, int, int | None] | int], guard: int, chunk_log: int
) -> None:
    space = EmulatedDmaSpace(base=BASE, size=1 << 31, chunk_size=1 << chunk_log, guard=guard)
    live: list[tuple[DmaBuffer, int]] = []  # (buffer, fill byte)
    fill = 0
    with space:
        for op in ops:
            if isinstance(op, int):
                if not live:
                    continue
                buf, _ = live.pop(op % len(live))
                address = buf.device_address
                space.free(buf)
                try:
                    space.device_read(address, 1)
                    still_live = any(b.contains(address) for b, _ in live)
                    assert still_live, "a freed address stayed device-readable"
                except DmaFault:
                    pass
                continue
            size, align_log, boundary, limit = op
            align = 1 << align_log
            if boundary and size > boundary:
                continue
            buf = space.alloc(size, align=align, boundary=boundary, limit=limit)
            _check_placement(buf, align, boundary, limit)
            assert buf.size == size and len(buf.view) == size
            assert not any(buf.view), "memory not zeroed on allocation"
            if guard:
                assert space.device_read(buf.end, guard) == bytes(guard)
            fill = fill % 255 + 1
            buf.view[:] = bytes([fill]) * size
            live.append((buf, fill))
            _check_no_overlap(live, guard)
            for offset in {0, size // 3, size - 1}:
                address = buf.device_address_at(offset)
                assert space.lookup(address) == (buf, offset)
                assert buf.contiguous_length(address) == size - offset
                assert space.device_read(address, 1) == bytes([fill])
        stats = space.stats()
        assert stats["live_bytes"] == sum(b.size for b, _ in live)
        for buf, byte in live:  # nothing was overwritten by a neighbour
            assert bytes(buf.view) == bytes([byte]) * buf.size
            space.free(buf)
        assert space.stats()["held_bytes"] == 0
        assert space.stats()["live_buffers"] == 0


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 32 * KiB), min_size=1, max_size=40))
def test_freed_space_is_reused_without_taking_new_chunks(sizes: list[int]) -> None:
    # one 2 MiB chunk holds every list: freed space must be reused, never a new chunk taken;
    # at the default 64 KiB granule emptied chunks go back, but the footprint never grows
    for chunk_size, same_chunks in ((2 << 20, True), (None, False)):
        kwargs: dict[str, Any] = {} if chunk_size is None else {"chunk_size": chunk_size}
        # the reuse policy itself: no sanitizer quarantine (it delays reuse by design)
        with EmulatedDmaSpace(spare_chunks=1, sanitize=False, **kwargs) as space:
            keep = space.alloc(64)  # keeps one chunk alive across the cycles
            bufs = [space.alloc(n, boundary=64 * KiB) for n in sizes]
            acquired = space.stats()["chunks_acquired"]
            held = space.stats()["held_bytes"]
            for _ in range(3):
                for buf in bufs:
                    space.free(buf)
                bufs = [space.alloc(n, boundary=64 * KiB) for n in sizes]
                assert all(not any(b.view) for b in bufs)
                assert space.stats()["held_bytes"] <= held
            if same_chunks:
                assert space.stats()["chunks_acquired"] == acquired
            for buf in bufs:
                space.free(buf)
            space.free(keep)
            assert space.stats()["held_bytes"] == 0


def test_hysteresis_keeps_one_spare_chunk_while_buffers_live() -> None:
    with EmulatedDmaSpace(chunk_size=1 << 21, spare_chunks=1) as space:
        keep = space.alloc(64)
        big = [space.alloc(1 << 21) for _ in range(3)]  # one chunk each
        assert space.stats()["chunks"] == 4
        for buf in big:
            space.free(buf)
        stats = space.stats()
        assert stats["chunks"] == 2 and stats["spare_chunks"] == 1
        again = space.alloc(1 << 21)  # served by the spare: no new chunk
        assert space.stats()["chunks_acquired"] == 4
        space.free(again)
        space.free(keep)
        assert space.stats()["held_bytes"] == 0


def test_threads_allocating_and_freeing_concurrently_never_overlap() -> None:
    space = EmulatedDmaSpace()
    results: list[list[DmaBuffer]] = []
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            mine: list[DmaBuffer] = []
            for i in range(300):
                mine.append(space.alloc(64 + (seed * 131 + i * 37) % 3000, boundary=4096))
                if i % 3 == 0:
                    space.free(mine.pop(0))
            results.append(mine)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    bufs = [b for mine in results for b in mine]
    assert len(bufs) == 4 * 200
    spans = sorted((b.device_address, b.end) for b in bufs)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert space.stats()["live_buffers"] == len(bufs)
    space.close()
    assert space.stats()["held_bytes"] == 0
