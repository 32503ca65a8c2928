/* SPDX-License-Identifier: MIT */
/*
 * xhci_noop.c - the generic xHCI host path of the reference driver: walk the extended
 * capability list from BAR0, and bring the controller's command ring up far enough to submit
 * No Op Commands and receive their Command Completion Events.
 *
 * It is what the reference driver can prove on a controller WITHOUT a Debug Capability (QEMU's
 * qemu-xhci and nec-usb-xhci have none): its MMIO reaches the real BAR0, and the controller
 * reads and writes the DMA memory the environment gave it (through the IOMMU under VFIO).
 * Freestanding C11 like dbc.c, same kernel API (dbc_env.h), same error codes (dbc.h). The
 * harness's Python host path (drivers/xhci/host.py) is the executable specification this file
 * follows step by step; section numbers are xHCI 1.2's.
 *
 * Every wait is a loop around dbc_env_udelay() with a deadline; every walk has a step bound.
 * xhci_noop() leaves the controller as it found it: halted, reset, its memory given back.
 */

#include "dbc.h"
#include "dbc_env.h"
#include "xhci_noop.h"

typedef unsigned int u32;
typedef unsigned long long u64;

/* deadlines, in dbc_env_udelay() microseconds (host.py: HALT/RESET/COMMAND_TIMEOUT_S) */
#define HALT_TIMEOUT_US 1000000    /* 5.4.2: HCH within 16 ms of clearing R/S; be generous */
#define RESET_TIMEOUT_US 5000000   /* Linux waits up to 10 s on some parts */
#define COMMAND_TIMEOUT_US 2000000 /* one No Op Command's Command Completion Event */
#define POLL_STEP_US 100

/* ------------------------------------------------------------------ registers (5.3-5.6) */
#define CAP_CAPLENGTH 0x00 /* 7:0 CAPLENGTH, 31:16 HCIVERSION */
#define CAP_HCSPARAMS1 0x04
#define CAP_HCSPARAMS2 0x08 /* 31:27 Max Scratchpad Bufs Lo, 25:21 Hi */
#define CAP_HCCPARAMS1 0x10 /* 0 AC64, 31:16 xECP (dwords) */
#define CAP_DBOFF 0x14
#define CAP_RTSOFF 0x18
#define HCCPARAMS1_AC64 (1u << 0)

/* operational registers, from CAPLENGTH (5.4) */
#define OP_USBCMD 0x00
#define OP_USBSTS 0x04
#define OP_PAGESIZE 0x08
#define OP_CRCR 0x18   /* 64-bit: 63:6 Command Ring Pointer, 0 RCS */
#define OP_DCBAAP 0x30 /* 64-bit */
#define OP_CONFIG 0x38 /* 7:0 MaxSlotsEn */
#define USBCMD_RS (1u << 0)
#define USBCMD_HCRST (1u << 1)
#define USBCMD_INTE (1u << 2)
#define USBSTS_HCH (1u << 0)
#define USBSTS_CNR (1u << 11)

/* interrupter 0 of the runtime registers (5.5.2) */
#define RT_IR0 0x20
#define IR_IMAN 0x00 /* 0 IP (RW1C), 1 IE */
#define IR_ERSTSZ 0x08
#define IR_ERSTBA 0x10 /* 64-bit */
#define IR_ERDP 0x18   /* 64-bit: 3 EHB (RW1C) */
#define IMAN_IP (1u << 0)
#define IMAN_IE (1u << 1)
#define ERDP_EHB (1u << 3)

/* extended capabilities (7) */
#define XECP_ID_DEBUG 10
#define ALL_ONES 0xFFFFFFFFu

/* TRBs (6.4) */
#define TRB_CYCLE (1u << 0)
#define TRB_TC (1u << 1) /* Link TRB: Toggle Cycle */
#define TRB_TYPE(t) ((u32)(t) << 10)
#define TRB_TYPE_OF(dw3) (((dw3) >> 10) & 0x3F)
#define TRB_LINK 6
#define TRB_NO_OP_COMMAND 23          /* 6.4.3.1 */
#define TRB_COMMAND_COMPLETION_EVENT 33 /* 6.4.2.2 */

#define CMD_TRBS 16 /* command ring: 15 command slots + the Link TRB */
#define EVT_TRBS 16 /* event ring segment (at least 16, 6.5) */

