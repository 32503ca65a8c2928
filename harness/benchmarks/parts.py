"""``dbc-harness bench parts``: the Python reference driver on every named virtual part.

Per part (:mod:`fixtures.virtual.parts`), on the deterministic bench (virtual time, strict mode
off so findings are counted, not raised): bring-up (BIOS handoff included) to Configured, an echo
of several sizes both ways, a host-side unplug/replug and, on parts whose HCRST kills the DbC, a
controller reset, each followed by another echo. Keys per part (``parts.NAME``):

* ``bringup_virtual_ms``: virtual time from ``start()`` to Configured (what the part's firmware
  handoff, link training and enumeration cost); ``bringup_wall_ms``: host CPU time of the same.
  The driver runs with its default options plus the PCI Vendor ID its function reads (as a
  session on a real controller); ``bringup_virtual_ms_without_pci_id``: the same bring-up with
  no PCI Vendor ID (the driver learns a needed root-port reset from DCPORTSC.CCS staying 0), and
  ``root_port_reset_learned``: whether it had to;
* ``echo_ok`` / ``echo_bytes``: every echo came back byte-exact; ``findings``: spec findings (0
  is the goal); ``recoveries``: the driver's recoveries by kind (``bios_handoff_timeout``,
  ``disconnect``, ``dce_lost``, ...); ``spurious_stalls``; ``error``: the exception, if any.

Top level: ``parts`` (count), ``all_ok`` (every echo ok and 0 findings), ``findings`` (total),
``bringup_virtual_ms_ratio_max_vs_generic`` (the slowest part's bring-up against the generic
part's, measured in the same run).
"""

from __future__ import annotations

import time
from typing import Any

from dbc_harness.drivers.dbc import DbcDriver, DbcState
from dbc_harness.drivers.xhci.registers import CAPLENGTH, OPERATIONAL_REGS, USBCMD, read_register
from dbc_harness.fixtures.virtual import DebugHostTimeout, VirtualXhci
from dbc_harness.fixtures.virtual.parts import (
    PartProfile,
    all_parts,
    build_controller,
    platform_bus,
)
from dbc_harness.fixtures.virtual.pci import COMMAND_MASTER, COMMAND_MEMORY

ECHO_SIZES = (1, 1024, 1025, 65537, 262_144)
QUICK_SIZES = (1, 1025, 65537)


def _poll_until(drv: DbcDriver, x: VirtualXhci, done: Any, seconds: float = 5.0) -> None:
    end = x.clock.monotonic() + seconds
    while not done():
        if x.clock.monotonic() > end:
            raise TimeoutError(f"driver stuck in {drv.state.name}")
        drv.poll()
        x.clock.sleep(0.001)


def _echo(x: VirtualXhci, drv: DbcDriver, size: int) -> bool:
    data = bytes((i * 13 + size) & 0xFF for i in range(size))
    drv.write(data)
    got = b""
    end = x.clock.monotonic() + 5.0
    while len(got) < size and x.clock.monotonic() < end:
        drv.poll()
        try:
            got += x.host.recv(size - len(got), timeout=0.001)
        except DebugHostTimeout:
            continue
    xfer = x.host.submit(data[::-1])
    back = b""
    while len(back) < size:
        back += drv.read(size - len(back), timeout=2.0)
    x.host.wait(xfer, timeout=1.0)
    return got == data and back == data[::-1]


def _bringup_without_pci_id(part: PartProfile) -> tuple[float, bool, list[Any]]:
    """Virtual ms to Configured with default options and no PCI Vendor ID, whether the driver
    reset the root ports because nothing connected, and the findings of that run."""
    x = build_controller(part, strict=False)
    try:
        drv = DbcDriver(x.mmio, x.dma, clock=x.clock)
        t_virtual = x.now_us
        drv.start(timeout=5.0)
        ms = round((x.now_us - t_virtual) / 1000, 3)
        learned = drv.counters.recoveries["root_port_reset"] > 0
        drv.stop()
        return ms, learned, list(x.findings)
    finally:
        x.close()


def run_part(part: PartProfile, sizes: tuple[int, ...]) -> dict[str, Any]:
    x = build_controller(part, strict=False)
    platform_bus(x, part, command=COMMAND_MEMORY | COMMAND_MASTER)
    out: dict[str, Any] = {"title": part.title, "reproduces": part.reproduces}
    more_findings: list[Any] = []
    try:
        vendor = x.pci_function.vendor_id
        drv = DbcDriver(x.mmio, x.dma, clock=x.clock, pci_vendor_id=vendor)
        t_virtual, t_wall = x.now_us, time.perf_counter()
        drv.start(timeout=5.0)
        out["bringup_virtual_ms"] = round((x.now_us - t_virtual) / 1000, 3)
        out["bringup_wall_ms"] = round((time.perf_counter() - t_wall) * 1000, 3)
        ok = all(_echo(x, drv, n) for n in sizes)
        x.host.unplug()
        _poll_until(drv, x, lambda: drv.state is DbcState.ENABLED)
        x.host.plug()
        _poll_until(drv, x, lambda: drv.configured and x.host.configured)
        ok = _echo(x, drv, sizes[-1]) and ok
        if part.quirks.hcrst_kills_dbc:
            op = read_register(x.mmio, 0, CAPLENGTH)
            cmd = op + OPERATIONAL_REGS.offset("USBCMD")
            x.mmio.write32(cmd, USBCMD.replace(x.mmio.read32(cmd), RS=0))
            x.mmio.write32(cmd, USBCMD.encode(HCRST=1))
            _poll_until(drv, x, lambda: drv.configured and x.host.configured)
            ok = _echo(x, drv, sizes[-1]) and ok
        drv.stop()
        out["echo_ok"] = ok
        out["echo_bytes"] = 2 * (sum(sizes) + sizes[-1] * (2 if part.quirks.hcrst_kills_dbc else 1))
        out["recoveries"] = dict(sorted(drv.counters.recoveries.items()))
        out["spurious_stalls"] = drv.counters.spurious_stalls
        ms, learned, more_findings = _bringup_without_pci_id(part)
        out["bringup_virtual_ms_without_pci_id"] = ms
        out["root_port_reset_learned"] = learned
    except Exception as exc:  # reported per part: one broken part must not hide the others
        out["echo_ok"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        findings = [*x.findings, *more_findings]
        out["findings"] = len(findings)
        out["finding_rules"] = sorted({f.rule for f in findings})
        x.close()
    return out


def run(quick: bool = False) -> dict[str, Any]:
    sizes = QUICK_SIZES if quick else ECHO_SIZES
    results = {name: run_part(part, sizes) for name, part in all_parts().items()}
    bringups = [r["bringup_virtual_ms"] for r in results.values() if "bringup_virtual_ms" in r]
    generic = results.get("generic", {}).get("bringup_virtual_ms")
    return {
        "parts": len(results),
        "all_ok": all(r["echo_ok"] and not r["findings"] for r in results.values()),
        "findings": sum(r["findings"] for r in results.values()),
        "echo_sizes": list(sizes),
        "bringup_virtual_ms_ratio_max_vs_generic": (
            round(max(bringups) / generic, 2) if generic and bringups else None
        ),
        "per_part": results,
    }
