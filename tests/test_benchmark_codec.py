"""The codec benchmark runs and reports the keys the issue asks for (no timing assertions:
performance is judged from ``dbc-harness bench codec --json``, not from tests)."""

from __future__ import annotations

from dbc_harness.harness import benchmarks


def test_codec_bench_reports_required_keys() -> None:
    res = benchmarks.get("codec")(quick=True)
    for key in (
        "fast_over_struct_parse",
        "fast_over_struct_build",
        "construct_over_fast_parse",
        "ring_scan_4096_us",
    ):
        assert isinstance(res[key], float) and res[key] > 0, key
    assert res["quick"] is True