/* MMIO at the access site, as in dbc.c: the debug information maps each access to its line */
#define RD32(reg) (*(volatile u32 *)(reg))
#define WR32(reg, v) (*(volatile u32 *)(reg) = (u32)(v))
/* 64-bit registers as two dwords, low first (5.1: no 64-bit atomicity assumed) */
#define WR64(reg, v) do { WR32((char *)(reg), (u64)(v)); WR32((char *)(reg) + 4, (u64)(v) >> 32); } while (0)
#define barrier() __asm__ volatile("" ::: "memory")

struct trb {
	u32 dw[4];
};

struct erst_entry { /* 6.5 */
	u32 base_lo, base_hi;
	u32 size;
	u32 rsvd;
};

/* ------------------------------------------------------------------ helpers */
static char *map_bar(u64 bar0_phys, unsigned long bar0_size)
{
	if (!bar0_phys || bar0_size < 0x1000 || bar0_size & 3)
		return 0;
	return dbc_env_map_mmio(bar0_phys, bar0_size);
}

/* Wait (bounded) until (RD32(reg) & mask) == want; -DBC_EREMOVED if the register reads all
 * ones (a gone device, or memory decoding off), -DBC_ETIMEDOUT after timeout_us. */
static int wait_bits(char *reg, u32 mask, u32 want, unsigned long timeout_us)
{
	unsigned long waited;

	for (waited = 0;; waited += POLL_STEP_US) {
		u32 v = RD32(reg);
		if (v == ALL_ONES)
			return -DBC_EREMOVED;
		if ((v & mask) == want)
			return 0;
		if (waited >= timeout_us)
			return -DBC_ETIMEDOUT;
		dbc_env_udelay(POLL_STEP_US);
	}
}

/* ------------------------------------------------------------------ capability walk (7) */
int xhci_cap_walk(unsigned long long bar0_phys, unsigned long bar0_size,
		  struct xhci_cap_report *r)
{
	char *bar = map_bar(bar0_phys, bar0_size);
	u32 hcc, off, steps;

	if (!r)
		return -DBC_EINVAL;
	memset(r, 0, sizeof(*r));
	if (!bar)
		return -DBC_EINVAL;
	r->caplength = RD32(bar + CAP_CAPLENGTH);
	r->hcsparams1 = RD32(bar + CAP_HCSPARAMS1);
	r->hcsparams2 = RD32(bar + CAP_HCSPARAMS2);
	hcc = r->hccparams1 = RD32(bar + CAP_HCCPARAMS1);
	r->dboff = RD32(bar + CAP_DBOFF);
	r->rtsoff = RD32(bar + CAP_RTSOFF);
	if (hcc == ALL_ONES || r->hcsparams1 == ALL_ONES)
		return -DBC_EREMOVED;
	off = (hcc >> 16) * 4;
	for (steps = 0; off; steps++) {
		u32 head, next;
		struct xhci_cap *c;

		if (steps >= XHCI_CAP_MAX_STEPS || off + 16 > bar0_size || off & 3) {
			/* a list that leaves BAR0 or never ends is broken: say where */
			r->broken_at = off;
			dbc_env_log("xhci: extended capability list broken at 0x%x\n", off);
			return -DBC_EINVAL;
		}
		head = RD32(bar + off);
		if (head == ALL_ONES)
			return -DBC_EREMOVED;
		if (r->count < XHCI_CAP_MAX) {
			c = &r->caps[r->count++];
			c->offset = off;
			c->id = head & 0xFF;
			c->dword0 = head;
			c->dword1 = RD32(bar + off + 4);
			c->dword2 = RD32(bar + off + 8);
		}
		r->total++;
		if ((head & 0xFF) == XECP_ID_DEBUG && !r->dbc_offset)
			r->dbc_offset = off;
		dbc_env_log("xhci: xECP +0x%x ID %u\n", off, head & 0xFF);
		next = (head >> 8) & 0xFF; /* Next Capability Pointer, in dwords */
		off = next ? off + next * 4 : 0;
	}
	if (!r->dbc_offset) {
		dbc_env_log("xhci: no Debug Capability on this controller\n");
		return -DBC_ENODEV;
	}
	return 0;
}

