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
    "allocator": "allocator.bench",
    "codec": "drivers.xhci.bench",
    "model": "fixtures.virtual.bench",
    "dbc": "drivers.dbc.bench",
    "usbip": "fixtures.usbip.bench",
    "kernel-bench": "fixtures.kernel_bench.bench",
    "binding": "harness.bench",
}


def get(name: str) -> Callable[..., dict[str, Any]]:
    """The ``run`` function of benchmark ``name`` (KeyError for an unknown name)."""
    module = importlib.import_module(BENCHMARKS[name])
    run: Callable[..., dict[str, Any]] = module.run
    return run
