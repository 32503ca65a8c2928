"""The hugepage backend on this machine's real hugepages (marker ``hugepages``: skipped with the
reason when not root or when hugepages cannot be reserved), plus the reservation logic on a
stand-in sysfs directory (always runs)."""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbc_harness.allocator import (
    AddressLimitUnsatisfiable,
    DmaBuffer,
    HugepageDmaSpace,
    HugepageReservation,
    HugepagesUnavailable,
)
from dbc_harness.allocator.reservation import free_hugepages

NR = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
HUGE = 2 << 20
PAGES = 4


def _nr() -> int:
    return int(NR.read_text())


@pytest.fixture
def reservation() -> Iterator[HugepageReservation]:
    if os.geteuid() != 0:
        pytest.skip("hugepage tests need root (to reserve hugepages and read physical addresses)")
    if not NR.exists():
        pytest.skip(f"{NR} does not exist: no 2 MiB hugepages on this kernel")
    try:
        res = HugepageReservation(PAGES)
    except HugepagesUnavailable as exc:
        pytest.skip(f"cannot reserve {PAGES} hugepages: {exc}")
    with res:
        yield res


def _physical_independently(buf: DmaBuffer) -> list[int]:
    """Physical address of every 4 KiB page of ``buf`` from a fresh pagemap read (not ours)."""
    vaddr = ctypes.addressof(ctypes.c_char.from_buffer(buf.view))
    first, last = vaddr // 4096, (vaddr + buf.size - 1) // 4096
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(first * 8)
        raw = pagemap.read((last - first + 1) * 8)
    entries = struct.unpack(f"<{last - first + 1}Q", raw)
    assert all(entry >> 63 for entry in entries), "page not present"
    return [(entry & ((1 << 55) - 1)) * 4096 for entry in entries]


@pytest.mark.hugepages
def test_device_addresses_are_physical_and_contiguous(reservation: HugepageReservation) -> None:
    with HugepageDmaSpace(reservation=reservation) as space:
        bufs = [space.alloc(n, align=64, boundary=64 << 10) for n in (64, 4096, 60000)]
        bufs.append(space.alloc(1536 << 10, align=4096))
        for buf in bufs:
            frames = _physical_independently(buf)
            offset = buf.device_address % 4096
            assert frames[0] + offset == buf.device_address
            assert frames == [frames[0] + 4096 * i for i in range(len(frames))]
            buf.view[:] = b"\x5a" * buf.size
            assert space.device_read(buf.device_address, buf.size) == buf.view.tobytes()
        for buf in bufs:
            space.free(buf)
        assert space.stats()["held_bytes"] == 0


@pytest.mark.hugepages
def test_reservation_raises_only_what_is_missing_and_restores(
    reservation: HugepageReservation,
) -> None:
    before = _nr()
    free = free_hugepages()
    with HugepageReservation(free) as nothing_missing:
        assert not nothing_missing.active and _nr() == before
    with HugepageReservation(free + 2) as more:
        assert more.added == 2 and _nr() == before + 2
    assert _nr() == before


