"""``dbc-harness bench allocator``: a churn trace on our allocator and on pmalloc's policy.

The trace (seeded): allocate 2,000 blocks of 64 B-64 KiB (log-uniform), then 20,000 random
free/alloc swaps, then free everything. Every allocation asks align=64 and boundary=64 KiB (the
xHCI TRB data buffer rule). The same trace runs, in the same process and over the same backend's
chunks, on a Python model of pmalloc's policy (bump pointer per block, the first allocation of a
block ignores ``align``, no boundary, freed space never reused, a block given back only when
empty), the allocator LF OS used before. pmalloc's blocks are hugepages, so on the emulated
backend its policy gets 2 MiB chunks (ours get the backend's 64 KiB granule).

Keys: the issue's (``efficiency_after_churn`` = live bytes / held bytes after the churn, ours;
``pmalloc_policy_efficiency_after_churn``; violations; ``bytes_held_after_free_all``; median
alloc/free times; ``backend``) plus context: ``chunk_bytes`` (the backend's granule: 64 KiB
emulated, 2 MiB hugepage), ``efficiency_peak_bound_after_churn`` (final live bytes over the
whole chunks the trace's peak needs), ``efficiency_after_churn_2m_chunks`` (the same policy over
2 MiB emulated chunks, the hugepage backend's granule: the trace's peak fills 10 of them to
98 %, tighter than best fit packs under random frees, so it holds 11) and the device-side
access costs.

Backend: ``dbc-harness bench allocator --backend emulated|hugepage`` (``run(backend=...)``):
"emulated" by default; "hugepage" reserves hugepages for the run (HugepageReservation) and puts
nr_hugepages back afterwards.

Sanitizer: the main keys measure the backend's default configuration (sanitizer on for
emulated, off for hugepage; see :mod:`allocator.heap`). The same trace also runs with the other
setting, in the same run: ``*_sanitizer_on`` / ``*_sanitizer_off`` for efficiency, alloc median
and p99, free median, violations and bytes held after free-all, and the ratios
``sanitizer_efficiency_ratio`` and ``sanitizer_alloc_us_median_ratio`` (on / off). Other
same-run ratios: ``efficiency_ratio_vs_pmalloc_policy``,
``alloc_us_median_ratio_vs_pmalloc_policy`` and ``efficiency_ratio_vs_peak_bound``.
"""

from __future__ import annotations

import inspect
import math
import random
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from dbc_harness.allocator.chunk import Chunk
from dbc_harness.allocator.emulated import EmulatedDmaSpace
from dbc_harness.allocator.heap import ChunkSource, HeapDmaSpace
from dbc_harness.allocator.hugepage import HugepageDmaSpace
from dbc_harness.allocator.reservation import HugepageReservation

SEED = 20240611
MIN_SIZE = 64
MAX_SIZE = 64 * 1024
ALIGN = 64
BOUNDARY = 64 * 1024
HUGEPAGE = 2 << 20


def trace(blocks: int, swaps: int, seed: int = SEED) -> tuple[list[int], list[tuple[int, int]]]:
    """(initial sizes, swaps as (index to free, size of the replacement))."""
    rng = random.Random(seed)
    lo, hi = math.log(MIN_SIZE), math.log(MAX_SIZE)

    def size() -> int:
        return min(MAX_SIZE, int(math.exp(rng.uniform(lo, hi))))

    initial = [size() for _ in range(blocks)]
    return initial, [(rng.randrange(blocks), size()) for _ in range(swaps)]


class PmallocPolicy:
    """pmalloc's policy over a chunk source: bump pointer, no reuse, block freed when empty."""

    def __init__(self, source: ChunkSource) -> None:
        self._source = source
        self._current: Chunk | None = None
        self._bump = 0
        self._live: dict[int, int] = {}  # chunk address -> live allocations
        self._chunks: dict[int, Chunk] = {}

    def alloc(self, size: int, align: int) -> tuple[int, int]:
        """(device address, chunk address) of ``size`` bytes."""
        chunk = self._current
        if chunk is not None:
            address = (chunk.device_address + self._bump + align - 1) // align * align
            if address + size > chunk.end:
                chunk = None
        if chunk is None:
            page = next(p for p in self._source.page_sizes if p >= size)
            chunk = self._source.acquire(page, None)
            self._chunks[chunk.device_address] = chunk
            self._live[chunk.device_address] = 0
            self._retire_current()
            self._current = chunk
            address = chunk.device_address  # first allocation of a block: align ignored
        self._bump = address + size - chunk.device_address
        self._live[chunk.device_address] += 1
        return address, chunk.device_address

    def free(self, chunk_address: int) -> None:
        self._live[chunk_address] -= 1
        current = self._current
        if self._live[chunk_address] == 0 and (
            current is None or current.device_address != chunk_address
        ):
            self._drop(chunk_address)

    def _retire_current(self) -> None:
        current = self._current
        if current is not None and self._live[current.device_address] == 0:
            self._drop(current.device_address)

    def _drop(self, chunk_address: int) -> None:
        del self._live[chunk_address]
        self._source.release(self._chunks.pop(chunk_address))

    @property
    def held_bytes(self) -> int:
        return sum(c.size for c in self._chunks.values())