/* ------------------------------------------------------------------ No Op Commands (4.6.2) */
struct host {
	char *bar, *op, *ir0, *db;
	u64 limit;           /* AC64 = 0: every address below 4 GiB */
	u32 page;            /* PAGESIZE in bytes */
	void *mem;           /* DCBAA, ERST, command ring, event ring: one allocation */
	u64 mem_phys;
	unsigned long mem_size;
	u64 *pads;           /* Scratchpad Buffer Array (4.20) */
	u64 pads_phys;
	char *pad_mem;       /* the scratchpad buffers themselves */
	u32 n_pads;
	struct trb *cmd;
	u64 cmd_phys;
	u32 cmd_enq, pcs;
	struct trb *evt;
	u64 evt_phys;
	u32 evt_deq, ccs;
};

static void *dma_alloc(struct host *h, unsigned long size, unsigned long align, u64 *phys)
{
	void *v = dbc_env_dma_alloc(size, align, phys);

	if (!v)
		return 0;
	if (*phys + size > h->limit) {
		dbc_env_log("xhci: DMA memory at 0x%llx above 4 GiB and AC64 = 0\n", *phys);
		dbc_env_dma_free(v, size);
		return 0;
	}
	memset(v, 0, size);
	return v;
}

/* Clear R/S, wait for HCHalted; then HCRST and wait for HCRST and CNR to clear (4.2, 5.4.1). */
static int halt_and_reset(struct host *h)
{
	u32 cmd = RD32(h->op + OP_USBCMD);
	int err;

	if (cmd == ALL_ONES)
		return -DBC_EREMOVED;
	if (cmd & USBCMD_RS)
		WR32(h->op + OP_USBCMD, cmd & ~(USBCMD_RS | USBCMD_HCRST));
	err = wait_bits(h->op + OP_USBSTS, USBSTS_HCH, USBSTS_HCH, HALT_TIMEOUT_US);
	if (err)
		return err;
	WR32(h->op + OP_USBCMD, (RD32(h->op + OP_USBCMD) & ~USBCMD_RS) | USBCMD_HCRST);
	err = wait_bits(h->op + OP_USBCMD, USBCMD_HCRST, 0, RESET_TIMEOUT_US);
	if (err)
		return err;
	return wait_bits(h->op + OP_USBSTS, USBSTS_CNR, 0, RESET_TIMEOUT_US);
}

static void give_back(struct host *h)
{
	if (h->pad_mem)
		dbc_env_dma_free(h->pad_mem, (unsigned long)h->n_pads * h->page);
	if (h->pads)
		dbc_env_dma_free(h->pads, (unsigned long)h->n_pads * 8);
	if (h->mem)
		dbc_env_dma_free(h->mem, h->mem_size);
	h->pad_mem = 0;
	h->pads = 0;
	h->mem = 0;
}

/* 4.2 Host Controller Initialization, up to a running controller with a command ring and the
 * event ring of interrupter 0. */
