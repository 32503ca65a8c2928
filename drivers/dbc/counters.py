"""Counters for the CLI and the benchmarks (plain numbers, a flat dict on demand)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DbcCounters:
    """What the driver did since construction. Directions are spelled from both sides:
    ``to_host`` = target -> host (DbC OUT ring, ``write()``), ``from_host`` = host -> target
    (DbC IN ring, ``read()``)."""

    #: bytes the controller reported moved to the debug host / received from it
    bytes_to_host: int = 0
    bytes_from_host: int = 0
    #: Normal TRBs completed on the OUT ring / IN ring
    trbs_to_host: int = 0
    trbs_from_host: int = 0
    #: messages (write() calls) fully delivered / transfers received (ended by a short packet)
    messages_to_host: int = 0
    transfers_from_host: int = 0
    #: event TRBs consumed, and DCERDP writes (one per drain that consumed something)
    events: int = 0
    erdp_writes: int = 0
    doorbells: int = 0
    #: transfer events with a completion code other than Success / Short Packet, by code name
    errors: Counter[str] = field(default_factory=Counter)
    #: recoveries by kind: "disconnect", "port_reset", "dce_lost", "halt_cleared", ...
    recoveries: Counter[str] = field(default_factory=Counter)
    #: Stall events for a TRB with nothing moved that the driver kept queued
    spurious_stalls: int = 0
    #: bad values supplied by the controller (see DbcDeviceError), discarded
    device_errors: int = 0
    #: messages reported undelivered (DbcDisconnected / DbcTransferError)
    undelivered_messages: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Flat JSON-able view: ``errors.StallError``, ``recoveries.disconnect``, ..."""
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if isinstance(value, Counter):
                for key, count in sorted(value.items()):
                    out[f"{name}.{key}"] = count
                out[name] = sum(value.values())
            else:
                out[name] = value
        return out
