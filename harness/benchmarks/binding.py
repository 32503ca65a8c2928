"""``dbc-harness bench binding``: the cost of the binding layer's hot paths on this machine.

* ``mmio_read32_ns`` / ``mmio_write32_ns``: one bounds-checked :class:`MmioRegion`
  access (what the driver pays per register access) on an anonymous mapping; ``raw_*``: a bare
  ``memoryview.cast('I')`` subscript (same 32-bit load/store, no call, no checks);
  ``unchecked_read32_ns``: the same subscript behind a method call, the floor of any Mmio object;
  ``mmio_read32_vs_unchecked``: what the bounds/alignment checks cost on top of that floor;
* ``mmio_read64_ns``: two dword reads (low, then high);
* ``state_write_us``: writing a state file (fsync'd) before a claim changes anything;
* ``discovery_ms``: listing this machine's xHCIs (pyudev + sysfs).
"""

from __future__ import annotations

import mmap
import tempfile
import time
from collections.abc import Callable
from typing import Any

from dbc_harness.harness.binding import state
from dbc_harness.harness.binding.discovery import list_controllers
from dbc_harness.harness.binding.mmio import MmioRegion


def _best_ns(fn: Callable[[], None], ops: int, repeats: int) -> float:
    """Best of ``repeats`` timings of ``fn`` (which does ``ops`` operations), ns per operation."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - t) / ops)
    return best


def run(quick: bool = False) -> dict[str, Any]:
    ops = 20_000 if quick else 200_000
    repeats = 3 if quick else 5
    mapping = mmap.mmap(-1, 0x4000)
    region = MmioRegion(mapping)
    raw = memoryview(mmap.mmap(-1, 0x4000)).cast("I")
    offsets = [0x40, 0x44, 0x1020, 0x2000] * (ops // 4)

    def region_reads() -> None:
        r = region.read32
        for off in offsets:
            r(off)

    def region_writes() -> None:
        w = region.write32
        for off in offsets:
            w(off, 0x1234_5678)

    def raw_reads() -> None:
        for off in offsets:
            raw[off >> 2]

    def raw_writes() -> None:
        for off in offsets:
            raw[off >> 2] = 0x1234_5678

    class Unchecked:
        def read32(self, offset: int) -> int:
            value: int = raw[offset >> 2]
            return value

    unchecked = Unchecked()

    def unchecked_reads() -> None:
        r = unchecked.read32
        for off in offsets:
            r(off)

    def region_reads64() -> None:
        r = region.read64
        for off in offsets:
            r(off)

    read_ns = _best_ns(region_reads, len(offsets), repeats)
    write_ns = _best_ns(region_writes, len(offsets), repeats)
    raw_read_ns = _best_ns(raw_reads, len(offsets), repeats)
    raw_write_ns = _best_ns(raw_writes, len(offsets), repeats)
    read64_ns = _best_ns(region_reads64, len(offsets), repeats)
    unchecked_ns = _best_ns(unchecked_reads, len(offsets), repeats)
    region.close()

    with tempfile.TemporaryDirectory() as d:
        writes = 20 if quick else 100
        st = state.ClaimState("0000:00:14.0", "vfio", "xhci_hcd", None, 7)
        t = time.perf_counter()
        for _ in range(writes):
            state.write(st, d)
        state_us = (time.perf_counter() - t) / writes * 1e6

    t = time.perf_counter()
    found = list_controllers(read_bar0=False)
    discovery_ms = (time.perf_counter() - t) * 1e3

    return {
        "mmio_read32_ns": round(read_ns, 1),
        "mmio_write32_ns": round(write_ns, 1),
        "mmio_read64_ns": round(read64_ns, 1),
        "raw_read32_ns": round(raw_read_ns, 1),
        "raw_write32_ns": round(raw_write_ns, 1),
        "unchecked_read32_ns": round(unchecked_ns, 1),
        "mmio_read32_vs_unchecked": round(read_ns / unchecked_ns, 2),
        "mmio_read32_vs_raw": round(read_ns / raw_read_ns, 2),
        "mmio_write32_vs_raw": round(write_ns / raw_write_ns, 2),
        "state_write_us": round(state_us, 1),
        "discovery_ms": round(discovery_ms, 2),
        "controllers_found": len(found),
    }
