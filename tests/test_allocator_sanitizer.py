"""The allocator's sanitizer as a user meets it: freed memory is poisoned and quarantined, use
after free is named with the buffer's allocation and free sites (CPU side when the memory
leaves quarantine, device side at once), and forged or foreign buffers are refused."""

from __future__ import annotations

import dataclasses
import inspect
import sys

import pytest
from dbc_harness.allocator import (
    DmaBuffer,
    DmaFault,
    DoubleFree,
    EmulatedDmaSpace,
    ForeignBuffer,
    HugepageDmaSpace,
    IovaDmaSpace,
    UseAfterFree,
)
from dbc_harness.allocator.heap import POISON_BYTE, QUARANTINE_MAX_BUFFERS

KiB = 1 << 10
HERE = "tests/test_allocator_sanitizer.py"


def _line_of(marker: str) -> int:
    """Line number of the source line of this file that contains ``marker``."""
    lines = inspect.getsource(sys.modules[__name__]).splitlines()
    return next(i for i, text in enumerate(lines, 1) if marker in text and "_line_of" not in text)


def test_cpu_write_through_a_stale_slice_is_named_when_it_leaves_quarantine() -> None:
    with EmulatedDmaSpace() as space:
        keep = space.alloc(64)
        buf = space.alloc(256)  # ALLOC-SITE-CPU
        stale = buf.view[16:32]  # a slice taken before free(): it cannot be revoked
        address = buf.device_address
        space.free(buf)  # FREE-SITE-CPU
        with pytest.raises(ValueError):
            buf.view[0] = 1  # the buffer's own view is released at free()
        assert bytes(stale) == bytes([POISON_BYTE]) * 16  # freed memory reads as poison
        stale[4:8] = b"evil"
        # while quarantined, the memory is not handed out again: the write hits nobody
        again = [space.alloc(256) for _ in range(8)]
        assert all(not (b.device_address <= address < b.end) for b in again)
        for b in again:
            space.free(b)
        with pytest.raises(UseAfterFree) as info:
            space.free(keep)  # the last live buffer: the quarantine empties and is checked
        err = info.value
        assert err.side == "cpu"
        assert err.address == address + 20 and err.length == 4
        assert err.buffer_address == address and err.buffer_size == 256
        assert f"{HERE}:{_line_of('# ALLOC-SITE-CPU')}" in str(err)
        assert f"{HERE}:{_line_of('# FREE-SITE-CPU')}" in str(err)
        # the free that found it still completed: nothing is live or held, no second report
        assert keep.freed
        assert space.stats()["held_bytes"] == 0 and space.stats()["use_after_free"] == 1


def test_a_stale_write_is_found_when_the_bound_pushes_the_buffer_out() -> None:
    with EmulatedDmaSpace(quarantine_bytes=4 * KiB) as space:
        keep = space.alloc(64)
        victim = space.alloc(1 * KiB)
        stale = victim.view
        stale_slice = stale[:8]
        space.free(victim)
        stale_slice[7] = 0
        others = [space.alloc(1 * KiB) for _ in range(4)]
        for other in others[:3]:
            space.free(other)  # 4 KiB in quarantine: still within the bound
        with pytest.raises(UseAfterFree) as info:
            space.free(others[3])  # 5 KiB: the oldest (the victim) leaves and is checked
        assert info.value.address == victim.device_address + 7
        assert space.stats()["quarantined_bytes"] <= 4 * KiB
        # the tainted memory was zeroed like any other before it is handed out again
        fresh = [space.alloc(1 * KiB) for _ in range(8)]
        assert all(not any(b.view) for b in fresh)
        for b in fresh:
            space.free(b)
        space.free(keep)


def test_device_access_to_a_freed_buffer_faults_at_once_naming_both_sites() -> None:
    with EmulatedDmaSpace() as space:
        keep = space.alloc(64)
        ring = space.alloc(1024, align=64)  # ALLOC-SITE-DEV
        address = ring.device_address
        space.free(ring)  # FREE-SITE-DEV
        for access in (
            lambda: space.device_write(address + 16, b"\x01" * 16),
            lambda: space.device_view(address, 16),
            lambda: space.device_read(address + 1000, 24),
        ):
            with pytest.raises(UseAfterFree) as info:
                access()
            assert isinstance(info.value, DmaFault)  # a device model reports it as a fault
            assert info.value.side == "device"
            assert f"{HERE}:{_line_of('# ALLOC-SITE-DEV')}" in str(info.value)
            assert f"{HERE}:{_line_of('# FREE-SITE-DEV')}" in str(info.value)
        assert space.stats()["use_after_free"] == 3
        space.free(keep)  # the faulted accesses wrote nothing: the poison is intact


def test_pool_blocks_are_quarantined_and_checked_too() -> None:
    with EmulatedDmaSpace() as space:
        pool = space.pool(64, align=64)
        keep = pool.alloc()
        block = pool.alloc()  # ALLOC-SITE-POOL
        stale = block.view[:4]
        pool.free(block)
        with pytest.raises(UseAfterFree):
            space.device_read(block.device_address, 4)
        following = [pool.alloc() for _ in range(4)]
        assert block.device_address not in {b.device_address for b in following}
        stale[0] = 1
        for b in following:
            pool.free(b)
        with pytest.raises(UseAfterFree) as info:
            pool.free(keep)
        assert f"{HERE}:{_line_of('# ALLOC-SITE-POOL')}" in str(info.value)
        assert pool.stats()["pages"] == 0 and space.stats()["held_bytes"] == 0