static int start(struct host *h, struct xhci_noop_report *out)
{
	u32 sp2 = RD32(h->bar + CAP_HCSPARAMS2);
	u32 ps, i;
	char *m;
	struct erst_entry *erst;
	u64 *dcbaa;
	int err;

	err = halt_and_reset(h);
	if (err)
		return err;
	ps = RD32(h->op + OP_PAGESIZE) & 0xFFFF; /* bit n: 2^(n+12) bytes; use the smallest */
	h->page = 4096;
	for (i = 0; i < 16; i++) {
		if (ps & (1u << i)) {
			h->page = 4096u << i;
			break;
		}
	}
	/* one page: DCBAA at 0 (2 entries: MaxSlotsEn = 1), ERST at 0x40, command ring at 0x400,
	 * event ring at 0x800. Nothing crosses the page, so no 64 KiB boundary (table 6-1). */
	h->mem_size = 4096;
	h->mem = dma_alloc(h, h->mem_size, h->page > 65536 ? 65536 : h->page, &h->mem_phys);
	if (!h->mem)
		return -DBC_ENOMEM;
	m = h->mem;
	dcbaa = (u64 *)m;
	erst = (struct erst_entry *)(m + 0x40);
	h->cmd = (struct trb *)(m + 0x400);
	h->cmd_phys = h->mem_phys + 0x400;
	h->evt = (struct trb *)(m + 0x800);
	h->evt_phys = h->mem_phys + 0x800;

	/* Scratchpad Buffer Array when HCSPARAMS2 asks for one (4.20): DCBAA entry 0 */
	h->n_pads = (((sp2 >> 21) & 0x1F) << 5) | (sp2 >> 27);
	if (h->n_pads) {
		h->pads = dma_alloc(h, (unsigned long)h->n_pads * 8, 64, &h->pads_phys);
		h->pad_mem = h->pads ? dma_alloc(h, (unsigned long)h->n_pads * h->page, h->page,
						 &out->scratchpad_phys) : 0;
		if (!h->pad_mem)
			return -DBC_ENOMEM;
		for (i = 0; i < h->n_pads; i++)
			h->pads[i] = out->scratchpad_phys + (u64)i * h->page;
		dcbaa[0] = h->pads_phys;
	}

	/* command ring: a Link TRB back to the start, Toggle Cycle set (4.9.2); PCS = 1 */
	h->cmd[CMD_TRBS - 1].dw[0] = (u32)h->cmd_phys;
	h->cmd[CMD_TRBS - 1].dw[1] = (u32)(h->cmd_phys >> 32);
	h->cmd[CMD_TRBS - 1].dw[3] = TRB_TYPE(TRB_LINK) | TRB_TC; /* cycle 0: not yet valid */
	h->cmd_enq = 0;
	h->pcs = 1;
	/* event ring: one segment in the ERST (6.5); the consumer starts with CCS = 1 (4.9.4) */
	erst->base_lo = (u32)h->evt_phys;
	erst->base_hi = (u32)(h->evt_phys >> 32);
	erst->size = EVT_TRBS;
	h->evt_deq = 0;
	h->ccs = 1;
	barrier();

	out->page_size = h->page;
	out->scratchpads = h->n_pads;
	out->dcbaa_phys = h->mem_phys;
	out->erst_phys = h->mem_phys + 0x40;
	out->command_ring_phys = h->cmd_phys;
	out->event_ring_phys = h->evt_phys;

	WR32(h->op + OP_CONFIG, (RD32(h->op + OP_CONFIG) & ~0xFFu) | 1); /* MaxSlotsEn = 1 */
	WR64(h->op + OP_DCBAAP, h->mem_phys);
	WR64(h->op + OP_CRCR, h->cmd_phys | h->pcs); /* RCS = 1 */
	WR32(h->ir0 + IR_ERSTSZ, (RD32(h->ir0 + IR_ERSTSZ) & ~0xFFFFu) | 1);
	WR64(h->ir0 + IR_ERDP, h->evt_phys);
	WR64(h->ir0 + IR_ERSTBA, h->mem_phys + 0x40); /* the high dword makes it read the ERST */
	WR32(h->ir0 + IR_IMAN, RD32(h->ir0 + IR_IMAN) | IMAN_IE | IMAN_IP);
	WR32(h->op + OP_USBCMD, (RD32(h->op + OP_USBCMD) & ~USBCMD_HCRST) | USBCMD_RS | USBCMD_INTE);
	return wait_bits(h->op + OP_USBSTS, USBSTS_HCH, 0, HALT_TIMEOUT_US);
}

/* Write one No Op Command TRB (6.4.3.1) with the Producer Cycle State and ring doorbell 0
 * (DB Target 0: Host Controller Command, 5.6). Returns the TRB's device address. */
static u64 submit_no_op(struct host *h)
{
	struct trb *t = &h->cmd[h->cmd_enq];
	u64 at = h->cmd_phys + (u64)h->cmd_enq * sizeof(struct trb);

	t->dw[0] = t->dw[1] = t->dw[2] = 0;
	barrier();
	t->dw[3] = TRB_TYPE(TRB_NO_OP_COMMAND) | h->pcs; /* the cycle bit last: hands it over */
	barrier();
	if (++h->cmd_enq == CMD_TRBS - 1) {
		/* the Link TRB: give it to the controller with the current cycle, then toggle */
		struct trb *link = &h->cmd[CMD_TRBS - 1];
		link->dw[3] = (link->dw[3] & ~TRB_CYCLE) | h->pcs;
		h->pcs ^= 1;
		h->cmd_enq = 0;
	}
	WR32(h->db, 0); /* doorbell 0, DB Target 0, Stream ID 0 */
	return at;
}