@pytest.mark.hugepages
def test_reservation_restored_at_interpreter_exit(reservation: HugepageReservation) -> None:
    before = _nr()
    child = textwrap.dedent(
        f"""
        from dbc_harness.allocator import HugepageReservation
        r = HugepageReservation({free_hugepages() + 1})
        print(r.added, flush=True)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "1"  # it did raise nr_hugepages ...
    assert _nr() == before  # ... and put it back when the interpreter exited


@pytest.mark.hugepages
def test_limit_below_4gib_fails_cleanly_or_is_honoured(
    reservation: HugepageReservation,
) -> None:
    with HugepageDmaSpace(reservation=reservation) as space:
        keep = space.alloc(64)
        before, free = space.stats(), free_hugepages()
        try:
            buf = space.alloc(4096, limit=1 << 32)
        except AddressLimitUnsatisfiable:
            after = space.stats()
            assert after["held_bytes"] == before["held_bytes"]
            assert after["live_bytes"] == before["live_bytes"]
            assert free_hugepages() == free  # the page above the limit went back
        else:  # a machine whose hugepages sit below 4 GiB
            assert buf.end <= 1 << 32
        space.free(keep)


@pytest.mark.hugepages
def test_unprivileged_process_is_told_it_needs_privilege(
    reservation: HugepageReservation,
) -> None:
    # the child drops root after start-up (the interpreter may live where nobody cannot read)
    child = textwrap.dedent(
        """
        import ctypes, os, sys
        from dbc_harness.allocator import HugepageDmaSpace, PrivilegeRequired
        os.setgid(65534)
        os.setuid(65534)
        if sys.argv[1] == "dumpable":  # /proc/self readable again: pagemap shows PFN 0
            ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
        try:
            HugepageDmaSpace().alloc(64)
        except PrivilegeRequired as exc:
            print("PrivilegeRequired:", exc)
        """
    )
    for mode, says in (("dumpable", "PFN 0"), ("plain", "cannot open")):
        out = subprocess.run(
            [sys.executable, "-c", child, mode], capture_output=True, text=True, timeout=60
        )
        assert out.stdout.startswith("PrivilegeRequired:"), out.stderr
        assert says in out.stdout and "CAP_SYS_ADMIN" in out.stdout


@pytest.mark.hugepages
def test_churn_trace_passes_on_hugepages(reservation: HugepageReservation) -> None:
    from dbc_harness.harness.benchmarks import allocator as bench

    before = _nr()
    result = bench.run(quick=True, backend="hugepage")
    assert result["backend"] == "hugepage"
    assert result["alignment_violations"] == 0
    assert result["boundary_violations"] == 0
    assert result["bytes_held_after_free_all"] == 0
    assert _nr() == before


def test_shortfall_names_the_sysfs_file_and_restores(tmp_path: Path) -> None:
    # a stand-in sysfs whose "kernel" never finds free pages (fragmented memory)
    size_dir = tmp_path / "hugepages-2048kB"
    size_dir.mkdir()
    (size_dir / "nr_hugepages").write_text("3\n")
    (size_dir / "free_hugepages").write_text("1\n")
    with pytest.raises(HugepagesUnavailable) as info:
        HugepageReservation(4, sysfs=tmp_path)
    assert str(size_dir / "nr_hugepages") in str(info.value)
    assert (size_dir / "nr_hugepages").read_text().strip() == "3"


def test_missing_page_size_is_named(tmp_path: Path) -> None:
    with pytest.raises(HugepagesUnavailable, match="hugepages-1048576kB"):
        HugepageReservation(1, size_kb=1 << 20, sysfs=tmp_path)


def test_no_free_hugepages_names_the_file_to_write() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to read physical addresses")
    if free_hugepages() or free_hugepages(1 << 20):
        pytest.skip("hugepages are free on this machine: no shortfall to observe")
    with pytest.raises(HugepagesUnavailable, match="nr_hugepages"):
        HugepageDmaSpace().alloc(64)


def test_small_pages_serve_one_page_requests_without_hugepages() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to read physical addresses")
    with HugepageDmaSpace(small_pages=True) as space:
        buf = space.alloc(1000, align=64, boundary=4096)
        assert space.stats()["held_bytes"] == 4096
        frames = _physical_independently(buf)
        assert frames[0] + buf.device_address % 4096 == buf.device_address
        space.free(buf)
        assert space.stats()["held_bytes"] == 0


def test_request_above_2mib_needs_a_1gib_page_and_says_so() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to read physical addresses")
    if free_hugepages(1 << 20):
        pytest.skip("1 GiB hugepages are free here: the request would succeed")
    with HugepageDmaSpace() as space, pytest.raises(HugepagesUnavailable) as info:
        space.alloc(3 << 20)
    assert "hugepages-1048576kB/nr_hugepages" in str(info.value)
    assert space.stats()["held_bytes"] == 0
