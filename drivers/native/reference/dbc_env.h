/* SPDX-License-Identifier: MIT */
/*
 * dbc_env.h - the kernel API the reference DbC driver calls: everything it needs from the
 * system it runs in, kept small so porting it is an afternoon. On the dbc-harness benches an
 * environment module binds these names (see drivers/native/reference/env.py); in a kernel
 * they are a page of glue over its allocator, ioremap and printk.
 *
 * PCI configuration space is NOT part of this API: the driver reaches it itself through
 * configuration mechanism #1 (I/O ports 0xCF8/0xCFC, PCI Local Bus 3.0 section 3.2.2.3.2).
 */
#ifndef DBC_ENV_H
#define DBC_ENV_H

/* printf-style log line (%s %d %u %x %lx %llx %p ...); no return value. */
void dbc_env_log(const char *fmt, ...);

/*
 * size bytes of DMA-capable memory aligned to align (a power of two <= 64 KiB), physically
 * contiguous. Returns the kernel-virtual address (NULL on failure) and stores the physical
 * (device) address in *phys. The driver keeps every structure inside one allocation and
 * never lets a ring segment or a TRB buffer cross a 64 KiB boundary (xHCI 1.2 table 6-1), so
 * an allocator that honours align is enough.
 */
void *dbc_env_dma_alloc(unsigned long size, unsigned long align, unsigned long long *phys);
void dbc_env_dma_free(void *virt, unsigned long size);

/* The physical address of kernel-virtual address virt inside a DMA allocation. */
unsigned long long dbc_env_virt_to_phys(const void *virt);

/* Map size bytes of MMIO at physical address phys (uncached); returns the virtual address or
 * NULL. Used for the xHCI's BAR0 (with a PCI scan: for each candidate xHCI's BAR0 until one
 * has a Debug Capability). */
void *dbc_env_map_mmio(unsigned long long phys, unsigned long size);

/* Busy-wait us microseconds. Every wait in the driver is a loop around this call with a
 * deadline, so the deadlines are counted in this function's time. */
void dbc_env_udelay(unsigned long us);

/* The two C library functions every kernel has (gcc may also emit calls to them). */
void *memcpy(void *dst, const void *src, unsigned long n);
void *memset(void *dst, int c, unsigned long n);

#endif /* DBC_ENV_H */
