"""BlockCache.close() and the driver's stop() give every block back and report what the
sanitizer found meanwhile."""

from __future__ import annotations

import pytest
from dbc_harness.allocator import EmulatedDmaSpace, UseAfterFree
from dbc_harness.drivers.dbc import DbcDriver, DbcState
from dbc_harness.drivers.dbc.datapath import SMALL_BLOCK, BlockCache

from tests.driver_kinds import strict_controller


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


def test_driver_stop_releases_everything_before_raising_a_use_after_free() -> None:
    # The driver frees its pipes, event ring and context in turn; the sanitizer's finding in the
    # first must not leave the rest allocated or the driver in a state other than DISABLED.
    with strict_controller() as x:
        drv = DbcDriver(x.mmio, x.dma, clock=x.clock)
        drv.start(timeout=5.0)
        other = x.dma.alloc(64)
        stale = other.view[:8]  # a slice taken before free(): still writable afterwards
        x.dma.free(other)
        stale[:] = b"\x00" * 8  # the CPU writes into quarantined memory
        with pytest.raises(UseAfterFree):
            drv.stop()
        assert drv.state is DbcState.DISABLED
        stats = x.dma.stats()
        assert stats["live_buffers"] == 0 and stats["held_bytes"] == 0
