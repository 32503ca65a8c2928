/* SPDX-License-Identifier: MIT */
/*
 * dbc.h - the data-path ABI of the dbc-harness reference xHCI Debug Capability driver.
 *
 * These few calls are all the harness needs from a native DbC driver. To test your own driver,
 * implement them as a thin adapter over it (a page of C) and run it with
 * `dbc-harness run --driver your.o --env your_env.py` or `pytest --native-driver your.o`.
 *
 * Directions (xHCI 1.2 section 7.6, "Direction names" in the README): dbc_write() data goes
 * target -> host on the DbC OUT transfer ring (doorbell target 0); dbc_read() returns what the
 * debug host sent, received on the DbC IN transfer ring (doorbell target 1).
 *
 * Every call returns at once (no call blocks longer than its own bounded register waits);
 * the caller polls. Negative return values are -DBC_E* codes below.
 */
#ifndef DBC_H
#define DBC_H

/* dbc_init() flags */
/* reset not-connected USB3 root ports right after DCE (7.6.4). Without it the driver still
 * does on Intel parts its PCI scan found, or once if nothing connects within 200 ms of DCE
 * while dbc_init() waits */
#define DBC_F_PORT_RESET (1u << 0)
#define DBC_F_MMIO64 (1u << 1)     /* 64-bit registers in one qword access (default: 2 dwords) */
#define DBC_F_TAKEOVER (1u << 2)   /* DCE already set (firmware): disable it and take over */

/* dbc_state() values (the Linux xhci-dbgcap.c states; spec 7.6.6 port states in comments) */
#define DBC_STATE_DISABLED 0    /* nothing allocated, DCE = 0 */
#define DBC_STATE_INITIALIZED 1 /* rings/contexts programmed, DCE not yet 1 */
#define DBC_STATE_ENABLED 2     /* DCE = 1, no debug host (Disconnected) */
#define DBC_STATE_CONNECTED 3   /* DCPORTSC.CCS = 1, host not yet configured us (Enabled) */
#define DBC_STATE_CONFIGURED 4  /* DCCTRL.DCR = 1: data flows (Configured) */
#define DBC_STATE_REMOVED 5     /* registers read all ones: controller gone (terminal) */

/* error codes (returned negated) */
#define DBC_ENODEV 1      /* no xHCI found by the PCI scan, or no Debug Capability (ID 0x0A) */
#define DBC_EBUSY 2       /* DCE already set by someone else (pass DBC_F_TAKEOVER) */
#define DBC_ETIMEDOUT 3   /* a register did not reach its value before the deadline */
#define DBC_ENOMEM 4      /* the environment's DMA allocator failed */
#define DBC_ENOTCONN 5    /* not configured by a debug host (yet) */
#define DBC_ECONNRESET 6  /* the host went away: bytes accepted earlier were not delivered */
#define DBC_EREMOVED 7    /* surprise removal: every register reads all ones */
#define DBC_EINVAL 8      /* bad argument or call in the wrong state */
#define DBC_EIO 9         /* the controller reported a transfer error (TRB Error...) */

/*
 * Find and bring up the DbC, leave it waiting for the debug host.
 *   bar0_phys: physical address of the xHCI's BAR0, or 0 to find the controller with a PCI
 *              configuration mechanism #1 scan (all 256 buses, class 0C0330, 64-bit BAR0):
 *              the first xHCI whose extended capability list has a Debug Capability, its
 *              BAR0 mapped at the size the BAR probe found;
 *   flags:     DBC_F_*;
 *   wait_us:   if non-zero, also wait (polling) up to this long for the host to configure us.
 * Returns 0 (DBC_STATE_CONFIGURED reached when wait_us > 0), or -DBC_E*; on error nothing stays
 * allocated and DCE is 0.
 */
int dbc_init(unsigned long long bar0_phys, unsigned int flags, unsigned long wait_us);

/* Service the DbC once: drain the event ring, follow connect/configure/unplug/port reset/halts,
 * queue waiting data. Returns the number of events consumed (>= 0) or -DBC_EREMOVED. */
int dbc_poll(void);

/* Queue up to len bytes for the debug host as one transfer. Returns the number of bytes
 * accepted (len, or a multiple of 1024 when the OUT buffer is nearly full, or 0: poll and
 * retry), -DBC_ENOTCONN before configuration, -DBC_ECONNRESET once after the host went away
 * with accepted bytes undelivered. */
long dbc_write(const void *buf, unsigned long len);

/* Copy up to max bytes the debug host sent into buf. Returns the count (0: nothing yet). */
long dbc_read(void *buf, unsigned long max);

/* DBC_STATE_* */
int dbc_state(void);

/* Bytes accepted by dbc_write() and not yet confirmed delivered by the controller. */
unsigned long dbc_out_pending(void);

/* DCE = 0, wait for it to read 0, give every DMA buffer back. Returns 0 or -DBC_E*. */
int dbc_stop(void);

/* Diagnostics, not needed by an adapter: PCI scan results (see dbc.c). */
struct dbc_pci_hit {
	unsigned int bdf;              /* bus << 8 | device << 3 | function */
	unsigned int id;               /* device ID << 16 | vendor ID */
	unsigned long long bar0;       /* BAR0 physical address (64-bit BAR) */
	unsigned long long bar0_size;  /* from the size probe */
};
#define DBC_PCI_MAX_HITS 8
extern struct dbc_pci_hit dbc_pci_hits[DBC_PCI_MAX_HITS];
/* Scan all 256 buses for xHCIs (class 0C0330); fills dbc_pci_hits, returns how many. */
int dbc_pci_scan(void);

#endif /* DBC_H */
