"""Registry of every benchmark behind ``dbc-harness bench NAME``.

Each entry names a module with ``run(quick: bool = False) -> dict`` returning one flat JSON-able
dict of measurements (ratios against a baseline measured in the same run). Modules are imported
lazily so a benchmark's dependencies never slow the CLI down.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

BENCHMARKS: dict[str, str] = {
    "allocator": "dbc_harness.harness.benchmarks.allocator",
    "codec": "dbc_harness.harness.benchmarks.codec",
    "model": "dbc_harness.harness.benchmarks.model",
    "dbc": "dbc_harness.harness.benchmarks.dbc",
    "faults": "dbc_harness.harness.benchmarks.faults",
    "usbip": "dbc_harness.harness.benchmarks.usbip",
    "usbip-kernel": "dbc_harness.harness.benchmarks.usbip_kernel",
    "kernel-bench": "dbc_harness.harness.benchmarks.kernel_bench",
    "binding": "dbc_harness.harness.benchmarks.binding",
    "native": "dbc_harness.harness.benchmarks.native",
    "lab": "dbc_harness.harness.benchmarks.lab",
    "parts": "dbc_harness.harness.benchmarks.parts",
}


def get(name: str) -> Callable[..., dict[str, Any]]:
    """The ``run`` function of benchmark ``name`` (KeyError for an unknown name)."""
    module = importlib.import_module(BENCHMARKS[name])
    run: Callable[..., dict[str, Any]] = module.run
    return run
