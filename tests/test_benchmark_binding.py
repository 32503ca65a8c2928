"""The binding benchmark runs and reports every measurement (values are not asserted: timing
belongs to ``dbc-harness bench binding``, not to tests)."""

from __future__ import annotations

from dbc_harness.harness import benchmarks
from dbc_harness.harness.binding.discovery import list_controllers


def test_binding_benchmark_reports_every_key() -> None:
    result = benchmarks.get("binding")(quick=True)
    for key in (
        "mmio_read32_ns",
        "mmio_write32_ns",
        "mmio_read64_ns",
        "raw_read32_ns",
        "unchecked_read32_ns",
        "mmio_read32_vs_unchecked",
        "state_write_us",
        "discovery_ms",
    ):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["controllers_found"] == len(list_controllers(read_bar0=False))
