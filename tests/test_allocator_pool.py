"""DmaPool (Linux dma_pool semantics) and the named errors of the whole allocator family."""

from __future__ import annotations

import itertools

import pytest
from dbc_harness.allocator import (
    AddressLimitUnsatisfiable,
    DmaError,
    DmaFault,
    DoubleFree,
    EmulatedDmaSpace,
    ForeignBuffer,
    InvalidRequest,
    RequestTooLarge,
    SpaceClosed,
)
from hypothesis import given, settings
from hypothesis import strategies as st

KiB = 1 << 10


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 9000),
    align_log=st.integers(0, 12),
    boundary=st.sampled_from([0, 4 * KiB, 16 * KiB, 64 * KiB]),
    frees=st.lists(st.integers(0, 10_000), max_size=80),
)
def test_pool_blocks_honour_size_align_boundary_and_are_reused(
    size: int, align_log: int, boundary: int, frees: list[int]
) -> None:
    align = 1 << align_log
    if boundary and size > boundary:
        return
    # dma_pool reuse itself: no sanitizer quarantine (it delays reuse by design)
    with (
        EmulatedDmaSpace(sanitize=False) as space,
        space.pool(size, align=align, boundary=boundary) as pool,
    ):
        blocks = [pool.alloc() for _ in range(50)]
        for block in blocks:
            assert block.size == size and not any(block.view)
            assert block.device_address % align == 0
            if boundary:
                assert block.device_address // boundary == (block.end - 1) // boundary
            block.view[:] = b"\xa5" * size
        spans = sorted((b.device_address, b.end) for b in blocks)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
        page_bytes = pool.stats()["page_bytes"]
        held_pages = {b.device_address // page_bytes for b in blocks}
        acquired = space.stats()["chunks_acquired"]
        freed: set[int] = set()
        for index in frees:
            victim = blocks.pop(index % len(blocks)) if blocks else None
            if victim is None:
                break
            freed.add(victim.device_address)
            pool.free(victim)
        again = [pool.alloc() for _ in range(len(freed))]
        assert all(not any(b.view) for b in again), "reused block not zeroed"
        # freed blocks (or never-used blocks of pages the pool already held) are reused first: a
        # page emptied by the frees may have gone back to the heap and another come from it
        # (wherever the heap's placement puts it), but the pool and the heap do not grow
        assert pool.stats()["pages"] <= len(held_pages), "grew instead"
        assert space.stats()["chunks_acquired"] == acquired
        for block in blocks + again:
            assert space.lookup(block.device_address + size - 1) == (block, size - 1)
            pool.free(block)
        assert pool.stats()["pages"] == 0
    assert space.stats()["held_bytes"] == 0


def test_pool_like_xhci_ring_segments_and_contexts() -> None:
    # Linux: ring segments size = align = boundary-ish; contexts 2112 bytes, align 64, PAGESIZE
    with EmulatedDmaSpace(base=0x8000_0000, size=1 << 30) as space:
        segments = space.pool(4096, align=4096, boundary=64 * KiB, limit=1 << 32)
        contexts = space.pool(2112, align=64, boundary=4096)
        segs = [segments.alloc() for _ in range(20)]
        ctxs = [contexts.alloc() for _ in range(20)]
        assert all(s.end <= 1 << 32 and s.device_address % 4096 == 0 for s in segs)
        assert all(c.device_address // 4096 == (c.end - 1) // 4096 for c in ctxs)
        assert contexts.blocks_per_page == 1  # 2112 bytes: only one fits below each 4 KiB line
        for buf in segs:
            segments.free(buf)
        for buf in ctxs:
            contexts.free(buf)


def test_pool_misuse_is_named_and_freed_blocks_fault() -> None:
    with EmulatedDmaSpace() as space:
        one = space.pool(64)
        two = space.pool(64)
        block = one.alloc()
        plain = space.alloc(64)
        with pytest.raises(ForeignBuffer):
            two.free(block)
        with pytest.raises(ForeignBuffer):
            space.free(block)  # a pool block goes back to its pool
        with pytest.raises(ForeignBuffer):
            one.free(plain)
        keep = one.alloc()
        address = block.device_address
        one.free(block)
        with pytest.raises(DoubleFree):
            one.free(block)
        with pytest.raises(DmaFault):
            space.device_read(address, 1)  # the pool page is alive, the block is not
        one.free(keep)
        one.close()
        with pytest.raises(SpaceClosed):
            one.alloc()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"size": 0}, InvalidRequest),
        ({"size": -5}, InvalidRequest),
        ({"size": 64, "align": 48}, InvalidRequest),
        ({"size": 64, "align": 0}, InvalidRequest),
        ({"size": 64, "boundary": 3000}, InvalidRequest),
        ({"size": 8192, "boundary": 4096}, InvalidRequest),
        ({"size": (1 << 30) + 1}, RequestTooLarge),
        ({"size": 64, "align": 1 << 31}, RequestTooLarge),
        ({"size": 64, "limit": 1 << 32}, AddressLimitUnsatisfiable),
        ({"size": 64, "limit": 0}, InvalidRequest),
        ({"size": 8192, "limit": 4096}, AddressLimitUnsatisfiable),
    ],
)
def test_bad_requests_raise_named_errors_and_leak_nothing(
    kwargs: dict[str, int], error: type[DmaError]
) -> None:
    with EmulatedDmaSpace(base=0x1_0000_0000) as space:
        keep = space.alloc(64)
        before = space.stats()
        with pytest.raises(error) as info:
            space.alloc(**kwargs)
        assert isinstance(info.value, DmaError)
        after = space.stats()
        assert after["held_bytes"] == before["held_bytes"]
        assert after["live_bytes"] == before["live_bytes"]
        with pytest.raises(error):  # validation at creation, the limit at the first block
            space.pool(**kwargs).alloc()
        assert space.stats()["held_bytes"] == before["held_bytes"]
        space.free(keep)


def test_buffer_translation_errors() -> None:
    with EmulatedDmaSpace() as space:
        buf = space.alloc(100)
        assert buf.device_address_at(100) == buf.end
        with pytest.raises(InvalidRequest):
            buf.device_address_at(101)
        with pytest.raises(ForeignBuffer):
            buf.contiguous_length(buf.end)
        with pytest.raises(ForeignBuffer):
            space.lookup(buf.end + 4096)
        with pytest.raises(DmaFault):
            space.device_view(buf.device_address, -1)
