/* SPDX-License-Identifier: MIT */
/*
 * xhci_noop.h - the generic xHCI host path of the reference driver (xhci_noop.c): the
 * extended capability walk and No Op Commands on the command ring. Results are plain structs
 * the caller owns; return values are 0 or -DBC_E* (dbc.h).
 */
#ifndef XHCI_NOOP_H
#define XHCI_NOOP_H

#define XHCI_CAP_MAX 32        /* entries recorded (the walk goes on past them) */
#define XHCI_CAP_MAX_STEPS 256 /* a list longer than this is broken (a loop) */
#define XHCI_NOOP_MAX 64       /* No Op Commands per xhci_noop() call */

struct xhci_cap {
	unsigned int offset; /* BAR0 offset of the entry */
	unsigned int id;     /* Capability ID (7: 1 USB Legacy Support, 2 Supported Protocol,
				10 Debug Capability) */
	unsigned int dword0, dword1, dword2; /* the entry's first dwords, as read */
};

struct xhci_cap_report {
	unsigned int caplength;  /* CAPLENGTH/HCIVERSION dword (5.3.1, 5.3.2) */
	unsigned int hcsparams1, hcsparams2, hccparams1, dboff, rtsoff;
	unsigned int count;      /* entries in caps[] */
	unsigned int total;      /* entries walked */
	unsigned int dbc_offset; /* BAR0 offset of the Debug Capability, 0: none */
	unsigned int broken_at;  /* where a broken list left BAR0 or looped */
	struct xhci_cap caps[XHCI_CAP_MAX];
};

/*
 * Walk the extended capability list of the xHCI whose BAR0 (bar0_size bytes) is at physical
 * address bar0_phys. Returns 0 when it has a Debug Capability, -DBC_ENODEV when the list ends
 * without one (QEMU's xHCIs: the expected answer), -DBC_EREMOVED when registers read all
 * ones, -DBC_EINVAL for a bad argument or a list that leaves BAR0 or loops.
 */
int xhci_cap_walk(unsigned long long bar0_phys, unsigned long bar0_size,
		  struct xhci_cap_report *r);

struct xhci_noop_result {
	unsigned long long command_trb; /* device address of the No Op Command TRB */
	unsigned long long event_trb;   /* device address of its Command Completion Event */
	unsigned long long pointer;     /* the event's Command TRB Pointer */
	unsigned int completion_code;   /* 1: Success (6.4.5) */
	unsigned int slot_id;
};

struct xhci_noop_report {
	unsigned int requested, completed;
	unsigned int running;         /* the controller ran (USBSTS.HCH = 0) */
	unsigned int halted;          /* halted and reset again at the end */
	unsigned int page_size, scratchpads;
	unsigned int other_events;    /* events that were not our completions */
	unsigned int last_other_type; /* TRB Type of the last of them */
	unsigned long long dcbaa_phys, erst_phys, command_ring_phys, event_ring_phys;
	unsigned long long scratchpad_phys;
	struct xhci_noop_result results[XHCI_NOOP_MAX];
};

/*
 * Halt and reset the controller, bring up a command ring and interrupter 0's event ring
 * (4.2), submit count (<= XHCI_NOOP_MAX) No Op Commands one after the other and wait for each
 * Command Completion Event (4.6.2), then halt and reset it again and give the memory back.
 * Returns 0 when every command completed (whatever its Completion Code: see the report),
 * -DBC_ETIMEDOUT, -DBC_ENOMEM, -DBC_EREMOVED or -DBC_EINVAL.
 */
int xhci_noop(unsigned long long bar0_phys, unsigned long bar0_size, unsigned int count,
	      struct xhci_noop_report *out);

#endif /* XHCI_NOOP_H */
