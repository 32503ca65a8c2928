"""``dbc-harness info``: read and decode a controller's registers through any MMIO.

Read-only: capability registers, the extended capability list (bounded walk), and, when there is
a Debug Capability, the DbC register block and the DbC's port state (xHCI 1.2 section 7.6.6)
derived from DCCTRL/DCPORTSC. Every layout and field comes from :mod:`drivers.xhci.registers`.
Reserved DbC dwords (0x0C, 0x2C) are never touched.
"""

from __future__ import annotations

from typing import Any

from dbc_harness.drivers.mmio import Mmio
from dbc_harness.drivers.xhci.host import (
    CapabilityListLoops,
    CapabilityReadsAllOnes,
    walk_extended_capabilities,
)
from dbc_harness.drivers.xhci.registers import (
    CAPABILITY_REGS,
    DBC_REGS,
    DCCTRL,
    DCID,
    DCPORTSC,
    HCCPARAMS1,
    SUPPORTED_PROTOCOL,
    USBLEGSUP,
    XECP_ID_DEBUG_CAPABILITY,
    XECP_ID_SUPPORTED_PROTOCOL,
    XECP_ID_USB_LEGACY_SUPPORT,
)

XECP_NAMES = {
    XECP_ID_USB_LEGACY_SUPPORT: "USB Legacy Support",
    XECP_ID_SUPPORTED_PROTOCOL: "Supported Protocol",
    3: "Extended Power Management",
    4: "I/O Virtualization",
    5: "Message Interrupt",
    6: "Local Memory",
    XECP_ID_DEBUG_CAPABILITY: "Debug Capability (DbC)",
    17: "Extended Message Interrupt",
}


def _decoded(layout: Any, value: int) -> str:
    return str(layout.render(layout.decode(value), title="")).strip()


def _xecp_name(cap_id: int) -> str:
    if cap_id in XECP_NAMES:
        return XECP_NAMES[cap_id]
    return "vendor defined" if cap_id >= 0xC0 else "reserved"


def describe_extended_capabilities(mmio: Mmio, xecp_dwords: int) -> list[dict[str, Any]]:
    """Every extended capability from ``xECP`` (in dwords), decoded (the xHCI walk, bounded; a
    list that loops ends where it loops back; an all-ones entry ends it as a pseudo-entry)."""
    try:
        found = walk_extended_capabilities(mmio, xecp_dwords * 4)
        broken_at = None
    except CapabilityListLoops as exc:
        found, broken_at = exc.found, None
    except CapabilityReadsAllOnes as exc:
        found, broken_at = exc.found, exc.offset
    caps: list[dict[str, Any]] = []
    for cap in found:
        offset, cap_id, dword0 = cap.offset, cap.capability_id, cap.dword0
        decoded = ""
        if cap_id == XECP_ID_USB_LEGACY_SUPPORT:
            decoded = _decoded(USBLEGSUP, dword0)
        elif cap_id == XECP_ID_SUPPORTED_PROTOCOL:
            raw = b"".join(
                mmio.read32(offset + 4 * i).to_bytes(4, "little")
                for i in range(SUPPORTED_PROTOCOL.size // 4)
            )
            decoded = SUPPORTED_PROTOCOL.render(SUPPORTED_PROTOCOL.parse(raw), title="").strip()
        elif cap_id == XECP_ID_DEBUG_CAPABILITY:
            decoded = _decoded(DCID, dword0)
        caps.append(
            {"offset": offset, "id": cap_id, "name": _xecp_name(cap_id), "decoded": decoded}
        )
    if broken_at is not None:
        caps.append({"offset": broken_at, "id": 0xFF, "name": "all-ones read", "decoded": ""})
    return caps


def dbc_port_state(dcctrl: int, dcportsc: int) -> str:
    """The DbC port state of xHCI 1.2 section 7.6.6 implied by DCCTRL and DCPORTSC."""
    ctrl = DCCTRL.decode(dcctrl)
    port = DCPORTSC.decode(dcportsc)
    if not ctrl["DCE"]:
        return "DbC-Off (DCE = 0)"
    if not port["CCS"]:
        return "Disconnected (DCE = 1, waiting for a debug host)"
    if port["PR"]:
        return "Resetting (PR = 1)"
    if ctrl["DCR"]:
        return "Configured (DCR = 1: the debug host configured the DbC)"
    if port["PED"]:
        return "Enabled (connected, not yet configured)"
    return "Disabled/Error (connected, port not enabled)"


def inspect_mmio(mmio: Mmio) -> dict[str, Any]:
    """Plain-dict report: ``capability_registers``, ``extended_capabilities``, ``dbc``."""
    values = CAPABILITY_REGS.read_all(mmio, 0)
    capability_rows = [
        {
            "name": name,
            "offset": CAPABILITY_REGS.offset(name),
            "value": value,
            "decoded": _decoded(CAPABILITY_REGS.layout(name), value),
        }
        for name, value in values.items()
    ]
    hcc1 = HCCPARAMS1.decode(values["HCCPARAMS1"])
    ext = describe_extended_capabilities(mmio, hcc1["xECP"])
    report: dict[str, Any] = {
        "capability_registers": capability_rows,
        "ac64": bool(hcc1["AC64"]),
        "extended_capabilities": ext,
        "dbc": None,
    }
    dbc = next((c for c in ext if c["id"] == XECP_ID_DEBUG_CAPABILITY), None)
    if dbc is not None:
        base = dbc["offset"]
        regs = DBC_REGS.read_all(mmio, base)
        report["dbc"] = {
            "offset": base,
            "registers": [
                {
                    "name": name,
                    "offset": DBC_REGS.offset(name),
                    "value": value,
                    "decoded": _decoded(DBC_REGS.layout(name), value),
                }
                for name, value in regs.items()
            ],
            "state": dbc_port_state(regs["DCCTRL"], regs["DCPORTSC"]),
        }
    return report