/* Poll the event ring for the Command Completion Event of the command at cmd_trb (4.9.4):
 * a TRB is the controller's when its cycle bit equals CCS. ERDP is advanced with EHB set
 * (RW1C) after each event. Returns 0 with *res filled, or -DBC_ETIMEDOUT. */
static int wait_completion(struct host *h, u64 cmd_trb, struct xhci_noop_result *res,
			   struct xhci_noop_report *out)
{
	unsigned long waited;

	for (waited = 0;; waited += POLL_STEP_US) {
		u32 polls;

		/* at most one lap of the segment per poll: bounded even if the controller keeps
		 * producing events */
		for (polls = 0; polls < EVT_TRBS; polls++) {
			struct trb *e = &h->evt[h->evt_deq];
			u32 dw3 = e->dw[3];
			u64 at = h->evt_phys + (u64)h->evt_deq * sizeof(struct trb);
			u64 ptr;

			if ((dw3 & TRB_CYCLE) != h->ccs)
				break;
			barrier();
			ptr = (u64)e->dw[0] | ((u64)e->dw[1] << 32);
			if (++h->evt_deq == EVT_TRBS) {
				h->evt_deq = 0;
				h->ccs ^= 1;
			}
			WR64(h->ir0 + IR_ERDP,
			     (h->evt_phys + (u64)h->evt_deq * sizeof(struct trb)) | ERDP_EHB);
			if (TRB_TYPE_OF(dw3) == TRB_COMMAND_COMPLETION_EVENT && ptr == cmd_trb) {
				res->command_trb = cmd_trb;
				res->event_trb = at;
				res->pointer = ptr;
				res->completion_code = e->dw[2] >> 24;
				res->slot_id = dw3 >> 24;
				return 0;
			}
			out->other_events++; /* e.g. Port Status Change Events */
			out->last_other_type = TRB_TYPE_OF(dw3);
		}
		if (waited >= COMMAND_TIMEOUT_US)
			return -DBC_ETIMEDOUT;
		dbc_env_udelay(POLL_STEP_US);
	}
}

int xhci_noop(unsigned long long bar0_phys, unsigned long bar0_size, unsigned int count,
	      struct xhci_noop_report *out)
{
	struct host h;
	u32 i;
	int err, err2;

	if (!out)
		return -DBC_EINVAL;
	memset(out, 0, sizeof(*out));
	memset(&h, 0, sizeof(h));
	out->requested = count;
	if (count > XHCI_NOOP_MAX)
		return -DBC_EINVAL;
	h.bar = map_bar(bar0_phys, bar0_size);
	if (!h.bar)
		return -DBC_EINVAL;
	if (RD32(h.bar + CAP_HCCPARAMS1) == ALL_ONES)
		return -DBC_EREMOVED;
	h.op = h.bar + (RD32(h.bar + CAP_CAPLENGTH) & 0xFF);
	h.ir0 = h.bar + (RD32(h.bar + CAP_RTSOFF) & ~0x1Fu) + RT_IR0;
	h.db = h.bar + (RD32(h.bar + CAP_DBOFF) & ~0x3u);
	h.limit = RD32(h.bar + CAP_HCCPARAMS1) & HCCPARAMS1_AC64 ? ~0ull : 1ull << 32;

	err = start(&h, out);
	if (!err)
		out->running = 1;
	for (i = 0; !err && i < count; i++) {
		struct xhci_noop_result *res = &out->results[i];
		u64 at = submit_no_op(&h);

		err = wait_completion(&h, at, res, out);
		if (err)
			dbc_env_log("xhci: no Command Completion Event for the No Op at 0x%llx\n", at);
		else
			out->completed++;
	}
	/* give the controller back as we found it: halted and reset, no DMA into our memory */
	if (h.op) {
		err2 = halt_and_reset(&h);
		out->halted = err2 == 0;
		if (!err)
			err = err2;
	}
	if (out->halted)
		give_back(&h);
	else
		dbc_env_log("xhci: controller not halted: its DMA memory is kept\n");
	return err;
}

/* the sizes of the report structs, for callers that decode them (the harness checks these) */
const unsigned long xhci_cap_report_size = sizeof(struct xhci_cap_report);
const unsigned long xhci_noop_report_size = sizeof(struct xhci_noop_report);
