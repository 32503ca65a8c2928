"""The environment of the reference C DbC driver (``dbc_env.h``) on the dbc-harness benches.

Load it with ``--native-env drivers/native/reference/env.py`` (the default for the reference
driver) or copy it as the starting point of your own driver's ENV.py: each ``dbc_env_*`` name
is one line binding it to the engine's library (:mod:`dbc_harness.drivers.native.bindings`).
Kernel-virtual addresses are a direct map of physical (device) addresses at
``KERNEL_WINDOW`` (virt = base + phys), as in a kernel: the C code never assumes virt == phys.
With ``dma="identity"`` DMA memory would appear at its device address itself, which collides
with the engine's own regions below 2 GiB when a claimed controller's DMA space hands out low
addresses (IOVAs from 1 MiB for AC64 = 0, hugepages at physical addresses).
"""

from __future__ import annotations

from dbc_harness.drivers.native import Environment, KernelWindow, Machine, bindings

#: where physical memory is mapped for the C code (Linux x86-64's direct map base)
KERNEL_WINDOW = KernelWindow(0xFFFF_8880_0000_0000)
#: a ring segment or TRB buffer must not cross a 64 KiB boundary (xHCI 1.2 table 6-1)
LINE_64K = 0x10000


def dbc_env_log(m: Machine, fmt: int, *_: int) -> int:
    """void dbc_env_log(const char *fmt, ...)"""
    bindings.emit(m, m.format(fmt, 1).rstrip("\n"))
    return 0


def dbc_env_dma_alloc(m: Machine, size: int, align: int, phys: int) -> int:
    """void *dbc_env_dma_alloc(unsigned long size, unsigned long align, u64 *phys)"""
    a = m.dma_alloc(
        max(1, size), align=max(align, 16), boundary=LINE_64K if size <= LINE_64K else 0
    )
    m.write_u64(phys, a.phys)
    return a.virt


def dbc_env_dma_free(m: Machine, virt: int, size: int) -> int:
    """void dbc_env_dma_free(void *virt, unsigned long size)"""
    m.dma_free(virt)
    return 0


ENV = Environment(
    functions={
        "memcpy": bindings.memcpy,
        "memset": bindings.memset,
        "dbc_env_log": dbc_env_log,
        "dbc_env_dma_alloc": dbc_env_dma_alloc,
        "dbc_env_dma_free": dbc_env_dma_free,
        "dbc_env_virt_to_phys": bindings.virt_to_phys,
        "dbc_env_map_mmio": bindings.ioremap,
        "dbc_env_udelay": bindings.udelay,
    },
    dma=KERNEL_WINDOW,
)
