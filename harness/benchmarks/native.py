"""``dbc-harness bench native``: the reference C DbC driver under CPU emulation, virtual bench.

Keys:

* ``bringup_s``: ``start()`` of the reference driver (``dbc_init`` until the host configured
  it) on the free-running virtual bench, wall seconds (best of ``repeats``); ``load_s``: loading
  the object into a fresh emulated machine (ELF, relocations, DWARF) before that, as every
  machine after the first pays it (the DWARF line table cached per image content,
  ``drivers/native/srcmap.py``); ``load_cold_s`` the same with that cache emptied first (the
  first machine of an image), ``load_ratio_warm_vs_cold`` = ``load_s`` / ``load_cold_s``;
* ``mmio_access_us``: one 32-bit register read by native code through the MMIO hook (a C loop
  reading DCCTRL), and ``python_mmio_access_us`` the Python driver's read of the same register
  (``DbcRegisters.read32``) in the same run; ``mmio_ratio_vs_python`` = native / Python cost
  (1.0: the hook adds nothing over the Python driver's own access);
* ``out_MBps`` / ``in_MBps``: target -> host ``write()`` of 1 MiB messages, host -> target 1 MiB
  transfers ``read()`` back, the peer on pyusb (the ``dbc`` benchmark's peer and loops), and
  the Python driver measured the same way in the same run: ``python_{out,in}_MBps`` and
  ``{out,in}_ratio_vs_python_driver``.

Both drivers run pinned to one CPU (``pinned_cpu``), as in ``bench dbc``: the drivers, the
model and the peer take turns there, so the two drivers are measured under the same conditions
(spread over both cores of the 2-core VM the Python driver's rate varied 2,000-3,600 MB/s from
run to run, and the native driver's was lower, not higher). Both use 1024-TRB rings and 64
receive buffers of 64 KiB (the reference driver compiled
with ``-DDBC_RING_TRBS=1024 -DDBC_IN_BUF_SIZE=65536``). Goals: bring-up <= 0.5 s, each direction
>= 300 MB/s and >= 0.3 of the Python driver.
"""

from __future__ import annotations

import time
from typing import Any

from dbc_harness.drivers.dbc.driver import DbcDriver
from dbc_harness.drivers.dbc.registers import DbcRegisters
from dbc_harness.drivers.native import srcmap
from dbc_harness.drivers.native.build import build_reference
from dbc_harness.drivers.native.cc import compile_object
from dbc_harness.drivers.native.driver import DEFAULT_BAR_PHYS, NativeDbcDriver
from dbc_harness.drivers.native.runner import Machine
from dbc_harness.fixtures.virtual import VirtualXhci
from dbc_harness.harness.benchmarks.dbc import MiB, _best, _in, _one_cpu, _out, _Peer

#: the reference driver as both directions are measured
CONFIG = {"DBC_RING_TRBS": 1024, "DBC_EVENT_TRBS": 2048, "DBC_IN_BUF_SIZE": 65536}
#: a native loop of MMIO reads (the hook's cost per access)
MMIO_LOOP = r"""
unsigned long mmio_loop(volatile unsigned int *reg, unsigned long n)
{
    unsigned long sum = 0;
    while (n--)
        sum += *reg;
    return sum;
}
"""
DBC_OFFSET = 0x8700  # the virtual xHCI's default DbC offset
DCCTRL = 0x20


def _mmio_costs(n: int) -> tuple[float, float]:
    """(native us, Python driver us) per DCCTRL read, same model, same run."""
    x = VirtualXhci(strict=True)
    try:
        m = Machine(compile_object(MMIO_LOOP, name="mmio_loop"), mmio=x.mmio, dma=x.dma,
                    clock=x.clock, bar_phys=DEFAULT_BAR_PHYS)  # fmt: skip
        try:
            reg = m.phys_to_virt(DEFAULT_BAR_PHYS) + DBC_OFFSET + DCCTRL
            m.call("mmio_loop", reg, 100)  # warm-up: translation, caches
            t0 = time.perf_counter()
            m.call("mmio_loop", reg, n)
            native = (time.perf_counter() - t0) / n
        finally:
            m.close()
        regs = DbcRegisters(x.mmio, DBC_OFFSET)
        read = regs.read32
        t0 = time.perf_counter()
        for _ in range(n):
            read(regs.DCCTRL)
        python = (time.perf_counter() - t0) / n
    finally:
        x.close()
    return native * 1e6, python * 1e6


