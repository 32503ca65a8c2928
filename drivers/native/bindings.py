"""A library of common bindings for native drivers (see :mod:`.environment` for the contract).

Each binding is ``fn(m, *args)`` with the C signature in its docstring. Group dicts for
``Environment(functions={**bindings.COMMON, ...})``:

* :data:`STRING`: ``memcpy memmove memset memcmp memchr strlen strnlen strcmp strncmp strcpy
  strncpy strchr`` (libc semantics; the copies run at host speed on the mapped memory),
* :data:`LOGGING`: ``printf printk puts putchar vprintf`` (vprintf reads a SysV ``va_list``),
  ``snprintf sprintf``: lines land in ``Machine.log`` and the ``dbc_harness.native`` logger,
* :data:`DELAYS`: ``udelay ndelay mdelay msleep usleep_range ssleep`` (advance the bench clock),
* :data:`LOCKS`: spin lock / irq save-restore / barrier functions as no-ops (one CPU, no IRQs),
* :data:`COMMON`: all of the above.

Memory and addresses (not in COMMON: kernels name them differently, bind what yours calls):
``alloc_page`` / ``alloc_pages(count)`` / ``free_page(virt)`` (zeroed, 4 KiB aligned DMA pages),
``dma_alloc(size, align)`` / ``dma_free(virt)``, ``dma_alloc_coherent(dev, size, handle_ptr,
gfp)`` (Linux shape), ``virt_to_phys`` / ``phys_to_virt``, ``ioremap(phys, size)`` /
``iounmap``, ``map_physical(virt, phys, size)``, ``alloc_virtual(size)``, and ``abort``.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from dbc_harness.drivers.native.errors import NativeError
from dbc_harness.drivers.native.printf import format_printf

if TYPE_CHECKING:
    from dbc_harness.drivers.native.environment import Binding
    from dbc_harness.drivers.native.runner import Machine

logger = logging.getLogger("dbc_harness.native")


class NativeAbort(NativeError):
    """The native code called ``abort``/``panic`` (message in ``str()``)."""


# ---------------------------------------------------------------------------------- memory
def _copy(m: Machine, dst: int, src: int, n: int) -> None:
    if n <= 0:
        return
    source = m.view(src, n)
    target = m.view(dst, n)
    if source is not None and target is not None:
        target[:] = bytes(source) if _overlap(dst, src, n) else source
    else:
        m.write(dst, m.read(src, n))


def _overlap(a: int, b: int, n: int) -> bool:
    return a < b + n and b < a + n


def memcpy(m: Machine, dst: int, src: int, n: int) -> int:
    """void *memcpy(void *dst, const void *src, size_t n)"""
    _copy(m, dst, src, n)
    return dst


def memmove(m: Machine, dst: int, src: int, n: int) -> int:
    """void *memmove(void *dst, const void *src, size_t n)"""
    _copy(m, dst, src, n)
    return dst


def memset(m: Machine, dst: int, c: int, n: int) -> int:
    """void *memset(void *dst, int c, size_t n)"""
    if n > 0:
        target = m.view(dst, n)
        fill = bytes([c & 0xFF]) * n
        if target is not None:
            target[:] = fill
        else:
            m.write(dst, fill)
    return dst


def memcmp(m: Machine, a: int, b: int, n: int) -> int:
    """int memcmp(const void *a, const void *b, size_t n)"""
    if n <= 0:
        return 0
    x, y = m.read(a, n), m.read(b, n)
    for i in range(n):
        if x[i] != y[i]:
            return (x[i] - y[i]) & 0xFFFF_FFFF
    return 0


def memchr(m: Machine, s: int, c: int, n: int) -> int:
    """void *memchr(const void *s, int c, size_t n)"""
    i = m.read(s, n).find(bytes([c & 0xFF])) if n > 0 else -1
    return 0 if i < 0 else s + i


def strlen(m: Machine, s: int) -> int:
    """size_t strlen(const char *s)"""
    return len(m.read_cstr(s, 1 << 30))


def strnlen(m: Machine, s: int, n: int) -> int:
    """size_t strnlen(const char *s, size_t n)"""
    return len(m.read_cstr(s, n))


def _cmp(x: bytes, y: bytes) -> int:
    for i in range(min(len(x), len(y))):
        if x[i] != y[i]:
            return (x[i] - y[i]) & 0xFFFF_FFFF
    return (len(x) - len(y) and (x[len(y)] if len(x) > len(y) else -y[len(x)])) & 0xFFFF_FFFF


def strcmp(m: Machine, a: int, b: int) -> int:
    """int strcmp(const char *a, const char *b)"""
    return _cmp(m.read_cstr(a, 1 << 30), m.read_cstr(b, 1 << 30))


def strncmp(m: Machine, a: int, b: int, n: int) -> int:
    """int strncmp(const char *a, const char *b, size_t n)"""
    return _cmp(m.read_cstr(a, n), m.read_cstr(b, n))


def strcpy(m: Machine, dst: int, src: int) -> int:
    """char *strcpy(char *dst, const char *src)"""
    m.write(dst, m.read_cstr(src, 1 << 30) + b"\0")
    return dst


def strncpy(m: Machine, dst: int, src: int, n: int) -> int:
    """char *strncpy(char *dst, const char *src, size_t n): pads with NULs to n"""
    if n > 0:
        s = m.read_cstr(src, n)
        m.write(dst, s + bytes(n - len(s)))
    return dst


def strchr(m: Machine, s: int, c: int) -> int:
    """char *strchr(const char *s, int c)"""
    text = m.read_cstr(s, 1 << 30) + b"\0"
    i = text.find(bytes([c & 0xFF]))
    return 0 if i < 0 else s + i


# ---------------------------------------------------------------------------------- logging
def emit(m: Machine, text: str) -> None:
    """Append a line (or a piece of one) to ``m.log`` and the logger."""
    for line in text.splitlines() or [""]:
        m.log.append(line)
        logger.info("%s", line)


def printf(m: Machine, fmt: int, *_: int) -> int:
    """int printf(const char *fmt, ...)"""
    text = m.format(fmt, 1)
    emit(m, text)
    return len(text.encode())


printk = printf


def puts(m: Machine, s: int) -> int:
    """int puts(const char *s)"""
    emit(m, m.read_cstr(s).decode("utf-8", "replace"))
    return 0


def putchar(m: Machine, c: int) -> int:
    """int putchar(int c)"""
    emit(m, chr(c & 0xFF))
    return c & 0xFF


def _va_list_format(m: Machine, fmt: int, ap: int) -> str:
    """Format with a SysV ``va_list`` (struct {u32 gp_offset, fp_offset; overflow, reg_save})."""
    gp_offset, fp_offset = struct.unpack("<II", m.read(ap, 8))
    overflow = m.read_u64(ap + 8)
    reg_save = m.read_u64(ap + 16)
    state = {"gp": gp_offset, "fp": fp_offset, "ov": overflow}

    def next_int() -> int:
        if state["gp"] < 48:
            value = m.read_u64(reg_save + state["gp"])
            state["gp"] += 8
            return value
        value = m.read_u64(state["ov"])
        state["ov"] += 8
        return value

    def next_float() -> float:
        if state["fp"] < 176:
            raw = m.read(reg_save + state["fp"], 8)
            state["fp"] += 16
        else:
            raw = m.read(state["ov"], 8)
            state["ov"] += 8
        return float(struct.unpack("<d", raw)[0])

    return format_printf(m.read_cstr(fmt), next_int, next_float, m.read_cstr)


def vprintf(m: Machine, fmt: int, ap: int) -> int:
    """int vprintf(const char *fmt, va_list ap)"""
    text = _va_list_format(m, fmt, ap)
    emit(m, text)
    return len(text.encode())


def snprintf(m: Machine, buf: int, size: int, fmt: int, *_: int) -> int:
    """int snprintf(char *buf, size_t size, const char *fmt, ...)"""
    raw = m.format(fmt, 3).encode()
    if size > 0:
        m.write(buf, raw[: size - 1] + b"\0")
    return len(raw)


def sprintf(m: Machine, buf: int, fmt: int, *_: int) -> int:
    """int sprintf(char *buf, const char *fmt, ...)"""
    raw = m.format(fmt, 2).encode()
    m.write(buf, raw + b"\0")
    return len(raw)


def abort(m: Machine) -> int:
    """void abort(void) / panic-like: stops the call with NativeAbort"""
    raise NativeAbort("native code called abort()")


def panic(m: Machine, fmt: int, *_: int) -> int:
    """void panic(const char *fmt, ...)"""
    raise NativeAbort(f"native code panicked: {m.format(fmt, 1)}")


# ---------------------------------------------------------------------------------- delays
def udelay(m: Machine, us: int) -> int:
    """void udelay(unsigned long us)"""
    m.delay(us * 1e-6)
    return 0


def ndelay(m: Machine, ns: int) -> int:
    """void ndelay(unsigned long ns)"""
    m.delay(ns * 1e-9)
    return 0


def mdelay(m: Machine, ms: int) -> int:
    """void mdelay(unsigned long ms) (also msleep)"""
    m.delay(ms * 1e-3)
    return 0


msleep = mdelay


def usleep_range(m: Machine, lo: int, hi: int) -> int:
    """void usleep_range(unsigned long min, unsigned long max): sleeps min"""
    m.delay(lo * 1e-6)
    return 0


def ssleep(m: Machine, s: int) -> int:
    """void ssleep(unsigned int seconds)"""
    m.delay(float(s & 0xFFFF_FFFF))
    return 0


# ---------------------------------------------------------------------------------- locks
def nop(m: Machine, *_: int) -> int:
    """Any lock/unlock/barrier: one CPU, no interrupts, no reordering to guard against."""
    return 0


def irq_save(m: Machine, *_: int) -> int:
    """unsigned long spin_lock_irqsave-like / local_irq_save: returns flags 0"""
    return 0


# ---------------------------------------------------------------------------------- DMA pages
def alloc_page(m: Machine) -> int:
    """void *alloc_page(void): a zeroed 4 KiB DMA page, its virtual address"""
    return m.dma_alloc(4096, align=4096).virt


def alloc_pages(m: Machine, count: int) -> int:
    """void *alloc_pages(size_t count): count zeroed contiguous 4 KiB DMA pages"""
    return m.dma_alloc(max(1, count) * 4096, align=4096).virt


def free_page(m: Machine, virt: int) -> int:
    """void free_page(void *virt) (also free_pages, dma_free)"""
    if virt:
        m.dma_free(virt)
    return 0


def dma_alloc(m: Machine, size: int, align: int) -> int:
    """void *dma_alloc(size_t size, size_t align): zeroed DMA memory (align 0 = 64)"""
    return m.dma_alloc(max(1, size), align=align or 64).virt


dma_free = free_page


def dma_alloc_coherent(m: Machine, dev: int, size: int, handle: int, gfp: int) -> int:
    """void *dma_alloc_coherent(struct device *, size_t, dma_addr_t *handle, gfp_t)"""
    a = m.dma_alloc(max(1, size), align=4096)
    m.write_u64(handle, a.phys)
    return a.virt


def dma_free_coherent(m: Machine, dev: int, size: int, virt: int, handle: int) -> int:
    """void dma_free_coherent(struct device *, size_t, void *virt, dma_addr_t)"""
    m.dma_free(virt)
    return 0


def virt_to_phys(m: Machine, virt: int) -> int:
    """phys_addr_t virt_to_phys(void *virt)"""
    return m.virt_to_phys(virt)


def phys_to_virt(m: Machine, phys: int) -> int:
    """void *phys_to_virt(phys_addr_t phys)"""
    return m.phys_to_virt(phys)


def ioremap(m: Machine, phys: int, size: int) -> int:
    """void __iomem *ioremap(phys_addr_t phys, size_t size)"""
    return m.ioremap(phys, size)


def iounmap(m: Machine, virt: int) -> int:
    """void iounmap(void __iomem *virt): mappings stay (harmless, the machine is short-lived)"""
    return 0


def map_physical(m: Machine, virt: int, phys: int, size: int) -> int:
    """int map_physical(void *virt, phys_addr_t phys, size_t size): 0 on success"""
    m.map_physical(virt, phys, size)
    return 0


def alloc_virtual(m: Machine, size: int) -> int:
    """void *alloc_virtual(size_t size): a fresh unmapped virtual range (page aligned)"""
    return m.alloc_virtual(size)


STRING: dict[str, Binding] = {
    "memcpy": memcpy,
    "memmove": memmove,
    "memset": memset,
    "memcmp": memcmp,
    "memchr": memchr,
    "strlen": strlen,
    "strnlen": strnlen,
    "strcmp": strcmp,
    "strncmp": strncmp,
    "strcpy": strcpy,
    "strncpy": strncpy,
    "strchr": strchr,
    "__memcpy_chk": memcpy,
    "__memset_chk": memset,
}
LOGGING: dict[str, Binding] = {
    "printf": printf,
    "printk": printk,
    "_printk": printk,
    "puts": puts,
    "putchar": putchar,
    "vprintf": vprintf,
    "snprintf": snprintf,
    "sprintf": sprintf,
}
DELAYS: dict[str, Binding] = {
    "udelay": udelay,
    "ndelay": ndelay,
    "mdelay": mdelay,
    "msleep": msleep,
    "usleep_range": usleep_range,
    "ssleep": ssleep,
}
LOCKS: dict[str, Binding] = {
    **{
        name: nop
        for name in (
            "spin_lock",
            "spin_unlock",
            "spin_lock_init",
            "spin_unlock_irqrestore",
            "_raw_spin_lock",
            "_raw_spin_unlock",
            "_raw_spin_unlock_irqrestore",
            "local_irq_restore",
            "local_irq_disable",
            "local_irq_enable",
            "mb",
            "rmb",
            "wmb",
            "smp_mb",
            "barrier",
            "cpu_relax",
        )
    },
    "spin_lock_irqsave": irq_save,
    "_raw_spin_lock_irqsave": irq_save,
    "local_irq_save": irq_save,
}
COMMON: dict[str, Binding] = {**STRING, **LOGGING, **DELAYS, **LOCKS}
