"""BlockCache.close() gives every block back and reports what the sanitizer found meanwhile."""

from __future__ import annotations

import pytest
from dbc_harness.allocator import EmulatedDmaSpace, UseAfterFree
from dbc_harness.drivers.dbc.datapath import SMALL_BLOCK, BlockCache


def test_close_raises_the_use_after_free_found_while_freeing_its_blocks() -> None:
    with EmulatedDmaSpace(sanitize=True) as space:
        anchor = space.alloc(64)  # something live, so the freed buffer waits in quarantine
        other = space.alloc(64)
        stale = other.view[:8]  # a slice taken before free(): still writable afterwards
        space.free(other)
        stale[:] = b"\x00" * 8  # the CPU writes into quarantined memory
        cache = BlockCache(space, SMALL_BLOCK, limit=None)
        cache.get()
        space.free(anchor)
        # freeing the cache's block leaves nothing live: the quarantine is checked then
        with pytest.raises(UseAfterFree) as info:
            cache.close()
        assert info.value.side == "cpu" and info.value.buffer_address == other.device_address
        stats = space.stats()  # everything was still given back
        assert stats["live_buffers"] == 0 and stats["held_bytes"] == 0


def test_close_of_a_clean_cache_raises_nothing() -> None:
    with EmulatedDmaSpace(sanitize=True) as space:
        cache = BlockCache(space, SMALL_BLOCK, limit=None)
        blocks = [cache.get() for _ in range(3)]
        cache.put(blocks[0])
        cache.close()
        assert space.stats()["held_bytes"] == 0
