"""The allocator benchmark's trace and its pmalloc policy model behave as documented."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from dbc_harness.allocator import EmulatedDmaSpace, HugepagesUnavailable
from dbc_harness.harness.app.cli import cli
from dbc_harness.harness.benchmarks import allocator as bench

NR = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")

SANITIZER_KEYS = [f"{k}_sanitizer_{s}" for k in bench._SANITIZER_KEYS for s in ("on", "off")]


def _check_sanitizer_keys(result: dict, default_on: bool) -> None:
    assert result["sanitizer_default"] is default_on
    for key in SANITIZER_KEYS:
        assert key in result
    setting = "on" if default_on else "off"
    for key in bench._SANITIZER_KEYS:  # the main keys are the default configuration's
        assert result[key] == result[f"{key}_sanitizer_{setting}"]
    for setting in ("on", "off"):  # the sanitizer never costs correctness or leaks memory
        assert result[f"alignment_violations_sanitizer_{setting}"] == 0
        assert result[f"boundary_violations_sanitizer_{setting}"] == 0
        assert result[f"bytes_held_after_free_all_sanitizer_{setting}"] == 0
    assert result["sanitizer_efficiency_ratio"] == pytest.approx(
        result["efficiency_after_churn_sanitizer_on"]
        / result["efficiency_after_churn_sanitizer_off"]
    )


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
    _check_sanitizer_keys(result, default_on=True)
    # the quarantine holds freed memory: with it the same trace holds more
    assert (
        result["efficiency_after_churn_sanitizer_on"]
        < result["efficiency_after_churn_sanitizer_off"]
    )


def test_cli_backend_option_reaches_the_benchmark() -> None:
    result = CliRunner().invoke(
        cli, ["bench", "allocator", "--quick", "--backend", "emulated", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["backend"] == "emulated"
    refused = CliRunner().invoke(cli, ["bench", "codec", "--backend", "hugepage"])
    assert refused.exit_code == 2 and "--backend" in refused.output
    unknown = CliRunner().invoke(cli, ["bench", "allocator", "--backend", "iova"])
    assert unknown.exit_code == 2


@pytest.mark.hugepages
def test_quick_churn_on_real_hugepages_restores_nr_hugepages() -> None:
    if os.geteuid() != 0 or not NR.exists():
        pytest.skip("needs root and 2 MiB hugepages")
    before = NR.read_text()
    try:
        result = bench.run(quick=True, backend="hugepage")
    except HugepagesUnavailable as exc:
        pytest.skip(f"cannot reserve hugepages: {exc}")
    assert NR.read_text() == before
    assert result["backend"] == "hugepage" and result["chunk_bytes"] == 2 << 20
    assert result["alignment_violations"] == result["boundary_violations"] == 0
    assert result["bytes_held_after_free_all"] == 0
    _check_sanitizer_keys(result, default_on=False)


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
