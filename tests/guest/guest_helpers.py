"""Helpers shared by the binding layer's guest tests (not a test module)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from harness import state
from harness.sysfs import PciSysfs

HOLDER = Path(__file__).with_name("claim_holder.py")


def claim_mode(iommu: bool) -> str:
    """vfio where the machine has an IOMMU, else sysfs (with --unsafe)."""
    return "vfio" if iommu else "sysfs"


def driver_of(bdf: str) -> str | None:
    return PciSysfs().driver(bdf)


def state_files() -> list[Path]:
    return state.list_states()


def start_holder(bdf: str, mode: str, timeout: float = 60.0) -> subprocess.Popen[str]:
    """Start claim_holder.py and wait (with a deadline) until it reports CLAIMED."""
    proc = subprocess.Popen(
        [sys.executable, str(HOLDER), bdf, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("CLAIMED") or not line:
                break
    if not line.startswith("CLAIMED"):
        proc.kill()
        _out, err = proc.communicate(timeout=30)
        raise AssertionError(f"holder did not claim {bdf}: {line!r} {err}")
    return proc
