/* SPDX-License-Identifier: MIT */
/*
 * dbc.c - reference xHCI Debug Capability (DbC) driver of dbc-harness.
 *
 * Freestanding C11, no libc: everything it needs from its kernel is in dbc_env.h, its ABI is
 * dbc.h. It is written to be read: an OS developer's model for their own driver. Section
 * numbers are xHCI 1.2's; the harness's Python driver (drivers/dbc/) is the executable
 * specification this file follows step by step.
 *
 * Directions (read twice): the DbC's OUT ring carries the TARGET's output (target -> host,
 * endpoint context at +64, EP Type 2, doorbell target 0); its IN ring carries what the debug
 * host sends (host -> target, context at +128, EP Type 6, doorbell target 1).
 *
 * Layout of this file: configuration, register and structure definitions, PCI scan,
 * capability walk, rings, bring-up (7.6.4), events, link following and recovery (7.6.6),
 * data path, teardown.
 *
 * Every MMIO access is a macro (RD32/WR32/WR64) used directly at the access, so the debug
 * information maps each access to its own source line (inline functions would map every
 * access to the helper's line). Comments "@site:NAME" mark lines the harness's tests look up.
 *
 * Deliberate mistakes for the harness's tests are compiled in with -DDBC_MUT_<NAME>; the
 * reference driver has none of them.
 */

#include "dbc.h"
#include "dbc_env.h"

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

/* ------------------------------------------------------------------ configuration (-D) */
#ifndef DBC_RING_TRBS
#define DBC_RING_TRBS 256 /* OUT and IN transfer rings, one segment each (16..4096) */
#endif
#ifndef DBC_EVENT_TRBS
#define DBC_EVENT_TRBS 512 /* event ring segment (16..4096) */
#endif
#ifndef DBC_IN_BUFS
#define DBC_IN_BUFS 64 /* receive buffers kept posted on the IN ring */
#endif
#ifndef DBC_IN_BUF_SIZE
/* 1024..65536, dividing 65536 (so a buffer never crosses a 64 KiB line, table 6-1). 64 KiB:
 * one TRB and one event per 64 KiB; a host transfer ends a buffer early with its short packet
 * (or zero-length packet after a multiple of 1024), so message boundaries are kept. 1024
 * completes every packet at once (what Linux does) at ~1/50 of the rate. */
#define DBC_IN_BUF_SIZE 65536
#endif
#if DBC_IN_BUF_SIZE < 1024 || DBC_IN_BUF_SIZE > 65536 || 65536 % DBC_IN_BUF_SIZE
#error "DBC_IN_BUF_SIZE must be 1024..65536 and divide 65536"
#endif
#ifndef DBC_OUT_FIFO_SIZE
#define DBC_OUT_FIFO_SIZE (4u << 20) /* target -> host bytes in flight (multiple of 64 KiB) */
#endif
#ifndef DBC_BAR0_MAP_SIZE
#define DBC_BAR0_MAP_SIZE 0x10000 /* mapped when dbc_init() is given BAR0's address */
#endif
#ifndef DBC_VENDOR_ID
#define DBC_VENDOR_ID 0x1D6B /* Linux Foundation: Linux's usb_debug binds 1d6b:0010 */
#endif
#ifndef DBC_PRODUCT_ID
#define DBC_PRODUCT_ID 0x0010
#endif
#ifndef DBC_DEVICE_REV
#define DBC_DEVICE_REV 0x0010
#endif
#ifndef DBC_PROTOCOL
#define DBC_PROTOCOL 0 /* DCDDI1 DbC Protocol: 0 vendor-defined, 1 GNU Remote Debug */
#endif
#ifndef DBC_MANUFACTURER
#define DBC_MANUFACTURER "dbc-harness"
#endif
#ifndef DBC_PRODUCT
#define DBC_PRODUCT "reference C DbC driver"
#endif
#ifndef DBC_SERIAL
#define DBC_SERIAL "0001"
#endif

/* deadlines, in dbc_env_udelay() microseconds */
#define DCE_TIMEOUT_US 1000000   /* DCE to follow a write of DCCTRL */
#define PORT_RESET_TIMEOUT_US 500000
#define PORT_RESET_AFTER_US 200000 /* no CCS this long after DCE: reset the USB3 root ports once */
#define HANDOFF_TIMEOUT_US 1000000 /* the BIOS gets 1 s to release the controller (Linux too) */
#define HANDOFF_STEP_US 1000
#define POLL_STEP_US 100         /* delay between two polls of a register */

/* ------------------------------------------------------------------ xHC registers (5.3) */
#define CAP_CAPLENGTH 0x00  /* byte 0; HCIVERSION in 31:16 of the same dword */
#define CAP_HCCPARAMS1 0x10 /* bit 0 AC64, 31:16 xECP (dwords) */
#define HCCPARAMS1_AC64 (1u << 0)
#define PORTSC_BASE 0x400 /* operational base + 0x400 + 0x10 * (port - 1) (5.4.8) */
#define PORTSC_CCS (1u << 0)
#define PORTSC_PED (1u << 1)
#define PORTSC_PR (1u << 4)
#define PORTSC_CHANGE_BITS (0x7Fu << 17) /* CSC PEC WRC OCC PRC PLC CEC: RW1C */

/* extended capabilities (7.0) */
#define XECP_ID_LEGACY 1 /* USB Legacy Support (7.1) */
#define XECP_ID_SUPPORTED_PROTOCOL 2
#define XECP_ID_DEBUG 10
#define XECP_MAX_STEPS 256 /* a corrupt list must not loop for ever */

/* USB Legacy Support (7.1.1, 7.1.2): each semaphore in its own byte; the OS writes only its own */
#define USBLEGSUP_BIOS_OWNED (1u << 16)
#define USBLEGSUP_OS_OWNED (1u << 24)
/* USBLEGCTLSTS: the SMI enables (USB SMI, Host System Error, OS Ownership, PCI Command, BAR)
 * and the three RW1C SMI events (OS Ownership Change, PCI Command, BAR) */
#define USBLEGCTLSTS_SMI_ENABLES ((1u << 0) | (1u << 4) | (1u << 13) | (1u << 14) | (1u << 15))
#define USBLEGCTLSTS_SMI_EVENTS (0x7u << 29)

/* Linux's early printk DbC driver resets the USB3 root ports after DCE on this vendor's parts
 * (drivers/usb/early/xhci-dbc.c, xdbc_start() -> xdbc_reset_debug_port()) */
#define PCI_VENDOR_INTEL 0x8086

/*
 * The DbC register block (7.6.8): 64 bytes at the Debug Capability's first dword. A struct
 * with the two reserved dwords in place; a 64-bit register is two dwords (written low dword
 * first: some parts take no 64-bit access).
 */
struct dbc_regs {
	u32 dcid;        /* 0x00 ID 0x0A, next, DCERST Max 20:16 */
	u32 dcdb;        /* 0x04 doorbell: DB Target 15:8 */
	u32 dcerstsz;    /* 0x08 ERST size 15:0 */
#ifndef DBC_MUT_PACKED_REGS
	u32 rsvd_0c;     /* 0x0C reserved: never accessed */
#endif
	u32 dcerstba[2]; /* 0x10 ERST base, 64-byte aligned */
	u32 dcerdp[2];   /* 0x18 event ring dequeue pointer */
	u32 dcctrl;      /* 0x20 */
	u32 dcst;        /* 0x24 31:24 debug port number */
	u32 dcportsc;    /* 0x28 */
#ifndef DBC_MUT_PACKED_REGS
	u32 rsvd_2c;     /* 0x2C reserved: never accessed */
#endif
	u32 dccp[2];     /* 0x30 DbC context pointer */
	u32 dcddi1;      /* 0x38 31:16 idVendor, 7:0 protocol */
	u32 dcddi2;      /* 0x3C 31:16 bcdDevice, 15:0 idProduct */
};