def test_closing_a_pool_checks_its_quarantined_blocks() -> None:
    with EmulatedDmaSpace() as space:
        other = space.alloc(64)
        pool = space.pool(128)
        block = pool.alloc()
        stale = block.view[:1]
        pool.free(block)
        stale[0] = 0x55
        with pytest.raises(UseAfterFree):
            pool.close()
        assert space.stats()["quarantined_buffers"] == 0
        space.free(other)
        assert space.stats()["held_bytes"] == 0


def test_quarantine_is_bounded_in_bytes_and_buffers() -> None:
    with EmulatedDmaSpace(quarantine_bytes=64 * KiB) as space:
        keep = space.alloc(64)
        for _ in range(200):
            space.free(space.alloc(1 * KiB))
            stats = space.stats()
            assert stats["quarantined_bytes"] <= 64 * KiB
        assert stats["quarantined_buffers"] == 64  # full: 64 x 1 KiB
        assert stats["held_bytes"] <= 3 * 64 * KiB  # bounded: freed memory is reused
        space.free(keep)
        assert space.stats()["quarantined_bytes"] == space.stats()["held_bytes"] == 0
    with EmulatedDmaSpace(quarantine_bytes=1 << 30) as space:
        keep = space.alloc(64)
        for _ in range(QUARANTINE_MAX_BUFFERS + 50):
            space.free(space.alloc(64))
        assert space.stats()["quarantined_buffers"] == QUARANTINE_MAX_BUFFERS
        space.free(keep)


def test_legit_reuse_passes_and_quarantine_zero_reuses_at_once() -> None:
    with EmulatedDmaSpace(quarantine_bytes=0) as space:
        keep = space.alloc(64)
        buf = space.alloc(4096, align=4096)
        address = buf.device_address
        buf.view[:] = b"\xaa" * 4096
        space.free(buf)
        again = space.alloc(4096, align=4096)
        assert again.device_address == address and not any(again.view)
        space.free(again)
        space.free(keep)
    assert space.stats()["use_after_free"] == 0


def test_forged_buffer_carrying_a_live_buffers_fields_is_refused() -> None:
    with EmulatedDmaSpace() as space:
        live = space.alloc(256)
        forged = DmaBuffer(space, live.device_address, live.size, live.view, meta=live.meta)
        with pytest.raises(ForeignBuffer):
            space.free(forged)
        with pytest.raises(ForeignBuffer):
            space.free(dataclasses.replace(live))  # a copy is not the buffer either
        assert space.lookup(live.device_address) == (live, 0)
        assert space.stats()["live_buffers"] == 1
        space.free(live)  # the real one still frees normally
        with pytest.raises(ForeignBuffer):
            space.free(dataclasses.replace(live))  # a copy of a freed buffer: not a double free
        with pytest.raises(DoubleFree) as info:
            space.free(live)
        assert HERE in str(info.value)  # names where it was allocated and freed


def test_altered_address_never_unregisters_another_live_buffer() -> None:
    with EmulatedDmaSpace() as space:
        a = space.alloc(64, align=64)
        b = space.alloc(64, align=64)
        lo, hi = sorted((a, b), key=lambda x: x.device_address)
        with pytest.raises(dataclasses.FrozenInstanceError):
            lo.device_address += 8  # type: ignore[misc]  # buffers are frozen
        for delta in (8, 64, -64):
            with pytest.raises(ForeignBuffer):
                space.free(dataclasses.replace(lo, device_address=lo.device_address + delta))
        with pytest.raises(ForeignBuffer):
            space.free(dataclasses.replace(lo, size=128))
        assert space.stats()["live_buffers"] == 2
        assert space.lookup(hi.device_address) == (hi, 0)
        space.free(hi)
        space.free(lo)
        assert space.stats()["held_bytes"] == 0


def test_buffers_of_another_space_and_other_objects_are_refused() -> None:
    with EmulatedDmaSpace() as one, EmulatedDmaSpace() as two:
        theirs = two.alloc(64)
        mine = one.alloc(64)
        with pytest.raises(ForeignBuffer):
            one.free(theirs)
        # the other space's buffer relabelled as ours, even at one of our live addresses
        relabelled = dataclasses.replace(theirs, space=one, device_address=mine.device_address)
        with pytest.raises(ForeignBuffer):
            one.free(relabelled)
        for junk in (None, "0x1000", 0x1000, mine.view):
            with pytest.raises(ForeignBuffer):
                one.free(junk)  # type: ignore[arg-type]  # not buffers, on purpose
        pool = one.pool(64)
        with pytest.raises(ForeignBuffer):
            pool.free(dataclasses.replace(mine))
        assert one.stats()["live_buffers"] == two.stats()["live_buffers"] == 1
        one.free(mine)
        two.free(theirs)


def test_sanitizer_off_reuses_at_once_and_faults_plainly() -> None:
    with EmulatedDmaSpace(sanitize=False) as space:
        keep = space.alloc(64)
        buf = space.alloc(256)
        stale = buf.view[:4]
        address = buf.device_address
        space.free(buf)
        with pytest.raises(DmaFault) as info:
            space.device_read(address, 4)
        assert not isinstance(info.value, UseAfterFree)
        assert bytes(stale) == bytes(4)  # not poisoned
        assert space.stats()["quarantined_bytes"] == 0
        with pytest.raises(DoubleFree):
            space.free(buf)
        with pytest.raises(ForeignBuffer):  # identity checks do not depend on the sanitizer
            space.free(dataclasses.replace(keep))
        space.free(keep)


def test_defaults_on_for_the_virtual_bench_off_where_speed_matters() -> None:
    assert EmulatedDmaSpace().sanitize is True
    for cls in (HugepageDmaSpace, IovaDmaSpace):
        assert inspect.signature(cls).parameters["sanitize"].default is False