def _throughput(make: Any, big: int, repeats: int) -> tuple[float, float, float, int]:
    """(out MB/s, in MB/s, bring-up s, findings) for the driver ``make(x)`` builds."""
    x = VirtualXhci(strict=True)
    try:
        with x.run_free():
            drv = make(x)
            t0 = time.perf_counter()
            drv.start(timeout=10.0)
            bringup = time.perf_counter() - t0
            peer = _Peer(x)
            _out(drv, peer, 2, MiB)  # warm-up
            _in(drv, peer, 2, MiB)
            t_out, _ = _best([_out(drv, peer, big, MiB) for _ in range(repeats)])
            t_in, _ = _best([_in(drv, peer, big, MiB) for _ in range(repeats)])
            drv.stop(timeout=5.0)
            close = getattr(drv, "close", None)
            if close is not None:
                close()
        findings = len(x.findings)
    finally:
        x.close()
    mb = big * MiB / 1e6
    return mb / t_out, mb / t_in, bringup, findings


def run(quick: bool = False) -> dict[str, Any]:
    with _one_cpu() as cpu:
        result = _run(quick)
    result["pinned_cpu"] = cpu
    return result


def _run(quick: bool) -> dict[str, Any]:
    big = 16 if quick else 64
    repeats = 1 if quick else 3
    obj = build_reference(config=CONFIG)

    loads: list[float] = []
    cold_loads: list[float] = []
    bringups: list[float] = []

    for _ in range(repeats):
        x = VirtualXhci(strict=True)
        try:
            with x.run_free():
                srcmap.clear_line_cache()
                t0 = time.perf_counter()
                cold = NativeDbcDriver(x.mmio, x.dma, clock=x.clock, obj=obj)
                cold_loads.append(time.perf_counter() - t0)
                cold.machine.close()
                t0 = time.perf_counter()
                drv = NativeDbcDriver(x.mmio, x.dma, clock=x.clock, obj=obj)
                loads.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                drv.start(timeout=10.0)
                bringups.append(time.perf_counter() - t0)
                drv.close()
        finally:
            x.close()

    native_us, python_us = _mmio_costs(2000 if quick else 20000)

    def native(x: Any) -> NativeDbcDriver:
        return NativeDbcDriver(x.mmio, x.dma, clock=x.clock, obj=obj)

    def python(x: Any) -> DbcDriver:
        return DbcDriver(x.mmio, x.dma, clock=x.clock, ring_trbs=1024, in_buffers=64,
                         in_buffer_size=64 * 1024)  # fmt: skip

    out_n, in_n, _, findings_n = _throughput(native, big, repeats)
    out_p, in_p, _, findings_p = _throughput(python, big, repeats)
    return {
        "bringup_s": round(min(bringups), 4),
        "load_s": round(min(loads), 4),
        "load_cold_s": round(min(cold_loads), 4),
        "load_ratio_warm_vs_cold": round(min(loads) / min(cold_loads), 3),
        "mmio_access_us": round(native_us, 2),
        "python_mmio_access_us": round(python_us, 2),
        "mmio_ratio_vs_python": round(native_us / python_us, 3),
        "out_MBps": round(out_n, 1),
        "in_MBps": round(in_n, 1),
        "python_out_MBps": round(out_p, 1),
        "python_in_MBps": round(in_p, 1),
        "out_ratio_vs_python_driver": round(out_n / out_p, 3),
        "in_ratio_vs_python_driver": round(in_n / in_p, 3),
        "message_bytes": MiB,
        "messages": big,
        "repeats": repeats,
        "config": CONFIG,
        "findings": findings_n + findings_p,
    }