#define DCCTRL_DCR (1u << 0)
#define DCCTRL_LSE (1u << 1)
#define DCCTRL_HOT (1u << 2)
#define DCCTRL_HIT (1u << 3)
#define DCCTRL_DRC (1u << 4)
#define DCCTRL_MAX_BURST(v) (((v) >> 16) & 0xFF)
#define DCCTRL_DCE (1u << 31)
#define DCPORTSC_CCS (1u << 0)
#define DCPORTSC_PR (1u << 4)
#define DCPORTSC_CSC (1u << 17)
#define DCPORTSC_PRC (1u << 21)
#define DCPORTSC_CHANGE_BITS ((1u << 17) | (1u << 21) | (1u << 22) | (1u << 23)) /* RW1C */
#define ALL_ONES 0xFFFFFFFFu

/* MMIO at the access site (see the header comment for why these are macros). */
#define RD32(reg) (*(volatile u32 *)(reg))
#define WR32(reg, v) (*(volatile u32 *)(reg) = (u32)(v))
#ifdef DBC_MUT_MMIO64_HIGH_FIRST
#define WR64(reg, v) do { if (dbc.mmio64) *(volatile u64 *)(reg) = (u64)(v); else { ((volatile u32 *)(reg))[1] = (u32)((u64)(v) >> 32); ((volatile u32 *)(reg))[0] = (u32)(v); } } while (0)
#else
#define WR64(reg, v) do { if (dbc.mmio64) *(volatile u64 *)(reg) = (u64)(v); else { ((volatile u32 *)(reg))[0] = (u32)(v); ((volatile u32 *)(reg))[1] = (u32)((u64)(v) >> 32); } } while (0)
#endif

/* x86 is TSO and DMA memory is write-back cacheable: ordering stores to the device needs only
 * the compiler not to reorder (Linux: wmb() is a compiler barrier on x86-64 for WB memory). */
#define barrier() __asm__ volatile("" ::: "memory")

/* ------------------------------------------------------------------ memory structures (6) */
struct trb {
	u32 dw[4];
};

#define TRB_CYCLE (1u << 0)
#define TRB_TC (1u << 1)  /* Link TRB: Toggle Cycle */
#define TRB_ISP (1u << 2) /* Normal TRB: Interrupt on Short Packet */
#define TRB_CH (1u << 4)
#define TRB_IOC (1u << 5)
#define TRB_TYPE(t) ((u32)(t) << 10)
#define TRB_TYPE_OF(dw3) (((dw3) >> 10) & 0x3F)
#define TRB_NORMAL 1
#define TRB_LINK 6
#define TRB_TRANSFER_EVENT 32
#define TRB_PORT_STATUS_CHANGE_EVENT 34
#define TRB_MAX_BYTES 0x10000 /* a Normal TRB moves at most 64 KiB (6.4.1.1) */

/* completion codes (6.4.5) */
#define CC_SUCCESS 1
#define CC_DATA_BUFFER_ERROR 2
#define CC_BABBLE 3
#define CC_USB_TRANSACTION_ERROR 4
#define CC_STALL 6
#define CC_SHORT_PACKET 13

/* DbC context (7.6.9): info context, OUT endpoint context, IN endpoint context, 64 B each */
#define CTX_SIZE 192
#define CTX_OUT 64
#define CTX_IN 128
#define EP_TYPE_BULK_OUT 2
#define EP_TYPE_BULK_IN 6
#define MAX_PACKET_SIZE 1024
#define CERR 3

/* the ERST entry (6.5) */
struct erst_entry {
	u32 base_lo, base_hi;
	u32 size;
	u32 rsvd;
};

/* ------------------------------------------------------------------ driver state */
struct ring {
	struct trb *trbs;
	u64 phys;
	u32 n;     /* TRBs including the Link TRB */
	u32 enq;   /* producer index */
	u32 pcs;   /* producer cycle state */
	u32 deq;   /* oldest TRB in flight */
	u32 used;  /* TRBs in flight */
};

struct dbc {
	int state;
	unsigned int flags;
	int mmio64;
	volatile u8 *bar;
	unsigned long bar_size;
	volatile struct dbc_regs *r;
	u32 caplength;
	int ac64;
	u32 dcdb_template; /* DCDB as read: RsvdP bits written back as read */
	u32 max_burst;     /* DCCTRL Debug Max Burst */

	/* event ring (4.9.4, 7.6.8.3) */
	struct trb *ev;
	u64 ev_phys;
	u32 ev_deq;
	u32 ev_ccs;
	struct erst_entry *erst;
	u64 erst_phys;

	/* context and strings */
	u32 *ctx;
	u64 ctx_phys;
	u8 *str;
	u64 str_phys;

	/* target -> host: OUT ring fed from a byte FIFO */
	struct ring out;
	u8 *fifo;
	u64 fifo_phys;
	u64 fifo_head, fifo_tail; /* byte counters: head - tail bytes in flight */
	u32 out_chunk[DBC_RING_TRBS]; /* FIFO bytes behind each TRB (released on completion) */
	u32 out_left[DBC_RING_TRBS];  /* bytes that TRB still has to move */
	int out_halted;
	int out_reset; /* the host went away with bytes in flight: report once */
	int out_error; /* a TRB failed on the wire: report once */

	/* host -> target: IN ring with DBC_IN_BUFS posted buffers */
	struct ring in;
	u8 *inbuf;
	u64 inbuf_phys;
	u64 in_posted, in_done, in_read; /* sequence numbers; buffer = seq % DBC_IN_BUFS */
	u32 in_len[DBC_IN_BUFS];
	u32 in_off[DBC_IN_BUFS];
	int in_halted;

	int port_change;
	u32 usb3_first, usb3_count; /* USB3 root ports (Supported Protocol, major 3) */
	u32 legacy;                 /* USB Legacy Support capability offset, 0: none */
	u32 pci_vendor;             /* the PCI scan's choice (0: BAR0 was given) */
};

static struct dbc dbc;

/* counters for the harness (read by symbol); an adapter needs none of them */
struct dbc_stats {
	u64 events, doorbells, erdp_writes;
	u64 bytes_out, bytes_in, trbs_out, trbs_in;
	u64 lost_bytes, device_errors, disconnects, port_resets, dce_lost, halts_cleared;
	u64 root_port_resets; /* USB3 root ports reset because nothing connected after DCE */
	/* drains before a re-initialisation (or after a removal) that found the event ring
	 * full: the controller may have held completions the reset discarded (4.9.4), so bytes
	 * counted lost since may have arrived */
	u64 event_ring_full;
};
struct dbc_stats dbc_stats;

struct dbc_pci_hit dbc_pci_hits[DBC_PCI_MAX_HITS];