def efficiency_upper_bound(initial: list[int], swaps: list[tuple[int, int]], chunk: int) -> float:
    """Best efficiency after churn any non-moving allocator can reach with ``chunk``-sized
    backing: the peak live bytes must have fit in whole chunks that cannot be given back while
    they hold anything, so held >= ceil(peak / chunk) chunks unless chunks drain after the peak.
    (An upper bound only when no chunk drains; reported to put the measured number in context.)"""
    sizes = list(initial)
    live = peak = sum(sizes)
    for index, size in swaps:
        live += size - sizes[index]
        sizes[index] = size
        peak = max(peak, live)
    return live / (-(-peak // chunk) * chunk)


def _violations(address: int, size: int) -> tuple[int, int]:
    crosses = address // BOUNDARY != (address + size - 1) // BOUNDARY
    return int(address % ALIGN != 0), int(crosses)


def _run_ours(space: HeapDmaSpace, initial: list[int], swaps: list[tuple[int, int]]) -> dict:
    clock = time.perf_counter_ns
    alloc_ns: list[int] = []
    free_ns: list[int] = []
    bad_align = bad_boundary = 0

    def alloc(size: int) -> Any:
        nonlocal bad_align, bad_boundary
        t0 = clock()
        buf = space.alloc(size, align=ALIGN, boundary=BOUNDARY)
        alloc_ns.append(clock() - t0)
        a, b = _violations(buf.device_address, size)
        bad_align += a
        bad_boundary += b
        return buf

    def free(buf: Any) -> None:
        t0 = clock()
        space.free(buf)
        free_ns.append(clock() - t0)

    live = [alloc(n) for n in initial]
    before = space.stats()
    for index, size in swaps:
        free(live[index])
        live[index] = alloc(size)
    after = space.stats()
    for buf in live:
        free(buf)
    end = space.stats()
    return {
        "efficiency_before_churn": before["live_bytes"] / before["held_bytes"],
        "efficiency_after_churn": after["live_bytes"] / after["held_bytes"],
        "held_bytes_after_churn": after["held_bytes"],
        "live_bytes_after_churn": after["live_bytes"],
        "bytes_held_after_free_all": end["held_bytes"],
        "alignment_violations": bad_align,
        "boundary_violations": bad_boundary,
        "alloc_us_median": statistics.median(alloc_ns) / 1000,
        "alloc_us_p99": sorted(alloc_ns)[len(alloc_ns) * 99 // 100] / 1000,
        "free_us_median": statistics.median(free_ns) / 1000,
        "chunks_acquired": end["chunks_acquired"],
    }


def _device_access(space: HeapDmaSpace, repeat: int) -> dict[str, float]:
    """Median cost of the device-side accessors a controller model uses (64 KiB and one TRB),
    with ``repeat`` other live buffers around so the bisection has work to do."""
    others = [space.alloc(256) for _ in range(repeat)]
    buf = space.alloc(MAX_SIZE, align=MAX_SIZE)
    data = bytes(MAX_SIZE)
    clock = time.perf_counter_ns
    out: dict[str, float] = {}
    for name, call in (
        ("device_read_64k_us", lambda: space.device_read(buf.device_address, MAX_SIZE)),
        ("device_write_64k_us", lambda: space.device_write(buf.device_address, data)),
        ("device_view_16b_us", lambda: space.device_view(buf.device_address + 4096, 16)),
    ):
        samples = []
        for _ in range(repeat):
            t0 = clock()
            call()
            samples.append(clock() - t0)
        out[name] = statistics.median(samples) / 1000
    for other in others:
        space.free(other)
    space.free(buf)
    return out


def _run_pmalloc(source: ChunkSource, initial: list[int], swaps: list[tuple[int, int]]) -> dict:
    policy = PmallocPolicy(source)
    bad_align = bad_boundary = 0
    live_bytes = 0
    clock = time.perf_counter_ns
    alloc_ns: list[int] = []

    def alloc(size: int) -> tuple[int, int]:
        nonlocal bad_align, bad_boundary, live_bytes
        t0 = clock()
        address, chunk = policy.alloc(size, ALIGN)
        alloc_ns.append(clock() - t0)
        a, b = _violations(address, size)
        bad_align += a
        bad_boundary += b
        live_bytes += size
        return chunk, size

    live = [alloc(n) for n in initial]
    for index, size in swaps:
        chunk, old = live[index]
        policy.free(chunk)
        live_bytes -= old
        live[index] = alloc(size)
    efficiency = live_bytes / policy.held_bytes
    for chunk, _size in live:
        policy.free(chunk)
    held_after_free_all = policy.held_bytes
    policy._retire_current()
    policy._current = None
    return {
        "pmalloc_policy_efficiency_after_churn": efficiency,
        "pmalloc_policy_alignment_violations": bad_align,
        "pmalloc_policy_boundary_violations": bad_boundary,
        "pmalloc_policy_bytes_held_after_free_all": held_after_free_all,
        "pmalloc_policy_alloc_us_median": statistics.median(alloc_ns) / 1000,
    }


#: the backends ``--backend`` offers
BACKENDS = ("emulated", "hugepage")
#: keys measured with the sanitizer both on and off
_SANITIZER_KEYS = (
    "efficiency_after_churn",
    "alloc_us_median",
    "alloc_us_p99",
    "free_us_median",
    "alignment_violations",
    "boundary_violations",
    "bytes_held_after_free_all",
)


def _spaces(backend: str, pages: int) -> tuple[Callable[..., HeapDmaSpace], Any]:
    """(factory of a fresh space taking the space's keyword options, context to hold around
    the run)."""
    if backend == "emulated":
        return EmulatedDmaSpace, nullcontext()
    if backend == "hugepage":
        reservation = HugepageReservation(pages)

        def hugepage_space(**options: Any) -> HeapDmaSpace:
            return HugepageDmaSpace(reservation=reservation, **options)

        return hugepage_space, reservation
    raise ValueError(f"unknown allocator bench backend {backend!r} (one of {', '.join(BACKENDS)})")


def _default_sanitize(factory: Callable[..., HeapDmaSpace]) -> bool:
    """Whether the backend behind ``factory`` sanitizes by default."""
    cls = EmulatedDmaSpace if factory is EmulatedDmaSpace else HugepageDmaSpace
    return bool(inspect.signature(cls).parameters["sanitize"].default)


def run(quick: bool = False, backend: str = "emulated") -> dict[str, Any]:
    """Run the churn trace on ``backend`` ("emulated" or "hugepage") and return the
    measurements."""
    blocks, swaps = (500, 5_000) if quick else (2_000, 20_000)
    initial, churn = trace(blocks, swaps)
    factory, context = _spaces(backend, pages=2 * blocks * MAX_SIZE // (2 << 20) + 8)
    default_sanitize = _default_sanitize(factory)
    pmalloc_factory = factory
    if backend == "emulated":

        def pmalloc_factory() -> HeapDmaSpace:
            return EmulatedDmaSpace(chunk_size=HUGEPAGE)

    with context:
        with factory() as space:
            ours = _run_ours(space, initial, churn)
            chunk = space.page_sizes[0]
            quarantine_bytes = space.quarantine_bytes
        with factory(sanitize=not default_sanitize) as space:
            other = _run_ours(space, initial, churn)
        # pmalloc's blocks are 2 MiB hugepages (1 GiB above): its policy runs on the same
        # backend at that page size, not at our emulated 64 KiB granule
        with pmalloc_factory() as space:
            theirs = _run_pmalloc(space._source, initial, churn)
        with factory() as space:
            device = _device_access(space, 500 if quick else 2000)
    # the same policy when the backing granule is a 2 MiB hugepage instead of one 64 KiB
    # boundary window: separates the policy's fragmentation from the granularity

    with EmulatedDmaSpace(chunk_size=HUGEPAGE, sanitize=default_sanitize) as coarse:
        coarse_result = _run_ours(coarse, initial, churn)
    on, off = (ours, other) if default_sanitize else (other, ours)
    bound = efficiency_upper_bound(initial, churn, chunk)
    return {
        "backend": backend,
        "blocks": blocks,
        "swaps": swaps,
        **ours,
        **theirs,
        **device,
        "efficiency_after_churn_2m_chunks": coarse_result["efficiency_after_churn"],
        "chunk_bytes": chunk,
        "efficiency_peak_bound_after_churn": bound,
        "efficiency_ratio_vs_pmalloc_policy": ours["efficiency_after_churn"]
        / theirs["pmalloc_policy_efficiency_after_churn"],
        "efficiency_ratio_vs_peak_bound": ours["efficiency_after_churn"] / bound,
        "alloc_us_median_ratio_vs_pmalloc_policy": ours["alloc_us_median"]
        / theirs["pmalloc_policy_alloc_us_median"],
        "sanitizer_default": default_sanitize,
        "quarantine_bytes": quarantine_bytes,
        **{f"{key}_sanitizer_on": on[key] for key in _SANITIZER_KEYS},
        **{f"{key}_sanitizer_off": off[key] for key in _SANITIZER_KEYS},
        "sanitizer_efficiency_ratio": on["efficiency_after_churn"] / off["efficiency_after_churn"],
        "sanitizer_alloc_us_median_ratio": on["alloc_us_median"] / off["alloc_us_median"],
    }
