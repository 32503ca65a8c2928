"""``dbc-harness bench parts`` (quick): every part passes with 0 findings, and the keys say how
the driver coped without being told the part: with the PCI Vendor ID its function reads, or
without it (a needed root-port reset learned from DCPORTSC.CCS staying 0)."""

from __future__ import annotations

from dbc_harness.drivers.dbc.bringup import PORT_RESET_AFTER
from dbc_harness.fixtures.virtual.parts import all_parts
from dbc_harness.harness.benchmarks import parts as parts_benchmark


def test_quick_parts_benchmark_reports_every_part() -> None:
    result = parts_benchmark.run(quick=True)
    assert result["parts"] == len(all_parts())
    assert result["all_ok"] and result["findings"] == 0
    for name, part in all_parts().items():
        r = result["per_part"][name]
        assert "error" not in r, r
        needs = part.quirks.enumerate_after_root_port_reset
        assert r["root_port_reset_learned"] is needs
        extra_ms = r["bringup_virtual_ms_without_pci_id"] - r["bringup_virtual_ms"]
        if needs and part.vendor_id == 0x8086:  # the vendor ID spares the wait for CCS
            assert extra_ms >= PORT_RESET_AFTER * 1000
        else:
            assert extra_ms == 0
        assert "root_port_reset" not in r["recoveries"]  # with the ID nothing had to be learned