/* ------------------------------------------------------------------ PCI (mechanism #1) */
static inline void outl(u16 port, u32 v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline u32 inl(u16 port)
{
	u32 v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static u32 pci_read(u32 bdf, u32 off)
{
	outl(0xCF8, 0x80000000u | bdf << 8 | (off & 0xFC));
	return inl(0xCFC);
}

static void pci_write(u32 bdf, u32 off, u32 v)
{
	outl(0xCF8, 0x80000000u | bdf << 8 | (off & 0xFC));
	outl(0xCFC, v);
}

#define PCI_COMMAND_MEMORY (1u << 1)
#define PCI_COMMAND_MASTER (1u << 2)
#define PCI_CLASS_XHCI 0x0C0330u

/* BAR0 (64-bit memory BAR: bits 2:1 = 10b) and its size by the size probe: write all ones,
 * read back the mask, restore (PCI 3.0 6.2.5.1). Memory decode is off while probing. */
static int pci_bar0(u32 bdf, u64 *base, u64 *size)
{
	u32 lo = pci_read(bdf, 0x10), hi = pci_read(bdf, 0x14), cmd = pci_read(bdf, 0x04);
	u32 mlo, mhi;
	u64 mask;

	if ((lo & 0x1) || ((lo >> 1) & 0x3) != 0x2)
		return -DBC_ENODEV; /* I/O BAR or not 64-bit */
	pci_write(bdf, 0x04, (cmd & 0xFFFF) & ~PCI_COMMAND_MEMORY);
	pci_write(bdf, 0x10, ALL_ONES);
	pci_write(bdf, 0x14, ALL_ONES);
	mlo = pci_read(bdf, 0x10);
	mhi = pci_read(bdf, 0x14);
	pci_write(bdf, 0x10, lo);
	pci_write(bdf, 0x14, hi);
	pci_write(bdf, 0x04, cmd & 0xFFFF);
	mask = ((u64)mhi << 32) | (mlo & ~0xFu);
	*base = ((u64)hi << 32) | (lo & ~0xFu);
	*size = ~mask + 1;
	return 0;
}

int dbc_pci_scan(void)
{
	int found = 0;
	u32 bus, dev, fn;

	for (bus = 0; bus < 256; bus++) {
		for (dev = 0; dev < 32; dev++) {
			for (fn = 0; fn < 8; fn++) {
				u32 bdf = bus << 8 | dev << 3 | fn;
				u32 id = pci_read(bdf, 0x00);
				u64 base, size;

				if (id == ALL_ONES) {
					if (fn == 0)
						break; /* no device: skip its functions */
					continue;
				}
				if (fn == 0 && !(pci_read(bdf, 0x0C) & 0x00800000u))
					fn = 8; /* single-function device (header type bit 7) */
				if (pci_read(bdf, 0x08) >> 8 != PCI_CLASS_XHCI)
					continue;
				if (pci_bar0(bdf, &base, &size) || found == DBC_PCI_MAX_HITS)
					continue;
				dbc_pci_hits[found].bdf = bdf;
				dbc_pci_hits[found].id = id;
				dbc_pci_hits[found].bar0 = base;
				dbc_pci_hits[found].bar0_size = size;
				found++;
			}
		}
	}
	return found;
}

/* Memory Space and Bus Master on (the DbC reads and writes system memory). The Status half
 * of the dword is RW1C: written as 0. */
static void pci_enable(u32 bdf)
{
	u32 cmd = pci_read(bdf, 0x04) & 0xFFFF;
#ifdef DBC_MUT_NO_BUS_MASTER
	pci_write(bdf, 0x04, cmd | PCI_COMMAND_MEMORY);
#else
	pci_write(bdf, 0x04, cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
#endif
}

static int find_dbc(u32 *offset);

/* The first xHCI of the scan whose extended capability list has a Debug Capability (a machine
 * may have several xHCIs, some without one). Each candidate gets Memory Space on (its BAR0
 * does not decode otherwise), BAR0 mapped at the size the probe found (64 KiB on Intel parts,
 * 1 MiB on AMD's) and its list walked; one without a DbC gets its Command register back. Bus
 * Master is turned on for the chosen one only. */
static int pci_find_dbc(u32 *offset)
{
	int n = dbc_pci_scan(), i;

	if (n < 1) {
		dbc_env_log("dbc: no xHCI (class 0C0330) on any PCI bus\n");
		return -DBC_ENODEV;
	}
	for (i = 0; i < n; i++) {
		const struct dbc_pci_hit *hit = &dbc_pci_hits[i];
		u32 cmd = pci_read(hit->bdf, 0x04) & 0xFFFF;

		pci_write(hit->bdf, 0x04, cmd | PCI_COMMAND_MEMORY);
		dbc.bar_size = (unsigned long)hit->bar0_size;
		dbc.bar = dbc_env_map_mmio(hit->bar0, dbc.bar_size);
		if (dbc.bar && find_dbc(offset) == 0) {
			pci_enable(hit->bdf);
			dbc.pci_vendor = hit->id & 0xFFFF;
			return 0;
		}
		dbc_env_log("dbc: xHCI %02x:%02x.%x (%04x:%04x) has no Debug Capability: next\n",
			    hit->bdf >> 8, (hit->bdf >> 3) & 0x1F, hit->bdf & 7, hit->id & 0xFFFF,
			    hit->id >> 16);
		pci_write(hit->bdf, 0x04, cmd);
		dbc.bar = 0;
	}
	dbc_env_log("dbc: none of the %d xHCIs has a Debug Capability (ID 0x0A)\n", n);
	return -DBC_ENODEV;
}

/* ------------------------------------------------------------------ small helpers */
static int removed(u32 v)
{
	return v == ALL_ONES; /* a gone PCIe device reads all ones */
}

/* Wait (bounded) until (DCCTRL & DCE) == want. */
static int wait_dce(u32 want)
{
	unsigned long waited;

	for (waited = 0;; waited += POLL_STEP_US) {
		u32 ctrl = RD32(&dbc.r->dcctrl); /* @site:wait-dce */
		if (removed(ctrl))
			return -DBC_EREMOVED;
		if ((ctrl & DCCTRL_DCE) == want)
			return 0;
		if (waited >= DCE_TIMEOUT_US)
			return -DBC_ETIMEDOUT;
		dbc_env_udelay(POLL_STEP_US);
	}
}

static void *alloc(unsigned long size, unsigned long align, u64 *phys)
{
	unsigned long long p = 0;
	void *v = dbc_env_dma_alloc(size, align, &p);

	if (!v)
		return 0;
	if (!dbc.ac64 && p + size > (1ull << 32)) {
		/* AC64 = 0: every address handed to the controller below 4 GiB (5.3.6) */
		dbc_env_log("dbc: DMA memory at 0x%llx above 4 GiB and AC64 = 0\n", p);
		dbc_env_dma_free(v, size);
		return 0;
	}
	memset(v, 0, size);
	*phys = p;
	return v;
}

/* ------------------------------------------------------------------ capability walk (7.0) */
static int find_dbc(u32 *offset)
{
	u32 hcc = RD32(dbc.bar + CAP_HCCPARAMS1);
	u32 off, steps;

	if (removed(hcc))
		return -DBC_EREMOVED;
	dbc.ac64 = hcc & HCCPARAMS1_AC64;
	dbc.caplength = RD32(dbc.bar + CAP_CAPLENGTH) & 0xFF;
	off = (hcc >> 16) * 4;
	*offset = 0;
	dbc.usb3_first = dbc.usb3_count = dbc.legacy = 0;
	for (steps = 0; off && steps < XECP_MAX_STEPS; steps++) {
		u32 head, next;

		if (off + 16 > dbc.bar_size)
			break;
		head = RD32(dbc.bar + off);
		if (removed(head))
			return -DBC_EREMOVED;
		if ((head & 0xFF) == XECP_ID_DEBUG && !*offset)
			*offset = off;
		if ((head & 0xFF) == XECP_ID_LEGACY && !dbc.legacy)
			dbc.legacy = off;
		if ((head & 0xFF) == XECP_ID_SUPPORTED_PROTOCOL && head >> 24 == 3) {
			u32 ports = RD32(dbc.bar + off + 8); /* 7:0 offset, 15:8 count */
			dbc.usb3_first = ports & 0xFF;
			dbc.usb3_count = (ports >> 8) & 0xFF;
		}
		next = (head >> 8) & 0xFF;
		if (!next)
			break;
		off += next * 4;
	}
	return *offset ? 0 : -DBC_ENODEV;
}

/* ------------------------------------------------------------------ BIOS handoff (4.22.1) */
/* Take the controller from the firmware: set HC OS Owned (a dword read-modify-write that
 * writes HC BIOS Owned back as read), wait (bounded) for the BIOS to clear HC BIOS Owned; a
 * BIOS that never lets go is logged and the bring-up goes on (as the Python driver and Linux
 * do). Then the firmware's SMIs are turned off and their events cleared (RW1C), the RsvdP
 * bits written back as read. */
static int bios_handoff(void)
{
	volatile u8 *legsup;
	u32 v, ctl, waited;

	if (!dbc.legacy)
		return 0;
	legsup = dbc.bar + dbc.legacy;
	v = RD32(legsup);
	if (removed(v))
		return -DBC_EREMOVED;
	if (v & USBLEGSUP_BIOS_OWNED) {
		WR32(legsup, v | USBLEGSUP_OS_OWNED); /* @site:handoff */
		for (waited = 0;; waited += HANDOFF_STEP_US) {
			v = RD32(legsup);
			if (removed(v))
				return -DBC_EREMOVED;
			if (!(v & USBLEGSUP_BIOS_OWNED))
				break;
			if (waited >= HANDOFF_TIMEOUT_US) {
				dbc_env_log("dbc: BIOS handoff failed: HC BIOS Owned still set 1 s after "
					    "the request (USBLEGSUP=0x%08x); going on\n", v);
				break;
			}
			dbc_env_udelay(HANDOFF_STEP_US);
		}
	}
	ctl = RD32(legsup + 4);
	WR32(legsup + 4, (ctl & ~USBLEGCTLSTS_SMI_ENABLES) | USBLEGCTLSTS_SMI_EVENTS);
	return 0;
}

/* ------------------------------------------------------------------ rings (4.9) */
static void ring_reset(struct ring *ring)
{
	struct trb *link = &ring->trbs[ring->n - 1];

	memset(ring->trbs, 0, ring->n * sizeof(struct trb));
	ring->enq = ring->deq = ring->used = 0;
	ring->pcs = 1;
	/* The Link TRB closes the segment and toggles the cycle state (6.4.4.1); its Cycle bit is
	 * handed over (set to the producer's) when the producer wraps. */
	link->dw[0] = (u32)ring->phys;
	link->dw[1] = (u32)(ring->phys >> 32);
#ifdef DBC_MUT_LINK_NO_TOGGLE
	link->dw[3] = TRB_TYPE(TRB_LINK);
#else
	link->dw[3] = TRB_TYPE(TRB_LINK) | TRB_TC; /* @site:link-tc */
#endif
}

/* free slots: one for the Link TRB, one always empty (so a full ring never looks empty) */
static u32 ring_free(const struct ring *ring)
{
	return ring->n - 2 - ring->used;
}

static u64 ring_addr(const struct ring *ring, u32 idx)
{
	return ring->phys + (u64)idx * sizeof(struct trb);
}

/* Write one Normal TRB (6.4.1.1): parameters first, the Cycle bit last. Returns its index. */
static u32 ring_push(struct ring *ring, u64 buf, u32 len, u32 flags)
{
	u32 idx = ring->enq;
	struct trb *t = &ring->trbs[idx];

	t->dw[0] = (u32)buf;
	t->dw[1] = (u32)(buf >> 32);
	t->dw[2] = len; /* TD Size 0, interrupter 0 */
	barrier();
	t->dw[3] = TRB_TYPE(TRB_NORMAL) | flags | ring->pcs;
	ring->used++;
	if (++ring->enq == ring->n - 1) {
		/* hand the Link TRB over with this lap's cycle, then start the next lap */
		struct trb *link = &ring->trbs[ring->n - 1];
		barrier();
		link->dw[3] = (link->dw[3] & ~TRB_CYCLE) | ring->pcs;
		ring->enq = 0;
#ifndef DBC_MUT_LINK_NO_TOGGLE
		ring->pcs ^= 1;
#endif
	}
	return idx;
}

static void ring_pop(struct ring *ring)
{
	ring->used--;
	if (++ring->deq == ring->n - 1)
		ring->deq = 0;
}

/* Doorbell (7.6.8.2): DB Target 0 = OUT ring, 1 = IN ring; RsvdP bits as read. */
static void doorbell(u32 target)
{
#ifdef DBC_MUT_DB_TARGET
	target += 2; /* the device context index, not the DB Target */
#endif
	WR32(&dbc.r->dcdb, (dbc.dcdb_template & ~0xFF00u) | target << 8); /* @site:doorbell */
	dbc_stats.doorbells++;
}

/* ------------------------------------------------------------------ contexts (7.6.9) */
static void fill_endpoint(u32 *ep, u32 type, const struct ring *ring)
{
	u32 mps = MAX_PACKET_SIZE, burst = dbc.max_burst;

#ifdef DBC_MUT_EP_MPS
	mps = 512; /* the high-speed bulk size */
#endif
#ifdef DBC_MUT_EP_BURST
	burst = 0;
#endif
#ifdef DBC_MUT_EP_TYPE
	type = type == EP_TYPE_BULK_OUT ? EP_TYPE_BULK_IN : EP_TYPE_BULK_OUT;
#endif
	memset(ep, 0, 64);
	/* dword1: CErr 2:1, EP Type 5:3, Max Burst 15:8, Max Packet Size 31:16 */
	ep[1] = CERR << 1 | type << 3 | burst << 8 | mps << 16;
	/* dwords 2-3: TR Dequeue Pointer with DCS = the ring's producer cycle state */
	ep[2] = (u32)ring->phys | ring->pcs;
	ep[3] = (u32)(ring->phys >> 32);
	ep[4] = MAX_PACKET_SIZE; /* Average TRB Length */
}

/* A USB string descriptor (USB 3.2 9.6.9): bLength, bDescriptorType 3, UTF-16LE text. */
static u32 string_descriptor(u8 *d, const char *s)
{
	u32 n = 0;

#ifdef DBC_MUT_ASCII_STRINGS
	while (s[n] && n < 120) {
		d[2 + n] = (u8)s[n];
		n++;
	}
	d[0] = (u8)(2 + n);
#else
	while (s[n] && n < 126) {
		d[2 + 2 * n] = (u8)s[n]; /* ASCII -> UTF-16LE */
		d[3 + 2 * n] = 0;
		n++;
	}
	d[0] = (u8)(2 + 2 * n);
#endif
	d[1] = 3;
	return d[0];
}

#define STRING_SLOT 256

static void fill_info(void)
{
	u32 len[4], i;
	u8 *s0 = dbc.str;

	/* String0: the LANGID table, one entry 0x0409 (English, United States) */
#ifdef DBC_MUT_STRING0_EMPTY
	s0[0] = 2;
#else
	s0[0] = 4;
#endif
	s0[1] = 3;
	s0[2] = 0x09;
	s0[3] = 0x04;
	len[0] = s0[0];
	len[1] = string_descriptor(dbc.str + 1 * STRING_SLOT, DBC_MANUFACTURER);
	len[2] = string_descriptor(dbc.str + 2 * STRING_SLOT, DBC_PRODUCT);
	len[3] = string_descriptor(dbc.str + 3 * STRING_SLOT, DBC_SERIAL);
#ifdef DBC_MUT_STR_BLENGTH
	for (i = 1; i < 4; i++)
		len[i] -= 2; /* the text only, without bLength and bDescriptorType */
#endif
	/* info context (7.6.9.1): four 64-bit string addresses, then one dword of lengths */
	for (i = 0; i < 4; i++) {
		u64 a = dbc.str_phys + i * STRING_SLOT;
		dbc.ctx[2 * i] = (u32)a;
		dbc.ctx[2 * i + 1] = (u32)(a >> 32);
	}
	dbc.ctx[8] = len[0] | len[1] << 8 | len[2] << 16 | len[3] << 24;
}

/* ------------------------------------------------------------------ pipes */
/* Forget everything in flight on both rings and rewrite both endpoint contexts: after an
 * unplug, a port reset or a DCE loss the controller starts from clean rings (7.6.6; rings
 * otherwise fill up after a few reconnects). Bytes received and not read stay readable. */
static void reinit_pipes(void)
{
	if (dbc.fifo_head != dbc.fifo_tail) {
		dbc_stats.lost_bytes += dbc.fifo_head - dbc.fifo_tail;
		dbc.out_reset = 1;
	}
	dbc.fifo_tail = dbc.fifo_head;
	dbc.in_posted = dbc.in_done; /* posted, not filled: posted again on the new ring */
	dbc.out_halted = dbc.in_halted = 0;
	ring_reset(&dbc.out);
	ring_reset(&dbc.in);
	fill_endpoint(dbc.ctx + CTX_OUT / 4, EP_TYPE_BULK_OUT, &dbc.out);
	fill_endpoint(dbc.ctx + CTX_IN / 4, EP_TYPE_BULK_IN, &dbc.in);
}

/* Post receive buffers until DBC_IN_BUFS are posted or unread. Returns how many. */
static u32 in_prime(void)
{
	u32 posted = 0;

	while (dbc.in_posted - dbc.in_read < DBC_IN_BUFS && ring_free(&dbc.in)) {
		u32 b = (u32)(dbc.in_posted % DBC_IN_BUFS);
		dbc.in_len[b] = dbc.in_off[b] = 0;
		ring_push(&dbc.in, dbc.inbuf_phys + (u64)b * DBC_IN_BUF_SIZE, DBC_IN_BUF_SIZE,
			  TRB_ISP | TRB_IOC);
		dbc.in_posted++;
		posted++;
	}
	return posted;
}

/* ------------------------------------------------------------------ bring-up (7.6.4) */
static void free_all(void)
{
	if (dbc.ev)
		dbc_env_dma_free(dbc.ev, DBC_EVENT_TRBS * sizeof(struct trb));
	if (dbc.erst)
		dbc_env_dma_free(dbc.erst, 64);
	if (dbc.ctx)
		dbc_env_dma_free(dbc.ctx, 256);
	if (dbc.str)
		dbc_env_dma_free(dbc.str, 4 * STRING_SLOT);
	if (dbc.out.trbs)
		dbc_env_dma_free(dbc.out.trbs, DBC_RING_TRBS * sizeof(struct trb));
	if (dbc.in.trbs)
		dbc_env_dma_free(dbc.in.trbs, DBC_RING_TRBS * sizeof(struct trb));
	if (dbc.fifo)
		dbc_env_dma_free(dbc.fifo, DBC_OUT_FIFO_SIZE);
	if (dbc.inbuf)
		dbc_env_dma_free(dbc.inbuf, DBC_IN_BUFS * DBC_IN_BUF_SIZE);
	dbc.ev = 0;
	dbc.erst = 0;
	dbc.ctx = 0;
	dbc.str = 0;
	dbc.out.trbs = dbc.in.trbs = 0;
	dbc.fifo = dbc.inbuf = 0;
}

/* Step 3: every structure, each in its own allocation. Ring segments are aligned to their
 * size, so none crosses a 64 KiB boundary (table 6-1); the context sits in 256 aligned bytes,
 * so it never crosses a page. */
static int allocate(void)
{
	dbc.ev = alloc(DBC_EVENT_TRBS * sizeof(struct trb), DBC_EVENT_TRBS * sizeof(struct trb),
		       &dbc.ev_phys);
	dbc.erst = alloc(64, 64, &dbc.erst_phys);
	dbc.ctx = alloc(256, 256, &dbc.ctx_phys);
	dbc.str = alloc(4 * STRING_SLOT, 64, &dbc.str_phys);
	dbc.out.trbs = alloc(DBC_RING_TRBS * sizeof(struct trb),
			     DBC_RING_TRBS * sizeof(struct trb), &dbc.out.phys);
	dbc.in.trbs = alloc(DBC_RING_TRBS * sizeof(struct trb),
			    DBC_RING_TRBS * sizeof(struct trb), &dbc.in.phys);
	dbc.fifo = alloc(DBC_OUT_FIFO_SIZE, TRB_MAX_BYTES, &dbc.fifo_phys);
	/* aligned to its size (a power of two): no buffer crosses a 64 KiB line */
	dbc.inbuf = alloc(DBC_IN_BUFS * DBC_IN_BUF_SIZE, DBC_IN_BUF_SIZE, &dbc.inbuf_phys);
	if (!dbc.ev || !dbc.erst || !dbc.ctx || !dbc.str || !dbc.out.trbs || !dbc.in.trbs ||
	    !dbc.fifo || !dbc.inbuf) {
		free_all();
		return -DBC_ENOMEM;
	}
	dbc.out.n = dbc.in.n = DBC_RING_TRBS;
	return 0;
}

/* Steps 3-5: event ring, contexts and strings, registers, DCE. Also the whole re-bring-up
 * after the DbC was reset under us (DCE dropped by itself). */
static int program_and_enable(void)
{
	volatile struct dbc_regs *r = dbc.r;
	u32 ctrl = RD32(&r->dcctrl);
	u32 erstsz = 1;
	u64 ctx = dbc.ctx_phys;

	/* event ring: empty, consumer cycle state 1; one ERST entry (6.5) */
	memset(dbc.ev, 0, DBC_EVENT_TRBS * sizeof(struct trb));
	dbc.ev_deq = 0;
	dbc.ev_ccs = 1;
	dbc.erst->base_lo = (u32)dbc.ev_phys;
	dbc.erst->base_hi = (u32)(dbc.ev_phys >> 32);
#ifdef DBC_MUT_EVENT_SEGMENT_SIZE
	dbc.erst->size = 8;
#else
	dbc.erst->size = DBC_EVENT_TRBS;
#endif
	dbc.port_change = 0;

	/* step 4: strings and info context, endpoint contexts (Max Burst from DCCTRL) */
	dbc.max_burst = DCCTRL_MAX_BURST(ctrl);
	fill_info();
	reinit_pipes();
	barrier();

	/* step 3 (registers): DCERSTSZ, DCERSTBA, DCERDP, then DCCP and the device info */
#ifdef DBC_MUT_ERST_SIZE_0
	erstsz = 0;
#endif
#ifdef DBC_MUT_CTX_MISALIGNED
	ctx += 8;
#endif
	WR32(&r->dcerstsz, (RD32(&r->dcerstsz) & ~0xFFFFu) | erstsz); /* @site:erstsz */
	WR64(r->dcerstba, dbc.erst_phys);                          /* @site:erstba */
	WR64(r->dcerdp, dbc.ev_phys);                              /* @site:erdp-init */
#ifndef DBC_MUT_NO_DCCP
	WR64(r->dccp, ctx);                                        /* @site:dccp */
#endif
	WR32(&r->dcddi1, (u32)DBC_VENDOR_ID << 16 | DBC_PROTOCOL);
	WR32(&r->dcddi2, (u32)DBC_DEVICE_REV << 16 | DBC_PRODUCT_ID);
	dbc.state = DBC_STATE_INITIALIZED;

	/* step 5: DCE and LSE, then wait for DCE to read back 1 */
#ifdef DBC_MUT_BITFIELD_MMIO
	{
		/* the mistake: a packed bitfield view of DCCTRL makes the compiler use byte
		 * accesses (a read-modify-write of DCCTRL's top byte) */
		struct __attribute__((packed)) dcctrl_bits {
			u8 dcr : 1, lse : 1, hot : 1, hit : 1, drc : 1, rsvd0 : 3;
			u8 rsvd1;
			u8 max_burst;
			u8 address : 7, dce : 1;
		};
		volatile struct dcctrl_bits *bits = (volatile struct dcctrl_bits *)&r->dcctrl;
		bits->dce = 1; /* @site:dce-bitfield */
	}
#else
	WR32(&r->dcctrl, DCCTRL_DCE | DCCTRL_LSE); /* @site:dce */
#endif
	return wait_dce(DCCTRL_DCE);
}

/* Step 6 (option): reset the USB3 root ports that have nothing connected; some hosts only
 * see the DbC after it (Linux early printk on Intel, Xen on every vendor). Change bits and
 * PED are written as 0 so nothing else changes (5.4.8). */
static void reset_usb3_ports(void)
{
	u32 i, waited;
	volatile u8 *op = dbc.bar + dbc.caplength;

	for (i = 0; i < dbc.usb3_count; i++) {
		volatile u8 *portsc = op + PORTSC_BASE + 0x10 * (dbc.usb3_first + i - 1);
		u32 v = RD32(portsc);
		if (removed(v) || (v & PORTSC_CCS))
			continue;
		WR32(portsc, (v & ~(PORTSC_PED | PORTSC_CHANGE_BITS)) | PORTSC_PR);
		for (waited = 0; waited < PORT_RESET_TIMEOUT_US; waited += POLL_STEP_US) {
			if (!(RD32(portsc) & PORTSC_PR))
				break;
			dbc_env_udelay(POLL_STEP_US);
		}
	}
}

static int teardown(int err)
{
	if (dbc.r && dbc.state != DBC_STATE_REMOVED)
		WR32(&dbc.r->dcctrl, 0);
	free_all();
	dbc.state = DBC_STATE_DISABLED;
	return err;
}

int dbc_init(unsigned long long bar0_phys, unsigned int flags, unsigned long wait_us)
{
	u32 offset, ctrl;
	unsigned long waited;
	int err;

	if (dbc.state != DBC_STATE_DISABLED)
		return -DBC_EINVAL;
	memset(&dbc, 0, sizeof(dbc));
	dbc.flags = flags;
	dbc.mmio64 = !!(flags & DBC_F_MMIO64);
	dbc.bar_size = DBC_BAR0_MAP_SIZE;

	/* find the controller and its Debug Capability: BAR0 given, or a PCI scan (class
	 * 0C0330, 64-bit BAR0) for the first xHCI that has one */
	if (bar0_phys) {
		dbc.bar = dbc_env_map_mmio(bar0_phys, dbc.bar_size);
		if (!dbc.bar)
			return -DBC_ENODEV;
		err = find_dbc(&offset);
		if (err) {
			dbc_env_log("dbc: no Debug Capability (ID 0x0A) in the xECP list\n");
			return err;
		}
	} else {
		err = pci_find_dbc(&offset);
		if (err)
			return err;
	}
	dbc.r = (volatile struct dbc_regs *)(dbc.bar + offset);
	dbc_env_log("dbc: Debug Capability at BAR0+0x%x\n", offset);
	if (dbc.pci_vendor == PCI_VENDOR_INTEL && !(flags & DBC_F_PORT_RESET)) {
		dbc_env_log("dbc: Intel xHCI: its USB3 root ports are reset after DCE\n");
		dbc.flags |= DBC_F_PORT_RESET;
	}

	/* the firmware lets go of the controller first */
	err = bios_handoff();
	if (err)
		return err;

	/* step 1: DCE already set means firmware or another driver owns the DbC */
	ctrl = RD32(&dbc.r->dcctrl);
	if (removed(ctrl))
		return -DBC_EREMOVED;
	if ((ctrl & DCCTRL_DCE) && !(flags & DBC_F_TAKEOVER))
		return -DBC_EBUSY;

	/* step 2: DCCTRL = 0, wait for DCE = 0 */
	WR32(&dbc.r->dcctrl, 0); /* @site:disable */
	err = wait_dce(0);
	if (err)
		return err;

	err = allocate();
	if (err)
		return err;
	dbc.dcdb_template = RD32(&dbc.r->dcdb);
	err = program_and_enable();
	if (err)
		return teardown(err);
	dbc.state = DBC_STATE_ENABLED;
	if (dbc.flags & DBC_F_PORT_RESET)
		reset_usb3_ports();

	/* step 7: the debug host connects (CCS) and configures us (DCR): dbc_poll() follows. A
	 * part that needs its USB3 root ports reset before the host sees the DbC, and was not
	 * known to, shows no CCS: reset them once (Xen resets them on every vendor). */
	for (waited = 0; wait_us; waited += POLL_STEP_US) {
		err = dbc_poll();
		if (err < 0)
			return teardown(err);
		if (dbc.state == DBC_STATE_CONFIGURED)
			break;
		if (waited == PORT_RESET_AFTER_US && dbc.state == DBC_STATE_ENABLED &&
		    !(dbc.flags & DBC_F_PORT_RESET)) {
			dbc_env_log("dbc: DCPORTSC.CCS still 0 %u ms after DCE: resetting the USB3 root "
				    "ports once\n", PORT_RESET_AFTER_US / 1000);
			reset_usb3_ports();
			dbc_stats.root_port_resets++;
		}
		if (waited >= wait_us)
			return teardown(-DBC_ETIMEDOUT);
		dbc_env_udelay(POLL_STEP_US); /* @site:wait-configured */
	}
	return 0;
}

/* ------------------------------------------------------------------ events (4.9.4) */
/* These codes halt the endpoint on the TRB (4.10.2); it runs again from the TR Dequeue Pointer
 * once the host clears the halt. Not checked against the endpoint context: the host may have
 * cleared the halt before this drain, and the controller then already ran the TRB again (its
 * next event follows). */
static int retry_code(u32 code)
{
	return code == CC_STALL || code == CC_BABBLE || code == CC_USB_TRANSACTION_ERROR ||
	       code == CC_DATA_BUFFER_ERROR;
}

/* target -> host TRB completed (every TRB has IOC: one event per TRB, in ring order) */
static void out_event(u64 pointer, u32 code, u32 residual)
{
	struct ring *ring = &dbc.out;
	u32 idx = ring->deq;
	u64 addr = ring_addr(ring, idx);
	u32 left = dbc.out_left[idx], moved;

	if (!ring->used) {
		dbc_stats.device_errors++; /* an event for nothing in flight */
		return;
	}
	if (pointer != addr)
		dbc_stats.device_errors++; /* completing in ring order anyway */
	if (residual > left)
		residual = left;
	moved = left - residual;
	dbc_stats.bytes_out += moved;
	if (code == CC_SUCCESS || code == CC_SHORT_PACKET) {
		dbc_stats.trbs_out++;
		dbc.fifo_tail += dbc.out_chunk[idx];
		ring_pop(ring);
		return;
	}
	if (retry_code(code)) {
		/* halted on this TRB: rewrite it to what was not moved; it runs again once the
		 * host clears the halt (DCCTRL.HOT reads 0) */
		if (moved) {
			struct trb *t = &ring->trbs[idx];
			u64 buf = (((u64)t->dw[1] << 32) | t->dw[0]) + moved;
			t->dw[0] = (u32)buf;
			t->dw[1] = (u32)(buf >> 32);
			t->dw[2] = (t->dw[2] & ~0x1FFFFu) | (left - moved);
			dbc.out_left[idx] = left - moved;
		}
		dbc.out_halted = 1;
		return;
	}
	/* the controller moved past the TRB (TRB Error...): its bytes are lost */
	dbc_stats.lost_bytes += left - moved;
	dbc.out_error = 1;
	dbc.fifo_tail += dbc.out_chunk[idx];
	ring_pop(ring);
}

/* host -> target buffer completed */
static void in_event(u64 pointer, u32 code, u32 residual)
{
	struct ring *ring = &dbc.in;
	u32 idx = ring->deq;
	u64 addr = ring_addr(ring, idx);
	u32 b = (u32)(dbc.in_done % DBC_IN_BUFS);
	u32 left = DBC_IN_BUF_SIZE - dbc.in_len[b], got;

	if (!ring->used || dbc.in_done == dbc.in_posted) {
		dbc_stats.device_errors++;
		return;
	}
	if (pointer != addr)
		dbc_stats.device_errors++;
	if (residual > left)
		residual = left;
	got = left - residual;
	if (code == CC_SUCCESS || code == CC_SHORT_PACKET) {
		dbc.in_len[b] += got;
		dbc_stats.bytes_in += got;
		dbc_stats.trbs_in++;
		dbc.in_done++;
		ring_pop(ring);
		return;
	}
	if (retry_code(code)) {
		if (code == CC_STALL && got) {
			/* keep what arrived, rewrite the TRB to the rest of the buffer */
			struct trb *t = &ring->trbs[idx];
			dbc.in_len[b] += got;
			dbc_stats.bytes_in += got;
			u64 buf = dbc.inbuf_phys + (u64)b * DBC_IN_BUF_SIZE + dbc.in_len[b];
			t->dw[0] = (u32)buf;
			t->dw[1] = (u32)(buf >> 32);
			t->dw[2] = DBC_IN_BUF_SIZE - dbc.in_len[b];
		}
		dbc.in_halted = 1;
		return;
	}
	/* moved past with an error: the buffer holds no data */
	dbc.in_len[b] = 0;
	dbc.in_done++;
	ring_pop(ring);
}

/* Consume every event software owns (Cycle == consumer cycle state), then write DCERDP once
 * with the next unread TRB (4.9.4, 7.6.8.4). write_erdp = 0: the last drain before a
 * re-initialisation or after a surprise removal; the event ring is in our memory, so it is
 * read even when the registers are gone, and no register is written. */
static int drain_events(int write_erdp)
{
	int consumed = 0;

	for (;;) {
		struct trb *e = &dbc.ev[dbc.ev_deq];
		u32 dw3 = e->dw[3];

		if ((dw3 & TRB_CYCLE) != dbc.ev_ccs)
			break;
		barrier(); /* read the event after its Cycle bit */
		if (TRB_TYPE_OF(dw3) == TRB_TRANSFER_EVENT) {
			u64 pointer = ((u64)e->dw[1] << 32) | e->dw[0];
			u32 code = e->dw[2] >> 24, residual = e->dw[2] & 0xFFFFFF;
			u32 ep = (dw3 >> 16) & 0x1F;
			/* Endpoint ID: 0/1 on AMD parts (spec style), 2/3 on Intel (device context
			 * index); accept both. Not the doorbell's numbering. */
			if (ep == 0 || ep == 2)
				out_event(pointer, code, residual);
			else if (ep == 1 || ep == 3)
				in_event(pointer, code, residual);
			else
				dbc_stats.device_errors++;
		} else if (TRB_TYPE_OF(dw3) == TRB_PORT_STATUS_CHANGE_EVENT) {
			dbc.port_change = 1; /* DCPORTSC is read after the drain */
		} else {
			dbc_stats.device_errors++;
		}
		consumed++;
#ifdef DBC_MUT_ERDP_PAST_END
		/* the mistake: DCERDP computed before the index wraps */
		if (++dbc.ev_deq == DBC_EVENT_TRBS) {
			WR64(dbc.r->dcerdp, dbc.ev_phys + dbc.ev_deq * sizeof(struct trb)); /* @site:erdp-past-end */
			dbc.ev_deq = 0;
			dbc.ev_ccs ^= 1;
		}
#else
		if (++dbc.ev_deq == DBC_EVENT_TRBS) {
			dbc.ev_deq = 0;
			dbc.ev_ccs ^= 1;
		}
#endif
	}
	if (consumed && write_erdp) {
		WR64(dbc.r->dcerdp, dbc.ev_phys + dbc.ev_deq * sizeof(struct trb)); /* @site:erdp */
		dbc_stats.erdp_writes++;
	}
	dbc_stats.events += consumed;
	return consumed;
}

/* The last drain before the event ring is re-initialised or freed (DCE lost, stop, surprise
 * removal): consume every event the controller wrote, reading our memory only. A full ring
 * (every TRB but one written, 4.9.4: the controller never overwrites an unconsumed event)
 * means it may have held more completions that are now gone: counted for the harness. */
static void drain_before_reinit(void)
{
	if (drain_events(0) >= DBC_EVENT_TRBS - 1)
		dbc_stats.event_ring_full++;
}

/* ------------------------------------------------------------------ link (7.6.6) */
static void ack_portsc(u32 portsc)
{
	/* RW1C change bits written back as read; PED is plain RW: written as read too */
	if (portsc & DCPORTSC_CHANGE_BITS)
		WR32(&dbc.r->dcportsc, portsc);
}

static void ack_drc(u32 ctrl)
{
	/* DRC is RW1C; HIT/HOT written as 0 (never halt by accident) */
	WR32(&dbc.r->dcctrl, (ctrl & ~(DCCTRL_HIT | DCCTRL_HOT)) | DCCTRL_DRC);
}

static void lost_host(u32 ctrl, u32 portsc)
{
	if ((portsc & DCPORTSC_PRC) || (portsc & DCPORTSC_PR))
		dbc_stats.port_resets++;
	else
		dbc_stats.disconnects++;
	reinit_pipes();
	ack_portsc(portsc);
	if (ctrl & DCCTRL_DRC)
		ack_drc(ctrl);
	dbc.state = (portsc & DCPORTSC_CCS) ? DBC_STATE_CONNECTED : DBC_STATE_ENABLED;
}

/* DCR rose: acknowledge, then ring both doorbells: the endpoints stay idle until software
 * rings them (7.6.7.4), which also restarts what was queued before a replug. */
static void configured(u32 ctrl, u32 portsc)
{
	ack_portsc(portsc);
	if (ctrl & DCCTRL_DRC)
		ack_drc(ctrl);
	dbc.state = DBC_STATE_CONFIGURED;
	if (!(RD32(&dbc.r->dcst) >> 24))
		dbc_stats.device_errors++; /* DCST Debug Port Number 0 after DCR */
	dbc.out_halted = dbc.in_halted = 0;
	in_prime();
	doorbell(1);
	doorbell(0);
}

static void follow(u32 ctrl)
{
	volatile struct dbc_regs *r = dbc.r;

	if (dbc.state == DBC_STATE_CONFIGURED &&
	    (dbc.port_change || !(ctrl & DCCTRL_DCR) || (ctrl & DCCTRL_DRC))) {
		u32 portsc = RD32(&r->dcportsc);
		dbc.port_change = 0;
		if ((ctrl & DCCTRL_DCR) && (portsc & DCPORTSC_CCS) &&
		    !(portsc & (DCPORTSC_PRC | DCPORTSC_CSC))) {
			ack_portsc(portsc);
			if (ctrl & DCCTRL_DRC)
				lost_host(ctrl, portsc); /* reconfigured between two polls */
		} else {
			lost_host(ctrl, portsc); /* unplug, port reset, or DCR = 0 */
		}
		ctrl = RD32(&r->dcctrl);
	}
	if (dbc.state == DBC_STATE_CONFIGURED) {
		/* HOT/HIT: the host halted an endpoint; when it clears, ring that doorbell again */
		if (ctrl & DCCTRL_HOT) {
			dbc.out_halted = 1;
		} else if (dbc.out_halted) {
			dbc.out_halted = 0;
			dbc_stats.halts_cleared++;
			doorbell(0);
		}
		if (ctrl & DCCTRL_HIT) {
			dbc.in_halted = 1;
		} else if (dbc.in_halted) {
			dbc.in_halted = 0;
			dbc_stats.halts_cleared++;
			doorbell(1);
		}
	}
	if (dbc.state == DBC_STATE_ENABLED || dbc.state == DBC_STATE_CONNECTED) {
		u32 portsc = RD32(&r->dcportsc);
		dbc.port_change = 0;
		if (ctrl & DCCTRL_DCR) {
			configured(ctrl, portsc);
			return;
		}
		dbc.state = (portsc & DCPORTSC_CCS) ? DBC_STATE_CONNECTED : DBC_STATE_ENABLED;
		ack_portsc(portsc);
	}
}

int dbc_poll(void)
{
	u32 ctrl;
	int consumed;

	if (dbc.state == DBC_STATE_REMOVED)
		return -DBC_EREMOVED;
	if (dbc.state == DBC_STATE_DISABLED)
		return -DBC_EINVAL;
	ctrl = RD32(&dbc.r->dcctrl); /* @site:poll */
	if (removed(ctrl)) {
		/* the controller is gone: what it wrote before it went is still in our memory;
		 * consume it (4.9.4) so completed host -> target data stays readable and
		 * confirmed target -> host bytes count as delivered, then report the removal */
		dbc_env_log("dbc: DCCTRL reads all ones: controller removed\n");
		drain_before_reinit();
		dbc.state = DBC_STATE_REMOVED;
		return -DBC_EREMOVED;
	}
	if (!(ctrl & DCCTRL_DCE)) {
		/* DCE dropped by itself: the controller was reset (HCRST); bring it up again
		 * (Linux early printk, Xen, xue and EDK2 all do). Retried on the next poll. */
		if (dbc.state != DBC_STATE_INITIALIZED) {
			dbc_env_log("dbc: DCE dropped (DCCTRL=0x%x): bringing the DbC up again\n", ctrl);
			dbc_stats.dce_lost++;
			/* first consume every event the controller wrote before the reset (4.9.4):
			 * the re-initialisation empties the event ring and both transfer rings, so
			 * an unconsumed Transfer Event would lose host -> target bytes the host saw
			 * acknowledged and report target -> host bytes it received as lost. The
			 * registers may be reset: DCERDP is not written (program_and_enable does). */
			drain_before_reinit();
		}
		dbc.state = DBC_STATE_INITIALIZED;
		if (program_and_enable() == 0) {
			dbc.state = DBC_STATE_ENABLED;
			if (dbc.flags & DBC_F_PORT_RESET)
				reset_usb3_ports();
		}
		return 0;
	}
	if (dbc.state == DBC_STATE_INITIALIZED)
		dbc.state = DBC_STATE_ENABLED;
	consumed = drain_events(1);
	follow(ctrl);
	if (dbc.state == DBC_STATE_CONFIGURED && in_prime() && !dbc.in_halted)
		doorbell(1);
	return consumed;
}

/* ------------------------------------------------------------------ data path */
long dbc_write(const void *buf, unsigned long len)
{
	const u8 *src = buf;
	u64 head = dbc.fifo_head;
	unsigned long room, take, done;
	u32 slots, trbs;

	if (dbc.state == DBC_STATE_REMOVED)
		return -DBC_EREMOVED;
	if (dbc.out_reset) {
		dbc.out_reset = 0;
		return -DBC_ECONNRESET;
	}
	if (dbc.out_error) {
		dbc.out_error = 0;
		return -DBC_EIO;
	}
	if (dbc.state != DBC_STATE_CONFIGURED)
		return -DBC_ENOTCONN;

	/* how much fits: FIFO room, and one TRB per piece up to the next 64 KiB line (a TRB
	 * buffer never crosses one, table 6-1); a zero-length write is one zero-length TRB */
	room = DBC_OUT_FIFO_SIZE - (unsigned long)(head - dbc.fifo_tail);
	slots = ring_free(&dbc.out);
	take = 0;
	trbs = 0;
	while (take < len && take < room && trbs < slots) {
		unsigned long pos = (unsigned long)((head + take) % DBC_OUT_FIFO_SIZE);
		unsigned long piece = TRB_MAX_BYTES - (pos % TRB_MAX_BYTES);
		if (piece > len - take)
			piece = len - take;
		if (piece > room - take)
			piece = room - take;
		take += piece;
		trbs++;
	}
	if (take < len)
		take -= take % MAX_PACKET_SIZE; /* a partial write never ends in a short packet */
	if (!len && !slots)
		return 0;
	if (len && !take)
		return 0;

	/* copy: at most two pieces (up to the FIFO's end, then from its start) */
	if (take) {
		unsigned long pos = (unsigned long)(head % DBC_OUT_FIFO_SIZE);
		unsigned long first = DBC_OUT_FIFO_SIZE - pos;
		if (first > take)
			first = take;
		memcpy(dbc.fifo + pos, src, first);
		if (first < take)
			memcpy(dbc.fifo, src + first, take - first);
	}

	/* queue: one TD, TRBs chained with CH, IOC on each (one event per TRB) */
	done = 0;
	do {
		unsigned long pos = (unsigned long)((head + done) % DBC_OUT_FIFO_SIZE);
		unsigned long piece = TRB_MAX_BYTES - (pos % TRB_MAX_BYTES);
		u32 idx, flags = TRB_IOC;
#ifdef DBC_MUT_TRB_CROSSES_64K
		piece = TRB_MAX_BYTES; /* the mistake: split every 64 KiB of data, not at the lines */
		if (pos + piece > DBC_OUT_FIFO_SIZE)
			piece = DBC_OUT_FIFO_SIZE - pos;
#endif
		if (piece > take - done)
			piece = take - done;
		if (done + piece < take)
			flags |= TRB_CH;
		idx = ring_push(&dbc.out, dbc.fifo_phys + pos, (u32)piece, flags);
		dbc.out_chunk[idx] = (u32)piece;
		dbc.out_left[idx] = (u32)piece;
		done += piece;
	} while (done < take);
	dbc.fifo_head = head + take;
	if (!dbc.out_halted)
		doorbell(0);
	return (long)take;
}

long dbc_read(void *buf, unsigned long max)
{
	u8 *dst = buf;
	unsigned long copied = 0;

	while (copied < max && dbc.in_read < dbc.in_done) {
		u32 b = (u32)(dbc.in_read % DBC_IN_BUFS);
		unsigned long avail = dbc.in_len[b] - dbc.in_off[b];
		unsigned long n = avail < max - copied ? avail : max - copied;
		unsigned long room = max - copied;
		u32 last = b;
		u64 seq = dbc.in_read;

		/* full buffers next to each other in memory are one copy */
		while (n < room && dbc.in_len[last] == DBC_IN_BUF_SIZE && last + 1 < DBC_IN_BUFS &&
		       seq + 1 < dbc.in_done && dbc.in_len[last + 1]) {
			unsigned long more = dbc.in_len[last + 1];
			if (more > room - n)
				more = room - n;
			n += more;
			last++;
			seq++;
		}
		if (n)
			memcpy(dst + copied, dbc.inbuf + (u64)b * DBC_IN_BUF_SIZE + dbc.in_off[b], n);
		copied += n;
		/* retire the buffers this copy emptied */
		while (n) {
			u32 cb = (u32)(dbc.in_read % DBC_IN_BUFS);
			unsigned long left = dbc.in_len[cb] - dbc.in_off[cb];
			if (n < left) {
				dbc.in_off[cb] += (u32)n;
				n = 0;
				break;
			}
			n -= left;
			dbc.in_off[cb] = dbc.in_len[cb];
			dbc.in_read++;
		}
		/* zero-length transfers and emptied buffers */
		while (dbc.in_read < dbc.in_done) {
			u32 cb = (u32)(dbc.in_read % DBC_IN_BUFS);
			if (dbc.in_off[cb] < dbc.in_len[cb])
				break;
			dbc.in_read++;
		}
	}
	if (copied && dbc.state == DBC_STATE_CONFIGURED && in_prime() && !dbc.in_halted)
		doorbell(1);
	return (long)copied;
}

int dbc_state(void)
{
	return dbc.state;
}

unsigned long dbc_out_pending(void)
{
	return (unsigned long)(dbc.fifo_head - dbc.fifo_tail);
}

int dbc_stop(void)
{
	int err = 0;

	if (dbc.state == DBC_STATE_DISABLED)
		return 0;
	if (dbc.state != DBC_STATE_REMOVED) {
		WR32(&dbc.r->dcctrl, 0); /* @site:stop */
		err = wait_dce(0);
		if (err == -DBC_ETIMEDOUT)
			return err; /* DCE did not clear: the controller may still use our memory */
		/* the DbC is off: consume what it wrote before (4.9.4), so bytes it confirmed
		 * count as delivered (dbc_out_pending) before the memory goes */
		drain_before_reinit();
	}
	free_all();
	dbc.state = DBC_STATE_DISABLED;
	return err == -DBC_EREMOVED ? 0 : err;
}
