"""The allocator benchmark's trace and its pmalloc policy model behave as documented."""

from __future__ import annotations

from dbc_harness.allocator import EmulatedDmaSpace
from dbc_harness.harness.benchmarks import allocator as bench


def test_quick_churn_on_emulated_backend() -> None:
    result = bench.run(quick=True, backend="emulated")
    for key in (
        "efficiency_after_churn",
        "pmalloc_policy_efficiency_after_churn",
        "boundary_violations",
        "alignment_violations",
        "bytes_held_after_free_all",
        "alloc_us_median",
        "free_us_median",
        "backend",
        "device_read_64k_us",
        "device_view_16b_us",
    ):
        assert key in result
    assert result["backend"] == "emulated"
    assert result["alignment_violations"] == 0
    assert result["boundary_violations"] == 0
    assert result["bytes_held_after_free_all"] == 0
    # reuse beats a bump pointer that never reuses freed space
    assert result["efficiency_after_churn"] > 2 * result["pmalloc_policy_efficiency_after_churn"]
    assert result["efficiency_after_churn"] <= result["efficiency_peak_bound_after_churn"]


def test_trace_is_seeded_and_log_uniform_within_bounds() -> None:
    first = bench.trace(300, 1000)
    assert first == bench.trace(300, 1000)
    sizes = first[0] + [size for _, size in first[1]]
    assert min(sizes) >= bench.MIN_SIZE and max(sizes) <= bench.MAX_SIZE
    small = sum(size < 2048 for size in sizes)  # log-uniform: half the mass below the midpoint
    assert 0.4 < small / len(sizes) < 0.6


def test_pmalloc_model_never_reuses_and_frees_only_empty_blocks() -> None:
    with EmulatedDmaSpace() as space:
        policy = bench.PmallocPolicy(space._source)
        a, chunk_a = policy.alloc(1000, 64)
        b, _ = policy.alloc(1000, 64)
        assert a == chunk_a and b == a + 1024  # bump pointer, aligned after the first
        policy.free(chunk_a)
        c, _ = policy.alloc(1000, 64)
        assert c > b  # the freed space is not reused
        _big, chunk_big = policy.alloc(2 << 20, 64)  # needs a fresh block
        assert chunk_big != chunk_a
        policy.free(chunk_a)
        policy.free(chunk_a)  # block A is now empty and not current: it goes back
        assert policy.held_bytes == 2 << 20
        policy.free(chunk_big)
